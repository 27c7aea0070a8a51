"""Honest intervals and flags of the evaluation tables: Wilson and Clopper-Pearson intervals at
0 and 1, p-value formatting, undefined DeLong and calibration statistics with their reasons,
the few-events flag and the confusion counts of Table 2 (hand-worked values)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recur.constants import MIN_EVENTS
from recur.evaluate import metrics, tables

#: z of a two-sided 95% interval and its square (z^2 = 3.841459).
Z = 1.959963984540054
Z2 = Z * Z

# --------------------------------------------------------------------------- proportion intervals


def test_wilson_interval_at_zero_and_one():
    # Wilson: centre (k + z^2/2) / (n + z^2), half-width z sqrt(k(n-k)/n + z^2/4) / (n + z^2).
    # k = 0: both are (z^2/2) / (n + z^2), so [0, z^2 / (n + z^2)] = [0, 3.8415 / 8.8415]
    #        = [0, 0.434482].
    # k = n: by symmetry [n / (n + z^2), 1] = [5 / 8.8415, 1] = [0.565518, 1].
    lo, hi = metrics.proportion_interval(0, 5, 0.95, "wilson")
    assert lo == 0.0
    assert hi == pytest.approx(Z2 / (5 + Z2), rel=1e-9)
    assert hi == pytest.approx(0.434482, abs=1e-6)
    lo, hi = metrics.proportion_interval(5, 5, 0.95, "wilson")
    assert lo == pytest.approx(5 / (5 + Z2), rel=1e-9)
    assert lo == pytest.approx(0.565518, abs=1e-6)
    assert hi == 1.0


def test_clopper_pearson_interval_at_zero_and_one():
    # Clopper-Pearson (beta): at k = 0 the upper bound solves (1 - p)^n = alpha / 2, so
    # [0, 1 - 0.025^(1/5)] = [0, 1 - exp(ln(0.025) / 5)] = [0, 1 - 0.478176] = [0, 0.521824];
    # at k = n the lower bound solves p^n = alpha / 2: [0.025^(1/5), 1] = [0.478176, 1].
    lo, hi = metrics.proportion_interval(0, 5, 0.95, "beta")
    assert lo == 0.0
    assert hi == pytest.approx(1 - 0.025 ** (1 / 5), rel=1e-9)
    assert hi == pytest.approx(0.521824, abs=1e-6)
    lo, hi = metrics.proportion_interval(5, 5, 0.95, "beta")
    assert lo == pytest.approx(0.025 ** (1 / 5), rel=1e-9)
    assert lo == pytest.approx(0.478176, abs=1e-6)
    assert hi == 1.0


def test_proportion_interval_edge_cases():
    assert all(math.isnan(v) for v in metrics.proportion_interval(0, 0, 0.95))
    with pytest.raises(Exception, match="expected 'wilson' or 'beta'"):
        metrics.proportion_interval(1, 5, 0.95, "wald")
    # an interior proportion: Wilson around 2/5 is strictly inside (0, 1)
    lo, hi = metrics.proportion_interval(2, 5, 0.95)
    assert 0 < lo < 0.4 < hi < 1


# --------------------------------------------------------------------------- p-values


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (5.4e-19, "< 0.001"),
        (0.0009999, "< 0.001"),
        (0.001, "0.001"),
        (0.0312, "0.031"),
        (0.5, "0.500"),
        (1.0, "1.000"),
        (math.nan, "NA"),
        (None, "NA"),
    ],
)
def test_format_p(p, text):
    assert tables.format_p(p) == text


# --------------------------------------------------------------------------- few events


def test_few_events_flag():
    assert MIN_EVENTS == 10
    assert tables.few_events_flag(3) == "fewer than 10 events (n_events=3)"
    assert tables.few_events_flag(0) == "fewer than 10 events (n_events=0)"
    assert tables.few_events_flag(9) == "fewer than 10 events (n_events=9)"
    assert tables.few_events_flag(10) == ""
    assert tables.few_events_flag(4, threshold=3) == ""


def _frame(n_train_events: int = 12) -> pd.DataFrame:
    """Training: 40 patients with ``n_train_events`` events; tuning: 10 with 3; test site S: 5
    patients (y 1, 1, 0, 0, 1), scores that give TP 2, FN 1, FP 1, TN 1 at cutoff 0.5."""
    rng = np.random.default_rng(3)
    y_train = np.array([1] * n_train_events + [0] * (40 - n_train_events))
    y_tune = np.array([1, 1, 1] + [0] * 7)
    y_test = np.array([1, 1, 0, 0, 1])
    y = np.concatenate([y_train, y_tune, y_test])
    s_test = np.array([0.9, 0.4, 0.6, 0.1, 0.7])
    s_other = np.clip(0.3 * np.concatenate([y_train, y_tune]) + rng.uniform(0.1, 0.6, 50), 0, 1)
    split = ["train"] * 40 + ["tune"] * 10 + ["test"] * 5
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:02d}" for i in range(55)],
            "site": ["A"] * 50 + ["S"] * 5,
            "split": split,
            "er": y,
            "M": np.concatenate([s_other, s_test]),
        }
    )


def test_confusion_counts_tiny():
    # y 1 1 0 0 1, score .9 .4 .6 .1 .7, positive when score >= .5:
    # calls 1 0 1 0 1 -> TP = 2 (patients 1, 5), FN = 1 (2), FP = 1 (3), TN = 1 (4)
    c = metrics.confusion_counts([1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.1, 0.7], 0.5)
    assert c == {"tp": 2, "fp": 1, "tn": 1, "fn": 1}
    assert metrics.proportion_counts(**c) == {
        "accuracy": (3, 5),
        "sensitivity": (2, 3),
        "specificity": (1, 2),
        "ppv": (2, 3),
        "npv": (1, 2),
    }


def test_table2_counts_flags_and_interval_methods():
    frame = _frame()
    t = tables.table2(frame, ["M"], {"M": 0.5}, n_boot=200, seed=0, level=0.95)
    assert list(t.columns) == list(tables.TABLE2_COLUMNS)
    ext = t[t["cohort"] == "external"].set_index("metric")
    # the counts of the tiny test site, on every metric row
    assert (ext[["tp", "fp", "tn", "fn"]] == [2, 1, 1, 1]).all().all()
    assert ext.loc["sensitivity", "estimate"] == pytest.approx(2 / 3)
    # 3 events: flagged on every row of the external cohort and of its site
    assert (t.loc[t["cohort"].isin(["external", "S", "tuning"]), "flag"] != "").all()
    assert (ext["flag"] == "fewer than 10 events (n_events=3)").all()
    # 12 training events: no flag
    assert (t.loc[t["cohort"] == "training", "flag"] == "").all()
    # interior proportions keep the bootstrap interval
    assert (ext.loc[list(metrics.PROPORTION_METRICS), "ci_method"] == "bootstrap").all()
    wide = tables.table2_wide(t).set_index("Model")
    row = wide[wide["Cohort"].str.startswith("external")].iloc[0]
    assert (row["TP"], row["FP"], row["TN"], row["FN"]) == (2, 1, 1, 1)
    assert row["Flag"] == "fewer than 10 events (n_events=3)"
    md = tables.markdown_table(tables.table2_wide(t))
    assert "| TP | FP | TN | FN | Flag |" in md
    assert "fewer than 10 events (n_events=3)" in md


def test_table2_wilson_at_one_and_auc_flag():
    frame = _frame()
    # perfect scores in the test site: every metric 1 there
    frame.loc[frame["split"] == "test", "M"] = [0.9, 0.8, 0.2, 0.1, 0.7]
    t = tables.table2(frame, ["M"], {"M": 0.5}, n_boot=200, seed=0, level=0.95)
    site = t[t["cohort"] == "S"].set_index("metric")
    assert (site["estimate"] == 1.0).all()
    # sensitivity 3/3: Wilson [3 / (3 + z^2), 1] = [0.4385, 1]; specificity 2/2: [0.3424, 1]
    assert site.loc["sensitivity", "ci_method"] == "wilson"
    assert site.loc["sensitivity", "ci_low"] == pytest.approx(3 / (3 + Z2), rel=1e-6)
    assert site.loc["specificity", "ci_low"] == pytest.approx(2 / (2 + Z2), rel=1e-6)
    assert site.loc["accuracy", "ci_low"] == pytest.approx(5 / (5 + Z2), rel=1e-6)
    assert site.loc["sensitivity", "note"].startswith("Sensitivity 3/3: Wilson score interval")
    # AUC keeps its (zero-width) bootstrap interval, flagged
    assert site.loc["auc", "ci_method"] == "bootstrap"
    assert (site.loc["auc", "ci_low"], site.loc["auc", "ci_high"]) == (1.0, 1.0)
    assert "separate the classes perfectly" in site.loc["auc", "note"]
    wide = tables.table2_wide(t)
    cells = wide[wide["Cohort"].str.startswith("S ")].iloc[0]
    assert cells["Sensitivity"] == f"1.000 [{3 / (3 + Z2):.3f}, 1.000]{tables.WILSON_MARK}"
    assert cells["AUC"] == f"1.000 [1.000, 1.000]{tables.DEGENERATE_MARK}"


def test_undefined_estimate_has_no_interval_method():
    frame = _frame()
    # nobody called positive in the test site: PPV 0/0
    frame.loc[frame["split"] == "test", "M"] = 0.1
    t = tables.table2(frame, ["M"], {"M": 0.5}, n_boot=50, seed=0, level=0.95)
    ppv = t[(t["cohort"] == "S") & (t["metric"] == "ppv")].iloc[0]
    assert math.isnan(ppv["estimate"])
    assert ppv["ci_method"] == "none"
    # sensitivity 0/3: Wilson [0, z^2 / (3 + z^2)] = [0, 0.5615]
    sens = t[(t["cohort"] == "S") & (t["metric"] == "sensitivity")].iloc[0]
    assert sens["ci_method"] == "wilson"
    assert (sens["ci_low"], sens["ci_high"]) == (0.0, pytest.approx(Z2 / (3 + Z2)))


# --------------------------------------------------------------------------- DeLong, calibration


def test_delong_table_note_flag_and_documents():
    frame = _frame()
    frame["M2"] = frame["M"]  # identical scores: every test undefined
    d = tables.delong_table(frame, ["M", "M2"])
    assert d["p"].isna().all()
    assert d["z"].isna().all()
    assert d["note"].str.startswith("the two models rank the patients identically").all()
    assert list(d.loc[d["cohort"] == "training", "flag"]) == [""]
    assert list(d.loc[d["cohort"] == "S", "flag"]) == ["fewer than 10 events (n_events=3)"]
    md, html = tables.table_documents(d, "a note")
    assert "| NA |" in md
    assert "fewer than 10 events (n_events=3)" in md
    assert md.endswith("\na note\n")
    assert html.startswith('<meta charset="utf-8">')
    assert "<p>a note</p>" in html


def test_display_table_rounds_and_formats_p():
    df = pd.DataFrame(
        {
            "model": ["a", "b"],
            "diff": [0.123456, -0.5],
            "p": [5.4e-19, 0.0312],
            "p_logrank": [math.nan, 0.2],
            "n": [10, 20],
            "note": ["", None],
        }
    )
    shown = tables.display_table(df)
    assert list(shown["diff"]) == ["0.123", "-0.500"]
    assert list(shown["p"]) == ["< 0.001", "0.031"]
    assert list(shown["p_logrank"]) == ["NA", "0.200"]
    assert list(shown["n"]) == ["10", "20"]
    assert list(shown["note"]) == ["", ""]
    # the frame itself is untouched (the CSV keeps full precision)
    assert df.loc[0, "p"] == 5.4e-19


def test_calibration_separation_and_unstable_slope_are_undefined():
    # perfectly separated: no finite slope; the intercept (an offset-only fit) is defined
    r = metrics.calibration_fit([0, 0, 1, 1], [0.2, 0.3, 0.7, 0.8])
    assert math.isnan(r["slope"])
    assert np.isfinite(r["intercept"])
    assert "separate the outcomes perfectly" in r["note"]
    # nearly separated, predictions close together: the fitted slope (about 25) is unstable
    y = [0, 0, 0, 1, 1, 1, 0, 1]
    s = [0.40, 0.42, 0.47, 0.46, 0.50, 0.52, 0.44, 0.48]
    r = metrics.calibration_fit(y, s)
    assert math.isnan(r["slope"])
    assert f"beyond +-{metrics.CALIBRATION_SLOPE_LIMIT:g}" in r["note"]
    # constant predictions
    r = metrics.calibration_fit([0, 1, 0, 1], [0.3] * 4)
    assert math.isnan(r["slope"])
    assert r["note"] == "slope: constant predictions"
    # a well-defined fit: empty note
    y = np.array([0, 1] * 10)
    s = np.clip(0.3 + 0.3 * y + np.linspace(-0.2, 0.2, 20), 0.01, 0.99)
    r = metrics.calibration_fit(y, s)
    assert r["note"] == ""
    assert np.isfinite(r["slope"])


def test_calibration_table_note_and_flag():
    frame = _frame()
    c = tables.calibration_table(frame, ["M"])
    assert {"note", "flag"} <= set(c.columns)
    assert c.set_index("cohort").loc["S", "flag"] == "fewer than 10 events (n_events=3)"
    assert c.set_index("cohort").loc["training", "flag"] == ""


def test_km_logrank_table_flag():
    km = pd.DataFrame(
        {
            "cohort": ["external", "training"],
            "model": ["M", "M"],
            "events_low": [1, 8],
            "events_high": [2, 9],
            "p_logrank": [0.4, 1e-5],
        }
    )
    out = tables.km_logrank_table(km)
    assert list(out["n_events"]) == [3, 17]
    assert list(out["flag"]) == ["fewer than 10 events (n_events=3)", ""]
    md, _ = tables.table_documents(out)
    assert "< 0.001" in md
