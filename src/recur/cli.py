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


def _add_foundation(sub: argparse._SubParsersAction) -> None:
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


def _add_models(sub: argparse._SubParsersAction) -> None:
    pass


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
