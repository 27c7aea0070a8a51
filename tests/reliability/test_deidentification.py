"""Canary de-identification: no identifying DICOM value reaches any output.

The canary cohort (see conftest.py) carries a unique string in every identifying DICOM
attribute (names, IDs, birth and examination dates, accession, institution, station, device
serial, physicians, study ID, UIDs, a private tag) and in its folder names (cohort dir, DICOM
folders, mask folder; with spaces and non-ASCII characters). After one end-to-end run, every
file under ``results/`` and ``.snakemake/`` is searched: raw bytes, gzip headers and the
decompressed NIfTI header and extensions of ``.nii.gz``, every member of ``.npz``, ``.pt``
and ``.skops`` (zip) archives, PNG text chunks, symbolic-link targets; in UTF-8, Latin-1 and
UTF-16, case-insensitively.

The workflow reads a directory cohort through pseudonymous links (``input_links/``,
recur.cohort.links), so even snakemake's own records name no input folder; the last tests show
that reruns are still triggered through those links.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import run_snakemake
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


def _nifti_head(path: Path) -> bytes:
    """The decompressed NIfTI header and extensions of a .nii.gz (everything before the voxels).

    Voxel data cannot carry text; the header fields (descrip, aux_file, intent_name) and the
    extensions can.
    """
    with gzip.open(path, "rb") as f:
        head = f.read(544)
        if len(head) >= 348 and int.from_bytes(head[:4], "little") == 348:
            vox_offset = int(struct.unpack("<f", head[108:112])[0])
        elif len(head) >= 544 and int.from_bytes(head[:4], "little") == 540:
            vox_offset = struct.unpack("<q", head[168:176])[0]
        else:  # not NIfTI: the whole stream
            return head + f.read()
        return head + f.read(max(0, vox_offset - len(head)))


def member_blobs(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(label, bytes)`` of a file and of everything packed inside it.

    gzip files: the gzip header (it may hold the original file name) and the decompressed
    content (NIfTI: header and extensions); zip files (.npz, .pt, .skops): every member and its
    name; PNG: the decompressed text chunks; everything: the raw bytes.
    """
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        yield "gzip-header", data[:1024]
        yield "gunzip", _nifti_head(path)
    else:
        yield "raw", data
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
            out.append(text.encode(enc))
    return out


