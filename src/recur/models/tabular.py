"""The Clinical and DL_Clinical models: extremely randomised trees or a penalised logistic
regression on tabular predictors.

* **Clinical**: the paper's five clinical predictors
  (:data:`recur.constants.CLINICAL_FEATURES`) inside a ``Pipeline`` whose ``SimpleImputer``
  handles missing values; the whole pipeline is fitted on the train split only.
* **DL_Clinical**: the same on the five predictors plus the signature (the network's
  output, ``raw_score`` of the DL prediction tables, not the recalibrated ``score``) of the
  deep-learning model with the higher tuning AUC (Pre or PrePost).
  Stacking: ``in_sample`` (the paper's: the full model's signature everywhere) or
  ``crossfit`` (training patients carry their out-of-fold signature).

Two estimators (:data:`ESTIMATORS`, config ``clinical.estimator`` / ``dl_clinical.estimator``):

* ``extra_trees``: the paper's ``ExtraTreesClassifier``;
* ``logistic``: an L2-penalised logistic regression (``LogisticRegressionCV``) whose penalty is
  chosen by stratified cross-validation (log-loss) on the training patients only. Each
  predictor is imputed (median), then transformed: AFP as ``log(1 + AFP)`` (its distribution
  spans orders of magnitude), a DL signature as its log-odds (the scale a stacked logistic
  model combines it on), other continuous predictors linearly or, with ``spline_knots`` >= 3,
  as cubic B-splines; then standardised.

Fitted models are stored with ``skops.io`` (never pickle) with a sha256 manifest beside them,
checked before loading; loading trusts only :data:`TRUSTED_TYPES`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, SplineTransformer, StandardScaler

from recur.constants import CLINICAL_FEATURES, DL_MODELS, SIGNATURE_SUFFIX
from recur.errors import RecurError
from recur.evaluate.metrics import auc
from recur.io import atomic_path, sha256, write_text_atomic
from recur.settings import from_section, section_defaults

STACKING: tuple[str, ...] = ("crossfit", "in_sample")
ESTIMATORS: tuple[str, ...] = ("extra_trees", "logistic")
#: Predictors the logistic model takes on a log scale, log(1 + x).
LOG_PREDICTORS: tuple[str, ...] = ("afp_ng_ml",)
#: Predictors the logistic model takes as they are (binary or counts): never splined.
DISCRETE_PREDICTORS: tuple[str, ...] = ("tumor_number", "hbv")
#: The column of a DL prediction table that is the signature: the network's output. The
#: recalibrated ``score`` (fitted on the tuning split) is how the evaluation reads the DL
#: model; a stacking model fits its own map from the network's output on the training
#: patients, so the tuning outcomes stay out of its fit.
NETWORK_SCORE = "raw_score"
#: Probabilities are clipped to [EPS, 1 - EPS] before their log-odds are taken.
EPS = 1e-6
#: The penalty grid of the logistic model: ``cs`` values of C, log-spaced over these powers.
C_RANGE = (-4.0, 4.0)
#: The only non-default types a stored model may contain (checked before loading).
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "numpy.log1p",
    "recur.models.tabular.clipped_logit",
    "scipy.interpolate._bsplines.BSpline",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
)


def clipped_logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [EPS, 1 - EPS] (NaN stays NaN)."""
    q = np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


