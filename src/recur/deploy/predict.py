"""`recur predict`: score new patients from DICOM with a verified model bundle.

The input is a cohort in the input contract (``series.csv``, ``rois.csv``, ``clinical.csv``;
no outcome columns needed; ``site`` and ``cohort`` optional and ignored). A patient without
any post-ablation row in ``series.csv`` is scored with the models that do not need the post
series; the others are marked :data:`recur.deploy.registry.NO_POST`. Every step calls the
workflow's own functions with the settings recorded in the bundle, so a patient scored here
gets the numbers the workflow would have given it:

1. :func:`recur.preprocess.convert.convert_patient` (DICOM -> de-identified NIfTI);
2. :func:`recur.preprocess.register.register_patient` with the ROI masks checked
   (:class:`recur.preprocess.masks.CohortMasks`) (PS/AP/PVP onto DP);
3. the margin stage: :func:`recur.margin.files.register_files` (post DP onto pre DP, the QC
   overlay of tumour and ablation zone), :func:`recur.margin.files.metrics_files`,
   :func:`recur.margin.files.table_files` (the patient's ``margin.csv`` row) and
   :func:`recur.margin.plots.plot_patient_margins` (the traffic-light histogram);
4. :func:`recur.preprocess.crop_files.crop_patient_files` (3-slice crops + QC montage);
   with radiomics models, :func:`recur.radiomics.features.features_files` (the pyradiomics
   features of the registered phases and masks, with the bundle's parameter file);
5. every model of the bundle (:mod:`recur.deploy.scoring`): DL networks recalibrated, tabular
   models, Cox models, risk groups at the study's cutoffs
   (:func:`recur.evaluate.tables.risk_groups`);
6. :func:`recur.models.gradcam.explain_patient` (PrePost Grad-CAM) and the one-page summary
   (:mod:`recur.deploy.summary`).

Outputs in ``--out``: ``predictions.csv`` (one row per patient), ``scores.csv`` (one row per
patient and model), ``crops/{patient}.npz``, ``{patient}/crops.png``, ``{patient}/gradcam.png``,
``{patient}/margin.csv``, ``{patient}/margin.png``, ``{patient}/margin_overlay.png``,
``{patient}/summary.html``; the intermediate NIfTI files go to ``work/`` (removed at the end
unless ``keep_work``).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pandas as pd

from recur.cohort import contract
from recur.constants import TIMEPOINTS
from recur.deploy.bundle import Bundle, load_bundle
from recur.deploy.registry import uses_radiomics
from recur.deploy.summary import NOT_FOR_CLINICAL_USE, below_chance_flag
from recur.errors import RecurError
from recur.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

#: Placeholder values of the optional clinical columns site/cohort (needed by the contract
#: checks, never used for scoring).
PLACEHOLDER = {"site": "new", "cohort": "test"}
#: A patient's radiomics feature table in its work folder (as the workflow's
#: ``results/radiomics/<patient>.csv``).
RADIOMICS_FEATURES = "radiomics.csv"
#: Re-exported (the command line's help text, the report's front page tests).
__all__ = ["NOT_FOR_CLINICAL_USE", "below_chance_flag", "predict"]


# --------------------------------------------------------------------------- progress
class Progress:
    """Progress of a sequence of steps: a bar on a terminal, one log line per step otherwise.

    ``step(label)`` announces the step about to run; ``close()`` ends the bar.
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 28):
        self.total = max(1, total)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.t0 = time.perf_counter()

    def line(self, label: str) -> str:
        """The bar text for ``label`` at the current count."""
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        secs = time.perf_counter() - self.t0
        return f"[{bar}] {self.done}/{self.total} {secs:5.0f}s {label}"

    def step(self, label: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line(label))
            self.stream.flush()
        else:
            log.info("[%d/%d] %s", self.done + 1, self.total, label)
        self.done += 1

    def close(self, label: str = "done") -> None:
        self.done = self.total
        if self.tty:
            self.stream.write("\r\033[K" + self.line(label) + "\n")
            self.stream.flush()


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class NewPatients:
    """Validated inputs: the tables and the folders their paths are relative to."""

    clinical: pd.DataFrame
    series: pd.DataFrame
    rois: pd.DataFrame
    series_csv: Path
    series_root: Path
    rois_root: Path
    #: the patients without a post-ablation series (scored with the pre-only models)
    pre_only: tuple[str, ...] = ()

    @property
    def patients(self) -> list[str]:
        return list(self.clinical["patient_id"])

    def has_post(self, patient: str) -> bool:
        return patient not in self.pre_only


