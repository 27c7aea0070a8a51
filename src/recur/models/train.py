"""Training, model selection and scoring of the Pre and PrePost models; the signatures.

One training job (:func:`run_training`) trains one model on one set of patients:

* fold ``full``: every ``train``-split patient; it scores every patient of every cohort;
* fold ``k`` (0..K-1): the ``train`` split without cross-fitting fold ``k``; it scores the
  patients of fold ``k`` only (they are out-of-fold for it).

Both select the epoch by the AUC on the ``tune`` split and keep that epoch's weights. A tuning
split of a 254-patient cohort has ~50 patients (~11 with ER), so one epoch's tuning AUC is
noisy (SE ~0.09): the selection (:func:`select_epoch`) ranks epochs by the mean tuning AUC of a
window of ``smooth_epochs`` consecutive epochs ending at them, and only from ``min_epochs`` on
(before that the network has not learned anything, and a lucky early AUC would keep a
near-random network); early stopping after ``patience`` epochs without improvement. The
learning rate follows a one-cycle schedule (warm-up, then cosine decay to ~0 at ``epochs``).
The imbalance of ER is handled by ``pos_weight = n_negative / n_positive`` in
``BCEWithLogitsLoss``. Auxiliary targets (``Architecture.aux_targets``; by default PrePost
learns the measured minimal ablative margin of ``margin.csv``) add ``aux_weight`` times a
Huber loss on the targets standardised over the training patients (:func:`standardise_targets`,
:func:`masked_huber`: a patient without a value adds nothing).
**Covariate-adjusted training** (``offset_variables``; by default Pre, with the clinical
predictors other than tumour size): a logistic regression of ER on those columns of the
clinical table, fitted on the job's training patients (:func:`covariate_offset`), gives each
of them a fixed log-odds offset that is added to the network's logit in the training loss
only. The network then models the part of the risk that the images add to those variables,
instead of spending its few events on outcome variation that the clinical table already
explains; selection, scoring and the signatures use the network alone.
:func:`signature_table` and :func:`crossfit_table` assemble the prediction CSVs.

Same seed and settings -> identical weights and scores on the CPU: every generator is seeded,
``torch.use_deterministic_algorithms(True)``, MONAI ``set_determinism``, ``num_workers=0``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader
from monai.utils import set_determinism
from sklearn.metrics import roc_auc_score
from torch import nn

from recur.cohort.contract import OUTCOME_COLUMNS
from recur.cohort.split import crossfit_folds, read_outcome, read_split
from recur.errors import RecurError
from recur.io import atomic_path
from recur.models.data import Augmentation, make_dataset, make_items, plain_tensors
from recur.models.networks import (
    CHANNELS_PER_TIMEPOINT,
    MODEL_TIMEPOINTS,
    ROI_CHANNELS,
    EnsembleNet,
    build_model,
)

log = logging.getLogger(__name__)

PREDICTION_COLUMNS: list[str] = ["patient_id", "cohort", "split", "score"]
LOG_COLUMNS: list[str] = [
    "epoch",
    "train_loss",
    "train_aux_loss",
    "tune_loss",
    "tune_auc",
    "tune_auc_smoothed",
    "lr",
    "seconds",
]
#: Learning-rate schedules: one-cycle (warm-up + cosine annealing, per step) or constant.
SCHEDULERS: tuple[str, ...] = ("onecycle", "constant")


@dataclass(frozen=True)
class Architecture:
    """Network settings (saved beside the weights as ``model.json``)."""

    model: str = "PrePost"
    widths: tuple[int, ...] = (16, 32, 64, 64)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    hidden: int = 32
    dropout: float = 0.5
    max_pool: bool = True
    #: the tumour ROI as 3 more input channels per time point (recur.models.data)
    roi_channel: bool = False
    #: scores are the mean logit over the 8 dihedral views of the input (test-time
    #: augmentation, :func:`predict_logits`); the tuning AUC of each epoch uses the plain view
    tta: bool = False
    #: names of auxiliary regression targets learnt beside ER (multi-task; e.g. the measured
    #: minimal ablative margin, ``min_margin_mm``): one more output of the network each
    aux_targets: tuple[str, ...] = ()
    #: number of member networks: 1 = one network; more =
    #: :class:`~recur.models.networks.EnsembleNet` of that many networks of this design
    #: (:func:`run_ensemble`)
    members: int = 1

    @property
    def in_channels(self) -> int:
        return CHANNELS_PER_TIMEPOINT + (ROI_CHANNELS if self.roi_channel else 0)

    def build(self) -> nn.Module:
        if self.members > 1:
            single = replace(self, members=1)
            return EnsembleNet([single.build() for _ in range(self.members)])
        return build_model(
            self.model,
            self.widths,
            self.blocks,
            self.hidden,
            self.dropout,
            self.max_pool,
            self.in_channels,
            len(self.aux_targets),
        )

    @property
    def timepoints(self) -> int:
        return MODEL_TIMEPOINTS[self.model]


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one training job."""

    epochs: int = 40
    patience: int = 15
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 42
    augment: Augmentation = field(default_factory=Augmentation)
    min_epochs: int = 10
    smooth_epochs: int = 3
    scheduler: str = "onecycle"
    #: keep the mean of the weights of the ``smooth_epochs`` epochs of the selected window
    #: (:func:`average_states`) instead of the selected epoch's own weights
    average_window: bool = True
    #: weight of the auxiliary regression loss (Huber loss on the standardised targets of
    #: ``Architecture.aux_targets``) beside the ER loss
    aux_weight: float = 3.0

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise RecurError(
                f"train: scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}"
            )
        if self.min_epochs < 1 or self.smooth_epochs < 1:
            raise RecurError("train: min_epochs and smooth_epochs must be at least 1")
        if not self.aux_weight >= 0:
            raise RecurError(f"train: aux_weight must be >= 0, got {self.aux_weight}")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecurError("device: 'cuda' requested but no CUDA GPU is available")
    if name not in ("cpu", "cuda"):
        raise RecurError(f"device: unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


def configure_torch(seed: int, threads: int | None = None) -> None:
    """Seed everything and make torch deterministic (on the CPU); use ``threads`` CPU threads.

    ``threads=None`` reads ``RECUR_THREADS`` (set by the CLI's ``--threads``), default 1.
    """
    if threads is None:
        threads = int(os.environ.get("RECUR_THREADS", "1"))
    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_determinism(seed=seed)
    # On a GPU some backward kernels (adaptive average pooling) have no deterministic
    # version: warn there instead of failing; the CPU is fully deterministic.
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    torch.backends.cudnn.benchmark = False


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
    covariates: pd.DataFrame, y: pd.Series, c: float = 1.0
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


def safe_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, NaN when ``y`` has a single class."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def _loader(dataset, batch_size: int, shuffle: bool, seed: int, drop_last: bool) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=0,
        generator=g,
        drop_last=drop_last,
    )


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 views of a batch under the dihedral group of the square: rotations by 0, 90,
    180 and 270 degrees of the last two (in-plane) axes, each without and with a left-right
    flip. Every channel and time point turns together; the first view is ``x`` itself."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral views need square images, got {tuple(x.shape[-2:])}")
    rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [torch.flip(r, dims=(-1,)) for r in rotations]


