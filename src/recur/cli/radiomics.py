"""Radiomics commands: ``radiomics-features`` (one patient) and ``radiomics-models``
(Radiomics_Pre, Radiomics_PrePost, Radiomics_Clinical; ``recur.radiomics``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from recur.cli.common import add_tabular_args, tree_settings, write_csv
from recur.constants import RADIOMICS_MODELS
from recur.errors import RecurError

log = logging.getLogger("recur")


def _cmd_features(a: argparse.Namespace) -> None:
    from recur.radiomics.features import features_files
    from recur.radiomics.settings import FeatureSettings

    if a.threads:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    table, seconds = features_files(
        {"pre": a.registered_pre, "post": a.registered_post},
        {"pre": a.mask_pre, "post": a.mask_post},
        a.params,
        a.out,
        FeatureSettings.from_json(a.settings),
        patient=a.patient,
    )
    log.info("%s: %d radiomics features in %.2f s", a.patient, len(table), seconds)


def _patient_of(path: str) -> str:
    """The pseudonym of ``results/radiomics/<patient>.csv``."""
    return Path(path).name.removesuffix(".csv")


def _cmd_models(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.cohort.split import read_split
    from recur.evaluate import readers
    from recur.models import tabular
    from recur.radiomics import model as rm
    from recur.radiomics.settings import ModelSettings

    st = ModelSettings.from_json(a.radiomics_settings)
    fusion = tree_settings(a)
    clinical = readers.read_clinical(a.clinical)
    split = read_split(a.split)
    tables = {_patient_of(p): pd.read_csv(p) for p in a.features}
    wide = rm.feature_matrix(tables)
    if len(a.out) != len(RADIOMICS_MODELS) or len(a.model_dir) != len(RADIOMICS_MODELS):
        raise RecurError(f"--out and --model-dir take one path per model of {RADIOMICS_MODELS}")
    out = dict(zip(RADIOMICS_MODELS, a.out, strict=True))
    dirs = {m: Path(d) for m, d in zip(RADIOMICS_MODELS, a.model_dir, strict=True)}
    selected, preds = [], {}
    for model in rm.MODEL_TIMEPOINTS:
        pipe, pred, feats = rm.fit_radiomics_model(model, wide, split, clinical, st)
        summary = rm.selection_summary(pipe, feats, model)
        log.info("%s", json.dumps(summary))
        dirs[model].mkdir(parents=True, exist_ok=True)
        rm.save_pipeline(
            pipe,
            dirs[model] / "model.skops",
            dirs[model] / "manifest.json",
            {"features": feats, "settings": st.__dict__, "selection": summary},
        )
        selected.append(rm.selected_features(pipe, feats, model))
        write_csv(pred, out[model])
        preds[model] = pred
    oof = rm.out_of_fold_scores(rm.FUSED, wide, split, clinical, st)
    fused, pred, feats = rm.fit_fusion_model(
        preds[rm.FUSED], oof, split, clinical, fusion, a.threads or 1
    )
    name = RADIOMICS_MODELS[2]
    dirs[name].mkdir(parents=True, exist_ok=True)
    tabular.save_model(
        fused,
        dirs[name] / "model.skops",
        dirs[name] / "manifest.json",
        features=feats,
        settings=fusion,
        extra={"model": name, "signature": rm.FUSED, "stacking": "crossfit"},
    )
    write_csv(pred, out[name])
    if "logistic" in fused.named_steps:
        selected.append(rm.fusion_coefficients(fused, name))
    write_csv(pd.concat(selected, ignore_index=True), a.selected)
    log.info("radiomics models fitted on %d patients' features", len(wide))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``radiomics-features`` and ``radiomics-models``."""
    p = sub.add_parser("radiomics-features", help="pyradiomics features of one patient")
    p.add_argument("--patient", default="?", help="pseudonym for messages")
    p.add_argument("--registered-pre", required=True, help="folder of the pre <phase>.nii.gz")
    p.add_argument("--registered-post", required=True, help="folder of the post <phase>.nii.gz")
    p.add_argument("--mask-pre", required=True, help="tumour mask (pre DP grid)")
    p.add_argument("--mask-post", required=True, help="ablation-zone mask (post DP grid)")
    p.add_argument("--params", required=True, help="pyradiomics parameter file (YAML)")
    p.add_argument(
        "--settings",
        required=True,
        help="the region keys of the config section radiomics as JSON, as the rules pass it",
    )
    p.add_argument("--out", required=True, help="the patient's feature table (CSV)")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("radiomics-models", help="fit and score the radiomics models")
    p.add_argument("--clinical", required=True, help="clinical.csv of the cohort")
    p.add_argument("--split", required=True, help="results/splits/split.csv")
    p.add_argument("--features", nargs="+", required=True, help="per-patient feature tables")
    p.add_argument(
        "--radiomics-settings",
        required=True,
        help="the model keys of the config section radiomics as JSON, as the rules pass it",
    )
    add_tabular_args(p)  # Radiomics_Clinical's estimator: the dl_clinical section
    p.add_argument(
        "--out", nargs=3, required=True, help=f"predictions CSVs of {', '.join(RADIOMICS_MODELS)}"
    )
    p.add_argument(
        "--model-dir", nargs=3, required=True, help="model folders (model.skops, manifest.json)"
    )
    p.add_argument("--selected", required=True, help="selected features with coefficients")
    p.set_defaults(func=_cmd_models)
