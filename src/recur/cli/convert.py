"""DICOM-to-NIfTI commands: ``convert`` (one series), ``convert-timepoint`` and
``convert-patient`` (the workflow's job) (``recur.preprocess.convert``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recur.cli.common import add_on_failure, excludable, exclusion_guard
from recur.constants import TIMEPOINTS

log = logging.getLogger("recur")


_CONVERT_SETTINGS = (
    "spacing_tolerance",
    "orientation_tolerance",
    "stack_tolerance_mm",
    "min_slices",
    "allow_single_slice",
    "compression_level",
)


def _convert_settings(a: argparse.Namespace):  # -> recur.preprocess.dicom_series.ConvertSettings
    """Settings from the options given; the others keep ConvertSettings' defaults."""
    from recur.preprocess.dicom_series import ConvertSettings

    given = {k: getattr(a, k) for k in _CONVERT_SETTINGS if getattr(a, k) is not None}
    return ConvertSettings(**given)


def _cmd_convert(a: argparse.Namespace) -> None:
    from recur.preprocess import convert

    res = convert.convert_series(
        Path(a.dicom_dir),
        Path(a.out),
        series_uid=a.series_uid,
        echo=a.echo,
        settings=_convert_settings(a),
        context=f"folder '{a.dicom_dir}'",
    )
    size = "x".join(str(v) for v in res.image.GetSize())
    notes = ("; " + "; ".join(res.notes)) if res.notes else ""
    log.info("wrote %s (%s voxels, %d slices)%s", a.out, size, res.n_slices, notes)


def _cmd_convert_timepoint(a: argparse.Namespace) -> None:
    from recur.preprocess import convert

    convert.convert_timepoint(
        Path(a.cohort_dir),
        a.series_table,
        a.patient,
        a.timepoint,
        Path(a.outdir),
        settings=_convert_settings(a),
    )
    log.info("patient %s %s: wrote 4 phases and acquisition.json", a.patient, a.timepoint)


def _cmd_convert_patient(a: argparse.Namespace) -> None:
    import dataclasses

    from recur.preprocess import convert

    settings = _convert_settings(a)
    if a.min_interval_days is not None:
        settings = dataclasses.replace(settings, min_interval_days=a.min_interval_days)
    done = convert.convert_patient(
        Path(a.cohort_dir),
        a.series_table,
        a.patient,
        Path(a.outdir),
        settings=settings,
        timepoints=a.timepoints,
        guard=exclusion_guard(a),
    )
    for tp in a.timepoints:
        state = "4 phases and acquisition.json" if tp in done else "EXCLUDED (placeholders)"
        log.info("patient %s %s: %s", a.patient, tp, state)


def _add_convert_settings(p: argparse.ArgumentParser) -> None:
    """Options of the geometry checks (defaults: recur.preprocess.dicom_series.ConvertSettings,
    which the schema's ``convert:`` section mirrors); no heavy import at parser-build time."""
    p.add_argument(
        "--spacing-tolerance",
        type=float,
        help="largest distance of a slice from the regular grid, as a fraction of the step "
        "(default 0.05)",
    )
    p.add_argument(
        "--orientation-tolerance",
        type=float,
        help="largest difference of direction cosines between slices (default 0.001)",
    )
    p.add_argument(
        "--stack-tolerance-mm",
        type=float,
        help="largest in-plane offset (mm) of a slice from the normal through the first "
        "(default 0.1)",
    )
    p.add_argument("--min-slices", type=int, help="fewest slices of a volume (default 3)")
    p.add_argument(
        "--allow-single-slice",
        action="store_true",
        default=None,
        help="accept a series of exactly one slice",
    )
    p.add_argument(
        "--compression-level",
        type=int,
        choices=range(1, 10),
        metavar="1..9",
        help="gzip level of .nii.gz output (default 1: fastest)",
    )


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _add_cohort_series(p: argparse.ArgumentParser) -> None:
    """The cohort folder, its series table and the patient of a per-patient conversion."""
    p.add_argument("--cohort-dir", required=True)
    p.add_argument(
        "--series-table",
        default="series.csv",
        help="series table (relative to the cohort dir unless absolute)",
    )
    p.add_argument("--patient", required=True)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert``, ``convert-timepoint`` and ``convert-patient``."""
    p = sub.add_parser("convert", help="convert one DICOM series to a de-identified NIfTI")
    p.add_argument("dicom_dir", help="folder holding the series' files")
    p.add_argument("out", help="NIfTI file to write (.nii.gz or .nii)")
    p.add_argument("--series-uid", help="SeriesInstanceUID to take when the folder holds several")
    p.add_argument("--echo", type=int, help="EchoNumbers to take from a multi-echo series")
    _add_convert_settings(p)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "convert-timepoint", help="convert the 4 phases of one patient and time point"
    )
    _add_cohort_series(p)
    p.add_argument("--timepoint", required=True, choices=TIMEPOINTS)
    p.add_argument(
        "--outdir", required=True, help="where {PS,AP,PVP,DP}.nii.gz and acquisition.json go"
    )
    _add_convert_settings(p)
    add_on_failure(p)
    p.set_defaults(func=excludable(_cmd_convert_timepoint, "convert"))

    p = sub.add_parser(
        "convert-patient",
        help="convert both time points of one patient (8 series; the workflow's job)",
    )
    _add_cohort_series(p)
    p.add_argument(
        "--outdir",
        required=True,
        help="the patient's folder: {pre,post}/{PS,AP,PVP,DP}.nii.gz and acquisition.json go here",
    )
    p.add_argument("--timepoints", nargs="+", choices=TIMEPOINTS, default=list(TIMEPOINTS))
    _add_convert_settings(p)
    p.add_argument(
        "--min-interval-days",
        type=_non_negative_int,
        help="fewest days from the pre DP to the post series; fewer (or post before pre: "
        "swapped time points?) are refused (default 1)",
    )
    add_on_failure(p)
    p.set_defaults(func=_cmd_convert_patient)
