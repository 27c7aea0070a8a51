"""Training of one Pre or PrePost network: its settings, the training loop and its scores.

:func:`train_model` trains an :class:`Architecture` with :class:`TrainSettings` on training
items (:mod:`recur.models.data`) and selects the epoch by the AUC on the ``tune`` split,
keeping that epoch's weights. A tuning split of a 254-patient cohort has ~50 patients (~11 with
ER), so one epoch's tuning AUC is noisy (SE ~0.09): the selection
(:func:`~recur.models.selection.select_epoch`) ranks epochs by the mean tuning AUC of a window
of ``smooth_epochs`` consecutive epochs ending at them, and only from ``min_epochs`` on (before
that the network has not learned anything, and a lucky early AUC would keep a near-random
network); early stopping after ``patience`` epochs without improvement. The learning rate
follows a one-cycle schedule (warm-up, then cosine decay to ~0 at ``epochs``). The imbalance of
ER is handled by ``pos_weight = n_negative / n_positive`` in ``BCEWithLogitsLoss``. Auxiliary
targets (``Architecture.aux_targets``; by default PrePost learns the measured minimal ablative
margin of ``margin.csv``) add ``aux_weight`` times a Huber loss on the targets standardised
over the training patients (:func:`~recur.models.losses.standardise_targets`,
:func:`~recur.models.losses.masked_huber`: a patient without a value adds nothing). Training
items that carry an ``offset`` (:func:`~recur.models.losses.covariate_offset`) add it to the
network's logit in the training loss only; selection and scoring use the network alone.
:func:`predict_logits` scores a dataset (optionally the mean over the 8 dihedral views). The
jobs that read the tables and write the trained models are in :mod:`recur.models.jobs`.

The config section ``train`` is read by :class:`TrainConfig`, which gives each job its
:class:`Architecture` (per model), :class:`TrainSettings` and covariate offset.

Same seed and settings -> identical weights and scores on the CPU: every generator is seeded,
``torch.use_deterministic_algorithms(True)``, MONAI ``set_determinism``, ``num_workers=0``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader
from monai.utils import set_determinism
from torch import nn

from recur.constants import DEVICES, DL_MODELS
from recur.errors import RecurError
from recur.models.data import Augmentation, make_dataset, plain_tensors
from recur.models.losses import masked_huber, pos_weight, standardise_targets
from recur.models.networks import (
    CHANNELS_PER_TIMEPOINT,
    MODEL_TIMEPOINTS,
    ROI_CHANNELS,
    EnsembleNet,
    build_model,
)
from recur.models.selection import average_states, safe_auc, select_epoch, smoothed_auc
from recur.settings import SectionSettings, from_section, section_defaults

log = logging.getLogger(__name__)

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
#: The auxiliary regression target of the models ``train.margin_target`` lists: the measured
#: minimal ablative margin (a column of ``margin.csv``).
MARGIN_TARGET = "min_margin_mm"


@dataclass(frozen=True)
class Architecture:
    """The design of one trained network (saved beside the weights as ``model.json``; built by
    :meth:`TrainConfig.architecture`, rebuilt by :func:`~recur.models.jobs.load_model`)."""

    model: str
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    hidden: int
    dropout: float
    max_pool: bool
    #: the tumour ROI as 3 more input channels per time point (recur.models.data)
    roi_channel: bool
    #: scores are the mean logit over the 8 dihedral views of the input (test-time
    #: augmentation, :func:`predict_logits`); the tuning AUC of each epoch uses the plain view
    tta: bool
    #: names of auxiliary regression targets learnt beside ER (multi-task; e.g. the measured
    #: minimal ablative margin, ``min_margin_mm``): one more output of the network each
    aux_targets: tuple[str, ...]
    #: number of member networks: 1 = one network; more =
    #: :class:`~recur.models.networks.EnsembleNet` of that many networks of this design
    #: (:func:`~recur.models.jobs.run_ensemble`)
    members: int

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
    """Optimisation settings of one training job (built by :meth:`TrainConfig.optimisation`)."""

    epochs: int
    patience: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    seed: int
    augment: Augmentation
    min_epochs: int
    smooth_epochs: int
    scheduler: str
    #: keep the mean of the weights of the ``smooth_epochs`` epochs of the selected window
    #: (:func:`~recur.models.selection.average_states`) instead of the selected epoch's own weights
    average_window: bool
    #: weight of the auxiliary regression loss (Huber loss on the standardised targets of
    #: ``Architecture.aux_targets``) beside the ER loss
    aux_weight: float

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise RecurError(
                f"train: scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}"
            )
        if self.min_epochs < 1 or self.smooth_epochs < 1:
            raise RecurError("train: min_epochs and smooth_epochs must be at least 1")
        if not self.aux_weight >= 0:
            raise RecurError(f"train: aux_weight must be >= 0, got {self.aux_weight}")

    @classmethod
    def defaults(cls, **overrides: Any) -> TrainSettings:
        """The schema's defaults with ``overrides`` of these fields (tests, bench scripts)."""
        return replace(TrainConfig.defaults().optimisation(), **overrides)