@torch.no_grad()
@plain_tensors()
def predict_logits(
    model: nn.Module, dataset, device: torch.device, batch_size: int = 32, tta: bool = False
) -> np.ndarray:
    """Logits of every sample of ``dataset`` (eval mode, dataset order).

    ``tta``: the mean logit over the 8 :func:`dihedral_views` of each sample. The training
    augmentation draws any rotation and both flips, so these views are inputs the network was
    trained on; averaging them removes the score's dependence on the crop's orientation.
    """
    model.eval()
    out = []
    for batch in _loader(dataset, batch_size, shuffle=False, seed=0, drop_last=False):
        x = batch["image"].to(device)
        views = dihedral_views(x) if tta else [x]
        logits = torch.stack([model(v).reshape(-1) for v in views]).mean(dim=0)
        out.append(logits.cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def _bce(logits: np.ndarray, y: np.ndarray, pw: float) -> float:
    """Mean BCE-with-logits (positive class weighted by ``pw``), as the training loss."""
    loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pw], dtype=torch.float64))
    return float(loss(torch.as_tensor(logits), torch.as_tensor(y, dtype=torch.float64)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (the ER probability of a logit)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


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
    """The epoch :func:`train_model` keeps, from a complete training log (pure function).

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


@plain_tensors()
def train_model(
    arch: Architecture,
    train_items: Sequence[dict],
    tune_items: Sequence[dict],
    settings: TrainSettings,
    device: torch.device | str = "cpu",
    on_select: Callable[[int, list[dict]], None] | None = None,
) -> tuple[nn.Module, pd.DataFrame, int]:
    """Train ``arch`` on ``train_items``; select the epoch with the best tune AUC.

    Returns the model holding the selected epoch's weights (in eval mode; with
    ``settings.average_window`` the mean weights of the selection window, the
    ``smooth_epochs`` epochs ending at the selected one), the training log
    (:data:`LOG_COLUMNS`; one row per epoch run) and the selected epoch
    (:func:`select_epoch`: smoothed tuning AUC from ``min_epochs`` on; early stopping after
    ``patience`` epochs from ``min_epochs`` on without a better one). ``on_select(epoch,
    states)``, when given, is called at the end with the window's state dicts (oldest first).
    """
    device = torch.device(device)
    configure_torch(settings.seed, threads=torch.get_num_threads())
    t = arch.timepoints
    y_train = np.array([float(i["label"]) for i in train_items])
    y_tune = np.array([float(i["label"]) for i in tune_items])
    if np.isnan(y_train).any() or np.isnan(y_tune).any():
        raise RecurError("training and tuning patients all need an ER label")
    pw = pos_weight(y_train)
    roi = arch.roi_channel
    n_aux = len(arch.aux_targets)
    with_offset = any("offset" in i for i in train_items)
    if with_offset and not all("offset" in i for i in train_items):
        raise RecurError(f"{arch.model}: every training patient needs an offset, or none")
    if n_aux:
        if any("aux" not in i for i in train_items):
            raise RecurError(f"{arch.model}: auxiliary targets {arch.aux_targets} not given")
        raw = np.stack([np.asarray(i["aux"], dtype=np.float64).reshape(n_aux) for i in train_items])
        mean, sd = standardise_targets(raw)
        train_items = [
            {**i, "aux": ((r - mean) / sd).astype(np.float32)}
            for i, r in zip(train_items, raw, strict=True)
        ]
    train_ds = make_dataset(train_items, t, settings.augment, seed=settings.seed, roi=roi)
    tune_ds = make_dataset(tune_items, t, None, roi=roi)

    model = arch.build().to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pw], device=device))
    drop_last = len(train_items) > settings.batch_size  # no BatchNorm batch of size 1
    loader = _loader(train_ds, settings.batch_size, True, settings.seed, drop_last)
    sched = None
    total_steps = settings.epochs * len(loader)
    if settings.scheduler == "onecycle" and total_steps >= 8:  # each phase needs >= 1 step
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=settings.learning_rate, total_steps=total_steps, pct_start=0.25
        )
    window: deque[dict[str, torch.Tensor]] = deque(maxlen=settings.smooth_epochs)
    best_window, best_epoch, since_best, rows = None, 0, 0, []
    for epoch in range(1, settings.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        losses, aux_losses, sizes = [], [], []
        for batch in loader:
            x = batch["image"].to(device)
            y = batch["label"].to(device).reshape(-1, 1)
            opt.zero_grad(set_to_none=True)
            if n_aux:
                logits, aux_pred = model.forward_aux(x)
            else:
                logits, aux_pred = model(x), None
            if with_offset:  # training loss only: the network learns beyond the covariates
                logits = logits + batch["offset"].to(device, torch.float32).reshape(-1, 1)
            loss = loss_fn(logits, y)
            if aux_pred is not None:
                aux = masked_huber(aux_pred, batch["aux"].to(device).reshape(len(x), n_aux))
                (loss + settings.aux_weight * aux).backward()
                aux_losses.append(float(aux.detach()))
            else:
                loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(float(loss.detach()))
            sizes.append(len(x))
        tune_logits = predict_logits(model, tune_ds, device)
        tune_loss = _bce(tune_logits, y_tune, pw)
        tune_auc = safe_auc(y_tune, tune_logits)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": float(np.average(losses, weights=sizes)),
                "train_aux_loss": (
                    float(np.average(aux_losses, weights=sizes)) if aux_losses else float("nan")
                ),
                "tune_loss": tune_loss,
                "tune_auc": tune_auc,
                "tune_auc_smoothed": smoothed_auc(
                    [r["tune_auc"] for r in rows] + [tune_auc], settings.smooth_epochs
                ),
                "lr": float(opt.param_groups[0]["lr"]),
                "seconds": time.perf_counter() - t0,
            }
        )
        log.info(
            "epoch %d: train loss %.4f (auxiliary %.4f), tune loss %.4f, tune AUC %.3f "
            "(smoothed %.3f), lr %.2g (%.1f s)",
            *(rows[-1][c] for c in LOG_COLUMNS),
        )
        window.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        kept = select_epoch(pd.DataFrame(rows), settings.min_epochs, settings.smooth_epochs)
        if kept == epoch:
            best_epoch, since_best, best_window = epoch, 0, list(window)
        elif epoch >= settings.min_epochs:
            since_best += 1
            if since_best >= settings.patience:
                log.info("early stop: no tune improvement for %d epochs", settings.patience)
                break
    assert best_window is not None
    if on_select is not None:
        on_select(best_epoch, best_window)
    model.load_state_dict(
        average_states(best_window) if settings.average_window else best_window[-1]
    )
    model.eval()
    return model, pd.DataFrame(rows, columns=LOG_COLUMNS), best_epoch


def job_patients(
    split_df: pd.DataFrame, er: pd.Series, fold: str, k: int, seed: int
) -> tuple[list[str], list[str], list[str]]:
    """(train ids, tune ids, ids to score) of training job ``fold`` (``full`` or ``0..k-1``)."""
    tune = list(split_df.loc[split_df["split"] == "tune", "patient_id"])
    train = list(split_df.loc[split_df["split"] == "train", "patient_id"])
    if fold == "full":
        return train, tune, list(split_df["patient_id"])
    if not fold.isdigit() or int(fold) >= k:
        raise RecurError(f"train-dl: fold must be 'full' or 0..{k - 1}, got {fold!r}")
    folds = crossfit_folds(split_df, er, k, seed)
    held = set(folds.index[folds == int(fold)])
    return [p for p in train if p not in held], tune, [p for p in train if p in held]


def run_training(
    arch: Architecture,
    settings: TrainSettings,
    *,
    fold: str,
    crossfit_k: int,
    split_csv: str | Path,
    clinical_csv: str | Path,
    crops_dir: str | Path,
    outdir: str | Path,
    device: str = "auto",
    aux_csv: str | Path | None = None,
    offset_variables: Sequence[str] = (),
    offset_c: float = 1.0,
) -> pd.DataFrame:
    """Train one (model, fold) job and write ``weights.pt``, ``model.json``,
    ``training_log.csv`` and ``scores.csv`` (patient_id, cohort, split, score) into ``outdir``.

    The folds are drawn with ``settings.seed``. ``aux_csv``: a table with ``patient_id`` and
    the columns ``arch.aux_targets`` (e.g. ``margin.csv``), read for the training patients
    only. ``offset_variables``: columns of the clinical table whose fitted log-odds
    (:func:`covariate_offset`, on this job's training patients) offsets the training loss;
    the fitted coefficients are recorded in ``model.json``. Returns the scores table.
    """
    split_df = read_split(split_csv)
    er = read_outcome(clinical_csv)
    train_ids, tune_ids, score_ids = job_patients(split_df, er, fold, crossfit_k, settings.seed)
    labels = er.to_dict()
    aux = None
    if arch.aux_targets:
        if aux_csv is None:
            raise RecurError(f"{arch.model}: auxiliary targets {arch.aux_targets} need a table")
        aux = read_aux_targets(aux_csv, arch.aux_targets, train_ids)
    train_items = make_items(train_ids, crops_dir, labels, aux)
    offset_meta = None
    if offset_variables:
        covariates = read_offset_covariates(clinical_csv, offset_variables, train_ids)
        try:
            offset, coefs = covariate_offset(covariates, er.loc[train_ids], c=offset_c)
        except RecurError as exc:  # name the table the bad values came from
            raise RecurError(f"{Path(clinical_csv).name}: {exc}") from None
        train_items = [{**i, "offset": np.float32(offset[i["patient_id"]])} for i in train_items]
        offset_meta = {"variables": list(offset_variables), "c": offset_c, "coefficients": coefs}
        log.info(
            "%s fold %s: covariate offset, coefficients %s (training AUC of the offset %.3f)",
            arch.model,
            fold,
            {k: round(v, 3) for k, v in coefs.items()},
            safe_auc(er.loc[train_ids].to_numpy(), offset.to_numpy()),
        )
    dev = resolve_device(device)
    log.info(
        "%s fold %s: %d train, %d tune patients, scoring %d, device %s",
        arch.model,
        fold,
        len(train_ids),
        len(tune_ids),
        len(score_ids),
        dev,
    )
    model, train_log, best_epoch = train_model(
        arch,
        train_items,
        make_items(tune_ids, crops_dir, labels),
        settings,
        dev,
    )
    score_ds = make_dataset(
        make_items(score_ids, crops_dir), arch.timepoints, None, roi=arch.roi_channel
    )
    scores = split_df.set_index("patient_id").loc[score_ids, ["cohort", "split"]].reset_index()
    scores["score"] = sigmoid(predict_logits(model, score_ds, dev, tta=arch.tta))
    scores = scores[PREDICTION_COLUMNS]

    outdir = Path(outdir)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(outdir / "weights.pt") as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)  # a file object: the archive name inside is fixed, not tmp's
    meta = {**asdict(arch), "selected_epoch": best_epoch}
    if offset_meta is not None:
        meta["training_offset"] = offset_meta
    with atomic_path(outdir / "model.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    with atomic_path(outdir / "training_log.csv") as tmp:
        train_log.to_csv(tmp, index=False)
    with atomic_path(outdir / "scores.csv") as tmp:
        scores.to_csv(tmp, index=False, float_format="%.8g")
    return scores


def run_ensemble(
    member_dirs: Sequence[str | Path],
    *,
    split_csv: str | Path,
    crops_dir: str | Path,
    outdir: str | Path,
    device: str = "auto",
) -> pd.DataFrame:
    """Join trained networks of one model (``train-dl`` output folders: the full model and
    its fold models) into one :class:`~recur.models.networks.EnsembleNet` whose score is their mean
    logit; score every patient of ``split_csv`` with it and write ``weights.pt`` (one
    ``state_dict``), ``model.json`` (``members`` = their number) and ``scores.csv`` into
    ``outdir``. Returns the scores table.
    """
    dev = resolve_device(device)
    if not member_dirs:
        raise RecurError("ensemble: no member model given")
    loaded = [load_model(d, dev) for d in member_dirs]
    designs = {replace(a, members=1) for _, a in loaded}
    if len(designs) != 1:
        raise RecurError(
            "ensemble: the member models differ in their design ("
            + ", ".join(str(Path(d)) for d in member_dirs)
            + ")"
        )
    arch = replace(designs.pop(), members=len(loaded))
    model = EnsembleNet([m for m, _ in loaded]).to(dev).eval()
    split_df = read_split(split_csv)
    ids = list(split_df["patient_id"])
    ds = make_dataset(make_items(ids, crops_dir), arch.timepoints, None, roi=arch.roi_channel)
    scores = split_df[["patient_id", "cohort", "split"]].reset_index(drop=True)
    scores["score"] = sigmoid(predict_logits(model, ds, dev, tta=arch.tta))
    scores = scores[PREDICTION_COLUMNS]
    log.info("%s ensemble of %d networks scored %d patients", arch.model, len(loaded), len(ids))
    outdir = Path(outdir)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(outdir / "weights.pt") as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    meta = {**asdict(arch), "member_models": [Path(d).name for d in member_dirs]}
    with atomic_path(outdir / "model.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    with atomic_path(outdir / "scores.csv") as tmp:
        scores.to_csv(tmp, index=False, float_format="%.8g")
    return scores


def read_offset_covariates(
    clinical_csv: str | Path, variables: Sequence[str], patient_ids: Sequence[str]
) -> pd.DataFrame:
    """The ``variables`` columns of the clinical table for ``patient_ids`` (rows in that
    order; values as numbers, empty cells NaN): the covariates of :func:`covariate_offset`.
    A missing column or a patient without a row is an error naming the file."""
    path = Path(clinical_csv)
    try:
        df = pd.read_csv(path, dtype={"patient_id": str})
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RecurError(f"{path.name}: cannot read the clinical table ({exc})") from None
    missing = [v for v in variables if v not in df.columns]
    if missing:
        raise RecurError(
            f"{path.name}: offset variable(s) {missing} are not columns of the clinical table"
        )
    table = df.drop_duplicates("patient_id").set_index("patient_id")
    absent = [p for p in patient_ids if p not in table.index]
    if absent:
        raise RecurError(f"{path.name}: patient {absent[0]} has no row (offset variables)")
    return table.loc[list(patient_ids), list(variables)]


def read_aux_targets(
    path: str | Path, columns: Sequence[str], patients: Sequence[str]
) -> dict[str, np.ndarray]:
    """``{patient: values of columns}`` of ``patients`` from the CSV ``path`` (NaN where a
    patient or value is missing: such a patient adds nothing to the auxiliary loss)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"patient_id": str})
    except (OSError, ValueError) as exc:
        raise RecurError(f"{path.name}: cannot read the auxiliary targets ({exc})") from None
    missing = [c for c in ["patient_id", *columns] if c not in table.columns]
    if missing:
        raise RecurError(f"{path.name}: missing column(s) {', '.join(missing)}")
    table = table.drop_duplicates("patient_id").set_index("patient_id")
    values = table[list(columns)].apply(pd.to_numeric, errors="coerce")
    values = values.reindex(list(patients))
    n_known = int(values.notna().all(axis=1).sum())
    log.info(
        "auxiliary targets %s known for %d of %d training patients",
        list(columns),
        n_known,
        len(patients),
    )
    return {p: values.loc[p].to_numpy(np.float64) for p in patients}


