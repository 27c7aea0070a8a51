"""DICOM -> NIfTI conversion: geometry by hand, refusals, de-identification, real data."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import RLELossless

from recur.cli.main import main
from recur.errors import RecurError
from recur.preprocess import convert, dicom_series, dicom_slice, series_table
from recur.preprocess.dicom_geometry import (
    GeometryError,
    check_slice_spacing,
    check_stacking,
    direction_matrix,
    orientation_groups,
    output_dtype,
    position_groups,
    slice_normal,
)
from recur.preprocess.dicom_series import ConvertSettings, SeriesReader
from tests.fixtures import settings_option

from ..fixtures import mr_slice_dataset

# Fake identifying values written into every hand-made file; none may reach an output.
SECRETS = {
    "PatientName": "Doe^Jane",
    "PatientID": "SECRETID987",
    "PatientBirthDate": "19510203",
    "StudyDate": "20190405",
    "InstitutionName": "Nowhere General Hospital",
    "AccessionNumber": "ACC55501",
    "ReferringPhysicianName": "House^Gregory",
    "StationName": "STATION-X9",
    "DeviceSerialNumber": "SN-424242",
}

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _oblique(deg: float) -> tuple[float, ...]:
    """Axial tilted by ``deg`` about the x axis: row (1,0,0), col (0,cos,sin)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return (1.0, 0.0, 0.0, 0.0, c, s)


def write_slice(
    path: Path,
    pixels: np.ndarray,
    position: tuple[float, float, float],
    *,
    orientation: tuple[float, ...] = AXIAL,
    series_uid: str | None = None,
    instance: int = 1,
    pixel_spacing: tuple[float, float] = (0.5, 0.75),
    slope: float | None = None,
    intercept: float | None = None,
    echo: int | None = None,
    description: str = "T1 test",
    extra: dict | None = None,
) -> None:
    """One MR Image Storage slice with fake identifying values, written with pydicom.

    Without ``series_uid`` the slice gets its folder's own: one series per folder (the
    conversion job refuses one series given for two phases)."""
    if series_uid is None:
        digest = hashlib.sha256(str(path.parent).encode()).hexdigest()[:24]
        series_uid = f"1.2.826.0.1.3680043.8.498.{int(digest, 16)}"
    ds = mr_slice_dataset()
    for k, v in SECRETS.items():
        setattr(ds, k, v)
    ds.add_new(0x00091010, "LO", "PRIVATE-SECRET")
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = description
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Imager 3000"
    ds.MagneticFieldStrength = 3
    ds.RepetitionTime = 4.2
    ds.EchoTime = 1.9
    ds.FlipAngle = 12
    ds.SliceThickness = 2
    ds.ImagePositionPatient = [f"{x:.6f}" for x in position]
    ds.ImageOrientationPatient = [f"{x:.6f}" for x in orientation]
    ds.PixelSpacing = [f"{x:g}" for x in pixel_spacing]
    if echo is not None:
        ds.EchoNumbers = echo
    if slope is not None:
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept or 0:g}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)


def slice_pixels(k: int, shape: tuple[int, int] = (6, 5)) -> np.ndarray:
    """Slice ``k``'s pixels: value = 100 * k + 10 * row + col (slice index readable back)."""
    r, c = np.indices(shape)
    return (100 * k + 10 * r + c).astype(np.uint16)


