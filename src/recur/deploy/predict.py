"""`recur predict`: score new patients from DICOM with a verified model bundle.

The input is a cohort in the input contract (``series.csv``, ``rois.csv``, ``clinical.csv``;
no outcome columns needed; ``site`` and ``cohort`` optional and ignored). Every step calls the
workflow's own functions with the settings recorded in the bundle, so a patient scored here
gets the score the workflow would have given it:

1. :func:`recur.preprocess.convert.convert_timepoint` (DICOM -> de-identified NIfTI, both time
   points);
2. :func:`recur.preprocess.masks.check_mask_file` (ROI mask against its DP series);
3. :func:`recur.preprocess.register.register_timepoint_dir` (PS/AP/PVP onto DP);
4. :func:`recur.preprocess.crop_files.crop_patient_files` (3-slice crops + QC montage);
5. :func:`recur.models.jobs.load_model` + :func:`recur.models.train.predict_logits` (Pre, PrePost),
   then the bundle's recalibration of each
   (:func:`recur.evaluate.recalibration.apply_recalibration`: the workflow's ``score``);
6. :func:`recur.models.tabular.load_model` + :func:`recur.models.tabular.predict_scores` (Clinical,
   DL_Clinical with the bundle's chosen signature, the network's output as for the workflow's
   test patients);
7. :func:`recur.evaluate.tables.risk_groups` at the bundle's Youden cutoffs;
8. :func:`recur.models.gradcam.explain_patient` (PrePost Grad-CAM) and a one-page HTML summary.

Outputs in ``--out``: ``predictions.csv`` (one row per patient), ``crops/{patient}.npz``,
``{patient}/crops.png``, ``{patient}/gradcam.png``, ``{patient}/summary.html``; the
intermediate NIfTI files go to ``work/`` (removed at the end unless ``keep_work``).
"""

from __future__ import annotations

import base64
import html
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from recur.cohort import contract
from recur.constants import DL_MODELS, MODELS, TABULAR_MODELS, TIMEPOINTS
from recur.deploy.bundle import Bundle, load_bundle
from recur.errors import RecurError
from recur.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

RISK_SUFFIX = "_risk"
#: Columns of ``recur predict``'s ``predictions.csv``, one row per new patient: id, the four
#: scores, then the four risk groups (models in :data:`recur.constants.MODELS` order). Not the
#: workflow's per-model score tables (:data:`recur.constants.SCORE_COLUMNS`).
PREDICT_OUTPUT_COLUMNS: list[str] = ["patient_id", *MODELS, *(m + RISK_SUFFIX for m in MODELS)]
#: Placeholder values of the optional clinical columns site/cohort (needed by the contract
#: checks, never used for scoring).
PLACEHOLDER = {"site": "new", "cohort": "test"}
NOT_FOR_CLINICAL_USE = (
    "Research software, not a medical device: NOT FOR CLINICAL USE. The scores come from "
    "models trained on the cohort the bundle was built from and have not been validated for "
    "decisions about individual patients."
)


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

    @property
    def patients(self) -> list[str]:
        return list(self.clinical["patient_id"])


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
    series = contract.check_series(series, ids, series_root)
    rois = contract.check_rois(rois, ids, rois_root)
    return NewPatients(clinical, series, rois, series_csv, series_root, rois_root)


# --------------------------------------------------------------------------- image steps
def prepare_step_count(bundle: Bundle) -> int:
    """Progress steps of :func:`prepare_patient`: conversion, masks and registration, the
    post-to-pre registration (when crops are cut on the pre grid), crop."""
    cross_time = 1 if bundle.crop_settings().post_frame == "pre" else 0
    return 2 + cross_time + 1


