"""Model commands: the deep-learning models (``train-dl``, ``signature-dl``, ``ensemble-dl``,
``crossfit-dl``, ``gradcam``) and the tabular ones (``clinical-model``,
``dl-clinical-model``) (``recur.models``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recur.cli.common import add_evaluation_inputs, add_tabular_args, tree_settings, write_csv
from recur.constants import DEVICES, DL_MODELS
from recur.errors import RecurError

log = logging.getLogger("recur")


def _cmd_train_dl(a: argparse.Namespace) -> None:
    from recur.models import jobs, train

    config = train.TrainConfig.from_json(a.settings)
    train.configure_torch(config.seed, a.threads)
    jobs.run_training(
        config,
        a.model,
        fold=a.fold,
        split_csv=a.split,
        clinical_csv=a.clinical,
        crops_dir=a.crops_dir,
        outdir=a.outdir,
        device=a.device,
        aux_csv=a.aux_table,
    )


def _log_recalibration(model: str, rec) -> None:
    if rec.method == "logistic":
        log.info(
            "%s: recalibrated on %d tuning patients (%d ER): logit(p) = %.4f + %.4f logit(score)",
            model,
            rec.n,
            rec.n_events,
            rec.intercept,
            rec.slope,
        )
    else:
        log.warning(
            "%s: recalibration on %d tuning patients (%d ER): %s (intercept %.4f, slope %.4f)",
            model,
            rec.n,
            rec.n_events,
            rec.note,
            rec.intercept,
            rec.slope,
        )


def _cmd_signature_dl(a: argparse.Namespace) -> None:
    import json

    import pandas as pd

    from recur.cohort.split import read_outcome
    from recur.evaluate import recalibration
    from recur.io import atomic_path
    from recur.models import crossfit, jobs

    model_dir = Path(a.model_dir)
    scores = Path(a.scores) if a.scores else model_dir / "scores.csv"
    table = crossfit.signature_table(pd.read_csv(scores, dtype={"patient_id": str}))
    meta = json.loads((model_dir / "model.json").read_text())
    rec = recalibration.fit_on_tune(table, read_outcome(a.clinical))
    _log_recalibration(meta["model"], rec)
    train_log = pd.read_csv(model_dir / "training_log.csv")
    jobs.plot_training(
        train_log, meta["model"], a.figure, meta.get("selected_epoch"), pdf=a.figure_pdf
    )
    recalibration.write_recalibration(a.recalibration, rec, meta["model"])
    with atomic_path(a.out) as tmp:
        recalibration.recalibrate_table(table, rec).to_csv(
            tmp, index=False, float_format=recalibration.FLOAT_FORMAT
        )


def _cmd_ensemble_dl(a: argparse.Namespace) -> None:
    from recur.models import jobs, train

    train.configure_torch(0, a.threads)
    jobs.run_ensemble(
        a.members, split_csv=a.split, crops_dir=a.crops_dir, outdir=a.outdir, device=a.device
    )


def _cmd_crossfit_dl(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.evaluate import recalibration
    from recur.io import atomic_path
    from recur.models import crossfit

    def read(d: str) -> pd.DataFrame:
        return pd.read_csv(Path(d) / "scores.csv", dtype={"patient_id": str})

    table = crossfit.crossfit_table(read(a.full), [read(d) for d in a.folds])
    rec = recalibration.read_recalibration(a.recalibration)
    with atomic_path(a.out) as tmp:
        recalibration.recalibrate_table(table, rec).to_csv(
            tmp, index=False, float_format=recalibration.FLOAT_FORMAT
        )


def _cmd_gradcam(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.cohort.split import read_outcome
    from recur.models import crossfit, gradcam, jobs, train
    from recur.settings import from_json

    train.configure_torch(0, a.threads)
    device = train.resolve_device(a.device)
    model, arch = jobs.load_model(a.model_dir, device)
    if arch.model != "PrePost":
        raise RecurError(f"{a.model_dir}: Grad-CAM needs the PrePost model, not {arch.model}")
    gradcam.run_gradcam(
        model,
        crossfit.signature_table(pd.read_csv(a.predictions, dtype={"patient_id": str})),
        read_outcome(a.clinical),
        a.crops_dir,
        a.outdir,
        from_json(gradcam.GradcamSettings, a.settings, "gradcam"),
        device=device,
    )


def _cmd_clinical_model(a: argparse.Namespace) -> None:
    from recur.cohort.split import read_split
    from recur.constants import CLINICAL_FEATURES
    from recur.evaluate import readers
    from recur.models import tabular

    st = tree_settings(a)
    model, pred = tabular.clinical_model(
        readers.read_clinical(a.clinical), read_split(a.split), st, n_jobs=a.threads or 1
    )
    tabular.save_model(model, a.model, a.manifest, features=list(CLINICAL_FEATURES), settings=st)
    write_csv(pred, a.out)
    log.info("Clinical model fitted; %d patients scored", len(pred))


def _cmd_dl_clinical_model(a: argparse.Namespace) -> None:
    import json

    from recur.cohort.split import read_split
    from recur.evaluate import readers
    from recur.io import write_text_atomic
    from recur.models import tabular

    st = tree_settings(a)
    clinical = readers.read_clinical(a.clinical)
    split = read_split(a.split)
    sig = tabular.dl_signature(
        {"Pre": a.pre, "PrePost": a.prepost},
        {"Pre": a.pre_oof, "PrePost": a.prepost_oof},
        clinical,
        split,
        a.stacking,
    )
    model, pred, feats = tabular.dl_clinical_model(
        clinical, split, sig.values, sig.name, st, n_jobs=a.threads or 1
    )
    imp = tabular.feature_importance(model, feats)
    choice_info = {
        "signature": sig.model,
        "tune_auc": sig.tune_auc,
        "stacking": a.stacking,
        "rule": "higher tuning AUC; ties go to PrePost",
    }
    tabular.save_model(
        model,
        a.model,
        a.manifest,
        features=feats,
        settings=st,
        extra={"signature": sig.model, "stacking": a.stacking},
    )
    write_text_atomic(a.choice, json.dumps(choice_info, indent=2, sort_keys=True) + "\n")
    write_csv(imp, a.importance)
    write_csv(pred, a.out)
    log.info(
        "DL_Clinical: signature %s (tune AUC %s), stacking %s",
        sig.model,
        {k: round(v, 3) for k, v in sig.tune_auc.items()},
        a.stacking,
    )


#: The DL prediction options of a model on the DL signature, and what each is.
DL_PREDICTIONS = {
    "--pre": "predictions/Pre.csv",
    "--prepost": "predictions/PrePost.csv",
    "--pre-oof": "predictions/oof/Pre.csv (out-of-fold)",
    "--prepost-oof": "predictions/oof/PrePost.csv (out-of-fold)",
}


def _add_device(p: argparse.ArgumentParser) -> None:
    """``--device`` (config key ``device``), which the rules always pass."""
    p.add_argument("--device", required=True, choices=DEVICES, help="config key device")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-dl``, ``signature-dl``, ``ensemble-dl``, ``crossfit-dl``, ``gradcam``,
    ``clinical-model`` and ``dl-clinical-model``."""
    p = sub.add_parser("train-dl", help="train one deep-learning model (full or one fold)")
    p.add_argument("--model", required=True, choices=DL_MODELS, help="the network to train")
    p.add_argument("--fold", default="full", help="'full' or a cross-fitting fold 0..K-1")
    p.add_argument("--split", required=True, help="split.csv")
    p.add_argument("--clinical", required=True, help="clinical.csv (er)")
    p.add_argument("--crops-dir", required=True, help="folder of {patient}.npz crops")
    p.add_argument("--outdir", required=True, help="where weights.pt etc. go")
    _add_device(p)
    p.add_argument("--settings", required=True, help="the config section train as JSON")
    p.add_argument(
        "--aux-table",
        default=None,
        help="margin.csv: the auxiliary target of the models train.margin_target lists",
    )
    p.set_defaults(func=_cmd_train_dl)

    p = sub.add_parser("signature-dl", help="signature CSV + training curve of a full model")
    p.add_argument("model_dir", help="output folder of train-dl --fold full")
    p.add_argument("--clinical", required=True, help="clinical.csv (er of the tune split)")
    p.add_argument(
        "--recalibration", required=True, help="models/{model}/recalibration.json to write"
    )
    p.add_argument("--out", required=True, help="predictions/{model}.csv")
    p.add_argument("--figure", required=True, help="training-curve PNG")
    p.add_argument("--figure-pdf", default=None, help="the training curve as PDF too")
    p.add_argument(
        "--scores", default=None, help="scores.csv to publish (default: the model folder's)"
    )
    p.set_defaults(func=_cmd_signature_dl)

    p = sub.add_parser(
        "ensemble-dl", help="join the full and fold models into one mean-logit ensemble"
    )
    p.add_argument("members", nargs="+", help="train-dl output folders (full, 0, 1, ...)")
    p.add_argument("--split", required=True, help="split.csv (every patient is scored)")
    p.add_argument("--crops-dir", required=True, help="folder of {patient}.npz crops")
    p.add_argument("--outdir", required=True, help="where weights.pt, model.json, scores.csv go")
    _add_device(p)
    p.set_defaults(func=_cmd_ensemble_dl)

    p = sub.add_parser("crossfit-dl", help="out-of-fold signature from the fold models")
    p.add_argument("--full", required=True, help="output folder of the full model")
    p.add_argument("--folds", required=True, nargs="+", help="output folders of the folds")
    p.add_argument(
        "--recalibration", required=True, help="models/{model}/recalibration.json (signature-dl)"
    )
    p.add_argument("--out", required=True, help="predictions/oof/{model}.csv")
    p.set_defaults(func=_cmd_crossfit_dl)

    p = sub.add_parser("gradcam", help="Grad-CAM heat maps of the PrePost model")
    p.add_argument("--model-dir", required=True, help="output folder of the full PrePost model")
    p.add_argument("--predictions", required=True, help="predictions/PrePost.csv")
    p.add_argument("--clinical", required=True, help="clinical.csv (er)")
    p.add_argument("--crops-dir", required=True, help="folder of {patient}.npz crops")
    p.add_argument("--outdir", required=True, help="folder of {patient}.png and index.csv")
    p.add_argument("--settings", required=True, help="the config section gradcam as JSON")
    _add_device(p)
    p.set_defaults(func=_cmd_gradcam)

    p = sub.add_parser("clinical-model", help="fit the Clinical model; score all")
    add_evaluation_inputs(p, preds=False)
    add_tabular_args(p)
    p.add_argument("--out", required=True, help="predictions/Clinical.csv")
    p.add_argument("--model", required=True, help="fitted model (.skops)")
    p.add_argument("--manifest", required=True, help="JSON manifest with the sha256")
    p.set_defaults(func=_cmd_clinical_model)

    p = sub.add_parser("dl-clinical-model", help="fit DL_Clinical (clinical + DL signature)")
    add_evaluation_inputs(p, preds=False)
    add_tabular_args(p)
    for opt, what in DL_PREDICTIONS.items():
        p.add_argument(opt, required=True, help=what)
    p.add_argument(
        "--stacking",
        choices=["crossfit", "in_sample"],
        required=True,
        help="the DL signature of the training patients: out-of-fold or in-sample "
        "(dl_clinical.stacking)",
    )
    p.add_argument("--out", required=True, help="predictions/DL_Clinical.csv")
    p.add_argument("--model", required=True, help="fitted model (.skops)")
    p.add_argument("--manifest", required=True, help="JSON manifest with the sha256")
    p.add_argument("--choice", required=True, help="choice.json: the DL signature used and why")
    p.add_argument("--importance", required=True, help="feature importance table (CSV)")
    p.set_defaults(func=_cmd_dl_clinical_model)
