"""The survival stage's data: one row per patient with its outcome and every predictor.

The Cox models use the predictor sets of the binary models (:func:`predictor_sets`):
Clinical (the five clinical predictors), each DL signature alone (Pre, PrePost), DL_Clinical
(clinical + the signature the binary DL_Clinical chose) and, with margin models, the margin
variants. A DL signature enters as the model's predicted ER probability, taken exactly as the
binary fusion models take it (``dl_clinical.stacking``: training patients carry their
out-of-fold score with ``crossfit``); the Cox design turns it into log-odds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from recur.constants import CLINICAL_FEATURES, DL_MODELS, MARGIN_MODELS
from recur.errors import RecurError
from recur.models.tabular import SIGNATURE_SUFFIX


def signature_column(model: str) -> str:
    """The column holding the signature of DL ``model`` (``PrePost_signature``)."""
    return f"{model}{SIGNATURE_SUFFIX}"


def predictor_sets(
    chosen_signature: str, margin_features: Sequence[str] = ()
) -> dict[str, list[str]]:
    """``{model: predictors}`` of the Cox models, in the paper's model order then the margin
    models (when ``margin_features`` is not empty). ``chosen_signature`` is the DL model whose
    signature DL_Clinical uses."""
    if chosen_signature not in DL_MODELS:
        raise RecurError(f"unknown DL signature {chosen_signature!r}; expected one of {DL_MODELS}")
    sig = signature_column(chosen_signature)
    sets = {
        "Clinical": list(CLINICAL_FEATURES),
        "Pre": [signature_column("Pre")],
        "PrePost": [signature_column("PrePost")],
        "DL_Clinical": [*CLINICAL_FEATURES, sig],
    }
    if margin_features:
        sets[MARGIN_MODELS[0]] = [*CLINICAL_FEATURES, *margin_features]
        sets[MARGIN_MODELS[1]] = [*CLINICAL_FEATURES, sig, *margin_features]
    return sets


def survival_frame(
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    signatures: Mapping[str, pd.Series],
    margins: pd.DataFrame | None = None,
    margin_features: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per patient of ``split``: ids, split, site, ``er``, ``rfs_months``,
    ``rfs_event``, the clinical predictors, one signature column per DL model (``signatures``:
    ``{model: Series by patient_id}``) and the margin features (NaN where a patient has no
    margin row: the design's imputer fills them, as the binary margin models do)."""
    from recur.margin.models import model_data

    empty = pd.DataFrame({"patient_id": pd.Series(dtype=str)})
    data = model_data(
        clinical,
        split,
        margins if margins is not None else empty,
        list(margin_features) if margins is not None else [],
    )
    if "site" not in data.columns:
        data = data.merge(split[["patient_id", "site"]], on="patient_id", how="left")
    for model, values in signatures.items():
        column = data["patient_id"].map(values)
        if column.isna().any():
            pid = data.loc[column.isna(), "patient_id"].iloc[0]
            raise RecurError(f"patient {pid} has no {model} signature")
        data[signature_column(model)] = column.astype(float)
    return data
