"""The ROI writers (DICOM SEG, RTSTRUCT): read back onto the source series they give the
mask exactly, the same inputs give the same bytes, and they reference the source images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from recur.synthetic.anatomy import Grid
from recur.synthetic.dicom_writer import dicom_uid, write_series
from recur.synthetic.roi_writer import slice_contours, write_rtstruct, write_seg
from recur.synthetic.sites import SITE_PROFILES

# Non-square matrix, different row and column spacing: a swapped axis shows.
GRID = Grid((-12.3, 40.7, -31.0), (1.5, 2.25, 4.0), (9, 7, 6))  # nx, ny, nz
HEADER = {
    "PatientName": "FAKEMAN^ALPHA",
    "PatientID": "FKMRN12345678",
    "PatientBirthDate": "19600101",
    "PatientSex": "M",
    "StudyDate": "20150101",
    "SeriesDate": "20150101",
    "AcquisitionDate": "20150101",
    "ContentDate": "20150101",
    "StudyTime": "101010.000000",
    "AccessionNumber": "FKACC123456789",
    "ReferringPhysicianName": "FAKEDOC^BRAVO",
    "OperatorsName": "FAKETECH^CHARLIE",
    "InstitutionName": "FAKE Institution (synthetic)",
    "StationName": "FKSTNA01",
    "DeviceSerialNumber": "FKSN123456",
    "StudyInstanceUID": dicom_uid("roi-test", "study"),
    "FrameOfReferenceUID": dicom_uid("roi-test", "for"),
    "StudyID": "4321",
    "StudyDescription": "FAKE MR LIVER",
    "SeriesDescription": "DELAY 3min",
    "ProtocolName": "t1 dyn",
    "SeriesNumber": 7,
    "AcquisitionNumber": 1,
    "SeriesTime": "101500.000000",
    "AcquisitionTime": "101500.000000",
    "ContentTime": "101505.000000",
}


def _masks() -> dict[str, np.ndarray]:
    nx, ny, nz = GRID.size
    shape = (nz, ny, nx)
    ring = np.zeros(shape, np.uint8)  # a hole with an island in it; two components
    ring[1, 1:6, 1:7] = 1
    ring[1, 2:5, 2:6] = 0
    ring[1, 3, 3] = 1
    ring[2, 2:4, 7:9] = 1
    border = np.zeros(shape, np.uint8)  # touching every edge and corner; a full slice
    border[0, :3, :] = 1
    border[0, :, :2] = 1
    border[0, -1, -1] = 1
    border[5] = 1
    empty = np.zeros(shape, np.uint8)  # SEG: all frames kept; RTSTRUCT: no contours
    diagonal = np.zeros(shape, np.uint8)  # pixels joined only at their corners
    diagonal[2, [1, 2, 3, 2], [1, 2, 1, 4]] = 1
    diagonal[3, ::2, ::2] = 1
    rng = np.random.default_rng(3)
    noise = (rng.random(shape) < 0.45).astype(np.uint8)
    noise[4] = 0
    return {"ring": ring, "border": border, "diagonal": diagonal, "noise": noise, "empty": empty}


MASKS = _masks()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A small DP series (one file per slice, shuffled names) of ``GRID``."""
    folder = tmp_path_factory.mktemp("roi") / "dp"
    nx, ny, nz = GRID.size
    volume = np.arange(nx * ny * nz, dtype=np.uint16).reshape(nz, ny, nx)
    write_series(
        folder,
        volume,
        GRID,
        header=HEADER,
        site=SITE_PROFILES["siteA"],  # rescale slope 1, intercept 0
        name_rng=np.random.default_rng(0),
        uid_key=("roi-test", "pre", "DP"),
        compress=False,
    )
    return folder


def _sitk_order(folder: Path) -> tuple[sitk.Image, list[pydicom.Dataset]]:
    """The series as SimpleITK reads it, and its images in SimpleITK's slice order."""
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    return reader.Execute(), [pydicom.dcmread(n, stop_before_pixels=True) for n in names]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_simpleitk_slice_order(source):
    image, _ = _sitk_order(source)
    nx, ny, nz = GRID.size
    expected = np.arange(nx * ny * nz).reshape(nz, ny, nx)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)


@pytest.mark.parametrize("name", MASKS)
def test_seg_reads_back_as_the_mask(source, tmp_path, name):
    import highdicom as hd

    mask = MASKS[name]
    out = tmp_path / "roi.dcm"
    write_seg(mask, source, out, label="tumour", uid_key=("roi-test", "pre"))
    seg = hd.seg.segread(out)
    _, images = _sitk_order(source)
    pixels = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in images],
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )
    back = pixels[..., 0].astype(bool)
    assert np.array_equal(back, mask.astype(bool)), f"Dice {_dice(back, mask.astype(bool))}"
    assert seg.SegmentationType == "BINARY"
    frames = int(mask.any(axis=(1, 2)).sum()) or len(mask)  # empty frames left out
    assert int(seg.NumberOfFrames) == frames
    assert seg.SegmentSequence[0].SegmentLabel == "tumour"


