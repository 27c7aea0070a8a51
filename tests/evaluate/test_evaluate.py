"""recur.evaluate metrics, tables, readers: bootstrap, cutoffs, DeLong, calibration (by hand)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from recur.errors import RecurError
from recur.evaluate import metrics, readers, tables

# --------------------------------------------------------------------------- metrics


def test_classification_metrics_hand_confusion_matrix():
    # TP=2, FN=1, FP=1, TN=4
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    p = [1, 1, 0, 1, 0, 0, 0, 0]
    m = metrics.classification_metrics(y, p)
    assert list(m) == ["accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["ppv"] == pytest.approx(2 / 3)
    assert m["npv"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(4 / 6)


def test_classification_metrics_zero_denominators_are_nan():
    # no positive patient and no positive prediction: TP=FP=FN=0, TN=3
    m = metrics.classification_metrics([0, 0, 0], [0, 0, 0])
    assert math.isnan(m["sensitivity"])
    assert math.isnan(m["ppv"])
    assert math.isnan(m["f1"])
    assert m["specificity"] == 1.0
    assert m["npv"] == 1.0
    assert m["accuracy"] == 1.0
    # nobody predicted positive but one event: PPV 0/0, F1 = 0/(0+0+1) = 0
    m = metrics.classification_metrics([1, 0], [0, 0])
    assert math.isnan(m["ppv"])
    assert m["f1"] == 0.0
    assert m["sensitivity"] == 0.0
    assert m["npv"] == 0.5


@pytest.mark.parametrize(
    ("y", "p"),
    [([0, 2, 1], [0, 1, 1]), ([0, 1], [0, 1, 1]), ([[0, 1]], [[0, 1]]), ([], [])],
)
def test_classification_metrics_bad_input(y, p):
    with pytest.raises(RecurError):
        metrics.classification_metrics(y, p)


def test_auc_hand_and_checks():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    with pytest.raises(RecurError, match="single class"):
        metrics.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(RecurError, match="non-finite"):
        metrics.auc([0, 1], [0.1, np.nan])
    with pytest.raises(RecurError, match="length"):
        metrics.auc([0, 1], [0.1, 0.2, 0.3])


def test_youden_cutoff_known_roc_and_tie_rule():
    assert metrics.youden_cutoff([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == 0.4
    # J = 0.5 at cutoff 0.8 (tpr .5, fpr 0) and at 0.35 (tpr 1, fpr .5): highest wins
    assert metrics.youden_cutoff([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_degenerate_all_correct_wilson_for_proportions():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    t = metrics.bootstrap_ci(y, s, cutoff=0.5, n_boot=500, seed=3, level=0.95).set_index("metric")
    assert list(t.index) == list(metrics.METRICS)
    assert (t["estimate"] == 1.0).all()
    assert (t["ci_high"] == 1.0).all()
    # AUC and F1 keep their zero-width bootstrap interval, with a note
    assert (t.loc[["auc", "f1"], "ci_low"] == 1.0).all()
    assert (t.loc[["auc", "f1"], "ci_method"] == "bootstrap").all()
    assert t.loc["auc", "note"].startswith("AUC 1.000: the scores separate the classes")
    # the proportions at 1 get Wilson's lower bound k / (k + z^2): 3/3 and 6/6
    z2 = stats.norm.ppf(0.975) ** 2
    for m in ("sensitivity", "specificity", "ppv", "npv"):
        assert t.loc[m, "ci_method"] == "wilson"
        assert t.loc[m, "ci_low"] == pytest.approx(3 / (3 + z2))  # 0.4385
    assert t.loc["accuracy", "ci_low"] == pytest.approx(6 / (6 + z2))  # 0.6097


def _slow_bootstrap(y, s, cutoff, n_boot, seed, level=0.95):
    """Reference: one resample at a time with sklearn / classification_metrics."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    ip = pos[rng.integers(0, pos.size, size=(n_boot, pos.size))]
    ineg = neg[rng.integers(0, neg.size, size=(n_boot, neg.size))]
    vals = {m: [] for m in metrics.METRICS}
    for b in range(n_boot):
        idx = np.concatenate([ip[b], ineg[b]])
        vals["auc"].append(roc_auc_score(y[idx], s[idx]))
        cm = metrics.classification_metrics(y[idx], (s[idx] >= cutoff).astype(int))
        for k, v in cm.items():
            vals[k].append(v)
    a = (1 - level) / 2
    out = {}
    for m, v in vals.items():
        v = np.asarray(v)
        v = v[np.isfinite(v)]
        out[m] = tuple(np.quantile(v, [a, 1 - a]))
    return out


