"""The file edge of network training: training and ensemble jobs, trained models on disk.

:func:`run_training` runs one training job (fold ``full`` or a cross-fitting fold; its patients
from :func:`~recur.models.crossfit.job_patients`): it reads the split, clinical and
auxiliary-target tables, fits the covariate offset of the training loss
(:func:`~recur.models.losses.covariate_offset`), trains the network
(:func:`~recur.models.train.train_model`) and writes its weights, ``model.json``, training log
and scores. :func:`run_ensemble` joins trained networks into one ensemble and scores every
patient with it; :func:`load_model` rebuilds a trained network from its folder;
:func:`plot_training` draws a training curve.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from recur.cohort.split import read_outcome, read_split
from recur.constants import SCORE_COLUMNS
from recur.errors import RecurError
from recur.io import atomic_path
from recur.models.crossfit import job_patients
from recur.models.data import make_dataset, make_items
from recur.models.losses import covariate_offset
from recur.models.networks import EnsembleNet
from recur.models.selection import safe_auc
from recur.models.train import (
    Architecture,
    TrainConfig,
    predict_logits,
    resolve_device,
    sigmoid,
    train_model,
)

log = logging.getLogger(__name__)
#: The keys of ``model.json`` that describe the network (:class:`Architecture`'s fields).
ARCHITECTURE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Architecture))


def run_training(
    config: TrainConfig,
    model_name: str,
    *,
    fold: str,
    split_csv: str | Path,
    clinical_csv: str | Path,
    crops_dir: str | Path,
    outdir: str | Path,
    device: str,
    aux_csv: str | Path | None = None,
) -> pd.DataFrame:
    """Train one (model, fold) job and write ``weights.pt``, ``model.json``,
    ``training_log.csv`` and ``scores.csv`` (patient_id, cohort, split, score) into ``outdir``.

    The network is ``config.architecture(model_name)``, trained with
    ``config.optimisation()``; the ``config.crossfit_folds`` folds are drawn with its seed.
    ``aux_csv``: a table with ``patient_id`` and the columns ``arch.aux_targets`` (e.g.
    ``margin.csv``), read for the training patients only. The offset variables of the model
    (``config.offset``): columns of the clinical table whose fitted log-odds
    (:func:`~recur.models.losses.covariate_offset`, on this job's training patients) offsets
    the training loss; the fitted coefficients are recorded in ``model.json``. Returns the
    scores table.
    """
    arch = config.architecture(model_name)
    settings = config.optimisation()
    offset_variables = config.offset.variables_of(model_name)
    offset_c = config.offset.c
    split_df = read_split(split_csv)
    er = read_outcome(clinical_csv)
    train_ids, tune_ids, score_ids = job_patients(
        split_df, er, fold, config.crossfit_folds, settings.seed
    )
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
    scores = scores[list(SCORE_COLUMNS)]

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
    device: str,
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
    scores = scores[list(SCORE_COLUMNS)]
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
    order; values as numbers, empty cells NaN): the covariates of
    :func:`~recur.models.losses.covariate_offset`. A missing column or a patient without a row
    is an error naming the file."""
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
        missing = [k for k in ARCHITECTURE_KEYS if k not in meta]
        if missing:
            raise RecurError(
                f"{model_dir}: model.json lacks {missing} (written by an older recur: "
                "train the model again)"
            )
        arch = Architecture(
            model=meta["model"],
            widths=tuple(meta["widths"]),
            blocks=tuple(meta["blocks"]),
            hidden=int(meta["hidden"]),
            dropout=float(meta["dropout"]),
            max_pool=bool(meta["max_pool"]),
            roi_channel=bool(meta["roi_channel"]),
            tta=bool(meta["tta"]),
            aux_targets=tuple(meta["aux_targets"]),
            members=int(meta["members"]),
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


def plot_training(
    train_log: pd.DataFrame,
    title: str,
    path: str | Path,
    selected_epoch: int | None = None,
    pdf: str | Path | None = None,
) -> None:
    """Training curve PNG (and ``pdf``): train/tune loss and tune AUC per epoch, the kept epoch
    marked (Okabe–Ito colours, one line style per curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from recur.figstyle import OKABE_ITO, save_figure

    fig, ax1 = plt.subplots(figsize=(6, 3.6))
    epoch = train_log["epoch"]
    ax1.plot(epoch, train_log["train_loss"], label="train loss", color=OKABE_ITO["blue"])
    ax1.plot(epoch, train_log["tune_loss"], "--", label="tune loss", color=OKABE_ITO["vermillion"])
    ax1.set_xlabel("epoch")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_ylabel("BCE loss (ER weighted)")
    ax2 = ax1.twinx()
    green = OKABE_ITO["bluish_green"]
    ax2.plot(epoch, train_log["tune_auc"], ":", label="tune AUC", color=green, alpha=0.7)
    if "tune_auc_smoothed" in train_log.columns:
        ax2.plot(
            epoch,
            train_log["tune_auc_smoothed"],
            label="tune AUC (smoothed, selects)",
            color=green,
            lw=2,
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
    save_figure(fig, path, pdf)
