"""Deployment commands: ``bundle`` (the portable model bundle) and ``predict`` (score new
patients from DICOM with it) (``recur.deploy``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("recur")

#: The warning of ``recur predict --help``, as docs/guide/predict.md words it.
PREDICT_WARNING = """\
NOT FOR CLINICAL USE. recur is research software, not a medical device. The scores
come from models trained on the cohort the bundle was built from and have not been
validated for decisions about individual patients."""
#: An example command line (the one of docs/guide/predict.md).
PREDICT_EXAMPLE = """\
recur --threads 2 predict --bundle results/bundle \\
    --series new/series.csv --rois new/rois.csv --clinical new/clinical.csv \\
    --out predictions_new"""
PREDICT_DESCRIPTION = f"""\
Score new patients from their DICOM series, ROI masks and clinical variables with the
model bundle of a workflow run (results/bundle): every model the study evaluates
(calibrated probability, raw score, risk group at the study's cutoff, the Cox model's
12- and 24-month recurrence-free probability, the study's external AUC and C-index),
the primary model, and the ablative margin, in OUT/predictions.csv and a one-page
summary per patient (OUT/<patient>/summary.html). A patient without a post-ablation
series gets the models that do not need it. The bundle is verified against its
manifest and the tables are checked before any image is read.

{PREDICT_WARNING}"""
PREDICT_EPILOG = f"""\
example:
  {PREDICT_EXAMPLE.replace(chr(10), chr(10) + "  ")}

Inputs, outputs and the bundle: docs/guide/predict.md."""


def _cmd_bundle(a: argparse.Namespace) -> None:
    import json

    import pandas as pd

    from recur.deploy import bundle, registry
    from recur.errors import RecurError
    from recur.evaluate.tables import primary_model

    files = {}
    for item in a.file:
        if "=" not in item:
            raise RecurError(f"--file expects BUNDLE_PATH=SOURCE, got {item!r}")
        rel, src = item.split("=", 1)
        files[rel] = src
    if registry.CHOICE_FILE not in files:
        raise RecurError(f"bundle: --file {registry.CHOICE_FILE}=... is required")
    choice = json.loads(Path(files[registry.CHOICE_FILE]).read_text(encoding="utf-8"))
    entries = registry.study_entries(a.models, a.cox_models, str(choice["signature"]))
    cutoffs = pd.read_csv(a.cutoffs)

    def table(path: str | None):
        return pd.read_csv(path) if path else None

    performance = bundle.study_performance(
        entries, cutoffs, table(a.table2), table(a.survival), table(a.calibration)
    )
    manifest = bundle.write_bundle(
        a.out,
        entries=entries,
        files=files,
        cutoffs=a.cutoffs,
        settings=json.loads(a.settings),
        performance=performance,
        primary=primary_model(cutoffs, a.models) if "tune_auc" in cutoffs else None,
    )
    log.info("bundle %s: %d files + manifest.json", a.out, len(manifest["files"]))


def _cmd_predict(a: argparse.Namespace) -> None:
    from recur.deploy import predict

    table = predict.predict(
        a.bundle,
        a.series,
        a.rois,
        a.clinical,
        a.out,
        cohort_dir=a.cohort_dir,
        patients=a.patients,
        device=a.device,
        keep_work=a.keep_work,
        threads=a.threads,
    )
    log.info("scored %d patient(s): %s", len(table), Path(a.out) / "predictions.csv")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bundle`` and ``predict``."""
    p = sub.add_parser("bundle", help="assemble the portable model bundle (results/bundle)")
    p.add_argument(
        "--file",
        nargs="+",
        required=True,
        metavar="BUNDLE_PATH=SOURCE",
        help="every model file, by its path in the bundle (recur.deploy.registry."
        "workflow_sources), and the DL_Clinical choice.json",
    )
    p.add_argument("--models", nargs="+", required=True, help="the binary models to carry")
    p.add_argument("--cox-models", nargs="*", default=[], help="the Cox models to carry")
    p.add_argument("--cutoffs", required=True, help="results/tables/cutoffs.csv")
    p.add_argument("--table2", default=None, help="results/tables/table2.csv (external AUC)")
    p.add_argument("--survival", default=None, help="results/tables/survival.csv (C-index)")
    p.add_argument("--calibration", default=None, help="results/tables/calibration.csv")
    p.add_argument("--settings", required=True, help="JSON: the settings sections used")
    p.add_argument("--out", required=True, help="bundle folder to write (replaced)")
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser(
        "predict",
        help="score new patients from DICOM with a model bundle (not for clinical use)",
        description=PREDICT_DESCRIPTION,
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="model bundle folder (results/bundle)")
    p.add_argument("--series", required=True, help="series.csv of the new patients")
    p.add_argument("--rois", required=True, help="rois.csv of the new patients")
    p.add_argument(
        "--clinical",
        required=True,
        help="clinical.csv (the five predictors; outcome, site and cohort not needed)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--cohort-dir",
        default=None,
        help="folder the paths in series.csv/rois.csv are relative to (default: each "
        "table's own folder)",
    )
    p.add_argument("--patients", nargs="*", default=[], help="score only these ids")
    p.add_argument(
        "--device",
        default="cpu",
        choices=["auto", "cpu", "cuda"],
        help="where the networks run (default: cpu)",
    )
    p.add_argument(
        "--keep-work", action="store_true", help="keep the intermediate NIfTI files (out/work)"
    )
    p.set_defaults(func=_cmd_predict)
