"""DICOM-to-NIfTI commands: ``convert`` (one series), ``convert-timepoint`` and
``convert-patient`` (the workflow's job) (``recur.preprocess.convert``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recur.cli.common import add_on_failure, excludable, exclusion_guard
from recur.cli.sections import add_settings, schema_default, section_of
from recur.constants import TIMEPOINTS

log = logging.getLogger("recur")


def _convert_settings(a: argparse.Namespace):  # -> recur.preprocess.dicom_series.ConvertSettings
    """``--settings`` (a rule) or ``--config`` (a person), then the options given."""
    from recur.preprocess.dicom_series import ConvertSettings

    given = {k: getattr(a, k, None) for k in ConvertSettings.config_keys()}
    return ConvertSettings.from_config(section_of(a, "convert", **given))


def _cmd_convert(a: argparse.Namespace) -> None:
    from recur.preprocess import convert

    res = convert.convert_series(
        Path(a.dicom_dir),
        Path(a.out),
        series_uid=a.series_uid,
        echo=a.echo,
        settings=_convert_settings(a),
        allow_single_slice=a.allow_single_slice,
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
    from recur.preprocess import convert
    from recur.preprocess.dicom_series import ConvertSettings

    settings = ConvertSettings.from_json(a.settings)
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


def _add_convert_options(p: argparse.ArgumentParser) -> None:
    """``--config`` / ``--settings`` and options overriding single keys of ``convert`` (the
    meanings: ``recur config-doc``); no heavy import at parser-build time."""
    add_settings(p, "convert", person=True)
    for key, kind in (
        ("spacing_tolerance", float),
        ("orientation_tolerance", float),
        ("stack_tolerance_mm", float),
        ("min_slices", int),
        ("compression_level", int),
    ):
        p.add_argument("--" + key.replace("_", "-"), type=kind, help=f"convert.{key}")


def _add_cohort_series(p: argparse.ArgumentParser) -> None:
    """The cohort folder, its series table and the patient of a per-patient conversion."""
    p.add_argument(
        "--cohort-dir", required=True, help="the cohort folder (its tables and DICOM files)"
    )
    p.add_argument(
        "--series-table",
        default=schema_default("cohort", "series"),
        help="series table (relative to the cohort dir unless absolute)",
    )
    p.add_argument("--patient", required=True, help="patient_id of the patient to convert")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert``, ``convert-timepoint`` and ``convert-patient``."""
    p = sub.add_parser("convert", help="convert one DICOM series to a de-identified NIfTI")
    p.add_argument("dicom_dir", help="folder holding the series' files")
    p.add_argument("out", help="NIfTI file to write (.nii.gz or .nii)")
    p.add_argument("--series-uid", help="SeriesInstanceUID to take when the folder holds several")
    p.add_argument("--echo", type=int, help="EchoNumbers to take from a multi-echo series")
    p.add_argument(
        "--allow-single-slice", action="store_true", help="accept a series of exactly one slice"
    )
    _add_convert_options(p)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "convert-timepoint",
        help="convert the 4 phases of one patient and time point (the rules run convert-patient)",
    )
    _add_cohort_series(p)
    p.add_argument("--timepoint", required=True, choices=TIMEPOINTS, help="the time point")
    p.add_argument(
        "--outdir", required=True, help="where {PS,AP,PVP,DP}.nii.gz and acquisition.json go"
    )
    _add_convert_options(p)
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
    p.add_argument(
        "--timepoints",
        nargs="+",
        choices=TIMEPOINTS,
        default=list(TIMEPOINTS),
        help="the time points to convert (default: both)",
    )
    add_settings(p, "convert")
    add_on_failure(p)
    p.set_defaults(func=_cmd_convert_patient)
