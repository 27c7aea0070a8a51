"""The radiomics models: Radiomics_Pre, Radiomics_PrePost and Radiomics_Clinical.

* Radiomics_Pre (the pre-ablation features: tumour and its rings on every phase) and
  Radiomics_PrePost (those plus the post-ablation features: ablation zone and its rings):
  one scikit-learn ``Pipeline`` (:func:`radiomics_pipeline`) fitted on the training patients
  only: median imputation, :class:`CorrelationFilter` (drops constant features, then keeps
  features in decreasing order of their univariate training AUC's distance from 0.5,
  leaving out any whose |Spearman rho| with a kept one exceeds the threshold),
  standardisation and an L1 / elastic-net logistic regression (``LogisticRegressionCV``,
  saga) whose penalty (and mixing) is chosen by stratified cross-validation (ROC AUC) on the
  training patients.
* Radiomics_Clinical: the clinical predictors plus the Radiomics_PrePost signature, fitted by
  :mod:`recur.models.tabular` (the ``dl_clinical`` section's estimator); training patients
  carry their out-of-fold signature (:func:`out_of_fold_scores`: each fold refits the whole
  pipeline, filter and penalty included), the others the full model's score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from recur.constants import CLINICAL_FEATURES, SIGNATURE_SUFFIX
from recur.errors import RecurError

if TYPE_CHECKING:
    from recur.models.tabular import TabularSettings
    from recur.radiomics.settings import ModelSettings

#: The time points each feature-based radiomics model reads.
MODEL_TIMEPOINTS: dict[str, tuple[str, ...]] = {
    "Radiomics_Pre": ("pre",),
    "Radiomics_PrePost": ("pre", "post"),
}
#: The radiomics model whose signature Radiomics_Clinical takes.
FUSED = "Radiomics_PrePost"
#: The penalty grid: ``cs`` values of C, log-spaced over these powers of ten.
C_RANGE = (-3.0, 2.0)
#: Non-default types a stored radiomics model may contain (checked before loading).
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "recur.radiomics.model.CorrelationFilter",
    "sklearn.model_selection._split.StratifiedKFold",
)


class CorrelationFilter(TransformerMixin, BaseEstimator):
    """Keep non-constant features, most discriminating first, none correlated beyond
    ``threshold`` (|Spearman rho|) with a kept one. Fitted on the training rows only;
    ``support_`` marks the kept columns."""

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y).astype(int)
        n, p = X.shape
        ranks = np.apply_along_axis(_ranks, 0, X) if n else X
        spread = X.max(axis=0) - X.min(axis=0) if n else np.zeros(p)
        scale = np.maximum(np.abs(X).max(axis=0), 1.0) if n else np.ones(p)
        varying = spread > 1e-9 * scale
        n1, n0 = int(y.sum()), int(len(y) - y.sum())
        auc = (ranks[y == 1].sum(axis=0) - n1 * (n1 + 1) / 2) / max(n1 * n0, 1)
        order = [j for j in np.argsort(-np.abs(auc - 0.5), kind="stable") if varying[j]]
        z = ranks - ranks.mean(axis=0)
        z /= np.maximum(np.linalg.norm(z, axis=0), 1e-12)
        kept: list[int] = []
        for j in order:
            if kept and np.max(np.abs(z[:, kept].T @ z[:, j])) > self.threshold:
                continue
            kept.append(j)
        support = np.zeros(p, dtype=bool)
        support[kept] = True
        self.support_ = support
        self.n_features_in_ = p
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float)[:, self.support_]

    def get_support(self) -> np.ndarray:
        return self.support_


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho uses them."""
    from scipy.stats import rankdata

    return rankdata(x).astype(float)


def fixed_penalty_pipeline(settings: ModelSettings) -> Pipeline:
    """:func:`radiomics_pipeline` with the penalty fixed (C in the middle of the grid, the
    first l1_ratio) instead of chosen by cross-validation: for a fit set with fewer than 2
    patients of a class, which no stratified split can cross-validate."""
    from sklearn.linear_model import LogisticRegression

    pipe = radiomics_pipeline(settings)
    pipe.steps[-1] = (
        "logistic",
        LogisticRegression(
            C=float(10 ** np.mean(C_RANGE)),
            l1_ratio=float(settings.l1_ratios[0]),
            solver="saga",
            max_iter=5000,
            tol=1e-3,
            random_state=settings.seed,
        ),
    )
    return pipe


