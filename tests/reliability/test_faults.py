"""Faults: refused imaging input, killed runs, concurrent runs.

``broken_run``: a copy of the canary cohort with one refused DICOM series, four bad NIfTI ROI
masks, a SEG of another patient and an RTSTRUCT row naming an ROI it does not hold, run once
with ``--keep-going``: every refusal names the patient pseudonym and the
file by its row of series.csv / rois.csv (never its folder name), leaves nothing
half-written, and nothing downstream runs.

``killed_run``: the workflow (up to the DL signatures) is SIGKILLed, process group and all,
while converting; a second snakemake started meanwhile in the same directory is refused by
the lock without harming the first; the rerun with ``--rerun-incomplete`` is SIGKILLed while
training; the final rerun completes and its crops and signatures equal those of the
uninterrupted canary run (same config, same cohort).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from ..conftest import failed_logs
from .conftest import (
    crops_digest,
    directory_config,
    kill_group,
    snakemake_cmd,
    snakemake_env,
    start_snakemake,
    wait_for,
)

pytestmark = pytest.mark.slow

DL_TARGETS = [
    f"results/predictions/{name}.csv" for name in ("Pre", "PrePost", "oof/Pre", "oof/PrePost")
]


def run(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        snakemake_cmd(workdir, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=snakemake_env(),
        check=False,
    )


# ============================================================== refused imaging input
def _rows(cohort: Path, table: str, patient: str, timepoint: str) -> pd.DataFrame:
    df = pd.read_csv(cohort / table, dtype=str)
    return df[(df["patient_id"] == patient) & (df["timepoint"] == timepoint)]


def _drop_middle_slice(cohort: Path, patient: str) -> str:
    """Delete the middle slice of the AP series of ``patient`` (pre); returns its folder."""
    import pydicom

    rows = _rows(cohort, "series.csv", patient, "pre")
    rel = rows.loc[rows["phase"] == "AP", "dicom_dir"].iloc[0]
    files = sorted(
        (cohort / rel).iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2])
    )
    files[len(files) // 2].unlink()
    return rel


def _rewrite_mask(cohort: Path, patient: str, change) -> str:
    rel = _rows(cohort, "rois.csv", patient, "pre")["mask"].iloc[0]
    img = sitk.ReadImage(str(cohort / rel))
    out = change(img)
    sitk.WriteImage(out, str(cohort / rel), True)
    return rel


def _with_array(img: sitk.Image, arr: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _shifted(img: sitk.Image) -> sitk.Image:
    img = sitk.Image(img)
    o = img.GetOrigin()
    img.SetOrigin((o[0] + 7.0, o[1], o[2]))
    return img


def _empty(img: sitk.Image) -> sitk.Image:
    return _with_array(img, np.zeros_like(sitk.GetArrayFromImage(img)))


def _nan(img: sitk.Image) -> sitk.Image:
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr[np.nonzero(arr)[0][0], np.nonzero(arr)[1][0], np.nonzero(arr)[2][0]] = np.nan
    return _with_array(img, arr)


def _fractional(img: sitk.Image) -> sitk.Image:
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr[arr > 0] = 0.5
    return _with_array(img, arr)


#: patient -> (how the pre mask is broken, words the refusal must contain)
MASK_CASES = {
    "P0003": (_shifted, "origin"),
    "P0004": (_empty, "the mask is empty"),
    "P0005": (_nan, "NaN"),
    "P0006": (_fractional, "non-integer labels"),
}
BROKEN_SERIES_PATIENT = "P0002"


def _seg_of_another_patient(cohort: Path, patient: str) -> str:
    """Overwrite the patient's pre SEG with P0001's (drawn on another patient's DP series)."""
    rel = _rows(cohort, "rois.csv", patient, "pre")["mask"].iloc[0]
    other = _rows(cohort, "rois.csv", "P0001", "pre")["mask"].iloc[0]
    shutil.copyfile(cohort / other, cohort / rel)
    return rel


def _unknown_roi_name(cohort: Path, patient: str) -> str:
    """Name an ROI the patient's pre RTSTRUCT does not hold in rois.csv's roi column."""
    rois = pd.read_csv(cohort / "rois.csv", dtype=str, keep_default_na=False)
    at = (rois["patient_id"] == patient) & (rois["timepoint"] == "pre")
    rois.loc[at, "roi"] = "Liver"
    rois.to_csv(cohort / "rois.csv", index=False)
    return rois.loc[at, "mask"].iloc[0]


#: patient -> (how the pre SEG / RTSTRUCT or its row is broken, words the refusal must contain)
DICOM_MASK_CASES = {
    "P0008": (_seg_of_another_patient, "references another series than the DP series"),
    "P0007": (_unknown_roi_name, "holds no ROI named 'Liver'"),
}


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory, canary_cohort: Path):
    root = tmp_path_factory.mktemp("broken")
    cohort = root / "cohort with spaces ü"
    shutil.copytree(canary_cohort, cohort)
    series_rel = _drop_middle_slice(cohort, BROKEN_SERIES_PATIENT)
    masks = {p: _rewrite_mask(cohort, p, change) for p, (change, _) in MASK_CASES.items()}
    masks |= {p: change(cohort, p) for p, (change, _) in DICOM_MASK_CASES.items()}
    work = root / "work"
    work.mkdir()
    (work / "run.yaml").write_text(directory_config(cohort), encoding="utf-8")
    targets = [f"results/crops/{BROKEN_SERIES_PATIENT}.npz"]
    targets += [f"results/masks/{p}/pre.nii.gz" for p in [*MASK_CASES, *DICOM_MASK_CASES]]
    res = run(work, "--cores", "2", "--keep-going", *targets)
    return work, res, series_rel, masks


