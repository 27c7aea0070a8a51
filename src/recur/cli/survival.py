"""The ``survival`` command: Cox models and censoring-aware metrics (``recur.survival``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recur.cli.common import add_evaluation_inputs, add_table_outputs, write_csv
from recur.errors import RecurError


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise RecurError(f"{option} expects MODEL=PATH, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def _cmd_survival(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.cohort.split import read_split
    from recur.constants import DL_MODELS
    from recur.evaluate import readers
    from recur.evaluate.figures import save_figure
    from recur.evaluate.settings import BootstrapSettings
    from recur.evaluate.tables import markdown_table
    from recur.io import write_text_atomic
    from recur.models import tabular
    from recur.settings import from_json
    from recur.survival import analysis, data, stage
    from recur.survival.settings import SurvivalSettings

    settings = SurvivalSettings.from_json(a.settings)
    boot = BootstrapSettings.from_json(a.bootstrap)
    design = from_json(tabular.TabularSettings, a.tabular)
    clinical = readers.read_clinical(a.clinical)
    split = read_split(a.split)
    paths = _pairs(a.predictions, "--predictions")
    oof_paths = _pairs(a.oof, "--oof")
    preds = {m: readers.read_predictions(p, m) for m, p in paths.items()}
    missing = [m for m in DL_MODELS if m not in preds]
    if missing:
        raise RecurError(f"survival needs the predictions of {', '.join(missing)}")
    signatures = {}
    for m in DL_MODELS:
        oof = (
            readers.read_predictions(oof_paths[m], f"{m} (out-of-fold)") if m in oof_paths else None
        )
        signatures[m] = tabular.signature_values(preds[m], oof, split, a.stacking)
    chosen, _ = tabular.choose_signature({m: preds[m] for m in DL_MODELS}, clinical)
    margins = pd.read_csv(a.margin) if a.margin else None
    features = list(a.margin_features or []) if margins is not None else []
    frame = data.survival_frame(clinical, split, signatures, margins, features)
    scores = readers.evaluation_frame(preds, split, clinical)
    frame = frame.merge(scores[["patient_id", *paths]], on="patient_id", how="left")
    sets = data.predictor_sets(chosen, features)
    result = analysis.analyse(
        frame,
        sets,
        list(paths),
        design,
        settings,
        table2_resamples=boot.bootstrap,
        seed=boot.seed,
        level=boot.ci_level,
    )
    write_csv(result.table, a.out)
    wide = stage.survival_wide(result.table)
    note = (
        f"Estimates with {boot.ci_level:.0%} percentile-bootstrap CIs ({settings.bootstrap} "
        "resamples of Table 2's, the same for every model). Cox models were fitted on the "
        f"training patients ({chosen} signature in DL_Clinical); Uno's C is truncated at "
        "24 months; the binary models' scores have no survival function (no Brier score)."
    )
    write_text_atomic(a.md, markdown_table(wide) + f"\n{note}\n")
    write_text_atomic(a.html, wide.to_html(index=False, border=0) + f"<p>{note}</p>\n")
    write_csv(result.comparisons, a.compare)
    write_csv(result.cox, a.cox)
    write_csv(result.cutoffs, a.cutoffs)
    write_csv(result.predictions, a.risk)
    if a.models_dir:
        from recur.survival.files import write_cox_model

        for name, model in result.models.items():
            write_cox_model(model, Path(a.models_dir) / name, design, settings.auc_months)
    figdir = Path(a.figdir)
    for name in ("td_auc", "calibration", "km"):
        png = figdir / f"{name}_{analysis.FIGURE_COHORT}.png"
        if name in result.figures:
            save_figure(result.figures[name], png, png.with_suffix(".pdf"))
        else:
            raise RecurError(f"survival: no {analysis.FIGURE_COHORT} patients for the figures")
    write_csv(result.curves, str(figdir / f"td_auc_{analysis.FIGURE_COHORT}.csv"))
    write_csv(result.calibration, str(figdir / f"calibration_{analysis.FIGURE_COHORT}.csv"))
    write_csv(result.km, str(figdir / f"km_{analysis.FIGURE_COHORT}.csv"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``survival``."""
    p = sub.add_parser(
        "survival",
        help="Cox models of recurrence-free survival and censoring-aware metrics",
        description="Fit Cox models of the binary models' predictor sets on the training "
        "patients; write survival.csv (Harrell's and Uno's C, time-dependent AUC, integrated "
        "Brier score of every model per cohort, bootstrap CIs), the paired C-index "
        "comparisons, hazard ratios with proportional-hazards tests, the Cox risk cutoffs and "
        "predictions, and the survival figures (docs/methods/survival.md).",
    )
    add_evaluation_inputs(p)
    p.add_argument("--oof", nargs="*", metavar="MODEL=PATH", help="out-of-fold DL predictions")
    p.add_argument("--stacking", required=True, help="dl_clinical.stacking")
    p.add_argument("--margin", default=None, help="margin.csv (margin models)")
    p.add_argument(
        "--margin-features",
        nargs="*",
        default=None,
        help="margin columns of the margin models' predictor sets (config margin.features)",
    )
    p.add_argument("--settings", required=True, metavar="JSON", help="the survival section")
    p.add_argument("--bootstrap", required=True, metavar="JSON", help="evaluate's bootstrap")
    p.add_argument("--tabular", required=True, metavar="JSON", help="the clinical section")
    add_table_outputs(p, "survival table (C-indices, time-dependent AUC, IBS)")
    p.add_argument("--compare", required=True, help="paired C-index comparisons (CSV)")
    p.add_argument(
        "--cox", required=True, help="hazard ratios and proportional-hazards tests (CSV)"
    )
    p.add_argument("--cutoffs", required=True, help="Cox risk cutoffs (CSV)")
    p.add_argument("--risk", required=True, help="Cox risk predictions of every patient (CSV)")
    p.add_argument(
        "--models-dir",
        default=None,
        help="folder for the fitted Cox models, one subfolder per model (design.skops, "
        "design.json, cox.json: what the model bundle carries)",
    )
    p.add_argument(
        "--figdir",
        required=True,
        help="folder of the survival figures (td_auc, calibration, km of the external cohort)",
    )
    p.set_defaults(func=_cmd_survival)
