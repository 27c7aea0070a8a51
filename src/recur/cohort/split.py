"""The tuning split and the cross-fitting folds of the deep-learning models.

* :func:`make_split`: a seeded, ER-stratified ``tune`` subset (``split.tune_fraction``) of the
  training cohort; the rest of the training cohort is ``train``; external patients are
  ``test``. :func:`split_cohort` first drops the excluded patients.
* :func:`crossfit_folds`: K seeded, ER-stratified folds of the ``train`` split, for the
  out-of-fold signatures a stacking model is fitted on.

Pure functions over DataFrames; :func:`read_outcome`, :func:`read_split` and
:func:`write_split` are the file edges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from recur.constants import SPLIT_COLUMNS, SPLITS
from recur.errors import RecurError
from recur.io import atomic_path
from recur.settings import SectionSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSettings(SectionSettings):
    """The tuning split: config section ``split`` (defaults in ``schemas/config.schema.yaml``)."""

    SECTION = "split"

    tune_fraction: float
    seed: int

    def __post_init__(self) -> None:
        if not 0.0 < self.tune_fraction < 1.0:
            raise RecurError(
                f"split: tune fraction must be between 0 and 1, got {self.tune_fraction}"
            )


def _labels_for(ids: pd.Series, er: pd.Series, what: str) -> np.ndarray:
    """ER labels (0/1) of ``ids``; a missing label is an error naming the patients."""
    er = er.reindex(ids.to_numpy())
    missing = list(ids[er.isna().to_numpy()])
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise RecurError(f"clinical.csv: no 'er' value for {len(missing)} {what} ({shown})")
    return er.to_numpy().astype(int)


def make_split(
    patients_df: pd.DataFrame, er: pd.Series, fraction: float, seed: int
) -> pd.DataFrame:
    """Assign every patient to ``train``, ``tune`` or ``test``.

    Args:
        patients_df: ``patient_id, site, cohort`` (cohort ``train`` or ``test``).
        er: early recurrence (0/1) indexed by ``patient_id`` (needed for the training cohort).
        fraction: share of the training cohort put into ``tune`` (0 < fraction < 1).
        seed: random seed of :func:`sklearn.model_selection.train_test_split`.

    Returns:
        ``patient_id, site, cohort, split`` in the order of ``patients_df``.
    """
    if not 0.0 < fraction < 1.0:
        raise RecurError(f"split: tune fraction must be between 0 and 1, got {fraction}")
    missing = [c for c in ("patient_id", "site", "cohort") if c not in patients_df.columns]
    if missing:
        raise RecurError(f"patients table: missing column(s) {', '.join(missing)}")
    out = patients_df[["patient_id", "site", "cohort"]].reset_index(drop=True).copy()
    out["patient_id"] = out["patient_id"].astype(str)
    is_train = (out["cohort"] == "train").to_numpy()
    ids = out.loc[is_train, "patient_id"]
    y = _labels_for(ids, er, "training patients")
    if len(ids) < 4 or np.bincount(y, minlength=2).min() < 2:
        raise RecurError(
            "split: the training cohort needs at least 2 patients with and 2 without ER "
            f"(has {len(ids)} patients, {int(y.sum())} with ER)"
        )
    try:
        _, tune_ids = train_test_split(
            ids.to_numpy(), test_size=fraction, stratify=y, random_state=seed, shuffle=True
        )
    except ValueError as exc:  # a tuning or training part smaller than the two classes
        raise RecurError(
            f"split: a tuning split of {fraction:g} of {len(ids)} training patients "
            f"({int(y.sum())} with ER) cannot hold both ER classes on each side ({exc}): "
            "add patients or change split.tune_fraction"
        ) from None
    out["split"] = "test"
    out.loc[is_train, "split"] = "train"
    out.loc[out["patient_id"].isin(set(tune_ids)), "split"] = "tune"
    return out[list(SPLIT_COLUMNS)]


def split_cohort(
    patients_df: pd.DataFrame,
    er: pd.Series,
    settings: SplitSettings,
    excluded: Iterable[str] = (),
) -> pd.DataFrame:
    """:func:`make_split` of ``patients_df`` without the ``excluded`` ids (by configuration
    or by a QC refusal): they are in no split, so no model or table sees them."""
    drop = set(excluded)
    if drop:
        log.info("split: %d patient(s) excluded: %s", len(drop), ", ".join(sorted(drop)))
    kept = patients_df[~patients_df["patient_id"].astype(str).isin(drop)]
    return make_split(kept.reset_index(drop=True), er, settings.tune_fraction, settings.seed)


def crossfit_folds(split_df: pd.DataFrame, er: pd.Series, k: int, seed: int) -> pd.Series:
    """Fold number (0..k-1) of every ``train``-split patient, stratified by ER and seeded.

    Returns a Series indexed by ``patient_id`` (train-split patients only, sorted by id).
    """
    ids = split_df.loc[split_df["split"] == "train", "patient_id"].astype(str)
    ids = ids.sort_values().reset_index(drop=True)
    y = _labels_for(ids, er, "train-split patients")
    if k < 2 or np.bincount(y, minlength=2).min() < k:
        raise RecurError(
            f"crossfit: {k} folds need at least {k} train-split patients per ER class "
            f"(have {int(y.sum())} with and {int(len(y) - y.sum())} without ER)"
        )
    folds = np.empty(len(ids), dtype=int)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, held) in enumerate(skf.split(np.zeros(len(ids)), y)):
        folds[held] = i
    return pd.Series(folds, index=pd.Index(ids, name="patient_id"), name="fold")


def check_trainable(clinical: pd.DataFrame, settings: SplitSettings, folds: int) -> None:
    """Raise :class:`RecurError` when the training cohort of ``clinical`` (``patient_id, site,
    cohort, er``) cannot be split into train and tune (:func:`make_split`) or cross-fitted into
    ``folds`` folds (:func:`crossfit_folds`): the class counts are checked when the cohort is
    validated, not after the preprocessing."""
    er = pd.Series(
        clinical["er"].to_numpy(), index=pd.Index(clinical["patient_id"], name="patient_id")
    )
    split_df = make_split(clinical, er, settings.tune_fraction, settings.seed)
    crossfit_folds(split_df, er, folds, settings.seed)


def read_outcome(clinical_csv: str | Path) -> pd.Series:
    """The ``er`` column (0/1, NaN where unknown) of a clinical table, indexed by patient_id."""
    from recur.cohort.contract import read_table

    path = Path(clinical_csv)
    df = read_table(path)
    for col in ("patient_id", "er"):
        if col not in df.columns:
            raise RecurError(f"{path.name}: column '{col}' is missing")
    er = pd.to_numeric(df["er"], errors="coerce")
    bad = df.loc[er.notna() & ~er.isin([0, 1]), "patient_id"]
    if len(bad):
        raise RecurError(f"{path.name}: 'er' must be 0 or 1 (patient {bad.iloc[0]})")
    return pd.Series(er.to_numpy(), index=pd.Index(df["patient_id"], name="patient_id"), name="er")


def read_split(path: str | Path) -> pd.DataFrame:
    """Read ``split.csv`` (:data:`recur.constants.SPLIT_COLUMNS`, every cell as text) and
    check its columns and values; every stage reads the split through this function."""
    path = Path(path)
    if not path.is_file():
        raise RecurError(f"split table not found: {path}")
    df = pd.read_csv(path, dtype=str)
    missing = [c for c in SPLIT_COLUMNS if c not in df.columns]
    if missing:
        raise RecurError(f"{path.name}: missing column(s) {', '.join(missing)}")
    bad = ~df["split"].isin(SPLITS)
    if bad.any():
        r = df[bad].iloc[0]
        raise RecurError(
            f"{path.name}: patient {r['patient_id']} has split {r['split']!r}; "
            f"expected {', '.join(SPLITS[:-1])} or {SPLITS[-1]}"
        )
    return df[list(SPLIT_COLUMNS)]


def write_split(split_df: pd.DataFrame, path: str | Path) -> None:
    """Write ``split.csv`` atomically."""
    with atomic_path(path) as tmp:
        split_df[list(SPLIT_COLUMNS)].to_csv(tmp, index=False)
