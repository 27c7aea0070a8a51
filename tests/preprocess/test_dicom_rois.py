"""SEG and RTSTRUCT masks onto the DP grid (recur.preprocess.dicom_rois, masks.check_mask_file).

Pure helpers with hand-worked values first; then SEG / RTSTRUCT files written here on small
series with an oblique, non-square geometry, read back through the same path as the workflow,
and every refusal.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from recur.errors import RecurError
from recur.preprocess import dicom_rois as dr
from recur.preprocess import masks
from recur.preprocess.dicom_series import ConvertSettings, SeriesReader
from tests.fixtures import write_mr_series

SETTINGS = dr.RoiSettings.defaults()


# --------------------------------------------------------------------------- pure helpers
def test_choose_roi_by_name_case_and_single():
    assert dr.choose_roi(["Liver", "Tumour"], "Tumour", kind="segment", holder="SEG") == 1
    assert dr.choose_roi(["Liver", "Tumour"], "tumour ", kind="segment", holder="SEG") == 1
    assert dr.choose_roi(["GTV"], None, kind="ROI", holder="RTSTRUCT") == 0


@pytest.mark.parametrize(
    ("names", "wanted", "message"),
    [
        (["Liver", "Tumour"], "Lesion", "no segment named 'Lesion' (it holds: 'Liver', 'Tumour')"),
        (["Liver", "Tumour"], None, "holds 2 segments ('Liver', 'Tumour'): name one"),
        (["A", "A"], "A", "several segments named 'A'"),
        ([], None, "holds no segment"),
    ],
)
def test_choose_roi_refusals(names, wanted, message):
    with pytest.raises(dr.RoiProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        dr.choose_roi(names, wanted, kind="segment", holder="SEG")


def _grid(size=(6, 5, 4), spacing=(2.0, 3.0, 4.0), origin=(10.0, 20.0, 30.0), direction=None):
    img = sitk.Image(list(size), sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def test_voxel_indices_by_hand():
    # x = 10 + 2 i, y = 20 + 3 j, z = 30 + 4 k: (12, 26, 38) is column 1, row 2, slice 2
    idx = dr.voxel_indices(np.array([[12.0, 26.0, 38.0], [10.0, 20.0, 30.0]]), _grid())
    np.testing.assert_allclose(idx, [[2.0, 2.0, 1.0], [0.0, 0.0, 0.0]], atol=1e-12)
    # x axis flipped (direction -1): x = 10 - 2 i, so x = 6 is column 2
    flipped = _grid(direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    np.testing.assert_allclose(dr.voxel_indices(np.array([[6.0, 20, 30]]), flipped), [[0, 0, 2]])


def test_place_indices_exact_off_plane_off_pixel_and_outside():
    shape, spacing = (4, 5, 6), (4.0, 3.0, 2.0)
    got = dr.place_indices(np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]), shape, spacing, 0.1)
    assert got.tolist() == [[1, 2, 3], [3, 4, 5]]
    # 0.05 slice = 0.2 mm off the plane (tolerance 0.1 mm)
    with pytest.raises(dr.RoiProblem, match=r"off the slice planes .* 0.2 mm"):
        dr.place_indices(np.array([[1.05, 2.0, 3.0]]), shape, spacing, 0.1)
    with pytest.raises(dr.RoiProblem, match="not the DP series' pixels"):
        dr.place_indices(np.array([[1.0, 2.5, 3.0]]), shape, spacing, 0.1)
    with pytest.raises(dr.RoiProblem, match="1 segmented voxel\\(s\\) lie outside"):
        dr.place_indices(np.array([[4.0, 0.0, 0.0]]), shape, spacing, 0.1)


def _square(k, r0, r1, c0, c1):
    """A closed square contour (slice k) through the given row / column bounds."""
    return np.array([[k, r0, c0], [k, r0, c1], [k, r1, c1], [k, r1, c0]], dtype=float)


def test_fill_contours_pixel_centres_and_holes():
    shape, spacing = (3, 6, 6), (2.5, 1.0, 1.0)
    # rows/cols 0.5..3.5 enclose the centres 1, 2, 3: 3 x 3 voxels on slice 2
    out = dr.fill_contours([_square(2, 0.5, 3.5, 0.5, 3.5)], shape, 0.1, spacing)
    assert out.sum() == 9
    assert out[2, 1:4, 1:4].all()
    # a nested contour is a hole (even-odd): the centre voxel goes
    holed = dr.fill_contours(
        [_square(2, 0.5, 3.5, 0.5, 3.5), _square(2, 1.5, 2.5, 1.5, 2.5)], shape, 0.1, spacing
    )
    assert holed.sum() == 8
    assert holed[2, 2, 2] == 0
    # a contour at the image border (pixel edges) keeps the border voxels
    edge = dr.fill_contours([_square(0, -0.5, 1.5, -0.5, 5.5)], shape, 0.1, spacing)
    assert edge[0, :2, :].all()
    assert edge.sum() == 12


def test_fill_contours_refusals():
    shape, spacing = (3, 6, 6), (2.5, 1.0, 1.0)
    off = _square(1, 0.5, 3.5, 0.5, 3.5)
    off[2, 0] = 1.2  # one point 0.5 mm off slice plane 1
    with pytest.raises(dr.RoiProblem, match=r"off the slice planes .* 0.5 mm"):
        dr.fill_contours([off], shape, 0.1, spacing)
    with pytest.raises(dr.RoiProblem, match="plane outside the DP series \\(2 slice"):
        dr.fill_contours([_square(4, 0.5, 3.5, 0.5, 3.5)], shape, 0.1, spacing)
    with pytest.raises(dr.RoiProblem, match="reaches 2 mm outside the DP image"):
        dr.fill_contours([_square(1, 0.5, 3.5, 0.5, 7.5)], shape, 0.1, spacing)


# --------------------------------------------------------------------------- files
#: an oblique (20 degrees about z, then 15 about x), non-square (40 rows, 56 columns) series
_TH, _PH = np.deg2rad(20), np.deg2rad(15)
OBLIQUE = np.array(
    [[1, 0, 0], [0, np.cos(_PH), -np.sin(_PH)], [0, np.sin(_PH), np.cos(_PH)]]
) @ np.array([[np.cos(_TH), -np.sin(_TH), 0], [np.sin(_TH), np.cos(_TH), 0], [0, 0, 1]])
SHAPE = (12, 40, 56)


def _truth():
    """An asymmetric ROI with a hole and a part at the image border (flips would show)."""
    m = np.zeros(SHAPE, dtype=np.uint8)
    m[4:8, 10:25, 20:45] = 1
    m[5, 15:18, 30:33] = 0
    m[6, 0:5, 0:6] = 1
    m[4, 10:13, 20:23] = 0
    return m


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Two oblique, non-square series of one geometry (``dp`` and ``other``), the DP grid as
    recur converts it and its reference."""
    root = tmp_path_factory.mktemp("dicom_rois")
    vol = (np.random.default_rng(0).random(SHAPE) * 1000).astype(np.uint16)
    geo = dict(origin=(-50.0, -30.0, 10.0), spacing=(0.8, 1.1, 2.5), direction=OBLIQUE)
    dp = write_mr_series(root / "dp", vol, seed=1, **geo)
    other = write_mr_series(root / "other", vol, seed=2, **geo)
    grid = SeriesReader(ConvertSettings.defaults())(root / "dp").image
    ref = dr.ReferenceSeries(grid, *dr.reference_identifiers(root / "dp"))
    return {"root": root, "dp": dp, "other": other, "grid": grid, "ref": ref}