def prepare_patient(
    patient: str,
    inputs: NewPatients,
    bundle: Bundle,
    workdir: Path,
    crops_out: Path,
    qc_png: Path,
    progress: Progress | None = None,
) -> Path:
    """DICOM -> NIfTI -> checked masks -> registration -> crops, for one patient.

    The workflow's functions with the bundle's settings; returns the crop file.
    """
    from recur.preprocess import convert, crop_files, masks, register

    conv, reg, crop = (
        bundle.convert_settings(),
        bundle.registration_settings(),
        bundle.crop_settings(),
    )
    # the workflow's per-patient steps, in its order: convert-patient, register-patient
    # (mask checks first), margin-register (crop.post_frame 'pre'), crop
    if progress:
        progress.step(f"{patient}: convert DICOM (pre and post)")
    convert.convert_patient(
        inputs.series_root, inputs.series_csv, patient, workdir / "nifti", settings=conv
    )
    if progress:
        progress.step(f"{patient}: check ROI masks, register PS/AP/PVP onto DP")
    cohort_masks = masks.CohortMasks.from_tables(
        inputs.rois, inputs.rois_root, inputs.series, inputs.series_root, bundle.roi_settings()
    )
    register.register_patient(
        workdir / "nifti",
        workdir / "registered",
        reg,
        masks_dir=workdir / "masks",
        check_mask=lambda tp, dp, out: cohort_masks.check(patient, tp, dp, out),
        threads=bundle.registration_threads(),
    )
    registered = {t: workdir / "registered" / t for t in TIMEPOINTS}
    checked = {t: workdir / "masks" / f"{t}.nii.gz" for t in TIMEPOINTS}
    post_to_pre = None
    if crop.post_frame == "pre":
        from recur.margin.files import register_files

        if progress:
            progress.step(f"{patient}: register post DP onto pre DP")
        post_to_pre = workdir / "margin" / "post_to_pre.tfm"
        register_files(
            workdir / "nifti" / "pre" / "DP.nii.gz",
            workdir / "nifti" / "post" / "DP.nii.gz",
            checked["pre"],
            checked["post"],
            post_to_pre,
            workdir / "margin" / "zone_on_pre.nii.gz",
            settings=bundle.cross_time_settings(),
            patient=patient,
        )
    if progress:
        progress.step(f"{patient}: crop")
    crop_files.crop_patient_files(
        patient, registered, checked, crops_out, qc_png, crop, post_to_pre
    )
    return crops_out


# --------------------------------------------------------------------------- model steps
def load_dl_models(bundle: Bundle, device: str = "cpu") -> dict:
    """``{model: (network, architecture)}`` of Pre and PrePost
    (:func:`recur.models.jobs.load_model`)."""
    from recur.models import jobs, train

    dev = train.resolve_device(device)
    out = {}
    for m in DL_MODELS:
        model, arch = jobs.load_model(bundle.dl_model_dir(m), dev)
        if arch.model != m:
            raise RecurError(f"bundle {bundle.root}: models/{m}/model.json describes {arch.model}")
        out[m] = (model, arch)
    return out


def load_tabular_models(bundle: Bundle) -> dict:
    """``{model: (pipeline, features)}`` of Clinical and DL_Clinical
    (:func:`recur.models.tabular.load_model`: sha256 and trusted types checked)."""
    import json

    from recur.models import tabular

    out = {}
    name = f"{bundle.signature}_signature"
    for m in TABULAR_MODELS:
        model_path, manifest_path = bundle.tabular_paths(m)
        model = tabular.load_model(model_path, manifest_path)
        features = list(json.loads(manifest_path.read_text(encoding="utf-8"))["features"])
        if m == "DL_Clinical" and name not in features:
            raise RecurError(
                f"bundle {bundle.root}: DL_Clinical features {features} lack {name} "
                "(choice.json and the model disagree)"
            )
        out[m] = (model, features)
    return out


def dl_network_scores(
    bundle: Bundle,
    patients: Sequence[str],
    crops_dir: Path,
    device: str = "cpu",
    models: dict | None = None,
) -> dict[str, np.ndarray]:
    """The Pre and PrePost networks' outputs for ``patients`` (crop files
    ``crops_dir/{id}.npz``), as the workflow scores them (:func:`recur.models.train.predict_logits`,
    evaluation transform): the ``raw_score`` of its prediction tables, and the signature
    DL_Clinical takes."""
    from recur.models import train
    from recur.models.data import make_dataset, make_items

    dev = train.resolve_device(device)
    models = models or load_dl_models(bundle, device)
    out = {}
    for m in DL_MODELS:
        model, arch = models[m]
        ds = make_dataset(
            make_items(list(patients), crops_dir), arch.timepoints, None, roi=arch.roi_channel
        )
        out[m] = train.sigmoid(train.predict_logits(model, ds, dev, tta=arch.tta))
    return out