def write_stack(
    folder: Path,
    n: int = 5,
    *,
    step: float = 2.0,
    origin: tuple[float, float, float] = (-10.0, 20.0, 30.0),
    orientation: tuple[float, ...] = AXIAL,
    shuffle: bool = True,
    positions: list[float] | None = None,
    seed: int = 0,
    **kw,
) -> list[Path]:
    """A stack of ``n`` slices along the normal, written under random names in random order."""
    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(orientation[:3], orientation[3:])
    dists = positions if positions is not None else [k * step for k in range(n)]
    order = list(range(len(dists)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    paths = []
    for j, k in enumerate(order):
        pos = tuple(np.asarray(origin) + dists[k] * normal)
        p = folder / (f"{rng.getrandbits(40):x}.dcm" if shuffle else f"{k:04d}.dcm")
        write_slice(p, slice_pixels(k), pos, orientation=orientation, instance=j + 1, **kw)
        paths.append(p)
    return paths


READ = SeriesReader(ConvertSettings.defaults())


# --------------------------------------------------------------------------- pure geometry
def test_slice_normal_by_hand():
    assert np.allclose(slice_normal(AXIAL), [0, 0, 1])
    # sagittal: row (0,1,0) x col (0,0,-1) = (-1, 0, 0)
    assert np.allclose(slice_normal((0, 1, 0, 0, 0, -1)), [-1, 0, 0])
    # coronal: row (1,0,0) x col (0,0,-1) = (0, 1, 0)
    assert np.allclose(slice_normal((1, 0, 0, 0, 0, -1)), [0, 1, 0])
    with pytest.raises(GeometryError, match="parallel"):
        slice_normal((1, 0, 0, 1, 0, 0))


def test_direction_matrix_orthonormalises_and_refuses_garbage():
    d = direction_matrix((1, 0, 0, 0.0005, 1, 0))
    assert np.allclose(d.T @ d, np.eye(3), atol=1e-12)
    assert np.allclose(d[:, 1], [0, 1, 0], atol=1e-6)
    assert np.allclose(d[:, 2], [0, 0, 1], atol=1e-6)
    with pytest.raises(GeometryError, match="unit"):
        direction_matrix((2, 0, 0, 0, 1, 0))
    with pytest.raises(GeometryError, match="orthogonal"):
        direction_matrix((1, 0, 0, 0.7071, 0.7071, 0))


def test_orientation_groups():
    o = np.array([AXIAL, (1, 0, 0, 0, 1, 0.0004), (0, 1, 0, 0, 0, -1), AXIAL])
    assert orientation_groups(o, 1e-3).tolist() == [0, 0, 1, 0]
    assert orientation_groups(o, 1e-4).tolist() == [0, 1, 2, 0]


def test_position_groups_sorts_and_groups_duplicates():
    groups = position_groups(np.array([3.0, 1.0, 2.0, 1.005, 2.0]))
    assert [g.tolist() for g in groups] == [[1, 3], [2, 4], [0]]
    assert position_groups(np.array([])) == []


def test_check_slice_spacing_by_hand():
    assert check_slice_spacing(np.array([0.0, 2.0, 4.0, 6.0]), 0.05) == pytest.approx(2.0)
    # one slice missing between 4 and 8
    with pytest.raises(GeometryError, match="1 missing slice"):
        check_slice_spacing(np.array([0.0, 2.0, 4.0, 8.0, 10.0]), 0.05)
    with pytest.raises(GeometryError, match="2 missing slice"):
        check_slice_spacing(np.array([0.0, 2.0, 4.0, 10.0, 12.0, 14.0]), 0.05)
    # 4.5 is 0.5 mm off the 2 mm grid: refused at 5 % (0.1 mm), accepted at 30 % (0.6 mm)
    d = np.array([0.0, 2.0, 4.5, 6.0])
    with pytest.raises(GeometryError, match="non-uniform"):
        check_slice_spacing(d, 0.05)
    assert check_slice_spacing(d, 0.3) == pytest.approx(2.0)
    # gaps 2, 2.6, 1.4, 2 are not whole multiples of 1.4: non-uniform, not "missing"
    with pytest.raises(GeometryError, match="non-uniform"):
        check_slice_spacing(np.array([0.0, 2.0, 4.6, 6.0, 8.0]), 0.05)
    # three slices, gaps 4 then 2: one missing slice (a median step would hide it)
    with pytest.raises(GeometryError, match=r"1 missing slice.*after slice 1 of 3"):
        check_slice_spacing(np.array([0.0, 4.0, 6.0]), 0.05)


def test_check_stacking_refuses_tilt():
    normal = np.array([0.0, 0.0, 1.0])
    straight = np.array([[1.0, 2.0, z] for z in (0.0, 3.0, 6.0)])
    assert check_stacking(straight, normal, 0.1) == pytest.approx(0.0)
    # 14 degree gantry tilt: positions step along z, the normal is tilted about x
    t = math.radians(14)
    tilted_normal = np.array([0.0, math.sin(t), math.cos(t)])
    with pytest.raises(GeometryError, match=r"sheared by 14\.0 degrees"):
        check_stacking(straight, tilted_normal, 0.1)


def test_output_dtype():
    one, zero = np.ones(3), np.zeros(3)
    assert output_dtype(one, zero - 1024, 0, 4095) is np.int16
    assert output_dtype(one, zero, 0, 40000) is np.float32  # above int16
    assert output_dtype(one * 0.5, zero, 0, 100) is np.float32
    assert output_dtype(one, zero + 0.5, 0, 100) is np.float32


# --------------------------------------------------------------------------- hand-made series
def test_shuffled_names_and_instance_numbers_sorted_by_position(tmp_path):
    orient = _oblique(30)
    write_stack(tmp_path / "s", n=6, step=2.5, orientation=orient, seed=3)
    res = READ(tmp_path / "s")
    img = res.image
    arr = sitk.GetArrayFromImage(img)  # (slice, row, col)
    assert arr.shape == (6, 6, 5)
    for k in range(6):  # slice k at distance 2.5 k along the normal has value 100 k + ...
        assert np.array_equal(arr[k], slice_pixels(k))
    assert img.GetOrigin() == pytest.approx((-10.0, 20.0, 30.0), abs=1e-5)
    # spacing: (column spacing, row spacing, slice step) from PixelSpacing = [row, col]
    assert img.GetSpacing() == pytest.approx((0.75, 0.5, 2.5), abs=1e-6)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])  # columns: row, col, normal
    assert np.allclose(np.array(img.GetDirection()).reshape(3, 3), expected, atol=1e-6)
    # world position of voxel (col 2, row 3, slice 4) by hand
    p = np.array([-10.0, 20.0, 30.0]) + 2 * 0.75 * expected[:, 0] + 3 * 0.5 * expected[:, 1]
    p += 4 * 2.5 * expected[:, 2]
    assert img.TransformIndexToPhysicalPoint((2, 3, 4)) == pytest.approx(tuple(p), abs=1e-5)
    assert res.n_slices == 6
    assert res.n_duplicates_dropped == 0


def test_reverse_normal_sorted_ascending_along_normal(tmp_path):
    # sagittal slices (normal -x) written with x increasing: first slice = largest x... no:
    # ascending along the normal (-x) means the origin is the slice with the largest x.
    sag = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    folder = tmp_path / "sag"
    folder.mkdir()
    for k in range(4):
        write_slice(folder / f"{k}.dcm", slice_pixels(k), (float(k), 0.0, 0.0), orientation=sag)
    img = READ(folder).image
    assert img.GetOrigin() == pytest.approx((3.0, 0.0, 0.0))
    arr = sitk.GetArrayFromImage(img)
    assert np.array_equal(arr[0], slice_pixels(3))
    # the world position of every slice is unchanged
    assert img.TransformIndexToPhysicalPoint((0, 0, 3)) == pytest.approx((0.0, 0.0, 0.0))


