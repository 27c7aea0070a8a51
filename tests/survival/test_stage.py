"""The survival stage over DataFrames (recur.survival.stage, data, analysis) on a small cohort
whose hazard depends on tumour size only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recur.constants import CLINICAL_FEATURES, MARGIN_MODELS
from recur.errors import RecurError
from recur.models.tabular import TabularSettings
from recur.survival import analysis, data, stage
from recur.survival.settings import SurvivalSettings

SETTINGS = SurvivalSettings.defaults(bootstrap=30)
TABULAR = TabularSettings.defaults("clinical")


def _cohort(n: int = 160, seed: int = 3) -> pd.DataFrame:
    """Exponential RFS with hazard exp(1.2 z) of standardised tumour size z; follow-up 28-60
    months; splits train (half), tune (a quarter), test at two sites."""
    rng = np.random.default_rng(seed)
    size = rng.lognormal(np.log(2.5), 0.4, n)
    z = (np.log(size) - np.log(2.5)) / 0.4
    t_event = rng.exponential(30.0 * np.exp(-1.2 * z))
    follow = rng.uniform(28.0, 60.0, n)
    time = np.round(np.minimum(t_event, follow), 1).clip(0.5)
    event = (t_event <= follow).astype(int)
    split = np.array(["train"] * (n // 2) + ["tune"] * (n // 4) + ["test"] * (n - 3 * n // 4))
    frame = pd.DataFrame(
        {
            "patient_id": [f"P{i:04d}" for i in range(n)],
            "split": split,
            "cohort": np.where(split == "test", "test", "train"),
            "site": np.where(split == "test", np.where(np.arange(n) % 2, "siteB", "siteC"), "A"),
            "er": ((time <= 24) & (event == 1)).astype(int),
            "rfs_months": time,
            "rfs_event": event,
            "tumor_size_cm": size,
            "tumor_number": rng.integers(1, 3, n),
            "hbv": rng.integers(0, 2, n),
            "tp_g_l": rng.normal(68, 7, n),
            "afp_ng_ml": rng.lognormal(3, 2, n),
            "Pre_signature": 1 / (1 + np.exp(-(z + rng.normal(0, 1, n)))),
            "PrePost_signature": 1 / (1 + np.exp(-(1.5 * z + rng.normal(0, 0.5, n)))),
        }
    )
    frame["PrePost"] = frame["PrePost_signature"]  # a binary model's score column
    frame["Clinical"] = size
    return frame


def test_predictor_sets_follow_the_binary_models():
    sets = data.predictor_sets("PrePost", ["min_margin_mm"])
    assert list(sets) == ["Clinical", "Pre", "PrePost", "DL_Clinical", *MARGIN_MODELS]
    assert sets["Clinical"] == list(CLINICAL_FEATURES)
    assert sets["DL_Clinical"] == [*CLINICAL_FEATURES, "PrePost_signature"]
    assert sets["DL_Clinical_Margin"][-2:] == ["PrePost_signature", "min_margin_mm"]
    assert "Clinical_Margin" not in data.predictor_sets("Pre")


def test_cox_recovers_the_size_effect_and_reports_constant_predictors():
    frame = _cohort()
    frame.loc[frame["split"] == "train", "hbv"] = 0  # constant among the training patients
    models = stage.fit_cox_models(frame, {"Clinical": list(CLINICAL_FEATURES)}, TABULAR, 0.01)
    table = stage.cox_table(models, frame)
    size = table[table["variable"] == "tumor_size_cm"].iloc[0]
    assert size["hr"] > 1.5  # true: exp(1.2) per SD of log size
    assert size["ci_low"] > 1
    hbv = table[table["variable"] == "hbv"].iloc[0]
    assert np.isnan(hbv["hr"])
    assert "not estimable" in hbv["note"]
    assert table["variable"].iloc[-1] == "global"
    assert 0 <= table.loc[table["variable"] == "global", "ph_p"].iloc[0] <= 1


def test_refusals_name_the_patient_or_the_cohort():
    frame = _cohort()
    bad = frame.copy()
    bad.loc[5, "rfs_months"] = 0.0
    with pytest.raises(RecurError, match="P0005"):
        stage.check_outcomes(bad)
    none = frame.copy()
    none.loc[none["split"] == "train", "rfs_event"] = 0
    with pytest.raises(RecurError, match="training cohort: no recurrence"):
        stage.check_outcomes(none)


def test_survival_table_rows_cis_and_paired_comparisons():
    frame = _cohort()
    sets = {"PrePost": ["PrePost_signature"], "Clinical": list(CLINICAL_FEATURES)}
    models = stage.fit_cox_models(frame, sets, TABULAR, 0.01)
    scores = stage.cox_scores(models, frame, SETTINGS.curve_grid())
    long, compare = stage.survival_table(
        frame, scores, ["PrePost"], SETTINGS, table2_resamples=50, seed=1, level=0.95
    )
    cohorts = ["training", "tuning", "external", "siteB", "siteC"]
    assert list(long["cohort"].unique()) == cohorts
    assert len(long) == len(cohorts) * 3 * 5  # (2 Cox + 1 binary) x 5 metrics
    ok = np.isfinite(long["estimate"])
    assert ((long["ci_low"] <= long["estimate"]) & (long["estimate"] <= long["ci_high"]))[ok].all()
    binary_ibs = long[(long["kind"] == "binary") & (long["metric"] == "ibs")]
    assert binary_ibs["estimate"].isna().all()
    assert (binary_ibs["note"] == "a score, not a survival function").all()
    ext = long[(long["cohort"] == "external") & (long["metric"] == "harrell_c")]
    # the Cox model of one signature is monotone in it: same ordering, same C, zero difference
    c = ext.set_index(["model", "kind"])["estimate"]
    assert c[("PrePost", "cox")] == pytest.approx(c[("PrePost", "binary")])
    same = compare[
        (compare["model_a"] == "PrePost (cox)") & (compare["model_b"] == "PrePost (binary)")
    ]
    assert (same["difference"].abs() < 1e-12).all()
    assert (same["p"] == 1).all()
    assert c[("Clinical", "cox")] > 0.6  # size drives the hazard


def test_resamples_are_table2s():
    """The CIs use the first survival.bootstrap rows of the draw Table 2 makes for the cohort
    (stratified_indices with Table 2's resample count and seed + cohort index), which differ
    from a fresh draw of that smaller size."""
    from recur.evaluate.metrics import percentile_ci, stratified_indices
    from recur.survival import metrics

    frame = _cohort()
    models = stage.fit_cox_models(frame, {"Clinical": list(CLINICAL_FEATURES)}, TABULAR, 0.01)
    scores = stage.cox_scores(models, frame, SETTINGS.curve_grid())
    long, _ = stage.survival_table(
        frame, scores, [], SETTINGS, table2_resamples=50, seed=1, level=0.95
    )
    row = long[(long["cohort"] == "external") & (long["metric"] == "harrell_c")].iloc[0]
    ext = (frame["split"] == "test").to_numpy()  # external: the third cohort (seed + 2)
    y = frame["er"].to_numpy()[ext]
    idx = stratified_indices(y, 50, 1 + 2)[: SETTINGS.bootstrap]
    assert not np.array_equal(idx, stratified_indices(y, SETTINGS.bootstrap, 1 + 2))
    train = (frame["split"] == "train").to_numpy()
    t, e = frame["rfs_months"].to_numpy(float), frame["rfs_event"].to_numpy(int)
    boot = metrics.bootstrap_metrics(
        t[train],
        e[train],
        t[ext],
        e[ext],
        {"c": scores["Clinical"][0][ext]},
        {"c": None},
        idx,
        tau=24.0,
        auc_times=SETTINGS.auc_months,
    )
    lo, hi, _ = percentile_ci(boot["c"]["harrell_c"], row["estimate"], 0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi))


def test_analyse_writes_every_table_and_figure():
    frame = _cohort()
    sets = data.predictor_sets("PrePost")
    result = analysis.analyse(
        frame, sets, ["PrePost"], TABULAR, SETTINGS, table2_resamples=50, seed=1, level=0.95
    )
    assert set(result.figures) == {"td_auc", "calibration", "km"}
    assert set(result.cutoffs["model"]) == set(sets)
    assert {"rfs_12m", "rfs_24m", "risk", "high_risk"} <= set(result.predictions.columns)
    assert len(result.predictions) == len(frame) * len(sets)
    assert set(result.curves["kind"]) == {"cox", "binary"}
    wide = stage.survival_wide(result.table)
    assert {"harrell_c", "uno_c", "td_auc_12", "td_auc_24", "ibs", "notes"} <= set(wide.columns)