def test_bootstrap_matches_slow_reference_loop():
    rng = np.random.default_rng(11)
    y = (rng.random(40) < 0.3).astype(int)
    s = np.round(np.clip(0.3 * y + rng.normal(0.4, 0.2, 40), 0, 1), 2)  # rounding: ties
    t = metrics.bootstrap_ci(y, s, cutoff=0.5, n_boot=300, seed=5, level=0.95).set_index("metric")
    ref = _slow_bootstrap(y, s, 0.5, 300, 5)
    for m in metrics.METRICS:
        est = t.loc[m, "estimate"]
        lo, hi = ref[m]
        # the module widens to the estimate; the reference is the raw percentile interval
        assert t.loc[m, "ci_low"] == pytest.approx(min(lo, est), abs=1e-12), m
        assert t.loc[m, "ci_high"] == pytest.approx(max(hi, est), abs=1e-12), m
        assert t.loc[m, "ci_low"] <= est <= t.loc[m, "ci_high"]


def test_percentile_ci_contains_estimate_and_handles_undefined():
    lo, hi, nu = metrics.percentile_ci(np.full(100, 0.9), 1.0, 0.95)
    assert (lo, hi, nu) == (0.9, 1.0, 0)
    lo, hi, nu = metrics.percentile_ci(np.array([np.nan, np.nan]), 0.5, 0.95)
    assert math.isnan(lo)
    assert math.isnan(hi)
    assert nu == 2
    lo, hi, nu = metrics.percentile_ci(np.array([np.nan, 0.2, 0.4]), 0.3, 0.95)
    assert nu == 1
    assert lo <= 0.3 <= hi


def test_stratified_indices_keep_class_counts():
    y = np.array([1, 0, 0, 1, 0, 0, 0])
    idx = metrics.stratified_indices(y, 50, 0)
    assert idx.shape == (50, 7)
    assert (y[idx].sum(axis=1) == 2).all()


# --------------------------------------------------------------------------- net benefit


def test_net_benefit_hand():
    y = [1, 1, 0, 0, 0]
    s = [0.9, 0.4, 0.6, 0.2, 0.1]
    nb = metrics.net_benefit(y, s, [0.25, 0.5])
    # pt .25: treated .9 .4 .6 -> TP 2, FP 1: 2/5 - 1/5 * (.25/.75)
    assert nb[0] == pytest.approx(2 / 5 - 1 / 5 * (1 / 3))
    # pt .5: treated .9 .6 -> TP 1, FP 1: 1/5 - 1/5 * 1
    assert nb[1] == pytest.approx(0.0)
    allnb = metrics.net_benefit_treat_all(y, [0.25])
    assert allnb[0] == pytest.approx(0.4 - 0.6 / 3)
    with pytest.raises(RecurError):
        metrics.net_benefit(y, s, [1.0])


# --------------------------------------------------------------------------- DeLong


def _slow_delong(y, a, b):
    """O(n^2) structural components (DeLong et al. 1988), written independently."""
    y = np.asarray(y)
    out = []
    for s in (a, b):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = (y == 1).sum(), (y == 0).sum()
    v10 = np.vstack([o[1] for o in out])  # per positive
    v01 = np.vstack([o[2] for o in out])  # per negative
    s10 = np.cov(v10)
    s01 = np.cov(v01)
    s = s10 / m + s01 / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (out[0][0] - out[1][0]) / np.sqrt(var)
    return out[0][0], out[1][0], np.sqrt(var), z, 2 * stats.norm.sf(abs(z))


