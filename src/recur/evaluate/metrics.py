"""Performance statistics of the ER models: metrics, bootstrap CIs, cutoffs, DeLong, calibration.

Everything here is a pure function over numpy arrays (the tables over the study's cohorts are
built in :mod:`recur.evaluate.tables`, the input files read in :mod:`recur.evaluate.readers`).
Conventions (see ``docs/methods/statistics.md``):

* ``y`` is the binary outcome (1 = early recurrence), ``score`` the predicted ER probability.
* A patient is called positive (high risk) when ``score >= cutoff``.
* Ratios whose denominator is zero (0/0, e.g. PPV when nobody is called positive) are **NaN**:
  the quantity is undefined, not 0. Bootstrap CIs are taken over the resamples in which the
  metric is defined; the number of undefined resamples is reported.
* Percentile bootstrap CIs are widened, when needed, to contain the point estimate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from recur.errors import RecurError

#: The threshold metrics, in the paper's order (keys of :func:`classification_metrics`).
CLASS_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")
#: Every metric of Table 2.
METRICS: tuple[str, ...] = ("auc", *CLASS_METRICS)
METRIC_LABELS: dict[str, str] = {
    "auc": "AUC",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1-score",
}


# --------------------------------------------------------------------------- input checks
def check_binary(y: object, name: str = "y", *, both_classes: bool = True) -> np.ndarray:
    """Return ``y`` as a 1-D int array of 0/1; raise :class:`RecurError` otherwise."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise RecurError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise RecurError(f"{name} is empty")
    try:
        f = arr.astype(float)
    except (TypeError, ValueError):
        raise RecurError(f"{name} must hold 0/1 values, got dtype {arr.dtype}") from None
    if not np.isin(f, (0.0, 1.0)).all():
        bad = np.unique(f[~np.isin(f, (0.0, 1.0))])[:5]
        raise RecurError(f"{name} must hold only 0 and 1, found {bad.tolist()}")
    out = f.astype(np.int64)
    if both_classes and (out.min() == out.max()):
        raise RecurError(
            f"{name} holds a single class ({int(out[0])} for all {out.size}): "
            "this statistic needs both outcomes"
        )
    return out


