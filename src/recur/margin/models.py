"""The margin models Clinical_Margin and DL_Clinical_Margin: their data and their fit.

The Clinical model's predictors (and, for DL_Clinical_Margin, the DL signature) plus margin
features of ``margin.csv`` (:data:`FEATURES`), one row per patient (:func:`model_data`),
fitted and scored by :mod:`recur.models.tabular` (:func:`fit_margin_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where used
    import pandas as pd

from recur.constants import CLINICAL_FEATURES, MARGIN_MODELS
from recur.errors import RecurError

#: Margin columns usable as model features.
FEATURES: tuple[str, ...] = ("min_margin_mm", "pct_lt0", "pct_lt5", "pct_ge5")


def margin_model_data(
    base: pd.DataFrame, margins: pd.DataFrame, features: Sequence[str]
) -> pd.DataFrame:
    """``base`` (one row per patient) with the margin ``features`` joined on patient_id.

    Patients without a margin row get NaN (the models' imputer fills them).
    """
    bad = [f for f in features if f not in FEATURES]
    if bad:
        raise RecurError(f"unknown margin feature(s) {bad}; choose from {list(FEATURES)}")
    cols = ["patient_id", *features]
    out = base.drop(columns=[f for f in features if f in base.columns]).merge(
        margins[cols], on="patient_id", how="left"
    )
    return out


def model_data(
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    margins: pd.DataFrame,
    features: Sequence[str],
    signature: pd.Series | None = None,
    signature_name: str = "signature",
) -> pd.DataFrame:
    """One row per patient of ``split``: ids, ``er``, clinical predictors, margin features
    (and the DL ``signature``), ready for :func:`recur.models.tabular.fit_and_score`."""
    missing = sorted(set(split["patient_id"]) - set(clinical["patient_id"]))
    if missing:
        raise RecurError(
            f"clinical.csv: {len(missing)} patient(s) of split.csv are missing "
            f"(first: {missing[0]})"
        )
    base = split[["patient_id", "cohort", "split"]].merge(
        clinical.drop(columns=["cohort"], errors="ignore"), on="patient_id", how="left"
    )
    data = margin_model_data(base, margins, features)
    if signature is not None:
        data[signature_name] = data["patient_id"].map(signature).astype(float)
    return data.reset_index(drop=True)


def fit_margin_model(
    model: str,
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    margins: pd.DataFrame,
    features: Sequence[str],
    settings: object,
    signature: pd.Series | None = None,
    signature_name: str = "signature",
    n_jobs: int = 1,
) -> tuple[object, pd.DataFrame, list[str]]:
    """Fit ``Clinical_Margin`` or ``DL_Clinical_Margin`` with :mod:`recur.models.tabular`.

    The predictors are the Clinical model's five (``recur.constants.CLINICAL_FEATURES``),
    then (DL_Clinical_Margin only) the DL signature, then the margin ``features``. ``settings``
    is a :class:`recur.models.tabular.TabularSettings`. Returns (pipeline, predictions, features).
    """
    from recur.models import tabular

    if model not in MARGIN_MODELS:
        raise RecurError(f"unknown margin model {model!r}; expected one of {MARGIN_MODELS}")
    if model == "DL_Clinical_Margin" and signature is None:
        raise RecurError("DL_Clinical_Margin needs the DL signature")
    sig = signature if model == "DL_Clinical_Margin" else None
    data = model_data(clinical, split, margins, features, sig, signature_name)
    feats = [*CLINICAL_FEATURES, *([signature_name] if sig is not None else []), *features]
    fitted, pred = tabular.fit_and_score(data, feats, settings, n_jobs)
    return fitted, pred, feats
