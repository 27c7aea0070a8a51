"""The input contract of a cohort directory: ``clinical.csv``, ``series.csv`` and ``rois.csv``.

Validation is done by pure functions over DataFrames (:func:`check_clinical`,
:func:`check_series`, :func:`check_rois`, :func:`check_cohort`); :func:`load_cohort` is the
only function here that touches files. Every problem is collected (not only the first), and
each message names the table, the row number as a spreadsheet shows it (header = row 1), the
column and the patient id, so a user can fix the file in one pass.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recur.constants import (
    CLINICAL_FEATURES,
    ER_HORIZON_MONTHS,
    PHASES,
    SYNTHETIC_TABLES,
    TIMEPOINTS,
)
from recur.errors import RecurError
from recur.settings import SectionSettings

COHORTS: tuple[str, ...] = ("train", "test")
ID_COLUMNS: tuple[str, ...] = ("patient_id", "site", "cohort")
OUTCOME_COLUMNS: tuple[str, ...] = ("er", "rfs_months", "rfs_event")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "age",
    "sex",
    "comorbidity",
    "albi",
    "cirrhosis",
    "alb_g_l",
    "ast_u_l",
    "alt_u_l",
    "tbil_umol_l",
)
BINARY_COLUMNS: tuple[str, ...] = ("er", "rfs_event", "hbv", "comorbidity", "cirrhosis")

#: Plausible ranges (inclusive) of numeric columns. Values outside are refused: they are
#: almost always unit mistakes (tumour size in mm, AFP in IU/mL x 1000, ...).
PLAUSIBLE: dict[str, tuple[float, float, str]] = {
    "rfs_months": (0.0, 240.0, "months"),
    "tumor_size_cm": (0.1, 20.0, "cm (a value above 20 is probably given in mm)"),
    "tumor_number": (1.0, 10.0, "tumours"),
    "tp_g_l": (30.0, 120.0, "g/L"),
    "afp_ng_ml": (0.0, 1.0e6, "ng/mL"),
    "age": (0.0, 110.0, "years"),
    "albi": (-6.0, 2.0, "(ALBI score)"),
    "alb_g_l": (10.0, 70.0, "g/L"),
    "ast_u_l": (0.0, 5000.0, "U/L"),
    "alt_u_l": (0.0, 5000.0, "U/L"),
    "tbil_umol_l": (0.0, 1000.0, "umol/L"),
}


class ContractError(RecurError, ValueError):
    """A cohort table breaks the input contract; the message lists every problem found."""

    def __init__(self, table: str, problems: list[str]):
        self.table = table
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{table}: {n} problem(s) in the input contract:\n{lines}")


@dataclass(frozen=True)
class CohortSettings(SectionSettings):
    """Where the cohort comes from: config section ``cohort`` (``schemas/config.schema.yaml``)."""

    SECTION = "cohort"

    source: str
    dir: str | None
    clinical: str
    series: str
    rois: str
    tables_edited: bool

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "directory"):
            raise RecurError(f"cohort.source = {self.source!r}; expected synthetic or directory")
        if self.source == "directory" and not self.dir:
            raise RecurError("config: cohort.source is 'directory' but cohort.dir is not set")

    def table_names(self) -> dict[str, str]:
        """``{"clinical" | "series" | "rois": file name}`` inside the cohort folder: the
        generator's (:data:`~recur.constants.SYNTHETIC_TABLES`) or the configured ones."""
        if self.source == "synthetic":
            return dict(SYNTHETIC_TABLES)
        return {"clinical": self.clinical, "series": self.series, "rois": self.rois}


@dataclass(frozen=True)
class Cohort:
    """A validated cohort: the three tables, with paths made absolute."""

    root: Path
    clinical: pd.DataFrame
    series: pd.DataFrame
    rois: pd.DataFrame

    @property
    def patients(self) -> list[str]:
        return list(self.clinical["patient_id"])


def _row(i: int) -> int:
    """Spreadsheet row number of DataFrame position ``i`` (the header is row 1)."""
    return i + 2


def _where(df: pd.DataFrame, i: int) -> str:
    pid = df["patient_id"].iloc[i] if "patient_id" in df.columns else None
    who = f"patient {pid!s}" if isinstance(pid, str) and pid else "patient ?"
    return f"row {_row(i)} ({who})"


