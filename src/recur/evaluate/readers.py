"""The input files of the evaluation: predictions, clinical and split tables (the I/O edge).

:func:`read_predictions` and :func:`read_clinical` read and check the files (the split table
is read by :func:`recur.cohort.split.read_split`); :func:`evaluation_frame` joins them into the
frame of one row per patient that the tables (:mod:`recur.evaluate.tables`) and figures
(:mod:`recur.evaluate.figures`) take.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from recur.constants import DL_SCORE_COLUMNS, SCORE_COLUMNS, SPLIT_COLUMNS
from recur.errors import RecurError


def read_predictions(path: object, model: str) -> pd.DataFrame:
    """Read ``predictions/<model>.csv``: columns exactly :data:`recur.constants.SCORE_COLUMNS`
    (patient_id, cohort, split, score) or, for a deep-learning model,
    :data:`recur.constants.DL_SCORE_COLUMNS` (the same and raw_score). ``score`` is the
    probability every evaluation reads."""
    from pathlib import Path

    p = Path(str(path))
    if not p.is_file():
        raise RecurError(f"model {model}: predictions file not found: {p}")
    df = pd.read_csv(p, dtype={"patient_id": str, "cohort": str, "split": str})
    if list(df.columns) not in (list(SCORE_COLUMNS), list(DL_SCORE_COLUMNS)):
        raise RecurError(
            f"{p.name} ({model}): columns {list(df.columns)}; expected {list(SCORE_COLUMNS)} "
            f"or {list(DL_SCORE_COLUMNS)}"
        )
    if df["patient_id"].duplicated().any():
        dup = df.loc[df["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise RecurError(f"{p.name} ({model}): patient {dup} is listed more than once")
    for col in [c for c in ("score", "raw_score") if c in df.columns]:
        bad = ~np.isfinite(pd.to_numeric(df[col], errors="coerce"))
        if bad.any():
            raise RecurError(
                f"{p.name} ({model}): patient {df.loc[bad, 'patient_id'].iloc[0]} has a "
                f"missing or non-numeric {col}"
            )
        df[col] = df[col].astype(float)
    return df


def evaluation_frame(
    predictions: Mapping[str, pd.DataFrame], split: pd.DataFrame, clinical: pd.DataFrame
) -> pd.DataFrame:
    """One row per patient of ``split``: ids, split, site, outcomes and one score per model.

    Every model must score every patient of the split table.
    """
    base = split[list(SPLIT_COLUMNS)].merge(
        clinical[["patient_id", "er", "rfs_months", "rfs_event"]], on="patient_id", how="left"
    )
    if base["er"].isna().any():
        pid = base.loc[base["er"].isna(), "patient_id"].iloc[0]
        raise RecurError(f"patient {pid} of split.csv has no outcome in clinical.csv")
    base["er"] = base["er"].astype(int)
    for model, pred in predictions.items():
        missing = sorted(set(base["patient_id"]) - set(pred["patient_id"]))
        if missing:
            raise RecurError(
                f"model {model}: {len(missing)} patient(s) of split.csv have no prediction "
                f"(first: {missing[0]})"
            )
        m = base[["patient_id", "split"]].merge(
            pred[["patient_id", "split", "score"]], on="patient_id", suffixes=("", "_pred")
        )
        if (m["split"] != m["split_pred"]).any():
            pid = m.loc[m["split"] != m["split_pred"], "patient_id"].iloc[0]
            raise RecurError(
                f"model {model}: patient {pid} has a split that disagrees with split.csv"
            )
        base[model] = base["patient_id"].map(dict(zip(m["patient_id"], m["score"], strict=True)))
    return base


def read_clinical(path: object) -> pd.DataFrame:
    """Read and validate ``clinical.csv`` (the input contract) from ``path``."""
    from pathlib import Path

    from recur.cohort import contract

    p = Path(str(path))
    return contract.check_clinical(contract.read_table(p))
