"""Grad-CAM heat maps of the PrePost model, one per time point, with ``monai.visualize.GradCAM``.

Design: the PrePost network runs its shared encoder ONCE on the stack of both time points, so
a hook on the encoder's last block (``encoder.layer4``) records activations and gradients for
``[pre, post]`` of every patient in one pass, and the gradients are those of the full PrePost
logit (through the GRU and the head). :class:`TimepointsAsChannels` presents the network to
MONAI with the time points folded into channels, ``(B, 2*12, H, W)``, so that MONAI upsamples
the ``(B*2, 1, h, w)`` maps to the crop's ``(H, W)``; :class:`PrePostGradCAM` unfolds them to
``(B, 2, H, W)`` and scales the two maps of one patient **jointly** to [0, 1], so the heat maps
also show which time point drove the prediction. The backward pass runs with the model in eval
mode (dropout and BatchNorm frozen); cuDNN is switched off for it because cuDNN's RNN backward
refuses eval mode.

:func:`select_patients` picks the patients to show (true and false predictions per cohort,
by default among the external test patients) and :func:`plot_patient` draws one figure (PNG
and PDF, with a colour bar); :func:`run_gradcam` does it all for the workflow.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.visualize import GradCAM
from sklearn.metrics import roc_curve
from torch import nn

from recur.errors import RecurError
from recur.models.data import crop_frame, load_crops, model_input
from recur.models.networks import (
    CHANNELS_PER_TIMEPOINT,
    ENCODER_LAST_BLOCK,
    EnsembleNet,
    PrePostNet,
)
from recur.settings import SectionSettings

log = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = ("TP", "FN", "TN", "FP")


class TimepointsAsChannels(nn.Module):
    """``(B, T*12, H, W)`` -> PrePost logit: the time points folded into channels."""

    def __init__(self, model: PrePostNet, timepoints: int = 2):
        super().__init__()
        self.model = model
        self.timepoints = timepoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.model(x.reshape(b, self.timepoints, -1, h, w))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def explained_network(model: torch.nn.Module) -> torch.nn.Module:
    """The network Grad-CAM explains: the model itself, or for an
    :class:`~recur.models.networks.EnsembleNet` (``train.signature: ensemble``) its first member,
    the full model (members are ordered full, fold 0, fold 1, ...), as the workflow's Grad-CAM
    figures read the full model."""
    return model.members[0] if isinstance(model, EnsembleNet) else model


class PrePostGradCAM:
    """Grad-CAM of the PrePost ER logit at the shared encoder's last block, per time point.

    ``__call__(x)`` takes ``(B, 2, 12, H, W)`` and returns ``(B, 2, H, W)`` float32 maps in
    [0, 1] (both time points of a patient scaled together; all-zero where the logit has no
    positive evidence anywhere).
    """

    def __init__(self, model: PrePostNet, target_layer: str = ENCODER_LAST_BLOCK):
        if not isinstance(model, PrePostNet):
            raise TypeError("PrePostGradCAM needs a PrePostNet")
        self.wrapper = TimepointsAsChannels(model)
        self.cam = GradCAM(
            nn_module=self.wrapper, target_layers=f"model.{target_layer}", postprocessing=_identity
        )

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        if x.ndim != 5:
            raise ValueError(f"expected (B, 2, 12, H, W), got {tuple(x.shape)}")
        b, t, c, h, w = x.shape
        self.wrapper.eval()
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            maps = self.cam(x.reshape(b, t * c, h, w), class_idx=0)
        maps = maps.detach().float().cpu().numpy().reshape(b, t, h, w)
        peak = maps.reshape(b, -1).max(axis=1).reshape(b, 1, 1, 1)
        return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0).astype(np.float32)


def youden_cutoff(y: Sequence[int], score: Sequence[float]) -> float:
    """The score threshold maximising sensitivity + specificity - 1 (ROC Youden index)."""
    y = np.asarray(y, dtype=int)
    if len(np.unique(y)) < 2:
        raise RecurError("gradcam: the tune split needs patients with and without ER")
    fpr, tpr, thr = roc_curve(y, np.asarray(score, dtype=float))
    i = int(np.argmax(tpr - fpr))
    return float(min(thr[i], 1.0))


def prediction_groups(er: np.ndarray, score: np.ndarray, cutoff: float) -> np.ndarray:
    """TP/FN/TN/FP of each patient (predicted ER when ``score >= cutoff``)."""
    pred = np.asarray(score) >= cutoff
    er = np.asarray(er).astype(bool)
    return np.where(er, np.where(pred, "TP", "FN"), np.where(pred, "FP", "TN"))


def select_patients(
    predictions: pd.DataFrame,
    er: pd.Series,
    cutoff: float,
    n_per_group: int,
    patients: Sequence[str] = (),
    splits: Sequence[str] = (),
) -> pd.DataFrame:
    """The patients to explain, with ``er``, ``group`` (TP/FN/TN/FP) and ``cutoff`` columns.

    With ``patients`` given, exactly those (in that order). Otherwise, among the patients of
    ``splits`` (empty: every split), per cohort and group the ``n_per_group`` most confident
    ones (largest ``|score - cutoff|``; ties by id): the clearest correct predictions and the
    most confident errors.
    """
    df = predictions.copy()
    df["er"] = er.reindex(df["patient_id"].to_numpy()).to_numpy()
    if patients:
        unknown = [p for p in patients if p not in set(df["patient_id"])]
        if unknown:
            raise RecurError(f"gradcam: patient(s) {', '.join(unknown)} not in the predictions")
        df = df.set_index("patient_id").loc[list(patients)].reset_index()
    else:
        df = df[df["er"].notna()]
        if splits:
            df = df[df["split"].isin(list(splits))]
    df["group"] = ""
    known = df["er"].notna()
    df.loc[known, "group"] = prediction_groups(
        df.loc[known, "er"].to_numpy(), df.loc[known, "score"].to_numpy(), cutoff
    )
    df["cutoff"] = cutoff
    if patients:
        return df.reset_index(drop=True)
    df["margin"] = (df["score"] - cutoff).abs()
    picked = []
    for cohort in sorted(df["cohort"].unique()):
        for group in GROUPS:
            sub = df[(df["cohort"] == cohort) & (df["group"] == group)]
            sub = sub.sort_values(["margin", "patient_id"], ascending=[False, True])
            picked.append(sub.head(n_per_group))
    out = pd.concat(picked, ignore_index=True) if picked else df.head(0)
    return out.drop(columns="margin")


def plot_patient(
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    title: str,
    path: str | Path,
    alpha: float = 0.45,
    pdf: str | Path | None = None,
) -> None:
    """PNG (and ``pdf``): DP middle slice and its Grad-CAM overlay for pre (top) and post
    (bottom), with a colour bar of the map's scale (0-1, the patient's peak = 1). The crops
    are in the LPS frame (radiological view): R and L mark the patient's right and left.

    ``images``, ``maps`` (2, H, W); ``masks`` (2, H, W) ROI outlines (tumour, ablation zone).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recur.constants import IMAGE_FIGURE_DPI
    from recur.figstyle import save_figure

    fig, axes = plt.subplots(2, 2, figsize=(6.0, 5.6), layout="constrained")
    heat = None
    for t, name in enumerate(("pre-ablation", "1 month post")):
        img = images[t]
        lo, hi = np.percentile(img, [1, 99])
        for j in range(2):
            ax = axes[t, j]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if masks[t].any():
                ax.contour(masks[t], levels=[0.5], colors="cyan", linewidths=0.6)
            if j == 1:
                # a perceptually uniform, colour-blind-safe map (not jet), transparent where
                # the map is near 0 so that the anatomy stays visible under no evidence
                shown = np.ma.masked_less(maps[t], 0.05)
                heat = ax.imshow(
                    shown, cmap="inferno", alpha=alpha, vmin=0, vmax=1, interpolation="nearest"
                )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[t, 0].set_ylabel(f"{name} DP", fontsize=9)
        for x, letter, ha in ((0.02, "R", "left"), (0.98, "L", "right")):  # LPS crops
            axes[t, 0].text(
                x,
                0.5,
                letter,
                transform=axes[t, 0].transAxes,
                ha=ha,
                va="center",
                color="white",
                fontsize=9,
                fontweight="bold",
            )
    axes[0, 0].set_title("crop (cyan: ROI)", fontsize=9)
    axes[0, 1].set_title("Grad-CAM (ER logit)", fontsize=9)
    bar = fig.colorbar(heat, ax=axes[:, 1], shrink=0.8, aspect=25)
    bar.solids.set(alpha=1.0)
    bar.set_label("Grad-CAM, relative to the patient's peak\n(0 = no evidence for ER)", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=8)
    save_figure(fig, path, pdf, palette=False, dpi=IMAGE_FIGURE_DPI)