def test_rescale_applied_float_and_int16(tmp_path):
    write_stack(tmp_path / "f", n=3, slope=2.5, intercept=-100)
    res = READ(tmp_path / "f")
    arr = sitk.GetArrayFromImage(res.image)
    assert arr.dtype == np.float32
    assert np.array_equal(arr[1], slice_pixels(1) * 2.5 - 100)
    write_stack(tmp_path / "i", n=3, slope=1, intercept=-1024)
    arr = sitk.GetArrayFromImage(READ(tmp_path / "i").image)
    assert arr.dtype == np.int16
    assert np.array_equal(arr[2], slice_pixels(2).astype(int) - 1024)


def test_missing_slice_refused(tmp_path):
    write_stack(tmp_path / "m", positions=[0, 2, 4, 8, 10])
    with pytest.raises(RecurError, match=r"^patient P7, AP, folder 'm': 1 missing slice"):
        READ(tmp_path / "m", context="patient P7, AP, folder 'm'")


def test_identical_duplicate_dropped_and_counted(tmp_path, caplog):
    paths = write_stack(tmp_path / "d", n=4, shuffle=False)
    shutil.copy(paths[2], tmp_path / "d" / "copy_of_2.dcm")
    res = READ(tmp_path / "d")
    assert res.n_slices == 4
    assert res.n_duplicates_dropped == 1
    assert any("dropped 1 duplicate" in n for n in res.notes)


def test_duplicate_with_different_pixels_refused(tmp_path):
    write_stack(tmp_path / "d", n=4, shuffle=False)
    write_slice(tmp_path / "d" / "other.dcm", slice_pixels(9), (-10.0, 20.0, 34.0))
    with pytest.raises(RecurError, match=r"duplicated slice position 34\.000 mm"):
        READ(tmp_path / "d")


def test_non_uniform_spacing_refused(tmp_path):
    write_stack(tmp_path / "u", positions=[0, 2, 4.6, 6, 8])
    with pytest.raises(RecurError, match="non-uniform slice spacing"):
        READ(tmp_path / "u")
    # accepted with a looser tolerance (0.6 mm off a 2 mm grid is 30 %)
    res = SeriesReader(ConvertSettings.defaults(spacing_tolerance=0.35))(tmp_path / "u")
    assert res.image.GetSpacing()[2] == pytest.approx(2.0)


def test_mixed_orientation_refused(tmp_path):
    write_stack(tmp_path / "o", n=4, shuffle=False)
    write_slice(tmp_path / "o" / "x.dcm", slice_pixels(5), (0, 0, 50), orientation=_oblique(10))
    with pytest.raises(RecurError, match="mixed slice orientations"):
        READ(tmp_path / "o")


def test_gantry_tilt_refused(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    for k in range(4):  # tilted orientation, positions stepping straight along z
        write_slice(folder / f"{k}.dcm", slice_pixels(k), (0, 0, 5.0 * k), orientation=_oblique(14))
    with pytest.raises(RecurError, match="gantry tilt"):
        READ(folder)


def test_two_series_need_series_uid(tmp_path):
    folder = tmp_path / "two"
    write_stack(folder, n=3, series_uid="1.2.3.4.1", seed=1)
    write_stack(folder, n=4, series_uid="1.2.3.4.2", seed=2, description="other")
    with pytest.raises(RecurError, match="holds 2 series") as exc:
        READ(folder)
    assert "1.2.3.4" not in str(exc.value)  # UIDs are identifying: not in the message
    assert READ(folder, series_uid="1.2.3.4.2").n_slices == 4
    with pytest.raises(RecurError, match="matches none of the 2 series") as exc:
        READ(folder, series_uid="1.2.3.4.9")
    assert "1.2.3.4" not in str(exc.value)


def test_truncated_file_refused(tmp_path):
    paths = write_stack(tmp_path / "tr", n=4, shuffle=False)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 20])  # pixel data cut short
    with pytest.raises(RecurError, match=r"0001\.dcm.*(truncated|decode)"):
        READ(tmp_path / "tr")
    paths[1].write_bytes(data[:200])  # cut inside the header
    with pytest.raises(RecurError, match=r"0001\.dcm"):
        READ(tmp_path / "tr")


def test_garbage_dcm_refused_stray_files_skipped(tmp_path):
    write_stack(tmp_path / "g", n=3)
    (tmp_path / "g" / "LICENSE").write_text("MIT\n")
    (tmp_path / "g" / "notes.txt").write_text("hello\n")
    (tmp_path / "g" / ".DS_Store").write_bytes(b"\0\1\2")
    res = READ(tmp_path / "g")
    assert res.n_files_skipped == 2
    assert res.n_slices == 3
    (tmp_path / "g" / "broken.dcm").write_bytes(b"not dicom at all" * 20)
    with pytest.raises(RecurError, match=r"broken\.dcm' is not a readable DICOM"):
        READ(tmp_path / "g")


