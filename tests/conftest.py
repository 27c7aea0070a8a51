"""Shared fixtures: the repository root and the read-only real DICOM test data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def testdata() -> Path:
    """``../shared/testdata`` (read-only: tests never write there)."""
    if not TESTDATA.is_dir():
        pytest.fail(f"real DICOM test data not found at {TESTDATA} (it sits beside the checkout)")
    return TESTDATA