def search(root: Path, needles: list[str], under: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every ``(file[member], needle)`` hit of ``needles`` in files (and names) under ``under``.

    Case-insensitive (ASCII) byte search of every needle in every encoding, in one regex pass
    per blob.
    """
    owner = {}
    for n in needles:
        for e in encodings(n):
            owner.setdefault(e.lower(), n)
    alternatives = sorted(owner, key=len, reverse=True)
    pattern = re.compile(b"|".join(re.escape(p) for p in alternatives), re.I)
    hits: set[tuple[str, str]] = set()
    files = [p for d in under for p in (root / d).rglob("*")]
    assert files, f"nothing under {under}"
    for p in files:
        rel = p.relative_to(root).as_posix()
        for m in pattern.finditer(rel.encode()):
            hits.add((f"{rel} (file name)", owner[m.group().lower()]))
        if p.is_symlink():
            for m in pattern.finditer(os.readlink(p).encode()):
                hits.add((f"{rel} (link target)", owner[m.group().lower()]))
        if not p.is_file():
            continue
        for label, blob in member_blobs(p):
            for m in pattern.finditer(blob):
                hits.add((f"{rel}[{label}]", owner[m.group().lower()]))
    return sorted(hits)


def date_forms() -> list[str]:
    """The examination dates in the usual spellings."""
    forms = []
    for d in CANARY_DATES.values():
        y, m, dd = d[:4], d[4:6], d[6:]
        forms += [d, f"{y}-{m}-{dd}", f"{y}/{m}/{dd}", f"{dd}.{m}.{y}", f"{m}/{dd}/{y}"]
    return forms


@pytest.fixture(scope="module")
def hits(canary_study: Path) -> list[tuple[str, str]]:
    """One search of every canary (DICOM values, folder names, dates) over the whole run."""
    needles = [*canary_strings(), *folder_canaries(), *date_forms()]
    return search(canary_study, needles, ("results", ".snakemake"))


def _show(found: list[tuple[str, str]]) -> str:
    return "\n".join(f"{where}: {needle}" for where, needle in found[:50])


def test_the_run_produced_every_kind_of_output(canary_study: Path):
    """The search below covers NIfTI, CSV, JSON, PNG, model files and logs."""
    res = canary_study / "results"
    for pattern in ("nifti/*/*/*.nii.gz", "crops/*.npz", "**/*.csv", "**/*.json", "**/*.png"):
        assert list(res.glob(pattern)), pattern
    assert list(res.glob("models/**/*.pt"))
    assert list(res.glob("models/**/*.skops"))
    assert list(res.glob("logs/**/*.log"))
    assert list((canary_study / ".snakemake").rglob("*"))


def test_no_dicom_canary_in_any_output(hits):
    dicom = set(canary_strings())
    found = [h for h in hits if h[1] in dicom]
    assert not found, "identifying values leaked:\n" + _show(found)


def test_no_folder_name_canary_in_results(hits):
    folders = set(folder_canaries())
    found = [h for h in hits if h[1] in folders and h[0].startswith("results/")]
    assert not found, "input folder names leaked:\n" + _show(found)


def test_no_folder_name_canary_in_snakemake_metadata(hits):
    folders = set(folder_canaries())
    found = [h for h in hits if h[1] in folders and h[0].startswith(".snakemake/")]
    assert not found, "input folder names in .snakemake:\n" + _show(found)


def test_intervals_are_day_offsets_never_dates(hits):
    """No examination date in any spelling, anywhere (the workflow keeps no dates)."""
    dates = set(date_forms())
    found = [h for h in hits if h[1] in dates]
    assert not found, _show(found)


# --------------------------------------------------------------------------- how: the links
def _record(study: Path, output: str) -> dict:
    """Snakemake's metadata record of one output file (its key is the base64 of the path)."""
    import base64

    key = base64.urlsafe_b64encode(output.encode()).decode()
    return json.loads((study / ".snakemake" / "metadata" / key).read_text(encoding="utf-8"))


def test_jobs_read_the_cohort_through_pseudonymous_links(canary_study: Path, canary_cohort: Path):
    links = canary_study / "input_links"
    assert os.path.samefile(links / "cohort", canary_cohort)
    assert (links / "P0001" / "post" / "AP").is_symlink()
    rec = _record(canary_study, "results/nifti/P0001/post/DP.nii.gz")
    assert rec["input"] == sorted(  # one conversion job per patient: its 8 series
        f"input_links/P0001/{tp}/{ph}" for tp in ("pre", "post") for ph in ("PS", "AP", "PVP", "DP")
    )
    assert "--cohort-dir input_links/cohort " in rec["shellcmd"]
    rec = _record(canary_study, "results/masks/P0001/pre.nii.gz")
    assert "input_links/P0001/pre/roi" in rec["input"]


def test_interval_is_kept_as_a_day_offset(canary_study: Path):
    """The canary post study is 30 days after the pre study: only that count is kept."""
    files = sorted((canary_study / "results" / "nifti").glob("*/*/acquisition.json"))
    assert len(files) == 20
    for f in files:
        acq = json.loads(f.read_text(encoding="utf-8"))
        expected = 30 if f.parent.name == "post" else 0
        assert {a["days_from_pre"] for a in acq.values()} == {expected}, f


def _planned_jobs(text: str, rule: str) -> list[str]:
    """The patient of every planned job of ``rule`` in a dry run's printout."""
    jobs = []
    for block in re.split(r"\n(?:local)?rule ", text)[1:]:
        if block.startswith(f"{rule}:"):
            wc = block.split("wildcards: ", 1)[1].splitlines()[0]
            parts = dict(kv.split("=", 1) for kv in wc.split(", "))
            jobs.append(parts["patient"])
    return sorted(jobs)


@contextlib.contextmanager
def _mtime_now(path: Path) -> Iterator[None]:
    """Set the modification time of ``path`` itself (a link: the link) to now; restore it."""
    import time

    st = os.lstat(path)
    try:
        now = time.time_ns() + 5_000_000_000
        os.utime(path, ns=(now, now), follow_symlinks=False)
        yield
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def test_a_changed_dicom_folder_or_row_still_reruns_its_job(
    canary_study: Path, canary_cohort: Path, hits
):
    """Snakemake takes the newer of a link's and its target's mtime: a DICOM folder changed
    behind a link plans that patient's conversion (one job per patient) again, and what
    follows it, nothing else; so does a link rewritten because its series.csv row changed.
    The printout names pseudonyms only."""
    import pandas as pd

    series = pd.read_csv(canary_cohort / "series.csv", dtype=str)
    row = series[(series.patient_id == "P0001") & (series.timepoint == "pre")]
    folder = canary_cohort / row[row.phase == "AP"]["dicom_dir"].iloc[0]
    cases = [
        (folder, ["P0001"]),  # files added to / removed from the folder
        (canary_study / "input_links/P0002/pre/DP", ["P0002"]),  # row edited
    ]
    for path, expected in cases:
        with _mtime_now(path):
            res = run_snakemake(canary_study, "-n", configfile="run.yaml", timeout=600)
        text = res.stdout + res.stderr
        assert res.returncode == 0, text[-3000:]
        assert _planned_jobs(text, "convert") == expected, text[-3000:]
        assert "crop" in text
        found = [n for n in folder_canaries() if n.lower() in text.lower()]
        assert not found, found
    res = run_snakemake(canary_study, "-n", configfile="run.yaml", timeout=600)
    assert _planned_jobs(res.stdout + res.stderr, "convert") == []  # mtimes restored
