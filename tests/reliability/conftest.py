"""Shared fixtures of the reliability suite: a tiny canary cohort and one end-to-end run on it.

The canary cohort is a small synthetic cohort (``recur.synthetic.cohort.write_cohort``) whose DICOM
headers are rewritten with pydicom so that every identifying attribute carries a unique,
greppable canary string, and whose folders (cohort dir, DICOM folders, mask folder) carry
canaries too, with spaces and non-ASCII characters. Some patients' masks are DICOM SEG or
RTSTRUCT objects (:data:`DICOM_ROI_PATIENTS`) with canaries in their own headers, descriptions
and ROI names. ``canary_study`` runs the whole workflow
on it once; the de-identification tests search that run's files and the fault tests use its
outputs as the uninterrupted reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ..conftest import REPO, failed_logs, run_snakemake

#: Tiny cohort: 6 training patients and two test sites of 2 (10 patients).
N_TRAIN, N_TEST, SEED = 6, (2, 2), 15

#: Identifying DICOM attributes and the canary planted in each (unique per attribute).
CANARY_ATTRIBUTES: dict[str, str] = {
    "PatientName": "CNRYPNAME^Zoëlinde Müllerstraßenß-Ñúñezñ",
    "PatientID": "CNRYPID4711",
    "OtherPatientIDs": "CNRYOTHERPID",
    "AccessionNumber": "CNRYACCNO",
    "InstitutionName": "CNRYINSTITUTION Klinikum",
    "InstitutionAddress": "CNRYADDRESS 1 Main St",
    "InstitutionalDepartmentName": "CNRYDEPARTMENT",
    "StationName": "CNRYSTATION",
    "DeviceSerialNumber": "CNRYSERIAL",
    "ReferringPhysicianName": "CNRYREFDOC^Anna",
    "PerformingPhysicianName": "CNRYPERFDOC^Bob",
    "OperatorsName": "CNRYOPERATOR^Cy",
    "StudyID": "CNRYSTUDYID",
    "RequestingPhysician": "CNRYREQDOC^Di",
}
#: Canary in a private tag (0029,xx10 of a private block).
CANARY_PRIVATE = "CNRYPRIVATETAG"
#: UID root of every rewritten UID (study, series, frame of reference, SOP instance).
CANARY_UID_ROOT = "1.2.826.0.1.3680043.10.98765."
#: Dates: birth, and the pre and post examination dates (post = pre + 30 days).
CANARY_BIRTH = "19361127"
CANARY_DATES = {"pre": "20170313", "post": "20170412"}
#: Patients whose masks the canary cohort holds as DICOM SEG or RTSTRUCT (both time points);
#: the others keep NIfTI masks (the fault tests break the NIfTI masks of P0003-P0006).
DICOM_ROI_PATIENTS = {"P0001": "seg", "P0007": "rtstruct", "P0008": "seg"}
#: Canaries in the segment labels / ROI names (rois.csv's roi column names them) and in the
#: descriptive texts of the SEG / RTSTRUCT objects.
CANARY_ROI_NAME = "CNRYROINAME"
CANARY_ROI_TEXT = "CNRYROITEXT"
#: Canaries in folder names (cohort dir, DICOM root, mask folder), with spaces and non-ASCII.
CANARY_COHORT_DIR = "CNRYCOHORTDIR Klinik Zürich"
CANARY_DICOM_DIR = "CNRYDICOMDIR Export Ünï"
CANARY_ROI_DIR = "CNRYROIDIR masks é"

#: Training settings of TINY_CONFIG, for a directory-source run.
TRAIN_CONFIG = """\
train:
  epochs: 1
  patience: 1
  crossfit_folds: 2
  batch_size: 4
  widths: [4, 4, 8, 8]
