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
* A proportion at 0 or 1 has a zero-width bootstrap interval (every resample gives the same
  value); it gets a Wilson score interval instead (:func:`metric_interval`). An AUC or F1 at a
  bound, or with a zero-width interval, keeps its bootstrap interval with a note saying so.
* A statistic that the data cannot define (a DeLong test with zero variance, a calibration
  slope under separation) is NaN with the reason in a ``note``, never a number that looks
  like a result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from recur.errors import RecurError

#: The threshold metrics, in the paper's order (keys of :func:`classification_metrics`).
CLASS_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")
#: Every metric of Table 2.
METRICS: tuple[str, ...] = ("auc", *CLASS_METRICS)
#: The threshold metrics that are proportions k / n of the confusion counts (F1 is not).
PROPORTION_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "ppv", "npv")
#: The interval of a proportion whose bootstrap interval has zero width (statsmodels
#: ``proportion_confint`` method): the Wilson score interval (:func:`proportion_interval`).
PROPORTION_CI_METHOD = "wilson"
#: The ``ci_method`` of each row of Table 2: percentile bootstrap, Wilson score interval, or
#: none (the estimate itself is undefined).
CI_METHODS: tuple[str, ...] = ("bootstrap", PROPORTION_CI_METHOD, "none")
#: A calibration slope beyond +-this is reported as undefined: such a slope comes from a fit
#: that nearly separates the outcomes, and its value says nothing about calibration.
CALIBRATION_SLOPE_LIMIT = 10.0
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


def confusion_counts(y: object, score: object, cutoff: float) -> dict[str, int]:
    """``tp, fp, tn, fn`` of calling a patient positive when ``score >= cutoff``."""
    yy, s = _check_pair(y, score, both_classes=False)
    pred = s >= cutoff
    pos = yy == 1
    return {
        "tp": int((pred & pos).sum()),
        "fp": int((pred & ~pos).sum()),
        "tn": int((~pred & ~pos).sum()),
        "fn": int((~pred & pos).sum()),
    }