@pytest.mark.parametrize("tag", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_tag_refused(tmp_path, tag):
    paths = write_stack(tmp_path / "mt", n=3, shuffle=False)
    ds = pydicom.dcmread(paths[1])
    delattr(ds, tag)
    ds.save_as(paths[1], enforce_file_format=True)
    with pytest.raises(RecurError, match=f"0001.dcm' lacks the geometry tag {tag}"):
        READ(tmp_path / "mt")


def test_too_few_and_single_slice(tmp_path):
    write_stack(tmp_path / "two", n=2)
    with pytest.raises(RecurError, match="only 2 slices"):
        READ(tmp_path / "two")
    write_stack(tmp_path / "one", n=1)
    with pytest.raises(RecurError, match="single slice"):
        READ(tmp_path / "one")
    res = SeriesReader(ConvertSettings.defaults(), allow_single_slice=True)(tmp_path / "one")
    assert res.image.GetSize() == (5, 6, 1)
    assert res.image.GetSpacing()[2] == pytest.approx(2.0)  # SliceThickness


def test_echoes_refused_then_selected(tmp_path):
    folder = tmp_path / "me"
    write_stack(folder, n=4, echo=1, seed=1)
    write_stack(folder, n=4, echo=2, seed=2, slope=1, intercept=7)
    with pytest.raises(RecurError, match=r"several echoes .*EchoNumbers 1, 2"):
        READ(folder)
    a1 = sitk.GetArrayFromImage(READ(folder, echo=1).image)
    a2 = sitk.GetArrayFromImage(READ(folder, echo=2).image)
    assert np.array_equal(a2.astype(int) - a1.astype(int), np.full(a1.shape, 7))
    with pytest.raises(RecurError, match=r"no slice has EchoNumbers = 3 \(present: 1, 2\)"):
        READ(folder, echo=3)


def test_interleaved_echoes_at_offset_positions_refused(tmp_path):
    # echo 2 sits half a step between the echo-1 slices: one regular 1 mm grid by position
    folder = tmp_path / "il"
    write_stack(folder, n=4, echo=1, seed=1)
    write_stack(folder, n=4, echo=2, seed=2, origin=(-10.0, 20.0, 31.0))
    with pytest.raises(RecurError, match=r"several echoes \(EchoNumbers 1, 2\)"):
        READ(folder)
    assert READ(folder, echo=2).image.GetOrigin() == pytest.approx((-10.0, 20.0, 31.0))


def test_several_time_points_refused(tmp_path):
    folder = tmp_path / "dyn"
    write_stack(folder, n=3, seed=1, extra={"TemporalPositionIdentifier": 1})
    write_stack(folder, n=3, seed=2, slope=1, intercept=5, extra={"TemporalPositionIdentifier": 2})
    with pytest.raises(RecurError, match=r"several volumes .*TemporalPositionIdentifier"):
        READ(folder)


def test_rle_and_jpeg_ls_compressed(tmp_path):
    # RLE encoded by pydicom
    paths = write_stack(tmp_path / "rle", n=3, shuffle=False)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p, enforce_file_format=True)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == RLELossless
    arr = sitk.GetArrayFromImage(READ(tmp_path / "rle").image)
    assert np.array_equal(arr[2], slice_pixels(2))
    # JPEG-LS lossless (pydicom's own test file), decoded by pylibjpeg-libjpeg
    from pydicom.data import get_testdata_file

    src = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    plain = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    folder = tmp_path / "jls"
    folder.mkdir()
    for k in range(3):
        src.ImagePositionPatient = [0, 0, 3.0 * k]
        src.ImageOrientationPatient = list(AXIAL)
        src.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    img = READ(folder).image
    got = sitk.GetArrayFromImage(img)
    assert np.array_equal(got[1], plain.astype(got.dtype))


# --------------------------------------------------------------------------- writing / de-id
def _assert_deidentified(path: Path) -> None:
    h = nib.load(path).header
    assert h["descrip"].tobytes().strip(b"\0") == b""
    assert h["intent_name"].tobytes().strip(b"\0") == b""
    assert h["aux_file"].tobytes().strip(b"\0") == b""
    assert h["db_name"].tobytes().strip(b"\0") == b""
    assert len(h.extensions) == 0
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    head = raw[: int(h["vox_offset"]) or 352]
    for value in [*SECRETS.values(), "PRIVATE-SECRET", "1.2.826.0.1.3680043"]:
        assert value.encode() not in raw, value
    assert b"ITK" not in head


def test_written_nifti_is_deidentified_and_round_trips(tmp_path):
    write_stack(tmp_path / "s", n=4, orientation=_oblique(20), slope=1, intercept=-3)
    out = tmp_path / "out" / "s.nii.gz"
    res = convert.convert_series(tmp_path / "s", out, settings=ConvertSettings.defaults())
    _assert_deidentified(out)
    back = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(res.image))
    assert back.GetOrigin() == pytest.approx(res.image.GetOrigin(), abs=1e-4)
    assert back.GetDirection() == pytest.approx(res.image.GetDirection(), abs=1e-6)
    assert back.GetSpacing() == pytest.approx(res.image.GetSpacing(), abs=1e-6)


def test_metadata_of_an_image_is_stripped_on_write(tmp_path):
    img = sitk.Image(4, 4, 2, sitk.sitkInt16)
    img.SetMetaData("descrip", "Doe^Jane 20190405")
    img.SetMetaData("ITK_FileNotes", "Doe^Jane")
    out = tmp_path / "x.nii.gz"
    convert.write_deidentified_nifti(img, out, 1)
    _assert_deidentified(out)
    assert b"Doe" not in gzip.decompress(out.read_bytes())


def _phase_headers(i: int) -> dict:
    """Phase ``i`` acquired a minute after the one before (the phase order is checked)."""
    return {"extra": {"AcquisitionTime": f"10{i:02d}00"}}