def _write_seg(path, sources, segments, *, fractional=False):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type="MANUAL",
        )
        for i, label in enumerate(segments)
    ]
    pixels = np.stack([np.asarray(a) for a in segments.values()], axis=-1)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels.astype(np.float32 if fractional else bool),
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="FAKE",
        manufacturer_model_name="FAKE",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(path)
    return path


def _write_rtstruct(path, sources, grid, mask, *, name="GTV", frame=None, shift_mm=0.0):
    """An RTSTRUCT of ``mask``'s boundaries (skimage marching squares at 0.5) on ``sources``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
    from skimage.measure import find_contours

    affine = dr.array_affine(grid)
    normal = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    by_pos = {round(float(np.dot(s.ImagePositionPatient, normal)), 3): s for s in sources}
    contours = []
    for k in range(mask.shape[0]):
        for c in find_contours(np.pad(mask[k], 1).astype(float), 0.5):
            idx = np.column_stack([np.full(len(c), k), c - 1])
            pts = idx @ affine[:3, :3].T + affine[:3, 3] + normal * shift_mm
            item = Dataset()
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(pts)
            item.ContourData = [f"{v:.4f}" for v in pts.ravel()]
            src = by_pos.get(round(float(np.dot(affine[:3, 3] + affine[:3, 0] * k, normal)), 3))
            if src is not None and not shift_mm:
                img = Dataset()
                img.ReferencedSOPClassUID = src.SOPClassUID
                img.ReferencedSOPInstanceUID = src.SOPInstanceUID
                item.ContourImageSequence = Sequence([img])
            contours.append(item)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = (
        RTStructureSetStorage,
        ds.file_meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "RTSTRUCT"
    ds.PatientName, ds.PatientID = sources[0].PatientName, sources[0].PatientID
    frame = frame or sources[0].FrameOfReferenceUID
    roi = Dataset()
    roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = 1, name, frame
    ds.StructureSetROISequence = Sequence([roi])
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([rc])
    ser, study, ref = Dataset(), Dataset(), Dataset()
    ser.SeriesInstanceUID = sources[0].SeriesInstanceUID
    study.RTReferencedSeriesSequence = Sequence([ser])
    ref.FrameOfReferenceUID = frame
    ref.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ds.save_as(path, enforce_file_format=True)
    return path


def _mask(path, ref, roi=None, settings=SETTINGS):
    return sitk.GetArrayFromImage(dr.dicom_mask(path, ref, roi, settings))


def test_seg_on_oblique_non_square_series_is_exact(series, tmp_path):
    truth = _truth()
    path = _write_seg(tmp_path / "a", series["dp"], {"Tumour": truth})
    assert dr.mask_format(path) == "seg"
    got = _mask(path, series["ref"])
    assert got.shape == SHAPE
    assert np.array_equal(got, truth)


def test_seg_with_frames_in_reverse_order_lands_the_same(series, tmp_path):
    truth = _truth()
    path = _write_seg(tmp_path / "r", series["dp"][::-1], {"Tumour": truth[::-1]})
    assert np.array_equal(_mask(path, series["ref"]), truth)


def test_seg_picks_the_named_segment(series, tmp_path):
    truth = _truth()
    liver = np.zeros(SHAPE, dtype=np.uint8)
    liver[2:10, 5:35, 5:50] = 1
    path = _write_seg(tmp_path / "two", series["dp"], {"Liver": liver, "Tumour": truth})
    assert np.array_equal(_mask(path, series["ref"], "Tumour"), truth)
    assert np.array_equal(_mask(path, series["ref"], "Liver"), liver)
    with pytest.raises(dr.RoiProblem, match=r"holds 2 segments \('Liver', 'Tumour'\)"):
        _mask(path, series["ref"])
    with pytest.raises(dr.RoiProblem, match=r"no segment named 'GTV' \(it holds: 'Liver'"):
        _mask(path, series["ref"], "GTV")


def test_seg_of_another_series_is_refused(series, tmp_path):
    path = _write_seg(tmp_path / "o", series["other"], {"Tumour": _truth()})
    with pytest.raises(dr.RoiProblem, match="references another series than the DP series"):
        _mask(path, series["ref"])


def test_fractional_seg_binary_values_accepted_partial_refused(series, tmp_path):
    truth = _truth()
    ok = _write_seg(tmp_path / "f1", series["dp"], {"T": truth}, fractional=True)
    assert np.array_equal(_mask(ok, series["ref"]), truth)
    soft = truth.astype(np.float32)
    soft[7, 10:25, 20:45] *= 0.4
    bad = _write_seg(tmp_path / "f2", series["dp"], {"T": soft}, fractional=True)
    with pytest.raises(dr.RoiProblem, match=r"FRACTIONAL SEG with 375 voxel.* between 0 and 1"):
        _mask(bad, series["ref"])


def test_rtstruct_on_oblique_non_square_series(series, tmp_path):
    truth = _truth()
    path = _write_rtstruct(tmp_path / "rt", series["dp"], series["grid"], truth)
    assert dr.mask_format(path) == "rtstruct"
    got = _mask(path, series["ref"])
    assert np.array_equal(got, truth)  # hole and border part kept, nothing flipped


def test_rtstruct_refusals(series, tmp_path):
    truth = _truth()
    ref = series["ref"]
    other = _write_rtstruct(tmp_path / "o", series["other"], series["grid"], truth)
    with pytest.raises(dr.RoiProblem, match="references another series"):
        _mask(other, ref)
    frame = _write_rtstruct(tmp_path / "f", series["dp"], series["grid"], truth, frame="1.2.3")
    with pytest.raises(dr.RoiProblem, match="frame of reference is not the DP series'"):
        _mask(frame, ref)
    half = _write_rtstruct(tmp_path / "h", series["dp"], series["grid"], truth, shift_mm=1.25)
    with pytest.raises(dr.RoiProblem, match=r"off the slice planes .* \(up to 1.25 mm"):
        _mask(half, ref)
    with pytest.raises(dr.RoiProblem, match="no ROI named 'Liver' \\(it holds: 'GTV'\\)"):
        _mask(_write_rtstruct(tmp_path / "n", series["dp"], series["grid"], truth), ref, "Liver")


def test_not_a_mask_file(series, tmp_path):
    with pytest.raises(dr.RoiProblem, match="modality MR, not a segmentation"):
        dr.mask_format(series["root"] / "dp" / "slice000.dcm")
    nii = tmp_path / "m.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkUInt8), str(nii))
    assert dr.mask_format(nii) == "nifti"


def test_check_mask_file_refuses_in_one_line_and_writes_nothing(series, tmp_path):
    dp_nii = tmp_path / "DP.nii.gz"
    sitk.WriteImage(series["grid"], str(dp_nii))
    seg = _write_seg(tmp_path / "roi.dcm", series["dp"], {"Liver": _truth(), "Tumour": _truth()})
    source = masks.DicomRoiSource(series["root"] / "dp", None, None, SETTINGS)
    out = tmp_path / "out.nii.gz"
    with pytest.raises(RecurError) as err:
        masks.check_mask_file(
            seg,
            dp_nii,
            out,
            patient="P0007",
            timepoint="post",
            mask_name="rois/x.dcm",
            dp_name="DP",
            dicom=source,
        )
    message = str(err.value)
    assert "\n" not in message
    assert not out.exists()
    assert message.startswith("patient P0007 (post): ROI mask rois/x.dcm (DICOM SEG) refused")
    assert "holds 2 segments" in message
    assert str(tmp_path) not in message
    named = masks.DicomRoiSource(series["root"] / "dp", None, "Tumour", SETTINGS)
    summary = masks.check_mask_file(
        seg, dp_nii, out, patient="P0007", timepoint="post", dicom=named
    )
    assert summary["format"] == "seg"
    assert summary["roi_voxels"] == int(_truth().sum())
    written = sitk.ReadImage(str(out))
    assert not masks.geometry_problems(written, series["grid"])
    assert np.array_equal(sitk.GetArrayFromImage(written), _truth())


def test_cohort_masks_read_the_roi_column_and_the_dp_folder(series, tmp_path):
    """The workflow's and predict's path: rois.csv names a SEG and its segment; the DP
    folder comes from series.csv, relative to its own root (predict: another folder)."""
    import pandas as pd

    truth = _truth()
    rois_root = tmp_path / "rois"
    rois_root.mkdir()
    _write_seg(rois_root / "p1.dcm", series["dp"], {"Liver": truth, "Tumour": truth})
    rois = pd.DataFrame(
        {"patient_id": ["P1"], "timepoint": ["pre"], "mask": ["p1.dcm"], "roi": ["Tumour"]}
    )
    table = pd.DataFrame(
        {"patient_id": ["P1"], "timepoint": ["pre"], "phase": ["DP"], "dicom_dir": ["dp"]}
    )
    dp_nii = tmp_path / "DP.nii.gz"
    sitk.WriteImage(series["grid"], str(dp_nii))
    checker = masks.CohortMasks.from_tables(rois, rois_root, table, series["root"])
    out = tmp_path / "pre.nii.gz"
    assert checker.check("P1", "pre", dp_nii, out)["format"] == "seg"
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), truth)
    rois.loc[0, "roi"] = ""
    with pytest.raises(RecurError, match=r"patient P1 \(pre\): ROI mask p1.dcm \(DICOM SEG\)"):
        checker.check("P1", "pre", dp_nii, tmp_path / "again.nii.gz")


def test_contours_that_enclose_no_voxel_centre_are_refused(series, tmp_path):
    tiny = np.zeros(SHAPE, dtype=np.uint8)
    tiny[5, 20, 30] = 1  # one pixel: its contour is a diamond around that centre
    path = _write_rtstruct(tmp_path / "t", series["dp"], series["grid"], tiny)
    assert _mask(path, series["ref"]).sum() == 1
    import pydicom

    ds = pydicom.dcmread(path)
    points = np.asarray(ds.ROIContourSequence[0].ContourSequence[0].ContourData, float)
    centre = points.reshape(-1, 3).mean(axis=0)
    shrunk = centre + (points.reshape(-1, 3) - centre) * 0.2  # a diamond between centres
    moved = dr.voxel_indices(shrunk, series["grid"]) + np.array([0.0, 0.5, 0.5])
    affine = dr.array_affine(series["grid"])
    ds.ROIContourSequence[0].ContourSequence[0].ContourData = [
        f"{v:.4f}" for v in (moved @ affine[:3, :3].T + affine[:3, 3]).ravel()
    ]
    ds.save_as(path)
    with pytest.raises(dr.RoiProblem, match="enclose no voxel centre"):
        _mask(path, series["ref"])


def test_recur_roi_command_writes_the_mask_on_the_converted_grid(series, tmp_path, capsys):
    from recur.cli.main import main

    seg = _write_seg(tmp_path / "seg.dcm", series["dp"], {"Liver": _truth(), "Tumour": _truth()})
    out = tmp_path / "mask.nii.gz"
    ref = str(series["root"] / "dp")
    assert not main(["roi", str(seg), "--reference", ref, "--roi", "Tumour", "--out", str(out)])
    written = sitk.ReadImage(str(out))
    assert not masks.geometry_problems(written, series["grid"])
    assert np.array_equal(sitk.GetArrayFromImage(written), _truth())
    again = tmp_path / "again.nii.gz"
    assert main(["roi", str(seg), "--reference", ref, "--out", str(again)]) == 2  # refused
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert "holds 2 segments ('Liver', 'Tumour')" in message
    assert not again.exists()
