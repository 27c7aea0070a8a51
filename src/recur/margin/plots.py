"""Figures of the margin: per-patient surface margins, the cohort, the registration QC.

Histograms are traffic-light coloured (:data:`COLOURS`: red < 0 mm, amber < 5 mm, green
>= 5 mm); each function writes one PNG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:  # pandas is imported where used
    import pandas as pd

from recur.io import atomic_path
from recur.margin.metrics import SAFE_MARGIN_MM, SurfaceMargins

#: Traffic-light colours of the figures (red < 0, amber < 5, green >= 5 mm).
COLOURS: dict[str, str] = {"lt0": "#d62728", "lt5": "#ff9f1c", "ge5": "#2ca02c"}


def _traffic_colour(v: float) -> str:
    if v < 0:
        return COLOURS["lt0"]
    return COLOURS["lt5"] if v < SAFE_MARGIN_MM else COLOURS["ge5"]


def plot_patient_margins(sm: SurfaceMargins, patient: str, out: str | Path) -> None:
    """Histogram of the tumour-surface margins (weighted %), traffic-light coloured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = sm.summary()
    m, w = sm.margins_mm, sm.weights
    lo = math.floor(min(m.min(), -1.0))
    hi = math.ceil(max(m.max(), SAFE_MARGIN_MM + 1.0))
    edges = np.arange(lo, hi + 1.0, 1.0)
    h, _ = np.histogram(m, bins=edges, weights=100.0 * w / w.sum())
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.bar(
        edges[:-1],
        h,
        width=1.0,
        align="edge",
        color=[_traffic_colour(e + 0.5) for e in edges[:-1]],
        edgecolor="white",
        linewidth=0.5,
    )
    ax.axvline(s["min_margin_mm"], color="k", ls="--", lw=1)
    ax.set_xlabel("margin at tumour surface (mm; < 0 = tumour outside the ablation zone)")
    ax.set_ylabel("% of tumour surface")
    ax.set_title(
        f"{patient} ({s['mode']}): min {s['min_margin_mm']:.1f} mm | <0 {s['pct_lt0']:.0f}% "
        f"| <5 {s['pct_lt5']:.0f}% | >=5 {s['pct_ge5']:.0f}%",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_cohort_margins(table: pd.DataFrame, out: str | Path) -> None:
    """Cohort figure: histogram of minimal margins and per-patient surface fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
    mm = table["min_margin_mm"].to_numpy(dtype=float)
    if mm.size:
        lo = math.floor(min(mm.min(), -1.0))
        hi = math.ceil(max(mm.max(), SAFE_MARGIN_MM + 1.0))
        edges = np.arange(lo, hi + 1.0, 1.0)
        h, _ = np.histogram(mm, bins=edges)
        a1.bar(
            edges[:-1],
            h,
            width=1.0,
            align="edge",
            edgecolor="white",
            linewidth=0.5,
            color=[_traffic_colour(e + 0.5) for e in edges[:-1]],
        )
        t = table.sort_values("pct_ge5", kind="stable")
        x = np.arange(len(t))
        lt0 = t["pct_lt0"].to_numpy(float)
        mid = t["pct_lt5"].to_numpy(float) - lt0
        a2.bar(x, lt0, width=1.0, color=COLOURS["lt0"], label="< 0 mm")
        a2.bar(x, mid, width=1.0, bottom=lt0, color=COLOURS["lt5"], label="0-5 mm")
        a2.bar(
            x,
            t["pct_ge5"].to_numpy(float),
            width=1.0,
            bottom=lt0 + mid,
            color=COLOURS["ge5"],
            label=">= 5 mm",
        )
        a2.legend(fontsize=8, loc="lower right")
    a1.set_xlabel("minimal ablative margin (mm)")
    a1.set_ylabel("patients")
    a1.set_title(f"Minimal ablative margin (n = {mm.size})", fontsize=10)
    a2.set_xlabel("patients (sorted by % surface >= 5 mm)")
    a2.set_ylabel("% of tumour surface")
    a2.set_ylim(0, 100)
    a2.set_title("Tumour surface by margin", fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_registration_qc(
    pre_dp: sitk.Image,
    post_on_pre: sitk.Image,
    tumour: sitk.Image,
    zone: sitk.Image,
    title: str,
    out: str | Path,
) -> None:
    """QC overlay on the tumour's largest slice: pre DP and registered post DP, both with the
    tumour outline (yellow) and the transformed ablation-zone outline (cyan), zoomed on the
    ROIs (+ 40 mm) and drawn at 0.5 mm per pixel (Pillow; :mod:`recur.preprocess.qc_images`)."""
    from recur.preprocess import qc_images

    t = sitk.GetArrayViewFromImage(tumour) > 0
    z = sitk.GetArrayViewFromImage(zone) > 0
    k = int(np.argmax(t.sum(axis=(1, 2))))
    sx, sy = pre_dp.GetSpacing()[:2]
    ny, nx = t.shape[1:]
    r0, r1, c0, c1 = 0, ny, 0, nx
    if t[k].any() or z[k].any():  # zoom on the ROIs (+ 40 mm)
        rows, cols = np.nonzero(t[k] | z[k])
        r0 = max(int(rows.min() - 40 / sy), 0)
        r1 = min(int(rows.max() + 1 + 40 / sy), ny)
        c0 = max(int(cols.min() - 40 / sx), 0)
        c1 = min(int(cols.max() + 1 + 40 / sx), nx)
    rows, cols = _display_grid(r1 - r0, c1 - c0, sx, sy, mm_per_pixel=0.5)
    tumour_k = t[k, r0:r1, c0:c1][rows][:, cols]
    zone_k = z[k, r0:r1, c0:c1][rows][:, cols]
    panels = [
        qc_images.overlay(
            qc_images.window(sitk.GetArrayViewFromImage(img)[k, r0:r1, c0:c1][rows][:, cols]),
            [(tumour_k, qc_images.YELLOW), (zone_k, qc_images.CYAN)],
        )
        for img in (pre_dp, post_on_pre)
    ]
    image = qc_images.montage(
        [panels],
        title=f"{title} (yellow: tumour, cyan: ablation zone)",
        col_labels=[f"pre DP, slice {k}", f"post DP on pre grid, slice {k}"],
    )
    qc_images.save_png(image, out)


def _display_grid(
    h: int, w: int, sx: float, sy: float, mm_per_pixel: float
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices that show an (h, w) slice of pixel size (sx, sy) mm at
    ``mm_per_pixel`` (nearest neighbour, true aspect)."""
    n_rows = max(round(h * sy / mm_per_pixel), 1)
    n_cols = max(round(w * sx / mm_per_pixel), 1)
    rows = np.minimum(np.arange(n_rows) * mm_per_pixel / sy, h - 1).astype(int)
    cols = np.minimum(np.arange(n_cols) * mm_per_pixel / sx, w - 1).astype(int)
    return rows, cols