def check_new_clinical(table: pd.DataFrame) -> pd.DataFrame:
    """A clinical table of new patients, checked by :func:`recur.cohort.contract.check_clinical`
    without outcomes. ``site``/``cohort`` are ignored: absent or not, placeholders replace
    them (a new patient is scored like an external test patient)."""
    table = table.copy()
    for col, value in PLACEHOLDER.items():
        table[col] = value
    return contract.check_clinical(table, require_outcome=False)


def read_inputs(
    series_csv: str | Path,
    rois_csv: str | Path,
    clinical_csv: str | Path,
    cohort_dir: str | Path | None = None,
    patients: Sequence[str] = (),
) -> NewPatients:
    """Read and validate the three tables (every problem listed, nothing run yet).

    Paths inside ``series.csv`` / ``rois.csv`` are relative to ``cohort_dir`` when given,
    else to the folder of their own table. ``patients`` restricts scoring to those ids.
    """
    series_csv, rois_csv = Path(series_csv).resolve(), Path(rois_csv).resolve()
    clinical = check_new_clinical(contract.read_table(Path(clinical_csv)))
    if patients:
        unknown = [p for p in patients if p not in set(clinical["patient_id"])]
        if unknown:
            raise RecurError(f"{Path(clinical_csv).name}: no patient {', '.join(unknown)}")
        clinical = clinical[clinical["patient_id"].isin(list(patients))].reset_index(drop=True)
    if clinical.empty:
        raise RecurError(f"{Path(clinical_csv).name}: no patient to score")
    ids = list(clinical["patient_id"])
    series_root = Path(cohort_dir).resolve() if cohort_dir else series_csv.parent
    rois_root = Path(cohort_dir).resolve() if cohort_dir else rois_csv.parent
    series = contract.read_table(series_csv)
    rois = contract.read_table(rois_csv)
    # rows of patients not scored are ignored (tables may describe a larger cohort)
    if "patient_id" in series.columns:
        series = series[series["patient_id"].isin(ids)].reset_index(drop=True)
    if "patient_id" in rois.columns:
        rois = rois[rois["patient_id"].isin(ids)].reset_index(drop=True)
    # a patient with no post-ablation row at all: no post series (the pre-only models);
    # its post ROI row, if any, is not used
    pre_only: tuple[str, ...] = ()
    if {"patient_id", "timepoint"} <= set(series.columns):
        with_post = set(series.loc[series["timepoint"] == "post", "patient_id"])
        pre_only = tuple(p for p in ids if p not in with_post)
    if pre_only and {"patient_id", "timepoint"} <= set(rois.columns):
        drop = rois["patient_id"].isin(pre_only) & (rois["timepoint"] == "post")
        rois = rois[~drop].reset_index(drop=True)
    required = {p: ("pre",) for p in pre_only}
    series = contract.check_series(series, ids, series_root, required)
    rois = contract.check_rois(rois, ids, rois_root, required)
    return NewPatients(clinical, series, rois, series_csv, series_root, rois_root, pre_only)


# --------------------------------------------------------------------------- image steps
def prepare_steps(bundle: Bundle, has_post: bool) -> list[str]:
    """The labels of :func:`prepare_patient`'s steps for one patient."""
    steps = ["convert DICOM", "check ROI masks, register PS/AP/PVP onto DP"]
    if has_post and bundle.settings.get("margin") is not None:
        steps += ["register post DP onto pre DP", "ablative margin"]
    steps.append("crop")
    if uses_radiomics(bundle.entries):
        steps.append("radiomics features")
    return steps


def margin_settings(bundle: Bundle):  # -> recur.margin.settings.MarginMetricSettings | None
    """The margin metric settings the workflow used (None: a bundle without them)."""
    from recur.margin.settings import MarginMetricSettings

    section = bundle.settings.get("margin")
    return MarginMetricSettings.from_config(section) if section else None


