"""The evaluation tables of the study, over the evaluation frame (pure functions of DataFrames).

The frame (:func:`recur.evaluate.readers.evaluation_frame`) has one row per patient with its
``split``, ``site``, outcome ``er`` and one score column per model. From it: the evaluation
cohorts (:func:`cohort_masks`), the Youden cutoffs on the tuning split (:func:`cutoffs_table`),
Table 2 with bootstrap CIs (:func:`table2`, :func:`table2_wide`), the paired DeLong tests
(:func:`delong_table`), calibration (:func:`calibration_table`), the log-rank table's flags
(:func:`km_logrank_table`) and the high-risk groups at the cutoffs (:func:`risk_groups`).
The statistics themselves are in :mod:`recur.evaluate.metrics`.

Every table flags the rows of a cohort with fewer than :data:`recur.constants.MIN_EVENTS`
events (:func:`few_events_flag`, column ``flag``). The CSVs keep full precision; their
Markdown and HTML renderings (:func:`display_table`, :func:`markdown_table`,
:func:`html_table`) round estimates to 3 decimals and print p-values with :func:`format_p`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from recur.constants import MIN_EVENTS
from recur.errors import RecurError
from recur.evaluate.metrics import (
    METRIC_LABELS,
    METRICS,
    PROPORTION_CI_METHOD,
    auc,
    brier,
    calibration_fit,
    check_binary,
    check_scores,
    classification_metrics,
    confusion_counts,
    delong_test,
    metric_interval,
    resampled_metrics,
    stratified_indices,
    youden_cutoff,
)

#: Column order of Table 2's long CSV (``table2.csv``).
TABLE2_COLUMNS: tuple[str, ...] = (
    "cohort",
    "model",
    "metric",
    "estimate",
    "ci_low",
    "ci_high",
    "ci_method",
    "n",
    "n_events",
    "n_undefined",
    "tp",
    "fp",
    "tn",
    "fn",
    "note",
    "flag",
)
#: The confusion counts at the tuning cutoff, as columns of Table 2 (long and wide).
COUNT_COLUMNS: dict[str, str] = {"tp": "TP", "fp": "FP", "tn": "TN", "fn": "FN"}
#: Marks of a cell of the wide Table 2: a Wilson interval, a degenerate bootstrap interval.
WILSON_MARK = "\u2020"
DEGENERATE_MARK = "\u2021"


# --------------------------------------------------------------------------- formatting
def format_p(p: float, digits: int = 3) -> str:
    """A p-value as printed in every table: ``< 0.001`` below 0.001, else ``digits`` decimals
    (``0.031``); ``NA`` when undefined (NaN)."""
    if p is None or not np.isfinite(p):
        return "NA"
    floor = 10.0**-digits
    return f"< {floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


def few_events_flag(n_events: int, threshold: int = MIN_EVENTS) -> str:
    """``"fewer than 10 events (n_events=3)"`` below ``threshold`` events, else ``""``."""
    n_events = int(n_events)
    return f"fewer than {threshold} events (n_events={n_events})" if n_events < threshold else ""


def is_p_column(name: str) -> bool:
    """Whether a column holds p-values (``p`` or ``p_...``), printed with :func:`format_p`."""
    return name == "p" or name.startswith("p_")


def display_table(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``df`` with every cell as text for Markdown/HTML: p-value columns (:func:`is_p_column`)
    through :func:`format_p`, other floats to ``digits`` decimals, NaN as ``NA``, missing text
    as empty, integers and text unchanged."""
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        col = df[c]
        if is_p_column(str(c)) and pd.api.types.is_numeric_dtype(col):
            out[c] = [format_p(v, digits) for v in col.astype(float)]
        elif pd.api.types.is_float_dtype(col):
            out[c] = ["NA" if not np.isfinite(v) else f"{v:.{digits}f}" for v in col]
        elif pd.api.types.is_bool_dtype(col) or pd.api.types.is_integer_dtype(col):
            out[c] = col.astype(str)
        else:
            out[c] = [
                "" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v)
                for v in col
            ]
    return out


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
                # below 0.5: the model ranks the tuning patients worse than chance (flagged
                # in the report and by recur predict)
                "tune_auc": auc(tune["er"], tune[m]),
                "n_tune": len(tune),
                "n_events_tune": int(tune["er"].sum()),
            }
        )
    return pd.DataFrame(rows)


