"""Censoring-aware performance of risk scores for recurrence-free survival (RFS).

Pure functions over numpy arrays; the estimators are scikit-survival's
(:mod:`sksurv.metrics`). Conventions:

* ``time`` is the follow-up (finite, > 0), ``event`` 1 for recurrence (or death), 0 for
  censoring; ``risk`` a score where **higher means an earlier event** (a Cox linear predictor,
  an ER probability); ``survival`` a matrix of predicted survival probabilities, one row per
  patient and one column per time of a grid.
* The censoring distribution behind the IPCW metrics (Uno's C, cumulative/dynamic AUC, the
  integrated Brier score) is the Kaplan-Meier estimate of the **training** cohort, whatever
  cohort is evaluated; a bootstrap resamples the evaluated cohort only.
* A metric that is undefined on a cohort (no event before the horizon, nobody followed beyond
  it, censoring weights unknown, fewer than 2 patients) is **NaN** with the reason, never 0
  (:class:`Value`). A patient followed beyond the last time a metric looks at carries no
  weight it uses: such follow-up is never a reason for NaN.
* Bootstrap resamples come from the caller (:func:`recur.evaluate.metrics.stratified_indices`)
  and every model of a cohort is evaluated on the same rows (paired comparisons).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from sklearn import config_context
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import CensoringDistributionEstimator

from recur.errors import RecurError
from recur.evaluate.metrics import percentile_ci

#: Unit of the follow-up times, as written in the reasons of undefined metrics.
TIME_UNIT = "months"
#: Reason given for the IBS of a model that predicts a score, not a survival function.
NOT_A_SURVIVAL_FUNCTION = "a score, not a survival function"


class Value(NamedTuple):
    """A metric's value and, when it is undefined (``value`` NaN), the reason why."""

    value: float
    reason: str = ""


def _nan(reason: str) -> Value:
    return Value(math.nan, reason)


def _fmt(t: float) -> str:
    return f"{t:g}"


def td_auc_name(t: float) -> str:
    """The metric name of the cumulative/dynamic AUC at ``t`` (``td_auc_12``)."""
    return f"td_auc_{_fmt(t)}"


def metric_names(auc_times: Sequence[float]) -> list[str]:
    """The keys of :func:`metric_values`, in reporting order."""
    return ["harrell_c", "uno_c", *(td_auc_name(t) for t in auc_times), "ibs"]


