"""Unit tests of recur.cohort.record: cohort identities, the record check, the lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recur.cohort import record as cohort_record
from recur.errors import RecurError


def tables(afp: str = "20") -> dict[str, pd.DataFrame]:
    clinical = pd.DataFrame({"patient_id": ["P1", "P2"], "afp_ng_ml": [afp, "3"]})
    series = pd.DataFrame({"patient_id": ["P1"], "dicom_dir": ["d/P1"]})
    return {"clinical.csv": clinical, "series.csv": series}


def test_directory_identity_holds_digests_and_no_path_or_id():
    ident = cohort_record.directory_identity(tables(), 2)
    assert ident["source"] == "directory"
    assert ident["patients"] == 2
    # the digest is sha256 of the table as CSV, worked out independently
    import hashlib

    want = hashlib.sha256(b"patient_id,afp_ng_ml\nP1,20\nP2,3\n").hexdigest()
    assert ident["tables"]["clinical.csv"] == want
    text = repr(ident)
    assert "P1" not in text
    assert "d/P1" not in text


def test_same_cohort_and_no_record_are_fine():
    ident = cohort_record.directory_identity(tables(), 2)
    assert cohort_record.record_problem(None, ident, tables_edited=False) is None
    assert cohort_record.record_problem(dict(ident), ident, tables_edited=False) is None


def test_other_tables_are_refused_unless_edited_on_purpose():
    was = cohort_record.directory_identity(tables("20"), 2)
    now = cohort_record.directory_identity(tables("21"), 2)
    why = cohort_record.record_problem(was, now, tables_edited=False)
    assert why is not None
    assert "other cohort tables (clinical.csv differ; 2 patients then, 2 now)" in why
    assert "another working directory" in why
    assert cohort_record.START_OVER in why
    assert "tables_edited: true" in why
    assert "\n" not in why
    assert cohort_record.record_problem(was, now, tables_edited=True) is None


def test_synthetic_settings_may_change_but_sources_may_not_switch():
    a = cohort_record.synthetic_identity({"seed": 1, "n_train": 10}, 14)
    b = cohort_record.synthetic_identity({"seed": 2, "n_train": 10}, 14)
    assert a["settings"] != b["settings"]
    assert cohort_record.record_problem(a, b, tables_edited=False) is None
    d = cohort_record.directory_identity(tables(), 2)
    for was, now in ((a, d), (d, a)):
        why = cohort_record.record_problem(was, now, tables_edited=True)
        assert why is not None
        assert "another working directory" in why


def test_record_round_trip_and_damaged_record(tmp_path: Path):
    assert cohort_record.read_record(tmp_path) is None
    ident = cohort_record.directory_identity(tables(), 2)
    cohort_record.write_record(ident, tmp_path)
    assert cohort_record.read_record(tmp_path) == ident
    (tmp_path / cohort_record.RECORD).write_text("{not json")
    with pytest.raises(RecurError, match="cannot be read"):
        cohort_record.read_record(tmp_path)


def test_the_lock_is_held_by_one_process_only(tmp_path: Path):
    assert cohort_record.hold_lock(tmp_path)
    assert cohort_record.hold_lock(tmp_path)  # again in the same process: still held
    other = [
        sys.executable,
        "-c",
        "import sys; from recur.cohort import record as c;"
        "sys.exit(0 if c.hold_lock(sys.argv[1]) else 3)",
        str(tmp_path),
    ]
    assert subprocess.run(other, check=False).returncode == 3
    cohort_record.release_lock(tmp_path)
    assert subprocess.run(other, check=False).returncode == 0
