"""Canary de-identification: no identifying DICOM value reaches any output (issue 6, item 3).

The canary cohort (see conftest.py) carries a unique string in every identifying DICOM
attribute (names, IDs, birth and examination dates, accession, institution, station, device
serial, physicians, study ID, UIDs, a private tag) and in its folder names (cohort dir, DICOM
folders, mask folder; with spaces and non-ASCII characters). After one end-to-end run, every
file under ``results/`` and ``.snakemake/`` is searched: raw bytes, gzip-decompressed
``.nii.gz``, every member of ``.npz``/``.pt``/``.skops`` (zip) archives, PNG text chunks; in
UTF-8, Latin-1 and UTF-16, case-insensitively.
"""

from __future__ import annotations

import contextlib
import gzip
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    CANARY_DATES,
    canary_strings,
    folder_canaries,
)

pytestmark = pytest.mark.slow


def _png_text(data: bytes) -> Iterator[bytes]:
    """Decompressed payloads of the zTXt/iTXt/tEXt chunks of a PNG."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            yield key + b" " + zlib.decompress(rest[1:])
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed = rest[:1] == b"\1"
            text = rest[2:].split(b"\0", 2)[-1]
            yield key + b" " + (zlib.decompress(text) if compressed else text)
        elif kind == b"tEXt":
            yield body
        pos += 12 + length


def member_blobs(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(label, bytes)`` of a file and of everything packed inside it."""
    data = path.read_bytes()
    yield "raw", data
    if data[:2] == b"\x1f\x8b":
        yield "gunzip", gzip.decompress(data)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                yield f"zip:{name}", name.encode() + b"\0" + z.read(name)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        for i, text in enumerate(_png_text(data)):
            yield f"png-text{i}", text


def encodings(text: str) -> list[bytes]:
    out = []
    for enc in ("utf-8", "latin-1", "utf-16-le", "utf-16-be"):
        with contextlib.suppress(UnicodeEncodeError):
            out.append(text.lower().encode(enc))
    return out


def search(root: Path, needles: list[str], under: tuple[str, ...]) -> list[str]:
    """Every ``file[member]: needle`` hit of ``needles`` in files (and names) under ``under``."""
    patterns = [(n, e) for n in needles for e in encodings(n)]
    hits: list[str] = []
    files = [p for d in under for p in (root / d).rglob("*")]
    assert files, f"nothing under {under}"
    for p in files:
        rel = p.relative_to(root).as_posix()
        for needle, _ in patterns:
            if needle.lower() in rel.lower():
                hits.append(f"{rel} (file name): {needle}")
        if not p.is_file():
            continue
        for label, blob in member_blobs(p):
            low = blob.lower()
            for needle, pat in patterns:
                if pat in low:
                    hits.append(f"{rel}[{label}]: {needle}")
    return sorted(set(hits))


def test_the_run_produced_every_kind_of_output(canary_study: Path):
    """The search below covers NIfTI, CSV, JSON, PNG, model files and logs."""
    res = canary_study / "results"
    for pattern in ("nifti/*/*/*.nii.gz", "crops/*.npz", "**/*.csv", "**/*.json", "**/*.png"):
        assert list(res.glob(pattern)), pattern
    assert list(res.glob("models/**/*.pt"))
    assert list(res.glob("models/**/*.skops"))
    assert list(res.glob("logs/**/*.log"))
    assert list((canary_study / ".snakemake").rglob("*"))


def test_no_dicom_canary_in_any_output(canary_study: Path):
    hits = search(canary_study, canary_strings(), ("results", ".snakemake"))
    assert not hits, "identifying values leaked:\n" + "\n".join(hits[:50])


def test_no_folder_name_canary_in_results(canary_study: Path):
    hits = search(canary_study, folder_canaries(), ("results",))
    assert not hits, "input folder names leaked:\n" + "\n".join(hits[:50])


@pytest.mark.xfail(
    strict=True,
    reason="known gap: snakemake's own provenance (.snakemake/metadata, .snakemake/log) "
    "records the input paths of every job, hence the cohort dir and DICOM folder names; "
    "name input folders by pseudonym (docs/reliability.md)",
)
def test_no_folder_name_canary_in_snakemake_metadata(canary_study: Path):
    hits = search(canary_study, folder_canaries(), (".snakemake",))
    assert not hits, "input folder names in .snakemake:\n" + "\n".join(hits[:20])


def test_intervals_are_day_offsets_never_dates(canary_study: Path):
    """No examination date in any form; the pre->post interval is kept only as 30 days."""
    pre, post = CANARY_DATES["pre"], CANARY_DATES["post"]
    forms = []
    for d in (pre, post):
        y, m, dd = d[:4], d[4:6], d[6:]
        forms += [d, f"{y}-{m}-{dd}", f"{y}/{m}/{dd}", f"{dd}.{m}.{y}", f"{m}/{dd}/{y}"]
    hits = search(canary_study, forms, ("results", ".snakemake"))
    assert not hits, hits
