"""The command line: ``recur <command> ...`` (also ``python -m recur``).

This module only parses arguments and calls package functions. Every command turns a
:class:`recur.errors.RecurError` into one clear message on stderr and exit status 2, with no
traceback; set ``RECUR_DEBUG=1`` to see the traceback as well.

Each stage adds its commands in its own ``_add_<stage>`` function below.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recur.errors import RecurError

log = logging.getLogger("recur")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _threads(n: int | None) -> None:
    """Respect the rule's ``threads`` in every numeric library before any heavy import."""
    if n is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["RECUR_THREADS"] = str(n)


# --------------------------------------------------------------------------- foundation
def _cmd_synth(a: argparse.Namespace) -> None:
    from recur import synth

    synth.write_cohort(
        Path(a.outdir),
        n_train=a.n_train,
        n_test=a.n_test,
        seed=a.seed,
        truth_path=Path(a.truth) if a.truth else None,
        workers=a.threads or 1,
    )


def _cmd_scan(a: argparse.Namespace) -> None:
    from recur import scan

    patterns = scan.load_patterns(Path(a.config) if a.config else None)
    table = scan.scan_tree(Path(a.dicom_root), patterns)
    scan.write_draft(table, Path(a.out))
    n_unsure = int(table["review"].astype(bool).sum()) if len(table) else 0
    log.info("wrote %d series to %s (%d marked for review)", len(table), a.out, n_unsure)


def _cmd_validate_cohort(a: argparse.Namespace) -> None:
    from recur import contract

    cohort = contract.load_cohort(
        Path(a.cohort_dir), a.clinical, a.series, a.rois, require_outcome=not a.no_outcome
    )
    summary = contract.cohort_summary(cohort)
    from recur.io import atomic_path

    with atomic_path(a.out) as tmp:
        summary.to_csv(tmp, index=False)
    log.info("cohort %s: %d patients valid", a.cohort_dir, len(summary))


def _cmd_config_doc(a: argparse.Namespace) -> None:
    from recur import config

    sys.stdout.write(config.reference_markdown())


def _add_foundation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config-doc", help="print the configuration reference (Markdown)")
    p.set_defaults(func=_cmd_config_doc)

    p = sub.add_parser("synth", help="write the synthetic cohort (DICOM, masks, tables)")
    p.add_argument("outdir", help="cohort directory to create")
    p.add_argument("--n-train", type=int, default=254, help="patients of the training site")
    p.add_argument(
        "--n-test", type=int, nargs="+", default=[20, 15], help="patients per external site"
    )
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--truth", help="where to write truth.csv (default: beside OUTDIR)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("scan", help="draft series.csv from a raw DICOM export tree")
    p.add_argument("dicom_root")
    p.add_argument("--out", default="series_draft.csv")
    p.add_argument("--config", help="config YAML whose scan.phase_patterns to use")
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("validate-cohort", help="check a cohort directory against the contract")
    p.add_argument("cohort_dir")
    p.add_argument("--clinical", default="clinical.csv")
    p.add_argument("--series", default="series.csv")
    p.add_argument("--rois", default="rois.csv")
    p.add_argument("--no-outcome", action="store_true", help="outcome columns not required")
    p.add_argument("--out", required=True, help="patients table to write (id, site, cohort)")
    p.set_defaults(func=_cmd_validate_cohort)


# --------------------------------------------------------------------------- conversion


def _add_convert(sub: argparse._SubParsersAction) -> None:
    pass


# --------------------------------------------------------------------------- preprocessing


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    pass


# --------------------------------------------------------------------------- models