def _cohort(tmp_path: Path, broken: str | None = None) -> Path:
    root = tmp_path / "cohort"
    rows = ["patient_id,timepoint,phase,dicom_dir,series_uid"]
    for i, ph in enumerate(("PS", "AP", "PVP", "DP")):
        rel = f"dicom/P1/pre/{ph}"
        if ph == broken:
            write_stack(root / rel, positions=[0, 2, 4, 8], seed=i, **_phase_headers(i))
        else:
            write_stack(root / rel, n=4, seed=i, slope=1, intercept=i, **_phase_headers(i))
        rows.append(f"P1,pre,{ph},{rel},")
    (root / "series.csv").write_text("\n".join(rows) + "\n")
    return root


def test_convert_timepoint_writes_all_files(tmp_path, caplog):
    root = _cohort(tmp_path)
    out = tmp_path / "nifti" / "P1" / "pre"
    with caplog.at_level(logging.DEBUG):
        res = convert.convert_timepoint(
            root, "series.csv", "P1", "pre", out, settings=ConvertSettings.defaults()
        )
    assert sorted(p.name for p in out.iterdir()) == [
        "AP.nii.gz",
        "DP.nii.gz",
        "PS.nii.gz",
        "PVP.nii.gz",
        "acquisition.json",
    ]
    for ph, i in (("PS", 0), ("DP", 3)):
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{ph}.nii.gz")))
        assert np.array_equal(arr[1], slice_pixels(1).astype(int) + i)
        _assert_deidentified(out / f"{ph}.nii.gz")
    acq = json.loads((out / "acquisition.json").read_text())
    assert list(acq) == ["PS", "AP", "PVP", "DP"]
    assert set(acq["AP"]) == set(dicom_slice.ACQUISITION_FIELDS) | {
        "n_slices",
        "slice_spacing_mm",
        "days_from_pre",
    }
    assert acq["AP"]["days_from_pre"] == 0  # same StudyDate as the pre DP: an offset, no date
    assert acq["AP"]["field_strength_t"] == 3.0
    assert acq["AP"]["pixel_spacing_mm"] == [0.5, 0.75]
    assert acq["AP"]["slice_spacing_mm"] == pytest.approx(2.0)
    text = (out / "acquisition.json").read_text() + caplog.text
    for value in [*SECRETS.values(), "PRIVATE-SECRET", "1.2.826.0.1.3680043"]:
        assert value not in text
    assert res["PVP"].n_slices == 4


def test_convert_timepoint_all_or_nothing(tmp_path):
    root = _cohort(tmp_path, broken="PVP")
    out = tmp_path / "nifti" / "P1" / "pre"
    with pytest.raises(
        RecurError, match=r"patient P1, pre/PVP, folder 'dicom/P1/pre/PVP': 1 missing slice"
    ):
        convert.convert_timepoint(
            root, "series.csv", "P1", "pre", out, settings=ConvertSettings.defaults()
        )
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(("stored", "signed"), [(16, 0), (12, 0), (12, 1), (16, 1), (10, 1)])
def test_native_pixels_equal_pydicom_pixel_array(tmp_path, stored, signed):
    """The fast path reads the same values, in the same dtype, as pydicom (unused high bits
    holding garbage: cleared, or sign-extended from bit ``stored - 1``)."""
    raw = np.random.default_rng(stored + signed).integers(0, 1 << 16, (6, 5), dtype=np.uint16)
    raw[0, :4] = [0x0FFF, 0xF800, 0x0800, 0x07FF]
    f = tmp_path / "a.dcm"
    extra = {"BitsStored": stored, "HighBit": stored - 1, "PixelRepresentation": signed}
    write_slice(f, raw, (0.0, 0.0, 0.0), extra=extra)
    ds = pydicom.dcmread(f, defer_size=dicom_series.DEFER_BYTES)
    fast = dicom_slice.native_pixels(ds)
    assert fast is not None
    ref = pydicom.dcmread(f).pixel_array
    assert fast.dtype == ref.dtype
    assert np.array_equal(fast, ref)
    if (stored, signed) == (12, 0):  # by hand: the low 12 bits
        assert fast[0, :4].tolist() == [0x0FFF, 0x0800, 0x0800, 0x07FF]
    if (stored, signed) == (12, 1):  # by hand: bit 11 is the sign
        assert fast[0, :4].tolist() == [-1, -2048, -2048, 2047]


def test_native_pixels_leave_compressed_data_to_pydicom(testdata):
    folder = testdata / "dicom2nifti/tests/data/generic/compressed_rle/001"
    ds = pydicom.dcmread(next(p for p in sorted(folder.iterdir()) if p.is_file()))
    assert dicom_slice.native_pixels(ds) is None
    assert READ(folder).n_slices > 1  # decoded by pydicom's RLE plugin