@dataclass(frozen=True)
class OffsetSettings(SectionSettings):
    """Covariate-adjusted training: config section ``train.offset`` (meanings and defaults in
    ``schemas/config.schema.yaml``)."""

    SECTION = "train.offset"

    models: tuple[str, ...]
    variables: tuple[str, ...]
    c: float

    def __post_init__(self) -> None:
        _check_models("train.offset.models", self.models)
        if not self.c > 0:
            raise RecurError(f"train.offset: c must be > 0, got {self.c}")

    def variables_of(self, model: str) -> tuple[str, ...]:
        """The offset's variables in ``model``'s training jobs (none: trained without it)."""
        return self.variables if model in self.models else ()


def _check_models(key: str, models: Sequence[str]) -> None:
    unknown = [m for m in models if m not in DL_MODELS]
    if unknown:
        raise RecurError(f"{key}: unknown model(s) {unknown}; expected some of {DL_MODELS}")


#: The nested sections of ``train`` and the classes that read them.
_NESTED = {"offset": OffsetSettings, "augment": Augmentation}


@dataclass(frozen=True)
class TrainConfig:
    """The training of the deep-learning models: config section ``train`` (types, ranges,
    meanings and defaults in ``schemas/config.schema.yaml``; build with :meth:`from_config`).

    One object serves every (model, fold) job: :meth:`architecture` gives a model's network
    (ROI channels, margin target), :meth:`optimisation` the optimiser and selection settings,
    ``offset.variables_of(model)`` its covariate offset. ``threads`` and ``signature`` are read
    by the rules (:data:`recur.settings.RULE_KEYS`).
    """

    epochs: int
    patience: int
    min_epochs: int
    smooth_epochs: int
    average_window: bool
    scheduler: str
    batch_size: int
    learning_rate: float
    weight_decay: float
    seed: int
    #: K cross-fitting folds (the training jobs' patients; the rules' fold jobs)
    crossfit_folds: int
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    max_pool: bool
    #: models whose networks get the ROI channels
    roi_channel: tuple[str, ...]
    #: models that learn the measured margin (:data:`MARGIN_TARGET`) as a second output
    margin_target: tuple[str, ...]
    aux_weight: float
    offset: OffsetSettings
    tta: bool
    gru_hidden: int
    dropout: float
    augment: Augmentation

    def __post_init__(self) -> None:
        _check_models("train.roi_channel", self.roi_channel)
        _check_models("train.margin_target", self.margin_target)
        if len(self.widths) != 4 or len(self.blocks) != 4:
            raise RecurError("train: widths and blocks need one value per encoder stage (4)")
        if self.crossfit_folds < 2:
            raise RecurError(f"train: crossfit_folds must be >= 2, got {self.crossfit_folds}")
        self.optimisation()  # its own checks (scheduler, epochs, aux_weight)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TrainConfig:
        """The settings of the validated config section ``train``."""
        nested = {k: c.from_config(section[k]) for k, c in _NESTED.items() if k in section}
        return from_section(cls, {**section, **nested}, "train")

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """The settings of a ``--settings`` argument (:func:`recur.settings.section_json`)."""
        from recur.settings import json_section

        return cls.from_config(json_section(text))

    @classmethod
    def defaults(cls, **overrides: Any) -> TrainConfig:
        """The schema's defaults with ``overrides`` (tests, bench scripts); a nested section
        (``offset``, ``augment``) may be given in part, as a dict of its keys to change."""
        for key in _NESTED:
            if isinstance(overrides.get(key), Mapping):
                overrides[key] = section_defaults(f"train.{key}", **overrides[key])
        return cls.from_config(section_defaults("train", **overrides))

    def architecture(self, model: str) -> Architecture:
        """The network of ``model``'s training jobs (one network, not an ensemble)."""
        _check_models("train-dl --model", [model])
        return Architecture(
            model=model,
            widths=self.widths,
            blocks=self.blocks,
            hidden=self.gru_hidden,
            dropout=self.dropout,
            max_pool=self.max_pool,
            roi_channel=model in self.roi_channel,
            tta=self.tta,
            aux_targets=(MARGIN_TARGET,) if model in self.margin_target else (),
            members=1,
        )

    def optimisation(self) -> TrainSettings:
        """The optimiser, schedule, epoch selection and augmentation of every training job."""
        return TrainSettings(
            epochs=self.epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            seed=self.seed,
            augment=self.augment,
            min_epochs=self.min_epochs,
            smooth_epochs=self.smooth_epochs,
            scheduler=self.scheduler,
            average_window=self.average_window,
            aux_weight=self.aux_weight,
        )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecurError("device: 'cuda' requested but no CUDA GPU is available")
    if name not in DEVICES:
        raise RecurError(f"device: unknown device {name!r} (one of {', '.join(DEVICES)})")
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