def prepare_patient(
    patient: str,
    inputs: NewPatients,
    bundle: Bundle,
    workdir: Path,
    crops_out: Path,
    outdir: Path,
    step: Callable[[str], None] | None = None,
) -> Path:
    """DICOM -> NIfTI -> checked masks -> registration -> margin -> crops, for one patient.

    The workflow's functions with the bundle's settings; writes ``crops_out`` and, in
    ``outdir`` (the patient's folder), ``crops.png`` and, with a post series, ``margin.csv``,
    ``margin.png`` and ``margin_overlay.png``; with radiomics models, ``radiomics.csv`` in
    ``workdir``. ``step(label)`` announces each step.
    """
    from recur.preprocess import convert, crop_files, masks, register

    step = step or (lambda label: None)
    has_post = inputs.has_post(patient)
    tps = TIMEPOINTS if has_post else ("pre",)
    labels = iter(prepare_steps(bundle, has_post))
    conv, reg, crop = (
        bundle.convert_settings(),
        bundle.registration_settings(),
        bundle.crop_settings(),
    )
    # the workflow's per-patient steps, in its order: convert-patient, register-patient
    # (mask checks first), margin-register, margin-metrics, margin-figure, crop
    step(f"{patient}: {next(labels)} ({' and '.join(tps)})")
    convert.convert_patient(
        inputs.series_root,
        inputs.series_csv,
        patient,
        workdir / "nifti",
        settings=conv,
        timepoints=tps,
    )
    step(f"{patient}: {next(labels)}")
    cohort_masks = masks.CohortMasks.from_tables(
        inputs.rois, inputs.rois_root, inputs.series, inputs.series_root, bundle.roi_settings()
    )
    register.register_patient(
        workdir / "nifti",
        workdir / "registered",
        reg,
        masks_dir=workdir / "masks",
        check_mask=lambda tp, dp, out: cohort_masks.check(patient, tp, dp, out),
        timepoints=tps,
        threads=bundle.registration_threads(),
    )
    registered = {t: workdir / "registered" / t for t in tps}
    checked = {t: workdir / "masks" / f"{t}.nii.gz" for t in tps}
    post_to_pre = None
    metric_settings = margin_settings(bundle) if has_post else None
    if has_post and (metric_settings is not None or crop.post_frame == "pre"):
        from recur.margin import files as margin_files
        from recur.margin.plots import plot_patient_margins

        mdir = workdir / "margin"
        post_to_pre = mdir / "post_to_pre.tfm"
        step(f"{patient}: {next(labels)}")
        margin_files.register_files(
            workdir / "nifti" / "pre" / "DP.nii.gz",
            workdir / "nifti" / "post" / "DP.nii.gz",
            checked["pre"],
            checked["post"],
            post_to_pre,
            mdir / "zone_on_pre.nii.gz",
            settings=bundle.cross_time_settings(),
            qc_png=outdir / "margin_overlay.png",
            qc_json=mdir / "registration.json",
            patient=patient,
        )
        if metric_settings is not None:
            step(f"{patient}: {next(labels)}")
            margin_files.metrics_files(
                checked["pre"],
                checked["post"],
                mdir / "margin.json",
                mdir / "surface.npz",
                metric_settings,
                transform=post_to_pre,
                patient=patient,
            )
            margin_files.table_files([mdir / "margin.json"], outdir / "margin.csv")
            plot_patient_margins(
                margin_files.load_surface(mdir / "surface.npz"), patient, outdir / "margin.png"
            )
    step(f"{patient}: {next(labels)}")
    crop_files.crop_patient_files(
        patient,
        registered,
        checked,
        crops_out,
        outdir / "crops.png",
        crop,
        post_to_pre if crop.post_frame == "pre" else None,
        timepoints=tps,
    )
    if uses_radiomics(bundle.entries):
        from recur.radiomics.features import features_files

        step(f"{patient}: {next(labels)}")
        features_files(
            registered,
            checked,
            bundle.radiomics_params,
            workdir / RADIOMICS_FEATURES,
            bundle.radiomics_settings(),
            patient=patient,
        )
    return crops_out


