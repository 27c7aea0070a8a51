"""Figures of the evaluation: ROC, decision curves, Kaplan–Meier, calibration, importance.

Each ``*_figure`` function takes data (the evaluation frame of
:func:`recur.evaluate.readers.evaluation_frame`) and returns a matplotlib ``Figure``;
:func:`save_figure` writes it as PNG and PDF (Agg backend) without software/date metadata,
so the files are deterministic and carry nothing but the plot. Every model keeps one
colour-blind-safe colour, line style and marker across the figures (:func:`model_style`,
:mod:`recur.figstyle`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import norm
from sklearn.metrics import roc_curve

from recur.constants import variable_label
from recur.errors import RecurError
from recur.evaluate import metrics
from recur.evaluate.tables import cohort_masks
from recur.figstyle import OKABE_ITO, RISK_GROUP_STYLES, model_style, save_figure

FIGURE_KINDS: tuple[str, ...] = ("roc", "dca", "calibration", "km")
#: Level of the confidence intervals drawn in the figures (AUC, hazard ratio).
FIGURE_CI_LEVEL = 0.95


def _line(model: str, models: Sequence[str]) -> dict[str, object]:
    """``Axes.plot`` keywords of a model's curve: its style, markers every tenth of the way."""
    return {**model_style(model, models), "lw": 1.8, "ms": 4, "markevery": 0.1}


def _title(cohort: str, sub: pd.DataFrame) -> str:
    return f"{cohort} (n={len(sub)}, ER={int(sub['er'].sum())})"


def auc_delong_ci(
    y: object, score: object, level: float = FIGURE_CI_LEVEL
) -> tuple[float, float, float]:
    """AUC and its DeLong confidence interval (AUC ± z·SE, clipped to [0, 1], as pROC's
    ``ci.auc(method = "delong")``): ``(auc, low, high)``."""
    aucs, cov = metrics.delong_auc_cov(y, np.asarray(score, dtype=float)[None, :])
    a, se = float(aucs[0]), math.sqrt(max(float(cov[0, 0]), 0.0))
    z = float(norm.ppf(0.5 + level / 2))
    return a, max(a - z * se, 0.0), min(a + z * se, 1.0)


