"""recur.evaluate.table1: the paper's test choice and the table layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recur.evaluate import table1


def test_continuous_normal_uses_t_test():
    a = stats.norm.ppf(np.linspace(0.05, 0.95, 20), loc=10, scale=2)
    b = stats.norm.ppf(np.linspace(0.05, 0.95, 25), loc=11, scale=2)
    r = table1.compare_continuous(a, b, 0.05)
    assert r["test"] == "t-test"
    assert r["normal"]
    assert r["p"] == pytest.approx(stats.ttest_ind(a, b).pvalue)
    assert r["summary_a"] == f"{a.mean():.1f} ± {a.std(ddof=1):.1f}"


def test_continuous_skewed_uses_mann_whitney_and_median_iqr():
    a = stats.expon.ppf(np.linspace(0.01, 0.99, 30))
    b = stats.norm.ppf(np.linspace(0.05, 0.95, 20), loc=1)
    r = table1.compare_continuous(a, b, 0.05)
    assert r["test"] == "Mann-Whitney U"
    assert r["p"] == pytest.approx(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    med, q1, q3 = np.median(a), np.percentile(a, 25), np.percentile(a, 75)
    assert r["summary_a"] == f"{med:.1f} ({q1:.1f}, {q3:.1f})"


def test_continuous_tiny_group_is_not_called_normal():
    r = table1.compare_continuous([1.0, 2.0], [1.0, 2.0, 3.0, 4.0, 5.0], 0.05)
    assert r["test"] == "Mann-Whitney U"


def test_categorical_fisher_for_small_2x2_hand_value():
    # margins 3/3 of 6: P(table) = 1/C(6,3) = 1/20, two-sided = 2/20
    r = table1.compare_categorical(np.array([[3, 0], [0, 3]]))
    assert r["test"] == "Fisher exact"
    assert r["p"] == pytest.approx(0.1)


def test_categorical_chi2_hand_value():
    # chi2 = N (ad - bc)^2 / (r1 r2 c1 c2) = 100 * 500^2 / 50^4 = 4.0 (no Yates correction)
    r = table1.compare_categorical(np.array([[20, 30], [30, 20]]))
    assert r["test"] == "chi-squared"
    assert r["p"] == pytest.approx(stats.chi2.sf(4.0, 1))


def test_categorical_single_level_not_tested():
    r = table1.compare_categorical(np.array([[5, 7], [0, 0]]))
    assert r["test"] == "none"
    assert np.isnan(r["p"])


def test_table1_layout_counts_and_missing():
    clin = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(12)],
            "cohort": ["train"] * 8 + ["test"] * 4,
            "er": [1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            "tumor_size_cm": [2.0, 3.0, 2.5, 1.0, 1.2, np.nan, 1.1, 1.5, 2.0, 1.0, 1.1, 1.3],
            "tumor_number": [1, 2, 3, 1, 1, 1, 1, 2, 1, 1, 1, 1],
            "hbv": [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0],
            "tp_g_l": [70.0] * 12,
            "afp_ng_ml": [10.0] * 12,
        }
    )
    t = table1.table1(clin, alpha=0.05)
    assert list(t.columns) == [
        "variable",
        "level",
        "train_er",
        "train_non_er",
        "train_p",
        "train_test",
        "test_er",
        "test_non_er",
        "test_p",
        "test_test",
    ]
    assert tuple(t.iloc[0][["train_er", "train_non_er", "test_er", "test_non_er"]]) == (
        "3",
        "5",
        "1",
        "3",
    )
    # optional columns absent -> not in the table
    assert "Age (y)" not in set(t["variable"])
    multi = t[(t["variable"] == "No. of tumor") & (t["level"] == "Multiple")].iloc[0]
    assert multi["train_er"] == "2 (66.7)"
    assert multi["train_non_er"] == "1 (20.0)"
    head = t[(t["variable"] == "No. of tumor") & (t["level"] == "")].iloc[0]
    assert head["train_test"] == "Fisher exact"
    miss = t[(t["variable"] == "Tumor size (cm)") & (t["level"] == "Missing")].iloc[0]
    assert (miss["train_er"], miss["train_non_er"]) == ("0", "1")
    md = table1.to_markdown(t)
    assert md.startswith("| Variable | Level | Training ER |")
