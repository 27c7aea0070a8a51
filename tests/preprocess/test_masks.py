"""ROI mask checks: geometry and label refusals name both files; accepted masks are clean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from recur.cli import main as cli
from recur.errors import RecurError
from recur.preprocess.masks import (
    GeometryTolerance,
    MaskCheck,
    check_mask_file,
    geometry_problems,
    label_problems,
)

SIZE = (20, 16, 8)
SPACING = (0.8, 0.8, 3.0)
ORIGIN = (-10.0, 20.0, -30.0)


def dp_image() -> sitk.Image:
    img = sitk.GetImageFromArray(np.arange(8 * 16 * 20, dtype=np.int16).reshape(8, 16, 20))
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    return img


def mask_image(arr: np.ndarray | None = None, dtype=np.uint8) -> sitk.Image:
    if arr is None:
        arr = np.zeros((8, 16, 20), dtype=dtype)
        arr[3:5, 4:8, 5:9] = 1
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    return img


# --------------------------------------------------------------------------- pure checks
def test_label_problems_by_hand():
    assert label_problems(np.array([0, 1, 2], np.uint8)) == []
    assert label_problems(np.array([0.0, 5.0], np.float32)) == []
    assert label_problems(np.array([0, 0], np.int16)) == ["the mask is empty (no voxel > 0)"]
    assert label_problems(np.array([0.0, 2.5, 2.5])) == [
        "2 voxel(s) have non-integer labels (e.g. 2.5)"
    ]
    assert label_problems(np.array([1, -1, -1, -1], np.int8)) == [
        "3 voxel(s) have negative labels (e.g. -1)"
    ]
    assert label_problems(np.array([1.0, np.nan])) == ["1 voxel(s) are NaN or infinite"]


def test_geometry_tolerance():
    dp = dp_image()
    m = mask_image()
    assert geometry_problems(m, dp) == []
    m.SetOrigin((ORIGIN[0] + 0.005, ORIGIN[1], ORIGIN[2]))  # < 1 % of a 0.8 mm voxel
    assert geometry_problems(m, dp) == []
    m.SetOrigin((ORIGIN[0] + 0.05, ORIGIN[1], ORIGIN[2]))  # 6 % of a voxel
    assert geometry_problems(m, dp) == ["origin (-9.95, 20, -30) vs (-10, 20, -30) mm"]
    assert geometry_problems(m, dp, GeometryTolerance(origin_voxels=0.1)) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: sitk.GetImageFromArray(np.ones((8, 16, 21), np.uint8)), "size"),
        (lambda m: m.SetSpacing((0.8, 0.81, 3.0)), "spacing"),
        (lambda m: m.SetOrigin((-10.0, 20.0, -27.0)), "origin"),
        (lambda m: m.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1)), "direction"),
    ],
)
def test_geometry_refused(change, problem):
    m = mask_image()
    changed = change(m)
    m = changed if isinstance(changed, sitk.Image) else m
    with pytest.raises(RecurError) as exc:
        MaskCheck()(
            m,
            dp_image(),
            who="patient P001 (pre)",
            mask_name="masks/P001_pre.nii.gz",
            image_name="dicom/P001/pre/DP",
        )
    msg = str(exc.value)
    assert "patient P001 (pre)" in msg
    assert "masks/P001_pre.nii.gz" in msg
    assert "dicom/P001/pre/DP" in msg
    assert problem in msg


def test_accepted_mask_is_binary_uint8_on_dp_geometry():
    arr = np.zeros((8, 16, 20), np.float32)
    arr[2, 3, 4] = 5.0
    arr[2, 3, 5] = 1.0
    dp = dp_image()
    dp.SetMetaData("descrip", "secret")
    out = MaskCheck()(mask_image(arr, np.float32), dp)
    assert out.GetPixelID() == sitk.sitkUInt8
    got = sitk.GetArrayFromImage(out)
    assert set(np.unique(got)) == {0, 1}
    assert got.sum() == 2
    assert out.GetOrigin() == dp.GetOrigin()
    assert out.GetMetaDataKeys() == ()


# --------------------------------------------------------------------------- files
def write_case(tmp_path: Path, mask: sitk.Image) -> tuple[Path, Path, Path]:
    cohort = tmp_path / "cohort"
    (cohort / "masks").mkdir(parents=True)
    sitk.WriteImage(mask, str(cohort / "masks" / "P001_pre.nii.gz"))
    (cohort / "rois.csv").write_text(
        "patient_id,timepoint,mask\nP001,pre,masks/P001_pre.nii.gz\n", encoding="utf-8"
    )
    dp = tmp_path / "nifti" / "DP.nii.gz"
    dp.parent.mkdir()
    sitk.WriteImage(dp_image(), str(dp))
    return cohort, dp, tmp_path / "out" / "P001" / "pre.nii.gz"


def test_check_mask_file_writes_clean_copy(tmp_path: Path):
    arr = np.zeros((8, 16, 20), np.uint8)
    arr[3, 4:6, 5:8] = 5  # a TotalSegmentator-like label value
    cohort, dp, out = write_case(tmp_path, mask_image(arr))
    summary = check_mask_file(
        cohort / "masks" / "P001_pre.nii.gz", dp, out, patient="P001", timepoint="pre"
    )
    assert summary["roi_voxels"] == 6
    assert summary["roi_mm3"] == pytest.approx(6 * 0.8 * 0.8 * 3.0)
    img = sitk.ReadImage(str(out))
    assert img.GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(img).max() == 1
    assert not any("descrip" in k and img.GetMetaData(k).strip() for k in img.GetMetaDataKeys())


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (None, "empty"),
        (np.nan, "NaN"),
        (2.5, "non-integer"),
        (-1.0, "negative"),
    ],
)
def test_cli_refuses_bad_labels_and_writes_nothing(tmp_path: Path, capsys, values, problem):
    arr = np.zeros((8, 16, 20), np.float32)
    if values is not None:
        arr[3, 4:6, 5:8] = values
    cohort, dp, out = write_case(tmp_path, mask_image(arr, np.float32))
    rc = cli.main(
        [
            "check-mask",
            "--cohort-dir",
            str(cohort),
            "--rois-table",
            "rois.csv",
            "--patient",
            "P001",
            "--timepoint",
            "pre",
            "--dp",
            str(dp),
            "--out",
            str(out),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "patient P001 (pre)" in err
    # the mask by its row of rois.csv, never by its path (a job's message is stored under
    # results/logs, and a mask folder may be named after a patient)
    assert "ROI mask <rois.csv row 2>" in err
    assert "masks/P001_pre.nii.gz" not in err
    assert str(dp) in err
    assert problem in err
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_cli_refuses_wrong_grid_and_accepts_good_mask(tmp_path: Path, capsys):
    m = mask_image()
    m.SetOrigin((ORIGIN[0], ORIGIN[1], ORIGIN[2] + 3.0))
    cohort, dp, out = write_case(tmp_path, m)
    argv = [
        "check-mask",
        "--cohort-dir",
        str(cohort),
        "--patient",
        "P001",
        "--timepoint",
        "pre",
        "--dp",
        str(dp),
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 2
    assert "not on the grid of the DP image: origin" in capsys.readouterr().err
    assert not out.exists()
    sitk.WriteImage(mask_image(), str(cohort / "masks" / "P001_pre.nii.gz"))
    assert cli.main(argv) == 0
    assert out.is_file()


def test_real_totalsegmentator_mask_accepted(testdata: Path, tmp_path: Path):
    d = testdata / "totalsegmentator-mr" / "tests" / "reference_files"
    out = tmp_path / "m.nii.gz"
    s = check_mask_file(
        d / "example_seg_roi_subset_mr.nii.gz",
        d / "example_mr_sm.nii.gz",
        out,
        patient="TS",
        timepoint="pre",
    )
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "example_seg_roi_subset_mr.nii.gz")))
    assert s["roi_voxels"] == int((ref == 5).sum()) > 0