def _missing_columns(df: pd.DataFrame, required: tuple[str, ...]) -> list[str]:
    return [f"missing required column '{c}'" for c in required if c not in df.columns]


#: The patient id rule: 1-64 characters (at most :data:`ID_MAX_BYTES` bytes in UTF-8) of
#: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, and not a word
#: that spreadsheet and pandas readers take for a missing value. Ids are Unicode-normalised
#: (NFC) when read, so an id typed with a composed and a decomposed accent is one id.
ID_PATTERN = re.compile(r"[^\W_][\w.\-]{0,63}")
ID_MAX_BYTES = 128
#: Cells that readers turn into a missing value (pandas' defaults and common spellings).
NA_WORDS = frozenset({"na", "n/a", "nan", "-nan", "null", "none", "nil", "<na>", "#n/a", "#na"})
ID_RULE = (
    "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "not a missing-value word such as NA or None"
)
#: Columns whose cells are Unicode-normalised (NFC) when a table is read.
KEY_COLUMNS: tuple[str, ...] = ("patient_id", "site", "cohort", "timepoint", "phase")


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid patient id (None when it is). Pure; ``value`` should
    already be NFC-normalised (:func:`read_table` does it)."""
    if not isinstance(value, str) or not value:
        return "is empty"
    if value.casefold() in NA_WORDS:
        return f"= {value!r} reads as a missing value in spreadsheets and pandas"
    if ID_PATTERN.fullmatch(value) is None or len(value.encode("utf-8")) > ID_MAX_BYTES:
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"= {shown!r} breaks the id rule"
    return None


def _check_ids(df: pd.DataFrame, problems: list[str]) -> None:
    """patient_id: present and following the id rule (ids become file and folder names)."""
    for i, v in enumerate(df["patient_id"]):
        why = id_problem(v)
        if why is not None:
            problems.append(f"row {_row(i)}: column 'patient_id' {why} ({ID_RULE})")


def _as_number(v: object) -> float | None:
    """A float, NaN for an empty cell, or None when the cell is not a number."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return math.nan
    if isinstance(v, str):
        if not v.strip():
            return math.nan
        try:
            return float(v)
        except ValueError:
            return None
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def check_clinical(df: pd.DataFrame, *, require_outcome: bool = True) -> pd.DataFrame:
    """Validate a clinical table and return it with typed columns.

    ``df`` should be read with every column as string (``dtype=str``) so that nothing is
    silently coerced. Identifier and outcome cells are required; predictor cells may be empty
    (the models impute them inside a pipeline fitted on training patients) but must be numbers
    in a plausible range when given. Raises :class:`ContractError` listing every problem.
    """
    table = "clinical.csv"
    required = ID_COLUMNS + (OUTCOME_COLUMNS if require_outcome else ()) + CLINICAL_FEATURES
    problems = _missing_columns(df, required)
    if problems:
        raise ContractError(table, problems)
    out = df.copy()
    _check_ids(out, problems)

    # duplicates, including the same patient listed in both cohorts
    dup = out["patient_id"].duplicated(keep=False) & out["patient_id"].notna()
    for pid, grp in out[dup].groupby("patient_id", sort=True):
        rows = ", ".join(str(_row(i)) for i in grp.index)
        cohorts = sorted(set(grp["cohort"].dropna()))
        if len(cohorts) > 1:
            problems.append(
                f"patient {pid} is listed in both cohorts ({' and '.join(cohorts)}) "
                f"at rows {rows}: a patient belongs to exactly one cohort"
            )
        else:
            problems.append(f"patient {pid} appears more than once (rows {rows})")

    for i in range(len(out)):
        where = _where(out, i)
        for col in ("site", "cohort"):
            v = out[col].iloc[i]
            if not isinstance(v, str) or not v.strip():
                problems.append(f"{where}: column '{col}' is empty")
        c = out["cohort"].iloc[i]
        if isinstance(c, str) and c.strip() and c not in COHORTS:
            problems.append(f"{where}: column 'cohort' = {c!r}; expected one of {list(COHORTS)}")

    numeric = [c for c in (*OUTCOME_COLUMNS, *CLINICAL_FEATURES, *OPTIONAL_COLUMNS) if c in out]
    numeric = [c for c in numeric if c != "sex"]
    for col in numeric:
        required_cell = col in OUTCOME_COLUMNS and require_outcome
        values: list[float] = []
        for i, v in enumerate(out[col]):
            x = _as_number(v)
            where = _where(out, i)
            if x is None:
                problems.append(f"{where}: column '{col}' = {v!r} is not a number")
                values.append(math.nan)
                continue
            if math.isnan(x):
                if required_cell:
                    problems.append(f"{where}: column '{col}' is empty (required)")
                values.append(math.nan)
                continue
            if col in BINARY_COLUMNS and x not in (0.0, 1.0):
                problems.append(f"{where}: column '{col}' = {v!r}; expected 0 or 1")
            elif col == "tumor_number" and x != int(x):
                problems.append(f"{where}: column 'tumor_number' = {v!r} is not a whole number")
            elif col in PLAUSIBLE:
                lo, hi, unit = PLAUSIBLE[col]
                if not lo <= x <= hi:
                    problems.append(
                        f"{where}: column '{col}' = {v!r} is outside the plausible range "
                        f"[{lo:g}, {hi:g}] {unit}"
                    )
            values.append(x)
        out[col] = pd.Series(values, index=out.index, dtype=float)

    if "sex" in out:
        for i, v in enumerate(out["sex"]):
            if isinstance(v, str) and v.strip() and v.strip().upper() not in ("F", "M"):
                problems.append(f"{_where(out, i)}: column 'sex' = {v!r}; expected F or M")

    if require_outcome and not problems:
        problems.extend(_outcome_consistency(out))
        for cohort in COHORTS:
            sub = out[out["cohort"] == cohort]
            classes = sorted(set(sub["er"].astype(int)))
            if cohort == "train" and sub.empty:
                problems.append("no patient has cohort 'train': the models cannot be fitted")
            elif len(sub) and len(classes) < 2:
                problems.append(
                    f"cohort '{cohort}' has a single outcome class (er = {classes[0]} for all "
                    f"{len(sub)} patients): AUC and the models need both classes"
                )
    if problems:
        raise ContractError(table, problems)

    for col in (*BINARY_COLUMNS, "tumor_number"):
        if col in out and out[col].notna().all():
            out[col] = out[col].astype(int)
    return out.reset_index(drop=True)


