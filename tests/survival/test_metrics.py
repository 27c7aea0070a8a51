"""recur.survival.metrics: censoring-aware metrics against hand-worked and published values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import cumulative_dynamic_auc, integrated_brier_score

from recur.errors import RecurError
from recur.evaluate.metrics import stratified_indices
from recur.survival import metrics as M


def _surv(time, event):
    y = np.empty(len(time), dtype=[("event", bool), ("time", float)])
    y["event"] = event
    y["time"] = time
    return y


# --------------------------------------------------------------------------- Harrell's C
def test_harrell_c_hand_worked():
    # patient:  A    B    C    D    E    F
    # time:     2    4    4    6    8    3
    # event:    1    1    0    1    0    0
    # risk:    .9   .5   .7   .5   .1   .8
    # A pairs with everyone followed longer (F, B, C, D, E): higher risk than all, 5 of 5.
    # B (event at 4) pairs with C (censored at 4: an event tied with a censoring is the
    # shorter), D and E: C has the higher risk (0), D ties in risk (1/2), E lower (1): 1.5 of 3.
    # D pairs with E: concordant, 1 of 1. The censored C, E, F start no pair.
    # C = (5 + 1.5 + 1) / 9
    time = [2, 4, 4, 6, 8, 3]
    event = [1, 1, 0, 1, 0, 0]
    risk = [0.9, 0.5, 0.7, 0.5, 0.1, 0.8]
    assert M.harrell_c(time, event, risk) == pytest.approx(7.5 / 9)
    # a higher risk means an earlier event: reversing the score reverses the pairs
    assert M.harrell_c(time, event, -np.asarray(risk)) == pytest.approx(1 - 7.5 / 9)


def test_harrell_c_undefined_is_nan():
    assert math.isnan(M.harrell_c([5.0], [1], [0.3]))
    assert math.isnan(M.harrell_c([2.0, 5.0], [0, 0], [0.3, 0.2]))
    # two events at the same time, nobody followed longer: no comparable pair
    assert math.isnan(M.harrell_c([5.0, 5.0], [1, 1], [0.3, 0.2]))


# --------------------------------------------------------------------------- Uno's C
# no censoring: times 1..5, all events; pairs (i, j) with i < j, concordant when r_i > r_j.
# Only (2, 3) is discordant: Harrell = 9/10. The censoring weights are all 1, so Uno's C is the
# same. Truncated at tau = 2.5, only pairs whose shorter time is 1 or 2 count: patient 1's 4
# (all concordant) and patient 2's 3 (one discordant) -> 6/7; at tau = 1.5, 4/4.
UNCENSORED_T = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
UNCENSORED_E = np.ones(5, dtype=int)
UNCENSORED_R = np.array([0.9, 0.3, 0.5, 0.2, 0.1])


def test_uno_c_without_censoring_is_harrell_c():
    t, e, r = UNCENSORED_T, UNCENSORED_E, UNCENSORED_R
    assert M.harrell_c(t, e, r) == pytest.approx(0.9)
    assert M.uno_c(t, e, t, e, r, tau=None) == pytest.approx(0.9)
    assert M.uno_c(t, e, t, e, r, tau=10.0) == pytest.approx(0.9)


def test_uno_c_truncation_ignores_later_pairs():
    t, e, r = UNCENSORED_T, UNCENSORED_E, UNCENSORED_R
    assert M.uno_c(t, e, t, e, r, tau=2.5) == pytest.approx(6 / 7)
    assert M.uno_c(t, e, t, e, r, tau=1.5) == pytest.approx(1.0)
    # a discordant pair after tau changes nothing
    r2 = r.copy()
    r2[3] = 0.05  # now patients 4 and 5 are discordant
    assert M.uno_c(t, e, t, e, r2, tau=2.5) == pytest.approx(6 / 7)
    assert M.uno_c(t, e, t, e, r2, tau=None) == pytest.approx(0.8)


def test_uno_c_undefined_is_nan():
    t, e, r = UNCENSORED_T, UNCENSORED_E, UNCENSORED_R
    assert math.isnan(M.uno_c(t, e, t, e, r, tau=0.5))  # no event before tau
    out = M.metric_values(t, e, t, e, r, tau=0.5, auc_times=[])
    assert out["uno_c"].reason == "no event before 0.5 months"


# --------------------------------------------------------------------------- td-AUC
# scikit-survival's tests/test_metrics.py (UnoCAucCases.data_train_test): training cohort of 20,
# evaluated cohort of 15; AUC(15) = 0.3030303, AUC(66) = 0.4357061.
SKSURV_TRAIN_T = [77.6, 57.6, 66.6, 67.0, 31.5, 5.5, 67.4, 43.7, 31.7, 71.9]
SKSURV_TRAIN_T += [81.1, 56.2, 88.1, 2.9, 62.0, 17.2, 88.0, 26.4, 93.5, 79.9]
SKSURV_TRAIN_E = [1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1]
SKSURV_TEST_T = [10.88, 19.78, 40.92, 98.7, 70.19, 10.15, 28.95, 29.57, 17.9, 63.78]
SKSURV_TEST_T += [36.22, 83.14, 13.69, 99.51, 3.19]
SKSURV_TEST_E = [1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1]
SKSURV_RISK = [-1.019, -0.016, 0.132, 0.269, -0.777, -1.077, 0.894, -1.227, -0.417, 0.072]
SKSURV_RISK += [-1.275, -0.91, -0.825, -0.292, -0.045]


def test_td_auc_reproduces_scikit_survival_documented_values():
    auc = M.td_auc(
        SKSURV_TRAIN_T, SKSURV_TRAIN_E, SKSURV_TEST_T, SKSURV_TEST_E, SKSURV_RISK, [15, 66]
    )
    np.testing.assert_allclose(auc, [0.3030303, 0.4357061], atol=1e-7)


def test_td_auc_without_censoring_is_the_roc_auc_of_event_by_t():
    t = np.array([7.0, 9, 11, 12, 13, 15, 28, 39, 41, 76])
    e = np.ones(10, dtype=int)
    risk = -np.array([1, 6, 18, 56, 32, 3, 99, 7, 67, 541.0])
    auc = M.td_auc(t, e, t, e, risk, [10, 14, 40])
    expected = [roc_auc_score(t <= s, risk) for s in (10, 14, 40)]
    np.testing.assert_allclose(auc, expected)


def test_td_auc_event_beyond_the_training_follow_up():
    # the evaluated cohort has an event at 95, after the training cohort's last time (93.5, an
    # event): sksurv refuses to weight it, although AUC(15) and AUC(66) do not use it (it is a
    # control at both). Our value is sksurv's on the same data with that event censored.
    t = np.array(SKSURV_TEST_T)
    e = np.array(SKSURV_TEST_E)
    t[3], e[3] = 95.0, 1
    ytrain = _surv(SKSURV_TRAIN_T, SKSURV_TRAIN_E)
    with pytest.raises(ValueError, match="time must be smaller"):
        cumulative_dynamic_auc(ytrain, _surv(t, e.astype(bool)), SKSURV_RISK, [15, 66])
    e_cens = e.copy()
    e_cens[3] = 0
    expected, _ = cumulative_dynamic_auc(
        ytrain, _surv(t, e_cens.astype(bool)), SKSURV_RISK, [15, 66]
    )
    got = M.td_auc(SKSURV_TRAIN_T, SKSURV_TRAIN_E, t, e, SKSURV_RISK, [15, 66])
    np.testing.assert_allclose(got, expected)
    # a horizon after the training follow-up needs that weight: undefined, with the reason
    out = M.metric_values(
        SKSURV_TRAIN_T, SKSURV_TRAIN_E, t, e, SKSURV_RISK, tau=None, auc_times=[15, 96]
    )
    assert out["td_auc_15"].value == pytest.approx(expected[0])
    assert math.isnan(out["td_auc_96"].value)
    assert "censoring weights unknown at an event by 96 months" in out["td_auc_96"].reason
    assert "ends at 93.5 months" in out["td_auc_96"].reason


def test_td_auc_no_event_before_the_horizon_is_nan_with_reason():
    # first event at 14: AUC(12) undefined, AUC(24) defined
    t = np.array([14.0, 16, 20, 30, 40, 3, 8])
    e = np.array([1, 1, 0, 1, 0, 0, 0])
    risk = np.array([0.9, 0.8, 0.1, 0.5, 0.2, 0.3, 0.4])
    auc = M.td_auc(t, e, t, e, risk, [12, 24])
    assert math.isnan(auc[0])
    assert np.isfinite(auc[1])
    out = M.metric_values(t, e, t, e, risk, tau=24, auc_times=[12, 24])
    assert (
        list(out)
        == M.metric_names([12, 24])
        == [
            "harrell_c",
            "uno_c",
            "td_auc_12",
            "td_auc_24",
            "ibs",
        ]
    )
    assert math.isnan(out["td_auc_12"].value)
    assert out["td_auc_12"].reason == "no event by 12 months"
    assert out["td_auc_24"].reason == ""
    assert out["td_auc_24"].value == pytest.approx(auc[1])
    # nobody followed beyond 40: no control at 45 (outside sksurv's accepted range)
    out = M.metric_values(t, e, t, e, risk, tau=24, auc_times=[45])
    assert out["td_auc_45"].reason == "no patient followed beyond 45 months"
    # a score has no IBS
    assert math.isnan(out["ibs"].value)
    assert out["ibs"].reason == M.NOT_A_SURVIVAL_FUNCTION


@pytest.mark.parametrize(
    ("time", "event", "reason"),
    [([5.0], [1], "fewer than 2 patients"), ([5.0, 9.0, 7.0], [0, 0, 0], "no events")],
)
def test_metric_values_degenerate_cohorts(time, event, reason):
    tt, te = [2.0, 4.0, 9.0, 20.0], [1, 0, 1, 0]
    risk = np.linspace(0, 1, len(time))
    surv = np.full((len(time), 2), 0.5)
    out = M.metric_values(
        tt, te, time, event, risk, tau=8, auc_times=[6], survival=surv, survival_times=[3, 6]
    )
    for key, v in out.items():
        assert math.isnan(v.value), key
        assert v.reason == reason, key


# --------------------------------------------------------------------------- IBS
def test_integrated_brier_without_censoring_by_hand():
    # no censoring: weights 1, BS(t) = mean over patients of (1{T > t} - S(t))^2;
    # IBS = trapezoid of BS over the grid / its length
    t = np.array([1.0, 2, 3, 4, 5, 6])
    e = np.ones(6, dtype=int)
    grid = np.array([1.5, 2.5, 4.0])
    surv = np.array([[0.9, 0.6, 0.2], [0.8, 0.7, 0.5], [0.95, 0.9, 0.1]] * 2)
    alive = (t[:, None] > grid[None, :]).astype(float)
    bs = ((alive - surv) ** 2).mean(axis=0)
    expected = np.trapezoid(bs, grid) / (grid[-1] - grid[0])
    assert M.integrated_brier(t, e, t, e, surv, grid) == pytest.approx(expected)
    out = M.metric_values(
        t, e, t, e, -surv[:, 1], tau=None, auc_times=[3], survival=surv, survival_times=grid
    )
    assert out["ibs"] == (pytest.approx(expected), "")


def test_integrated_brier_follow_up_beyond_the_training_cohort():
    # training cohort ends with an event (censoring survival > 0 at its end): sksurv asks the
    # censoring distribution at every evaluated patient's time and refuses the one followed to
    # 50. That patient is a control at every grid time: the score is the same as with its
    # follow-up ending at the training cohort's last time (20).
    tt = np.array([2.0, 5, 8, 12, 15, 20])
    te = np.array([1, 0, 1, 0, 1, 1])
    t = np.array([3.0, 6, 9, 13, 50])
    e = np.array([1, 0, 1, 1, 0])
    grid = np.array([4.0, 8.0, 11.0])
    rng = np.random.default_rng(3)
    surv = np.sort(rng.uniform(0.2, 1.0, (5, 3)), axis=1)[:, ::-1]
    with pytest.raises(ValueError, match="time must be smaller"):
        integrated_brier_score(_surv(tt, te.astype(bool)), _surv(t, e.astype(bool)), surv, grid)
    t20 = t.copy()
    t20[-1] = 20.0
    expected = integrated_brier_score(
        _surv(tt, te.astype(bool)), _surv(t20, e.astype(bool)), surv, grid
    )
    assert M.integrated_brier(tt, te, t, e, surv, grid) == pytest.approx(expected)


def test_integrated_brier_undefined_is_nan_with_reason():
    t = np.array([1.0, 2, 3, 4, 5, 6])
    e = np.array([1, 1, 0, 1, 0, 1])
    surv = np.full((6, 2), 0.5)
    # grid ends at the longest follow-up: outside sksurv's range
    assert math.isnan(M.integrated_brier(t, e, t, e, surv, [2.0, 6.0]))
    out = M.metric_values(
        t, e, t, e, np.arange(6.0), tau=None, auc_times=[], survival=surv, survival_times=[0.5, 3.0]
    )
    assert "not within the follow-up [1, 6) months" in out["ibs"].reason
    # the training censoring survival is 0 after its last time (a censoring at 5)
    tt, te = np.array([1.0, 2, 3, 5]), np.array([1, 1, 0, 0])
    out = M.metric_values(
        tt,
        te,
        t,
        e,
        np.arange(6.0),
        tau=None,
        auc_times=[],
        survival=surv,
        survival_times=[2.0, 5.5],
    )
    assert math.isnan(out["ibs"].value)
    assert "censoring weights unknown at 5.5 months" in out["ibs"].reason
    with pytest.raises(RecurError, match="survival_times"):
        M.metric_values(t, e, t, e, np.arange(6.0), tau=None, auc_times=[], survival=surv)
    with pytest.raises(RecurError, match="strictly increasing"):
        M.integrated_brier(t, e, t, e, surv, [3.0, 2.0])
    with pytest.raises(RecurError, match="shape"):
        M.integrated_brier(t, e, t, e, surv[:, :1], [2.0, 3.0])


# --------------------------------------------------------------------------- input checks
def test_check_survival_names_the_patient():
    ids = np.array(["P01", "P02", "P03"])
    with pytest.raises(RecurError, match="test cohort: patient P02 has follow-up time 0"):
        M.check_survival([3.0, 0.0, 4.0], [1, 0, 1], "test cohort", ids)
    with pytest.raises(RecurError, match="patient P03 has event 2"):
        M.check_survival([3.0, 1.0, 4.0], [1, 0, 2], "test cohort", ids)
    with pytest.raises(RecurError, match="row 0 has follow-up time nan"):
        M.check_survival([np.nan, 1.0], [1, 0], "cohort")
    with pytest.raises(RecurError, match="must be finite and > 0"):
        M.check_survival([-1.0, 1.0], [1, 0], "cohort")
    with pytest.raises(RecurError, match="one length"):
        M.check_survival([1.0, 2.0], [1], "cohort")
    t, e = M.check_survival([3, 1], [True, False], "cohort")
    assert t.dtype == float
    assert e.tolist() == [True, False]
    with pytest.raises(RecurError, match="non-finite"):
        M.harrell_c([1.0, 2.0], [1, 1], [0.1, np.nan])


# --------------------------------------------------------------------------- bootstrap
def _cohort(n, seed):
    rng = np.random.default_rng(seed)
    t_event = rng.exponential(20, n) + 0.5
    t_cens = rng.uniform(10, 60, n)
    t = np.round(np.minimum(t_event, t_cens), 1)
    e = (t_event <= t_cens).astype(int)
    return t, e, rng


def test_bootstrap_is_paired_and_matches_the_point_metrics():
    tt, te, _ = _cohort(60, 1)
    t, e, rng = _cohort(40, 2)
    r_a = -np.log(t) + rng.normal(0, 0.5, t.size)
    risks = {"A": r_a, "A_copy": r_a.copy(), "B": rng.normal(size=t.size)}
    grid = np.array([6.0, 9.0, 12.0])
    surv_a = np.exp(-np.outer(np.exp(r_a), grid) / 20)
    idx = stratified_indices(((t <= 12) & (e == 1)).astype(int), 30, seed=7)
    kw = {"tau": 12.0, "auc_times": [6, 12]}
    boot = M.bootstrap_metrics(
        tt, te, t, e, risks, {"A": surv_a, "A_copy": surv_a}, idx, survival_times=grid, **kw
    )
    assert set(boot) == {"A", "A_copy", "B"}
    assert list(boot["A"]) == M.metric_names([6, 12])
    # identical models see identical rows: zero difference on every resample, p = 1
    for k in boot["A"]:
        np.testing.assert_array_equal(boot["A"][k], boot["A_copy"][k])
    assert M.paired_c_difference(boot["A"]["harrell_c"], boot["A_copy"]["harrell_c"], 0.0) == (
        0.0,
        0.0,
        1.0,
    )
    # every resample's value is the metric of those rows
    for b in (0, 17):
        rows = idx[b]
        for m in ("A", "B"):
            surv = surv_a[rows] if m == "A" else None
            point = M.metric_values(
                tt,
                te,
                t[rows],
                e[rows],
                risks[m][rows],
                survival=surv,
                survival_times=grid if m == "A" else None,
                **kw,
            )
            for k, v in point.items():
                np.testing.assert_equal(boot[m][k][b], v.value)
    assert np.isnan(boot["B"]["ibs"]).all()
    assert np.isfinite(boot["A"]["ibs"]).all()
    # the CI of the difference contains the estimate
    est = M.harrell_c(t, e, r_a) - M.harrell_c(t, e, risks["B"])
    lo, hi, p = M.paired_c_difference(boot["A"]["harrell_c"], boot["B"]["harrell_c"], est)
    assert lo <= est <= hi
    assert 0.0 <= p <= 1.0


def test_bootstrap_degenerate_resample_is_nan():
    t = np.array([2.0, 5.0, 7.0, 9.0])
    e = np.array([1, 1, 0, 1])
    idx = np.array([[0, 1, 2, 3], [2, 2, 2, 2], [3, 3, 3, 3]])
    boot = M.bootstrap_metrics(
        t, e, t, e, {"m": np.array([0.4, 0.3, 0.2, 0.1])}, None, idx, tau=None, auc_times=[6]
    )
    hc = boot["m"]["harrell_c"]
    assert hc[0] == pytest.approx(M.harrell_c(t, e, [0.4, 0.3, 0.2, 0.1]))
    assert np.isnan(hc[1:]).all()  # all censored; one patient's events tied: no pair
    assert np.isnan(boot["m"]["td_auc_6"][1:]).all()


def test_paired_c_difference_by_hand():
    a = np.array([0.70, 0.72, 0.75, 0.80, np.nan])
    b = np.array([0.71, 0.70, 0.72, 0.77, 0.70])
    # differences (NaN dropped): -0.01, 0.02, 0.03, 0.03 -> P(d <= 0) = 1/4, P(d >= 0) = 3/4
    lo, hi, p = M.paired_c_difference(a, b, 0.025, level=0.5)
    assert p == pytest.approx(0.5)
    d = np.array([-0.01, 0.02, 0.03, 0.03])
    assert (lo, hi) == pytest.approx(tuple(np.quantile(d, [0.25, 0.75])))
    # an estimate outside the percentile interval widens it
    lo, hi, _ = M.paired_c_difference(a, b, 0.5)
    assert hi == 0.5
    assert all(math.isnan(x) for x in M.paired_c_difference(a * np.nan, b, 0.0))
    with pytest.raises(RecurError):
        M.paired_c_difference(a, b[:3], 0.0)