def test_delong_matches_slow_structural_components_with_ties():
    rng = np.random.default_rng(7)
    y = (rng.random(60) < 0.4).astype(int)
    a = np.round(y * 0.8 + rng.normal(0, 1, 60), 1)  # rounding creates ties
    b = np.round(y * 0.3 + rng.normal(0, 1, 60), 1)
    r = metrics.delong_test(y, a, b)
    auc_a, auc_b, se, z, p = _slow_delong(y, a, b)
    assert r["auc_a"] == pytest.approx(auc_a, abs=1e-12)
    assert r["auc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r["se"] == pytest.approx(se, rel=1e-10)
    assert r["z"] == pytest.approx(z, rel=1e-10)
    assert r["p"] == pytest.approx(p, rel=1e-8)
    assert 0 < r["p"] < 1


def test_delong_hand_example():
    # positives (0.8, 0.6), negatives (0.7, 0.2); model b perfect
    y = [1, 1, 0, 0]
    a = [0.8, 0.6, 0.7, 0.2]
    b = [0.9, 0.8, 0.3, 0.1]
    r = metrics.delong_test(y, a, b)
    # a: psi = [[1,1],[0,1]] -> AUC .75; V10 = (1, .5), V01 = (.5, 1); b: all 1, zero var
    assert r["auc_a"] == pytest.approx(0.75)
    assert r["auc_b"] == pytest.approx(1.0)
    # var = var(V10_a)/2 + var(V01_a)/2 = 0.125/2 + 0.125/2 = 0.125
    assert r["se"] == pytest.approx(math.sqrt(0.125))
    assert r["z"] == pytest.approx(-0.25 / math.sqrt(0.125))
    assert r["p"] == pytest.approx(2 * stats.norm.sf(0.25 / math.sqrt(0.125)))


def test_delong_identical_scores_undefined_with_note():
    y = [0, 1, 0, 1, 1]
    s = [0.1, 0.7, 0.4, 0.3, 0.9]
    r = metrics.delong_test(y, s, s)
    assert r["diff"] == 0.0
    assert r["se"] == 0.0
    assert math.isnan(r["z"])
    assert math.isnan(r["p"])
    assert r["note"].startswith("the two models rank the patients identically")
    assert "z and p are undefined" in r["note"]


def test_delong_both_perfect_undefined_with_note():
    y = [0, 0, 1, 1]
    r = metrics.delong_test(y, [0.1, 0.2, 0.8, 0.9], [0.2, 0.1, 0.9, 0.8])
    assert (r["auc_a"], r["auc_b"]) == (1.0, 1.0)
    assert math.isnan(r["p"])
    assert r["note"].startswith("both models separate the classes perfectly")
    # a defined test has an empty note
    assert metrics.delong_test(y, [0.1, 0.8, 0.2, 0.9], [0.2, 0.1, 0.9, 0.8])["note"] == ""


# --------------------------------------------------------------------------- calibration


def _grouped(p_groups):
    """Patients whose observed event rate in each group equals its prediction exactly."""
    y, s = [], []
    for p, n_ev, n in p_groups:
        y += [1] * n_ev + [0] * (n - n_ev)
        s += [p] * n
    return np.array(y), np.array(s)


def test_brier_hand():
    assert metrics.brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)


def test_calibration_intercept_slope_exact_cases():
    y, s = _grouped([(0.2, 1, 5), (0.5, 2, 4), (0.8, 4, 5)])
    icpt, slope = metrics.calibration_intercept_slope(y, s)
    assert icpt == pytest.approx(0.0, abs=1e-6)
    assert slope == pytest.approx(1.0, abs=1e-6)
    # predictions twice as extreme on the logit scale: slope 1/2
    lp = np.log(s / (1 - s))
    s2 = 1 / (1 + np.exp(-2 * lp))
    _, slope2 = metrics.calibration_intercept_slope(y, s2)
    assert slope2 == pytest.approx(0.5, abs=1e-6)


def test_calibration_curve_lowess_range():
    y, s = _grouped([(0.2, 1, 5), (0.5, 2, 4), (0.8, 4, 5)])
    x, obs = metrics.calibration_curve_lowess(y, s, frac=2 / 3)
    assert (np.diff(x) >= 0).all()
    assert ((obs >= 0) & (obs <= 1)).all()
    assert obs.shape == x.shape == (14,)


# --------------------------------------------------------------------------- study tables


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 60
    split = np.array(["train"] * 30 + ["tune"] * 14 + ["test"] * 16)
    site = np.array(["A"] * 44 + ["B"] * 8 + ["C"] * 8)
    y = np.tile([0, 0, 1, 0], 15)
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "site": site,
            "cohort": np.where(split == "test", "test", "train"),
            "split": split,
            "er": y,
            "rfs_months": rng.uniform(1, 40, n),
            "rfs_event": y,
            "M1": np.clip(0.4 * y + rng.normal(0.3, 0.15, n), 0.01, 0.99),
            "M2": rng.uniform(0.01, 0.99, n),
        }
    )


def test_cohort_masks(frame):
    masks = tables.cohort_masks(frame)
    assert list(masks) == ["training", "tuning", "external", "B", "C"]
    assert masks["external"].sum() == 16
    assert masks["B"].sum() == 8
    assert (masks["B"] | masks["C"]).sum() == 16


