"""Logistic recalibration of a deep-learning model's scores on the tuning split.

A network's output ``s`` is a probability only in name: trained with class weights and
selected on the tuning AUC, its mean can be far from the event rate. The recalibrated
probability is

    logit(p) = a + b * logit(s),

with ``(a, b)`` the maximum-likelihood logistic regression of the tuning patients' ER on
``logit(s)`` (Platt scaling on the log-odds scale): scikit-learn's ``LogisticRegression`` with
no penalty (``C = inf``, lbfgs). ``s`` is clipped to ``[EPS, 1 - EPS]`` before its log-odds
are taken. With ``b > 0`` the map is strictly increasing, so every rank statistic (AUC,
DeLong, C-index) and every patient's side of a cutoff found on the same scale is unchanged.

Fallbacks, recorded in :attr:`Recalibration.method` and :attr:`Recalibration.note`:

* ``intercept``: the two-parameter fit has no finite estimate (the tuning patients' scores
  separate ER from non-ER) or its slope is not positive (the scores rank the tuning patients
  no better than chance, or worse): the slope is fixed at 1 and only ``a`` is fitted
  (recalibration in the large: the mean prediction of the tuning patients becomes their ER
  rate), which keeps the ranks;
* ``identity``: not even ``a`` can be fitted (the tuning split lacks ER or non-ER patients):
  the score is kept as the network gives it.

Pure functions over arrays and DataFrames (:func:`fit_recalibration`,
:func:`apply_recalibration`, :func:`fit_on_tune`, :func:`recalibrate_table`) and the JSON file
that stores the fit (:func:`write_recalibration`, :func:`read_recalibration`): the workflow
writes it beside the model (``results/models/<model>/recalibration.json``) and the model bundle
carries it, so ``recur predict`` applies the same map.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recur.constants import DL_SCORE_COLUMNS, SCORE_COLUMNS
from recur.errors import RecurError

#: Scores are clipped to [EPS, 1 - EPS] before their log-odds are taken.
EPS = 1e-6
#: How the map was fitted: both parameters, the intercept alone (slope 1), or not at all.
METHODS: tuple[str, ...] = ("logistic", "intercept", "identity")
#: The split the map is fitted on.
FIT_SPLIT = "tune"
#: How a DL prediction table writes its numbers: 12 significant digits, so that a map with a
#: small slope does not round distinct scores into ties (the raw scores have 8).
FLOAT_FORMAT = "%.12g"


def logit(score: object) -> np.ndarray:
    """log(s / (1 - s)) of scores clipped to [EPS, 1 - EPS]."""
    q = np.clip(np.asarray(score, dtype=float), EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def _expit(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x)


@dataclass(frozen=True)
class Recalibration:
    """The fitted map logit(p) = intercept + slope * logit(score)."""

    intercept: float
    slope: float
    #: one of :data:`METHODS`
    method: str
    #: patients and ER events it was fitted on
    n: int
    n_events: int
    #: why a fallback was taken (empty for ``logistic``)
    note: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RecurError(f"recalibration: method {self.method!r}; expected one of {METHODS}")
        if not (math.isfinite(self.intercept) and math.isfinite(self.slope)):
            raise RecurError("recalibration: intercept and slope must be finite")
        if self.slope <= 0:
            raise RecurError(f"recalibration: slope {self.slope} is not positive")
        if self.method == "identity" and (self.intercept, self.slope) != (0.0, 1.0):
            raise RecurError("recalibration: the identity has intercept 0 and slope 1")

    @classmethod
    def identity(cls, note: str, n: int = 0, n_events: int = 0) -> Recalibration:
        """The map that keeps every score as it is."""
        return cls(0.0, 1.0, "identity", n, n_events, note)

    def apply(self, score: object) -> np.ndarray:
        """The recalibrated probabilities of ``score`` (:func:`apply_recalibration`)."""
        return apply_recalibration(score, self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recalibration:
        try:
            return cls(
                intercept=float(d["intercept"]),
                slope=float(d["slope"]),
                method=str(d["method"]),
                n=int(d["n"]),
                n_events=int(d["n_events"]),
                note=str(d.get("note", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RecurError(f"recalibration: cannot read the parameters ({exc})") from None


def _separated(y: np.ndarray, x: np.ndarray) -> bool:
    """True when no finite maximum-likelihood (a, b) exists: the ER and non-ER patients'
    log-odds do not overlap (complete or quasi-complete separation, constant scores
    included)."""
    x1, x0 = x[y == 1], x[y == 0]
    return not (x0.max() > x1.min() and x1.max() > x0.min())


def _fit_intercept(y: np.ndarray, x: np.ndarray) -> float:
    """The a of logit(p) = a + x fitted by maximum likelihood: sum p = sum y."""
    from scipy.optimize import brentq

    target = float(y.sum())

    def f(a: float) -> float:
        return float(_expit(a + x).sum()) - target

    lo, hi = -1.0, 1.0
    while f(lo) > 0:
        lo *= 2.0
    while f(hi) < 0:
        hi *= 2.0
    return float(brentq(f, lo, hi, xtol=1e-12, rtol=1e-12))


def fit_recalibration(y: object, score: object) -> Recalibration:
    """Fit logit(p) = a + b * logit(score) to the outcomes ``y`` (0/1) by maximum likelihood
    (unpenalised scikit-learn ``LogisticRegression``), falling back to the intercept alone
    (slope 1) and then to the identity as the module describes."""
    from sklearn.linear_model import LogisticRegression

    yy = np.asarray(y, dtype=float)
    s = np.asarray(score, dtype=float)
    if yy.ndim != 1 or yy.shape != s.shape:
        raise RecurError("recalibration: outcomes and scores must be 1-D and of equal length")
    if not np.isin(yy, (0.0, 1.0)).all():
        raise RecurError("recalibration: outcomes must be 0 or 1")
    if not np.isfinite(s).all():
        raise RecurError("recalibration: scores must be finite")
    n, n_events = int(yy.size), int(yy.sum())
    if n_events == 0 or n_events == n:
        return Recalibration.identity(
            f"the {n} patients fitted on are all of one class ({n_events} ER): score kept",
            n,
            n_events,
        )
    x = logit(s)
    if _separated(yy, x):
        why = "the scores separate ER from non-ER (no finite slope)"
    else:
        lr = LogisticRegression(C=np.inf, solver="lbfgs", tol=1e-10, max_iter=10_000)
        lr.fit(x.reshape(-1, 1), yy.astype(int))
        a, b = float(lr.intercept_[0]), float(lr.coef_[0, 0])
        if b > 0 and math.isfinite(a) and math.isfinite(b):
            return Recalibration(a, b, "logistic", n, n_events)
        why = f"fitted slope {b:.4g} is not positive"
    return Recalibration(
        _fit_intercept(yy, x), 1.0, "intercept", n, n_events, f"{why}: slope fixed at 1"
    )


def apply_recalibration(score: object, rec: Recalibration) -> np.ndarray:
    """expit(a + b * logit(score)); the scores as floats, unchanged, for the identity."""
    s = np.asarray(score, dtype=float)
    if rec.method == "identity":
        return s.copy()
    return _expit(rec.intercept + rec.slope * logit(s))


def fit_on_tune(scores: pd.DataFrame, er: pd.Series) -> Recalibration:
    """Fit the map on the tune-split rows of a score table (columns
    :data:`recur.constants.SCORE_COLUMNS`; ``er``: outcome by patient id)."""
    tune = scores[scores["split"] == FIT_SPLIT]
    if tune.empty:
        return Recalibration.identity("no patient in the tune split: score kept")
    y = er.reindex(tune["patient_id"].to_numpy())
    if y.isna().any():
        pid = tune["patient_id"].to_numpy()[y.isna().to_numpy()][0]
        raise RecurError(f"recalibration: tuning patient {pid} has no outcome")
    return fit_recalibration(y.to_numpy(dtype=float), tune["score"].to_numpy(dtype=float))


def recalibrate_table(scores: pd.DataFrame, rec: Recalibration) -> pd.DataFrame:
    """A score table (:data:`recur.constants.SCORE_COLUMNS`, ``score`` the network's output)
    as a DL prediction table (:data:`recur.constants.DL_SCORE_COLUMNS`): ``score`` the
    recalibrated probability, ``raw_score`` the network's output."""
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise RecurError(f"scores table: missing column(s) {', '.join(missing)}")
    out = scores[list(SCORE_COLUMNS)].reset_index(drop=True)
    out["raw_score"] = out["score"].astype(float)
    out["score"] = rec.apply(out["raw_score"].to_numpy())
    return out[list(DL_SCORE_COLUMNS)]


def write_recalibration(path: str | Path, rec: Recalibration, model: str) -> None:
    """Store the fit as JSON (``model``, ``formula``, ``fitted_on`` and the fields of
    :class:`Recalibration`)."""
    from recur.io import write_text_atomic

    info = {
        "model": model,
        "formula": "logit(p) = intercept + slope * logit(clip(score, eps, 1 - eps))",
        "eps": EPS,
        "fitted_on": FIT_SPLIT,
        "estimator": "sklearn LogisticRegression, no penalty (C=inf, lbfgs)",
        **rec.to_dict(),
    }
    write_text_atomic(Path(path), json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_recalibration(path: str | Path) -> Recalibration:
    """The fit stored by :func:`write_recalibration`."""
    p = Path(path)
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecurError(f"{p}: cannot read the recalibration ({exc})") from None
    if not isinstance(info, dict):
        raise RecurError(f"{p}: not a recalibration (a JSON object is expected)")
    if float(info.get("eps", EPS)) != EPS:
        raise RecurError(f"{p}: fitted with eps {info['eps']}, this recur clips at {EPS}")
    try:
        return Recalibration.from_dict(info)
    except RecurError as exc:
        raise RecurError(f"{p}: {exc}") from None
