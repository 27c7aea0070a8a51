"""Shared fixtures: the repository root and the read-only real DICOM test data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def testdata() -> Path:
    """``tests/data``: the public real DICOM/NIfTI test data, sources and licences in its
    README.md (read-only: a test that must write copies what it needs to ``tmp_path``)."""
    return TESTDATA


#: Config of the tiny synthetic study that the end-to-end tests share: 26 patients, training
#: shortened, nothing else faked. Clinical runs the paper's ExtraTrees, DL_Clinical the default
#: logistic regression, so one run exercises both estimators end to end.
TINY_CONFIG = """\
synthetic: {n_train: 16, n_test: [5, 5], seed: 11}
clinical: {estimator: extra_trees}
train:
  epochs: 2
  patience: 2
  crossfit_folds: 2
  batch_size: 8
  widths: [8, 8, 16, 16]
evaluate: {bootstrap: 200}
margin: {figure_patients: 2}
gradcam: {n_per_group: 1}
"""


def run_snakemake(
    workdir: Path, *args: str, configfile: str = "tiny.yaml", timeout: int = 1800
) -> subprocess.CompletedProcess[str]:
    """Run the repository's workflow in ``workdir`` with the project's interpreter on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    if configfile:
        cmd += ["--configfile", str(workdir / configfile)]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def failed_logs(workdir: Path) -> str:
    """The tails of the job logs that mention an error (for a readable test failure)."""
    logs = sorted((workdir / "results" / "logs").rglob("*.log"))
    return "\n".join(
        f"== {p.relative_to(workdir)}\n{p.read_text(errors='replace')[-2000:]}"
        for p in logs
        if "rror" in p.read_text(errors="replace")
    )


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole workflow run once (``snakemake --cores 2``) on the tiny synthetic cohort.

    ``RECUR_TINY_STUDY=DIR`` brings the tiny study in ``DIR`` up to date instead (Snakemake
    reruns only what changed since its last run there), so the slow tests of one stage can be
    rerun without the whole workflow."""
    reuse = os.environ.get("RECUR_TINY_STUDY")
    if reuse:
        work = Path(reuse)
        (work / "tiny.yaml").write_text(TINY_CONFIG, encoding="utf-8")
        res = run_snakemake(work, "--cores", "2")
        if res.returncode != 0:
            pytest.fail(f"workflow failed:\n{res.stderr[-6000:]}\n{failed_logs(work)[-6000:]}")
        return work
    work = tmp_path_factory.mktemp("study")
    (work / "tiny.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    res = run_snakemake(work, "--cores", "2")
    if res.returncode != 0:
        pytest.fail(f"workflow failed:\n{res.stderr[-6000:]}\n{failed_logs(work)[-6000:]}")
    return work