def load_model(
    model_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Architecture]:
    """Rebuild a trained network from ``model.json`` and ``weights.pt`` (weights only)."""
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / "model.json").read_text())
        arch = Architecture(
            model=meta["model"],
            widths=tuple(meta["widths"]),
            blocks=tuple(meta["blocks"]),
            hidden=int(meta["hidden"]),
            dropout=float(meta["dropout"]),
            max_pool=bool(meta.get("max_pool", True)),
            roi_channel=bool(meta.get("roi_channel", False)),
            tta=bool(meta.get("tta", False)),
            aux_targets=tuple(meta.get("aux_targets", ())),
            members=int(meta.get("members", 1)),
        )
        state = torch.load(model_dir / "weights.pt", map_location=device, weights_only=True)
        model = arch.build()
        model.load_state_dict(state)
    except pickle.UnpicklingError as exc:  # weights_only refused a non-tensor object
        why = str(exc).strip().splitlines()[-1]
        raise RecurError(
            f"{model_dir}: cannot load the trained model (weights.pt holds objects other "
            f"than tensors; refusing to unpickle them: {why})"
        ) from None
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise RecurError(f"{model_dir}: cannot load the trained model ({exc})") from None
    return model.to(device).eval(), arch


def signature_table(scores: pd.DataFrame) -> pd.DataFrame:
    """The signature CSV of a full model: exactly ``patient_id, cohort, split, score``."""
    missing = [c for c in PREDICTION_COLUMNS if c not in scores.columns]
    if missing:
        raise RecurError(f"scores table: missing column(s) {', '.join(missing)}")
    if scores["score"].isna().any() or scores["patient_id"].duplicated().any():
        raise RecurError("scores table: missing scores or duplicated patients")
    return scores[PREDICTION_COLUMNS].reset_index(drop=True)