def test_reader_parses_a_folder_once_for_two_series(tmp_path):
    """A second series of the same folder reuses the parsed headers; a changed file is read
    afresh."""
    folder = tmp_path / "both"
    write_stack(folder, n=3, series_uid="1.2.3.4.1", seed=1)
    write_stack(folder, n=4, series_uid="1.2.3.4.2", seed=2, intercept=5, slope=1)
    reader = SeriesReader(ConvertSettings.defaults())
    first = reader(folder, series_uid="1.2.3.4.1")
    kept = [s.ds for s in reader._last[1]]  # alive, so that no new object can reuse their ids
    parsed = {id(ds) for ds in kept}
    second = reader(folder, series_uid="1.2.3.4.2")
    assert {id(s.ds) for s in reader._last[1]} == parsed  # not parsed again
    assert (first.n_slices, second.n_slices) == (3, 4)
    assert sitk.GetArrayFromImage(second.image)[0, 0, 0] == slice_pixels(0)[0, 0] + 5
    # a slice of series 2 rewritten (new pixels, new mtime): the folder is read again
    victim = next(
        p for p in folder.iterdir() if pydicom.dcmread(p).SeriesInstanceUID == "1.2.3.4.2"
    )
    ds = pydicom.dcmread(victim)
    before = victim.stat().st_mtime_ns
    ds.RescaleIntercept = "7"
    ds.save_as(victim)
    # an edit a second later: file times tick coarsely (ms), and the rewrite has the same
    # size, so within one tick the change would be invisible to (size, mtime)
    os.utime(victim, ns=(before + 10**9, before + 10**9))
    again = reader(folder, series_uid="1.2.3.4.2")
    assert {id(s.ds) for s in reader._last[1]}.isdisjoint(parsed)
    z = round(float(ds.ImagePositionPatient[2]) - 30.0) // 2  # slice index of the victim
    assert sitk.GetArrayFromImage(again.image)[z, 0, 0] == slice_pixels(z)[0, 0] + 7


def test_series_table_rows_as_the_contract_reads_them(tmp_path):
    """The pandas-free reader of the conversion job finds what recur.cohort.contract finds."""
    from recur.cohort import contract

    text = (
        "\ufeffpatient_id , timepoint,phase,dicom_dir,series_uid\n"
        'P1,pre,AP,"dicom/with, comma",  1.2.3 \n'
        "P1, pre,DP,dicom/P1 dp ,\n"
        "\n"
        "P2,post,AP,x/y\n"
        "P2,post,AP,x/z,\n"
    )
    (tmp_path / "series.csv").write_text(text, encoding="utf-8")
    rows = series_table.read_series_table(tmp_path, "series.csv")
    table = contract.read_table(tmp_path / "series.csv")
    table["series_uid"] = table["series_uid"].fillna("").astype(str).str.strip()
    for key in (("P1", "pre", "AP"), ("P1", "pre", "DP")):
        row = contract.series_row(table, *key)
        assert series_table.series_lookup(rows, *key) == (row["dicom_dir"], row["series_uid"])
    assert series_table.series_lookup(rows, "P1", "pre", "AP") == ("dicom/with, comma", "1.2.3")
    for key in (("P2", "post", "AP"), ("P3", "pre", "AP")):  # twice / missing: refused alike
        with pytest.raises(contract.ContractError) as ours:
            series_table.series_lookup(rows, *key)
        with pytest.raises(contract.ContractError) as theirs:
            contract.series_row(table, *key)
        assert str(ours.value) == str(theirs.value)
    (tmp_path / "bad.csv").write_text("patient_id,timepoint,phase\nP1,pre,AP\n")
    with pytest.raises(contract.ContractError, match="missing required column 'dicom_dir'"):
        series_table.read_series_table(tmp_path, "bad.csv")
    with pytest.raises(contract.ContractError, match="file not found"):
        series_table.read_series_table(tmp_path, "none.csv")


def _patient_cohort(tmp_path: Path, broken: str | None = None) -> Path:
    """Both time points of P1 (post 41 days after pre); ``broken`` = 'tp/phase' lacks a slice."""
    root = tmp_path / "cohort"
    rows = ["patient_id,timepoint,phase,dicom_dir"]
    for tp in ("pre", "post"):
        for i, ph in enumerate(("PS", "AP", "PVP", "DP")):
            rel = f"dicom/P1/{tp}/{ph}"
            kw = _phase_headers(i)
            if tp == "post":
                kw["extra"]["StudyDate"] = "20190516"
            if f"{tp}/{ph}" == broken:
                write_stack(root / rel, positions=[0, 2, 4, 8], seed=i, **kw)
            else:
                write_stack(root / rel, n=4, seed=i, slope=1, intercept=i, **kw)
            rows.append(f"P1,{tp},{ph},{rel}")
    (root / "series.csv").write_text("\n".join(rows) + "\n")
    return root


def test_convert_patient_writes_both_time_points_like_convert_timepoint(tmp_path):
    root = _patient_cohort(tmp_path)
    out = tmp_path / "nifti" / "P1"
    res = convert.convert_patient(
        root, "series.csv", "P1", out, settings=ConvertSettings.defaults()
    )
    assert list(res) == ["pre", "post"]
    for tp in ("pre", "post"):
        names = sorted(p.name for p in (out / tp).iterdir())
        assert names == ["AP.nii.gz", "DP.nii.gz", "PS.nii.gz", "PVP.nii.gz", "acquisition.json"]
        # the same bytes as one time point converted alone (same reader, same writer)
        alone = tmp_path / "alone" / tp
        convert.convert_timepoint(
            root, "series.csv", "P1", tp, alone, settings=ConvertSettings.defaults()
        )
        for f in (out / tp).iterdir():
            assert f.read_bytes() == (alone / f.name).read_bytes(), (tp, f.name)
    acq = json.loads((out / "post" / "acquisition.json").read_text())
    assert [acq[ph]["days_from_pre"] for ph in acq] == [41, 41, 41, 41]