evaluate: {bootstrap: 50}
margin: {figure_patients: 1}
gradcam: {n_per_group: 1}
"""


def canary_strings() -> list[str]:
    """Every planted canary, as the exact strings to search for."""
    out = [v.split("^")[0] for v in CANARY_ATTRIBUTES.values()]
    out += ["Zoëlinde", "Müllerstraßenß", "Ñúñezñ", CANARY_PRIVATE, CANARY_UID_ROOT.rstrip(".")]
    out += [CANARY_BIRTH, *CANARY_DATES.values(), CANARY_ROI_NAME, CANARY_ROI_TEXT]
    out += [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in (CANARY_BIRTH, *CANARY_DATES.values())]
    return out


def folder_canaries() -> list[str]:
    return ["CNRYCOHORTDIR", "CNRYDICOMDIR", "CNRYROIDIR"]


def plant_canaries(cohort: Path) -> None:
    """Rewrite every DICOM file of ``cohort`` so that its identifying attributes are canaries.

    Also drops the optional ``series_uid`` column of series.csv (the user's table would
    otherwise carry the original UIDs) and sets a UTF-8 character set for the non-ASCII name.
    """
    import pydicom

    series = pd.read_csv(cohort / "series.csv", dtype=str)
    counter = 0
    uid_map: dict[str, str] = {}

    def new_uid(old: str) -> str:
        nonlocal counter
        if old not in uid_map:
            counter += 1
            uid_map[old] = f"{CANARY_UID_ROOT}{counter}"
        return uid_map[old]

    for row in series.itertuples():
        for f in sorted((cohort / row.dicom_dir).iterdir()):
            ds = pydicom.dcmread(f)
            ds.SpecificCharacterSet = "ISO_IR 192"
            for key, value in CANARY_ATTRIBUTES.items():
                setattr(ds, key, value)
            ds.PatientBirthDate = CANARY_BIRTH
            for key in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
                setattr(ds, key, CANARY_DATES[row.timepoint])
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
                setattr(ds, key, new_uid(str(getattr(ds, key))))
            sop = new_uid(str(ds.SOPInstanceUID))
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            block = ds.private_block(0x0029, "RECUR SYNTH FAKE", create=True)
            block.add_new(0x10, "LO", CANARY_PRIVATE)
            ds.save_as(f, enforce_file_format=True)
    rois = pd.read_csv(cohort / "rois.csv", dtype=str, keep_default_na=False)
    for row in rois.itertuples():
        if row.roi:  # a SEG / RTSTRUCT: its own identifiers and its references to the images
            _plant_in_roi_object(cohort / row.mask, CANARY_DATES[row.timepoint], new_uid, uid_map)
    series = series.drop(columns=["series_uid"])
    series.to_csv(cohort / "series.csv", index=False)


def _plant_in_roi_object(path: Path, date: str, new_uid, uid_map: dict[str, str]) -> None:
    """Canaries in a SEG / RTSTRUCT, at every level (highdicom copies the scanner's values
    into ContributingEquipmentSequence), with its references kept pointing at the images."""
    import pydicom

    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet = "ISO_IR 192"
    for key in ("SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, key, new_uid(str(getattr(ds, key))))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for elem in ds.iterall():
        if elem.VR == "UI" and isinstance(elem.value, str) and elem.value in uid_map:
            elem.value = uid_map[elem.value]
        elif elem.keyword in CANARY_ATTRIBUTES:
            elem.value = CANARY_ATTRIBUTES[elem.keyword]
        elif elem.VR == "DA" and elem.value:
            elem.value = date
        elif elem.keyword in ("ContentCreatorName", "ROIInterpreter"):
            elem.value = CANARY_ATTRIBUTES["OperatorsName"]
        elif elem.keyword in _ROI_TEXTS:
            elem.value = CANARY_ROI_TEXT  # fits every VR of these (CS and SH: 16)
    for key, value in CANARY_ATTRIBUTES.items():
        setattr(ds, key, value)
    ds.PatientBirthDate = CANARY_BIRTH
    ds.save_as(path, enforce_file_format=True)


#: Free-text attributes of SEG / RTSTRUCT objects that a reader may fill with anything.
_ROI_TEXTS = (
    "SeriesDescription",
    "ContentLabel",
    "ContentDescription",
    "SegmentDescription",
    "StructureSetLabel",
    "StructureSetName",
    "StructureSetDescription",
    "ROIDescription",
    "ROIObservationLabel",
)


def dicom_roi_masks(cohort: Path) -> None:
    """Store the masks of :data:`DICOM_ROI_PATIENTS` as SEG / RTSTRUCT on their DP series
    (``recur.synthetic.roi_writer``) named by a canary in rois.csv's roi column."""
    import SimpleITK as sitk

    from recur.synthetic import roi_writer

    series = pd.read_csv(cohort / "series.csv", dtype=str)
    rois = pd.read_csv(cohort / "rois.csv", dtype=str)
    rois["roi"] = ""
    for i, row in rois.iterrows():
        kind = DICOM_ROI_PATIENTS.get(row["patient_id"])
        if kind is None:
            continue
        dp = series[
            (series["patient_id"] == row["patient_id"])
            & (series["timepoint"] == row["timepoint"])
            & (series["phase"] == "DP")
        ]["dicom_dir"].iloc[0]
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / row["mask"])))
        rel = Path(row["mask"]).parent / f"{row['patient_id']}_{row['timepoint']}_{kind}.dcm"
        label = f"{CANARY_ROI_NAME} {row['timepoint']} Zürich"
        write = roi_writer.write_seg if kind == "seg" else roi_writer.write_rtstruct
        write(mask, cohort / dp, cohort / rel, label=label, uid_key=("canary", i))
        (cohort / row["mask"]).unlink()
        rois.loc[i, ["mask", "roi"]] = [rel.as_posix(), label]
    rois.to_csv(cohort / "rois.csv", index=False)