def proportion_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, tuple[int, int]]:
    """``(k, n)`` of each metric of :data:`PROPORTION_METRICS`: the metric is k / n."""
    return {
        "accuracy": (tp + tn, tp + fp + tn + fn),
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
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


def proportion_interval(
    k: int, n: int, level: float, method: str = PROPORTION_CI_METHOD
) -> tuple[float, float]:
    """Confidence interval of the proportion ``k / n`` (statsmodels ``proportion_confint``).

    ``method`` ``"wilson"`` (the default, :data:`PROPORTION_CI_METHOD`) is the Wilson score
    interval: it inverts the score test, so at k = 0 it is [0, z^2 / (n + z^2)] and at k = n
    [n / (n + z^2), 1], never of zero width and never outside [0, 1]. It is the interval
    Brown, Cai & DasGupta (2001, Stat Sci 16:101) and Agresti & Coull (1998) recommend for
    small n: its coverage is close to the nominal level, where the Clopper-Pearson interval
    (``"beta"``, available here) guarantees at least the nominal coverage by being markedly
    wider (at k = 0, n = 5, 95%: upper bound 0.522 against Wilson's 0.434). ``n`` = 0 gives
    NaN bounds.
    """
    from statsmodels.stats.proportion import proportion_confint

    if method not in ("wilson", "beta"):
        raise RecurError(f"proportion interval method {method!r}: expected 'wilson' or 'beta'")
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise RecurError(f"proportion {k}/{n}: need 0 <= k <= n")
    lo, hi = proportion_confint(int(k), int(n), alpha=1.0 - level, method=method)
    # Wilson's bound at k = 0 or k = n is 0 or 1 up to rounding; report it exactly
    lo = 0.0 if k == 0 else float(lo)
    hi = 1.0 if k == n else float(hi)
    return lo, hi


def metric_interval(
    metric: str,
    estimate: float,
    boot: np.ndarray,
    counts: Mapping[str, int],
    level: float,
) -> dict[str, object]:
    """The interval of one Table 2 metric: ``ci_low, ci_high, n_undefined, ci_method, note``.

    The percentile bootstrap interval (:func:`percentile_ci`) of the resample values ``boot``,
    except where it has zero width, which happens when the estimate is 0 or 1 (every resample
    of a stratified bootstrap then repeats it: a sensitivity of 5/5 is 1 in every resample):

    * a proportion (:data:`PROPORTION_METRICS`) gets the Wilson score interval of its
      confusion counts (:func:`proportion_interval`), ``ci_method`` ``"wilson"``: at 5/5 the
      95% interval is [0.566, 1], not [1, 1];
    * AUC and F1 have no such closed form here; they keep the bootstrap interval and the
      ``note`` says that it is degenerate (an AUC of 1 or 0 is a perfect separation of the
      classes in this cohort, not a certainty about new patients).

    ``counts`` holds ``tp, fp, tn, fn`` of the full sample. An undefined estimate (0/0) has
    ``ci_method`` ``"none"``.
    """
    lo, hi, n_undef = percentile_ci(boot, estimate, level)
    out: dict[str, object] = {
        "ci_low": lo,
        "ci_high": hi,
        "n_undefined": n_undef,
        "ci_method": "bootstrap",
        "note": "",
    }
    if not np.isfinite(estimate):
        out["ci_method"] = "none"
        return out
    boundary = estimate <= 0.0 or estimate >= 1.0
    zero_width = np.isfinite(lo) and np.isfinite(hi) and hi - lo <= 1e-12
    if not (boundary or zero_width):
        return out
    label = METRIC_LABELS.get(metric, metric)
    if metric in PROPORTION_METRICS:
        k, n = proportion_counts(**{c: int(counts[c]) for c in ("tp", "fp", "tn", "fn")})[metric]
        out["ci_low"], out["ci_high"] = proportion_interval(k, n, level)
        out["ci_method"] = PROPORTION_CI_METHOD
        out["note"] = (
            f"{label} {k}/{n}: Wilson score interval (the bootstrap interval has zero width)"
        )
    elif metric == "auc" and boundary:
        out["note"] = (
            f"AUC {estimate:.3f}: the scores separate the classes perfectly in this cohort; "
            "the bootstrap interval is degenerate"
        )
    else:
        out["note"] = f"{label} {estimate:.3f}: the bootstrap interval is degenerate"
    return out


def bootstrap_ci(
    y: object,
    score: object,
    cutoff: float,
    *,
    n_boot: int,
    seed: int,
    level: float,
) -> pd.DataFrame:
    """Point estimates and CIs of every Table 2 metric: stratified percentile bootstrap, or
    Wilson where that has zero width (:func:`metric_interval`).

    ``y`` must hold 0/1 (a single class is allowed: AUC, and the class-specific metrics,
    are then NaN). Returns a DataFrame with one row per metric of :data:`METRICS` and columns
    ``metric, estimate, ci_low, ci_high, n_undefined`` (resamples where the metric was 0/0),
    ``ci_method, note``.
    """
    yy, s = _check_pair(y, score, both_classes=False)
    if n_boot < 1:
        raise RecurError(f"n_boot must be >= 1, got {n_boot}")
    point = resampled_metrics(yy, s, cutoff, np.arange(yy.size)[None, :])
    boot = resampled_metrics(yy, s, cutoff, stratified_indices(yy, n_boot, seed))
    counts = confusion_counts(yy, s, cutoff)
    rows = []
    for m in METRICS:
        est = float(point[m][0])
        rows.append(
            {"metric": m, "estimate": est, **metric_interval(m, est, boot[m], counts, level)}
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


def delong_test(y: object, score_a: object, score_b: object) -> dict[str, float | str]:
    """Paired two-sided DeLong test of AUC(a) = AUC(b) on the same patients.

    Returns ``auc_a, auc_b, diff (a - b), se, z, p, note``. When the variance of the
    difference is zero the test is undefined: ``se`` is 0, ``z`` and ``p`` are NaN and
    ``note`` gives the reason (the two models rank the patients identically, both separate
    the classes perfectly, or the structural components are constant). Otherwise ``note`` is
    empty.
    """
    yy = check_binary(y)
    a = check_scores(score_a, yy.size, "score_a")
    b = check_scores(score_b, yy.size, "score_b")
    aucs, cov = delong_auc_cov(yy, np.vstack([a, b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    note = ""
    if var <= 1e-15:
        se, z, p = 0.0, math.nan, math.nan
        if np.array_equal(_midranks(a), _midranks(b)):
            why = "the two models rank the patients identically"
        elif all(min(v, 1.0 - v) < 1e-12 for v in aucs):
            why = f"both models separate the classes perfectly (AUC {aucs[0]:g} and {aucs[1]:g})"
        else:
            why = "the AUC structural components of both models are constant"
        note = f"{why}: the variance of the AUC difference is 0, so z and p are undefined"
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
        "note": note,
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


def calibration_fit(y: object, score: object, eps: float = 1e-6) -> dict[str, float | str]:
    """Calibration intercept (in the large) and slope of predicted probabilities, with the
    reason when either is undefined: ``{"intercept", "slope", "note"}``.

    Slope: coefficient of logit(p) in the logistic regression y ~ 1 + logit(p). Intercept:
    calibration-in-the-large, the constant of y ~ 1 with offset logit(p) (0 when the mean
    prediction matches the event rate). Probabilities are clipped to [eps, 1 - eps].

    The slope is NaN, the reason in ``note``, when the predictions are constant (no slope to
    fit), when they separate the outcomes (every event scored at least as high as every
    non-event, or the reverse: the maximum-likelihood slope is infinite, and a fit that
    stops returns an arbitrary large number), when the fit does not converge, or when
    ``|slope|`` exceeds :data:`CALIBRATION_SLOPE_LIMIT` (near-separation). The intercept is a
    separate one-parameter fit that separation does not affect; it is NaN only when that fit
    fails. ``note`` is empty when both are defined.
    """
    import statsmodels.api as sm

    yy, s = _check_pair(y, score)
    lp = _logit(s, eps)
    fam = sm.families.Binomial()
    icpt, slope, notes = math.nan, math.nan, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r0 = sm.GLM(yy, np.ones((yy.size, 1)), family=fam, offset=lp).fit()
            if r0.converged and np.isfinite(r0.params[0]):
                icpt = float(r0.params[0])
            else:
                notes.append("intercept: the logistic fit did not converge")
        except Exception as exc:
            notes.append(f"intercept: the logistic fit failed ({type(exc).__name__})")
        ev, non = lp[yy == 1], lp[yy == 0]
        if np.ptp(lp) == 0:
            notes.append("slope: constant predictions")
        elif non.max() <= ev.min() or ev.max() <= non.min():
            notes.append(
                "slope: the predictions separate the outcomes perfectly, so the logistic fit "
                "has no finite slope"
            )
        else:
            try:
                r1 = sm.GLM(yy, sm.add_constant(lp, has_constant="add"), family=fam).fit()
                b = float(r1.params[1])
                if not (r1.converged and np.isfinite(b)):
                    notes.append("slope: the logistic fit did not converge")
                elif abs(b) > CALIBRATION_SLOPE_LIMIT:
                    notes.append(
                        f"slope: the fit gives {b:.3g}, beyond +-{CALIBRATION_SLOPE_LIMIT:g} "
                        "(near-separation), unstable"
                    )
                else:
                    slope = b
            except Exception as exc:
                notes.append(f"slope: the logistic fit failed ({type(exc).__name__})")
    return {"intercept": icpt, "slope": slope, "note": "; ".join(notes)}


def calibration_intercept_slope(y: object, score: object, eps: float = 1e-6) -> tuple[float, float]:
    """``(intercept, slope)`` of :func:`calibration_fit` (NaN where undefined)."""
    r = calibration_fit(y, score, eps)
    return r["intercept"], r["slope"]


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