def test_table2_long_format_and_ci_contains_estimate(frame):
    cut = tables.cutoffs_table(frame, ["M1", "M2"])
    assert list(cut["model"]) == ["M1", "M2"]
    tune = frame[frame["split"] == "tune"]
    assert cut.loc[0, "cutoff"] == metrics.youden_cutoff(tune["er"], tune["M1"])
    cutoffs = dict(zip(cut["model"], cut["cutoff"], strict=True))
    t = tables.table2(frame, ["M1", "M2"], cutoffs, n_boot=200, seed=0, level=0.95)
    assert list(t.columns[:6]) == ["cohort", "model", "metric", "estimate", "ci_low", "ci_high"]
    assert len(t) == 5 * 2 * 7
    ok = t["estimate"].notna()
    assert (t.loc[ok, "ci_low"] <= t.loc[ok, "estimate"] + 1e-12).all()
    assert (t.loc[ok, "estimate"] <= t.loc[ok, "ci_high"] + 1e-12).all()
    row = t[(t["cohort"] == "external") & (t["model"] == "M1") & (t["metric"] == "auc")].iloc[0]
    ext = frame[frame["split"] == "test"]
    assert row["estimate"] == pytest.approx(roc_auc_score(ext["er"], ext["M1"]))
    assert (row["n"], row["n_events"]) == (16, 4)
    assert list(t.columns) == list(tables.TABLE2_COLUMNS)
    wide = tables.table2_wide(t)
    assert list(wide.columns) == [
        "Cohort",
        "Model",
        *[metrics.METRIC_LABELS[m] for m in metrics.METRICS],
        "TP",
        "FP",
        "TN",
        "FN",
        "Flag",
    ]
    assert len(wide) == 10
    assert tables.format_estimate(0.74, 0.4623, 0.935) == "0.740 [0.462, 0.935]"


def test_delong_and_calibration_tables(frame):
    d = tables.delong_table(frame, ["M1", "M2"])
    assert list(d["cohort"]) == ["training", "tuning", "external", "B", "C"]
    c = tables.calibration_table(frame, ["M1", "M2"])
    assert len(c) == 10
    assert {"brier", "intercept", "slope"} <= set(c.columns)


def test_evaluation_frame_checks():
    split = pd.DataFrame(
        {
            "patient_id": ["a", "b"],
            "site": ["s", "s"],
            "cohort": ["train", "train"],
            "split": ["train", "tune"],
        }
    )
    clin = pd.DataFrame(
        {"patient_id": ["a", "b"], "er": [0, 1], "rfs_months": [30.0, 5.0], "rfs_event": [0, 1]}
    )
    good = pd.DataFrame(
        {
            "patient_id": ["b", "a"],
            "cohort": ["train"] * 2,
            "split": ["tune", "train"],
            "score": [0.9, 0.1],
        }
    )
    f = readers.evaluation_frame({"M": good}, split, clin)
    assert list(f["M"]) == [0.1, 0.9]
    with pytest.raises(RecurError, match="no prediction"):
        readers.evaluation_frame({"M": good.iloc[:1]}, split, clin)
    bad = good.assign(split=["train", "train"])
    with pytest.raises(RecurError, match="disagrees"):
        readers.evaluation_frame({"M": bad}, split, clin)


def test_read_predictions_checks_columns(tmp_path):
    p = tmp_path / "M.csv"
    p.write_text("patient_id,split,score\na,train,0.1\n")
    with pytest.raises(RecurError, match="columns"):
        readers.read_predictions(p, "M")
    p.write_text("patient_id,cohort,split,score\na,train,train,\n")
    with pytest.raises(RecurError, match="patient a"):
        readers.read_predictions(p, "M")
    # a DL model's table: the recalibrated score and the network's raw_score
    p.write_text("patient_id,cohort,split,score,raw_score\na,train,train,0.2,0.6\n")
    df = readers.read_predictions(p, "M")
    assert (df.loc[0, "score"], df.loc[0, "raw_score"]) == (0.2, 0.6)
    p.write_text("patient_id,cohort,split,score,raw_score\na,train,train,0.2,x\n")
    with pytest.raises(RecurError, match="non-numeric raw_score"):
        readers.read_predictions(p, "M")
    p.write_text("patient_id,cohort,split,raw_score,score\na,train,train,0.6,0.2\n")
    with pytest.raises(RecurError, match="columns"):
        readers.read_predictions(p, "M")
