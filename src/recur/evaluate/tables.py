"""The evaluation tables of the study, over the evaluation frame (pure functions of DataFrames).

The frame (:func:`recur.evaluate.readers.evaluation_frame`) has one row per patient with its
``split``, ``site``, outcome ``er`` and one score column per model. From it: the evaluation
cohorts (:func:`cohort_masks`), the Youden cutoffs on the tuning split (:func:`cutoffs_table`),
Table 2 with bootstrap CIs (:func:`table2`, :func:`table2_wide`), the paired DeLong tests
(:func:`delong_table`), calibration (:func:`calibration_table`), the high-risk groups at the
cutoffs (:func:`risk_groups`) and a Markdown rendering of a table (:func:`markdown_table`).
The statistics themselves are in :mod:`recur.evaluate.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from recur.errors import RecurError
from recur.evaluate.metrics import (
    METRIC_LABELS,
    METRICS,
    brier,
    calibration_intercept_slope,
    check_binary,
    check_scores,
    classification_metrics,
    delong_test,
    percentile_ci,
    resampled_metrics,
    stratified_indices,
    youden_cutoff,
)


def cohort_masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The evaluation cohorts of Table 2 as boolean masks over ``frame`` rows.

    ``training`` = train split, ``tuning`` = tune split, ``external`` = every test patient,
    then each external site by name (sorted). ``frame`` needs ``split`` and ``site``.
    """
    out = {
        "training": (frame["split"] == "train").to_numpy(),
        "tuning": (frame["split"] == "tune").to_numpy(),
        "external": (frame["split"] == "test").to_numpy(),
    }
    for site in sorted(frame.loc[frame["split"] == "test", "site"].unique()):
        out[str(site)] = ((frame["split"] == "test") & (frame["site"] == site)).to_numpy()
    return out


def cutoffs_table(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Youden cutoffs of every model on the tuning split (``frame`` wide: one column/model)."""
    tune = frame[frame["split"] == "tune"]
    rows = []
    for m in models:
        try:
            c = youden_cutoff(tune["er"], tune[m])
        except RecurError as exc:
            raise RecurError(f"model {m}, tuning split: {exc}") from None
        pred = (tune[m] >= c).astype(int)
        cm = classification_metrics(tune["er"], pred)
        rows.append(
            {
                "model": m,
                "cutoff": c,
                "youden_j": cm["sensitivity"] + cm["specificity"] - 1.0,
                "n_tune": len(tune),
                "n_events_tune": int(tune["er"].sum()),
            }
        )
    return pd.DataFrame(rows)


def table2(
    frame: pd.DataFrame,
    models: Sequence[str],
    cutoffs: Mapping[str, float],
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> pd.DataFrame:
    """Table 2 in long format: ``cohort, model, metric, estimate, ci_low, ci_high, n,
    n_events, n_undefined`` for every cohort of :func:`cohort_masks` and every model.

    The same resample indices are used for every model of a cohort (paired resamples), so
    the CIs of different models are computed on the same bootstrap samples.
    """
    rows = []
    for ci, (cohort, mask) in enumerate(cohort_masks(frame).items()):
        sub = frame[mask]
        if sub.empty:
            continue
        y = check_binary(sub["er"], f"er ({cohort})", both_classes=False)
        idx = stratified_indices(y, n_boot, seed + ci)
        point_idx = np.arange(y.size)[None, :]
        for m in models:
            s = check_scores(sub[m], y.size, f"score of {m} ({cohort})")
            point = resampled_metrics(y, s, float(cutoffs[m]), point_idx)
            boot = resampled_metrics(y, s, float(cutoffs[m]), idx)
            for metric in METRICS:
                est = float(point[metric][0])
                lo, hi, n_undef = percentile_ci(boot[metric], est, level)
                rows.append(
                    {
                        "cohort": cohort,
                        "model": m,
                        "metric": metric,
                        "estimate": est,
                        "ci_low": lo,
                        "ci_high": hi,
                        "n": int(y.size),
                        "n_events": int(y.sum()),
                        "n_undefined": n_undef,
                    }
                )
    return pd.DataFrame(rows)


def format_estimate(est: float, lo: float, hi: float, digits: int = 3) -> str:
    """Paper style ``0.740 [0.462, 0.935]``; undefined values print as ``NA``."""

    def f(v: float) -> str:
        return "NA" if not np.isfinite(v) else f"{v:.{digits}f}"

    if not np.isfinite(est):
        return "NA"
    return f"{f(est)} [{f(lo)}, {f(hi)}]"


def table2_wide(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Table 2 as the paper prints it: one row per cohort x model, one column per metric."""
    t = long.copy()
    t["text"] = [
        format_estimate(e, lo, hi, digits)
        for e, lo, hi in zip(t["estimate"], t["ci_low"], t["ci_high"], strict=True)
    ]
    wide = t.pivot_table(
        index=["cohort", "model"], columns="metric", values="text", aggfunc="first", sort=False
    )
    wide = wide[[m for m in METRICS if m in wide.columns]].rename(columns=METRIC_LABELS)
    counts = t.groupby(["cohort", "model"], sort=False)[["n", "n_events"]].first()
    wide = wide.join(counts)
    wide = wide.reset_index().rename(columns={"cohort": "Cohort", "model": "Model"})
    wide["Cohort"] = [
        f"{c} (n={n}, ER={e})"
        for c, n, e in zip(wide["Cohort"], wide["n"], wide["n_events"], strict=True)
    ]
    return wide.drop(columns=["n", "n_events"])


def delong_table(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Paired DeLong tests of every pair of models in every cohort of :func:`cohort_masks`.

    Cohorts with a single outcome class are skipped (AUC undefined).
    """
    rows = []
    for cohort, mask in cohort_masks(frame).items():
        sub = frame[mask]
        if sub.empty or sub["er"].nunique() < 2:
            continue
        for i, a in enumerate(models):
            for b in models[i + 1 :]:
                r = delong_test(sub["er"], sub[a], sub[b])
                rows.append(
                    {
                        "cohort": cohort,
                        "model_a": a,
                        "model_b": b,
                        **r,
                        "n": len(sub),
                        "n_events": int(sub["er"].sum()),
                    }
                )
    return pd.DataFrame(rows)


def calibration_table(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Brier score, calibration intercept and slope of every model in every cohort."""
    rows = []
    for cohort, mask in cohort_masks(frame).items():
        sub = frame[mask]
        if sub.empty:
            continue
        for m in models:
            both = sub["er"].nunique() == 2
            icpt, slope = (
                calibration_intercept_slope(sub["er"], sub[m]) if both else (math.nan, math.nan)
            )
            rows.append(
                {
                    "cohort": cohort,
                    "model": m,
                    "brier": brier(sub["er"], sub[m]),
                    "intercept": icpt,
                    "slope": slope,
                    "mean_predicted": float(sub[m].mean()),
                    "observed_rate": float(sub["er"].mean()),
                    "n": len(sub),
                    "n_events": int(sub["er"].sum()),
                }
            )
    return pd.DataFrame(rows)


def risk_groups(frame: pd.DataFrame, cutoffs: Mapping[str, float]) -> pd.DataFrame:
    """High-risk indicators (score >= the model's tuning cutoff), one column per model."""
    return pd.DataFrame(
        {m: (frame[m] >= c).astype(int) for m, c in cutoffs.items()}, index=frame.index
    )


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return "\n".join(lines) + "\n"