def test_convert_patient_all_or_nothing_across_time_points(tmp_path):
    root = _patient_cohort(tmp_path, broken="post/PVP")
    out = tmp_path / "nifti" / "P1"
    with pytest.raises(
        RecurError, match=r"patient P1, post/PVP, folder 'dicom/P1/post/PVP': 1 missing slice"
    ):
        convert.convert_patient(root, "series.csv", "P1", out, settings=ConvertSettings.defaults())
    # the pre time point converted fine, but nothing (not even a temporary file) is left
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_cli_convert_patient_exclude_keeps_the_good_time_point(tmp_path):
    from recur.cohort import exclusions

    root = _patient_cohort(tmp_path, broken="pre/AP")
    out = tmp_path / "nifti" / "P1"
    argv = ["convert-patient", "--cohort-dir", str(root), "--patient", "P1", "--outdir", str(out)]
    assert (
        main([*argv, *settings_option("convert")]) == 2
    )  # stop (default): refused, nothing written
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
    assert (
        main([*argv, "--on-failure", "exclude", *settings_option("convert", compression_level=6)])
        == 0
    )
    pre = convert.timepoint_outputs(out / "pre")
    assert all(exclusions.is_placeholder(p) for p in pre)
    (record,) = exclusions.read_placeholder(pre[0])
    assert (record.patient_id, record.stage, record.timepoint) == ("P1", "convert", "pre")
    # the folder is named by its row of series.csv, never by its name (recorded under results/)
    assert record.reason.startswith("patient P1, pre/AP, folder '<series.csv row 3>'")
    post = convert.timepoint_outputs(out / "post")
    assert not any(exclusions.is_placeholder(p) for p in post)
    acq = json.loads((out / "post" / "acquisition.json").read_text())
    assert acq["DP"]["days_from_pre"] == 41  # the pre DP date, read from its folder
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        [p.name for p in pre] + [p.name for p in post]
    )


