"""The Clinical and DL_Clinical models: extremely randomised trees on tabular predictors.

* **Clinical**: ``ExtraTreesClassifier`` on the paper's five clinical predictors
  (:data:`recur.contract.CLINICAL_FEATURES`), inside a ``Pipeline`` whose ``SimpleImputer``
  handles missing values; the whole pipeline is fitted on the train split only.
* **DL_Clinical**: the same on the five predictors plus the signature (predicted ER
  probability) of the deep-learning model with the higher tuning AUC (Pre or PrePost).
  Stacking without leakage (``crossfit``, default): training patients carry their
  out-of-fold signature (``predictions/oof/<model>.csv``), tune/test patients the full
  model's; ``in_sample`` reproduces the paper (full-model signature everywhere).

Fitted models are stored with ``skops.io`` (never pickle) with a sha256 manifest beside them,
checked before loading; loading trusts only :data:`TRUSTED_TYPES`.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from recur.contract import CLINICAL_FEATURES
from recur.errors import RecurError
from recur.evaluate import auc
from recur.io import atomic_path, write_text_atomic

#: DL models whose signature DL_Clinical may use (ties of tuning AUC go to the last: PrePost).
DL_MODELS: tuple[str, ...] = ("Pre", "PrePost")
STACKING: tuple[str, ...] = ("crossfit", "in_sample")
#: The only non-default types a stored model may contain (checked before loading).
TRUSTED_TYPES: tuple[str, ...] = ("numpy.dtype", "sklearn.tree._tree.Tree")


@dataclass(frozen=True)
class TreeSettings:
    """Hyper-parameters of the ExtraTrees pipeline (config sections clinical / dl_clinical)."""

    n_estimators: int = 500
    max_depth: int | None = None
    min_samples_leaf: int = 3
    max_features: str | float = "sqrt"
    class_weight: str | None = None
    impute: str = "median"
    seed: int = 2025

    def pipeline(self, n_jobs: int = 1) -> Pipeline:
        """An unfitted ``SimpleImputer -> ExtraTreesClassifier`` pipeline."""
        return Pipeline(
            [
                ("impute", SimpleImputer(strategy=self.impute)),
                (
                    "trees",
                    ExtraTreesClassifier(
                        n_estimators=self.n_estimators,
                        max_depth=self.max_depth,
                        min_samples_leaf=self.min_samples_leaf,
                        max_features=self.max_features,
                        class_weight=self.class_weight,
                        random_state=self.seed,
                        n_jobs=n_jobs,
                    ),
                ),
            ]
        )


def _with_split(clinical: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The split table joined with the clinical rows (every split patient must be there)."""
    df = split[["patient_id", "cohort", "split"]].merge(
        clinical.drop(columns=["cohort"], errors="ignore"),
        on="patient_id",
        how="left",
        indicator=True,
    )
    missing = df.loc[df["_merge"] != "both", "patient_id"]
    if len(missing):
        raise RecurError(
            f"clinical.csv: {len(missing)} patient(s) of split.csv are missing "
            f"(first: {missing.iloc[0]})"
        )
    return df.drop(columns="_merge").reset_index(drop=True)


def fit_and_score(
    data: pd.DataFrame, features: list[str], settings: TreeSettings, n_jobs: int = 1
) -> tuple[Pipeline, pd.DataFrame]:
    """Fit the pipeline on the ``split == 'train'`` rows of ``data``; score every row.

    ``data`` holds ``patient_id, cohort, split, er`` and the ``features``. Returns the fitted
    pipeline and the predictions (``patient_id, cohort, split, score``).
    """
    missing = [f for f in features if f not in data.columns]
    if missing:
        raise RecurError(f"predictor column(s) missing: {missing}")
    train = data[data["split"] == "train"]
    if train.empty:
        raise RecurError("no patient in the train split: the model cannot be fitted")
    y = train["er"].astype(int).to_numpy()
    if len(np.unique(y)) < 2:
        raise RecurError("the train split holds a single outcome class: cannot fit")
    X = data[features].astype(float).to_numpy()
    for j, f in enumerate(features):
        if np.isnan(X[data["split"].to_numpy() == "train", j]).all():
            raise RecurError(f"predictor '{f}' is missing for every training patient")
    model = settings.pipeline(n_jobs).fit(X[(data["split"] == "train").to_numpy()], y)
    pred = data[["patient_id", "cohort", "split"]].copy()
    pred["score"] = predict_scores(model, data, features)
    return model, pred.reset_index(drop=True)