def roc_figure(sub: pd.DataFrame, models: Sequence[str], cohort: str) -> Figure:
    """ROC curves of every model on one cohort; AUCs with their 95% DeLong CI in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    both = sub["er"].nunique() == 2
    for m in models:
        if both:
            fpr, tpr, _ = roc_curve(sub["er"], sub[m])
            a, lo, hi = auc_delong_ci(sub["er"], sub[m])
            ax.plot(fpr, tpr, **_line(m, models), label=f"{m}: AUC {a:.3f} [{lo:.3f}, {hi:.3f}]")
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
    if both:
        ax.legend(
            loc="lower right",
            fontsize=8,
            title=f"AUC [{FIGURE_CI_LEVEL:.0%} CI, DeLong]",
            title_fontsize=8,
        )
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
        ax.plot(pt, metrics.net_benefit(sub["er"], sub[m], pt), **_line(m, models), label=m)
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
            x, y, **_line(m, models), label=f"{m} (Brier {metrics.brier(sub['er'], sub[m]):.3f})"
        )
        colour = model_style(m, models)["color"]
        ax.plot(sub[m], np.full(len(sub), -0.02 - 0.015 * k), "|", color=colour, ms=5)
    ax.set(
        xlim=(0, 1),
        ylim=(-0.03 - 0.015 * len(models), 1.02),
        xlabel="Predicted ER probability",
        ylabel="Observed ER proportion (lowess)",
        title=_title(cohort, sub),
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def hazard_ratio(
    time: np.ndarray, event: np.ndarray, high: np.ndarray, level: float = FIGURE_CI_LEVEL
) -> tuple[float, float, float]:
    """Hazard ratio of recurrence, high- vs low-risk group, and its Wald CI: a Cox model
    (lifelines ``CoxPHFitter``, Efron ties) on the group indicator alone.

    NaN (all three) when a group is empty or has no recurrence (the HR is then 0 or
    infinite), or when the fit does not converge.
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    high = np.asarray(high, dtype=bool)
    event = np.asarray(event, dtype=int)
    if not (event[high].any() and event[~high].any()):
        return math.nan, math.nan, math.nan
    data = pd.DataFrame(
        {"time": np.asarray(time, dtype=float), "event": event, "high": high.astype(int)}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cph = CoxPHFitter(alpha=1.0 - level).fit(data, "time", "event")
    except ConvergenceError:
        return math.nan, math.nan, math.nan
    coef = float(cph.params_["high"])
    se = float(cph.standard_errors_["high"])
    z = float(norm.ppf(0.5 + level / 2))
    logs = (coef, coef - z * se, coef + z * se)
    if not all(math.isfinite(v) and abs(v) < 700 for v in logs):  # exp() would overflow
        return math.nan, math.nan, math.nan
    return tuple(math.exp(v) for v in logs)


def _hr_text(hr: float, low: float, high: float) -> str:
    """The two hazard-ratio lines of a Kaplan–Meier panel: the HR and the split's direction."""
    if not math.isfinite(hr):
        return "HR high vs low risk not estimable\n(a group is empty or has no recurrence)"
    direction = "more" if hr >= 1 else "less: the split is inverted"
    spans = "" if (low > 1 or high < 1) else " (CI includes 1)"
    return (
        f"HR high vs low risk {hr:.2f} [{low:.2f}, {high:.2f}]\n"
        f"high-risk group recurs {direction}{spans}"
    )


def km_figure(
    sub: pd.DataFrame, models: Sequence[str], cohort: str, cutoffs: Mapping[str, float]
) -> tuple[Figure, pd.DataFrame]:
    """Kaplan–Meier RFS by risk group (score >= tuning cutoff) for every model of a cohort.

    One panel per model: both groups' curves with their 95% CI bands (Greenwood, log-log),
    the log-rank p-value, the hazard ratio high vs low risk with its 95% CI
    (:func:`hazard_ratio`) and whether the high-risk group recurs more, and a numbers-at-risk
    table. The top edge of a panel has the model's colour (:func:`model_style`). Returns the
    figure and a table ``cohort, model, cutoff, n_low, n_high, events_low, events_high,
    p_logrank, hr, hr_low, hr_high`` (p and HR are NaN when a group is empty; HR also when a
    group has no recurrence).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from lifelines.statistics import logrank_test

    ncol = 2
    nrow = int(np.ceil(len(models) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 5.8 * nrow), squeeze=False)
    rows = []
    t = sub["rfs_months"].to_numpy(dtype=float)
    e = sub["rfs_event"].to_numpy(dtype=int)
    for ax, m in zip(axes.ravel(), models, strict=False):
        high = (sub[m] >= cutoffs[m]).to_numpy()
        fitters = []
        for name, mask in (("Low risk", ~high), ("High risk", high)):
            if mask.sum() == 0:
                continue
            kmf = KaplanMeierFitter(label=name)
            kmf.fit(t[mask], e[mask])
            kmf.plot_survival_function(
                ax=ax, ci_show=True, ci_alpha=0.15, show_censors=True, **RISK_GROUP_STYLES[name]
            )
            fitters.append(kmf)
        p = np.nan
        if high.any() and (~high).any():
            p = float(logrank_test(t[high], t[~high], e[high], e[~high]).p_value)
        hr, hr_low, hr_high = hazard_ratio(t, e, high)
        ptxt = "NA" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"= {p:.3f}")
        ax.set_title(f"{m}: log-rank p {ptxt}\n{_hr_text(hr, hr_low, hr_high)}", fontsize=9)
        ax.set(xlabel="Months", ylabel="RFS probability", ylim=(0, 1.05))
        ax.spines["top"].set(color=model_style(m, models)["color"], linewidth=3)
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
                "hr": hr,
                "hr_low": hr_low,
                "hr_high": hr_high,
            }
        )
    for ax in axes.ravel()[len(models) :]:
        ax.set_visible(False)
    fig.suptitle(_title(cohort, sub))
    fig.subplots_adjust(hspace=0.9, wspace=0.45, left=0.14, right=0.97, bottom=0.12, top=0.88)
    return fig, pd.DataFrame(rows)


def importance_figure(importance: pd.DataFrame, title: str = "DL_Clinical") -> Figure:
    """Horizontal bar chart of feature importance (``feature, importance``: each feature's
    share, :func:`recur.models.tabular.feature_importance`), the features named by
    :func:`recur.constants.variable_label`."""
    imp = importance.sort_values("importance")
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(imp) + 1.2))
    ax.barh([variable_label(f) for f in imp["feature"]], imp["importance"], color=OKABE_ITO["blue"])
    for y, v in enumerate(imp["importance"]):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlabel(
        "Share of importance (logistic: |standardised coefficients|;\n"
        "trees: mean decrease in impurity)",
        fontsize=9,
    )
    ax.set(
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
