"""Figures of the evaluation: ROC, decision curves, Kaplan–Meier, calibration, importance.

Each ``*_figure`` function takes data (the evaluation frame of
:func:`recur.evaluate.readers.evaluation_frame`) and returns a matplotlib ``Figure``;
:func:`save_figure` writes it as PNG and PDF (Agg backend) without software/date metadata,
so the files are deterministic and carry nothing but the plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from recur.errors import RecurError
from recur.evaluate import metrics
from recur.evaluate.tables import cohort_masks
from recur.io import atomic_path

COLORS: dict[str, str] = {
    "Clinical": "#1b9e77",
    "Pre": "#d95f02",
    "PrePost": "#7570b3",
    "DL_Clinical": "#e7298a",
}
FIGURE_KINDS: tuple[str, ...] = ("roc", "dca", "calibration", "km")


def _color(model: str) -> str:
    return COLORS.get(model, "#444444")


def save_figure(fig: Figure, png: str | Path, pdf: str | Path | None = None) -> None:
    """Write ``fig`` as PNG (and PDF) atomically, without metadata; then close it."""
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
        if pdf is not None:
            with atomic_path(pdf) as tmp:
                fig.savefig(
                    tmp,
                    format="pdf",
                    metadata={"Creator": None, "Producer": None, "CreationDate": None},
                )
    finally:
        plt.close(fig)


def _title(cohort: str, sub: pd.DataFrame) -> str:
    return f"{cohort} (n={len(sub)}, ER={int(sub['er'].sum())})"


def roc_figure(sub: pd.DataFrame, models: Sequence[str], cohort: str) -> Figure:
    """ROC curves of every model on one cohort; AUCs in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    both = sub["er"].nunique() == 2
    for m in models:
        if both:
            fpr, tpr, _ = roc_curve(sub["er"], sub[m])
            ax.plot(
                fpr,
                tpr,
                color=_color(m),
                lw=1.8,
                label=f"{m} (AUC = {metrics.auc(sub['er'], sub[m]):.3f})",
            )
    if not both:
        ax.text(0.5, 0.5, "single outcome class: ROC undefined", ha="center")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="1 - specificity",
        ylabel="Sensitivity",
        title=_title(cohort, sub),
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def dca_figure(
    sub: pd.DataFrame, models: Sequence[str], cohort: str, thresholds: Sequence[float]
) -> Figure:
    """Decision curves: net benefit vs threshold probability, with treat-all/treat-none."""
    pt = np.asarray(thresholds, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    all_nb = metrics.net_benefit_treat_all(sub["er"], pt)
    ax.plot(pt, all_nb, color="grey", lw=1.2, label="Treat all")
    ax.axhline(0, color="black", lw=1.2, label="Treat none")
    top = max(float(sub["er"].mean()), 0.05)
    for m in models:
        ax.plot(pt, metrics.net_benefit(sub["er"], sub[m], pt), color=_color(m), lw=1.8, label=m)
    ax.set(
        xlim=(pt.min(), pt.max()),
        ylim=(-0.05, top * 1.15),
        xlabel="Threshold probability",
        ylabel="Net benefit",
        title=_title(cohort, sub),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(
    sub: pd.DataFrame, models: Sequence[str], cohort: str, frac: float
) -> Figure:
    """Smoothed (lowess) calibration curves with the ideal diagonal and a score rug."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="Ideal")
    for k, m in enumerate(models):
        x, y = metrics.calibration_curve_lowess(sub["er"], sub[m], frac=frac)
        ax.plot(
            x,
            y,
            color=_color(m),
            lw=1.8,
            label=f"{m} (Brier {metrics.brier(sub['er'], sub[m]):.3f})",
        )
        ax.plot(sub[m], np.full(len(sub), -0.02 - 0.015 * k), "|", color=_color(m), ms=5)
    ax.set(
        xlim=(0, 1),
        ylim=(-0.09, 1.02),
        xlabel="Predicted ER probability",
        ylabel="Observed ER proportion (lowess)",
        title=_title(cohort, sub),
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def km_figure(
    sub: pd.DataFrame, models: Sequence[str], cohort: str, cutoffs: Mapping[str, float]
) -> tuple[Figure, pd.DataFrame]:
    """Kaplan–Meier RFS by risk group (score >= tuning cutoff) for every model of a cohort.

    One panel per model with the log-rank p-value and a numbers-at-risk table. Returns the
    figure and a table ``cohort, model, n_low, n_high, events_low, events_high, p_logrank``
    (p is NaN when a group is empty).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from lifelines.statistics import logrank_test

    ncol = 2
    nrow = int(np.ceil(len(models) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 5.2 * nrow), squeeze=False)
    rows = []
    t = sub["rfs_months"].to_numpy(dtype=float)
    e = sub["rfs_event"].to_numpy(dtype=int)
    for ax, m in zip(axes.ravel(), models, strict=False):
        high = (sub[m] >= cutoffs[m]).to_numpy()
        fitters = []
        for name, mask, col in (("Low risk", ~high, "#2c7bb6"), ("High risk", high, "#d7191c")):
            if mask.sum() == 0:
                continue
            kmf = KaplanMeierFitter(label=name)
            kmf.fit(t[mask], e[mask])
            kmf.plot_survival_function(ax=ax, ci_show=False, color=col, show_censors=True)
            fitters.append(kmf)
        p = np.nan
        if high.any() and (~high).any():
            p = float(logrank_test(t[high], t[~high], e[high], e[~high]).p_value)
        ptxt = "NA" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"= {p:.3f}")
        ax.set(
            title=f"{m}: log-rank p {ptxt}",
            xlabel="Months",
            ylabel="RFS probability",
            ylim=(0, 1.05),
        )
        ax.legend(loc="lower left", fontsize=8)
        if fitters:
            add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
        rows.append(
            {
                "cohort": cohort,
                "model": m,
                "cutoff": float(cutoffs[m]),
                "n_low": int((~high).sum()),
                "n_high": int(high.sum()),
                "events_low": int(e[~high].sum()),
                "events_high": int(e[high].sum()),
                "p_logrank": p,
            }
        )
    for ax in axes.ravel()[len(models) :]:
        ax.set_visible(False)
    fig.suptitle(_title(cohort, sub))
    fig.subplots_adjust(hspace=0.75, wspace=0.45, left=0.14, right=0.97, bottom=0.12, top=0.92)
    return fig, pd.DataFrame(rows)


def importance_figure(importance: pd.DataFrame, title: str = "DL_Clinical") -> Figure:
    """Horizontal bar chart of MDI feature importance (``feature, importance``)."""
    imp = importance.sort_values("importance")
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(imp) + 1.2))
    ax.barh(imp["feature"], imp["importance"], color="#7570b3")
    for y, v in enumerate(imp["importance"]):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    ax.set(
        xlabel="Mean decrease in impurity",
        title=f"{title}: feature importance",
        xlim=(0, max(float(imp["importance"].max()) * 1.2, 0.05)),
    )
    fig.tight_layout()
    return fig