def _cmd_split(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import split

    patients = pd.read_csv(a.patients, dtype={"patient_id": str})
    table = split.make_split(patients, split.read_outcome(a.clinical), a.fraction, a.seed)
    split.write_split(table, a.out)
    log.info("split: %s", table["split"].value_counts().to_dict())


def _dl_arch(a: argparse.Namespace):
    from recur.train import Architecture

    return Architecture(
        model=a.model,
        widths=tuple(a.widths),
        blocks=tuple(a.blocks),
        hidden=a.hidden,
        dropout=a.dropout,
    )


def _cmd_train_dl(a: argparse.Namespace) -> None:
    from recur import train
    from recur.dl_data import Augmentation

    settings = train.TrainSettings(
        epochs=a.epochs,
        patience=a.patience,
        batch_size=a.batch_size,
        learning_rate=a.learning_rate,
        weight_decay=a.weight_decay,
        seed=a.seed,
        augment=Augmentation(
            rotate_deg=a.rotate_deg,
            flip=not a.no_flip,
            intensity_scale=a.intensity_scale,
            intensity_shift=a.intensity_shift,
            prob=a.augment_prob,
        ),
    )
    train.configure_torch(a.seed, a.threads)
    train.run_training(
        _dl_arch(a),
        settings,
        fold=a.fold,
        crossfit_k=a.folds,
        split_csv=a.split,
        clinical_csv=a.clinical,
        crops_dir=a.crops_dir,
        outdir=a.outdir,
        device=a.device,
    )


def _cmd_signature_dl(a: argparse.Namespace) -> None:
    import json

    import pandas as pd

    from recur import train
    from recur.io import atomic_path

    model_dir = Path(a.model_dir)
    table = train.signature_table(pd.read_csv(model_dir / "scores.csv", dtype={"patient_id": str}))
    meta = json.loads((model_dir / "model.json").read_text())
    train_log = pd.read_csv(model_dir / "training_log.csv")
    train.plot_training(train_log, meta["model"], a.figure, meta.get("selected_epoch"))
    with atomic_path(a.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")


def _cmd_crossfit_dl(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import train
    from recur.io import atomic_path

    def read(d: str) -> pd.DataFrame:
        return pd.read_csv(Path(d) / "scores.csv", dtype={"patient_id": str})

    table = train.crossfit_table(read(a.full), [read(d) for d in a.folds])
    with atomic_path(a.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="tuning split of the training cohort (split.csv)")
    p.add_argument("--patients", required=True, help="patients.csv (patient_id, site, cohort)")
    p.add_argument("--clinical", required=True, help="clinical.csv (patient_id, er)")
    p.add_argument("--fraction", type=float, default=0.2, help="share of train put in tune")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("train-dl", help="train one deep-learning model (full or one fold)")
    p.add_argument("--model", required=True, choices=["Pre", "PrePost"])
    p.add_argument("--fold", default="full", help="'full' or a cross-fitting fold 0..K-1")
    p.add_argument("--folds", type=int, default=4, help="K cross-fitting folds")
    p.add_argument("--split", required=True, help="split.csv")
    p.add_argument("--clinical", required=True, help="clinical.csv (er)")
    p.add_argument("--crops-dir", required=True, help="folder of {patient}.npz crops")
    p.add_argument("--outdir", required=True, help="where weights.pt etc. go")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 64])
    p.add_argument("--blocks", type=int, nargs=4, default=[1, 1, 1, 1])
    p.add_argument("--hidden", type=int, default=32, help="GRU hidden size (PrePost)")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--rotate-deg", type=float, default=15.0)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--intensity-scale", type=float, default=0.1)
    p.add_argument("--intensity-shift", type=float, default=0.1)
    p.add_argument("--augment-prob", type=float, default=0.5)
    p.set_defaults(func=_cmd_train_dl)

    p = sub.add_parser("signature-dl", help="signature CSV + training curve of a full model")
    p.add_argument("model_dir", help="output folder of train-dl --fold full")
    p.add_argument("--out", required=True, help="predictions/{model}.csv")
    p.add_argument("--figure", required=True, help="training-curve PNG")
    p.set_defaults(func=_cmd_signature_dl)

    p = sub.add_parser("crossfit-dl", help="out-of-fold signature from the fold models")
    p.add_argument("--full", required=True, help="output folder of the full model")
    p.add_argument("--folds", required=True, nargs="+", help="output folders of the folds")
    p.add_argument("--out", required=True, help="predictions/oof/{model}.csv")
    p.set_defaults(func=_cmd_crossfit_dl)


# --------------------------------------------------------------------------- evaluation


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    pass


ADDERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_foundation,
    _add_convert,
    _add_preprocess,
    _add_models,
    _add_evaluate,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recur", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (a rule passes its `threads`)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in ADDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    _threads(args.threads)
    try:
        args.func(args)
    except RecurError as exc:
        if os.environ.get("RECUR_DEBUG"):
            raise
        print(f"recur {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
