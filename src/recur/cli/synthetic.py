"""The ``synth`` command: write the embedded synthetic cohort (``recur.synthetic``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_synth(a: argparse.Namespace) -> None:
    from recur.synthetic import cohort as synth

    synth.write_cohort(
        Path(a.outdir),
        n_train=a.n_train,
        n_test=a.n_test,
        seed=a.seed,
        truth_path=Path(a.truth) if a.truth else None,
        workers=a.threads or 1,
        er_share=dict(zip(("train", "test"), a.er_share, strict=True)) if a.er_share else None,
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``synth``."""
    p = sub.add_parser("synth", help="write the synthetic cohort (DICOM, masks, tables)")
    p.add_argument("outdir", help="cohort directory to create")
    p.add_argument("--n-train", type=int, default=254, help="patients of the training site")
    p.add_argument(
        "--n-test", type=int, nargs="+", default=[20, 15], help="patients per external site"
    )
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument(
        "--er-share",
        type=float,
        nargs=2,
        metavar=("TRAIN", "TEST"),
        help="fix the share of ER patients of the training and the external test cohort "
        "(the workflow's default: the paper's 0.2323 0.2); without it every outcome is an "
        "independent draw",
    )
    p.add_argument("--truth", help="where to write truth.csv (default: beside OUTDIR)")
    p.set_defaults(func=_cmd_synth)
