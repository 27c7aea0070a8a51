"""The cohort's crop QC table: one row per patient and time point from the crop files and the
registration QC, with flags, and cohort outliers of the registration similarity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where used: per-patient jobs do not need it
    import pandas as pd

from recur.constants import PHASES

#: Registration QC columns carried into the cohort QC table, per moving phase.
REG_QC_COLUMNS: tuple[str, ...] = (
    "mi_before",
    "mi_after",
    "ncc_before",
    "ncc_after",
    "ncc_roi_before",
    "ncc_roi_after",
    "translation_mm",
    "iterations",
)


#: Registration similarities checked against the cohort by :func:`similarity_outliers`, with
#: the words their flag uses.
SIMILARITY_COLUMNS: dict[str, str] = {
    "ncc_after": "registration similarity",
    "ncc_roi_after": "ROI registration similarity",
}
#: Fewest patients with a value (per phase and time point) for a cohort robust z-score.
SIMILARITY_MIN_PATIENTS = 5
#: A registration similarity with a cohort robust z below minus this is flagged (a flag only,
#: like the table's other QC thresholds; about 3.5 robust SDs is the usual outlier rule).
SIMILARITY_OUTLIER_Z = 3.5


def similarity_outliers(
    table: pd.DataFrame,
    threshold: float = SIMILARITY_OUTLIER_Z,
    min_patients: int = SIMILARITY_MIN_PATIENTS,
) -> pd.DataFrame:
    """Robust z-scores of the registration similarity after registration against the cohort.

    For each moving phase (PS, AP, PVP), each similarity in :data:`SIMILARITY_COLUMNS` present
    in ``table`` (``{phase}_ncc_after``, ``{phase}_ncc_roi_after``) and each time point:
    z = (x − median) / (1.4826 × MAD), the median and the MAD taken over the patients of that
    time point with a value (``scipy.stats.median_abs_deviation`` with ``scale='normal'``:
    scaled to an SD for normal data). A series that is not the patient's (a wrong-series
    mistake) aligns poorly and lands far below the cohort. Returns a copy of ``table`` with
    ``{phase}_{column}_robust_z`` columns and, where z < −``threshold``, a flag appended to
    ``flags`` (e.g. "AP registration similarity outlier (robust z -4.2)").

    No z (NaN), so no flag, where fewer than ``min_patients`` patients have a value at that
    time point (too few for a cohort reference) or where the MAD is 0 (at least half the
    cohort has the same value: no spread to measure against).
    """
    from scipy.stats import median_abs_deviation

    if not threshold > 0:
        raise ValueError(f"similarity outlier threshold must be > 0, got {threshold}")
    out = table.copy()
    if "flags" not in out:
        out["flags"] = ""
    flags = [[f] if f else [] for f in out["flags"].fillna("").astype(str)]
    for ph in PHASES:
        for c, what in SIMILARITY_COLUMNS.items():
            col = f"{ph}_{c}"
            if col not in out:
                continue
            x = out[col].astype(float)
            z = np.full(len(out), np.nan)
            for _, idx in out.groupby("timepoint", sort=False).indices.items():
                v = x.to_numpy()[idx]
                ok = np.isfinite(v)
                if ok.sum() < min_patients:
                    continue
                mad = median_abs_deviation(v[ok], scale="normal")
                if not mad > 0:
                    continue
                z[idx] = (v - np.median(v[ok])) / mad
            out[f"{col}_robust_z"] = np.round(z, 3)
            for i in np.flatnonzero(z < -threshold):
                flags[i].append(f"{ph} {what} outlier (robust z {z[i]:.1f})")
    out["flags"] = ["; ".join(f) for f in flags]
    return out[[c for c in out.columns if c != "flags"] + ["flags"]]


def crop_qc_table(
    crop_files: Sequence[str | Path],
    registration_qc: Sequence[str | Path] = (),
    similarity_outlier_z: float = SIMILARITY_OUTLIER_Z,
) -> pd.DataFrame:
    """One row per patient and time point: ROI area, slices, centre and registration QC.

    The patient is the ``.npz`` file's stem; a registration ``qc.csv`` belongs to the patient
    and time point of its two parent folders (``.../{patient}/{timepoint}/qc.csv``). A
    ``flags`` column lists what a reader should look at: a small ROI (< 20 px), an ROI larger
    than the crop, a phase whose correlation with DP dropped by more than 0.05 or whose mutual
    information got worse after registration, a correction larger than 10 mm. (Correlation
    across contrast phases can fall slightly even when the alignment is right.) Then
    :func:`similarity_outliers` adds each phase's robust z of the similarity after
    registration against the cohort and flags z < −``similarity_outlier_z``.
    """
    import pandas as pd

    reg: dict[tuple[str, str], pd.DataFrame] = {}
    for f in registration_qc:
        f = Path(f)
        reg[(f.parent.parent.name, f.parent.name)] = pd.read_csv(f)
    rows = []
    for f in sorted(Path(x) for x in crop_files):
        patient = f.name[: -len(".npz")] if f.name.endswith(".npz") else f.stem
        with np.load(f, allow_pickle=False) as z:
            tps = [str(t) for t in z["timepoints"]]
            for i, t in enumerate(tps):
                row: dict[str, object] = {
                    "patient_id": patient,
                    "timepoint": t,
                    "slice_lower": int(z["slices"][i][0]),
                    "slice_largest": int(z["slices"][i][1]),
                    "slice_upper": int(z["slices"][i][2]),
                    "centre_row": int(z["centre"][i][0]),
                    "centre_col": int(z["centre"][i][1]),
                    "roi_area_px": int(z["roi_area_px"][i]),
                    "roi_area_mm2": round(float(z["roi_area_mm2"][i]), 2),
                    "pixel_mm": round(float(z["spacing"][i][0]), 4),
                    "roi_px_in_crop": int(z["masks"][i][1].sum()),
                }
                flags = []
                if row["roi_area_px"] < 20:
                    flags.append("small ROI")
                if row["roi_px_in_crop"] < row["roi_area_px"]:
                    flags.append("ROI larger than crop")
                qc = reg.get((patient, t))
                if qc is not None:
                    for _, r in qc.iterrows():
                        ph = str(r["phase"])
                        for c in REG_QC_COLUMNS:
                            if c in r:
                                row[f"{ph}_{c}"] = r[c]
                        if r.get("ncc_after", math.nan) < r.get("ncc_before", math.nan) - 0.05:
                            flags.append(f"{ph} correlation dropped")
                        if r.get("mi_after", math.nan) > r.get("mi_before", math.nan):
                            flags.append(f"{ph} mutual information worse")
                        if r.get("translation_mm", 0.0) > 10.0:
                            flags.append(f"{ph} moved > 10 mm")
                row["flags"] = "; ".join(flags)
                rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return similarity_outliers(table, similarity_outlier_z)
