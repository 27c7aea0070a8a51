"""Pseudonymous input links (recur.cohort.links) and the pre/post day offset
(recur.preprocess.dicom_slice, recur.preprocess.convert).

Fast unit tests on real files: real symbolic links in ``tmp_path``, real DICOM files written
with pydicom. The end-to-end claim (no folder name in ``.snakemake/`` or ``results/``, reruns
still triggered through the links) is tested in tests/reliability/test_deidentification.py.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from recur.cohort import links as input_links
from recur.errors import RecurError
from recur.preprocess import convert, dicom_slice
from recur.preprocess.dicom_series import ConvertSettings

from ..preprocess.test_convert import write_stack

SERIES = pd.DataFrame(
    {
        "patient_id": ["P1", "P1"],
        "timepoint": ["pre", "post"],
        "phase": ["DP", "DP"],
        "dicom_dir": ["Smith John 4711/pre/dp", "Smith John 4711/post/dp"],
    }
)
ROIS = pd.DataFrame({"patient_id": ["P1"], "timepoint": ["pre"], "mask": ["masks/Smith.nii.gz"]})


def _cohort(root: Path) -> Path:
    for d in SERIES["dicom_dir"]:
        (root / d).mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "masks" / "Smith.nii.gz").write_bytes(b"mask")
    return root


def test_link_plan_names_pseudonyms_and_points_through_the_cohort_link(tmp_path):
    plan = input_links.link_plan(SERIES, ROIS, tmp_path / "Cohort of Smith")
    assert plan == {
        "input_links/cohort": str(tmp_path / "Cohort of Smith"),
        "input_links/P1/pre/DP": "../../cohort/Smith John 4711/pre/dp",
        "input_links/P1/post/DP": "../../cohort/Smith John 4711/post/dp",
        "input_links/P1/pre/roi": "../../cohort/masks/Smith.nii.gz",
    }
    assert not any("Smith" in link for link in plan)  # the link names: pseudonyms only
    assert input_links.series_link("P1", "post", "AP") == "input_links/P1/post/AP"
    assert input_links.roi_link("P1", "post") == "input_links/P1/post/roi"


def test_link_plan_keeps_an_absolute_folder_absolute(tmp_path):
    series = SERIES.assign(dicom_dir=[str(tmp_path / "elsewhere"), "x/y"])
    plan = input_links.link_plan(series, ROIS, "cohort")
    assert plan["input_links/P1/pre/DP"] == str(tmp_path / "elsewhere")
    assert plan["input_links/cohort"] == os.path.abspath("cohort")


def test_sync_links_resolves_is_idempotent_and_replaces_only_a_changed_row(tmp_path, monkeypatch):
    cohort = _cohort(tmp_path / "Cohort of Smith")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    plan = input_links.link_plan(SERIES, ROIS, cohort)
    written = input_links.sync_links(plan)
    assert sorted(written) == sorted(plan)
    for link, rel in [
        ("input_links/P1/pre/DP", "Smith John 4711/pre/dp"),
        ("input_links/P1/post/DP", "Smith John 4711/post/dp"),
        ("input_links/P1/pre/roi", "masks/Smith.nii.gz"),
    ]:
        assert Path(link).is_symlink()
        assert os.path.samefile(link, cohort / rel)
    assert Path("input_links/cohort/masks/Smith.nii.gz").read_bytes() == b"mask"

    # a second parse rewrites nothing: link mtimes stay (no spurious rerun)
    old = {link: os.lstat(link).st_mtime_ns for link in plan}
    for link in plan:
        os.utime(link, ns=(1, 1), follow_symlinks=False)
    assert input_links.sync_links(plan) == []
    assert all(os.lstat(link).st_mtime_ns == 1 for link in plan), old

    # series.csv row changed: only that link is rewritten, and it is new (newer than outputs)
    (cohort / "Smith John 4711/post/dp2").mkdir()
    changed = SERIES.assign(dicom_dir=[SERIES["dicom_dir"][0], "Smith John 4711/post/dp2"])
    plan2 = input_links.link_plan(changed, ROIS, cohort)
    assert input_links.sync_links(plan2) == ["input_links/P1/post/DP"]
    assert os.lstat("input_links/P1/post/DP").st_mtime_ns > 1
    assert os.lstat("input_links/P1/pre/DP").st_mtime_ns == 1
    assert os.path.samefile("input_links/P1/post/DP", cohort / "Smith John 4711/post/dp2")
    assert not list(Path("input_links/P1/post").glob(".*tmp"))  # no temporary link left

    # a patient removed from the tables: its links go
    plan3 = input_links.link_plan(SERIES.iloc[:1], ROIS, cohort)
    input_links.sync_links(plan3)
    assert not Path("input_links/P1/post/DP").is_symlink()
    assert Path("input_links/P1/pre/DP").is_symlink()


def test_moving_the_cohort_replaces_the_cohort_link_only(tmp_path, monkeypatch):
    cohort = _cohort(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    input_links.sync_links(input_links.link_plan(SERIES, ROIS, cohort))
    moved = cohort.rename(tmp_path / "b")
    written = input_links.sync_links(input_links.link_plan(SERIES, ROIS, moved))
    assert written == ["input_links/cohort"]
    assert os.path.samefile("input_links/P1/pre/DP", moved / "Smith John 4711/pre/dp")


def test_something_else_at_a_link_path_is_refused_and_kept(tmp_path, monkeypatch):
    cohort = _cohort(tmp_path / "c")
    monkeypatch.chdir(tmp_path)
    Path("input_links/P1/pre").mkdir(parents=True)
    Path("input_links/P1/pre/DP").write_text("mine")
    with pytest.raises(RecurError, match="input_links/P1/pre/DP exists and is not a link"):
        input_links.sync_links(input_links.link_plan(SERIES, ROIS, cohort))
    assert Path("input_links/P1/pre/DP").read_text() == "mine"


# --------------------------------------------------------------------------- day offsets
def _ds(**dates: str) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for k, v in dates.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_dicom_date_takes_the_first_valid_date():
    assert dicom_slice.dicom_date(_ds(StudyDate="20170313")) == datetime.date(2017, 3, 13)
    assert dicom_slice.dicom_date(_ds(StudyDate="", SeriesDate="20170314")) == datetime.date(
        2017, 3, 14
    )
    assert dicom_slice.dicom_date(_ds(StudyDate="20171399", AcquisitionDate="20170315")) == (
        datetime.date(2017, 3, 15)
    )
    assert dicom_slice.dicom_date(_ds(StudyDate="2017")) is None
    assert dicom_slice.dicom_date(_ds()) is None


def test_day_offset_counts_whole_days():
    pre = datetime.date(2016, 2, 20)
    assert dicom_slice.day_offset(datetime.date(2016, 3, 21), pre) == 30  # leap year: 9 + 21
    assert dicom_slice.day_offset(datetime.date(2017, 1, 1), datetime.date(2016, 12, 31)) == 1
    assert dicom_slice.day_offset(pre, datetime.date(2016, 2, 27)) == -7
    assert dicom_slice.day_offset(None, pre) is None
    assert dicom_slice.day_offset(pre, None) is None


def _set_date(folder: Path, date: str) -> None:
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        for kw in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            setattr(ds, kw, date)
        ds.save_as(f)


def test_post_acquisition_json_holds_the_day_offset_and_no_date(tmp_path):
    """Pre on 2019-04-05 (write_stack's StudyDate), post on 2019-05-16: 41 days."""
    root = tmp_path / "cohort"
    rows = ["patient_id,timepoint,phase,dicom_dir"]
    for tp in ("pre", "post"):
        for i, ph in enumerate(("PS", "AP", "PVP", "DP")):
            rel = f"dicom/{tp}/{ph}"
            write_stack(root / rel, n=3, seed=i)
            if tp == "post":
                _set_date(root / rel, "20190516")
            rows.append(f"P1,{tp},{ph},{rel}")
    _set_date(root / "dicom/pre/PS", "20190404")  # a plain series the day before
    (root / "series.csv").write_text("\n".join(rows) + "\n")
    assert dicom_slice.series_date(root / "dicom/pre/DP") == datetime.date(2019, 4, 5)
    assert dicom_slice.series_date(root / "dicom/pre/DP", series_uid="9.9.9") is None
    assert dicom_slice.series_date(root / "missing") is None

    for tp, expected in (("pre", [-1, 0, 0, 0]), ("post", [41, 41, 41, 41])):
        out = tmp_path / "nifti" / tp
        convert.convert_timepoint(
            root, "series.csv", "P1", tp, out, settings=ConvertSettings.defaults()
        )
        text = (out / "acquisition.json").read_text()
        acq = json.loads(text)
        assert [acq[ph]["days_from_pre"] for ph in ("PS", "AP", "PVP", "DP")] == expected
        for day in ("20190405", "20190516", "20190404", "2019-04-05", "2019-05-16"):
            assert day not in text


def test_missing_pre_date_gives_a_null_offset(tmp_path, caplog):
    root = tmp_path / "cohort"
    rows = ["patient_id,timepoint,phase,dicom_dir"]
    for ph in ("PS", "AP", "PVP", "DP"):
        write_stack(root / f"post/{ph}", n=3)
        rows.append(f"P1,post,{ph},post/{ph}")
    (root / "series.csv").write_text("\n".join(rows) + "\n")  # no pre rows at all
    convert.convert_timepoint(
        root, "series.csv", "P1", "post", tmp_path / "out", settings=ConvertSettings.defaults()
    )
    acq = json.loads((tmp_path / "out" / "acquisition.json").read_text())
    assert all(acq[ph]["days_from_pre"] is None for ph in acq)
    assert "no pre DP examination date" in caplog.text


def test_redaction_names_table_rows_instead_of_folders(tmp_path):
    from recur.cohort.links import path_replacements, redact

    series = pd.DataFrame(
        {"dicom_dir": ["Doe John/pre AP", "Doe John/pre AP/sub", "./Roe Ann//DP"]}
    )
    rois = pd.DataFrame({"mask": ["masks Doe/pre.nii.gz"]})
    cohort = tmp_path / "Klinik Doe"
    cohort.mkdir()
    pairs = path_replacements(series, rois, cohort, "series.csv", "my_rois.csv")
    msg = (
        f"patient P1, pre/AP, folder 'Doe John/pre AP/sub': bad; see {cohort}/Doe John/pre AP"
        " and Roe Ann/DP; mask 'masks Doe/pre.nii.gz' is empty"
    )
    assert redact(msg, pairs) == (
        "patient P1, pre/AP, folder '<series.csv row 3>': bad; see <cohort>/<series.csv row 2>"
        " and <series.csv row 4>; mask '<my_rois.csv row 2>' is empty"
    )
    assert redact("nothing to hide", pairs) == "nothing to hide"
    # one folder on two rows (a series given twice): both rows are named
    twice = pd.DataFrame({"dicom_dir": ["Doe/AP", "Doe/PS", "Doe/AP"]})
    pairs = path_replacements(twice, None)
    assert redact("folder 'Doe/AP'", pairs) == "folder '<series.csv rows 2, 4>'"
