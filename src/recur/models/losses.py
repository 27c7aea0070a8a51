"""The terms of the training loss beside the plain ER cross-entropy (pure functions).

* :func:`pos_weight`: the weight of the ER class in ``BCEWithLogitsLoss``
  (``n_negative / n_positive``), against the imbalance of ER;
* :func:`covariate_offset`: **covariate-adjusted training** (``offset_variables``; by default
  Pre, with the clinical predictors other than tumour size): a logistic regression of ER on
  those columns of the clinical table, fitted on the job's training patients, gives each of
  them a fixed log-odds offset that is added to the network's logit in the training loss only.
  The network then models the part of the risk that the images add to those variables,
  instead of spending its few events on outcome variation that the clinical table already
  explains; selection, scoring and the signatures use the network alone;
* :func:`standardise_targets` and :func:`masked_huber`: the auxiliary regression loss, a Huber
  loss on the auxiliary targets standardised over the training patients (a patient without a
  value adds nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from recur.cohort.contract import OUTCOME_COLUMNS
from recur.errors import RecurError


def pos_weight(labels: Sequence[float]) -> float:
    """``n_negative / n_positive`` of 0/1 labels (the BCE weight of the positive class)."""
    y = np.asarray(labels, dtype=float)
    n_pos = float((y == 1).sum())
    n_neg = float((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise RecurError(
            f"training set needs patients with and without ER (has {int(n_pos)} with, "
            f"{int(n_neg)} without)"
        )
    return n_neg / n_pos


def covariate_offset(
    covariates: pd.DataFrame, y: pd.Series, c: float
) -> tuple[pd.Series, dict[str, float]]:
    """Per-patient log-odds offset of the training loss from tabular covariates (pure).

    A logistic regression (L2, inverse strength ``c``) of ``y`` (0/1, index patient_id) on
    ``covariates`` (numeric columns, rows as ``y``): each column's missing values are replaced
    by its median, then mapped to normal scores by rank (``QuantileTransformer``), so a
    skewed variable (AFP) or a binary one needs no transform of its own and a monotone
    rescaling of a column changes nothing. Returns the fitted log-odds without the intercept,
    centred to mean 0 over these patients (the network keeps its own intercept), and the
    coefficient of each column (per SD of its normal scores).
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import QuantileTransformer

    if covariates.shape[1] == 0:
        raise RecurError("offset: no covariates given")
    leak = [col for col in covariates.columns if col in OUTCOME_COLUMNS]  # the outcome itself
    if leak:
        raise RecurError(f"offset: the outcome column(s) {leak} cannot be offset variables")
    if not covariates.index.equals(y.index):
        raise RecurError("offset: covariates and outcomes must have the same patients")
    labels = pd.to_numeric(y, errors="coerce")
    if labels.isna().any() or not labels.isin([0, 1]).all() or labels.nunique() != 2:
        raise RecurError("offset: needs a 0/1 outcome with both classes for every patient")
    x = covariates.apply(pd.to_numeric, errors="coerce")
    for col in x.columns:
        bad = covariates[col].notna() & x[col].isna()
        if bad.any():
            raise RecurError(f"offset: column '{col}' is not numeric (patient {bad[bad].index[0]})")
        if x[col].notna().sum() == 0:
            raise RecurError(f"offset: column '{col}' has no value for any training patient")
    model = make_pipeline(
        SimpleImputer(strategy="median"),
        QuantileTransformer(n_quantiles=min(1000, len(x)), output_distribution="normal"),
        LogisticRegression(C=c, max_iter=5000),
    ).fit(x.to_numpy(float), labels.to_numpy(int))
    coef = model[-1].coef_[0]
    logit = model[:-1].transform(x.to_numpy(float)) @ coef  # without the intercept
    offset = pd.Series(logit - logit.mean(), index=y.index, name="offset")
    return offset, {col: float(b) for col, b in zip(x.columns, coef, strict=True)}


def standardise_targets(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of ``(n, k)`` targets over their finite values
    (pure function); a column with fewer than 2 finite values or no spread is an error.

    >>> standardise_targets(np.array([[1.0], [3.0], [np.nan]]))
    (array([2.]), array([1.41421356]))
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"targets must be (n, k), got shape {v.shape}")
    mean = np.full(v.shape[1], np.nan)
    sd = np.full(v.shape[1], np.nan)
    for j in range(v.shape[1]):
        col = v[np.isfinite(v[:, j]), j]
        if len(col) < 2 or np.std(col, ddof=1) == 0:
            raise RecurError(
                f"auxiliary target {j}: needs at least 2 different known values among the "
                f"training patients (has {len(col)} known)"
            )
        mean[j], sd[j] = col.mean(), col.std(ddof=1)
    return mean, sd


def masked_huber(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Huber (smooth L1, beta 1) loss over the finite entries of ``target``; 0 (with a
    gradient path) when there is none."""
    ok = torch.isfinite(target)
    if not bool(ok.any()):
        return pred.sum() * 0.0
    return nn.functional.smooth_l1_loss(pred[ok], target[ok])