def format_duration(seconds: float) -> str:
    """A duration for a person: ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def epoch_eta(epoch: int, epochs: int, elapsed_s: float, earliest_stop: int | None = None) -> str:
    """The progress note of the log line of ``epoch`` (1-based) of ``epochs``, the epochs so
    far having taken ``elapsed_s`` seconds: the time the remaining epochs take at the mean
    epoch time so far, and, when early stopping could end training before the last epoch (at
    ``earliest_stop`` at the soonest), that it may end sooner."""
    left = epochs - epoch
    if left <= 0:
        return "last epoch"
    note = f"about {format_duration(elapsed_s / epoch * left)} left"
    if earliest_stop is not None and earliest_stop < epochs:
        note += " (early stopping may end sooner)"
    return note


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
    (:func:`~recur.models.selection.select_epoch`: smoothed tuning AUC from ``min_epochs`` on;
    early stopping after ``patience`` epochs from ``min_epochs`` on without a better one).
    ``on_select(epoch, states)``, when given, is called at the end with the window's state
    dicts (oldest first). Each epoch logs one line: ``epoch k/N``, its losses, AUCs and time,
    and :func:`epoch_eta`'s estimate of the time left.
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
        window.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        kept = select_epoch(pd.DataFrame(rows), settings.min_epochs, settings.smooth_epochs)
        if kept == epoch:
            best_epoch, since_best, best_window = epoch, 0, list(window)
        elif epoch >= settings.min_epochs:
            since_best += 1
        # the first epoch early stopping could end on: patience - since_best more epochs
        # without a better one, counted from min_epochs on
        earliest_stop = max(epoch + 1, settings.min_epochs) + settings.patience - since_best - 1
        log.info(
            "epoch %d/%d: train loss %.4f (auxiliary %.4f), tune loss %.4f, tune AUC %.3f "
            "(smoothed %.3f), lr %.2g (%.1f s); %s",
            epoch,
            settings.epochs,
            *(rows[-1][c] for c in LOG_COLUMNS[1:]),
            epoch_eta(epoch, settings.epochs, sum(r["seconds"] for r in rows), earliest_stop),
        )
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