def cohort_figures(
    frame: pd.DataFrame,
    models: Sequence[str],
    kind: str,
    outdir: str | Path,
    *,
    cutoffs: Mapping[str, float] | None = None,
    thresholds: Sequence[float] | None = None,
    frac: float | None = None,
) -> pd.DataFrame | None:
    """Draw one ``kind`` figure per cohort of :func:`recur.evaluate.tables.cohort_masks` into
    ``outdir/<cohort>.png|pdf``. For ``km`` returns the log-rank table."""
    if (kind == "dca" and thresholds is None) or (kind == "calibration" and frac is None):
        raise RecurError(f"{kind} figures need their settings (thresholds or lowess frac)")
    outdir = Path(outdir)
    figs: list[tuple[str, Figure]] = []
    tables = []
    try:
        for cohort, mask in cohort_masks(frame).items():
            sub = frame[mask]
            if sub.empty:
                continue
            if kind == "roc":
                figs.append((cohort, roc_figure(sub, models, cohort)))
            elif kind == "dca":
                figs.append((cohort, dca_figure(sub, models, cohort, thresholds)))
            elif kind == "calibration":
                figs.append((cohort, calibration_figure(sub, models, cohort, frac)))
            elif kind == "km":
                fig, tab = km_figure(sub, models, cohort, cutoffs)
                figs.append((cohort, fig))
                tables.append(tab)
            else:
                raise ValueError(f"unknown figure kind {kind!r}; expected {FIGURE_KINDS}")
    except BaseException:
        for _, f in figs:
            plt.close(f)
        raise
    for cohort, fig in figs:
        save_figure(fig, outdir / f"{cohort}.png", outdir / f"{cohort}.pdf")
    return pd.concat(tables, ignore_index=True) if tables else None