def primary_model(cutoffs: pd.DataFrame, models: Sequence[str] | None = None) -> str:
    """The model the tuning split ranks first: the highest ``tune_auc`` of a cutoffs table
    (:func:`cutoffs_table`) among ``models`` (default: every model of the table); a tie goes
    to the earlier model of the table. Chosen before any external patient is looked at, so
    its external AUC is not selected on the external patients."""
    rows = cutoffs if models is None else cutoffs[cutoffs["model"].isin(list(models))]
    if rows.empty or "tune_auc" not in rows.columns:
        raise RecurError("cutoffs table: no model with a tuning AUC to choose the primary from")
    aucs = pd.to_numeric(rows["tune_auc"], errors="coerce")
    if aucs.isna().all():
        raise RecurError("cutoffs table: every tuning AUC is undefined")
    return str(rows["model"].iloc[int(np.nanargmax(aucs.to_numpy(float)))])


def table2(
    frame: pd.DataFrame,
    models: Sequence[str],
    cutoffs: Mapping[str, float],
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> pd.DataFrame:
    """Table 2 in long format (columns :data:`TABLE2_COLUMNS`), one row per cohort of
    :func:`cohort_masks`, model and metric.

    * ``estimate, ci_low, ci_high, ci_method``: the stratified percentile-bootstrap interval
      (``bootstrap``), or for a proportion at 0 or 1, whose bootstrap interval has zero width,
      the Wilson score interval of its confusion counts (``wilson``); ``none`` where the
      estimate is undefined (:func:`recur.evaluate.metrics.metric_interval`).
    * ``n, n_events``: patients and ER events of the cohort; ``n_undefined``: resamples in
      which the metric was 0/0.
    * ``tp, fp, tn, fn``: the confusion counts at the model's tuning cutoff (the same on every
      metric row of a cohort and model).
    * ``note``: why an interval is Wilson or degenerate (an AUC of 1 or 0); ``flag``:
      :func:`few_events_flag` of the cohort.

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
        flag = few_events_flag(int(y.sum()))
        for m in models:
            s = check_scores(sub[m], y.size, f"score of {m} ({cohort})")
            point = resampled_metrics(y, s, float(cutoffs[m]), point_idx)
            boot = resampled_metrics(y, s, float(cutoffs[m]), idx)
            counts = confusion_counts(y, s, float(cutoffs[m]))
            for metric in METRICS:
                est = float(point[metric][0])
                rows.append(
                    {
                        "cohort": cohort,
                        "model": m,
                        "metric": metric,
                        "estimate": est,
                        **metric_interval(metric, est, boot[metric], counts, level),
                        "n": int(y.size),
                        "n_events": int(y.sum()),
                        **counts,
                        "flag": flag,
                    }
                )
    return pd.DataFrame(rows, columns=list(TABLE2_COLUMNS))


def format_estimate(est: float, lo: float, hi: float, digits: int = 3) -> str:
    """Paper style ``0.740 [0.462, 0.935]``; undefined values print as ``NA``."""

    def f(v: float) -> str:
        return "NA" if not np.isfinite(v) else f"{v:.{digits}f}"

    if not np.isfinite(est):
        return "NA"
    return f"{f(est)} [{f(lo)}, {f(hi)}]"


def _mark(method: str, note: object) -> str:
    if method == PROPORTION_CI_METHOD:
        return WILSON_MARK
    return DEGENERATE_MARK if isinstance(note, str) and note else ""


def table2_wide(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Table 2 as the paper prints it: one row per cohort x model, one column per metric
    (``estimate [low, high]``), then the confusion counts ``TP, FP, TN, FN`` at the tuning
    cutoff and ``Flag`` (:func:`few_events_flag`, empty when none).

    A cell whose interval is Wilson's ends in :data:`WILSON_MARK`, one whose bootstrap
    interval is degenerate (an AUC or F1 at 0 or 1) in :data:`DEGENERATE_MARK`.
    """
    t = long.copy()
    t["text"] = [
        format_estimate(e, lo, hi, digits) + _mark(meth, note)
        for e, lo, hi, meth, note in zip(
            t["estimate"], t["ci_low"], t["ci_high"], t["ci_method"], t["note"], strict=True
        )
    ]
    wide = t.pivot_table(
        index=["cohort", "model"], columns="metric", values="text", aggfunc="first", sort=False
    )
    wide = wide[[m for m in METRICS if m in wide.columns]].rename(columns=METRIC_LABELS)
    t["flag"] = t["flag"].fillna("").astype(str)
    per = t.groupby(["cohort", "model"], sort=False)[
        ["n", "n_events", *COUNT_COLUMNS, "flag"]
    ].first()
    wide = wide.join(per.rename(columns={**COUNT_COLUMNS, "flag": "Flag"}))
    wide = wide.reset_index().rename(columns={"cohort": "Cohort", "model": "Model"})
    wide["Cohort"] = [
        f"{c} (n={n}, ER={e})"
        for c, n, e in zip(wide["Cohort"], wide["n"], wide["n_events"], strict=True)
    ]
    for c in COUNT_COLUMNS.values():
        wide[c] = wide[c].astype(int)
    return wide.drop(columns=["n", "n_events"])


def table2_footnote(level: float, n_boot: int, seed: int) -> str:
    """The footnote of the wide Table 2 (Markdown and HTML)."""
    return (
        f"Estimate [{level:.0%} CI]; stratified percentile bootstrap, {n_boot} resamples, "
        f"seed {seed}; cutoffs = Youden index on the tuning split, TP, FP, TN, FN at that "
        f"cutoff. {WILSON_MARK} Wilson score interval: the estimate is 0 or 1, where every "
        f"resample repeats it and the bootstrap interval has zero width. {DEGENERATE_MARK} "
        "Degenerate bootstrap interval of an AUC or F1 at 0 or 1 (an AUC of 1 or 0: the "
        "scores separate the classes perfectly in this cohort). NA = undefined (0/0). Flag: "
        "a cohort with fewer than "
        f"{MIN_EVENTS} events, whose estimates are unstable."
    )


def delong_table(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Paired DeLong tests of every pair of models in every cohort of :func:`cohort_masks`:
    ``cohort, model_a, model_b, auc_a, auc_b, diff, se, z, p, note, n, n_events, flag``.

    A test with zero variance has NaN ``z`` and ``p`` and its reason in ``note``
    (:func:`recur.evaluate.metrics.delong_test`); ``flag`` is :func:`few_events_flag`.
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
                        "flag": few_events_flag(int(sub["er"].sum())),
                    }
                )
    return pd.DataFrame(rows)