def _outcome_consistency(df: pd.DataFrame) -> list[str]:
    """ER (recurrence within 24 months) must agree with the RFS time and event."""
    problems = []
    for i in range(len(df)):
        er, t, ev = df["er"].iloc[i], df["rfs_months"].iloc[i], df["rfs_event"].iloc[i]
        where = _where(df, i)
        if er == 1 and ev == 0:
            problems.append(f"{where}: er = 1 but rfs_event = 0 (a recurrence is an RFS event)")
        elif er == 1 and t > ER_HORIZON_MONTHS:
            problems.append(
                f"{where}: er = 1 but rfs_months = {t:g} > {ER_HORIZON_MONTHS:g} "
                "(early recurrence is within 2 years)"
            )
        elif er == 0 and ev == 1 and t <= ER_HORIZON_MONTHS:
            problems.append(
                f"{where}: er = 0 but a recurrence (rfs_event = 1) at {t:g} months "
                f"<= {ER_HORIZON_MONTHS:g}"
            )
        elif er == 0 and ev == 0 and t < ER_HORIZON_MONTHS:
            warnings.warn(
                f"clinical.csv {where}: er = 0 with follow-up censored at {t:g} months, "
                f"before {ER_HORIZON_MONTHS:g}: the ER label is uncertain",
                stacklevel=3,
            )
    return problems


def _check_paths(
    df: pd.DataFrame, table: str, col: str, root: Path | None, problems: list[str], kind: str
) -> list[Path | None]:
    paths: list[Path | None] = []
    for i, v in enumerate(df[col]):
        where = _where(df, i)
        if not isinstance(v, str) or not v.strip():
            problems.append(f"{where}: column '{col}' is empty")
            paths.append(None)
            continue
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            problems.append(
                f"{where}: column '{col}' = {v!r} must be a path relative to the cohort "
                "directory, inside it"
            )
            paths.append(None)
            continue
        if root is not None:
            full = root / p
            ok = full.is_dir() if kind == "dir" else full.is_file()
            if not ok:
                what = "folder" if kind == "dir" else "file"
                problems.append(f"{where}: {what} '{v}' (column '{col}') does not exist")
        paths.append(p)
    return paths