def _table_row(cohort_table: Path, column: str, value: str) -> int:
    """Spreadsheet row (header = 1) of the row whose ``column`` is ``value``."""
    df = pd.read_csv(cohort_table, dtype=str)
    return int(df.index[df[column] == value][0]) + 2


def test_refused_series_names_patient_and_table_row(broken_run):
    """A job's message is stored under results/logs: it names the series by its row of
    series.csv, never by its folder (a folder may be named after a patient)."""
    work, res, series_rel, _ = broken_run
    assert res.returncode != 0
    log = (work / "results/logs/convert" / f"{BROKEN_SERIES_PATIENT}.log").read_text()
    assert BROKEN_SERIES_PATIENT in log
    row = _table_row(work / "input_links/cohort/series.csv", "dicom_dir", series_rel)
    assert f"<series.csv row {row}>" in log, log
    assert series_rel not in log, log
    assert Path(series_rel).name not in log, log
    assert "missing" in log.lower() or "gap" in log.lower(), log
    assert "Traceback" not in log, log


def test_refused_series_leaves_nothing_and_runs_nothing_downstream(broken_run):
    work, _, _, _ = broken_run
    p = BROKEN_SERIES_PATIENT
    # one conversion job per patient, all or nothing: the post time point converted fine but
    # is not written either
    out = work / "results" / "nifti" / p
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))
    for path in (
        f"results/masks/{p}/pre.nii.gz",
        f"results/registered/{p}/pre",
        f"results/crops/{p}.npz",
        f"results/logs/register/{p}.log",
        f"results/logs/crop/{p}.log",
    ):
        assert not (work / path).exists(), path


@pytest.mark.parametrize("patient", sorted([*MASK_CASES, *DICOM_MASK_CASES]))
def test_bad_mask_is_refused_and_leaves_nothing(broken_run, patient: str):
    work, _, _, masks = broken_run
    problem = {**MASK_CASES, **DICOM_MASK_CASES}[patient][1]
    log = (work / "results/logs/check_mask" / f"{patient}.log").read_text()
    assert f"patient {patient} (pre)" in log, log
    row = _table_row(work / "input_links/cohort/rois.csv", "mask", masks[patient])
    assert f"<rois.csv row {row}>" in log, log  # the mask by its table row
    assert masks[patient] not in log, log
    assert problem in log, log
    assert "Traceback" not in log, log
    # one register job per patient, all or nothing: neither time point's mask is written
    for folder in (work / "results" / "masks" / patient, work / "results" / "registered" / patient):
        assert not folder.exists() or not any(folder.rglob("*")), list(folder.rglob("*"))
    # the DP image it was checked against was converted fine (the refusal is the mask's)
    assert (work / "results" / "nifti" / patient / "pre" / "DP.nii.gz").is_file()


def test_spaces_and_non_ascii_paths_and_names_work(canary_study: Path, canary_cohort: Path):
    """The canary cohort's dir and folders hold spaces and non-ASCII characters and its DICOM
    patient names are non-ASCII (UTF-8): the uninterrupted run completed on it."""
    import pydicom

    assert " " in canary_cohort.name
    assert not canary_cohort.name.isascii()
    series = pd.read_csv(canary_cohort / "series.csv")
    first = next((canary_cohort / series["dicom_dir"].iloc[0]).iterdir())
    ds = pydicom.dcmread(first)
    assert not str(ds.PatientName).isascii()
    assert all(not d.isascii() and " " in d for d in series["dicom_dir"])
    patients = pd.read_csv(canary_study / "results/cohort/patients.csv")["patient_id"]
    for p in patients:
        assert (canary_study / "results" / "crops" / f"{p}.npz").is_file()


