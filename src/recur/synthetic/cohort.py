"""Writing the embedded synthetic cohort: DICOM files, ROI masks, contract tables and truth.

:func:`write_cohort` (``recur synth`` and the workflow's synthetic source) samples the latent
table (:mod:`recur.synthetic.latent`), then simulates and writes each patient, in parallel
processes if asked (:func:`write_patient`: images from :mod:`recur.synthetic.acquisition`,
real MR DICOM series with fake identifying values from :mod:`recur.synthetic.dicom_writer`,
NIfTI ROI masks in the DP geometry), and writes ``clinical.csv``, ``series.csv``,
``rois.csv`` and ``truth.csv`` (:func:`truth_table`); :func:`load_truth` reads the truth
back.

See ``docs/methods/synthetic.md`` for the equations, coefficients and ``truth.csv`` columns.
Nothing outside :mod:`recur.synthetic` and the benchmarks may read the generator's truth.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recur.cohort import contract
from recur.constants import PHASES, SYNTHETIC_TABLES, TIMEPOINTS
from recur.errors import RecurError
from recur.settings import SectionSettings
from recur.synthetic.acquisition import Motion, simulate_patient
from recur.synthetic.anatomy import Grid
from recur.synthetic.dicom_writer import dicom_time, dicom_uid, fake_identity, write_series
from recur.synthetic.latent import CLINICAL_COLUMNS, blank_cells, random_stream, sample_latent
from recur.synthetic.sites import TEST_SITES, SiteProfile

log = logging.getLogger(__name__)

_STUDY_DESCRIPTION = {"pre": "MR LIVER DYNAMIC", "post": "MR LIVER DYNAMIC FOLLOW-UP"}


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def _acquisition_times(rng: np.random.Generator, t0: float) -> dict[str, float]:
    """PS, then contrast injection; AP ~25 s, PVP ~70 s, DP ~3 min after injection."""
    inj = t0 + float(rng.uniform(30, 60))
    return {
        "PS": t0,
        "AP": inj + float(rng.uniform(20, 30)),
        "PVP": inj + float(rng.uniform(65, 75)),
        "DP": inj + float(rng.uniform(175, 190)),
    }


def write_patient(job: tuple[dict, int, int, str, str]) -> dict:
    """Simulate one patient and write its DICOM series and ROI masks (NIfTI, SEG or RTSTRUCT,
    the job's last element) under ``root``.

    Returns the rows of ``series.csv``, ``rois.csv`` and the motion part of ``truth.csv``.
    BLAS runs single-threaded here: multi-threaded BLAS may sum in another order, and the last
    bits of a float can move a voxel across a rounding boundary, so the same seed would give
    other bytes on a machine (or in a process) with another thread count.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _write_patient(job)


def _write_patient(job: tuple[dict, int, int, str, str]) -> dict:
    row, seed, number, root_s, roi_format = job
    root = Path(root_s)
    pid = row["patient_id"]
    sim = simulate_patient(row, seed, number)
    site: SiteProfile = sim["site"]
    ident = fake_identity(seed, number, site, float(row["age"]))
    rng = random_stream(seed, 300, number)
    style = site.styles[int(rng.integers(0, len(site.styles)))]
    base_number = int(rng.integers(3, 8)) + 100 * (
        TEST_SITES.index(site.name) + 1 if site.name in TEST_SITES else 0
    )
    series_rows, roi_rows, motion_rows = [], [], []
    nbytes = 0
    for tp in TIMEPOINTS:
        st = sim["studies"][tp]
        grid: Grid = st["grid"]
        date = ident[f"{tp}_date"]
        times = _acquisition_times(rng, float(ident[f"{tp}_time"]))
        study = {
            "PatientName": ident["PatientName"],
            "PatientID": ident["PatientID"],
            "PatientBirthDate": ident["PatientBirthDate"],
            "PatientSex": str(row["sex"]),
            "StudyDate": date,
            "SeriesDate": date,
            "AcquisitionDate": date,
            "ContentDate": date,
            "StudyTime": dicom_time(times["PS"] - 120),
            "AccessionNumber": ident[f"{tp}_acc"],
            "ReferringPhysicianName": ident["ReferringPhysicianName"],
            "OperatorsName": ident["OperatorsName"],
            "InstitutionName": site.institution,
            "StationName": ident["StationName"],
            "DeviceSerialNumber": ident["DeviceSerialNumber"],
            "StudyInstanceUID": dicom_uid(seed, pid, tp, "study"),
            "FrameOfReferenceUID": dicom_uid(seed, pid, tp, "for"),
            "StudyID": str(int(rng.integers(1000, 99999))),
            "StudyDescription": _STUDY_DESCRIPTION[tp],
            "_private": ident["private"],
        }
        slope, intercept = site.rescale
        for k, phase in enumerate(PHASES):
            desc = style[k]
            number_s = base_number + k
            header = dict(study)
            header.update(
                SeriesDescription=desc,
                ProtocolName=f"{site.sequence} dyn",
                SeriesNumber=number_s,
                AcquisitionNumber=1,
                SeriesTime=dicom_time(times[phase]),
                AcquisitionTime=dicom_time(times[phase]),
                ContentTime=dicom_time(times[phase] + 5),
            )
            if phase != "PS":
                header["ContrastBolusAgent"] = "Gd-DTPA"
            stored = np.clip(np.rint((st["volumes"][phase] - intercept) / slope), 0, 4095)
            rel = Path("dicom") / pid / tp / f"S{number_s:03d}_{_safe(desc)}"
            uid = write_series(
                root / rel,
                stored.astype(np.uint16),
                grid,
                header=header,
                site=site,
                name_rng=rng,
                uid_key=(seed, pid, tp, phase),
                compress=bool(rng.random() < site.compress_fraction),
            )
            series_rows.append(
                {
                    "patient_id": pid,
                    "timepoint": tp,
                    "phase": phase,
                    "dicom_dir": rel.as_posix(),
                    "series_uid": uid,
                }
            )
            m: Motion = st["motions"][phase]
            motion_rows.append(
                {
                    "patient_id": pid,
                    "timepoint": tp,
                    "phase": phase,
                    "center_x": m.center[0],
                    "center_y": m.center[1],
                    "center_z": m.center[2],
                    "angle_x": m.angles[0],
                    "angle_y": m.angles[1],
                    "angle_z": m.angles[2],
                    "translation_x": m.translation[0],
                    "translation_y": m.translation[1],
                    "translation_z": m.translation[2],
                    "roi_centroid_x": round(st["centroid"][0], 4),
                    "roi_centroid_y": round(st["centroid"][1], 4),
                    "roi_centroid_z": round(st["centroid"][2], 4),
                    "roi_voxels": int(st["mask"].sum()),
                    "pixel_spacing": grid.spacing[0],
                    "slice_spacing": grid.spacing[2],
                    "n_slices": grid.size[2],
                }
            )
        dp_folder = root / series_rows[-1]["dicom_dir"]  # DP: the last phase written
        roi_rows.append(
            _write_mask(st["mask"], grid, root, pid, tp, roi_format, dp_folder, (seed, pid, tp))
        )
    for dirpath, _, files in os.walk(root / "dicom" / pid):
        nbytes += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return {"series": series_rows, "rois": roi_rows, "motion": motion_rows, "bytes": nbytes}


#: The segment label (SEG) / ROI name (RTSTRUCT) of each time point's ROI.
ROI_LABELS = {"pre": "Tumour", "post": "Ablation zone"}


def _write_mask(
    mask: np.ndarray,
    grid: Grid,
    root: Path,
    pid: str,
    tp: str,
    roi_format: str,
    dp_folder: Path,
    uid_key: tuple,
) -> dict[str, str]:
    """Write one ROI mask (z, y, x on the DP grid) as NIfTI, SEG or RTSTRUCT; its rois.csv
    row (with the roi column for the DICOM formats)."""
    rel = Path("rois") / (f"{pid}_{tp}.nii.gz" if roi_format == "nifti" else f"{pid}_{tp}.dcm")
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    row = {"patient_id": pid, "timepoint": tp, "mask": rel.as_posix()}
    if roi_format == "nifti":
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.SetOrigin(grid.origin)
        img.SetSpacing(grid.spacing)
        sitk.WriteImage(img, str(root / rel), True)
        return row
    from recur.synthetic import roi_writer

    write = {"seg": roi_writer.write_seg, "rtstruct": roi_writer.write_rtstruct}[roi_format]
    write(mask, dp_folder, root / rel, label=ROI_LABELS[tp], uid_key=uid_key)
    return {**row, "roi": ROI_LABELS[tp]}


def _worker_init() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def truth_table(latent: pd.DataFrame, motion: pd.DataFrame) -> pd.DataFrame:
    """``truth.csv``: one row per patient x time point x phase (patient columns repeated)."""
    keep = [c for c in latent.columns if c not in ("sex",)]
    return motion.merge(latent[keep], on="patient_id", how="left", validate="many_to_one")[
        ["patient_id", "site", "cohort", "timepoint", "phase"]
        + [c for c in motion.columns if c not in ("patient_id", "timepoint", "phase")]
        + [c for c in keep if c not in ("patient_id", "site", "cohort")]
    ]


def load_truth(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``truth.csv`` into (per-patient table, per patient x time point x phase motions)."""
    t = pd.read_csv(path)
    motion_cols = ["patient_id", "timepoint", "phase"] + [
        c
        for c in t.columns
        if c.split("_")[0] in ("center", "angle", "translation", "roi")
        or c in ("pixel_spacing", "slice_spacing", "n_slices")
    ]
    patients = (
        t.drop(
            columns=[c for c in motion_cols if c != "patient_id"] + ["timepoint", "phase"],
            errors="ignore",
        )
        .drop_duplicates("patient_id")
        .reset_index(drop=True)
    )
    return patients, t[motion_cols].reset_index(drop=True)


@dataclass(frozen=True)
class SyntheticSettings(SectionSettings):
    """The cohort to generate: config section ``synthetic`` (meanings and defaults in
    ``schemas/config.schema.yaml``)."""

    SECTION = "synthetic"

    n_train: int
    n_test: tuple[int, ...]
    seed: int
    #: ``{"train": share, "test": share}`` or None (every outcome an independent draw)
    er_share: Mapping[str, float] | None
    #: how the ROI masks are written: "nifti", "seg" or "rtstruct"
    roi_format: str

    def __post_init__(self) -> None:
        if self.n_train < 1 or not self.n_test or min(self.n_test) < 1:
            raise RecurError(f"synthetic: n_train {self.n_train}, n_test {self.n_test}")


def write_cohort(
    outdir: str | Path,
    settings: SyntheticSettings,
    truth_path: str | Path | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Write the synthetic cohort directory ``outdir`` and its ``truth.csv``.

    ``outdir`` gets ``clinical.csv``, ``series.csv``, ``rois.csv``, ``dicom/`` and ``rois/``;
    it is assembled in a hidden sibling folder and renamed into place only when complete
    (an existing ``outdir`` is replaced). ``truth_path`` defaults to ``outdir.parent /
    "truth.csv"``. ``workers`` processes generate patients in parallel; the result does not
    depend on it. ``settings.er_share`` fixes each cohort's number of ER patients
    (:func:`recur.synthetic.latent.sample_latent`). Returns the clinical table as written.
    """

    from recur.io import atomic_path

    outdir = Path(outdir)
    truth_path = Path(truth_path) if truth_path else outdir.parent / "truth.csv"
    seed = settings.seed
    try:
        latent = sample_latent(
            settings.n_train, list(settings.n_test), seed, er_share=settings.er_share
        )
    except ValueError as exc:
        raise RecurError(f"synth: {exc}") from None
    clinical = blank_cells(random_stream(seed, 99), latent.loc[:, list(CLINICAL_COLUMNS)])
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = outdir.parent / f".{outdir.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    rows = latent.to_dict("records")
    jobs = [(r, int(seed), i + 1, str(tmp), settings.roi_format) for i, r in enumerate(rows)]
    results: list[dict] = []
    try:
        if workers > 1:
            import multiprocessing

            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            ) as pool:
                for i, res in enumerate(pool.map(write_patient, jobs, chunksize=1)):
                    results.append(res)
                    if (i + 1) % 25 == 0 or i + 1 == len(jobs):
                        log.info("synth: %d/%d patients written", i + 1, len(jobs))
        else:
            for i, job in enumerate(jobs):
                results.append(write_patient(job))
                if (i + 1) % 25 == 0 or i + 1 == len(jobs):
                    log.info("synth: %d/%d patients written", i + 1, len(jobs))
        series = pd.DataFrame([r for res in results for r in res["series"]])
        rois = pd.DataFrame([r for res in results for r in res["rois"]])
        motion = pd.DataFrame([r for res in results for r in res["motion"]])
        names = SYNTHETIC_TABLES
        clinical.to_csv(tmp / names["clinical"], index=False)
        series.to_csv(tmp / names["series"], index=False)
        rois.to_csv(tmp / names["rois"], index=False)
        contract.load_cohort(tmp, names["clinical"], names["series"], names["rois"])
        truth = truth_table(latent, motion)
        if outdir.exists():
            shutil.rmtree(outdir)
        os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with atomic_path(truth_path) as t:
        truth.to_csv(t, index=False)
    mb = sum(r["bytes"] for r in results) / 1e6
    log.info("synth: wrote %d patients (%.0f MB of DICOM) to %s", len(rows), mb, outdir)
    return clinical
