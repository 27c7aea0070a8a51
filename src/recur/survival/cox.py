"""Cox proportional-hazards models of recurrence-free survival (lifelines ``CoxPHFitter``).

The design is the logistic models' (:meth:`recur.models.tabular.TabularSettings.design`:
median imputation, ``log(1 + AFP)``, a DL signature as its log-odds, optional splines), then
standardised on the training patients (:func:`cox_design`): a hazard ratio is per standard
deviation of its predictor. The penalty is a ridge (L2) one; ties in time are handled by
Efron's method. Pure functions: DataFrames and arrays in, numbers and DataFrames out.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import proportional_hazard_test
from scipy import stats
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from recur.errors import RecurError
from recur.models.tabular import TabularSettings
from recur.survival.metrics import check_survival

#: Columns of :func:`hazard_ratios`.
HR_COLUMNS: tuple[str, ...] = ("variable", "hr", "ci_low", "ci_high", "p")
#: Columns of :func:`ph_test`.
PH_COLUMNS: tuple[str, ...] = ("variable", "statistic", "p")
#: The ``variable`` of the global row of :func:`ph_test`.
GLOBAL = "global"
#: The time transform of the Schoenfeld-residual test.
PH_TIME_TRANSFORM = "rank"
#: lifelines' Newton-Raphson stopping rules, tighter than its defaults (1e-7, 1e-9): with its
#: damped steps the defaults can stop ~1e-3 from the optimum of a flat partial likelihood.
FIT_OPTIONS = {"precision": 1e-10, "r_precision": 1e-12}
#: Names of the duration and event columns of the frame lifelines is fitted on.
_TIME, _EVENT = "__rfs_time__", "__rfs_event__"


def cox_design(settings: TabularSettings, features: Sequence[str]) -> Pipeline:
    """An unfitted pipeline: the tabular models' design of ``features``, then standardisation.

    Fit it on the training patients' ``X[features]`` (a DataFrame, columns in that order);
    it transforms to a DataFrame whose columns are the predictors' names (a splined predictor
    gives ``<name>_sp_<k>`` columns).
    """
    design = settings.design(list(features))
    design.set_params(verbose_feature_names_out=False)
    pipe = Pipeline([("design", design), ("scale", StandardScaler())])
    return pipe.set_output(transform="pandas")


def _frame(X: pd.DataFrame, time: object, event: object, who: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise RecurError(f"{who}: X must be a DataFrame with named predictors")
    t, e = check_survival(time, event, who)
    if len(X) != t.size:
        raise RecurError(f"{who}: X has {len(X)} rows but there are {t.size} times")
    clash = {_TIME, _EVENT} & set(map(str, X.columns))
    if clash:
        raise RecurError(f"{who}: predictor name(s) {sorted(clash)} are reserved")
    try:
        df = X.astype(float).reset_index(drop=True)
    except (TypeError, ValueError):
        raise RecurError(f"{who}: every predictor must be numeric") from None
    bad = [str(c) for c in df.columns if not np.isfinite(df[c]).all()]
    if bad:
        raise RecurError(f"{who}: predictor(s) {bad} hold missing or non-finite values")
    df[_TIME] = t
    df[_EVENT] = e.astype(int)
    return df


def fit_cox(X: pd.DataFrame, time: object, event: object, penalizer: float) -> CoxPHFitter:
    """A Cox model of ``time``/``event`` on the predictors ``X`` (numeric, no missing value),
    ridge-penalised with strength ``penalizer`` (lifelines' ``penalizer``, ``l1_ratio`` 0)."""
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise RecurError(f"penalizer must be finite and >= 0, got {penalizer}")
    df = _frame(X, time, event, "Cox model")
    if not df[_EVENT].any():
        raise RecurError("Cox model: no event among the training patients: cannot fit")
    cph = CoxPHFitter(penalizer=penalizer, l1_ratio=0.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cph.fit(df, duration_col=_TIME, event_col=_EVENT, fit_options=dict(FIT_OPTIONS))
    except ConvergenceError as exc:
        first = str(exc).strip().splitlines()[0]
        raise RecurError(f"Cox model: the fit did not converge ({first})") from None
    return cph


def hazard_ratios(cph: CoxPHFitter) -> pd.DataFrame:
    """Hazard ratio per predictor with its 95% Wald CI and p (columns :data:`HR_COLUMNS`).

    On a standardised design the ratio is per standard deviation of the predictor. With a
    penalty, the CI and p come from the penalised likelihood's curvature (lifelines).
    """
    s = cph.summary
    level = round(100 * (1 - cph.alpha))
    return pd.DataFrame(
        {
            "variable": s.index.astype(str),
            "hr": s["exp(coef)"].to_numpy(float),
            "ci_low": s[f"exp(coef) lower {level}%"].to_numpy(float),
            "ci_high": s[f"exp(coef) upper {level}%"].to_numpy(float),
            "p": s["p"].to_numpy(float),
        }
    )


def ph_test(cph: CoxPHFitter, X: pd.DataFrame, time: object, event: object) -> pd.DataFrame:
    """Schoenfeld-residual test of proportional hazards, per predictor and global.

    ``X``, ``time``, ``event``: the data ``cph`` was fitted on. Per predictor: lifelines'
    ``proportional_hazard_test`` (time transform :data:`PH_TIME_TRANSFORM`), a 1-df chi-square.
    Global (row :data:`GLOBAL`): Grambsch & Therneau's p-df chi-square on the same scaled
    Schoenfeld residuals ``R`` and centred transformed event times ``g``:
    ``(g'R) V^-1 (g'R)' / (d g'g)``, ``V`` the coefficients' covariance and ``d`` the number of
    events (lifelines gives no global test). Columns :data:`PH_COLUMNS`.
    """
    df = _frame(X, time, event, "PH test")
    if len(df) != len(cph.durations):
        raise RecurError(
            f"PH test: {len(df)} patients given, the model was fitted on {len(cph.durations)}"
        )
    names = list(cph.params_.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resid = cph.compute_residuals(df, kind="scaled_schoenfeld")[names]
        res = proportional_hazard_test(
            cph, df, time_transform=PH_TIME_TRANSFORM, precomputed_residuals=resid
        )
    per = res.summary.reindex(names)
    # the transformed event times, in the order lifelines gives the residuals (sorted by time)
    events = cph.event_observed
    g = np.cumsum(events.to_numpy())[events.to_numpy().astype(bool)].astype(float)
    g -= g.mean()
    gr = g @ resid.to_numpy()
    v = cph.variance_matrix_.loc[names, names].to_numpy()
    d = float(events.sum())
    stat = float(gr @ np.linalg.solve(v, gr) / (d * (g @ g)))
    rows = pd.DataFrame(
        {
            "variable": [*names, GLOBAL],
            "statistic": [*per["test_statistic"].to_numpy(float), stat],
            "p": [*per["p"].to_numpy(float), float(stats.chi2.sf(stat, len(names)))],
        }
    )
    return rows


def predict_risk(cph: CoxPHFitter, X: pd.DataFrame) -> np.ndarray:
    """The linear predictor (log partial hazard, centred on the training means) of each row:
    higher means a higher hazard."""
    return cph.predict_log_partial_hazard(_predictors(cph, X)).to_numpy(dtype=float)


def predict_survival(cph: CoxPHFitter, X: pd.DataFrame, times: Sequence[float]) -> np.ndarray:
    """``(n, len(times))`` predicted probabilities of being event-free at each of ``times``.

    lifelines' Breslow baseline, interpolated linearly between the training follow-up times
    (and constant beyond the longest).
    """
    t = np.asarray(times, dtype=float)
    if t.ndim != 1 or t.size == 0 or (np.diff(t) <= 0).any() or (t < 0).any():
        raise RecurError("survival times must be a non-empty increasing sequence of values >= 0")
    sf = cph.predict_survival_function(_predictors(cph, X), times=t)
    return sf.to_numpy(dtype=float).T


def _predictors(cph: CoxPHFitter, X: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise RecurError("X must be a DataFrame with the model's predictors")
    names = list(cph.params_.index)
    missing = [c for c in names if c not in X.columns]
    if missing:
        raise RecurError(f"predictor column(s) missing: {missing}")
    x = X[names].astype(float).reset_index(drop=True)
    if not np.isfinite(x.to_numpy()).all():
        raise RecurError("predictors hold missing or non-finite values")
    return x


class CoxRecord:
    """A fitted Cox model reduced to what scoring needs, storable as JSON: the coefficients,
    the training means lifelines centres the predictors on, and the Breslow baseline
    cumulative hazard at fixed times (:func:`cox_record`).

    It answers ``params_``, ``predict_log_partial_hazard`` and ``predict_survival_function``
    as lifelines' ``CoxPHFitter`` does, so :func:`predict_risk` and :func:`predict_survival`
    score with either; the survival is given only at the recorded times (no extrapolation
    from a grid). It holds no patient-level data: aggregate numbers at the recorded times.
    """

    def __init__(
        self,
        names: Sequence[str],
        coef: Sequence[float],
        means: Sequence[float],
        times: Sequence[float],
        cumhaz: Sequence[float],
    ):
        self.names = [str(n) for n in names]
        self.coef = np.asarray(coef, dtype=float)
        self.means = np.asarray(means, dtype=float)
        self.times = np.asarray(times, dtype=float)
        self.cumhaz = np.asarray(cumhaz, dtype=float)
        n = len(self.names)
        if self.coef.shape != (n,) or self.means.shape != (n,):
            raise RecurError("Cox record: coefficients and means must match the predictors")
        if self.times.shape != self.cumhaz.shape or self.times.ndim != 1:
            raise RecurError("Cox record: baseline times and cumulative hazards must match")
        if not (np.isfinite(self.coef).all() and np.isfinite(self.cumhaz).all()):
            raise RecurError("Cox record: non-finite coefficient or baseline hazard")

    @property
    def params_(self) -> pd.Series:
        return pd.Series(self.coef, index=self.names)

    def predict_log_partial_hazard(self, X: pd.DataFrame) -> pd.Series:
        """``(x - mean) . coef`` per row (lifelines' linear predictor)."""
        x = X[self.names].to_numpy(dtype=float)
        return pd.Series(np.dot(x - self.means, self.coef), index=X.index)

    def predict_survival_function(self, X: pd.DataFrame, times: Sequence[float]) -> pd.DataFrame:
        """``exp(-H0(t) exp(lp))``, times x rows (lifelines' layout); ``times`` must be among
        the recorded ones."""
        t = np.atleast_1d(np.asarray(times, dtype=float))
        hit = np.isclose(t[:, None], self.times[None, :], rtol=0, atol=1e-9)
        if not hit.any(axis=1).all():
            missing = [float(v) for v in t[~hit.any(axis=1)]]
            raise RecurError(
                f"Cox record: no baseline hazard at {missing} months (recorded: "
                f"{[float(v) for v in self.times]})"
            )
        pos = hit.argmax(axis=1)
        v = np.exp(self.predict_log_partial_hazard(X)).to_numpy()
        c0 = np.tile(self.cumhaz[pos], (len(X), 1)).T
        return np.exp(-pd.DataFrame(c0 * v, columns=X.index, index=t))

    def to_dict(self) -> dict:
        return {
            "predictors": self.names,
            "coef": self.coef.tolist(),
            "means": self.means.tolist(),
            "baseline_months": self.times.tolist(),
            "baseline_cumulative_hazard": self.cumhaz.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CoxRecord:
        try:
            return cls(
                d["predictors"],
                d["coef"],
                d["means"],
                d["baseline_months"],
                d["baseline_cumulative_hazard"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecurError(f"Cox record: unreadable ({exc})") from None


def cox_record(cph: CoxPHFitter, times: Sequence[float]) -> CoxRecord:
    """The :class:`CoxRecord` of a lifelines fit, its baseline cumulative hazard taken at
    ``times`` as lifelines takes it (linear interpolation between the training times)."""
    from lifelines.utils import interpolate_at_times

    t = np.unique(np.asarray(times, dtype=float))
    h0 = interpolate_at_times(cph.baseline_cumulative_hazard_, t)
    return CoxRecord(
        list(cph.params_.index), cph.params_.to_numpy(float), cph._norm_mean.to_numpy(float), t, h0
    )