def _rtstruct_mask(path: Path, folder: Path) -> np.ndarray:
    """Fill the contours of the one ROI in ``path`` on the series in ``folder`` (even-odd)."""
    from skimage.draw import polygon2mask

    image, images = _sitk_order(folder)
    slice_of = {ds.SOPInstanceUID: k for k, ds in enumerate(images)}
    nx, ny, nz = image.GetSize()
    out = np.zeros((nz, ny, nx), bool)
    ds = pydicom.dcmread(path)
    (roi,) = ds.ROIContourSequence
    for contour in roi.get("ContourSequence", []):
        assert contour.ContourGeometricType == "CLOSED_PLANAR"
        (ref,) = contour.ContourImageSequence
        k = slice_of[ref.ReferencedSOPInstanceUID]
        xyz = np.array(contour.ContourData, float).reshape(-1, 3)
        assert len(xyz) == int(contour.NumberOfContourPoints)
        index = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in xyz])
        np.testing.assert_allclose(index[:, 2], k, atol=1e-6)  # on the referenced slice
        out[k] ^= polygon2mask((ny, nx), index[:, [1, 0]])  # (row, col)
    return out


@pytest.mark.parametrize("name", MASKS)
def test_rtstruct_reads_back_as_the_mask(source, tmp_path, name):
    mask = MASKS[name].astype(bool)
    out = tmp_path / "roi.dcm"
    write_rtstruct(mask, source, out, label="tumour", uid_key=("roi-test", "pre"))
    back = _rtstruct_mask(out, source)
    assert np.array_equal(back, mask), f"Dice {_dice(back, mask)}"


def test_contours_of_random_slices_fill_exactly():
    from skimage.draw import polygon2mask

    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = tuple(int(n) for n in rng.integers(1, 10, 2))
        m = rng.random(shape) < rng.uniform(0.1, 0.9)
        back = np.zeros(shape, bool)
        for rc in slice_contours(m):
            back ^= polygon2mask(shape, rc)
        np.testing.assert_array_equal(back, m)


@pytest.mark.parametrize("writer", [write_seg, write_rtstruct])
def test_same_inputs_same_bytes(source, tmp_path, writer):
    for name in ("a", "b"):
        writer(MASKS["ring"], source, tmp_path / name, label="tumour", uid_key=("k", 1))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    writer(MASKS["ring"], source, tmp_path / "c", label="tumour", uid_key=("k", 2))
    assert (tmp_path / "c").read_bytes() != (tmp_path / "a").read_bytes()


def _source_values(folder: Path) -> tuple[pydicom.Dataset, list[str]]:
    _, images = _sitk_order(folder)
    return images[0], [ds.SOPInstanceUID for ds in images]


def test_seg_references_the_source(source, tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage

    first, sops = _source_values(source)
    out = tmp_path / "roi.dcm"
    write_seg(MASKS["ring"], source, out, label="tumour", uid_key=("roi-test", "pre"))
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == SegmentationStorage
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPInstanceUID == dicom_uid("roi-test", "pre", "seg-sop")
    assert ds.SeriesInstanceUID == dicom_uid("roi-test", "pre", "seg-series")
    (series,) = ds.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedInstanceSequence] == sops
    for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID"):
        assert ds[key].value == first[key].value
    for key in ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        assert ds[key].value == first[key].value
    assert ds.ContentDate == first.ContentDate
    assert ds.ContentTime == first.ContentTime


def test_rtstruct_references_the_source(source, tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage

    first, sops = _source_values(source)
    mask = MASKS["ring"]
    out = tmp_path / "roi.dcm"
    write_rtstruct(mask, source, out, label="tumour", uid_key=("roi-test", "pre"))
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == RTStructureSetStorage
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.Modality == "RTSTRUCT"
    assert ds.SOPInstanceUID == dicom_uid("roi-test", "pre", "rtstruct-sop")
    (for_ref,) = ds.ReferencedFrameOfReferenceSequence
    assert for_ref.FrameOfReferenceUID == first.FrameOfReferenceUID
    (study,) = for_ref.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == first.StudyInstanceUID
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in series.ContourImageSequence] == sops
    (roi,) = ds.StructureSetROISequence
    assert (roi.ROINumber, roi.ROIName) == (1, "tumour")
    assert roi.ReferencedFrameOfReferenceUID == first.FrameOfReferenceUID
    (contours,) = ds.ROIContourSequence
    assert contours.ReferencedROINumber == 1
    referenced = {
        c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in contours.ContourSequence
    }
    assert referenced == {sops[k] for k in np.flatnonzero(mask.any(axis=(1, 2)))}
    (obs,) = ds.RTROIObservationsSequence
    assert obs.ReferencedROINumber == 1
    for key in ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate"):
        assert ds[key].value == first[key].value
    for key in ("AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDate"):
        assert ds[key].value == first[key].value


def test_mask_of_another_shape_is_refused(source, tmp_path):
    nx, ny, nz = GRID.size
    for writer in (write_seg, write_rtstruct):
        with pytest.raises(ValueError, match="does not match"):
            writer(
                np.zeros((nz, nx, ny), np.uint8), source, tmp_path / "x", label="t", uid_key=(1,)
            )