# ============================================================== kills, locks, reruns
def marked_incomplete(work: Path) -> list[str]:
    """Output paths snakemake marked incomplete (jobs running when it was killed)."""
    folder = work / ".snakemake" / "incomplete"
    names = [p.name for p in folder.glob("*") if p.name != "migration_underway"]
    return sorted(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)).decode() for n in names)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory, canary_cohort: Path):
    work = tmp_path_factory.mktemp("killed")
    (work / "run.yaml").write_text(directory_config(canary_cohort), encoding="utf-8")
    events: dict[str, object] = {}

    # 1. start, wait until conversions are running, try a second run, then SIGKILL
    first = start_snakemake(work, "--cores", "2", *DL_TARGETS, log=work / "first.out")
    convert_logs = work / "results" / "logs" / "convert"
    wait_for(
        lambda: convert_logs.is_dir() and len(list(convert_logs.rglob("*.log"))) >= 3,
        first,
        600,
        "conversion to start",
    )
    second = run(work, "--cores", "1", "--rerun-incomplete", *DL_TARGETS, timeout=300)
    events["second"] = second
    events["first_alive_after_second"] = first.poll() is None
    kill_group(first)
    events["incomplete_after_convert_kill"] = marked_incomplete(work)
    events["outputs_after_kill"] = sorted(
        p.relative_to(work).as_posix() for p in (work / "results").rglob("*") if p.is_file()
    )

    # 2. a plain rerun refuses to trust the incomplete outputs
    unlock = run(work, "--unlock", timeout=300)
    assert unlock.returncode == 0, unlock.stderr
    events["plain_rerun"] = run(work, "--cores", "1", "-n", *DL_TARGETS, timeout=300)

    # 3. rerun with --rerun-incomplete, SIGKILL again while training
    again = start_snakemake(
        work, "--cores", "2", "--rerun-incomplete", *DL_TARGETS, log=work / "again.out"
    )
    train_logs = work / "results" / "logs" / "train_dl"
    wait_for(
        lambda: train_logs.is_dir() and any(train_logs.rglob("*.log")),
        again,
        1500,
        "training to start",
    )
    time.sleep(2)
    kill_group(again)
    events["incomplete_after_train_kill"] = marked_incomplete(work)
    # 4. final rerun to completion
    assert run(work, "--unlock", timeout=300).returncode == 0
    final = run(work, "--cores", "2", "--rerun-incomplete", *DL_TARGETS)
    if final.returncode != 0:
        pytest.fail(f"rerun failed:\n{final.stderr[-5000:]}\n{failed_logs(work)[-5000:]}")
    events["final"] = final
    return work, events


def test_second_concurrent_run_is_refused_without_harming_the_first(killed_run):
    _, events = killed_run
    second = events["second"]
    assert second.returncode != 0
    assert "LockException" in second.stderr + second.stdout or "cannot be locked" in (
        second.stderr + second.stdout
    ), second.stderr
    assert events["first_alive_after_second"], "the first run died when the second started"


def test_kill_during_conversion_leaves_incomplete_markers_not_trusted(killed_run):
    _, events = killed_run
    assert events["incomplete_after_convert_kill"], "the kill hit no running job"
    plain = events["plain_rerun"]
    text = plain.stdout + plain.stderr
    # any rule's outputs (a job after conversion may be running too, e.g. register)
    left = [p for p in events["incomplete_after_convert_kill"] if p in events["outputs_after_kill"]]
    if left:  # a job was killed between two of its output files: they are not trusted
        assert "IncompleteFilesException" in text, text[-3000:]
        for path in left:
            assert path in text, path
    else:  # outputs are written atomically: a job cut short left none, so it is planned again
        counts = sum(line.startswith("rule ") for line in text.splitlines())
        # one job per output kind and patient (results/<kind>/<patient>/...)
        jobs = {Path(p).parts[:3] for p in events["incomplete_after_convert_kill"]}
        assert counts >= len(jobs)


def test_kill_during_training_left_incomplete_markers(killed_run):
    _, events = killed_run
    assert events["incomplete_after_train_kill"], "the kill hit no running job"


def test_rerun_after_kills_equals_uninterrupted_run(killed_run, canary_study: Path):
    work, _ = killed_run
    ref_crops = sorted((canary_study / "results" / "crops").glob("*.npz"))
    crops = sorted((work / "results" / "crops").glob("*.npz"))
    assert [p.name for p in crops] == [p.name for p in ref_crops]
    for a, b in zip(crops, ref_crops, strict=True):
        assert crops_digest(a) == crops_digest(b), a.name
    for target in DL_TARGETS:
        got = pd.read_csv(work / target)
        ref = pd.read_csv(canary_study / target)
        pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-6)
    assert not list((work / ".snakemake" / "incomplete").glob("*"))
    # nothing left to do
    res = run(work, "-n", *DL_TARGETS, timeout=300)
    assert "Nothing to be done" in res.stdout + res.stderr, res.stdout[-2000:]
