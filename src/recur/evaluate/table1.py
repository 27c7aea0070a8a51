"""Table 1: baseline characteristics, ER vs non-ER, in the training and external cohorts.

The paper's tests: a continuous variable is summarised as mean ± SD and compared with
Student's t-test when the Shapiro–Wilk test does not reject normality (p >= alpha) in *both*
groups, else as median (IQR) with the Mann–Whitney U test (two-sided). A categorical
variable is given as counts (%) and compared with Pearson's χ² test (no continuity
correction); for a 2×2 table with any expected count < 5, Fisher's exact test is used.
Missing values are left out of each test and counted on a ``Missing`` row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from recur.constants import VARIABLE_LABELS
from recur.errors import RecurError


@dataclass(frozen=True)
class Variable:
    """One Table 1 row group: a column, its label and kind (continuous or categorical)."""

    column: str
    label: str
    kind: str  # "continuous" | "categorical"
    levels: tuple[tuple[object, str], ...] = ()  # (value, label) for categorical


NO_YES = ((0, "Absence"), (1, "Presence"))


def _variable(column: str, kind: str, levels: tuple[tuple[object, str], ...] = ()) -> Variable:
    return Variable(column, VARIABLE_LABELS[column], kind, levels)


#: Table 1 variables in the paper's order, labelled by :data:`recur.constants.VARIABLE_LABELS`;
#: those absent from clinical.csv are skipped.
VARIABLES: tuple[Variable, ...] = (
    _variable("age", "continuous"),
    _variable("sex", "categorical", (("F", "Female"), ("M", "Male"))),
    _variable("comorbidity", "categorical", NO_YES),
    _variable("hbv", "categorical", NO_YES),
    _variable("albi", "continuous"),
    _variable("cirrhosis", "categorical", NO_YES),
    _variable("tumor_size_cm", "continuous"),
    _variable("tumor_multiple", "categorical", ((0, "Single"), (1, "Multiple"))),
    _variable("afp_ng_ml", "continuous"),
    _variable("alb_g_l", "continuous"),
    _variable("tp_g_l", "continuous"),
    _variable("ast_u_l", "continuous"),
    _variable("alt_u_l", "continuous"),
    _variable("tbil_umol_l", "continuous"),
)
COHORT_LABELS = {"train": "Training", "test": "External"}


def compare_continuous(a: Sequence[float], b: Sequence[float], alpha: float) -> dict:
    """Summaries of two groups and the p-value of the test chosen by Shapiro–Wilk.

    Normal (Shapiro–Wilk p >= ``alpha`` in both groups, each with >= 3 values and not
    constant) -> Student's t-test (equal variances), ``mean ± SD``; otherwise Mann–Whitney U
    (two-sided), ``median (Q1, Q3)``. Returns ``test, p, summary_a, summary_b, normal``.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]

    def normal(v: np.ndarray) -> bool:
        if v.size < 3 or np.ptp(v) == 0:
            return False
        return bool(stats.shapiro(v).pvalue >= alpha)

    is_normal = normal(x) and normal(y)
    p = math.nan
    if is_normal:
        test = "t-test"
        p = float(stats.ttest_ind(x, y, equal_var=True).pvalue)
        summ = [f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" for v in (x, y)]
    else:
        test = "Mann-Whitney U"
        if x.size and y.size:
            p = float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
        summ = [
            f"{np.median(v):.1f} ({np.percentile(v, 25):.1f}, {np.percentile(v, 75):.1f})"
            if v.size
            else "NA"
            for v in (x, y)
        ]
    return {"test": test, "p": p, "summary_a": summ[0], "summary_b": summ[1], "normal": is_normal}


def compare_categorical(table: np.ndarray) -> dict:
    """Test of a levels × groups contingency table of counts.

    2×2 with any expected count < 5 -> Fisher's exact test; otherwise Pearson's χ² without
    continuity correction. Rows or columns that are all zero are dropped first; with fewer
    than 2 rows or columns left there is nothing to test (p = NaN). Returns ``test, p``.
    """
    t = np.asarray(table, dtype=float)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    if t.shape[0] < 2 or t.shape[1] < 2:
        return {"test": "none", "p": math.nan}
    expected = stats.contingency.expected_freq(t)
    if t.shape == (2, 2) and (expected < 5).any():
        return {"test": "Fisher exact", "p": float(stats.fisher_exact(t.astype(int)).pvalue)}
    res = stats.chi2_contingency(t, correction=False)
    return {"test": "chi-squared", "p": float(res.pvalue)}


def _prepare(clinical: pd.DataFrame) -> pd.DataFrame:
    df = clinical.copy()
    if "tumor_number" in df:
        num = pd.to_numeric(df["tumor_number"], errors="coerce")
        df["tumor_multiple"] = np.where(num.isna(), np.nan, (num > 1).astype(float))
    if "sex" in df:
        df["sex"] = df["sex"].map(lambda v: v.strip().upper() if isinstance(v, str) else np.nan)
    return df


def table1(clinical: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Table 1 as a DataFrame (one row per variable level, columns per cohort and group).

    ``clinical`` is the validated clinical table (``cohort`` train|test, ``er`` 0/1). Columns:
    ``variable, level, train_er, train_non_er, train_p, train_test, test_er, test_non_er,
    test_p, test_test``; the first row gives the group sizes.
    """
    for col in ("cohort", "er"):
        if col not in clinical:
            raise RecurError(f"clinical.csv: column '{col}' is required for Table 1")
    df = _prepare(clinical)
    cohorts = [c for c in ("train", "test") if (df["cohort"] == c).any()]
    groups = {
        c: (df[(df["cohort"] == c) & (df["er"] == 1)], df[(df["cohort"] == c) & (df["er"] == 0)])
        for c in cohorts
    }
    rows: list[dict] = []
    head = {"variable": "Patients", "level": "n"}
    for c in cohorts:
        er, non = groups[c]
        head |= {
            f"{c}_er": str(len(er)),
            f"{c}_non_er": str(len(non)),
            f"{c}_p": "",
            f"{c}_test": "",
        }
    rows.append(head)
    for var in VARIABLES:
        if var.column not in df or df[var.column].isna().all():
            continue
        if var.kind == "continuous":
            row = {"variable": var.label, "level": ""}
            for c in cohorts:
                er, non = groups[c]
                r = compare_continuous(er[var.column], non[var.column], alpha)
                row |= {
                    f"{c}_er": r["summary_a"],
                    f"{c}_non_er": r["summary_b"],
                    f"{c}_p": _fmt_p(r["p"]),
                    f"{c}_test": r["test"],
                }
            rows.append(row)
        else:
            head_row = {"variable": var.label, "level": ""}
            level_rows = [{"variable": var.label, "level": lab} for _, lab in var.levels]
            for c in cohorts:
                er, non = groups[c]
                counts = np.array(
                    [[(g[var.column] == val).sum() for g in (er, non)] for val, _ in var.levels]
                )
                r = compare_categorical(counts)
                head_row |= {
                    f"{c}_er": "",
                    f"{c}_non_er": "",
                    f"{c}_p": _fmt_p(r["p"]),
                    f"{c}_test": r["test"],
                }
                tot = [int(g[var.column].notna().sum()) for g in (er, non)]
                for lr, cnt in zip(level_rows, counts, strict=True):
                    lr |= {
                        f"{c}_er": _count(cnt[0], tot[0]),
                        f"{c}_non_er": _count(cnt[1], tot[1]),
                        f"{c}_p": "",
                        f"{c}_test": "",
                    }
            rows.append(head_row)
            rows.extend(level_rows)
        miss = {c: [int(g[var.column].isna().sum()) for g in groups[c]] for c in cohorts}
        if any(sum(v) for v in miss.values()):
            mr = {"variable": var.label, "level": "Missing"}
            for c in cohorts:
                mr |= {
                    f"{c}_er": str(miss[c][0]),
                    f"{c}_non_er": str(miss[c][1]),
                    f"{c}_p": "",
                    f"{c}_test": "",
                }
            rows.append(mr)
    cols = ["variable", "level"]
    for c in cohorts:
        cols += [f"{c}_er", f"{c}_non_er", f"{c}_p", f"{c}_test"]
    out = pd.DataFrame(rows)
    return out[cols].fillna("")


def _count(k: int, n: int) -> str:
    return f"{int(k)} ({100.0 * k / n:.1f})" if n else f"{int(k)} (NA)"


def _fmt_p(p: float) -> str:
    from recur.evaluate.tables import format_p

    return format_p(p)


def to_markdown(t: pd.DataFrame) -> str:
    """Table 1 as a Markdown table with readable headers."""
    names = {"variable": "Variable", "level": "Level"}
    for c, lab in COHORT_LABELS.items():
        names |= {
            f"{c}_er": f"{lab} ER",
            f"{c}_non_er": f"{lab} non-ER",
            f"{c}_p": f"{lab} P",
            f"{c}_test": f"{lab} test",
        }
    from recur.evaluate.tables import markdown_table

    body = markdown_table(t.rename(columns=names))
    notes = (
        "\n\nContinuous: mean ± SD (Student's t-test) when Shapiro–Wilk does not reject "
        "normality in both groups, else median (Q1, Q3) (Mann–Whitney U). Categorical: n (%) "
        "(Pearson χ², or Fisher's exact test for a 2×2 table with an expected count < 5).\n"
    )
    return body + notes
