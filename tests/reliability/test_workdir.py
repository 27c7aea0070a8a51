"""One cohort per working directory; unsafe ids, bad tables and exclusions leak nothing.

Real ``snakemake`` runs on tiny real-DICOM cohorts (the canary cohort of conftest.py and a
second synthetic cohort), nothing mocked:

* ``running``: a study runs on cohort A (conversion and registration of every patient) while a
  dry run and a real run with cohort B's config are started in the same working directory;
  both are refused with one line, and the study's outputs are byte-identical to those of a
  clean run of A in another directory;
* afterwards, runs with another cohort, or with edited tables, are refused by the cohort
  record (results/cohort.json) unless ``cohort.tables_edited`` says the edit was meant;
* a process holding the working-directory lock keeps a second invocation from writing links;
* unsafe patient ids are refused before any link or file is written, NFC/NFD spellings are one
  patient, too few patients of a class and semicolon tables are refused at validation, with
  one line per problem, no traceback and no cohort path;
* an exclusion run (``qc.on_failure: exclude``) on folders named with canaries leaves no canary
  under ``results/`` or ``.snakemake/``, in files, PNG text chunks or the drawn reason text.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recur.cohort import exclusions
from recur.cohort import record as cohort_record

from ..cohort.test_contract import write_cohort_tables
from ..conftest import run_snakemake
from .conftest import (
    CANARY_COHORT_DIR,
    directory_config,
    folder_canaries,
    start_snakemake,
    wait_for,
)
from .test_deidentification import search
from .test_faults import _drop_middle_slice, _empty, _rewrite_mask

pytestmark = pytest.mark.slow

PATIENTS = [f"P{i:04d}" for i in range(1, 11)]
#: Conversion and registration of every patient (the per-patient chain a run reads cohort
#: files in).
TARGETS = [f"results/registered/{p}/post/qc.csv" for p in PATIENTS]


def _refusal(res: subprocess.CompletedProcess[str], *cohorts: Path) -> str:
    """The output of a refused invocation, checked for the shared refusal properties."""
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    assert 'File "' not in out, out
    for c in cohorts:
        assert str(c) not in out, out
    return out


def _digests(work: Path) -> dict[str, str]:
    """sha256 of every file of the per-patient chain; a registration QC table without its
    wall-clock ``seconds`` column (the one value that differs between two runs); a
    registered image by its header and its voxels rounded to 1e-3 (a registration repeated
    on a loaded machine was once seen to move voxels in the last bits, its .tfm unchanged)."""
    import SimpleITK as sitk

    out = {}
    for sub in ("nifti", "masks", "registered"):
        for f in sorted((work / "results" / sub).rglob("*")):
            if not f.is_file():
                continue
            data = f.read_bytes()
            if f.name == "qc.csv":
                data = pd.read_csv(f).drop(columns=["seconds"]).to_csv(index=False).encode()
            elif sub == "registered" and f.name.endswith(".nii.gz"):
                img = sitk.ReadImage(str(f))
                voxels = np.round(sitk.GetArrayFromImage(img).astype(np.float64), 3)
                geometry = repr((img.GetSize(), img.GetSpacing(), img.GetOrigin()))
                data = geometry.encode() + img.GetDirection().__repr__().encode()
                data += voxels.tobytes()
            out[f.relative_to(work).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, canary_cohort: Path):
    """Cohort A running in ``work`` while B's config is tried there; a clean run of A."""
    from recur.synthetic import cohort as synth

    root = tmp_path_factory.mktemp("workdir")
    cohort_b = root / "cohort B"
    synth.write_cohort(
        cohort_b,
        synth.SyntheticSettings.defaults(
            n_train=6, n_test=(2, 2), seed=16, er_share={"train": 0.5, "test": 0.5}
        ),
        truth_path=root / "truth_b.csv",
    )
    ref, work = root / "ref", root / "work"
    for d in (ref, work):
        d.mkdir()
        (d / "run.yaml").write_text(directory_config(canary_cohort), encoding="utf-8")
        (d / "b.yaml").write_text(directory_config(cohort_b), encoding="utf-8")
    clean = run_snakemake(ref, "--cores", "1", *TARGETS, configfile="run.yaml")
    assert clean.returncode == 0, clean.stderr[-3000:]

    proc = start_snakemake(work, "--cores", "1", *TARGETS, log=root / "a.log")
    wait_for(
        lambda: any((work / "results" / "nifti").glob("*/post/DP.nii.gz")),
        proc,
        600,
        "the first conversion",
    )
    dry = run_snakemake(work, "-n", configfile="b.yaml", timeout=300)
    real = run_snakemake(work, "--cores", "1", *TARGETS, configfile="b.yaml", timeout=300)
    a_was_running = proc.poll() is None
    proc.wait(timeout=1200)
    proc._log_handle.close()  # type: ignore[attr-defined]
    return {
        "ref": ref,
        "work": work,
        "a": canary_cohort,
        "b": cohort_b,
        "rc": proc.returncode,
        "log": (root / "a.log").read_text(encoding="utf-8"),
        "dry": dry,
        "real": real,
        "a_was_running": a_was_running,
    }