def explain_patient(
    cam: PrePostGradCAM,
    crops_path: str | Path,
    patient: str,
    title: str,
    path: str | Path,
    device: torch.device | str = "cpu",
    pdf: str | Path | None = None,
) -> np.ndarray:
    """Grad-CAM of one patient's crop file drawn by :func:`plot_patient` into ``path`` (and
    ``pdf``).

    Used by :func:`run_gradcam` (workflow) and ``recur predict``. Returns the (2, H, W) maps.
    """
    crops, masks = load_crops(crops_path, patient)
    roi = cam.wrapper.model.in_channels > CHANNELS_PER_TIMEPOINT
    x = torch.from_numpy(model_input(crops, masks, 2, roi, crop_frame(crops_path)))[None]
    maps = cam(x.to(device))[0]
    plot_patient(crops[:, 3, 1], maps, masks[:, 1], title, path, pdf=pdf)
    return maps


@dataclass(frozen=True)
class GradcamSettings(SectionSettings):
    """Which patients get a heat map: config section ``gradcam`` (meanings and defaults in
    ``schemas/config.schema.yaml``; build with :meth:`from_config`)."""

    SECTION = "gradcam"

    patients: tuple[str, ...]
    splits: tuple[str, ...]
    n_per_group: int
    cutoff: float | None