def check_scores(score: object, n: int, name: str = "score") -> np.ndarray:
    """Return ``score`` as a finite 1-D float array of length ``n``."""
    arr = np.asarray(score, dtype=float)
    if arr.ndim != 1 or arr.size != n:
        raise RecurError(f"{name} must be 1-D of length {n} (as y), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise RecurError(f"{name} holds {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    return arr


def _check_pair(y: object, score: object, *, both_classes: bool = True):
    yy = check_binary(y, both_classes=both_classes)
    return yy, check_scores(score, yy.size)


# --------------------------------------------------------------------------- metrics
def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (works on arrays)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def metrics_from_counts(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    """The six threshold metrics from confusion-matrix counts (scalars or arrays).

    accuracy = (TP+TN)/n, sensitivity = TP/(TP+FN), specificity = TN/(TN+FP),
    PPV = TP/(TP+FP), NPV = TN/(TN+FN), F1 = 2TP/(2TP+FP+FN). A zero denominator gives NaN.
    """
    tp, fp, tn, fn = (np.asarray(v, dtype=float) for v in (tp, fp, tn, fn))
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def classification_metrics(y_true: object, y_pred: object) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, PPV, NPV and F1 of binary predictions.

    Keys exactly ``accuracy, sensitivity, specificity, ppv, npv, f1``; textbook values from
    the confusion matrix. A metric whose denominator is zero is ``nan`` (undefined), e.g.
    sensitivity when there is no positive patient, PPV when nobody is predicted positive,
    F1 when there is neither a positive patient nor a positive prediction.
    """
    y = check_binary(y_true, "y_true", both_classes=False)
    p = check_binary(y_pred, "y_pred", both_classes=False)
    if p.size != y.size:
        raise RecurError(f"y_pred has {p.size} values but y_true has {y.size}")
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    tn = int(((p == 0) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    return {k: float(v) for k, v in metrics_from_counts(tp, fp, tn, fn).items()}


def auc(y: object, score: object) -> float:
    """Area under the ROC curve (ties count 1/2). Needs both classes."""
    yy, s = _check_pair(y, score)
    return float(roc_auc_score(yy, s))


def youden_cutoff(y: object, score: object) -> float:
    """The score cutoff maximising Youden's J = sensitivity + specificity - 1.

    Candidates are the distinct observed scores (sklearn ``roc_curve`` thresholds, the
    infinite "nobody positive" threshold excluded); a patient is positive when
    ``score >= cutoff``. Tie rule: when several cutoffs reach the maximum J, the **highest**
    one is chosen (fewest patients called high risk).
    """
    yy, s = _check_pair(y, score)
    fpr, tpr, thr = roc_curve(yy, s, drop_intermediate=False)
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    j = tpr - fpr
    # thresholds are decreasing, so argmax (first maximum) is the highest tied cutoff
    return float(thr[int(np.argmax(j))])


# --------------------------------------------------------------------------- bootstrap
def stratified_indices(y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` resample indices, drawn with replacement within each outcome class.

    Each resample keeps the numbers of events and non-events of the data, so every resample
    holds both classes (when the data do).
    """
    rng = np.random.default_rng(seed)
    parts = []
    for cls in (1, 0):
        idx = np.flatnonzero(y == cls)
        if idx.size:
            parts.append(idx[rng.integers(0, idx.size, size=(n_boot, idx.size))])
    return np.concatenate(parts, axis=1)


def _auc_rows(y_rows: np.ndarray, s_rows: np.ndarray) -> np.ndarray:
    """AUC of every row (Mann-Whitney with midranks); NaN for rows with a single class."""
    ranks = stats.rankdata(s_rows, axis=1)
    n_pos = y_rows.sum(axis=1).astype(float)
    n_neg = y_rows.shape[1] - n_pos
    rank_pos = (ranks * y_rows).sum(axis=1)
    return _ratio(rank_pos - n_pos * (n_pos + 1) / 2, n_pos * n_neg)


def resampled_metrics(
    y: np.ndarray, score: np.ndarray, cutoff: float, idx: np.ndarray
) -> dict[str, np.ndarray]:
    """Every Table 2 metric for each resample ``idx`` (rows of indices); vectorised."""
    y_r = y[idx]
    s_r = score[idx]
    pred = s_r >= cutoff
    pos = y_r == 1
    tp = (pred & pos).sum(axis=1)
    fp = (pred & ~pos).sum(axis=1)
    fn = (~pred & pos).sum(axis=1)
    tn = (~pred & ~pos).sum(axis=1)
    out = {"auc": _auc_rows(y_r, s_r)}
    out.update(metrics_from_counts(tp, fp, tn, fn))
    return out


def percentile_ci(values: np.ndarray, estimate: float, level: float) -> tuple[float, float, int]:
    """Percentile interval of the defined (non-NaN) ``values``, widened to hold ``estimate``.

    Returns ``(low, high, n_undefined)``. The percentile interval can exclude the point
    estimate when the bootstrap distribution is degenerate or very skewed (e.g. a metric at
    1.0 on most resamples); the interval is then extended to the estimate, so that
    ``low <= estimate <= high`` always holds. With no defined value, both bounds are NaN.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    n_undef = int((~ok).sum())
    if not ok.any():
        return math.nan, math.nan, n_undef
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(v[ok], [alpha, 1.0 - alpha])
    if np.isfinite(estimate):
        lo, hi = min(lo, estimate), max(hi, estimate)
    return float(lo), float(hi), n_undef


def bootstrap_ci(
    y: object,
    score: object,
    cutoff: float,
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> pd.DataFrame:
    """Point estimates and stratified percentile-bootstrap CIs of every Table 2 metric.

    ``y`` must hold 0/1 (a single class is allowed: AUC, and the class-specific metrics,
    are then NaN). Returns a DataFrame with one row per metric of :data:`METRICS` and columns
    ``metric, estimate, ci_low, ci_high, n_undefined`` (resamples where the metric was 0/0).
    """
    yy, s = _check_pair(y, score, both_classes=False)
    if n_boot < 1:
        raise RecurError(f"n_boot must be >= 1, got {n_boot}")
    point = resampled_metrics(yy, s, cutoff, np.arange(yy.size)[None, :])
    boot = resampled_metrics(yy, s, cutoff, stratified_indices(yy, n_boot, seed))
    rows = []
    for m in METRICS:
        est = float(point[m][0])
        lo, hi, n_undef = percentile_ci(boot[m], est, level)
        rows.append(
            {"metric": m, "estimate": est, "ci_low": lo, "ci_high": hi, "n_undefined": n_undef}
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- decision curves
def net_benefit(y: object, score: object, thresholds: Sequence[float]) -> np.ndarray:
    """Net benefit of treating patients with ``score >= pt`` at each threshold ``pt``.

    NB(pt) = TP/n - FP/n * pt / (1 - pt) (Vickers & Elkin 2006). Thresholds must lie in [0, 1).
    """
    yy, s = _check_pair(y, score, both_classes=False)
    pt = np.asarray(thresholds, dtype=float)
    if pt.ndim != 1 or not ((pt >= 0) & (pt < 1)).all():
        raise RecurError("thresholds must be a 1-D sequence of values in [0, 1)")
    treat = s[None, :] >= pt[:, None]
    n = yy.size
    tp = (treat & (yy == 1)).sum(axis=1)
    fp = (treat & (yy == 0)).sum(axis=1)
    return tp / n - fp / n * pt / (1.0 - pt)


def net_benefit_treat_all(y: object, thresholds: Sequence[float]) -> np.ndarray:
    """Net benefit of treating everybody: prevalence - (1 - prevalence) * pt / (1 - pt)."""
    yy = check_binary(y, both_classes=False)
    pt = np.asarray(thresholds, dtype=float)
    prev = yy.mean()
    return prev - (1.0 - prev) * pt / (1.0 - pt)


# --------------------------------------------------------------------------- DeLong
def _midranks(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average", axis=-1)


def delong_auc_cov(y: object, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance for ``k`` score rows on the same patients.

    Fast algorithm of Sun & Xu (2014, IEEE SPL 21:1389): midranks of the positives, the
    negatives and all patients give the structural components in O(k n log n).
    ``scores`` has shape (k, n). Returns ``(aucs (k,), cov (k, k))``.
    """
    yy = check_binary(y)
    sc = np.atleast_2d(np.asarray(scores, dtype=float))
    for i, row in enumerate(sc):
        check_scores(row, yy.size, f"scores[{i}]")
    x = sc[:, yy == 1]
    z = sc[:, yy == 0]
    m, n = x.shape[1], z.shape[1]
    tx = _midranks(x)
    tz = _midranks(z)
    tall = _midranks(np.concatenate([x, z], axis=1))
    aucs = tall[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tall[:, :m] - tx) / n  # per positive: fraction of negatives scored below
    v10 = 1.0 - (tall[:, m:] - tz) / m  # per negative: fraction of positives scored above
    sx = np.atleast_2d(np.cov(v01)) if m > 1 else np.zeros((sc.shape[0],) * 2)
    sz = np.atleast_2d(np.cov(v10)) if n > 1 else np.zeros((sc.shape[0],) * 2)
    return aucs, sx / m + sz / n


def delong_test(y: object, score_a: object, score_b: object) -> dict[str, float]:
    """Paired two-sided DeLong test of AUC(a) = AUC(b) on the same patients.

    Returns ``auc_a, auc_b, diff (a - b), se, z, p``. When the variance of the difference is
    zero (e.g. identical rankings) the test is undefined: ``z`` = 0 and ``p`` = 1 if the AUCs
    are equal, else ``z`` = +-inf and ``p`` = 0.
    """
    yy = check_binary(y)
    a = check_scores(score_a, yy.size, "score_a")
    b = check_scores(score_b, yy.size, "score_b")
    aucs, cov = delong_auc_cov(yy, np.vstack([a, b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
        p = 1.0 if z == 0.0 else 0.0
        se = 0.0
    else:
        se = math.sqrt(var)
        z = diff / se
        p = float(2.0 * stats.norm.sf(abs(z)))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "diff": diff,
        "se": se,
        "z": z,
        "p": p,
    }


# --------------------------------------------------------------------------- calibration
def brier(y: object, score: object) -> float:
    """Brier score: mean squared difference between predicted probability and outcome."""
    yy, s = _check_pair(y, score, both_classes=False)
    if ((s < 0) | (s > 1)).any():
        raise RecurError("Brier score needs probabilities in [0, 1]")
    return float(np.mean((s - yy) ** 2))


def _logit(p: np.ndarray, eps: float) -> np.ndarray:
    q = np.clip(p, eps, 1.0 - eps)
    return np.log(q / (1.0 - q))


def calibration_intercept_slope(y: object, score: object, eps: float = 1e-6) -> tuple[float, float]:
    """Calibration intercept (in the large) and slope of predicted probabilities.

    Slope: coefficient of logit(p) in the logistic regression y ~ 1 + logit(p). Intercept:
    calibration-in-the-large, the constant of y ~ 1 with offset logit(p) (0 when the mean
    prediction matches the event rate). Probabilities are clipped to [eps, 1 - eps]. Returns
    NaN for a fit that does not converge (e.g. perfect separation).
    """
    import statsmodels.api as sm

    yy, s = _check_pair(y, score)
    lp = _logit(s, eps)
    fam = sm.families.Binomial()
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r0 = sm.GLM(yy, np.ones((yy.size, 1)), family=fam, offset=lp).fit()
            out.append(float(r0.params[0]) if r0.converged else math.nan)
        except Exception:
            out.append(math.nan)
        try:
            if np.ptp(lp) == 0:
                raise ValueError("constant predictions")
            r1 = sm.GLM(yy, sm.add_constant(lp, has_constant="add"), family=fam).fit()
            out.append(float(r1.params[1]) if r1.converged else math.nan)
        except Exception:
            out.append(math.nan)
    return out[0], out[1]


def calibration_curve_lowess(
    y: object, score: object, frac: float
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed calibration curve: lowess of the outcome on the predicted probability.

    Returns ``(p_sorted, observed)``, the observed proportion clipped to [0, 1].
    """
    from statsmodels.nonparametric.smoothers_lowess import lowess

    yy, s = _check_pair(y, score, both_classes=False)
    fit = lowess(yy.astype(float), s, frac=frac, it=0, return_sorted=True)
    return fit[:, 0], np.clip(fit[:, 1], 0.0, 1.0)
