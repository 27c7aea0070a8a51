"""Commands of the cohort and its configuration: ``config-doc``, ``scan``, ``validate-cohort``
and the tuning ``split`` (``recur.cohort``, ``recur.config``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from recur.cli.sections import add_settings, schema_default

log = logging.getLogger("recur")


def _cmd_scan(a: argparse.Namespace) -> None:
    from recur.cohort import scan

    patterns = scan.load_patterns(Path(a.config) if a.config else None)
    table = scan.scan_tree(Path(a.dicom_root), patterns)
    scan.write_draft(table, Path(a.out))
    n_unsure = int(table["review"].astype(bool).sum()) if len(table) else 0
    log.info("wrote %d series to %s (%d marked for review)", len(table), a.out, n_unsure)


def _cmd_validate_cohort(a: argparse.Namespace) -> None:
    from recur.cohort import contract

    cohort = contract.load_cohort(
        Path(a.cohort_dir), a.clinical, a.series, a.rois, require_outcome=not a.no_outcome
    )
    summary = contract.cohort_summary(cohort)
    from recur.io import atomic_path

    with atomic_path(a.out) as tmp:
        summary.to_csv(tmp, index=False)
    # no path here: the cohort folder name may identify a patient or a site
    log.info("cohort: %d patients valid -> %s", len(summary), a.out)


def _cmd_config_doc(a: argparse.Namespace) -> None:
    from recur import config

    sys.stdout.write(config.reference_markdown())


def _cmd_split(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.cohort import exclusions, split

    patients = pd.read_csv(a.patients, dtype={"patient_id": str})
    qc_excluded = exclusions.read_exclusions(a.qc_exclusions)["patient_id"]
    table = split.split_cohort(
        patients,
        split.read_outcome(a.clinical),
        split.SplitSettings.from_json(a.settings),
        excluded=[*a.exclude, *qc_excluded],
    )
    split.write_split(table, a.out)
    log.info("split: %s", table["split"].value_counts().to_dict())


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``config-doc``, ``scan``, ``validate-cohort`` and ``split``."""
    p = sub.add_parser("config-doc", help="print the configuration reference (Markdown)")
    p.set_defaults(func=_cmd_config_doc)

    p = sub.add_parser("scan", help="draft series.csv from a raw DICOM export tree")
    p.add_argument("dicom_root", help="root folder of the DICOM export (walked once, headers only)")
    p.add_argument(
        "--out",
        default="series_draft.csv",
        help="draft series table to write, for review (default: series_draft.csv)",
    )
    p.add_argument("--config", help="config YAML whose scan.phase_patterns to use")
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("validate-cohort", help="check a cohort directory against the contract")
    p.add_argument("cohort_dir", help="the cohort folder (its tables and DICOM files)")
    for table in ("clinical", "series", "rois"):
        p.add_argument(
            f"--{table}",
            default=schema_default("cohort", table),
            help=f"{table} table, relative to COHORT_DIR (config cohort.{table})",
        )
    p.add_argument("--no-outcome", action="store_true", help="outcome columns not required")
    p.add_argument("--out", required=True, help="patients table to write (id, site, cohort)")
    p.set_defaults(func=_cmd_validate_cohort)

    p = sub.add_parser("split", help="tuning split of the training cohort (split.csv)")
    p.add_argument("--patients", required=True, help="patients.csv (patient_id, site, cohort)")
    p.add_argument("--clinical", required=True, help="clinical.csv (patient_id, er)")
    add_settings(p, "split")
    p.add_argument(
        "--out", required=True, help="split.csv to write (patient_id, site, cohort, split)"
    )
    p.add_argument("--exclude", nargs="*", default=[], help="patient ids excluded by config")
    p.add_argument("--qc-exclusions", help="exclusions.csv (qc-exclusions)")
    p.set_defaults(func=_cmd_split)
