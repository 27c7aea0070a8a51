"""Unit tests of the input contract (pure validators over DataFrames)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recur.cohort import contract
from recur.cohort.contract import ContractError
from recur.constants import PHASES, SYNTHETIC_TABLES, TIMEPOINTS


def clinical_rows(n_train: int = 4, n_test: int = 2) -> list[dict[str, str]]:
    rows = []
    for i in range(n_train + n_test):
        er = i % 2
        rows.append(
            {
                "patient_id": f"P{i + 1:03d}",
                "site": "A" if i < n_train else "B",
                "cohort": "train" if i < n_train else "test",
                "er": str(er),
                "rfs_months": "10.5" if er else "40",
                "rfs_event": str(er),
                "tumor_size_cm": "2.1",
                "tumor_number": "1",
                "hbv": "1",
                "tp_g_l": "68",
                "afp_ng_ml": "20.5",
            }
        )
    return rows


def frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype=str)


def messages(exc: pytest.ExceptionInfo[ContractError]) -> str:
    return str(exc.value)


def test_valid_clinical_is_typed():
    out = contract.check_clinical(frame(clinical_rows()))
    assert out["er"].tolist() == [0, 1, 0, 1, 0, 1]
    assert out["tumor_number"].dtype.kind == "i"
    assert out["afp_ng_ml"].iloc[0] == pytest.approx(20.5)


def test_missing_predictor_is_allowed_but_missing_outcome_is_not():
    rows = clinical_rows()
    rows[0]["afp_ng_ml"] = ""
    out = contract.check_clinical(frame(rows))
    assert pd.isna(out["afp_ng_ml"].iloc[0])
    rows[1]["er"] = ""
    with pytest.raises(ContractError) as exc:
        contract.check_clinical(frame(rows))
    assert "row 3 (patient P002): column 'er' is empty (required)" in messages(exc)


def test_every_problem_is_listed_with_row_and_patient():
    rows = clinical_rows()
    rows[0]["tumor_size_cm"] = "25"  # mm instead of cm
    rows[2]["afp_ng_ml"] = "-3"
    rows[3]["hbv"] = "yes"
    with pytest.raises(ContractError) as exc:
        contract.check_clinical(frame(rows))
    msg = messages(exc)
    assert "row 2 (patient P001): column 'tumor_size_cm' = '25'" in msg
    assert "probably given in mm" in msg
    assert "row 4 (patient P003): column 'afp_ng_ml' = '-3' is outside" in msg
    assert "row 5 (patient P004): column 'hbv' = 'yes' is not a number" in msg
    assert len(exc.value.problems) == 3


def test_duplicate_and_both_cohorts():
    rows = clinical_rows()
    rows.append(dict(rows[0]))
    dup_test = dict(rows[1])
    dup_test["cohort"] = "test"
    rows.append(dup_test)
    with pytest.raises(ContractError) as exc:
        contract.check_clinical(frame(rows))
    msg = messages(exc)
    assert "patient P001 appears more than once (rows 2, 8)" in msg
    assert "patient P002 is listed in both cohorts (test and train) at rows 3, 9" in msg


def test_single_outcome_class_is_refused():
    rows = clinical_rows()
    for r in rows[:4]:
        r.update(er="0", rfs_event="0", rfs_months="40")
    with pytest.raises(ContractError) as exc:
        contract.check_clinical(frame(rows))
    assert "cohort 'train' has a single outcome class (er = 0 for all 4 patients)" in messages(exc)


def test_outcome_consistency():
    rows = clinical_rows()
    rows[1]["rfs_months"] = "30"  # er = 1 but recurrence after 24 months
    with pytest.raises(ContractError) as exc:
        contract.check_clinical(frame(rows))
    assert "er = 1 but rfs_months = 30 > 24" in messages(exc)


def test_missing_column_named():
    df = frame(clinical_rows()).drop(columns=["tp_g_l"])
    with pytest.raises(ContractError, match="missing required column 'tp_g_l'"):
        contract.check_clinical(df)


def test_outcome_not_required_for_prediction():
    df = frame(clinical_rows()).drop(columns=["er", "rfs_months", "rfs_event"])
    out = contract.check_clinical(df, require_outcome=False)
    assert len(out) == 6


def series_rows(patients: list[str]) -> list[dict[str, str]]:
    return [
        {"patient_id": p, "timepoint": t, "phase": ph, "dicom_dir": f"dicom/{p}/{t}/{ph}"}
        for p in patients
        for t in TIMEPOINTS
        for ph in PHASES
    ]


def test_series_missing_phase_and_unknown_patient():
    rows = series_rows(["P001", "P002"])
    rows = [r for r in rows if not (r["patient_id"] == "P002" and r["phase"] == "AP")]
    rows.append({"patient_id": "P999", "timepoint": "pre", "phase": "PS", "dicom_dir": "x"})
    rows.append({"patient_id": "P001", "timepoint": "mid", "phase": "PS", "dicom_dir": "x"})
    with pytest.raises(ContractError) as exc:
        contract.check_series(frame(rows), ["P001", "P002"])
    msg = messages(exc)
    assert "patient P002: no series for pre/AP, post/AP" in msg
    assert "patient P999 is not in clinical.csv" in msg
    assert "column 'timepoint' = 'mid'" in msg


def test_series_paths_must_exist_and_stay_inside(tmp_path: Path):
    rows = series_rows(["P001"])
    for r in rows:
        (tmp_path / r["dicom_dir"]).mkdir(parents=True)
    rows[0]["dicom_dir"] = "../outside"
    rows[1]["dicom_dir"] = "dicom/missing"
    with pytest.raises(ContractError) as exc:
        contract.check_series(frame(rows), ["P001"], tmp_path)
    msg = messages(exc)
    assert "'../outside' must be a path relative to the cohort directory" in msg
    assert "folder 'dicom/missing' (column 'dicom_dir') does not exist" in msg


def test_rois_duplicates_and_missing(tmp_path: Path):
    rows = [
        {"patient_id": "P001", "timepoint": "pre", "mask": "m1.nii.gz"},
        {"patient_id": "P001", "timepoint": "pre", "mask": "m2.nii.gz"},
    ]
    with pytest.raises(ContractError) as exc:
        contract.check_rois(frame(rows), ["P001"], tmp_path)
    msg = messages(exc)
    assert "P001 pre is listed more than once (rows 2, 3)" in msg
    assert "no ROI mask for time point(s) post" in msg
    assert "file 'm1.nii.gz' (column 'mask') does not exist" in msg


def write_cohort_tables(root: Path, n_train: int = 4, n_test: int = 2) -> list[str]:
    """A contract-valid cohort directory with empty DICOM folders and placeholder masks."""
    rows = clinical_rows(n_train, n_test)
    pd.DataFrame(rows).to_csv(root / "clinical.csv", index=False)
    patients = [r["patient_id"] for r in rows]
    ser = series_rows(patients)
    for r in ser:
        (root / r["dicom_dir"]).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(ser).to_csv(root / "series.csv", index=False)
    rois = []
    for p in patients:
        for t in TIMEPOINTS:
            m = root / "rois" / f"{p}_{t}.nii.gz"
            m.parent.mkdir(exist_ok=True)
            m.write_bytes(b"")
            rois.append({"patient_id": p, "timepoint": t, "mask": f"rois/{p}_{t}.nii.gz"})
    pd.DataFrame(rois).to_csv(root / "rois.csv", index=False)
    return patients


def test_load_cohort_roundtrip(tmp_path: Path):
    patients = write_cohort_tables(tmp_path)
    cohort = contract.load_cohort(tmp_path, *SYNTHETIC_TABLES.values())
    assert cohort.patients == patients
    assert contract.series_row(cohort.series, "P002", "post", "DP")["dicom_dir"] == (
        "dicom/P002/post/DP"
    )
    assert contract.roi_path(cohort.rois, tmp_path, "P001", "pre") == (
        tmp_path / "rois/P001_pre.nii.gz"
    )
    summary = contract.cohort_summary(cohort)
    assert list(summary.columns) == ["patient_id", "site", "cohort"]


def test_load_cohort_missing_dir_names_no_path(tmp_path: Path):
    with pytest.raises(
        ContractError, match=r"cohort directory \(cohort.dir\) does not exist"
    ) as exc:
        contract.load_cohort(tmp_path / "nope", *SYNTHETIC_TABLES.values())
    assert str(tmp_path) not in str(exc.value)


# --------------------------------------------------------------------------- the id rule
@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("P001", None),
        ("Pé1", None),  # a letter, NFC
        ("a.b_c-9", None),
        ("x" * 64, None),
        ("", "is empty"),
        (".", "breaks the id rule"),
        ("..", "breaks the id rule"),
        ("-rf", "breaks the id rule"),  # would reach argparse as an option
        ("_x", "breaks the id rule"),
        ("x" * 65, "breaks the id rule"),  # 240-300 characters failed late as OSError
        ("a b", "breaks the id rule"),
        ("a/b", "breaks the id rule"),
        ("Pe\u03011", "breaks the id rule"),  # decomposed accent: read_table composes it
        ("NA", "reads as a missing value"),
        ("nan", "reads as a missing value"),
        ("None", "reads as a missing value"),
        ("NULL", "reads as a missing value"),
    ],
)
def test_id_rule(value: str, why: str | None):
    got = contract.id_problem(value)
    if why is None:
        assert got is None
    else:
        assert got is not None
        assert why in got


def test_bad_ids_are_refused_with_the_rule():
    rows = clinical_rows()
    rows[0]["patient_id"] = ".."
    rows[1]["patient_id"] = "NA"
    with pytest.raises(ContractError) as exc:
        contract.check_clinical(frame(rows))
    msg = messages(exc)
    assert "row 2: column 'patient_id' = '..' breaks the id rule (1-64 letters" in msg
    assert "row 3: column 'patient_id' = 'NA' reads as a missing value" in msg


def test_ids_are_nfc_normalised_and_na_stays_text(tmp_path: Path):
    nfd, nfc = "Pe\u0301", "P\u00e9"
    (tmp_path / "t.csv").write_text(
        f"patient_id,timepoint,x\n{nfd}1,pre,NA\n{nfc}2,post,\n", encoding="utf-8"
    )
    df = contract.read_table(tmp_path / "t.csv")
    assert df["patient_id"].tolist() == [f"{nfc}1", f"{nfc}2"]
    assert df["x"].iloc[0] == "NA"
    assert pd.isna(df["x"].iloc[1])


def test_nfd_and_nfc_spellings_are_one_patient(tmp_path: Path):
    write_cohort_tables(tmp_path)
    for name in ("clinical.csv", "series.csv", "rois.csv"):
        df = pd.read_csv(tmp_path / name, dtype=str, keep_default_na=False)
        # clinical.csv decomposed, the others composed: identical on screen
        new = "Pe\u0301001" if name == "clinical.csv" else "P\u00e9001"
        df["patient_id"] = df["patient_id"].replace("P001", new)
        df.to_csv(tmp_path / name, index=False)
    cohort = contract.load_cohort(tmp_path, *SYNTHETIC_TABLES.values())
    assert cohort.patients[0] == "P\u00e9001"


def test_semicolon_table_gets_a_hint(tmp_path: Path):
    (tmp_path / "clinical.csv").write_text("patient_id;site;cohort\nP1;A;train\n")
    with pytest.raises(ContractError, match="looks semicolon-separated") as exc:
        contract.read_table(tmp_path / "clinical.csv")
    assert len(exc.value.problems) == 1


def test_a_series_given_twice_is_refused():
    patients = ["P001", "P002"]
    rows = series_rows(patients)
    # P001 pre PVP points at the folder of its AP; P002 pre DP at P001's pre DP
    rows[2]["dicom_dir"] = rows[1]["dicom_dir"] + "/"
    rows[11]["dicom_dir"] = rows[3]["dicom_dir"]
    with pytest.raises(ContractError) as exc:
        contract.check_series(frame(rows), patients)
    msg = messages(exc)
    assert "one series is given more than once (row 3 (P001 pre/AP), row 4 (P001 pre/PVP))" in msg
    assert "row 5 (P001 pre/DP), row 13 (P002 pre/DP)" in msg
    # a folder holding several series is fine when series_uid tells them apart
    rows = series_rows(patients)
    rows[2]["dicom_dir"] = rows[1]["dicom_dir"]
    table = frame(rows)
    table["series_uid"] = [f"1.2.{i}" for i in range(len(table))]
    contract.check_series(table, patients)
