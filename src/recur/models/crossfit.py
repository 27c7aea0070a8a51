"""Cross-fitting of the networks and their signature tables (pure functions over DataFrames).

One training job trains one model on one set of patients (:func:`job_patients`):

* fold ``full``: every ``train``-split patient; it scores every patient of every cohort;
* fold ``k`` (0..K-1): the ``train`` split without cross-fitting fold ``k``; it scores the
  patients of fold ``k`` only (they are out-of-fold for it).

:func:`signature_table` and :func:`crossfit_table` assemble the networks' score tables
(:data:`recur.constants.SCORE_COLUMNS`) from the jobs' scores; the prediction CSVs add the
recalibrated probability to them (:func:`recur.evaluate.recalibration.recalibrate_table`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from recur.cohort.split import crossfit_folds
from recur.constants import SCORE_COLUMNS
from recur.errors import RecurError


def job_patients(
    split_df: pd.DataFrame, er: pd.Series, fold: str, k: int, seed: int
) -> tuple[list[str], list[str], list[str]]:
    """(train ids, tune ids, ids to score) of training job ``fold`` (``full`` or ``0..k-1``)."""
    tune = list(split_df.loc[split_df["split"] == "tune", "patient_id"])
    train = list(split_df.loc[split_df["split"] == "train", "patient_id"])
    if fold == "full":
        return train, tune, list(split_df["patient_id"])
    if not fold.isdigit() or int(fold) >= k:
        raise RecurError(f"train-dl: fold must be 'full' or 0..{k - 1}, got {fold!r}")
    folds = crossfit_folds(split_df, er, k, seed)
    held = set(folds.index[folds == int(fold)])
    return [p for p in train if p not in held], tune, [p for p in train if p in held]


def signature_table(scores: pd.DataFrame) -> pd.DataFrame:
    """The score table of a full model: exactly ``patient_id, cohort, split, score``."""
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise RecurError(f"scores table: missing column(s) {', '.join(missing)}")
    if scores["score"].isna().any() or scores["patient_id"].duplicated().any():
        raise RecurError("scores table: missing scores or duplicated patients")
    return scores[list(SCORE_COLUMNS)].reset_index(drop=True)


def crossfit_table(full: pd.DataFrame, folds: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Out-of-fold signature: train-split patients from the fold models that did not see them,
    tune and test patients from the full model; rows in the order of ``full``.
    """
    full = signature_table(full)
    oof = pd.concat([signature_table(f) for f in folds], ignore_index=True)
    if oof["patient_id"].duplicated().any():
        dup = oof.loc[oof["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise RecurError(f"crossfit: patient {dup} is scored by more than one fold")
    train_ids = set(full.loc[full["split"] == "train", "patient_id"])
    if set(oof["patient_id"]) != train_ids or (oof["split"] != "train").any():
        raise RecurError("crossfit: the folds do not cover exactly the train-split patients")
    by_id = oof.set_index("patient_id")["score"]
    out = full.copy()
    is_train = out["split"] == "train"
    out.loc[is_train, "score"] = out.loc[is_train, "patient_id"].map(by_id).to_numpy()
    return out
