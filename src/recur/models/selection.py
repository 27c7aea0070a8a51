"""Epoch selection of a training run (pure functions).

:func:`select_epoch` keeps the epoch with the highest mean tuning AUC over a window of
consecutive epochs (:func:`smoothed_auc` of the per-epoch :func:`safe_auc`);
:func:`average_states` averages the weights of that window (stochastic weight averaging).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score


def safe_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, NaN when ``y`` has a single class."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def smoothed_auc(aucs: Sequence[float], window: int) -> float:
    """Mean of the last ``window`` finite values of ``aucs`` (NaN when there is none).

    >>> smoothed_auc([0.5, 0.7, 0.6], 2)
    0.65
    """
    if window < 1:
        raise ValueError("window must be at least 1")
    tail = [a for a in list(aucs)[-window:] if np.isfinite(a)]
    return float(np.mean(tail)) if tail else float("nan")


def select_epoch(train_log: pd.DataFrame, min_epochs: int, smooth_epochs: int) -> int:
    """The epoch :func:`~recur.models.train.train_model` keeps, from a complete training log
    (pure function).

    Among epochs ``>= min(min_epochs, last epoch)``: the highest mean tuning AUC over the window
    of ``smooth_epochs`` epochs ending at the epoch, ties to the lower tuning loss, then the
    earlier epoch. Without any finite tuning AUC (single-class tuning split) the tuning loss
    alone decides.
    """
    if train_log.empty:
        raise ValueError("empty training log")
    log_ = train_log.sort_values("epoch").reset_index(drop=True)
    start = min(min_epochs, int(log_["epoch"].max()))
    aucs = log_["tune_auc"].to_numpy(float)
    use_auc = np.isfinite(aucs).any()
    best_key, best_epoch = None, None
    for i, row in log_.iterrows():
        if row["epoch"] < start:
            continue
        sm = smoothed_auc(aucs[: i + 1], smooth_epochs)
        key = (sm, -row["tune_loss"]) if use_auc else (-row["tune_loss"],)
        if best_key is None or key > best_key:
            best_key, best_epoch = key, int(row["epoch"])
    assert best_epoch is not None
    return best_epoch


def average_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts of one network (pure function).

    Floating-point tensors (weights, biases, BatchNorm running statistics) are averaged;
    the others (BatchNorm's ``num_batches_tracked``) are taken from the last state. This is
    stochastic weight averaging (Izmailov et al. 2018) over consecutive epochs of one run,
    with the running statistics averaged as model-EMA implementations do.
    """
    if not states:
        raise ValueError("average_states needs at least one state")
    keys = list(states[-1])
    for i, st in enumerate(states):
        if list(st) != keys:
            raise ValueError(f"state {i} has other keys than the last state")
    out = {}
    for k in keys:
        last = states[-1][k]
        if torch.is_floating_point(last):
            out[k] = torch.stack([st[k].to(last.dtype) for st in states]).mean(dim=0)
        else:
            out[k] = last.clone()
    return out
