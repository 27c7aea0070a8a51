"""Study-reporting commands: ``qc-exclusions``, ``figure1``, ``table-s1`` and ``tripod``
(``recur.cohort.exclusions``, ``recur.reporting``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("recur")


def _cmd_qc_exclusions(a: argparse.Namespace) -> None:
    from recur.cohort import exclusions
    from recur.io import atomic_path

    files = {Path(p).stem: p for p in a.crops}
    table = exclusions.exclusion_table(files)
    with atomic_path(a.out) as tmp:
        table.to_csv(tmp, index=False)
    log.info("QC exclusions: %d patient(s)", table["patient_id"].nunique())


def _cmd_figure1(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.cohort import exclusions, split
    from recur.reporting import report as reporting

    patients = pd.read_csv(a.patients, dtype={"patient_id": str})
    cfg = pd.DataFrame(
        [x.split("=", 1) for x in a.config_exclusion], columns=["patient_id", "reason"]
    )
    flow = reporting.flow_table(
        patients, cfg, exclusions.read_exclusions(a.qc_exclusions), split.read_split(a.split)
    )
    reporting.write_flow(flow, a.csv, a.png, a.pdf)
    log.info("Figure 1 -> %s", a.png)


def _cmd_table_s1(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.reporting import report as reporting

    sites = pd.read_csv(a.patients, dtype={"patient_id": str}).set_index("patient_id")["site"]
    acq = reporting.read_acquisitions(a.acquisition)
    table = reporting.table_s1(reporting.acquisition_rows(acq, sites.to_dict()))
    reporting.write_table(
        table, a.csv, a.md, a.html, "Table S1. MRI acquisition parameters", reporting.S1_NOTE
    )
    log.info("Table S1: %d rows from %d time points", len(table), len(acq))


def _cmd_tripod(a: argparse.Namespace) -> None:
    import json

    import pandas as pd

    from recur.cohort import split
    from recur.reporting import tripod as reporting
    from recur.reporting.design import StudyDesign

    design = StudyDesign.from_sections(json.loads(a.settings))

    items = reporting.tripod_items(
        pd.read_csv(a.clinical, dtype={"patient_id": str}),
        split.read_split(a.split),
        pd.read_csv(a.flow, dtype={"patient_id": str, "patient_ids": str}, keep_default_na=False),
        pd.read_csv(a.table2),
        pd.read_csv(a.calibration),
        design,
    )
    reporting.write_tripod(items, a.md, a.html)
    log.info(
        "TRIPOD+AI: %d items, %d for the authors",
        len(items),
        int((items["status"] == reporting.AUTHORS).sum()),
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``qc-exclusions``, ``figure1``, ``table-s1`` and ``tripod``."""
    p = sub.add_parser("qc-exclusions", help="list the patients excluded by QC (exclusions.csv)")
    p.add_argument("--crops", nargs="*", default=[], help="every patient's crops .npz")
    p.add_argument("--out", required=True, help="exclusions.csv to write")
    p.set_defaults(func=_cmd_qc_exclusions)

    p = sub.add_parser("figure1", help="Figure 1: enrolment flow (PNG, PDF, CSV)")
    p.add_argument("--patients", required=True, help="patients.csv (all cohort patients)")
    p.add_argument(
        "--config-exclusion",
        nargs="*",
        default=[],
        metavar="ID=REASON",
        help="patients excluded by the config, each with its reason",
    )
    p.add_argument("--qc-exclusions", default=None, help="exclusions.csv (qc-exclusions)")
    p.add_argument("--split", required=True, help="split.csv")
    p.add_argument("--csv", required=True, help="Figure 1's table (the enrolment flow) as CSV")
    p.add_argument("--png", required=True, help="Figure 1 as PNG")
    p.add_argument("--pdf", required=True, help="Figure 1 as PDF")
    p.set_defaults(func=_cmd_figure1)

    p = sub.add_parser("table-s1", help="Table S1: MRI acquisition parameters per site/phase")
    p.add_argument("--patients", required=True, help="patients.csv (patient_id, site)")
    p.add_argument("--acquisition", nargs="+", required=True, help="acquisition.json files")
    p.add_argument("--csv", required=True, help="Table S1 as CSV")
    p.add_argument("--md", required=True, help="Table S1 as Markdown")
    p.add_argument("--html", required=True, help="Table S1 as HTML (for the report)")
    p.set_defaults(func=_cmd_table_s1)

    p = sub.add_parser("tripod", help="TRIPOD+AI checklist filled from the run")
    for opt, what in (
        ("--clinical", "clinical.csv of the cohort"),
        ("--split", "split.csv"),
        ("--flow", "the enrolment flow CSV (figure1 --csv)"),
        ("--table2", "table2.csv"),
        ("--calibration", "calibration.csv"),
        ("--md", "the checklist to write as Markdown"),
        ("--html", "the checklist to write as HTML (for the report)"),
    ):
        p.add_argument(opt, required=True, help=what)
    p.add_argument(
        "--settings",
        required=True,
        metavar="JSON",
        help="the config sections split, clinical, dl_clinical, qc and train as one JSON object",
    )
    p.set_defaults(func=_cmd_tripod)
