"""recur.evaluate.recalibration: logistic recalibration of the DL scores on the tuning split."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.stats import rankdata

from recur.constants import DL_SCORE_COLUMNS
from recur.errors import RecurError
from recur.evaluate import metrics
from recur.evaluate import recalibration as rc


def test_two_score_levels_by_hand():
    """Scores 0.5 (logit 0) with 1 ER of 4 and 0.8 (logit log 4) with 3 of 4: the
    unpenalised fit reproduces both observed rates, so logit(0.25) = a and
    logit(0.75) = a + b log 4, i.e. a = -log 3, b = 2 log 3 / log 4 = log 3 / log 2."""
    score = [0.5] * 4 + [0.8] * 4
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    rec = rc.fit_recalibration(y, score)
    assert rec.method == "logistic"
    assert (rec.n, rec.n_events, rec.note) == (8, 4, "")
    assert rec.intercept == pytest.approx(-math.log(3), abs=1e-5)
    assert rec.slope == pytest.approx(math.log(3) / math.log(2), abs=1e-5)
    np.testing.assert_allclose(rec.apply([0.5, 0.8]), [0.25, 0.75], atol=1e-6)


def test_scores_twice_the_true_log_odds_plus_one():
    """Scores whose log-odds are 2 x the true log-odds + 1 (over-confident and too high):
    on a large sample the fit recovers the inverse map, logit(p) = -0.5 + 0.5 logit(score),
    the recalibrated probabilities are the true ones, and the ranks and AUC are those of the
    scores."""
    rng = np.random.default_rng(7)
    z = rng.normal(-1.3, 1.2, 200_000)  # true log-odds (ER rate about 0.27)
    y = (rng.random(z.size) < expit(z)).astype(int)
    score = expit(2 * z + 1)
    rec = rc.fit_recalibration(y, score)
    assert rec.method == "logistic"
    assert rec.slope == pytest.approx(0.5, abs=0.01)
    assert rec.intercept == pytest.approx(-0.5, abs=0.02)
    cal = rec.apply(score)
    assert np.abs(cal - expit(z)).max() < 0.01
    np.testing.assert_array_equal(rankdata(cal), rankdata(score))
    assert metrics.auc(y, cal) == metrics.auc(y, score)
    # calibrated after, not before: intercept 0 and slope 1 on the same patients
    a0, b0 = metrics.calibration_intercept_slope(y, score)
    a1, b1 = metrics.calibration_intercept_slope(y, cal)
    assert a0 < -0.2
    assert b0 == pytest.approx(0.5, abs=0.01)
    assert a1 == pytest.approx(0.0, abs=0.01)
    assert b1 == pytest.approx(1.0, abs=1e-4)


def test_already_calibrated_scores_are_left_nearly_alone():
    rng = np.random.default_rng(3)
    z = rng.normal(-1.0, 1.0, 100_000)
    y = (rng.random(z.size) < expit(z)).astype(int)
    rec = rc.fit_recalibration(y, expit(z))
    assert rec.slope == pytest.approx(1.0, abs=0.03)
    assert rec.intercept == pytest.approx(0.0, abs=0.03)


def test_fallbacks_keep_the_ranks():
    # scores that rank the patients the wrong way round: slope fixed at 1, intercept fitted
    # so that the mean recalibrated probability is the event rate
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.35])
    y = np.array([0, 0, 0, 1, 0, 1, 1, 0])
    rec = rc.fit_recalibration(y, score)
    assert (rec.method, rec.slope) == ("intercept", 1.0)
    assert "not positive" in rec.note
    assert rec.apply(score).mean() == pytest.approx(y.mean(), abs=1e-9)
    np.testing.assert_array_equal(rankdata(rec.apply(score)), rankdata(score))
    # separated: no finite slope
    sep = rc.fit_recalibration([0, 0, 1, 1], [0.6, 0.7, 0.7, 0.9])
    assert (sep.method, sep.slope) == ("intercept", 1.0)
    assert "separate" in sep.note
    assert sep.apply([0.6, 0.7, 0.7, 0.9]).mean() == pytest.approx(0.5, abs=1e-9)
    # one class: the scores as they are
    same = rc.fit_recalibration([0, 0, 0], [0.2, 0.5, 0.9])
    assert (same.method, same.intercept, same.slope) == ("identity", 0.0, 1.0)
    np.testing.assert_array_equal(same.apply([0.2, 1e-9, 1.0]), [0.2, 1e-9, 1.0])


def test_refuses_bad_input_and_a_non_increasing_map():
    with pytest.raises(RecurError, match="0 or 1"):
        rc.fit_recalibration([0, 2], [0.1, 0.2])
    with pytest.raises(RecurError, match="finite"):
        rc.fit_recalibration([0, 1], [0.1, np.nan])
    with pytest.raises(RecurError, match="equal length"):
        rc.fit_recalibration([0, 1, 1], [0.1, 0.2])
    with pytest.raises(RecurError, match="not positive"):
        rc.Recalibration(0.1, -0.5, "logistic", 10, 3)
    with pytest.raises(RecurError, match="method"):
        rc.Recalibration(0.1, 0.5, "isotonic", 10, 3)


def _tables():
    ids = [f"P{i}" for i in range(12)]
    split = ["train"] * 4 + ["tune"] * 4 + ["test"] * 4
    scores = pd.DataFrame(
        {
            "patient_id": ids,
            "cohort": ["train"] * 8 + ["test"] * 4,
            "split": split,
            "score": [0.9, 0.1, 0.8, 0.2, 0.5, 0.5, 0.8, 0.8, 0.3, 0.6, 0.7, 0.4],
        }
    )
    er = pd.Series([1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1], index=ids, dtype=float)
    return scores, er


def test_fit_on_tune_reads_the_tuning_patients_only():
    scores, er = _tables()
    rec = rc.fit_on_tune(scores, er)
    # the four tuning patients: 0.5 (ER), 0.5, 0.8, 0.8 -> rates 1/2 at 0.5, 0/2 at 0.8: a
    # slope below zero, so the intercept alone (mean 1/4)
    assert (rec.method, rec.n, rec.n_events) == ("intercept", 4, 1)
    other = scores.assign(score=np.where(scores["split"] == "tune", scores["score"], 0.01))
    changed = er.where(scores.set_index("patient_id")["split"] == "tune", 1 - er)
    assert rc.fit_on_tune(other, changed) == rec
    with pytest.raises(RecurError, match="P5 has no outcome"):
        rc.fit_on_tune(scores, er.drop("P5"))
    assert rc.fit_on_tune(scores[scores["split"] != "tune"], er).method == "identity"


def test_recalibrate_table_and_the_stored_fit(tmp_path):
    scores, _ = _tables()
    rec = rc.Recalibration(-1.2, 0.8, "logistic", 4, 1)
    table = rc.recalibrate_table(scores, rec)
    assert list(table.columns) == list(DL_SCORE_COLUMNS)
    np.testing.assert_array_equal(table["raw_score"], scores["score"])
    np.testing.assert_allclose(
        table["score"], expit(-1.2 + 0.8 * np.log(scores["score"] / (1 - scores["score"])))
    )
    path = tmp_path / "recalibration.json"
    rc.write_recalibration(path, rec, "PrePost")
    back = rc.read_recalibration(path)
    assert back == rec
    np.testing.assert_array_equal(back.apply(scores["score"]), table["score"])
    path.write_text('{"intercept": 1.0}')
    with pytest.raises(RecurError, match=r"recalibration\.json"):
        rc.read_recalibration(path)
    with pytest.raises(RecurError, match="missing column"):
        rc.recalibrate_table(scores.drop(columns="split"), rec)