def recalibrated_scores(bundle: Bundle, network: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pre and PrePost ER probabilities from the networks' outputs (:func:`dl_network_scores`)
    with the bundle's recalibration: the workflow's ``score``."""
    return {m: bundle.recalibrations[m].apply(network[m]) for m in DL_MODELS}


def dl_scores(
    bundle: Bundle,
    patients: Sequence[str],
    crops_dir: Path,
    device: str = "cpu",
    models: dict | None = None,
) -> dict[str, np.ndarray]:
    """Pre and PrePost ER probabilities of ``patients`` as the workflow reports them: the
    networks' outputs (:func:`dl_network_scores`), recalibrated (:func:`recalibrated_scores`)."""
    return recalibrated_scores(
        bundle, dl_network_scores(bundle, patients, crops_dir, device, models)
    )


def tabular_scores(
    bundle: Bundle,
    clinical: pd.DataFrame,
    network: dict[str, np.ndarray],
    models: dict | None = None,
) -> dict[str, np.ndarray]:
    """Clinical and DL_Clinical ER probabilities of the rows of ``clinical``.

    DL_Clinical reads the bundle's chosen signature from ``network``, the networks' outputs
    (:func:`dl_network_scores`, not the recalibrated scores), as the workflow gives its tuning
    and test patients.
    """
    from recur.models import tabular

    models = models or load_tabular_models(bundle)
    data = clinical.reset_index(drop=True).copy()
    data[f"{bundle.signature}_signature"] = np.asarray(network[bundle.signature], dtype=float)
    return {m: tabular.predict_scores(model, data, feats) for m, (model, feats) in models.items()}


def predictions_table(
    patients: Sequence[str], scores: dict[str, np.ndarray], cutoffs: dict[str, float]
) -> pd.DataFrame:
    """``predictions.csv``: id, the four scores, and ``<model>_risk`` = high (score >= the
    model's cutoff, as :func:`recur.evaluate.tables.risk_groups`) or low."""
    from recur.evaluate.tables import risk_groups

    frame = pd.DataFrame({"patient_id": list(patients)})
    for m in MODELS:
        frame[m] = np.asarray(scores[m], dtype=float)
    high = risk_groups(frame, {m: cutoffs[m] for m in MODELS})
    for m in MODELS:
        frame[m + RISK_SUFFIX] = np.where(high[m] == 1, "high", "low")
    return frame[PREDICT_OUTPUT_COLUMNS]


# --------------------------------------------------------------------------- summary
def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def below_chance_flag(model: str, tune_auc: float | None) -> str:
    """The flag of a model whose AUC on the study's tuning split is below 0.5 (empty
    otherwise): it ranked those patients worse than chance, so its score is not to be used."""
    if tune_auc is None or not tune_auc < 0.5:
        return ""
    return f"tuning AUC {tune_auc:.2f} < 0.5: {model} ranked the tuning patients worse than chance"


def summary_html(
    row: pd.Series,
    cutoffs: dict[str, float],
    crops_png: Path,
    gradcam_png: Path,
    bundle_info: dict[str, str],
    tune_aucs: dict[str, float] | None = None,
) -> str:
    """One-page HTML summary of one patient (images embedded, no external file). A model whose
    tuning AUC (``tune_aucs``) is below 0.5 is flagged in its row."""
    e = html.escape
    pid = str(row["patient_id"])
    rows = "\n".join(
        f"<tr><td>{e(m)}</td><td>{row[m]:.3f}</td><td>{cutoffs[m]:.3f}</td>"
        f"<td class='{e(row[m + RISK_SUFFIX])}'>{e(row[m + RISK_SUFFIX])} risk</td>"
        f"<td>{e(below_chance_flag(m, (tune_aucs or {}).get(m)))}</td></tr>"
        for m in MODELS
    )
    about = ", ".join(f"{e(k)} {e(v)}" for k, v in bundle_info.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>recur: {e(pid)}</title>
<style>
body {{font-family: sans-serif; max-width: 60em; margin: 1em auto; font-size: 14px}}
table {{border-collapse: collapse}} td, th {{border: 1px solid #bbb; padding: 2px 8px}}
.high {{color: #b00; font-weight: bold}} .low {{color: #060}}
.warn {{border: 2px solid #b00; padding: 6px; background: #fee}}
img {{max-width: 48%; vertical-align: top}}
</style></head><body>
<h2>Early recurrence (ER within 2 years) after thermal ablation: patient {e(pid)}</h2>
<p class="warn">{e(NOT_FOR_CLINICAL_USE)}</p>
<table><tr><th>model</th><th>predicted ER probability</th><th>cutoff (Youden, tuning split)</th>
<th>risk group</th><th>flag</th></tr>
{rows}
</table>
<p>Risk group: high when the score is at least the model's cutoff. Pre: pre-ablation MRI;
PrePost: pre + 1-month post-ablation MRI; Clinical: tumour size, number, HBV, total protein,
AFP; DL_Clinical: Clinical + the {e(bundle_info.get("signature", ""))} signature.</p>
<h3>Model inputs (QC) and Grad-CAM of the PrePost model</h3>
<img alt="crops" src="{_png_data_uri(crops_png)}">
<img alt="Grad-CAM" src="{_png_data_uri(gradcam_png)}">
<p style="color:#666">Model bundle: {about}.</p>
</body></html>
"""


# --------------------------------------------------------------------------- driver
def _child_logging(level: int) -> None:
    """Logging of the image-preparation process (same format as the CLI)."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _prepare_child(
    patient: str,
    inputs: NewPatients,
    bundle: Bundle,
    workdir: Path,
    crops_out: Path,
    qc_png: Path,
    log_steps: bool,
) -> Path:
    """:func:`prepare_patient` in the child process (log lines per step, no bar)."""
    steps = Progress(prepare_step_count(bundle), _NoTty()) if log_steps else None
    return prepare_patient(patient, inputs, bundle, workdir, crops_out, qc_png, steps)


class _NoTty:
    """A stream that is not a terminal (so :class:`Progress` logs its steps)."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:  # pragma: no cover - never called when not a TTY
        return len(text)

    def flush(self) -> None:  # pragma: no cover
        pass


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
    """Score new patients end to end; write the outputs into ``outdir``; return the table.

    The bundle is verified first (a bundle whose manifest does not verify is refused), then
    the inputs; any refusal stops with a :class:`RecurError` naming the patient and file.
    ``predictions.csv`` is written only once every patient was scored. With ``threads >= 2``
    (default: ``RECUR_THREADS``) the image steps run in a second process while this one
    loads torch and the models; the results are the same.
    """
    import os

    bundle = load_bundle(bundle_dir)
    inputs = read_inputs(series_csv, rois_csv, clinical_csv, cohort_dir, patients)
    ids = inputs.patients
    out = Path(outdir)
    crops_dir, work = out / "crops", out / "work"
    # a predictions.csv of an earlier run must not pass for this run's if this one fails
    (out / "predictions.csv").unlink(missing_ok=True)
    threads = threads or int(os.environ.get("RECUR_THREADS", "1"))
    parallel = threads >= 2
    n_prep = 1 if parallel else prepare_step_count(bundle)
    progress = Progress(len(ids) * (n_prep + 2) + 3, progress_stream)
    log.info(
        "bundle %s verified (recur %s, signature %s); %d patient(s)",
        bundle.root,
        bundle.manifest.get("recur_version"),
        bundle.signature,
        len(ids),
    )

    def job(pid: str) -> tuple:
        return (pid, inputs, bundle, work / pid, crops_dir / f"{pid}.npz", out / pid / "crops.png")

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
        progress.step("loading the models")
        from recur.models import (
            gradcam,  # torch: imported once the inputs are known good
            train,  # torch: imported once the inputs are known good
        )

        train.configure_torch(0, threads)
        dev = train.resolve_device(device)
        dl_models = load_dl_models(bundle, device)
        tab_models = load_tabular_models(bundle)
        cam = gradcam.PrePostGradCAM(gradcam.explained_network(dl_models["PrePost"][0]))
        if parallel:
            for pid, fut in zip(ids, futures, strict=True):
                fut.result()
                progress.step(f"{pid}: images ready (DICOM, masks, registration, crops)")
        else:
            for pid in ids:
                prepare_patient(*job(pid), progress)
    except BaseException:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        raise
    if executor is not None:
        executor.shutdown()

    progress.step("Pre and PrePost networks")
    network = dl_network_scores(bundle, ids, crops_dir, device, dl_models)
    scores = recalibrated_scores(bundle, network)
    progress.step("Clinical and DL_Clinical models")
    scores.update(tabular_scores(bundle, inputs.clinical, network, tab_models))
    table = predictions_table(ids, scores, bundle.cutoffs)

    info = {
        "recur": str(bundle.manifest.get("recur_version")),
        "format": str(bundle.manifest.get("bundle_format")),
        "signature": bundle.signature,
    }
    for row in table.itertuples(index=False):
        pid = row.patient_id
        r = pd.Series(row._asdict())
        progress.step(f"{pid}: Grad-CAM")
        title = (
            f"{pid}: PrePost score {r['PrePost']:.2f} vs cutoff "
            f"{bundle.cutoffs['PrePost']:.2f} -> {r['PrePost' + RISK_SUFFIX]} risk"
        )
        png = out / pid / "gradcam.png"
        with atomic_path(png) as tmp:
            gradcam.explain_patient(cam, crops_dir / f"{pid}.npz", pid, title, tmp, dev)
        progress.step(f"{pid}: summary")
        write_text_atomic(
            out / pid / "summary.html",
            summary_html(r, bundle.cutoffs, out / pid / "crops.png", png, info, bundle.tune_aucs),
        )
    with atomic_path(out / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g", lineterminator="\n")
    progress.close(f"{len(ids)} patient(s) scored")
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return table