@dataclass(frozen=True)
class TabularSettings:
    """The estimator and its hyper-parameters: config section ``clinical`` or ``dl_clinical``
    (types, ranges, meanings and defaults in ``schemas/config.schema.yaml``; build with
    :meth:`from_config`)."""

    estimator: str
    n_estimators: int
    max_depth: int | None
    min_samples_leaf: int
    max_features: str | float
    class_weight: str | None
    impute: str
    seed: int
    #: logistic: number of penalty values tried (log-spaced over :data:`C_RANGE`)
    cs: int
    #: logistic: stratified folds that choose the penalty (training patients only)
    cv_folds: int
    #: logistic: knots of the cubic B-splines of continuous predictors (0: linear)
    spline_knots: int

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise RecurError(f"estimator = {self.estimator!r}; expected one of {ESTIMATORS}")
        mf = self.max_features
        if isinstance(mf, str) and mf not in ("sqrt", "log2"):
            raise RecurError(f"max_features = {mf!r}: expected sqrt, log2 or a fraction")

    @classmethod
    def from_config(cls, section: Mapping[str, Any], name: str = "clinical") -> TabularSettings:
        """The settings of a validated config section (``clinical`` or ``dl_clinical``)."""
        return from_section(cls, section, name)

    @classmethod
    def defaults(cls, section: str = "clinical", **overrides: Any) -> TabularSettings:
        """The schema's defaults of ``section`` with ``overrides`` (tests, bench scripts)."""
        return cls.from_config(section_defaults(section, **overrides), section)

    def pipeline(self, features: list[str], n_jobs: int = 1) -> Pipeline:
        """An unfitted pipeline over the columns ``features`` (in that order)."""
        if self.estimator == "extra_trees":
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
        if self.estimator == "logistic":
            return Pipeline(
                [
                    ("design", self.design(features)),
                    ("scale", StandardScaler()),
                    (
                        "logistic",
                        LogisticRegressionCV(
                            Cs=list(np.logspace(*C_RANGE, self.cs)),
                            l1_ratios=(0.0,),  # L2
                            cv=self.cv_folds,
                            scoring="neg_log_loss",
                            class_weight=self.class_weight,
                            max_iter=10_000,
                            use_legacy_attributes=False,
                        ),
                    ),
                ]
            )
        raise RecurError(f"estimator = {self.estimator!r}; expected one of {ESTIMATORS}")

    def design(self, features: list[str]) -> ColumnTransformer:
        """The logistic model's design: one transformer per predictor, named after it."""
        parts = []
        for j, name in enumerate(features):
            steps: list = [SimpleImputer(strategy=self.impute)]
            if name.endswith(SIGNATURE_SUFFIX):
                steps.append(FunctionTransformer(clipped_logit, feature_names_out="one-to-one"))
            elif name in LOG_PREDICTORS:
                steps.append(FunctionTransformer(np.log1p, feature_names_out="one-to-one"))
            if self.spline_knots >= 3 and name not in DISCRETE_PREDICTORS:
                steps.append(
                    SplineTransformer(n_knots=self.spline_knots, degree=3, include_bias=False)
                )
            parts.append((name, make_pipeline(*steps), [j]))
        return ColumnTransformer(parts)


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
    data: pd.DataFrame, features: list[str], settings: TabularSettings, n_jobs: int = 1
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
    model = settings.pipeline(features, n_jobs)
    if settings.estimator == "logistic":
        # a small cohort: no more folds than the rarer class has training patients (>= 2)
        folds = max(2, min(settings.cv_folds, int(np.bincount(y).min())))
        if np.bincount(y).min() < 2:
            raise RecurError("the train split holds fewer than 2 patients of a class: cannot fit")
        model.set_params(logistic__cv=folds)
    model.fit(X[(data["split"] == "train").to_numpy()], y)
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
    clinical: pd.DataFrame, split: pd.DataFrame, settings: TabularSettings, n_jobs: int = 1
) -> tuple[Pipeline, pd.DataFrame]:
    """Fit the Clinical model (five predictors) on the train split; score every patient."""
    return fit_and_score(_with_split(clinical, split), list(CLINICAL_FEATURES), settings, n_jobs)


def network_scores(table: pd.DataFrame) -> pd.Series:
    """The network's output per row of a DL prediction table: its :data:`NETWORK_SCORE`
    column, or ``score`` in a table without one (a score table of a training job)."""
    return table[NETWORK_SCORE if NETWORK_SCORE in table.columns else "score"]


def tune_auc(pred: pd.DataFrame, clinical: pd.DataFrame) -> float:
    """AUC of a DL prediction table's network output on its tune split."""
    t = pred.assign(signature=network_scores(pred))
    t = t[t["split"] == "tune"].merge(clinical[["patient_id", "er"]], on="patient_id")
    if t.empty:
        raise RecurError("no patient in the tune split: cannot choose the DL signature")
    return auc(t["er"], t["signature"])


def choose_signature(
    full: dict[str, pd.DataFrame], clinical: pd.DataFrame
) -> tuple[str, dict[str, float]]:
    """The DL model (of :data:`recur.constants.DL_MODELS`) with the higher tuning AUC, and both
    AUCs.

    Ties go to PrePost (the later of the DL models: the one with more information).
    """
    aucs = {m: tune_auc(full[m], clinical) for m in DL_MODELS}
    best = max(DL_MODELS, key=lambda m: (aucs[m], DL_MODELS.index(m)))
    return best, aucs


def signature_values(
    full: pd.DataFrame, oof: pd.DataFrame | None, split: pd.DataFrame, stacking: str
) -> pd.Series:
    """The DL signature (:func:`network_scores`) of every patient of ``split`` (Series
    indexed by patient_id).

    ``crossfit``: train-split patients take their out-of-fold score from ``oof``; tune and
    test patients the full model's score. ``in_sample``: the full model's score for all.
    """
    if stacking not in STACKING:
        raise RecurError(f"dl_clinical.stacking = {stacking!r}; expected one of {STACKING}")
    full_s = pd.Series(network_scores(full).to_numpy(), index=full["patient_id"].to_numpy())
    ids = split["patient_id"]
    out = ids.map(full_s)
    if stacking == "crossfit":
        if oof is None:
            raise RecurError("crossfit stacking needs the out-of-fold predictions")
        if (NETWORK_SCORE in full.columns) != (NETWORK_SCORE in oof.columns):
            raise RecurError(
                f"the full-model and out-of-fold predictions differ in their columns "
                f"({NETWORK_SCORE} in one of them only)"
            )
        is_train = (split["split"] == "train").to_numpy()
        oof_s = pd.Series(network_scores(oof).to_numpy(), index=oof["patient_id"].to_numpy())
        out[is_train] = ids[is_train].map(oof_s)
    if out.isna().any():
        pid = ids[out.isna()].iloc[0]
        src = "out-of-fold" if stacking == "crossfit" else "full-model"
        raise RecurError(f"patient {pid} has no {src} DL signature")
    return pd.Series(out.to_numpy(dtype=float), index=ids.to_numpy(), name="signature")