def radiomics_pipeline(settings: ModelSettings, folds: int | None = None) -> Pipeline:
    """The unfitted pipeline: impute, filter, standardise, penalised logistic regression."""
    cv = StratifiedKFold(folds or settings.cv_folds, shuffle=True, random_state=settings.seed)
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("filter", CorrelationFilter(settings.correlation_threshold)),
            ("scale", StandardScaler()),
            (
                "logistic",
                LogisticRegressionCV(
                    Cs=list(np.logspace(*C_RANGE, settings.cs)),
                    l1_ratios=tuple(settings.l1_ratios),
                    solver="saga",
                    cv=cv,
                    scoring="roc_auc",
                    max_iter=5000,
                    tol=1e-3,
                    random_state=settings.seed,
                    use_legacy_attributes=False,
                ),
            ),
        ]
    )


# --------------------------------------------------------------------------- data
def feature_matrix(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``{patient: long feature table}`` as one wide frame (one row per patient, index
    patient_id, columns sorted; a feature a patient lacks is NaN)."""
    if not tables:
        return pd.DataFrame()
    series = {p: t.set_index("feature")["value"].astype(float) for p, t in tables.items()}
    wide = pd.DataFrame(series).T
    wide.index.name = "patient_id"
    return wide.reindex(columns=sorted(wide.columns))


def model_features(columns: Sequence[str], model: str) -> list[str]:
    """The columns of the feature matrix that ``model`` reads (its time points)."""
    tps = MODEL_TIMEPOINTS[model]
    return [c for c in columns if c.split("_", 1)[0] in tps]


def _train_xy(wide: pd.DataFrame, split: pd.DataFrame, clinical: pd.DataFrame, features):
    er = clinical.set_index("patient_id")["er"]
    train = split.loc[split["split"] == "train", "patient_id"]
    missing = sorted(set(train) - set(wide.index))
    if missing:
        raise RecurError(f"patient {missing[0]} has no radiomics features")
    X = wide.loc[train, features].to_numpy(float)
    y = er.loc[train].astype(int).to_numpy()
    if len(np.unique(y)) < 2 or np.bincount(y).min() < 2:
        raise RecurError("the train split holds fewer than 2 patients of a class: cannot fit")
    return X, y


def _folds(settings: ModelSettings, y: np.ndarray) -> int:
    """No more folds than the rarer class has training patients (>= 2)."""
    return max(2, min(settings.cv_folds, int(np.bincount(y).min())))


def fit_radiomics_model(
    model: str,
    wide: pd.DataFrame,
    split: pd.DataFrame,
    clinical: pd.DataFrame,
    settings: ModelSettings,
) -> tuple[Pipeline, pd.DataFrame, list[str]]:
    """Fit Radiomics_Pre or Radiomics_PrePost on the training patients of ``split``; score
    every patient of ``split``. Returns (pipeline, predictions, the model's input features).
    """
    if model not in MODEL_TIMEPOINTS:
        raise RecurError(f"unknown radiomics model {model!r}; expected {list(MODEL_TIMEPOINTS)}")
    features = model_features(wide.columns, model)
    if not features:
        raise RecurError(f"{model}: no radiomics feature of its time points")
    X, y = _train_xy(wide, split, clinical, features)
    pipe = radiomics_pipeline(settings, _folds(settings, y))
    pipe.fit(X, y)
    pred = split[["patient_id", "cohort", "split"]].copy().reset_index(drop=True)
    pred["score"] = score(pipe, wide.reindex(pred["patient_id"]), features)
    return pipe, pred, features


def score(pipe: Pipeline, wide: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """Predicted ER probability of every row of ``wide`` (its ``features`` columns; a
    missing column or value is imputed by the fitted pipeline)."""
    X = wide.reindex(columns=list(features)).to_numpy(float)
    return pipe.predict_proba(X)[:, list(pipe.classes_).index(1)].astype(float)


def out_of_fold_scores(
    model: str,
    wide: pd.DataFrame,
    split: pd.DataFrame,
    clinical: pd.DataFrame,
    settings: ModelSettings,
) -> pd.Series:
    """Each training patient's score from the pipeline refitted without its fold
    (``cv_folds`` stratified folds, seeded), indexed by patient_id."""
    features = model_features(wide.columns, model)
    X, y = _train_xy(wide, split, clinical, features)
    ids = split.loc[split["split"] == "train", "patient_id"].to_numpy()
    k = _folds(settings, y)
    out = np.full(len(y), np.nan)
    for fit_idx, held in StratifiedKFold(k, shuffle=True, random_state=settings.seed).split(X, y):
        rarer = int(np.bincount(y[fit_idx], minlength=2).min())
        if rarer >= 2:
            pipe = radiomics_pipeline(settings, max(2, min(k, rarer)))
        else:  # a tiny cohort: too few events in the fold to cross-validate the penalty
            pipe = fixed_penalty_pipeline(settings)
        pipe.fit(X[fit_idx], y[fit_idx])
        out[held] = pipe.predict_proba(X[held])[:, list(pipe.classes_).index(1)]
    return pd.Series(out, index=ids, name=f"{model}{SIGNATURE_SUFFIX}")


def fit_fusion_model(
    full: pd.DataFrame,
    oof: pd.Series,
    split: pd.DataFrame,
    clinical: pd.DataFrame,
    settings: TabularSettings,
    n_jobs: int = 1,
) -> tuple[Pipeline, pd.DataFrame, list[str]]:
    """Radiomics_Clinical: the clinical predictors and the :data:`FUSED` signature (training
    patients: ``oof``; the others: the full model's predictions ``full``), fitted by
    :func:`recur.models.tabular.fit_and_score` on the training patients."""
    from recur.models import tabular

    name = f"{FUSED}{SIGNATURE_SUFFIX}"
    sig = full.set_index("patient_id")["score"].copy()
    sig.loc[oof.index] = oof.to_numpy()
    data = tabular._with_split(clinical, split)
    data[name] = data["patient_id"].map(sig).astype(float)
    features = [*CLINICAL_FEATURES, name]
    model, pred = tabular.fit_and_score(data, features, settings, n_jobs)
    return model, pred, features


def selected_features(pipe: Pipeline, features: Sequence[str], model: str) -> pd.DataFrame:
    """The features a fitted radiomics pipeline kept with a non-zero coefficient: ``model,
    feature, coefficient`` (log-odds per training SD), ``odds_ratio_per_sd``, largest
    |coefficient| first."""
    support = pipe.named_steps["filter"].support_
    kept = np.asarray(features)[support]
    coef = pipe.named_steps["logistic"].coef_[0]
    nz = coef != 0
    df = pd.DataFrame({"model": model, "feature": kept[nz], "coefficient": coef[nz]})
    df["odds_ratio_per_sd"] = np.exp(df["coefficient"])
    df = df.reindex(df["coefficient"].abs().sort_values(ascending=False, kind="stable").index)
    return df.reset_index(drop=True)


def fusion_coefficients(model: Pipeline, name: str) -> pd.DataFrame:
    """Radiomics_Clinical's coefficients (logistic estimator) in the layout of
    :func:`selected_features`: one row per design column (a predictor, or its spline
    columns)."""
    names = [str(n).split("__", 1)[0] for n in model.named_steps["design"].get_feature_names_out()]
    coef = model.named_steps["logistic"].coef_[0]
    df = pd.DataFrame({"model": name, "feature": names, "coefficient": coef})
    df["odds_ratio_per_sd"] = np.exp(df["coefficient"])
    return df


def selection_summary(pipe: Pipeline, features: Sequence[str], model: str) -> dict:
    """Counts of the reduction and the chosen penalty (manifest and log)."""
    lr = pipe.named_steps["logistic"]
    return {
        "model": model,
        "n_features": len(features),
        "n_after_filter": int(pipe.named_steps["filter"].support_.sum()),
        "n_selected": int((lr.coef_[0] != 0).sum()),
        "C": float(np.ravel(lr.C_)[0]),
        "l1_ratio": float(np.ravel(lr.l1_ratio_)[0]),
    }


# --------------------------------------------------------------------------- storage
def save_pipeline(pipe: Pipeline, path: str | Path, manifest: str | Path, info: dict) -> None:
    """Store ``pipe`` with ``skops.io`` and a JSON manifest (sha256, features, settings)."""
    import json

    import sklearn
    import skops.io as sio

    from recur.io import atomic_path, sha256, write_text_atomic

    path = Path(path)
    with atomic_path(path) as tmp:
        sio.dump(pipe, tmp)
        digest = sha256(tmp)
    doc = {"file": path.name, "sha256": digest, "format": "skops", "sklearn": sklearn.__version__}
    write_text_atomic(manifest, json.dumps({**doc, **info}, indent=2, sort_keys=True) + "\n")


def load_pipeline(path: str | Path, manifest: str | Path) -> tuple[Pipeline, dict]:
    """A pipeline stored by :func:`save_pipeline` (sha256 and types checked) and its
    manifest."""
    import json

    import skops.io as sio

    from recur.io import sha256

    path, manifest = Path(path), Path(manifest)
    info = json.loads(manifest.read_text(encoding="utf-8"))
    if sha256(path) != info.get("sha256"):
        raise RecurError(f"{path.name}: sha256 differs from {manifest.name}; refusing to load")
    unknown = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    if unknown:
        raise RecurError(f"{path.name}: holds untrusted types {unknown}; refusing to load")
    return sio.load(path, trusted=list(TRUSTED_TYPES)), info
