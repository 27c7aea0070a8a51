"""Ablative-margin commands: ``margin-register``, ``margin-metrics``, ``margin-figure``,
``margin-model`` and ``margin-table`` (``recur.margin``)."""

from __future__ import annotations

import argparse
import logging

from recur.cli.common import (
    add_on_failure,
    add_tabular_args,
    excludable,
    tree_settings,
    write_csv,
)
from recur.constants import MARGIN_MODELS
from recur.errors import RecurError
from recur.margin.settings import CrossTimeSettings, MarginMetricSettings
from recur.settings import from_json

log = logging.getLogger("recur")


def _sitk_threads(n: int | None) -> None:
    import SimpleITK as sitk

    if n:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)


def _cmd_margin_register(a: argparse.Namespace) -> None:
    from recur.margin.files import register_files

    _sitk_threads(a.threads)
    qc = register_files(
        a.pre_dp,
        a.post_dp,
        a.pre_mask,
        a.post_mask,
        a.out_tfm,
        a.out_mask,
        from_json(CrossTimeSettings, a.settings, "margin"),
        qc_png=a.qc,
        qc_json=a.qc_json,
        patient=a.patient,
    )
    log.info(
        "%s: post->pre %.2f mm, NCC %.3f -> %.3f, %.1f s",
        a.patient,
        qc["translation_mm"],
        qc["ncc_region_before"],
        qc["ncc_region_after"],
        qc["seconds"],
    )


def _cmd_margin_metrics(a: argparse.Namespace) -> None:
    from recur.margin.files import metrics_files

    _sitk_threads(a.threads)
    rec = metrics_files(
        a.tumour,
        a.zone,
        a.out,
        a.surface,
        from_json(MarginMetricSettings, a.settings, "margin"),
        transform=a.transform,
        patient=a.patient,
    )
    log.info("%s: min margin %.2f mm (%s)", a.patient, rec["min_margin_mm"], rec["mode"])


def _cmd_margin_figure(a: argparse.Namespace) -> None:
    from recur.margin.files import load_surface
    from recur.margin.plots import plot_patient_margins

    plot_patient_margins(load_surface(a.surface), a.patient, a.out, a.pdf)


def _cmd_margin_table(a: argparse.Namespace) -> None:
    from recur.margin.files import table_files

    table = table_files(a.metrics, a.out, a.figure, a.figure_pdf)
    log.info("wrote %d patients to %s", len(table), a.out)


