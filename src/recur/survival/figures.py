"""Figures of the survival stage (each returns a matplotlib Figure; saved with
:func:`recur.evaluate.figures.save_figure`, deterministic PNG + PDF).

* :func:`td_auc_figure`: time-dependent AUC over the curve grid, one cohort: the Cox models
  (left panel) and their binary namesakes' scores (right panel).
* :func:`calibration_figure`: predicted 24-month recurrence of each Cox model against the
  Kaplan–Meier estimate, by risk group (quantiles of predicted risk), one cohort.
* The Kaplan–Meier curves by the Cox models' risk groups reuse
  :func:`recur.evaluate.figures.km_figure` with the Cox risks and their tuning cutoffs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from recur.figstyle import model_style
from recur.survival import metrics


def td_auc_figure(
    cohort: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    risks: Mapping[str, np.ndarray],
    binary: Mapping[str, np.ndarray],
    grid: Sequence[float],
) -> tuple[Figure, pd.DataFrame]:
    """The curves (left panel: the Cox models; right: the binary models' scores; each model
    in its :func:`~recur.figstyle.model_style`) and their values (``model, kind, month, auc``;
    NaN where undefined)."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys([*risks, *binary]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    rows = []
    panels = (("cox", risks, "Cox models"), ("binary", binary, "Binary models' scores"))
    for ax, (kind, scores, heading) in zip(axes, panels, strict=True):
        for name, risk in scores.items():
            auc = metrics.td_auc(*train, *test, risk, list(grid))
            ok = np.isfinite(auc)
            if ok.any():
                style = model_style(name, names)
                ax.plot(np.asarray(grid)[ok], auc[ok], **style, lw=1.8, ms=4, label=name)
            rows += [
                {"cohort": cohort, "model": name, "kind": kind, "month": t, "auc": a}
                for t, a in zip(grid, auc, strict=True)
            ]
        ax.axhline(0.5, color="#999999", lw=0.8, ls=":")
        ax.set(xlabel="Months after ablation", ylim=(0.0, 1.0), title=heading)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("Time-dependent AUC (cumulative/dynamic)")
    fig.suptitle(f"{cohort} (n={len(test[0])}, recurrences={int(np.sum(test[1]))})")
    fig.tight_layout()
    return fig, pd.DataFrame(rows)


def calibration_groups(
    predicted: np.ndarray, time: np.ndarray, event: np.ndarray, horizon: float, groups: int
) -> pd.DataFrame:
    """Predicted vs Kaplan–Meier-observed recurrence by ``horizon`` in quantile groups of the
    prediction (fewer groups when a group would hold fewer than 5 patients): ``group, n,
    predicted, observed, observed_low, observed_high``."""
    from lifelines import KaplanMeierFitter

    k = int(max(1, min(groups, len(predicted) // 5)))
    order = np.argsort(predicted, kind="stable")
    rows = []
    for g, members in enumerate(np.array_split(order, k)):
        kmf = KaplanMeierFitter().fit(time[members], event[members])
        surv = float(kmf.survival_function_at_times(horizon).iloc[0])
        ci = kmf.confidence_interval_survival_function_
        at = ci[ci.index <= horizon].iloc[-1] if (ci.index <= horizon).any() else ci.iloc[0]
        rows.append(
            {
                "group": g + 1,
                "n": len(members),
                "predicted": float(np.mean(predicted[members])),
                "observed": 1.0 - surv,
                "observed_low": 1.0 - float(at.iloc[1]),
                "observed_high": 1.0 - float(at.iloc[0]),
            }
        )
    return pd.DataFrame(rows)


def calibration_figure(
    cohort: str,
    time: np.ndarray,
    event: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    horizon: float,
    groups: int,
) -> tuple[Figure, pd.DataFrame]:
    """One panel per Cox model (points and top edge in its :func:`~recur.figstyle.model_style`):
    predicted recurrence by ``horizon`` months (1 - S) against the Kaplan–Meier estimate per
    risk group, with its 95% CI; and the table of the points."""
    import matplotlib.pyplot as plt

    n = len(predicted)
    ncol = min(3, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 4.0 * nrow), squeeze=False)
    parts = []
    for ax, (name, pred) in zip(axes.ravel(), predicted.items(), strict=False):
        table = calibration_groups(pred, time, event, horizon, groups)
        style = model_style(name, list(predicted))
        ax.errorbar(
            table["predicted"],
            table["observed"],
            yerr=[
                (table["observed"] - table["observed_low"]).clip(lower=0),
                (table["observed_high"] - table["observed"]).clip(lower=0),
            ],
            fmt=style["marker"],
            color=style["color"],
            capsize=2,
        )
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls=":")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel=f"Predicted recurrence by {horizon:g} months",
            ylabel="Observed (Kaplan–Meier)",
        )
        ax.set_title(name)
        ax.spines["top"].set(color=style["color"], linewidth=3)
        parts.append(table.assign(cohort=cohort, model=name))
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{cohort} (n={len(time)}, recurrences={int(np.sum(event))})")
    fig.tight_layout()
    return fig, pd.concat(parts, ignore_index=True)
