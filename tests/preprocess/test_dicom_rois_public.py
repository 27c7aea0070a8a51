"""SEG and RTSTRUCT masks from public test data (dcmqi, highdicom, rt-utils, MIRP) onto the grid of
their image series as recur converts it.

The files are described, with sources, licences and the reference values used below, in
``tests/data/roi/README.md``. They are read from ``tests/data/roi/`` (or the folder named by
``RECUR_ROI_TESTDATA``, or ``../shared/testdata/roi``); each test skips when its files are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from recur.preprocess import dicom_rois as dr
from recur.preprocess.dicom_series import ConvertSettings, SeriesReader

_HERE = Path(__file__).resolve().parents[1]
_CANDIDATES = [
    os.environ.get("RECUR_ROI_TESTDATA", ""),
    _HERE / "data" / "roi",
    _HERE.parents[1] / "shared" / "testdata" / "roi",
]
SETTINGS = dr.RoiSettings.defaults()


def _data(*parts: str) -> Path:
    for root in _CANDIDATES:
        if root and (Path(root) / Path(*parts)).exists():
            return Path(root) / Path(*parts)
    pytest.skip(f"public ROI test data not present: {'/'.join(parts)}")


def _reference(folder: Path, **convert) -> dr.ReferenceSeries:
    grid = SeriesReader(ConvertSettings.defaults(**convert))(folder).image
    return dr.ReferenceSeries(grid, *dr.reference_identifiers(folder))


def _mask(path: Path, ref: dr.ReferenceSeries, roi: str | None = None) -> np.ndarray:
    return sitk.GetArrayFromImage(dr.dicom_mask(path, ref, roi, SETTINGS))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.astype(bool).sum() + b.astype(bool).sum()))


@pytest.mark.parametrize("case", ["23x38x3", "24x38x3"])
def test_dcmqi_non_square_seg_equals_its_nrrd(case):
    """dcmqi's SEG on a non-square series (38 rows; 23 columns: frames not byte-aligned in
    the packed bits) lands voxel for voxel where dcmqi's own NRRD label map has it."""
    ref = _reference(_data("dcmqi", case, "image"))
    got = _mask(_data("dcmqi", case, "seg", "label.seg"), ref)
    nrrd = sitk.ReadImage(str(_data("dcmqi", case, "nrrd", "label.nrrd")))
    np.testing.assert_allclose(nrrd.GetOrigin(), ref.grid.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(nrrd.GetSpacing(), ref.grid.GetSpacing(), atol=1e-4)
    assert got.shape == (3, 38, int(case.split("x")[0]))
    assert np.array_equal(got, sitk.GetArrayFromImage(nrrd) > 0)
    assert int(got.sum()) == {"23x38x3": 322, "24x38x3": 315}[case]


def test_dcmqi_liver_seg_slice_by_slice():
    """Frame 1 of liver.dcm lies on the lowest slice: per-slice counts in recur's slice order
    (ascending along the normal) are the README's 36233, 35645, 35220."""
    got = _mask(_data("dcmqi", "liver.dcm"), _reference(_data("dcmqi", "ct-3slice")))
    assert got.reshape(3, -1).sum(axis=1).tolist() == [36233, 35645, 35220]


def test_dcmqi_five_segments_need_a_name():
    ref = _reference(_data("dcmqi", "ct-3slice"))
    path = _data("dcmqi", "partial_overlaps.dcm")
    assert int(_mask(path, ref, "ORANGE").sum()) == 11888
    assert int(_mask(path, ref, "dark_blue").sum()) == 4713
    with pytest.raises(dr.RoiProblem, match=r"holds 5 segments \('GREEN', 'ORANGE'"):
        _mask(path, ref)


def test_dcmqi_labelmap_seg():
    """A LABELMAP SEG (frames on two of three slices) gives its labelled pixels."""
    got = _mask(
        _data("dcmqi", "sparse-labelmap-noppv.dcm"), _reference(_data("dcmqi", "24x38x3", "image"))
    )
    assert int(got.sum()) == 630


def test_seg_of_another_series_is_refused():
    """dcmqi's liver SEG is drawn on ct-3slice, not on the 24x38x3 series."""
    with pytest.raises(dr.RoiProblem, match="references another series"):
        _mask(_data("dcmqi", "liver.dcm"), _reference(_data("dcmqi", "24x38x3", "image")))


def test_rtutils_rtstruct_with_a_foreign_frame_of_reference_is_refused_and_its_hole_kept():
    folder = _data("rt-utils", "mock_data")
    ref = _reference(folder, min_slices=2)
    path = folder / "rt.dcm"
    with pytest.raises(dr.RoiProblem, match="frame of reference is not the DP series'"):
        _mask(path, ref)
    # the same contours with the frame-of-reference check left out: the square with its hole
    lenient = dr.ReferenceSeries(ref.grid, ref.series_uid, "", ref.sop_uids)
    got = _mask(path, lenient)
    assert got[1].sum() == 0  # everything on the z = 60 slice (the upper one is z = 65)
    ring = got[0]
    rows, cols = np.nonzero(ring)
    inner = ring[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert inner[inner.shape[0] // 2, inner.shape[1] // 2] == 0  # the hole stays a hole
    assert 0.3 < ring.sum() / inner.size < 0.9


def test_rtutils_contours_on_a_missing_slice_are_refused():
    folder = _data("rt-utils", "mock_data")
    with pytest.raises(dr.RoiProblem, match="references 1 image\\(s\\) that are not in the DP"):
        _mask(folder / "invalid_reference_rt.dcm", _reference(folder, min_slices=2), "ROI-1")


@pytest.mark.parametrize(
    ("modality", "name"), [("MR_T1", "GTV_Mass_MR_T1"), ("PET", "GTV_Mass_PET")]
)
def test_mirp_real_rtstruct_against_mirp_rasterisation(modality, name):
    """A real sarcoma GTV (TCIA STS_002) on a non-square MR series: the RTSTRUCT references the
    series before MIRP cropped it, so recur refuses it; with the references taken as given,
    the rasterisation agrees with MIRP's own mask."""
    base = _data("mirp", "sts_images", "STS_002", modality)
    ref = _reference(base / "dicom" / "image")
    path = base / "dicom" / "mask" / "RS.dcm"
    with pytest.raises(dr.RoiProblem, match="references another series"):
        _mask(path, ref)
    import pydicom

    ds = pydicom.dcmread(path)
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    uid = series.RTReferencedSeriesSequence[0].SeriesInstanceUID
    sops = {
        img.ReferencedSOPInstanceUID
        for c in ds.ROIContourSequence[0].ContourSequence
        for img in c.get("ContourImageSequence", [])
    }
    taken = dr.ReferenceSeries(ref.grid, uid, ref.frame_of_reference_uid, frozenset(sops))
    got = _mask(path, taken, name)
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(base / "nifti" / "mask" / "mask.nii.gz")))
    assert got.shape == theirs.shape
    assert _dice(got, theirs) >= 0.99  # measured: 1.0 (MR 17090, PET 555 voxels)


def test_oblique_non_square_real_series_round_trip(tmp_path):
    """rt-utils' oblique series (50 x 100, 3.5 x 2.5 mm pixels): an asymmetric mask written as
    SEG and as RTSTRUCT on it comes back exactly (nothing flipped, transposed or shifted)."""
    import shutil

    import pydicom

    from recur.synthetic import roi_writer

    folder = tmp_path / "oriented"  # a copy that gains the FrameOfReferenceUID it lacks
    shutil.copytree(_data("rt-utils", "oriented_data"), folder)
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.save_as(path)

    ref = _reference(folder)
    shape = tuple(reversed(ref.grid.GetSize()))
    truth = np.zeros(shape, dtype=np.uint8)
    truth[1, 10:30, 20:70] = 1
    truth[1, 15:18, 25:28] = 0
    truth[2, 0:4, 90:100] = 1
    rt = tmp_path / "rt.dcm"
    roi_writer.write_rtstruct(truth, folder, rt, label="GTV", uid_key=("oblique",))
    assert np.array_equal(_mask(rt, ref), truth)