def predict_scores(model: Pipeline, data: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Predicted ER probability of every row of ``data`` (the ``features`` columns, in model
    order; missing values are imputed by the fitted pipeline). Used by the workflow and by
    ``recur predict``."""
    missing = [f for f in features if f not in data.columns]
    if missing:
        raise RecurError(f"predictor column(s) missing: {missing}")
    X = data[features].astype(float).to_numpy()
    return model.predict_proba(X)[:, list(model.classes_).index(1)].astype(float)


def clinical_model(
    clinical: pd.DataFrame, split: pd.DataFrame, settings: TreeSettings, n_jobs: int = 1
) -> tuple[Pipeline, pd.DataFrame]:
    """Fit the Clinical model (five predictors) on the train split; score every patient."""
    return fit_and_score(_with_split(clinical, split), list(CLINICAL_FEATURES), settings, n_jobs)


def tune_auc(pred: pd.DataFrame, clinical: pd.DataFrame) -> float:
    """AUC of a prediction table on its tune split."""
    t = pred[pred["split"] == "tune"].merge(clinical[["patient_id", "er"]], on="patient_id")
    if t.empty:
        raise RecurError("no patient in the tune split: cannot choose the DL signature")
    return auc(t["er"], t["score"])


def choose_signature(
    full: dict[str, pd.DataFrame], clinical: pd.DataFrame
) -> tuple[str, dict[str, float]]:
    """The DL model (of :data:`DL_MODELS`) with the higher tuning AUC, and both AUCs.

    Ties go to PrePost (the later of :data:`DL_MODELS`: the one with more information).
    """
    aucs = {m: tune_auc(full[m], clinical) for m in DL_MODELS}
    best = max(DL_MODELS, key=lambda m: (aucs[m], DL_MODELS.index(m)))
    return best, aucs


def signature_values(
    full: pd.DataFrame, oof: pd.DataFrame | None, split: pd.DataFrame, stacking: str
) -> pd.Series:
    """The DL signature of every patient of ``split`` (Series indexed by patient_id).

    ``crossfit``: train-split patients take their out-of-fold score from ``oof``; tune and
    test patients the full model's score. ``in_sample``: the full model's score for all.
    """
    if stacking not in STACKING:
        raise RecurError(f"dl_clinical.stacking = {stacking!r}; expected one of {STACKING}")
    full_s = full.set_index("patient_id")["score"]
    ids = split["patient_id"]
    out = ids.map(full_s)
    if stacking == "crossfit":
        if oof is None:
            raise RecurError("crossfit stacking needs the out-of-fold predictions")
        is_train = (split["split"] == "train").to_numpy()
        oof_s = oof.set_index("patient_id")["score"]
        out[is_train] = ids[is_train].map(oof_s)
    if out.isna().any():
        pid = ids[out.isna()].iloc[0]
        src = "out-of-fold" if stacking == "crossfit" else "full-model"
        raise RecurError(f"patient {pid} has no {src} DL signature")
    return pd.Series(out.to_numpy(dtype=float), index=ids.to_numpy(), name="signature")


def dl_clinical_model(
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    signature: pd.Series,
    signature_name: str,
    settings: TreeSettings,
    n_jobs: int = 1,
) -> tuple[Pipeline, pd.DataFrame, list[str]]:
    """Fit DL_Clinical (five predictors + ``signature``) on the train split; score all.

    Returns the fitted pipeline, the predictions and the feature names in model order.
    """
    data = _with_split(clinical, split)
    data[signature_name] = data["patient_id"].map(signature).astype(float)
    features = [*CLINICAL_FEATURES, signature_name]
    model, pred = fit_and_score(data, features, settings, n_jobs)
    return model, pred, features


def feature_importance(model: Pipeline, features: list[str]) -> pd.DataFrame:
    """Mean decrease in impurity (MDI) of each feature, sorted high to low, summing to 1."""
    imp = model.named_steps["trees"].feature_importances_
    df = pd.DataFrame({"feature": features, "importance": imp.astype(float)})
    return df.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- storage
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(
    model: Pipeline,
    path: str | Path,
    manifest: str | Path,
    *,
    features: list[str],
    settings: TreeSettings,
    extra: dict | None = None,
) -> None:
    """Store ``model`` with ``skops.io.dump`` and a JSON manifest holding its sha256."""
    import sklearn
    import skops.io as sio

    path, manifest = Path(path), Path(manifest)
    with atomic_path(path) as tmp:
        sio.dump(model, tmp)
        digest = _sha256(tmp)
    info = {
        "file": path.name,
        "sha256": digest,
        "format": "skops",
        "features": list(features),
        "settings": asdict(settings),
        "sklearn": sklearn.__version__,
        **(extra or {}),
    }
    write_text_atomic(manifest, json.dumps(info, indent=2, sort_keys=True) + "\n")


def load_model(path: str | Path, manifest: str | Path) -> Pipeline:
    """Load a model stored by :func:`save_model` after checking its sha256 and types."""
    import skops.io as sio

    path, manifest = Path(path), Path(manifest)
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RecurError(f"{manifest.name}: cannot read the model manifest ({exc})") from None
    if not path.is_file():
        raise RecurError(f"{path.name}: model file not found")
    if _sha256(path) != info.get("sha256"):
        raise RecurError(f"{path.name}: sha256 differs from {manifest.name}; refusing to load")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise RecurError(f"{path.name}: not a skops model file ({exc}); refusing to load") from None
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise RecurError(f"{path.name}: holds untrusted types {unknown}; refusing to load")
    return sio.load(path, trusted=list(TRUSTED_TYPES))
