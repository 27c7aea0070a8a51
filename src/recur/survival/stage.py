"""The survival stage over DataFrames: Cox models fitted on the training patients, scored on
every patient, and the censoring-aware metrics of every model per evaluation cohort.

* :func:`fit_cox_models`: one penalised Cox model per predictor set
  (:func:`recur.survival.data.predictor_sets`), its design (imputation, log1p of AFP, log-odds
  of a DL signature, standardisation) fitted on the training patients only.
* :func:`cox_scores`: each patient's risk (linear predictor) and predicted recurrence-free
  probability at the metric times and over the curve grid.
* :func:`cox_table`: hazard ratios per standardised predictor with 95% CIs and the
  proportional-hazards test (Schoenfeld residuals), per variable and global.
* :func:`survival_table` / :func:`comparison_table`: Harrell's C, Uno's C (truncated at the ER
  horizon), time-dependent AUC and integrated Brier score of the Cox models and of the binary
  models' scores, per cohort, with percentile-bootstrap CIs over Table 2's paired resamples,
  and the paired bootstrap tests of C-index differences.
* :func:`risk_cutoffs`: each Cox model's Youden cutoff on the tuning split (against ER), as for
  the binary models.

The metrics themselves are :mod:`recur.survival.metrics` (scikit-survival) and the Cox fits
:mod:`recur.survival.cox` (lifelines).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from recur.constants import ER_HORIZON_MONTHS
from recur.errors import RecurError
from recur.evaluate.metrics import percentile_ci, stratified_indices, youden_cutoff
from recur.evaluate.tables import cohort_masks, few_events_flag
from recur.survival import cox, metrics
from recur.survival.settings import SurvivalSettings

TIME, EVENT = "rfs_months", "rfs_event"
#: Column order of results/tables/survival.csv.
SURVIVAL_COLUMNS = (
    "cohort",
    "model",
    "kind",
    "metric",
    "estimate",
    "ci_low",
    "ci_high",
    "n",
    "n_events",
    "n_undefined",
    "note",
    "flag",
)


@dataclass(frozen=True, eq=False)
class CoxModel:
    """One fitted Cox model: its predictors, its design (fitted on the training patients) and
    the lifelines fit."""

    name: str
    features: list[str]
    design: object  # sklearn Pipeline
    fit: object  # lifelines CoxPHFitter
    #: design columns constant among the training patients (no coefficient can be estimated)
    constant: tuple[str, ...] = ()

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The standardised design matrix of ``frame``'s rows (constant columns left out)."""
        values = self.design.transform(frame[self.features])
        values.index = frame.index
        return values.drop(columns=list(self.constant))


def cox_design(settings: object, features: Sequence[str]):
    """The binary logistic models' design without splines (one coefficient and one hazard
    ratio per predictor), standardised (:func:`recur.survival.cox.cox_design`)."""
    return cox.cox_design(replace(settings, spline_knots=0), features)


def check_outcomes(frame: pd.DataFrame) -> None:
    """Survival times > 0, events 0/1, and events among the training patients (one line
    naming the patient or the cohort otherwise)."""
    metrics.check_survival(
        frame[TIME].to_numpy(), frame[EVENT].to_numpy(), "rfs", ids=frame["patient_id"].to_numpy()
    )
    train = frame[frame["split"] == "train"]
    if int(train[EVENT].sum()) == 0:
        raise RecurError(
            f"training cohort: no recurrence (rfs_event = 1) among its {len(train)} patients: "
            "a Cox model cannot be fitted"
        )


def fit_cox_models(
    frame: pd.DataFrame,
    predictor_sets: Mapping[str, Sequence[str]],
    tabular_settings: object,
    penalizer: float,
) -> dict[str, CoxModel]:
    """Fit one Cox model per predictor set on the training patients of ``frame``."""
    check_outcomes(frame)
    train = frame[frame["split"] == "train"]
    out = {}
    for name, features in predictor_sets.items():
        design = cox_design(tabular_settings, features).fit(train[list(features)])
        full = design.transform(train[list(features)])
        constant = tuple(c for c in full.columns if not np.ptp(full[c].to_numpy()) > 0)
        model = CoxModel(name, list(features), design, None, constant)
        if len(constant) == full.shape[1]:
            raise RecurError(
                f"Cox model {name}: every predictor is constant among the training patients"
            )
        try:
            fitted = cox.fit_cox(model.matrix(train), train[TIME], train[EVENT], penalizer)
        except RecurError as exc:
            raise RecurError(f"Cox model {name}: {exc}") from None
        out[name] = CoxModel(name, list(features), design, fitted, constant)
    return out