def _check_keys(
    df: pd.DataFrame,
    table: str,
    key_cols: tuple[str, ...],
    allowed: dict[str, tuple[str, ...]],
    patients: list[str],
    problems: list[str],
) -> None:
    known = set(patients)
    for i in range(len(df)):
        where = _where(df, i)
        pid = df["patient_id"].iloc[i]
        if isinstance(pid, str) and pid and pid not in known:
            problems.append(f"{where}: patient {pid} is not in clinical.csv")
        for col, values in allowed.items():
            v = df[col].iloc[i]
            if v not in values:
                problems.append(f"{where}: column '{col}' = {v!r}; expected one of {list(values)}")
    dup = df.duplicated(list(key_cols), keep=False)
    for key, grp in df[dup].groupby(list(key_cols), sort=True):
        rows = ", ".join(str(_row(i)) for i in grp.index)
        desc = " ".join(str(k) for k in key)
        problems.append(f"{desc} is listed more than once (rows {rows})")


def check_series(
    df: pd.DataFrame,
    patients: list[str],
    root: Path | None = None,
    timepoints: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Validate a series table: every patient has the 4 phases at both time points (at the
    time points ``timepoints[patient]`` for a patient listed there: ``recur predict`` scores a
    patient without a post-ablation series with the models that do not need it)."""
    table = "series.csv"
    problems = _missing_columns(df, ("patient_id", "timepoint", "phase", "dicom_dir"))
    if problems:
        raise ContractError(table, problems)
    out = df.copy()
    if "series_uid" not in out:
        out["series_uid"] = ""
    out["series_uid"] = out["series_uid"].fillna("").astype(str).str.strip()
    _check_ids(out, problems)
    _check_keys(
        out,
        table,
        ("patient_id", "timepoint", "phase"),
        {"timepoint": TIMEPOINTS, "phase": PHASES},
        patients,
        problems,
    )
    _check_paths(out, table, "dicom_dir", root, problems, kind="dir")
    _check_series_reuse(out, problems)
    have = set(zip(out["patient_id"], out["timepoint"], out["phase"], strict=True))
    for pid in patients:
        tps = (timepoints or {}).get(pid, TIMEPOINTS)
        missing = [f"{t}/{ph}" for t in tps for ph in PHASES if (pid, t, ph) not in have]
        if missing:
            problems.append(f"patient {pid}: no series for {', '.join(missing)}")
    if problems:
        raise ContractError(table, problems)
    return out.reset_index(drop=True)


def _check_series_reuse(df: pd.DataFrame, problems: list[str]) -> None:
    """No series is given twice: two rows with the same folder (normalised) and the same
    series_uid (or none) would read the same images for two phases, time points or patients."""
    folders = df["dicom_dir"].map(
        lambda v: os.path.normpath(v.strip()) if isinstance(v, str) and v.strip() else None
    )
    key = pd.DataFrame({"folder": folders, "uid": df["series_uid"]})
    dup = key["folder"].notna() & key.duplicated(keep=False)
    for _, grp in key[dup].groupby(["folder", "uid"], sort=True):
        uses = ", ".join(
            f"row {_row(i)} ({df['patient_id'].iloc[i]} {df['timepoint'].iloc[i]}/"
            f"{df['phase'].iloc[i]})"
            for i in grp.index
        )
        problems.append(
            f"one series is given more than once ({uses}): each patient, time point and "
            "phase needs its own series (set series_uid where a folder holds several)"
        )


def check_rois(
    df: pd.DataFrame,
    patients: list[str],
    root: Path | None = None,
    timepoints: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Validate an ROI table: one mask per patient and time point (the time points
    ``timepoints[patient]`` for a patient listed there, as :func:`check_series`).

    ``mask`` names a NIfTI label map, a DICOM SEG or an RTSTRUCT file; the optional ``roi``
    column names the segment (SEG) or ROI (RTSTRUCT) to use, and may be empty
    (:mod:`recur.preprocess.dicom_rois` checks the file itself when the job reads it).
    """
    table = "rois.csv"
    problems = _missing_columns(df, ("patient_id", "timepoint", "mask"))
    if problems:
        raise ContractError(table, problems)
    out = df.copy()
    _check_ids(out, problems)
    _check_keys(
        out, table, ("patient_id", "timepoint"), {"timepoint": TIMEPOINTS}, patients, problems
    )
    _check_paths(out, table, "mask", root, problems, kind="file")
    have = set(zip(out["patient_id"], out["timepoint"], strict=True))
    for pid in patients:
        missing = [t for t in (timepoints or {}).get(pid, TIMEPOINTS) if (pid, t) not in have]
        if missing:
            problems.append(f"patient {pid}: no ROI mask for time point(s) {', '.join(missing)}")
    if problems:
        raise ContractError(table, problems)
    return out.reset_index(drop=True)


def read_table(path: Path) -> pd.DataFrame:
    """Read a contract CSV with every cell as text (typing is the validators' job).

    No cell becomes a missing value except an empty one (``NA`` stays the text ``NA``, and the
    id rule refuses it); the key columns (:data:`KEY_COLUMNS`) are NFC-normalised. Messages
    name the table by its file name only (a cohort folder may be named after a patient).
    """
    if not path.is_file():
        raise ContractError(path.name, ["file not found in the cohort directory"])
    try:
        df = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ContractError(path.name, [f"cannot be read as CSV: {exc}"]) from None
    df.columns = [unicodedata.normalize("NFC", str(c).strip()) for c in df.columns]
    if len(df.columns) == 1 and ";" in df.columns[0]:
        raise ContractError(
            path.name,
            [
                "looks semicolon-separated (one column named "
                f"{df.columns[0][:60]!r}): save it as comma-separated CSV"
            ],
        )
    for col in KEY_COLUMNS:
        if col in df.columns:
            df[col] = df[col].map(
                lambda v: unicodedata.normalize("NFC", v) if isinstance(v, str) else v
            )
    return df


def load_cohort(
    root: str | Path,
    clinical: str,
    series: str,
    rois: str,
    *,
    require_outcome: bool = True,
    check_files: bool = True,
) -> Cohort:
    """Read and validate a cohort directory. Raises :class:`ContractError` on any problem."""
    root = Path(root)
    if not root.is_dir():
        raise ContractError("cohort", ["the cohort directory (cohort.dir) does not exist"])
    clin = check_clinical(read_table(root / clinical), require_outcome=require_outcome)
    pats = list(clin["patient_id"])
    base = root if check_files else None
    ser = check_series(read_table(root / series), pats, base)
    roi = check_rois(read_table(root / rois), pats, base)
    return Cohort(root=root.resolve(), clinical=clin, series=ser, rois=roi)


def series_row(series: pd.DataFrame, patient: str, timepoint: str, phase: str) -> pd.Series:
    """The row of ``series`` for one patient, time point and phase."""
    sel = series[
        (series["patient_id"] == patient)
        & (series["timepoint"] == timepoint)
        & (series["phase"] == phase)
    ]
    if len(sel) != 1:
        raise ContractError(
            "series.csv",
            [f"patient {patient}: expected one row for {timepoint}/{phase}, found {len(sel)}"],
        )
    return sel.iloc[0]


def roi_path(rois: pd.DataFrame, root: Path, patient: str, timepoint: str) -> Path:
    """The absolute path of the ROI mask of one patient and time point."""
    return Path(root) / _roi_row(rois, patient, timepoint)["mask"]


def roi_name(rois: pd.DataFrame, patient: str, timepoint: str) -> str | None:
    """The segment / ROI name of one patient and time point (``roi`` column), or None."""
    if "roi" not in rois.columns:
        return None
    value = _roi_row(rois, patient, timepoint)["roi"]
    return (value.strip() or None) if isinstance(value, str) else None


def _roi_row(rois: pd.DataFrame, patient: str, timepoint: str) -> pd.Series:
    sel = rois[(rois["patient_id"] == patient) & (rois["timepoint"] == timepoint)]
    if len(sel) != 1:
        raise ContractError(
            "rois.csv", [f"patient {patient}: expected one mask for {timepoint}, found {len(sel)}"]
        )
    return sel.iloc[0]


def cohort_summary(cohort: Cohort) -> pd.DataFrame:
    """One row per patient: ``patient_id, site, cohort`` (what later rules need to know)."""
    return cohort.clinical.loc[:, ["patient_id", "site", "cohort"]].copy()
