"""``recur scan``: phase guessing by hand and a small export tree built in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recur.cli.main import main
from recur.cohort import scan
from recur.errors import RecurError

from ..fixtures import mr_slice_dataset

PATTERNS = scan.load_patterns(None)


def _times(*hhmmss: str | None) -> list[float | None]:
    return [scan._seconds(t) for t in hhmmss]


# --------------------------------------------------------------------------- pure functions
def test_default_patterns_come_from_the_schema():
    assert set(PATTERNS) == {"PS", "AP", "PVP", "DP"}
    assert all(p.flags & re.IGNORECASE for p in PATTERNS.values())
    assert scan.match_phases("T1 VIBE pre", PATTERNS) == ["PS"]
    assert scan.match_phases("ART 20s", PATTERNS) == ["AP"]
    assert scan.match_phases("PV 70s", PATTERNS) == ["PVP"]
    assert scan.match_phases("DELAY 3min", PATTERNS) == ["DP"]
    assert scan.match_phases("T2 haste", PATTERNS) == []
    # underscores are word characters: \bpv\b matches only once they are read as spaces
    assert scan.match_phases("t1_vibe_fs_tra_pv", PATTERNS) == ["PVP"]
    assert scan.match_phases("t1_vibe_fs_tra_art", PATTERNS) == ["AP"]
    assert scan.match_phases("t1_vibe_fs_tra_3min", PATTERNS) == ["DP"]
    assert scan.match_phases("Ax LAVA-Flex pre", PATTERNS) == ["PS"]


def test_load_patterns_from_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scan:\n  phase_patterns:\n    AP: 'phase ?1'\n")
    pats = scan.load_patterns(cfg)
    assert pats["AP"].pattern == "phase ?1"
    assert pats["DP"].pattern == PATTERNS["DP"].pattern  # default kept
    cfg.write_text("scan:\n  phase_patterns:\n    XX: 'a'\n")
    with pytest.raises(RecurError, match="phase_patterns"):
        scan.load_patterns(cfg)
    cfg.write_text("scan:\n  phase_patterns:\n    AP: '(['\n")
    with pytest.raises(RecurError, match="not a valid regex"):
        scan.load_patterns(cfg)


def test_seconds():
    assert scan._seconds("101502.5") == pytest.approx(10 * 3600 + 15 * 60 + 2.5)
    assert scan._seconds("10:15:02") == pytest.approx(36902.0)
    assert scan._seconds("") is None


def test_guess_phases_confident():
    g = scan.guess_phases(
        ["T1 pre", "ART", "PV 70s", "DELAY 3min", "T2 haste"],
        _times("100000", "100100", "100200", "100500", "095000"),
        PATTERNS,
    )
    assert g.phases == ["PS", "AP", "PVP", "DP", ""]
    assert g.review[:4] == ["", "", "", ""]
    assert "no phase pattern matched" in g.review[4]


def test_guess_phases_dynamic_run_by_acquisition_time():
    # "LAVA Phase 1..4" matches no pattern; they are one run (same name up to digits)
    g = scan.guess_phases(
        ["LAVA Phase 3", "LAVA Phase 1", "T2 FSE", "LAVA Phase 4", "LAVA Phase 2"],
        _times("100300", "100000", "095000", "100600", "100030"),
        PATTERNS,
    )
    assert g.phases == ["PVP", "PS", "", "DP", "AP"]
    assert all("acquisition-time order" in g.review[i] for i in (0, 1, 3, 4))
    assert "no phase pattern" in g.review[2]


def test_guess_phases_ambiguous_fills_the_free_phase():
    # "early delayed" matches AP and DP; the only free phase is DP
    g = scan.guess_phases(
        ["pre", "arterial", "portal", "early delayed"],
        _times("1000", "1001", "1002", "1005"),
        PATTERNS,
    )
    assert g.phases == ["PS", "AP", "PVP", "DP"]
    assert "matches AP+DP" in g.review[3]
    assert g.review[:3] == ["", "", ""]


def test_guess_phases_unclear_and_order_conflict():
    # two series claim AP, plus free PS/PVP/DP: 2 candidates for 3 free phases -> unclear
    g = scan.guess_phases(["ART a", "ART b"], _times("1000", "1001"), PATTERNS)
    assert g.phases == ["", ""]
    assert all("phase unclear" in r and "2 series match AP" in r for r in g.review)
    # PVP acquired before AP
    g = scan.guess_phases(["arterial", "portal"], _times("1010", "1000"), PATTERNS)
    assert g.phases == ["AP", "PVP"]
    assert all("contradict the phase order" in r for r in g.review)


# --------------------------------------------------------------------------- tree
def _write(
    path: Path,
    *,
    patient: str,
    study: str,
    date: str,
    series: str,
    desc: str,
    acq: str,
    number: int,
    instance: int,
) -> None:
    ds = mr_slice_dataset()
    ds.PatientName = f"Secret^{patient}"
    ds.PatientID = patient
    ds.StudyInstanceUID = study
    ds.StudyDate = date
    ds.SeriesInstanceUID = series
    ds.SeriesDescription = desc
    ds.SeriesNumber = number
    ds.AcquisitionTime = acq
    ds.InstanceNumber = instance
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.zeros((2, 2), np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _tree(root: Path) -> None:
    """Two patients in a small export tree.

    Patient MRN-A (folder a_smith): the post study (2020-03-01) sits before the pre study
    (2020-02-01) in folder order. Patient MRN-B (folder b_jones): one study with LAVA
    Phase 1..4 names plus a T2 series that shares a folder with LAVA Phase 1.
    """
    descs = [
        ("T1 pre", "100000"),
        ("ART", "100030"),
        ("PV 70s", "100110"),
        ("DELAY 3min", "100300"),
    ]
    for tag, date in (("1", "20200301"), ("0", "20200201")):
        for k, (desc, t) in enumerate(descs):
            for i in range(3):
                _write(
                    root / "a_smith" / f"study{tag}" / f"s{k}" / f"IM{i}",
                    patient="MRN-A",
                    study=f"1.2.3.{tag}",
                    date=date,
                    series=f"1.2.3.{tag}.{k}",
                    desc=desc,
                    acq=t,
                    number=k + 1,
                    instance=i + 1,
                )
    lava = [
        ("LAVA Phase 2", "110100"),
        ("LAVA Phase 1", "110000"),
        ("LAVA Phase 4", "110900"),
        ("LAVA Phase 3", "110300"),
    ]
    for k, (desc, t) in enumerate(lava):
        for i in range(2):
            _write(
                root / "b_jones" / "ex" / f"s{k}" / f"{i}.dcm",
                patient="MRN-B",
                study="1.2.9",
                date="20210101",
                series=f"1.2.9.{k}",
                desc=desc,
                acq=t,
                number=10 + k,
                instance=i + 1,
            )
    for i in range(2):  # a T2 series sharing the folder of LAVA Phase 1
        _write(
            root / "b_jones" / "ex" / "s1" / f"t2_{i}.dcm",
            patient="MRN-B",
            study="1.2.9",
            date="20210101",
            series="1.2.9.99",
            desc="T2 FSE",
            acq="105000",
            number=5,
            instance=i + 1,
        )
    (root / "b_jones" / "README.txt").write_text("not dicom\n")


def test_scan_tree(tmp_path):
    root = tmp_path / "export"
    _tree(root)
    table = scan.scan_tree(root, PATTERNS)
    assert list(table.columns) == list(scan.COLUMNS)
    assert len(table) == 8 + 5
    a = table[table["patient_id"] == "P001"]
    b = table[table["patient_id"] == "P002"]
    # no DICOM PatientID or name anywhere in the draft
    text = table.to_csv(index=False)
    for secret in ("MRN-A", "MRN-B", "Secret", "2020", "2021"):
        assert secret not in text
    # patient A: the earlier study is pre, though it sits second in the tree
    pre = a[a["timepoint"] == "pre"]
    assert pre["dicom_dir"].tolist() == [f"a_smith/study0/s{k}" for k in range(4)]
    assert pre["phase"].tolist() == ["PS", "AP", "PVP", "DP"]
    post = a[a["timepoint"] == "post"]
    assert post["dicom_dir"].tolist() == [f"a_smith/study1/s{k}" for k in range(4)]
    assert (a["review"] == "").all()
    assert (a["n_files"] == 3).all()
    # patient B: one study (pre), LAVA run by time, T2 without phase
    assert set(b["timepoint"]) == {"pre"}
    lava = b[b["series_description"].str.startswith("LAVA")]
    got = dict(zip(lava["series_description"], lava["phase"], strict=True))
    assert got == {
        "LAVA Phase 1": "PS",
        "LAVA Phase 2": "AP",
        "LAVA Phase 3": "PVP",
        "LAVA Phase 4": "DP",
    }
    assert lava["review"].str.contains("acquisition-time order").all()
    assert b["review"].str.contains("only one study").all()
    t2 = b[b["series_description"] == "T2 FSE"].iloc[0]
    assert t2["phase"] == ""
    assert t2["dicom_dir"] == "b_jones/ex/s1"  # shared with LAVA Phase 1: uid tells them apart
    assert t2["series_uid"] == "1.2.9.99"


def test_cli_scan_writes_draft(tmp_path):
    root = tmp_path / "export"
    _tree(root)
    out = tmp_path / "draft.csv"
    assert main(["scan", str(root), "--out", str(out)]) == 0
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(df) == 13
    assert df["patient_id"].tolist()[:4] == ["P001"] * 4


def test_scan_refuses_empty_tree(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.txt").write_text("x")
    with pytest.raises(RecurError, match="no DICOM image series"):
        scan.scan_tree(tmp_path / "e", PATTERNS)