def cox_scores(
    models: Mapping[str, CoxModel], frame: pd.DataFrame, times: Sequence[float]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{model: (risk, survival)}`` over ``frame``'s rows: the linear predictor and the
    predicted recurrence-free probability at each of ``times`` (n x len(times))."""
    out = {}
    for name, model in models.items():
        x = model.matrix(frame)
        out[name] = (
            np.asarray(cox.predict_risk(model.fit, x), dtype=float),
            np.asarray(cox.predict_survival(model.fit, x, list(times)), dtype=float),
        )
    return out


def predictions_table(
    frame: pd.DataFrame,
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]],
    times: Sequence[float],
    cutoffs: Mapping[str, float],
) -> pd.DataFrame:
    """Long table ``patient_id, split, model, risk, high_risk, rfs_<t>m...`` of the Cox models
    (the predicted recurrence-free probability at each metric time)."""
    rows = []
    for name, (risk, surv) in scores.items():
        part = pd.DataFrame(
            {
                "patient_id": frame["patient_id"].to_numpy(),
                "split": frame["split"].to_numpy(),
                "model": name,
                "risk": risk,
                "high_risk": (risk >= cutoffs[name]).astype(int),
            }
        )
        for j, t in enumerate(times):
            part[f"rfs_{t:g}m"] = surv[:, j]
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def cox_table(models: Mapping[str, CoxModel], frame: pd.DataFrame) -> pd.DataFrame:
    """Hazard ratios (per SD of each standardised predictor, 95% CI, Wald p) and the
    Schoenfeld-residual test (per variable and ``global``) of every Cox model."""
    train = frame[frame["split"] == "train"]
    parts = []
    for name, model in models.items():
        hr = cox.hazard_ratios(model.fit)
        ph = cox.ph_test(model.fit, model.matrix(train), train[TIME], train[EVENT])
        ph = ph.rename(columns={"statistic": "ph_statistic", "p": "ph_p"})
        table = hr.merge(ph, on="variable", how="outer")
        table["note"] = ""
        for column in model.constant:
            table.loc[len(table)] = {
                "variable": column,
                "note": "constant among the training patients: not estimable",
            }
        rank = {v: i for i, v in enumerate(model.features)}  # predictors' order, then global
        table = table.sort_values("variable", key=lambda v: v.map(rank).fillna(len(rank)))
        table = table.reset_index(drop=True)
        table.insert(0, "model", name)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def risk_cutoffs(frame: pd.DataFrame, scores: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """Each Cox model's Youden cutoff of its risk against ER on the tuning split."""
    tune = (frame["split"] == "tune").to_numpy()
    y = frame["er"].to_numpy()[tune]
    rows = []
    for name, (risk, _) in scores.items():
        try:
            cut = youden_cutoff(y, risk[tune])
        except RecurError as exc:
            raise RecurError(f"Cox model {name}, tuning split: {exc}") from None
        rows.append({"model": name, "cutoff": cut, "n_tune": int(tune.sum())})
    return pd.DataFrame(rows)


def ibs_columns(grid: Sequence[float], time: np.ndarray) -> list[int]:
    """The columns of the curve ``grid`` that the integrated Brier score of a cohort with
    follow-up ``time`` integrates over: from the cohort's 10th percentile of follow-up (so that
    nearly every bootstrap resample still reaches back to the first point) to before its
    longest follow-up."""
    if len(time) == 0:
        return []
    lo, hi = float(np.quantile(time, 0.10)), float(np.max(time))
    return [j for j, g in enumerate(grid) if lo <= g < hi]


def survival_table(
    frame: pd.DataFrame,
    cox_models: Mapping[str, tuple[np.ndarray, np.ndarray]],
    binary_models: Sequence[str],
    settings: SurvivalSettings,
    *,
    table2_resamples: int,
    seed: int,
    level: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(survival.csv, comparisons)`` over every cohort of :func:`cohort_masks`.

    ``cox_models``: ``{model: (risk, survival over settings.curve_grid())}`` on ``frame``'s
    rows; ``binary_models``: score columns of ``frame`` (their risk is the score; they have no
    survival function, so no Brier score). The CIs use the first ``settings.bootstrap`` of the
    ``table2_resamples`` stratified resamples Table 2 draws for the cohort (same seed), the same
    rows for every model. The comparisons are the paired differences of Harrell's C between
    every two Cox models and between each Cox model and its binary namesake.
    """
    grid = list(settings.curve_grid())
    train = (frame["split"] == "train").to_numpy()
    t_all, e_all = frame[TIME].to_numpy(float), frame[EVENT].to_numpy(int)
    risks: dict[tuple[str, str], np.ndarray] = {}
    survivals: dict[tuple[str, str], np.ndarray | None] = {}
    for name, (risk, surv) in cox_models.items():
        risks[(name, "cox")], survivals[(name, "cox")] = risk, surv
    for name in binary_models:
        risks[(name, "binary")] = frame[name].to_numpy(float)
        survivals[(name, "binary")] = None
    names = metrics.metric_names(settings.auc_months)
    rows, compare = [], []
    for ci, (cohort, mask) in enumerate(cohort_masks(frame).items()):
        if not mask.any():
            continue
        y = frame["er"].to_numpy(int)[mask]
        idx = stratified_indices(y, max(table2_resamples, settings.bootstrap), seed + ci)
        idx = idx[: settings.bootstrap]
        t, e = t_all[mask], e_all[mask]
        cols = ibs_columns(grid, t)
        common = dict(
            tau=ER_HORIZON_MONTHS,
            auc_times=settings.auc_months,
            survival_times=[grid[j] for j in cols] if len(cols) >= 2 else grid,
        )
        if len(cols) >= 2:
            survivals_c = {k: (None if v is None else v[:, cols]) for k, v in survivals.items()}
        else:
            survivals_c = survivals
        point = {
            key: metrics.metric_values(
                t_all[train],
                e_all[train],
                t,
                e,
                r[mask],
                survival=None if survivals_c[key] is None else survivals_c[key][mask],
                **common,
            )
            for key, r in risks.items()
        }
        boot = metrics.bootstrap_metrics(
            t_all[train],
            e_all[train],
            t,
            e,
            {key: r[mask] for key, r in risks.items()},
            {key: (None if s is None else s[mask]) for key, s in survivals_c.items()},
            idx,
            **common,
        )
        span = ""
        if len(cols) >= 2:
            span = f"integrated over {grid[cols[0]]:g}-{grid[cols[-1]]:g} months"
        for (name, kind), values in point.items():
            for metric in names:
                est, note = values[metric]
                if metric == "ibs" and np.isfinite(est):
                    note = span
                lo, hi, n_undef = percentile_ci(boot[(name, kind)][metric], est, level)
                rows.append(
                    {
                        "cohort": cohort,
                        "model": name,
                        "kind": kind,
                        "metric": metric,
                        "estimate": est,
                        "ci_low": lo,
                        "ci_high": hi,
                        "n": int(mask.sum()),
                        "n_events": int(e.sum()),
                        "n_undefined": n_undef,
                        "note": note,
                        "flag": few_events_flag(int(e.sum())),
                    }
                )
        pairs = list(itertools.combinations([k for k in risks if k[1] == "cox"], 2))
        pairs += [
            ((n, "cox"), (n, "binary")) for n, _ in cox_models.items() if (n, "binary") in risks
        ]
        for a, b in pairs:
            diff = point[a]["harrell_c"][0] - point[b]["harrell_c"][0]
            lo, hi, p = metrics.paired_c_difference(
                boot[a]["harrell_c"], boot[b]["harrell_c"], diff
            )
            compare.append(
                {
                    "cohort": cohort,
                    "model_a": f"{a[0]} ({a[1]})",
                    "model_b": f"{b[0]} ({b[1]})",
                    "metric": "harrell_c",
                    "difference": diff,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p": p,
                    "n": int(mask.sum()),
                    "n_events": int(e.sum()),
                    "flag": few_events_flag(int(e.sum())),
                }
            )
    return pd.DataFrame(rows, columns=list(SURVIVAL_COLUMNS)), pd.DataFrame(compare)


def survival_wide(long: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """survival.csv as one row per cohort, model and kind, one ``estimate [low, high]`` cell per
    metric (``undefined`` where it is, the reason in the notes column), then ``flag`` (a
    cohort with few RFS events, :func:`recur.evaluate.tables.few_events_flag`)."""
    from recur.evaluate.tables import format_estimate

    def cell(r: pd.Series) -> str:
        if not np.isfinite(r["estimate"]):
            return "undefined"
        return format_estimate(r["estimate"], r["ci_low"], r["ci_high"], digits)

    long = long.assign(cell=long.apply(cell, axis=1))
    wide = long.pivot_table(
        index=["cohort", "model", "kind"],
        columns="metric",
        values="cell",
        aggfunc="first",
        sort=False,
    )
    notes: dict[tuple, list[str]] = {}
    for r in long[long["note"].fillna("") != ""].itertuples():
        notes.setdefault((r.cohort, r.model, r.kind), []).append(f"{r.metric}: {r.note}")
    wide["notes"] = ["; ".join(notes.get(key, [])) for key in wide.index]
    flag = long["flag"] if "flag" in long.columns else pd.Series("", index=long.index)
    firsts = (
        long.assign(flag=flag.fillna("").astype(str))
        .groupby(["cohort", "model", "kind"], sort=False)["flag"]
        .first()
    )
    wide["flag"] = [firsts.get(key, "") for key in wide.index]
    order = [c for c in long["metric"].unique() if c in wide.columns] + ["notes", "flag"]
    return wide[order].reset_index()