def _cmd_margin_model(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.cohort.split import read_split
    from recur.evaluate import readers
    from recur.margin.models import fit_margin_model
    from recur.models import tabular

    st = tree_settings(a)
    clinical = readers.read_clinical(a.clinical)
    split = read_split(a.split)
    margins = pd.read_csv(a.margin)
    sig, name, extra = None, "signature", {}
    if a.model == "DL_Clinical_Margin":
        if not (a.pre and a.prepost):
            raise RecurError("DL_Clinical_Margin needs --pre and --prepost predictions")
        if not a.stacking:
            raise RecurError("DL_Clinical_Margin needs --stacking (dl_clinical.stacking)")
        chosen = tabular.dl_signature(
            {"Pre": a.pre, "PrePost": a.prepost},
            {"Pre": a.pre_oof, "PrePost": a.prepost_oof},
            clinical,
            split,
            a.stacking,
        )
        sig, name = chosen.values, chosen.name
        extra = {"signature": chosen.model, "stacking": a.stacking}
    model, pred, feats = fit_margin_model(
        a.model, clinical, split, margins, a.features, st, sig, name, n_jobs=a.threads or 1
    )
    if a.model_out and a.manifest:
        tabular.save_model(
            model,
            a.model_out,
            a.manifest,
            features=feats,
            settings=st,
            extra={"model": a.model, **extra},
        )
    write_csv(pred, a.out)
    log.info("%s fitted on %s; %d patients scored", a.model, ", ".join(feats), len(pred))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``margin-register``, ``margin-metrics``, ``margin-figure``, ``margin-model`` and
    ``margin-table``."""
    p = sub.add_parser("margin-register", help="register post DP onto pre DP; zone onto pre")
    p.add_argument("--pre-dp", required=True, help="the pre-ablation DP image (.nii.gz)")
    p.add_argument("--post-dp", required=True, help="the post-ablation DP image (.nii.gz)")
    p.add_argument("--pre-mask", required=True, help="tumour mask on the pre DP grid")
    p.add_argument("--post-mask", required=True, help="ablation-zone mask on the post DP grid")
    p.add_argument("--out-tfm", required=True, help="post-to-pre transform (.tfm)")
    p.add_argument("--out-mask", required=True, help="ablation zone on the pre grid (.nii.gz)")
    p.add_argument("--qc", help="QC overlay PNG")
    p.add_argument("--qc-json", help="registration QC values (JSON)")
    p.add_argument("--patient", default="?", help="pseudonym for messages and QC")
    p.add_argument(
        "--settings",
        required=True,
        help="the registration keys of the config section margin as JSON, as the rules pass it",
    )
    add_on_failure(p)
    p.set_defaults(func=excludable(_cmd_margin_register, "margin_register"))

    p = sub.add_parser("margin-metrics", help="ablative margin of one patient (JSON)")
    p.add_argument("--tumour", required=True, help="tumour mask (pre grid)")
    p.add_argument(
        "--zone", required=True, help="ablation-zone mask (pre grid, or post grid + --transform)"
    )
    p.add_argument("--transform", help="post-to-pre .tfm when --zone is on the post grid")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--surface", help="per-surface-element margins (.npz) for the figures")
    p.add_argument(
        "--settings",
        required=True,
        help="the metric keys of the config section margin as JSON, as the rules pass it",
    )
    p.add_argument(
        "--patient", default="?", help="pseudonym for messages and the JSON's patient_id"
    )
    p.set_defaults(func=_cmd_margin_metrics)

    p = sub.add_parser("margin-figure", help="histogram of one patient's surface margins")
    p.add_argument("--surface", required=True, help=".npz written by margin-metrics")
    p.add_argument("--out", required=True, help="PNG")
    p.add_argument("--pdf", default=None, help="the figure as PDF too")
    p.add_argument("--patient", default="?", help="pseudonym for the figure's title")
    p.set_defaults(func=_cmd_margin_figure)

    p = sub.add_parser("margin-model", help="Clinical or DL_Clinical + margin features")
    p.add_argument("--model", required=True, choices=MARGIN_MODELS, help="the model to fit")
    p.add_argument("--clinical", required=True, help="clinical.csv of the cohort")
    p.add_argument("--split", required=True, help="results/splits/split.csv")
    p.add_argument("--margin", required=True, help="results/margin/margin.csv")
    p.add_argument(
        "--features",
        nargs="+",
        required=True,
        choices=["min_margin_mm", "pct_lt0", "pct_lt5", "pct_ge5"],
        help="margin columns added to the model (config margin.features)",
    )
    add_tabular_args(p)
    for opt in ("--pre", "--prepost", "--pre-oof", "--prepost-oof"):
        p.add_argument(opt, help="DL predictions (DL_Clinical_Margin)")
    p.add_argument(
        "--stacking", choices=["crossfit", "in_sample"], help="DL_Clinical_Margin: required"
    )
    p.add_argument("--out", required=True, help="predictions CSV")
    p.add_argument("--model-out", help="fitted pipeline (.skops)")
    p.add_argument("--manifest", help="sha256 manifest (.json)")
    p.set_defaults(func=_cmd_margin_model)

    p = sub.add_parser("margin-table", help="gather margin metrics into margin.csv")
    p.add_argument("--metrics", nargs="+", required=True, help="per-patient metric JSONs")
    p.add_argument("--out", required=True, help="margin.csv to write")
    p.add_argument("--figure", help="cohort histogram PNG")
    p.add_argument("--figure-pdf", default=None, help="the cohort figure as PDF too")
    p.set_defaults(func=_cmd_margin_table)