def test_another_cohort_changes_nothing_of_a_running_study(running):
    for res in (running["dry"], running["real"]):
        out = _refusal(res, running["a"], running["b"])
        assert "working directory: " in out, out
    assert running["a_was_running"], "the study ended before the second cohort was tried"
    assert running["rc"] == 0, running["log"][-3000:]
    work = running["work"]
    assert os.path.samefile(work / "input_links" / "cohort", running["a"])
    want, got = _digests(running["ref"]), _digests(work)
    assert len(want) == 10 * (8 + 2 + 2 * (4 + 3 + 1) + 2), sorted(want)[:5]
    assert got == want


def test_a_finished_study_refuses_another_cohort_and_unmeant_edits(running, tmp_path: Path):
    work = running["work"]
    record = cohort_record.read_record(work)
    assert record is not None
    assert record["source"] == "directory"
    assert record["patients"] == 10
    out = _refusal(run_snakemake(work, "-n", configfile="b.yaml", timeout=300), running["b"])
    assert "results/ here was made from other cohort tables" in out
    assert "another working directory" in out
    assert cohort_record.START_OVER in out
    # the same cohort with one value edited (a copy, so the shared cohort stays untouched)
    edited = tmp_path / "A edited"
    shutil.copytree(running["a"], edited)
    clinical = pd.read_csv(edited / "clinical.csv", dtype=str, keep_default_na=False)
    clinical.loc[0, "afp_ng_ml"] = "12345"
    clinical.to_csv(edited / "clinical.csv", index=False)
    (work / "edited.yaml").write_text(directory_config(edited), encoding="utf-8")
    out = _refusal(run_snakemake(work, "-n", configfile="edited.yaml", timeout=300), edited)
    assert "(clinical.csv differ; 10 patients then, 10 now)" in out, out
    assert "tables_edited: true" in out
    res = run_snakemake(
        work, "-n", "--config", "cohort={tables_edited: true}", configfile="edited.yaml"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # the dry run renewed nothing; the original cohort still matches the record
    assert cohort_record.read_record(work) == record
    res = run_snakemake(work, "-n", configfile="run.yaml", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def test_a_held_lock_keeps_a_second_invocation_from_writing_links(tmp_path: Path, running):
    work = tmp_path / "work"
    work.mkdir()
    (work / "b.yaml").write_text(directory_config(running["b"]), encoding="utf-8")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from recur.cohort import record as c;"
            "assert c.hold_lock(sys.argv[1]); print('held', flush=True); time.sleep(120)",
            str(work),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        out = _refusal(run_snakemake(work, "-n", configfile="b.yaml", timeout=300), running["b"])
        assert "another snakemake run is working here" in out, out
        assert not (work / "input_links").exists()
        assert not (work / "results").exists()
    finally:
        holder.kill()
        holder.wait()
    res = run_snakemake(work, "-n", configfile="b.yaml", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (work / "input_links" / "P0001" / "pre" / "AP").is_symlink()


# ------------------------------------------------------------------ ids and tables
def _tables_cohort(root: Path, n_train: int = 12) -> Path:
    cohort = root / "cohort"
    cohort.mkdir(parents=True)
    write_cohort_tables(cohort, n_train=n_train, n_test=2)
    return cohort


def _rename(cohort: Path, old: str, new: str, tables=("clinical.csv", "series.csv", "rois.csv")):
    for name in tables:
        df = pd.read_csv(cohort / name, dtype=str, keep_default_na=False)
        df["patient_id"] = df["patient_id"].replace(old, new)
        df.to_csv(cohort / name, index=False)


def _dry_run(root: Path, cohort: Path, *args: str) -> subprocess.CompletedProcess[str]:
    work = root / "work"
    work.mkdir(exist_ok=True)
    (work / "c.yaml").write_text(directory_config(cohort), encoding="utf-8")
    return run_snakemake(work, "-n", *args, configfile="c.yaml", timeout=300)


def _links_under(root: Path) -> list[str]:
    return [
        os.path.join(d, n)
        for d, dirs, files in os.walk(root)
        for n in dirs + files
        if os.path.islink(os.path.join(d, n))
    ]


@pytest.mark.parametrize("bad", ["..", ".", "NA", "-rf", "x" * 250])
def test_unsafe_ids_are_refused_before_any_file(tmp_path: Path, bad: str):
    cohort = _tables_cohort(tmp_path)
    _rename(cohort, "P001", bad)
    out = _refusal(_dry_run(tmp_path, cohort), cohort)
    assert "column 'patient_id'" in out, out
    assert "(1-64 letters, digits" in out, out
    work = tmp_path / "work"
    assert not (work / "input_links").exists()
    assert not (work / "results").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "work"]
    assert _links_under(tmp_path) == []


def test_nfc_and_nfd_spellings_are_one_patient(tmp_path: Path):
    cohort = _tables_cohort(tmp_path)
    _rename(cohort, "P001", unicodedata.normalize("NFD", "Pé001"), tables=("clinical.csv",))
    _rename(
        cohort, "P001", unicodedata.normalize("NFC", "Pé001"), tables=("series.csv", "rois.csv")
    )
    res = _dry_run(tmp_path, cohort)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    names = os.listdir(tmp_path / "work" / "input_links")
    assert unicodedata.normalize("NFC", "Pé001") in names
    assert unicodedata.normalize("NFD", "Pé001") not in names


def test_too_few_patients_of_a_class_are_refused_at_validation(tmp_path: Path):
    cohort = _tables_cohort(tmp_path, n_train=12)
    clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
    train_er = clinical.index[(clinical["cohort"] == "train") & (clinical["er"] == "1")]
    clinical.loc[train_er[1:], ["er", "rfs_months", "rfs_event"]] = ["0", "40", "0"]
    clinical.to_csv(cohort / "clinical.csv", index=False)
    out = _refusal(_dry_run(tmp_path, cohort), cohort)
    assert "needs at least 2 patients with and 2 without ER (has 12 patients, 1 with ER)" in out
    assert not (tmp_path / "work" / "results").exists()


def test_semicolon_table_gets_one_hint_line(tmp_path: Path):
    cohort = _tables_cohort(tmp_path)
    clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
    clinical.to_csv(cohort / "clinical.csv", index=False, sep=";")
    out = _refusal(_dry_run(tmp_path, cohort), cohort)
    ours = [
        line
        for line in out.splitlines()
        if line.strip() and not line.startswith(("Using workflow", "Config file"))
    ]
    assert len(ours) == 2, ours  # the heading and the one problem
    assert "looks semicolon-separated" in ours[1]


# ------------------------------------------------------------------ exclusions leak nothing
@pytest.fixture(scope="module")
def exclusion_run(tmp_path_factory: pytest.TempPathFactory, canary_cohort: Path) -> Path:
    """The canary cohort (canary folder names) with one broken series and one empty mask,
    run with qc.on_failure 'exclude' up to the QC exclusions (every patient's crops and QC
    picture)."""
    root = tmp_path_factory.mktemp("exclude")
    cohort = root / CANARY_COHORT_DIR
    shutil.copytree(canary_cohort, cohort)
    _drop_middle_slice(cohort, "P0002")
    _rewrite_mask(cohort, "P0004", _empty)
    work = root / "work"
    work.mkdir()
    config = directory_config(cohort, "qc: {on_failure: exclude}\n")
    (work / "run.yaml").write_text(config, encoding="utf-8")
    res = run_snakemake(work, "--cores", "2", "results/qc/exclusions.csv", configfile="run.yaml")
    assert res.returncode == 0, res.stderr[-4000:]
    return work


def test_exclusions_record_pseudonyms_and_reasons_only(exclusion_run: Path):
    table = exclusions.read_exclusions(exclusion_run / "results/qc/exclusions.csv")
    assert sorted(table["patient_id"]) == ["P0002", "P0004"]
    reasons = dict(zip(table["patient_id"], table["reason"], strict=True))
    assert "<series.csv row" in reasons["P0002"], reasons
    assert "<rois.csv row" in reasons["P0004"], reasons
    assert "empty" in reasons["P0004"], reasons
    # the text drawn in each excluded patient's QC picture, from the code path that draws it
    for patient in ("P0002", "P0004"):
        records = exclusions.read_placeholder(exclusion_run / f"results/crops/{patient}.npz")
        drawn = "\n".join(exclusions.excluded_lines(patient, records))
        assert patient in drawn
        assert not [c for c in folder_canaries() if c.lower() in drawn.lower()], drawn
        assert (exclusion_run / f"results/qc/crops/{patient}.png").is_file()


def test_an_exclusion_run_leaves_no_folder_name(exclusion_run: Path):
    found = search(exclusion_run, folder_canaries(), ("results", ".snakemake"))
    assert not found, found[:20]