def rename_folders(cohort: Path) -> None:
    """Move ``dicom/`` and ``rois/`` to canary-named folders and update series/rois tables."""
    (cohort / "dicom").rename(cohort / CANARY_DICOM_DIR)
    (cohort / "rois").rename(cohort / CANARY_ROI_DIR)
    series = pd.read_csv(cohort / "series.csv", dtype=str)
    series["dicom_dir"] = [
        f"{CANARY_DICOM_DIR}/{Path(d).relative_to('dicom').as_posix()}" for d in series["dicom_dir"]
    ]
    series.to_csv(cohort / "series.csv", index=False)
    rois = pd.read_csv(cohort / "rois.csv", dtype=str, keep_default_na=False)
    rois["mask"] = [f"{CANARY_ROI_DIR}/{Path(m).name}" for m in rois["mask"]]
    rois.to_csv(cohort / "rois.csv", index=False)


def write_canary_cohort(parent: Path) -> Path:
    """A tiny synthetic cohort with canaries planted; returns the cohort directory."""
    from recur.synthetic import cohort as synth

    cohort = parent / CANARY_COHORT_DIR
    synth.write_cohort(
        cohort,
        synth.SyntheticSettings.defaults(
            n_train=N_TRAIN, n_test=tuple(N_TEST), seed=SEED, er_share=None
        ),
        truth_path=parent / "truth.csv",
        workers=2,
    )
    dicom_roi_masks(cohort)
    plant_canaries(cohort)
    rename_folders(cohort)
    return cohort


def directory_config(cohort: Path, extra: str = "") -> str:
    """YAML config of a directory-source run on ``cohort`` with the tiny training settings."""
    return f"cohort: {{source: directory, dir: '{cohort}'}}\n{TRAIN_CONFIG}{extra}"


#: Developer shortcut: point these at finished runs to skip rebuilding them (never set in CI).
REUSE_CANARY_COHORT = "RECUR_TEST_CANARY_COHORT"
REUSE_CANARY_STUDY = "RECUR_TEST_CANARY_STUDY"
REUSE_TINY_STUDY = "RECUR_TEST_TINY_STUDY"


@pytest.fixture(scope="session")
def canary_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The canary cohort directory (read-only for tests: copy it before breaking it)."""
    if os.environ.get(REUSE_CANARY_COHORT):
        return Path(os.environ[REUSE_CANARY_COHORT])
    return write_canary_cohort(tmp_path_factory.mktemp("canary_input"))


@pytest.fixture(scope="session")
def tiny_run(request: pytest.FixtureRequest) -> Path:
    """The shared ``tiny_study`` working dir (read-only)."""
    if os.environ.get(REUSE_TINY_STUDY):
        return Path(os.environ[REUSE_TINY_STUDY])
    return request.getfixturevalue("tiny_study")


@pytest.fixture(scope="session")
def canary_study(tmp_path_factory: pytest.TempPathFactory, canary_cohort: Path) -> Path:
    """Working dir where the whole workflow ran once, uninterrupted, on the canary cohort."""
    if os.environ.get(REUSE_CANARY_STUDY):
        return Path(os.environ[REUSE_CANARY_STUDY])
    work = tmp_path_factory.mktemp("canary_run")
    (work / "run.yaml").write_text(directory_config(canary_cohort), encoding="utf-8")
    res = run_snakemake(work, "--cores", "2", configfile="run.yaml")
    if res.returncode != 0:
        pytest.fail(f"workflow failed:\n{res.stderr[-6000:]}\n{failed_logs(work)[-6000:]}")
    return work


# ------------------------------------------------------------------ helpers for the tests
def snakemake_cmd(workdir: Path, *args: str, configfile: str = "run.yaml") -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / configfile),
        *args,
    ]


def snakemake_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def start_snakemake(workdir: Path, *args: str, log: Path) -> subprocess.Popen:
    """Start snakemake in its own process group (so the whole tree can be SIGKILLed)."""
    fh = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed by kill_and_wait
    proc = subprocess.Popen(
        snakemake_cmd(workdir, *args),
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=snakemake_env(),
        start_new_session=True,
    )
    proc._log_handle = fh  # type: ignore[attr-defined]
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (snakemake and every job it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc._log_handle.close()  # type: ignore[attr-defined]


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll ``predicate()`` until true; fail if ``proc`` ends or ``timeout`` passes first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc={proc.returncode}) before {what}")
        time.sleep(0.2)
    kill_group(proc)
    pytest.fail(f"timed out waiting for {what}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def crops_digest(path: Path) -> str:
    """Hash of the arrays of a crops .npz (independent of zip timestamps)."""
    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as z:
        for key in sorted(z.files):
            h.update(key.encode())
            h.update(np.ascontiguousarray(z[key]).tobytes())
    return h.hexdigest()


def copy_cohort(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