# --------------------------------------------------------------------------- input checks
def check_survival(
    time: object, event: object, who: str, ids: Sequence | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``time`` as finite float > 0 and ``event`` as bool, both 1-D of one length.

    ``who`` names the data in the message (``"test cohort"``); ``ids`` (patient ids, same
    order) names the first offending patient, else its row number.
    """
    t = np.asarray(time)
    e = np.asarray(event)
    if t.ndim != 1 or e.ndim != 1 or t.size != e.size:
        raise RecurError(
            f"{who}: time and event must be 1-D of one length, got {t.shape} and {e.shape}"
        )
    if t.size == 0:
        raise RecurError(f"{who}: no patient")
    if ids is not None:
        ids = np.asarray(ids)
        if ids.shape != t.shape:
            raise RecurError(f"{who}: {ids.size} patient ids for {t.size} times")

    def name(i: int) -> str:
        return f"patient {ids[i]}" if ids is not None else f"row {i}"

    try:
        tf = t.astype(float)
        ef = e.astype(float)
    except (TypeError, ValueError):
        raise RecurError(f"{who}: time and event must be numbers") from None
    bad = ~(np.isfinite(tf) & (tf > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RecurError(
            f"{who}: {name(i)} has follow-up time {t[i]} (must be finite and > 0); "
            f"{int(bad.sum())} such patient(s)"
        )
    bad = ~np.isin(ef, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RecurError(
            f"{who}: {name(i)} has event {e[i]} (must be 0 = censored or 1 = event); "
            f"{int(bad.sum())} such patient(s)"
        )
    return tf, ef.astype(bool)


def _check_risk(risk: object, n: int, who: str) -> np.ndarray:
    r = np.asarray(risk, dtype=float)
    if r.ndim != 1 or r.size != n:
        raise RecurError(f"{who}: risk must be 1-D of length {n}, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise RecurError(f"{who}: risk holds {int((~np.isfinite(r)).sum())} non-finite value(s)")
    return r


def _check_grid(times: object, who: str, *, increasing: bool) -> np.ndarray:
    g = np.atleast_1d(np.asarray(times, dtype=float))
    if g.ndim != 1 or g.size == 0 or not np.isfinite(g).all() or (g <= 0).any():
        raise RecurError(f"{who}: times must be a 1-D sequence of finite values > 0")
    if increasing and (g.size < 2 or (np.diff(g) <= 0).any()):
        raise RecurError(f"{who}: times must hold at least 2 strictly increasing values")
    return g


def _check_survival_matrix(survival: object, n: int, k: int, who: str) -> np.ndarray:
    s = np.asarray(survival, dtype=float)
    if s.shape != (n, k):
        raise RecurError(f"{who}: survival must have shape ({n}, {k}), got {s.shape}")
    if not (np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()):
        raise RecurError(f"{who}: survival probabilities must lie in [0, 1]")
    return s


def _structured(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """The (event, time) structured array scikit-survival takes."""
    y = np.empty(time.size, dtype=[("event", bool), ("time", float)])
    y["event"] = event
    y["time"] = time
    return y


# --------------------------------------------------------------------------- evaluation plan
def _common_reason(time: np.ndarray, event: np.ndarray) -> str:
    if time.size < 2:
        return "fewer than 2 patients"
    if not event.any():
        return "no events"
    return ""


def _harrell(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> Value:
    reason = _common_reason(time, event)
    if reason:
        return _nan(reason)
    try:
        c = concordance_index_censored(event, time, risk)[0]
    except NoComparablePairException:
        return _nan("no comparable pairs")
    except (ValueError, ZeroDivisionError) as exc:
        return _nan(f"undefined ({exc})")
    return Value(float(c)) if np.isfinite(c) else _nan("no comparable pairs")


class _Training:
    """The training cohort's censoring distribution (Kaplan-Meier), fitted once."""

    def __init__(self, time: np.ndarray, event: np.ndarray, unit: str) -> None:
        self.y = _structured(time, event)
        self.last = float(time.max())
        self.unit = unit
        self.cens = CensoringDistributionEstimator().fit(self.y)

    def weights_defined(self, y: np.ndarray) -> bool:
        """Whether the censoring weight of every event of ``y`` is known and finite."""
        try:
            self.cens.predict_ipcw(y)
        except ValueError:
            return False
        return True

    def survives(self, t: float) -> bool:
        """Whether the censoring survival function is known and > 0 at ``t``."""
        try:
            return bool(self.cens.predict_proba(np.array([t]))[0] > 0)
        except ValueError:
            return False

    def unknown(self, what: str) -> str:
        return (
            f"censoring weights unknown at {what} (the training cohort's follow-up ends at "
            f"{_fmt(self.last)} {self.unit})"
        )


class _Cohort:
    """One evaluated cohort (or resample): what every metric needs, model-independent.

    The per-metric inputs are prepared once, so that evaluating several models on the same
    rows repeats only scikit-survival's own computation.
    """

    def __init__(
        self,
        train: _Training,
        time: np.ndarray,
        event: np.ndarray,
        tau: float | None,
        auc_times: np.ndarray,
        grid: np.ndarray | None,
    ) -> None:
        self.train = train
        self.time = time
        self.event = event
        self.n = time.size
        unit = train.unit
        self.common = _common_reason(time, event)
        # Uno's C: only events before tau are weighted (sksurv truncates the same way)
        self.uno_reason = self.common
        self.uno_y = None
        if not self.common:
            e_tau = event if tau is None else event & (time < tau)
            y_tau = _structured(time, e_tau)
            if not e_tau.any():
                self.uno_reason = f"no event before {_fmt(tau)} {unit}"
            elif not train.weights_defined(y_tau):
                where = "an event" if tau is None else f"an event before {_fmt(tau)} {unit}"
                self.uno_reason = train.unknown(where)
            else:
                self.uno_y = y_tau
        # cumulative/dynamic AUC: cases are events by t, controls anyone followed beyond t
        self.auc_reasons: dict[float, str] = {}
        for t in np.unique(auc_times):
            if self.common:
                reason = self.common
            elif not (event & (time <= t)).any():
                reason = f"no event by {_fmt(t)} {unit}"
            elif not (time > t).any():
                reason = f"no patient followed beyond {_fmt(t)} {unit}"
            elif not train.weights_defined(_structured(time, event & (time <= t))):
                reason = train.unknown(f"an event by {_fmt(t)} {unit}")
            else:
                reason = ""
            self.auc_reasons[float(t)] = reason
        self.auc_times = np.array([t for t, r in self.auc_reasons.items() if not r])
        self.auc_y = None
        if self.auc_times.size:
            # events after the last horizon are controls whatever their status: their censoring
            # weight, which sksurv would otherwise compute, is unused
            self.auc_y = _structured(time, event & (time <= self.auc_times.max()))
        # integrated Brier score over the grid
        self.ibs_reason = self.common
        self.ibs_y = None
        if grid is not None and not self.common:
            lo, hi = float(time.min()), float(time.max())
            if grid[0] < lo or grid[-1] >= hi:
                self.ibs_reason = (
                    f"the IBS grid {_fmt(grid[0])}-{_fmt(grid[-1])} {unit} is not within the "
                    f"follow-up [{_fmt(lo)}, {_fmt(hi)}) {unit}"
                )
            elif not train.survives(grid[-1]):
                self.ibs_reason = train.unknown(f"{_fmt(grid[-1])} {unit}")
            else:
                # patients followed beyond the grid are controls at every grid time: capping
                # their time within the training follow-up leaves the score unchanged and keeps
                # sksurv from asking the censoring distribution beyond its range
                t_cap = time
                if grid[-1] < train.last:
                    t_cap = np.where(time > grid[-1], np.minimum(time, train.last), time)
                self.ibs_y = _structured(t_cap, event)

    # each metric: NaN with a reason when undefined; sksurv's own refusal is a reason too
    def harrell(self, risk: np.ndarray) -> Value:
        return _harrell(self.time, self.event, risk)

    def uno(self, risk: np.ndarray, tau: float | None) -> Value:
        if self.uno_y is None:
            return _nan(self.uno_reason)
        try:
            c = concordance_index_ipcw(self.train.y, self.uno_y, risk, tau=tau)[0]
        except NoComparablePairException:
            return _nan("no comparable pairs")
        except (ValueError, ZeroDivisionError) as exc:
            return _nan(f"undefined ({exc})")
        return Value(float(c)) if np.isfinite(c) else _nan("no comparable pairs")

    def td_auc(self, risk: np.ndarray, times: np.ndarray) -> list[Value]:
        values = {t: _nan(r) for t, r in self.auc_reasons.items() if r}
        if self.auc_y is not None:
            try:
                auc, _ = cumulative_dynamic_auc(self.train.y, self.auc_y, risk, self.auc_times)
            except (ValueError, ZeroDivisionError) as exc:
                auc = np.full(self.auc_times.size, np.nan)
                values.update({float(t): _nan(f"undefined ({exc})") for t in self.auc_times})
            for t, a in zip(self.auc_times, auc, strict=True):
                if float(t) not in values:
                    values[float(t)] = Value(float(a)) if np.isfinite(a) else _nan("undefined")
        return [values[float(t)] for t in times]

    def ibs(self, survival: np.ndarray | None, grid: np.ndarray | None) -> Value:
        if survival is None or grid is None:
            return _nan(NOT_A_SURVIVAL_FUNCTION)
        if self.ibs_y is None:
            return _nan(self.ibs_reason)
        try:
            v = integrated_brier_score(self.train.y, self.ibs_y, survival, grid)
        except (ValueError, ZeroDivisionError) as exc:
            return _nan(f"undefined ({exc})")
        return Value(float(v)) if np.isfinite(v) else _nan("undefined")


def _prepare(
    train_time: object,
    train_event: object,
    time: object,
    event: object,
    *,
    tau: float | None = None,
    auc_times: Sequence[float] = (),
    grid: object = None,
    unit: str = TIME_UNIT,
) -> tuple[_Cohort, np.ndarray, np.ndarray | None]:
    tt, te = check_survival(train_time, train_event, "training cohort")
    t, e = check_survival(time, event, "evaluated cohort")
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise RecurError(f"tau must be finite and > 0, got {tau}")
    times = _check_grid(auc_times, "td-AUC", increasing=False) if len(auc_times) else np.empty(0)
    g = None if grid is None else _check_grid(grid, "IBS", increasing=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cohort = _Cohort(_Training(tt, te, unit), t, e, tau, times, g)
    return cohort, times, g


# --------------------------------------------------------------------------- metrics
def harrell_c(time: object, event: object, risk: object) -> float:
    """Harrell's concordance index (sksurv ``concordance_index_censored``).

    A pair is comparable when the shorter time is an event (an event tied in time with a
    censoring counts as shorter); it is concordant when that patient has the higher risk, and a
    tie in risk counts 1/2. NaN with fewer than 2 patients, no event or no comparable pair.
    """
    t, e = check_survival(time, event, "harrell_c")
    r = _check_risk(risk, t.size, "harrell_c")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _harrell(t, e, r).value


def uno_c(
    train_time: object,
    train_event: object,
    time: object,
    event: object,
    risk: object,
    tau: float | None,
) -> float:
    """Uno's IPCW concordance index truncated at ``tau`` (sksurv ``concordance_index_ipcw``).

    Only pairs whose shorter time is an event before ``tau`` count, weighted by the inverse
    squared censoring survival of the training cohort at that time (``tau`` None: no
    truncation). NaN when no event falls before ``tau`` or a weight is unknown (an event beyond
    the training cohort's follow-up).
    """
    cohort, _, _ = _prepare(train_time, train_event, time, event, tau=tau)
    r = _check_risk(risk, cohort.n, "uno_c")
    return cohort.uno(r, tau).value


def td_auc(
    train_time: object,
    train_event: object,
    time: object,
    event: object,
    risk: object,
    times: Sequence[float],
) -> np.ndarray:
    """Cumulative/dynamic AUC at each of ``times`` (sksurv ``cumulative_dynamic_auc``).

    Cases: events by ``t`` (weighted by the training cohort's inverse censoring survival);
    controls: patients followed beyond ``t``. NaN at a time with no case, no control or an
    unknown weight.
    """
    cohort, g, _ = _prepare(train_time, train_event, time, event, auc_times=times)
    r = _check_risk(risk, cohort.n, "td_auc")
    return np.array([v.value for v in cohort.td_auc(r, g)])


def integrated_brier(
    train_time: object,
    train_event: object,
    time: object,
    event: object,
    survival: object,
    times: Sequence[float],
) -> float:
    """Integrated Brier score over ``times`` (sksurv ``integrated_brier_score``).

    ``survival[i, j]`` is patient ``i``'s predicted probability of being event-free at
    ``times[j]`` (at least 2 strictly increasing times). NaN when the grid is not within the
    cohort's follow-up (scikit-survival's range: first time >= the shortest follow-up, last <
    the longest) or the training censoring survival is 0 or unknown at its end.
    """
    cohort, _, g = _prepare(train_time, train_event, time, event, grid=times)
    s = _check_survival_matrix(survival, cohort.n, g.size, "integrated_brier")
    return cohort.ibs(s, g).value


def metric_values(
    train_time: object,
    train_event: object,
    time: object,
    event: object,
    risk: object,
    *,
    tau: float | None,
    auc_times: Sequence[float],
    survival: object = None,
    survival_times: Sequence[float] | None = None,
    unit: str = TIME_UNIT,
) -> dict[str, Value]:
    """Every metric of one model on one cohort, keyed as :func:`metric_names`.

    ``harrell_c``, ``uno_c`` (truncated at ``tau``), ``td_auc_<t>`` for each ``t`` of
    ``auc_times`` and ``ibs`` over ``survival_times`` (only with a ``survival`` matrix; a model
    without one gets NaN, :data:`NOT_A_SURVIVAL_FUNCTION`). Each is a :class:`Value`: the
    number, or NaN and the reason it is undefined.
    """
    if survival is not None and survival_times is None:
        raise RecurError("a survival matrix needs its survival_times")
    grid = survival_times if survival is not None else None
    cohort, times, g = _prepare(
        train_time, train_event, time, event, tau=tau, auc_times=auc_times, grid=grid, unit=unit
    )
    r = _check_risk(risk, cohort.n, "metric_values")
    s = None if g is None else _check_survival_matrix(survival, cohort.n, g.size, "ibs")
    return _evaluate(cohort, r, s, tau, times, g)


def _evaluate(
    cohort: _Cohort,
    risk: np.ndarray,
    survival: np.ndarray | None,
    tau: float | None,
    times: np.ndarray,
    grid: np.ndarray | None,
) -> dict[str, Value]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"harrell_c": cohort.harrell(risk), "uno_c": cohort.uno(risk, tau)}
        for t, v in zip(times, cohort.td_auc(risk, times), strict=True):
            out[td_auc_name(t)] = v
        out["ibs"] = cohort.ibs(survival, grid)
    return out


# --------------------------------------------------------------------------- bootstrap
def bootstrap_metrics(
    train_time: object,
    train_event: object,
    time: object,
    event: object,
    risks: Mapping[str, object],
    survivals: Mapping[str, object | None] | None,
    idx: np.ndarray,
    *,
    tau: float | None,
    auc_times: Sequence[float],
    survival_times: Sequence[float] | None = None,
    unit: str = TIME_UNIT,
) -> dict[str, dict[str, np.ndarray]]:
    """Every metric of every model on each resample of the evaluated cohort.

    ``idx`` is ``(n_boot, n)`` row indices into the cohort (e.g.
    :func:`recur.evaluate.metrics.stratified_indices`); every model is evaluated on the same
    rows of each resample, so that differences between models are paired. The training cohort
    (censoring distribution) is not resampled. Returns ``{model: {metric: (n_boot,) array}}``,
    NaN where a metric is undefined on a resample.
    """
    tt, te = check_survival(train_time, train_event, "training cohort")
    t, e = check_survival(time, event, "evaluated cohort")
    idx = np.asarray(idx)
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise RecurError(f"idx must be a 2-D integer array, got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= t.size):
        raise RecurError(f"idx holds row indices outside 0..{t.size - 1}")
    times = _check_grid(auc_times, "td-AUC", increasing=False) if len(auc_times) else np.empty(0)
    survivals = survivals or {}
    r = {m: _check_risk(v, t.size, f"model {m}") for m, v in risks.items()}
    has_surv = {m: survivals.get(m) is not None for m in r}
    g = None
    if any(has_surv.values()):
        if survival_times is None:
            raise RecurError("survival matrices need their survival_times")
        g = _check_grid(survival_times, "IBS", increasing=True)
    s = {
        m: _check_survival_matrix(survivals[m], t.size, g.size, f"model {m}")
        for m in r
        if has_surv[m]
    }
    train = _Training(tt, te, unit)
    names = metric_names(times)
    out = {m: {k: np.full(idx.shape[0], np.nan) for k in names} for m in r}
    # inputs checked above: sklearn's finiteness checks inside sksurv are skipped
    with warnings.catch_warnings(), np.errstate(all="ignore"), config_context(assume_finite=True):
        warnings.simplefilter("ignore", RuntimeWarning)
        for b, rows in enumerate(idx):
            cohort = _Cohort(train, t[rows], e[rows], tau, times, g)
            for m, risk in r.items():
                surv = s[m][rows] if m in s else None
                vals = _evaluate(cohort, risk[rows], surv, tau, times, g if m in s else None)
                for k, v in vals.items():
                    out[m][k][b] = v.value
    return out


def paired_c_difference(
    values_a: np.ndarray, values_b: np.ndarray, estimate_diff: float, level: float = 0.95
) -> tuple[float, float, float]:
    """Percentile CI and two-sided bootstrap p of a paired difference of a metric (a - b).

    ``values_a``, ``values_b``: the metric of two models on the same resamples (from
    :func:`bootstrap_metrics`); resamples where either is NaN are dropped. The CI is the
    percentile interval of the per-resample differences, widened to hold ``estimate_diff``
    (:func:`recur.evaluate.metrics.percentile_ci`); p = min(1, 2 min(P(d <= 0), P(d >= 0))).
    All NaN when no resample defines both.
    """
    a = np.asarray(values_a, dtype=float)
    b = np.asarray(values_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise RecurError(f"paired values must be 1-D of one length, got {a.shape} and {b.shape}")
    d = a - b
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan, math.nan, math.nan
    lo, hi, _ = percentile_ci(d, estimate_diff, level)
    p = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return lo, hi, p
