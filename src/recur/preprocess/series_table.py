"""The series table (``series.csv``) as a conversion job reads it: one DICOM folder per
patient, time point and phase, read with the ``csv`` module (no pandas)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

#: One series row (patient, time point, phase) -> (dicom_dir, series_uid or '').
SeriesRows = dict[tuple[str, str, str], list[tuple[str, str]]]


def read_series_table(cohort_dir: str | Path, series_table: str | Path) -> SeriesRows:
    """The rows of the series table (relative to ``cohort_dir`` unless absolute), indexed by
    (patient_id, timepoint, phase), values ``(dicom_dir, series_uid or '')``.

    Read with the ``csv`` module as :func:`recur.cohort.contract.read_table` reads it with pandas
    (every cell text, spaces after a comma skipped, header names stripped): a conversion job
    then does not import pandas (~0.15 CPU s of a ~0.8 s job). Raises
    :class:`recur.cohort.contract.ContractError` for a missing file or column.
    """
    import csv

    table_path = Path(series_table)
    if not table_path.is_absolute():
        table_path = Path(cohort_dir) / table_path
    try:
        with open(table_path, newline="", encoding="utf-8-sig") as fh:
            records = list(csv.reader(fh, skipinitialspace=True))
    except FileNotFoundError:
        _contract_error(table_path.name, [f"file not found: {table_path}"])
    except (UnicodeDecodeError, csv.Error) as exc:
        _contract_error(table_path.name, [f"cannot be read as CSV: {exc}"])
    header = [c.strip() for c in records[0]] if records else []
    need = ("patient_id", "timepoint", "phase", "dicom_dir")
    missing = [c for c in need if c not in header]
    if missing:
        _contract_error(table_path.name, [f"missing required column '{c}'" for c in missing])
    col = {c: header.index(c) for c in header}
    uid = col.get("series_uid")
    rows: SeriesRows = {}
    for rec in records[1:]:
        if not any(v.strip() for v in rec):
            continue  # a blank line (pandas skips it too)
        rec = rec + [""] * (len(header) - len(rec))
        key = tuple(rec[col[c]] for c in need[:3])
        value = rec[col["dicom_dir"]], (rec[uid].strip() if uid is not None else "")
        rows.setdefault(key, []).append(value)  # type: ignore[arg-type]
    return rows


def _contract_error(table: str, problems: list[str]) -> NoReturn:
    from recur.cohort.contract import ContractError  # (imports pandas: the error path only)

    raise ContractError(table, problems)


def series_lookup(rows: SeriesRows, patient: str, timepoint: str, phase: str) -> tuple[str, str]:
    """``(dicom_dir, series_uid)`` of one series (as :func:`recur.cohort.contract.series_row`)."""
    found = rows.get((patient, timepoint, phase), [])
    if len(found) != 1:
        _contract_error(
            "series.csv",
            [f"patient {patient}: expected one row for {timepoint}/{phase}, found {len(found)}"],
        )
    return found[0]
