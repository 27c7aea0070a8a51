"""recur.survival.cox: hazard ratios against a closed form and statsmodels, the PH test, the
predictions against the Breslow estimator, the design."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter
from scipy import stats

from recur.constants import CLINICAL_FEATURES
from recur.errors import RecurError
from recur.models.tabular import TabularSettings, clipped_logit
from recur.survival import cox


def _two_groups(seed=0, n=80):
    """A binary predictor with a true hazard ratio of 2, some ties in time, censoring."""
    rng = np.random.default_rng(seed)
    x = np.repeat([0.0, 1.0], n // 2)
    t_event = rng.exponential(20 / np.where(x == 1, 2.0, 1.0))
    t_cens = rng.uniform(5, 60, n)
    time = np.ceil(np.minimum(t_event, t_cens))  # whole months: ties
    event = (t_event <= t_cens).astype(int)
    return pd.DataFrame({"x": x}), time, event


def test_hazard_ratio_closed_form():
    # A (x=1) event at 1, B (x=0) event at 2, C (x=1) censored at 3. Partial likelihood
    # L(b) = e^b / (2e^b + 1) * 1 / (e^b + 1); d log L / db = 0 gives
    # (2x+1)(x+1) - 2x(x+1) - x(2x+1) = 1 - 2x^2 = 0 with x = e^b: HR = 1/sqrt(2).
    X = pd.DataFrame({"x": [1.0, 0.0, 1.0]})
    cph = cox.fit_cox(X, [1.0, 2.0, 3.0], [1, 1, 0], penalizer=0.0)
    hr = cox.hazard_ratios(cph)
    assert hr["hr"].iloc[0] == pytest.approx(1 / math.sqrt(2), rel=1e-6)


def test_hazard_ratio_equals_lifelines_and_statsmodels():
    X, time, event = _two_groups()
    cph = cox.fit_cox(X, time, event, penalizer=0.0)
    hr = cox.hazard_ratios(cph)
    assert list(hr.columns) == list(cox.HR_COLUMNS)
    assert hr["variable"].tolist() == ["x"]
    # lifelines itself
    ref = CoxPHFitter().fit(X.assign(T=time, E=event), "T", "E").summary.loc["x"]
    assert hr["hr"].iloc[0] == pytest.approx(ref["exp(coef)"], rel=1e-6)
    # an independent implementation: statsmodels PHReg, Efron's ties
    sm_fit = sm.PHReg(time, X[["x"]].to_numpy(), status=event, ties="efron").fit()
    assert hr["hr"].iloc[0] == pytest.approx(math.exp(sm_fit.params[0]), rel=1e-5)
    lo, hi = np.exp(sm_fit.conf_int()[0])
    assert hr["ci_low"].iloc[0] == pytest.approx(lo, rel=1e-4)
    assert hr["ci_high"].iloc[0] == pytest.approx(hi, rel=1e-4)
    assert hr["p"].iloc[0] == pytest.approx(sm_fit.pvalues[0], rel=1e-3)
    assert 1.3 < hr["hr"].iloc[0] < 3.5  # the simulated ratio is 2


def test_penalizer_shrinks_towards_one():
    X, time, event = _two_groups()
    hrs = [cox.hazard_ratios(cox.fit_cox(X, time, event, p))["hr"].iloc[0] for p in (0, 0.5, 5)]
    assert hrs[0] > hrs[1] > hrs[2] > 1.0


def test_fit_cox_refuses_bad_input():
    X, time, event = _two_groups()
    with pytest.raises(RecurError, match="no event"):
        cox.fit_cox(X, time, np.zeros_like(event), 0.1)
    with pytest.raises(RecurError, match="missing or non-finite"):
        cox.fit_cox(X.assign(x=np.where(np.arange(len(X)) == 3, np.nan, X["x"])), time, event, 0.1)
    with pytest.raises(RecurError, match="follow-up time 0"):
        cox.fit_cox(X, np.where(np.arange(len(X)) == 0, 0.0, time), event, 0.1)
    with pytest.raises(RecurError, match="rows"):
        cox.fit_cox(X.iloc[:-1], time, event, 0.1)
    with pytest.raises(RecurError, match="penalizer"):
        cox.fit_cox(X, time, event, -1.0)


def _three_predictors(seed=1, n=120):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    lp = 0.7 * X["a"] - 0.4 * X["b"]
    t_event = rng.exponential(20 * np.exp(-lp))
    t_cens = rng.uniform(5, 60, n)
    return X, np.minimum(t_event, t_cens), (t_event <= t_cens).astype(int)


def test_ph_test_per_variable_and_global():
    X, time, event = _three_predictors()
    cph = cox.fit_cox(X, time, event, penalizer=0.0)
    ph = cox.ph_test(cph, X, time, event)
    assert list(ph.columns) == list(cox.PH_COLUMNS)
    assert ph["variable"].tolist() == ["a", "b", "c", cox.GLOBAL]
    # per variable: lifelines' own test
    from lifelines.statistics import proportional_hazard_test

    df = X.assign(__rfs_time__=time, __rfs_event__=event)
    ref = proportional_hazard_test(cph, df, time_transform="rank").summary
    np.testing.assert_allclose(ph["statistic"][:3], ref.loc[["a", "b", "c"], "test_statistic"])
    np.testing.assert_allclose(ph["p"][:3], ref.loc[["a", "b", "c"], "p"])
    # global: Grambsch & Therneau's form on the unscaled Schoenfeld residuals S,
    # (g'S) V (g'S)' d / g'g with p degrees of freedom (the old R cox.zph)
    s = cph.compute_residuals(df, kind="schoenfeld")[["a", "b", "c"]].to_numpy()
    ev = cph.event_observed.to_numpy().astype(bool)
    g = np.cumsum(ev)[ev].astype(float)
    g -= g.mean()
    u = g @ s
    v = cph.variance_matrix_.to_numpy()
    expected = float(u @ v @ u) * ev.sum() / (g @ g)
    assert ph["statistic"].iloc[-1] == pytest.approx(expected, rel=1e-6)
    assert ph["p"].iloc[-1] == pytest.approx(stats.chi2.sf(expected, 3))


def test_ph_test_global_of_one_predictor_is_the_per_variable_test():
    X, time, event = _two_groups()
    cph = cox.fit_cox(X, time, event, penalizer=0.0)
    ph = cox.ph_test(cph, X, time, event)
    assert ph["statistic"].iloc[1] == pytest.approx(ph["statistic"].iloc[0], rel=1e-8)
    assert ph["p"].iloc[1] == pytest.approx(ph["p"].iloc[0], rel=1e-8)
    with pytest.raises(RecurError, match="fitted on"):
        cox.ph_test(cph, X.iloc[:-1], time[:-1], event[:-1])


def test_predictions_follow_the_breslow_estimator():
    X, time, event = _three_predictors()
    cph = cox.fit_cox(X, time, event, penalizer=0.0)
    beta = cph.params_[["a", "b", "c"]].to_numpy()
    lp = cox.predict_risk(cph, X)
    # the linear predictor, centred on the training means
    np.testing.assert_allclose(lp, (X - X.mean()).to_numpy() @ beta)
    # Breslow by hand at three event times (no ties: continuous times)
    ts = np.sort(time[event == 1])[[3, 20, 40]]
    h0 = [
        sum(1 / np.exp(lp[time >= u]).sum() for u in time[(event == 1) & (time <= s)]) for s in ts
    ]
    expected = np.exp(-np.outer(np.exp(lp), h0))
    surv = cox.predict_survival(cph, X, ts)
    assert surv.shape == (len(X), 3)
    np.testing.assert_allclose(surv, expected, rtol=1e-6)
    # new patients: only the predictors, in any column order
    new = X.iloc[:5][["c", "a", "b"]].assign(extra=1.0)
    np.testing.assert_allclose(cox.predict_risk(cph, new), lp[:5])
    with pytest.raises(RecurError, match="missing"):
        cox.predict_risk(cph, X[["a", "b"]])
    with pytest.raises(RecurError, match="increasing"):
        cox.predict_survival(cph, X, [10.0, 5.0])


def test_cox_design_imputes_transforms_and_standardises():
    features = [*CLINICAL_FEATURES, "PrePost_signature"]
    rng = np.random.default_rng(0)
    n = 30
    data = pd.DataFrame(
        {
            "tumor_size_cm": rng.uniform(1, 5, n),
            "tumor_number": rng.integers(1, 4, n).astype(float),
            "hbv": rng.integers(0, 2, n).astype(float),
            "tp_g_l": rng.uniform(50, 300, n),
            "afp_ng_ml": np.exp(rng.uniform(0, 8, n)),
            "PrePost_signature": rng.uniform(0.05, 0.95, n),
        }
    )
    data.loc[0, "afp_ng_ml"] = np.nan
    pipe = cox.cox_design(TabularSettings.defaults("dl_clinical"), features)
    Z = pipe.fit_transform(data[features])
    assert isinstance(Z, pd.DataFrame)
    assert list(Z.columns) == features
    np.testing.assert_allclose(Z.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(ddof=0), 1)
    # AFP: median imputation, then log(1 + AFP), then standardised
    afp = np.log1p(data["afp_ng_ml"].fillna(data["afp_ng_ml"].median()))
    np.testing.assert_allclose(Z["afp_ng_ml"], (afp - afp.mean()) / afp.std(ddof=0))
    sig = clipped_logit(data["PrePost_signature"].to_numpy())
    np.testing.assert_allclose(Z["PrePost_signature"], (sig - sig.mean()) / sig.std(ddof=0))
    # the design feeds the Cox model: named hazard ratios
    t_event = rng.exponential(20, n)
    cph = cox.fit_cox(Z, t_event, np.ones(n, dtype=int), penalizer=0.1)
    assert cox.hazard_ratios(cph)["variable"].tolist() == features