# --------------------------------------------------------------------------- driver
def _child_logging(level: int) -> None:
    """Logging of the image-preparation process (same format as the CLI)."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _log_step(label: str) -> None:
    """A step of the image process, logged without a number (the main process counts)."""
    log.info("  %s", label)


def _prepare_child(
    patient: str,
    inputs: NewPatients,
    bundle: Bundle,
    workdir: Path,
    crops_out: Path,
    outdir: Path,
    log_steps: bool,
) -> Path:
    """:func:`prepare_patient` in the child process (unnumbered log lines, no bar)."""
    return prepare_patient(
        patient, inputs, bundle, workdir, crops_out, outdir, _log_step if log_steps else None
    )


def _read_margin(path: Path) -> dict:
    row = pd.read_csv(path).iloc[0].to_dict()
    return {k: v for k, v in row.items() if k != "patient_id"}


def predict(
    bundle_dir: str | Path,
    series_csv: str | Path,
    rois_csv: str | Path,
    clinical_csv: str | Path,
    outdir: str | Path,
    *,
    cohort_dir: str | Path | None = None,
    patients: Sequence[str] = (),
    device: str = "cpu",
    keep_work: bool = False,
    threads: int | None = None,
    progress_stream: TextIO | None = None,
) -> pd.DataFrame:
    """Score new patients end to end; write the outputs into ``outdir``; return the table
    of ``predictions.csv``.

    The bundle is verified first (a bundle whose manifest does not verify is refused), then
    the inputs; any refusal stops with a :class:`RecurError` naming the patient and file.
    ``predictions.csv`` is written only once every patient was scored. With ``threads >= 2``
    (default: ``RECUR_THREADS``) the image steps run in a second process while this one
    loads torch and the models; the results are the same, and only this process numbers the
    steps.
    """
    import os

    from recur.deploy import scoring, summary

    bundle = load_bundle(bundle_dir)
    inputs = read_inputs(series_csv, rois_csv, clinical_csv, cohort_dir, patients)
    ids = inputs.patients
    out = Path(outdir)
    crops_dir, work = out / "crops", out / "work"
    # a predictions.csv of an earlier run must not pass for this run's if this one fails
    (out / "predictions.csv").unlink(missing_ok=True)
    threads = threads or int(os.environ.get("RECUR_THREADS", "1"))
    parallel = threads >= 2
    n_prep = sum(1 if parallel else len(prepare_steps(bundle, inputs.has_post(p))) for p in ids)
    progress = Progress(n_prep + 2 * len(ids) + 3, progress_stream)
    log.info(
        "bundle %s verified (recur %s, %d models, signature %s, primary %s); %d patient(s), "
        "%d without a post-ablation series",
        bundle.root,
        bundle.manifest.get("recur_version"),
        len(bundle.entries),
        bundle.signature,
        bundle.primary,
        len(ids),
        len(inputs.pre_only),
    )

    def job(pid: str) -> tuple:
        return (pid, inputs, bundle, work / pid, crops_dir / f"{pid}.npz", out / pid)

    executor, futures = None, []
    if parallel:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_child_logging,
            initargs=(logging.getLogger("recur").getEffectiveLevel(),),
        )
        futures = [executor.submit(_prepare_child, *job(pid), not progress.tty) for pid in ids]
    try:
        progress.step(f"loading the models ({len(bundle.entries)})")
        from recur.models import (
            gradcam,  # torch: imported once the inputs are known good
            train,  # torch: imported once the inputs are known good
        )

        train.configure_torch(0, threads)
        dev = train.resolve_device(device)
        models = scoring.load_models(bundle, device)
        prepost = next((e for e in bundle.entries if e.kind == "dl" and e.needs_post), None)
        cam = None
        if prepost is not None:
            cam = gradcam.PrePostGradCAM(gradcam.explained_network(models[prepost.key][0]))
        if parallel:
            for pid, fut in zip(ids, futures, strict=True):
                fut.result()
                progress.step(f"{pid}: images ready (DICOM, masks, registration, margin, crops)")
        else:
            for pid in ids:
                prepare_patient(*job(pid), progress.step)
    except BaseException:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        raise
    if executor is not None:
        executor.shutdown()

    pts = scoring.Patients(
        ids,
        inputs.clinical,
        {pid: inputs.has_post(pid) for pid in ids},
        crops_dir,
        {
            pid: _read_margin(out / pid / "margin.csv")
            for pid in ids
            if inputs.has_post(pid) and (out / pid / "margin.csv").is_file()
        },
    )
    pts.radiomics = {
        pid: pd.read_csv(work / pid / RADIOMICS_FEATURES)
        for pid in ids
        if (work / pid / RADIOMICS_FEATURES).is_file()
    }
    progress.step("DL networks and radiomics models")
    pts.network = scoring.network_outputs(bundle, pts, models, device)
    pts.radiomics_scores = scoring.radiomics_outputs(bundle, pts, models)
    progress.step("tabular and Cox models")
    long = scoring.score_all(bundle, pts, models)
    table = scoring.predictions_wide(long, bundle, pts)
    for pid in ids:
        rows = long[long["patient_id"] == pid]
        progress.step(f"{pid}: Grad-CAM")
        png = out / pid / "gradcam.png"
        if cam is not None and inputs.has_post(pid):
            r = rows[rows["model"] == prepost.name].iloc[0]
            title = (
                f"{pid}: {prepost.name} score {r['probability']:.2f} vs cutoff "
                f"{r['cutoff']:.2f} -> {r['risk']} risk"
            )
            with atomic_path(png) as tmp:
                gradcam.explain_patient(cam, crops_dir / f"{pid}.npz", pid, title, tmp, dev)
        progress.step(f"{pid}: summary")
        images = {
            "Model inputs (QC): the crops, ROI outlined": out / pid / "crops.png",
            "Grad-CAM of the PrePost model": png if png.is_file() else None,
            "Tumour-surface margins (traffic light)": out / pid / "margin.png",
            "Tumour (yellow) and ablation zone (cyan) on the registered DP": out
            / pid
            / "margin_overlay.png",
        }
        write_text_atomic(
            out / pid / "summary.html",
            summary.summary_html(pid, rows, bundle, pts.margins.get(pid), images),
        )
    with atomic_path(out / "scores.csv") as tmp:
        long.to_csv(tmp, index=False, float_format="%.8g", lineterminator="\n")
    with atomic_path(out / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g", lineterminator="\n")
    progress.close(f"{len(ids)} patient(s) scored")
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return table