@dataclass(frozen=True, eq=False)
class DLSignature:
    """The DL signature that DL_Clinical (and DL_Clinical_Margin) is fitted on."""

    #: the DL model whose signature it is (:func:`choose_signature`)
    model: str
    #: the tuning AUC of each DL model, which chose it
    tune_auc: dict[str, float]
    stacking: str
    #: the signature of every patient of the split (:func:`signature_values`)
    values: pd.Series

    @property
    def name(self) -> str:
        """The signature's feature name (``PrePost_signature``)."""
        return f"{self.model}{SIGNATURE_SUFFIX}"


def dl_signature(
    full: Mapping[str, str | Path],
    oof: Mapping[str, str | Path | None],
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    stacking: str,
) -> DLSignature:
    """Read the DL models' predictions (``full``: ``{model: predictions CSV}`` of every model
    of :data:`recur.constants.DL_MODELS`; ``oof``: their out-of-fold CSVs, read only for the
    chosen model with ``crossfit`` stacking), choose the signature by tuning AUC and give its
    values per patient."""
    from recur.evaluate.readers import read_predictions

    scores = {m: read_predictions(full[m], m) for m in DL_MODELS}
    choice, aucs = choose_signature(scores, clinical)
    oof_scores = None
    if stacking == "crossfit":
        path = oof.get(choice)
        if not path:
            raise RecurError(f"crossfit stacking needs the out-of-fold predictions of {choice}")
        oof_scores = read_predictions(path, f"{choice} (out-of-fold)")
    values = signature_values(scores[choice], oof_scores, split, stacking)
    return DLSignature(choice, aucs, stacking, values)


def dl_clinical_model(
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    signature: pd.Series,
    signature_name: str,
    settings: TabularSettings,
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


def imputation_values(model: Pipeline, features: list[str]) -> np.ndarray:
    """The value each feature's missing cells get, as fitted (trees: the pipeline's imputer;
    logistic: each predictor's own imputer, before its transform)."""
    if "impute" in model.named_steps:
        return np.asarray(model.named_steps["impute"].statistics_, dtype=float)
    design = model.named_steps["design"]
    return np.array(
        [design.named_transformers_[f].steps[0][1].statistics_[0] for f in features], dtype=float
    )


def feature_importance(model: Pipeline, features: list[str]) -> pd.DataFrame:
    """Each feature's share of the model's importance, sorted high to low, summing to 1.

    Trees: mean decrease in impurity (MDI). Logistic: the absolute coefficients on the
    standardised design, summed over a predictor's columns (its spline columns).
    """
    if "trees" in model.named_steps:
        imp = model.named_steps["trees"].feature_importances_.astype(float)
    else:
        names = model.named_steps["design"].get_feature_names_out()
        coef = np.abs(model.named_steps["logistic"].coef_[0])
        owner = [str(n).split("__", 1)[0] for n in names]
        imp = np.array([coef[[o == f for o in owner]].sum() for f in features], dtype=float)
        imp = imp / imp.sum() if imp.sum() > 0 else np.full(len(features), 1 / len(features))
    df = pd.DataFrame({"feature": features, "importance": imp})
    return df.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- storage
def save_model(
    model: Pipeline,
    path: str | Path,
    manifest: str | Path,
    *,
    features: list[str],
    settings: TabularSettings,
    extra: dict | None = None,
) -> None:
    """Store ``model`` with ``skops.io.dump`` and a JSON manifest holding its sha256."""
    import sklearn
    import skops.io as sio

    path, manifest = Path(path), Path(manifest)
    with atomic_path(path) as tmp:
        sio.dump(model, tmp)
        digest = sha256(tmp)
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
    if sha256(path) != info.get("sha256"):
        raise RecurError(f"{path.name}: sha256 differs from {manifest.name}; refusing to load")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise RecurError(f"{path.name}: not a skops model file ({exc}); refusing to load") from None
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise RecurError(f"{path.name}: holds untrusted types {unknown}; refusing to load")
    return sio.load(path, trusted=list(TRUSTED_TYPES))