def run_gradcam(
    model: PrePostNet,
    predictions: pd.DataFrame,
    er: pd.Series,
    crops_dir: str | Path,
    outdir: str | Path,
    settings: GradcamSettings,
    *,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Write ``{patient}.png``, ``{patient}.pdf`` and ``index.csv`` for the selected patients
    into ``outdir``.

    ``settings.cutoff=None`` uses the Youden threshold of the tune split; with no
    ``settings.patients`` they are picked among ``settings.splits`` (default: the external
    test split). ``outdir`` is replaced only after every figure was drawn. Returns the index
    table.
    """
    cutoff, n_per_group, patients = settings.cutoff, settings.n_per_group, settings.patients
    if cutoff is None:
        tune = predictions[predictions["split"] == "tune"]
        cutoff = youden_cutoff(er.reindex(tune["patient_id"]).to_numpy(), tune["score"])
    chosen = select_patients(predictions, er, cutoff, n_per_group, patients, settings.splits)
    if chosen.empty:
        log.warning("gradcam: no patient with a known outcome in split(s) %s", settings.splits)
    cam = PrePostGradCAM(model.to(device).eval())
    outdir = Path(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        files = []
        for row in chosen.itertuples(index=False):
            er_txt = "?" if pd.isna(row.er) else ("ER" if row.er else "no ER")
            title = (
                f"{row.patient_id} ({row.cohort}/{row.split}): {er_txt}, PrePost score "
                f"{row.score:.2f} vs cutoff {cutoff:.2f} -> {row.group or 'n/a'}"
            )
            name = f"{row.patient_id}.png"
            crops_path = Path(crops_dir) / f"{row.patient_id}.npz"
            pdf = tmp / f"{row.patient_id}.pdf"
            explain_patient(cam, crops_path, row.patient_id, title, tmp / name, device, pdf)
            files.append(name)
        index = chosen.assign(file=files)
        index.to_csv(tmp / "index.csv", index=False, float_format="%.6g")
        if outdir.exists():
            shutil.rmtree(outdir)
        os.replace(tmp, outdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("gradcam: %d patients, cutoff %.3f", len(index), cutoff)
    return index