def test_cli_convert_and_refusal(tmp_path, capsys):
    write_stack(tmp_path / "ok", n=3)
    assert main(["convert", str(tmp_path / "ok"), str(tmp_path / "ok.nii.gz")]) == 0
    assert (tmp_path / "ok.nii.gz").is_file()
    write_stack(tmp_path / "bad", positions=[0, 2, 6])
    assert main(["convert", str(tmp_path / "bad"), str(tmp_path / "bad.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "missing slice" in err[0]
    assert not (tmp_path / "bad.nii.gz").exists()


def test_cli_convert_timepoint(tmp_path):
    root = _cohort(tmp_path)
    out = tmp_path / "o"
    argv = [
        "convert-timepoint",
        "--cohort-dir",
        str(root),
        "--series-table",
        "series.csv",
        "--patient",
        "P1",
        "--timepoint",
        "pre",
        "--outdir",
        str(out),
    ]
    assert main(argv) == 0
    assert (out / "acquisition.json").is_file()
    assert (out / "DP.nii.gz").is_file()


# --------------------------------------------------------------------------- real data
def _same_world_grid(ours: sitk.Image, ref: sitk.Image) -> None:
    """Voxels and world coordinates agree after both are put in one axis order (LPS).

    DICOMOrient permutes and flips axes only (no resampling), so equal grids give equal
    arrays. Tolerances: NIfTI stores the geometry as float32.
    """
    a, b = sitk.DICOMOrient(ours, "LPS"), sitk.DICOMOrient(ref, "LPS")
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == pytest.approx(b.GetSpacing(), abs=1e-5)
    assert a.GetDirection() == pytest.approx(b.GetDirection(), abs=1e-4)
    assert a.GetOrigin() == pytest.approx(b.GetOrigin(), abs=1e-4)
    far = [s - 1 for s in a.GetSize()]
    assert a.TransformIndexToPhysicalPoint(far) == pytest.approx(
        b.TransformIndexToPhysicalPoint(far), abs=1e-3
    )
    x = sitk.GetArrayFromImage(a).astype(np.float64)
    y = sitk.GetArrayFromImage(b).astype(np.float64)
    assert np.allclose(x, y, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("echo", [1, 2])
def test_dcm_qa_pdt2_echoes_match_dcm2niix(testdata, echo):
    folder = testdata / "dcm_qa_pdt2" / "In" / "Siemens" / "VE11"
    with pytest.raises(RecurError, match="several echoes"):
        READ(folder)
    res = READ(folder, echo=echo)
    assert res.n_slices == 35
    (ref,) = (testdata / "dcm_qa_pdt2" / "Ref").glob(f"*_e{echo}.nii")
    _same_world_grid(res.image, sitk.ReadImage(str(ref)))


D2N = "dicom2nifti/tests/data"
ANATOMICAL = [
    "ge/anatomical/001",
    "ge/anatomical/001_implicit",
    "ge/anatomical/001_single_slice",
    "siemens/anatomical/001",
    "siemens/anatomical/001_implicit",
    "hitachi/anatomical/001",
    "hitachi/anatomical/001_implicit",
    "generic/anatomical/001",
    "generic/anatomical/001_implicit",
    "generic/anatomical/002_non_isotropic",
    "generic/compressed_rle/001",
]


@pytest.mark.parametrize("case", ANATOMICAL)
def test_dicom2nifti_anatomical_match_ground_truth(testdata, case):
    folder = testdata / D2N / case
    res = SeriesReader(ConvertSettings.defaults(), allow_single_slice=True)(folder)
    ref = sitk.ReadImage(str(folder.parent / f"{folder.name}_ground_truth.nii.gz"))
    _same_world_grid(res.image, ref)


FAILING = {
    "gantrytilting/001": "gantry tilt",
    "notavolume/001": "several volumes at the same slice positions",
    "slicecount/001": "only 2 slices",
    "sliceincrement/001": "1 missing slice",
    "sliceincrement/002": "1 missing slice",
    "sliceorientation/001": "mixed slice orientations",
}


def test_every_failing_case_is_listed(testdata):
    have = sorted(
        str(p.relative_to(testdata / D2N / "failing"))
        for p in (testdata / D2N / "failing").glob("*/*")
        if p.is_dir()
    )
    assert have == sorted(FAILING)


@pytest.mark.parametrize("case", sorted(FAILING))
def test_dicom2nifti_failing_refused(testdata, case):
    context = f"folder 'failing/{case}'"
    with pytest.raises(RecurError) as exc:
        SeriesReader(ConvertSettings.defaults(), allow_single_slice=True)(
            testdata / D2N / "failing" / case, context=context
        )
    msg = str(exc.value)
    assert msg.startswith(context + ": ")
    assert FAILING[case] in msg
    assert "\n" not in msg


def test_hcc_ct_converts_like_simpleitk(testdata, tmp_path):
    folder = testdata / "hcc048-ct-portal-venous" / "sample_data" / "HCC048_portal_venous"
    res = READ(folder)
    img = res.image
    assert img.GetSize() == (512, 512, 24)  # the 24 contiguous slices kept in tests/data
    assert img.GetSpacing() == pytest.approx((0.703125, 0.703125, 2.5))
    assert res.n_files_skipped == 1  # the LICENSE file
    arr = sitk.GetArrayFromImage(img)
    assert arr.dtype == np.int16
    assert arr.min() >= -2048  # HU, with -2048 as padding outside the field of view
    assert arr.max() > 1000
    assert -100 < float(np.median(arr[12, 200:300, 200:300])) < 300  # soft tissue, mid slice
    assert res.acquisition["n_slices"] == 24
    # the same geometry and voxels as SimpleITK's own DICOM series reader (GDCM)
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    ref = sitk.ReadImage(names)
    assert ref.GetOrigin() == pytest.approx(img.GetOrigin(), abs=1e-4)
    assert ref.GetDirection() == pytest.approx(img.GetDirection(), abs=1e-6)
    assert ref.GetSpacing() == pytest.approx(img.GetSpacing(), abs=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(ref).astype(np.int32), arr.astype(np.int32))


@pytest.mark.slow
def test_convert_rule_on_a_tiny_directory_cohort(tmp_path, repo_root):
    """The snakemake rule `convert` on a 10-patient cohort of hand-made series (enough of
    each class for the tuning split and the cross-fitting folds, checked at validation)."""
    import os
    import subprocess
    import sys

    root = tmp_path / "cohort"
    series = ["patient_id,timepoint,phase,dicom_dir,series_uid"]
    seed = 0
    pids = [f"P{i}" for i in range(1, 11)]
    for pid in pids:
        for tp in ("pre", "post"):
            for i, ph in enumerate(("PS", "AP", "PVP", "DP")):
                seed += 1
                rel = f"dicom/{pid}/{tp}/{ph}"
                kw = _phase_headers(i)
                if tp == "post":
                    kw["extra"]["StudyDate"] = "20190516"
                write_stack(root / rel, n=3, seed=seed, slope=1, intercept=seed, **kw)
                series.append(f"{pid},{tp},{ph},{rel},")
            (root / "rois").mkdir(exist_ok=True)
            (root / "rois" / f"{pid}_{tp}.nii.gz").write_bytes(b"placeholder")
    (root / "series.csv").write_text("\n".join(series) + "\n")
    (root / "rois.csv").write_text(
        "patient_id,timepoint,mask\n"
        + "".join(f"{p},{t},rois/{p}_{t}.nii.gz\n" for p in pids for t in ("pre", "post"))
    )
    (root / "clinical.csv").write_text(
        "patient_id,site,cohort,er,rfs_months,rfs_event,tumor_size_cm,tumor_number,hbv,"
        "tp_g_l,afp_ng_ml\n"
        + "".join(
            f"{p},siteA,train,1,10,1,2.0,1,1,70,20\n"
            if i % 2 == 0
            else f"{p},siteA,train,0,40,0,1.5,1,0,65,5\n"
            for i, p in enumerate(pids)
        )
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(f"cohort:\n  source: directory\n  dir: {root}\n")
    targets = [f"results/nifti/P1/{tp}/acquisition.json" for tp in ("pre", "post")]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "-s",
            str(repo_root / "Snakefile"),
            "-d",
            str(work),
            "--configfile",
            str(work / "config.yaml"),
            "--cores",
            "2",
            *targets,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for tp in ("pre", "post"):
        out = work / "results" / "nifti" / "P1" / tp
        assert sorted(p.name for p in out.iterdir()) == [
            "AP.nii.gz",
            "DP.nii.gz",
            "PS.nii.gz",
            "PVP.nii.gz",
            "acquisition.json",
        ]
    # one job per patient: one log and one benchmark for both time points
    log = (work / "results" / "logs" / "convert" / "P1.log").read_text()
    assert log.count("3 slices") == 8
    assert "SECRETID987" not in log
    assert (work / "results" / "benchmarks" / "convert" / "P1.tsv").is_file()
    assert not (work / "results" / "nifti" / "P2").exists()
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "results/nifti/P1/post/AP.nii.gz")))
    assert np.array_equal(arr[0], slice_pixels(0).astype(int) + 6)  # post AP: seed 6