def crossfit_table(full: pd.DataFrame, folds: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Out-of-fold signature: train-split patients from the fold models that did not see them,
    tune and test patients from the full model; rows in the order of ``full``.
    """
    full = signature_table(full)
    oof = pd.concat([signature_table(f) for f in folds], ignore_index=True)
    if oof["patient_id"].duplicated().any():
        dup = oof.loc[oof["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise RecurError(f"crossfit: patient {dup} is scored by more than one fold")
    train_ids = set(full.loc[full["split"] == "train", "patient_id"])
    if set(oof["patient_id"]) != train_ids or (oof["split"] != "train").any():
        raise RecurError("crossfit: the folds do not cover exactly the train-split patients")
    by_id = oof.set_index("patient_id")["score"]
    out = full.copy()
    is_train = out["split"] == "train"
    out.loc[is_train, "score"] = out.loc[is_train, "patient_id"].map(by_id).to_numpy()
    return out


def plot_training(
    train_log: pd.DataFrame, title: str, path: str | Path, selected_epoch: int | None = None
) -> None:
    """Training curve PNG: train/tune loss and tune AUC per epoch, the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax1 = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax1.plot(train_log["epoch"], train_log["train_loss"], label="train loss", color="tab:blue")
    ax1.plot(train_log["epoch"], train_log["tune_loss"], label="tune loss", color="tab:orange")
    ax1.set_xlabel("epoch")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_ylabel("BCE loss (ER weighted)")
    ax2 = ax1.twinx()
    ax2.plot(
        train_log["epoch"], train_log["tune_auc"], label="tune AUC", color="tab:green", alpha=0.5
    )
    if "tune_auc_smoothed" in train_log.columns:
        ax2.plot(
            train_log["epoch"],
            train_log["tune_auc_smoothed"],
            label="tune AUC (smoothed, selects)",
            color="darkgreen",
        )
    ax2.set_ylabel("tune AUC")
    ax2.set_ylim(0, 1)
    if selected_epoch is not None and (train_log["epoch"] == selected_epoch).any():
        best = train_log.loc[train_log["epoch"] == selected_epoch].iloc[0]
        ax2.axvline(best["epoch"], color="grey", ls="--", lw=0.8)
        auc = best.get("tune_auc_smoothed", best["tune_auc"])
        title = f"{title} (kept epoch {int(best['epoch'])}, smoothed tune AUC {auc:.3f})"
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, loc="lower left", fontsize=8)
    ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
