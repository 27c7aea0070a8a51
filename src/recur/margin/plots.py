"""Figures of the margin: per-patient surface margins, the cohort, the registration QC.

The margin classes (< 0 mm, 0-5 mm, >= 5 mm) have colour-blind-safe Okabe–Ito colours
(vermillion, orange, bluish green) and hatching (crossed, diagonal, none), so they stay apart
in greyscale and for every common colour-vision deficiency; the legends name them. The two
histograms are written as PNG and, when asked, PDF (:func:`recur.figstyle.save_figure`); the
registration QC is a Pillow picture (:mod:`recur.preprocess.qc_images`) with a scale bar and
the patient's orientation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:  # pandas is imported where used
    import pandas as pd

from recur.figstyle import OKABE_ITO, save_figure
from recur.margin.metrics import SAFE_MARGIN_MM, SurfaceMargins

#: The margin classes in order: key, legend label, colour, hatch.
MARGIN_CLASSES: tuple[tuple[str, str, str, str], ...] = (
    ("lt0", "< 0 mm (tumour outside the zone)", OKABE_ITO["vermillion"], "xx"),
    ("lt5", f"0-{SAFE_MARGIN_MM:g} mm", OKABE_ITO["orange"], "//"),
    ("ge5", f">= {SAFE_MARGIN_MM:g} mm", OKABE_ITO["bluish_green"], ""),
)
#: Colours of the margin classes (vermillion < 0, orange < 5, bluish green >= 5 mm).
COLOURS: dict[str, str] = {key: colour for key, _, colour, _ in MARGIN_CLASSES}
#: Hatching of the margin classes.
HATCHES: dict[str, str] = {key: hatch for key, _, _, hatch in MARGIN_CLASSES}


def margin_class(v: float) -> str:
    """The class key of a margin ``v`` (mm): ``lt0``, ``lt5`` or ``ge5``."""
    if v < 0:
        return "lt0"
    return "lt5" if v < SAFE_MARGIN_MM else "ge5"


def _class_bars(ax, left: np.ndarray, heights: np.ndarray, *, bottom=0.0, legend: bool) -> None:
    """Bars of width 1 from ``left``, each in its margin class's colour and hatch."""
    keys = np.array([margin_class(x + 0.5) for x in left])
    for key, label, colour, hatch in MARGIN_CLASSES:
        sel = keys == key
        if sel.any() or legend:
            ax.bar(
                left[sel],
                heights[sel],
                width=1.0,
                align="edge",
                bottom=bottom,
                color=colour,
                hatch=hatch,
                edgecolor="white",
                linewidth=0.5,
                label=label if legend else None,
            )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_patient_margins(
    sm: SurfaceMargins, patient: str, out: str | Path, pdf: str | Path | None = None
) -> None:
    """Histogram of the tumour-surface margins (weighted %), by margin class; PNG ``out``
    (and ``pdf``)."""
    plt = _pyplot()
    s = sm.summary()
    m, w = sm.margins_mm, sm.weights
    lo = math.floor(min(m.min(), -1.0))
    hi = math.ceil(max(m.max(), SAFE_MARGIN_MM + 1.0))
    edges = np.arange(lo, hi + 1.0, 1.0)
    h, _ = np.histogram(m, bins=edges, weights=100.0 * w / w.sum())
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _class_bars(ax, edges[:-1], h, legend=True)
    ax.axvline(s["min_margin_mm"], color="k", ls="--", lw=1, label="minimal margin")
    ax.set_xlabel("margin at tumour surface (mm; < 0 = tumour outside the ablation zone)")
    ax.set_ylabel("% of tumour surface")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(
        f"{patient} ({s['mode']}): min {s['min_margin_mm']:.1f} mm | <0 {s['pct_lt0']:.0f}% "
        f"| <5 {s['pct_lt5']:.0f}% | >=5 {s['pct_ge5']:.0f}%",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, out, pdf)


def plot_cohort_margins(
    table: pd.DataFrame, out: str | Path, pdf: str | Path | None = None
) -> None:
    """Cohort figure: histogram of minimal margins and per-patient surface fractions; PNG
    ``out`` (and ``pdf``)."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    mm = table["min_margin_mm"].to_numpy(dtype=float)
    if mm.size:
        lo = math.floor(min(mm.min(), -1.0))
        hi = math.ceil(max(mm.max(), SAFE_MARGIN_MM + 1.0))
        edges = np.arange(lo, hi + 1.0, 1.0)
        h, _ = np.histogram(mm, bins=edges)
        _class_bars(a1, edges[:-1], h.astype(float), legend=False)
        t = table.sort_values("pct_ge5", kind="stable")
        x = np.arange(len(t))
        lt0 = t["pct_lt0"].to_numpy(float)
        parts = {
            "lt0": lt0,
            "lt5": t["pct_lt5"].to_numpy(float) - lt0,
            "ge5": t["pct_ge5"].to_numpy(float),
        }
        bottom = np.zeros(len(t))
        for key, label, colour, hatch in MARGIN_CLASSES:
            a2.bar(
                x,
                parts[key],
                width=1.0,
                bottom=bottom,
                color=colour,
                hatch=hatch,
                edgecolor="white",
                linewidth=0.3,
                label=label,
            )
            bottom = bottom + parts[key]
        a2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    a1.set_xlabel("minimal ablative margin (mm)")
    a1.set_ylabel("patients")
    a1.set_title(f"Minimal ablative margin (n = {mm.size})", fontsize=10)
    a2.set_xlabel("patients (sorted by % surface >= 5 mm)")
    a2.set_ylabel("% of tumour surface")
    a2.set_ylim(0, 100)
    a2.set_title("Tumour surface by margin", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out, pdf)


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
    ROIs (+ 40 mm) and drawn at 0.5 mm per pixel (Pillow; :mod:`recur.preprocess.qc_images`),
    with a scale bar and the patient's orientation (from the pre DP's direction) on the first
    panel."""
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
    letters = qc_images.orientation_letters(pre_dp.GetDirection())
    image = qc_images.montage(
        [panels],
        title=f"{title} (yellow: tumour, cyan: ablation zone)",
        col_labels=[f"pre DP, slice {k}", f"post DP on pre grid, slice {k}"],
        mm_per_pixel=0.5,
        orientation=letters,
        note=qc_images.orientation_note(letters),
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
