"""The ``synth`` command: write the embedded synthetic cohort (``recur.synthetic``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recur.cli.sections import add_settings, section_of


def _er_share(a: argparse.Namespace) -> dict[str, float] | None:
    """``--er-share TRAIN TEST`` as the config's mapping (None when not given)."""
    return dict(zip(("train", "test"), a.er_share, strict=True)) if a.er_share else None


def _cmd_synth(a: argparse.Namespace) -> None:
    from recur.synthetic import cohort as synth

    section = section_of(
        a, "synthetic", n_train=a.n_train, n_test=a.n_test, seed=a.seed, roi_format=a.roi_format
    )
    if a.er_share or a.independent_outcomes:
        section["er_share"] = _er_share(a)
    synth.write_cohort(
        Path(a.outdir),
        synth.SyntheticSettings.from_config(section),
        truth_path=Path(a.truth) if a.truth else None,
        workers=a.threads or 1,
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``synth``."""
    p = sub.add_parser("synth", help="write the synthetic cohort (DICOM, masks, tables)")
    p.add_argument("outdir", help="cohort directory to create")
    add_settings(p, "synthetic", person=True)
    p.add_argument("--n-train", type=int, help="patients of the training site")
    p.add_argument("--n-test", type=int, nargs="+", help="patients per external site")
    p.add_argument("--seed", type=int, help="random seed of the generator")
    p.add_argument(
        "--roi-format",
        choices=("nifti", "seg", "rtstruct"),
        help="write the ROI masks as NIfTI label maps, DICOM SEG or RTSTRUCT",
    )
    share = p.add_mutually_exclusive_group()
    share.add_argument(
        "--er-share",
        type=float,
        nargs=2,
        metavar=("TRAIN", "TEST"),
        help="fix the share of ER patients of the training and the external test cohort",
    )
    share.add_argument(
        "--independent-outcomes",
        action="store_true",
        help="draw every outcome independently (synthetic.er_share: null)",
    )
    p.add_argument("--truth", help="where to write truth.csv (default: beside OUTDIR)")
    p.set_defaults(func=_cmd_synth)