def calibration_table(frame: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Brier score, calibration intercept and slope of every model in every cohort:
    ``cohort, model, brier, intercept, slope, mean_predicted, observed_rate, n, n_events,
    note, flag``.

    An intercept or slope the data cannot define (a single outcome class, predictions that
    separate the outcomes, a slope beyond
    :data:`recur.evaluate.metrics.CALIBRATION_SLOPE_LIMIT`) is NaN with the reason in
    ``note`` (:func:`recur.evaluate.metrics.calibration_fit`); ``flag`` is
    :func:`few_events_flag`.
    """
    rows = []
    for cohort, mask in cohort_masks(frame).items():
        sub = frame[mask]
        if sub.empty:
            continue
        n_events = int(sub["er"].sum())
        for m in models:
            if sub["er"].nunique() == 2:
                fit = calibration_fit(sub["er"], sub[m])
            else:
                fit = {
                    "intercept": math.nan,
                    "slope": math.nan,
                    "note": "a single outcome class: intercept and slope undefined",
                }
            rows.append(
                {
                    "cohort": cohort,
                    "model": m,
                    "brier": brier(sub["er"], sub[m]),
                    "intercept": fit["intercept"],
                    "slope": fit["slope"],
                    "mean_predicted": float(sub[m].mean()),
                    "observed_rate": float(sub["er"].mean()),
                    "n": len(sub),
                    "n_events": n_events,
                    "note": fit["note"],
                    "flag": few_events_flag(n_events),
                }
            )
    return pd.DataFrame(rows)


def km_logrank_table(table: pd.DataFrame) -> pd.DataFrame:
    """The Kaplan-Meier log-rank table (:func:`recur.evaluate.figures.km_figure`, one row
    per cohort and model) with ``n_events`` (RFS events of both risk groups, when the table
    has ``events_low`` and ``events_high``) and ``flag`` (:func:`few_events_flag`)."""
    out = table.copy()
    if "n_events" not in out.columns:
        out["n_events"] = (out["events_low"] + out["events_high"]).astype(int)
    out["flag"] = [few_events_flag(e) for e in out["n_events"]]
    return out


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


def html_table(df: pd.DataFrame, note: str = "") -> str:
    """A DataFrame as an HTML table (UTF-8 declared, cells escaped), ``note`` below it."""
    import html

    body = df.to_html(index=False, border=0, escape=True, na_rep="")
    foot = f"<p>{html.escape(note)}</p>\n" if note else ""
    return f'<meta charset="utf-8">\n{body}\n{foot}'


def table_documents(df: pd.DataFrame, note: str = "", digits: int = 3) -> tuple[str, str]:
    """``(markdown, html)`` of ``df`` through :func:`display_table`, ``note`` below it."""
    shown = display_table(df, digits)
    md = markdown_table(shown) + (f"\n{note}\n" if note else "")
    return md, html_table(shown, note)
