"""Three-slice crops: slice choice, centring, edge padding, normalisation, files and QC."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from recur.cli import main as cli
from recur.constants import PHASES
from recur.errors import RecurError
from recur.preprocess.crop_files import crop_patient_files
from recur.preprocess.crop_qc import crop_qc_table
from recur.preprocess.crops import (
    CropSettings,
    Normalise,
    bbox_centre,
    carry_window,
    crop_2d,
    crop_arrays,
    crop_carried,
    crop_stack,
    crop_timepoint,
    in_plane_grid,
    largest_slice,
    neighbour_slices,
    window_origins,
)
from recur.settings import section_defaults, section_json

TS = "totalsegmentator-mr/tests/reference_files"


def native(**overrides) -> CropSettings:
    """Crop settings on each series' native pixel grid, each time point cropped in its own
    frame (what most of these tests look at), with ``overrides``."""
    return CropSettings.defaults(**{"spacing_mm": None, "post_frame": "own", **overrides})


# --------------------------------------------------------------------------- pure functions
def test_largest_slice_by_hand():
    m = np.zeros((5, 4, 4), np.uint8)
    m[1, 0, :3] = 1  # 3 px
    m[2, :, :] = 0
    m[2, 1:3, 1:3] = 7  # 4 px, label 7 counts as ROI
    m[2, 0, 0] = 1  # 5 px
    m[3, 3, :] = 1
    m[3, 2, 0] = 1  # 5 px: tie with slice 2 -> lowest index
    m[4, 0, 0] = 1
    assert largest_slice(m) == 2
    m[3, 2, 1] = 1  # now 6 px
    assert largest_slice(m) == 3
    with pytest.raises(ValueError, match="empty"):
        largest_slice(np.zeros((2, 3, 3)))


def test_neighbour_slices_repeat_edges():
    assert neighbour_slices(2, 5) == (1, 2, 3)
    assert neighbour_slices(0, 5) == (0, 0, 1)
    assert neighbour_slices(4, 5) == (3, 4, 4)
    assert neighbour_slices(0, 1) == (0, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        neighbour_slices(5, 5)


def test_bbox_centre_by_hand():
    m = np.zeros((40, 40), bool)
    m[10:20, 3:5] = True  # rows 10..19, cols 3..4
    assert bbox_centre(m) == (15, 4)
    # rows 10..19 -> a 20-px window [5, 25) leaves 5 rows before and 5 after the box
    m = np.zeros((40, 40), bool)
    m[10:13, 7] = True  # rows 10..12 (odd extent): (10 + 12 + 1) // 2 = 11
    assert bbox_centre(m) == (11, 7)


def test_crop_2d_pads_at_edges_by_hand():
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    out = crop_2d(img, (1, 1), 4, fill=-1.0)  # rows/cols -1..2
    expected = np.full((4, 4), -1.0, np.float32)
    expected[1:, 1:] = img[0:3, 0:3]
    np.testing.assert_array_equal(out, expected)
    out = crop_2d(img, (5, 3), 4, fill=-1.0)  # rows 3..6 (6 outside), cols 1..4
    expected = np.full((4, 4), -1.0, np.float32)
    expected[:3, :] = img[3:6, 1:5]
    np.testing.assert_array_equal(out, expected)
    # a window larger than the image holds the whole image, centred
    out = crop_2d(img, (3, 3), 10)
    np.testing.assert_array_equal(out[2:8, 2:8], img)
    assert np.isnan(out[:2]).all()
    assert np.isnan(out[8:]).all()


def test_crop_stack_shape_and_slices():
    vol = np.stack([np.full((5, 5), k, np.float32) for k in range(4)])
    st = crop_stack(vol, (0, 0, 1), (2, 2), 3)
    assert st.shape == (3, 3, 3)
    assert [float(s[1, 1]) for s in st] == [0.0, 0.0, 1.0]


def test_normalise_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out, bg = Normalise("robust_zscore")(x)
    # median 3, IQR 4 - 2 = 2 -> sd 2 / 1.349
    np.testing.assert_allclose(out, (x - 3) * 1.349 / 2, rtol=1e-6)
    assert bg == pytest.approx(-2 * 1.349 / 2)
    out, bg = Normalise("zscore")(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(out, np.array([-1.0, 0.0, 1.0]) / math.sqrt(2 / 3), rtol=1e-6)
    out, bg = Normalise("minmax")(np.arange(101.0))  # p0.5 = 0.5, p99.5 = 99.5
    assert out[50] == pytest.approx(49.5 / 99.0)
    assert out[0] == 0.0
    assert out[100] == 1.0
    assert bg == 0.0
    out, bg = Normalise("none")(x)
    np.testing.assert_array_equal(out, x.astype(np.float32))
    assert bg == 1.0
    out, bg = Normalise("robust_zscore")(np.full(4, 7.0))  # constant: shifted, not divided by 0
    np.testing.assert_array_equal(out, np.zeros(4))
    # statistics come from the reference, NaN (padding) ignored
    out, _ = Normalise("zscore")(np.array([np.nan, 2.0]), np.array([1.0, np.nan, 3.0]))
    assert np.isnan(out[0])
    assert out[1] == pytest.approx(0.0)
    with pytest.raises(RecurError, match="normalisation"):
        Normalise("histogram")


def test_crop_arrays_roi_at_corner_is_padded_and_centred():
    rng = np.random.default_rng(0)
    shape = (6, 40, 50)
    phases = [rng.normal(100 * (i + 1), 10, shape).astype(np.float32) for i in range(4)]
    mask = np.zeros(shape, np.uint8)
    mask[5, 0:4, 46:50] = 1  # last slice, top-right corner: 16 px
    mask[4, 0:2, 48:50] = 1
    res = crop_arrays(phases, mask, (0.8, 0.8, 3.0), native(size=16, normalisation="zscore"))
    assert res.slices == (4, 5, 5)
    assert res.centre == (2, 48)  # rows 0..3 -> (0+3+1)//2, cols 46..49 -> (46+49+1)//2
    assert res.crops.shape == (4, 3, 16, 16)
    assert res.masks.shape == (3, 16, 16)
    # window rows 2-8 .. 2+7 = -6..9, cols 40..55: 6 padded rows on top (rows -6..-1) and
    # 6 padded columns on the right (cols 50..55)
    m = res.masks[1]
    assert m.sum() == 16
    np.testing.assert_array_equal(np.argwhere(m).min(axis=0), [6, 6])
    np.testing.assert_array_equal(np.argwhere(m).max(axis=0), [9, 9])
    for i in range(4):
        c = res.crops[i, 1]
        inside = c[6:, :10]
        raw = phases[i][5, 0:10, 40:50]
        ref = phases[i][[4, 5, 5]][:, 0:10, 40:50]
        np.testing.assert_allclose(inside, (raw - ref.mean()) / ref.std(), rtol=1e-4, atol=1e-5)
        bg = (ref.min() - ref.mean()) / ref.std()
        np.testing.assert_allclose(c[:6, :], bg, rtol=1e-5)
        np.testing.assert_allclose(c[:, 10:], bg, rtol=1e-5)
    assert res.roi_area_px == 16
    assert res.roi_area_mm2 == pytest.approx(16 * 0.64)


def test_crop_settings_refused():
    with pytest.raises(RecurError, match="size"):
        CropSettings.defaults(size=4)
    with pytest.raises(RecurError, match="region"):
        CropSettings.defaults(region="cohort")


# --------------------------------------------------------------------------- SimpleITK steps
def volume_with_roi(direction=None) -> tuple[dict[str, sitk.Image], sitk.Image]:
    arr = np.arange(5 * 30 * 40, dtype=np.float32).reshape(5, 30, 40)
    m = np.zeros(arr.shape, np.uint8)
    m[2, 10:14, 5:9] = 1
    imgs = {}
    for i, ph in enumerate(PHASES):
        im = sitk.GetImageFromArray(arr + i)
        im.SetSpacing((1.0, 1.0, 2.5))
        if direction is not None:
            im.SetDirection(direction)
        imgs[ph] = im
    mk = sitk.GetImageFromArray(m)
    mk.CopyInformation(imgs["DP"])
    return imgs, mk


def test_crop_timepoint_reorients_to_lps():
    imgs, mk = volume_with_roi()
    ref = crop_timepoint(imgs, mk, native(size=8, normalisation="none"))
    # the same anatomy stored with the x axis running right-to-left -> flipped array
    flip = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    f_imgs = {}
    for ph, im in imgs.items():
        a = sitk.GetArrayFromImage(im)[:, :, ::-1].copy()
        f = sitk.GetImageFromArray(a)
        f.SetSpacing(im.GetSpacing())
        f.SetDirection(flip)
        f.SetOrigin(im.TransformIndexToPhysicalPoint((im.GetSize()[0] - 1, 0, 0)))
        f_imgs[ph] = f
    fm = sitk.GetImageFromArray(sitk.GetArrayFromImage(mk)[:, :, ::-1].copy())
    fm.CopyInformation(f_imgs["DP"])
    got = crop_timepoint(f_imgs, fm, native(size=8, normalisation="none"))
    np.testing.assert_array_equal(got.crops, ref.crops)
    np.testing.assert_array_equal(got.masks, ref.masks)
    assert got.centre == ref.centre == (12, 7)


def test_crop_timepoint_resamples_in_plane():
    imgs, mk = volume_with_roi()
    res = crop_timepoint(imgs, mk, native(size=8, spacing_mm=2.0, normalisation="none"))
    assert res.spacing == (2.0, 2.0, 2.5)
    assert res.roi_area_px == 4  # a 4x4 px ROI at 1 mm is 2x2 px at 2 mm
    assert res.roi_area_mm2 == pytest.approx(16.0)


def test_real_mr_smaller_than_crop_is_padded(testdata: Path):
    d = testdata / TS
    mr = sitk.ReadImage(str(d / "example_mr_sm.nii.gz"))  # 117 x 91 x 20
    lab = sitk.ReadImage(str(d / "example_seg_roi_subset_mr.nii.gz"))
    liver = sitk.Cast(lab == 5, sitk.sitkUInt8)
    res = crop_timepoint({ph: mr for ph in PHASES}, liver, native())
    a = sitk.GetArrayFromImage(sitk.DICOMOrient(liver, "LPS"))
    area = a.reshape(a.shape[0], -1).sum(axis=1)
    k = int(np.argmax(area))
    assert res.slices[1] == k
    assert res.roi_area_px == area[k]
    assert res.masks[1].sum() == area[k]  # the whole liver slice is inside the crop
    assert res.crops.shape == (4, 3, 128, 128)
    bg = res.crops[0, 1, 0, 0]  # corner: padding (the volume is < 128 px in-plane)
    n_bg = int(np.isclose(res.crops[0, 1], bg).sum())
    assert n_bg >= 128 * 128 - 117 * 91
    assert np.isfinite(res.crops).all()


# --------------------------------------------------------------------------- post on pre grid
def test_window_origins_by_hand():
    # window of size 4 at (row 10, col 8): first pixel at index (col 6, row 8, slice k)
    got = window_origins(
        (10.0, 20.0, 30.0), (2.0, 3.0, 4.0), np.eye(3).ravel(), (4, 5, 6), (10, 8), 4
    )
    np.testing.assert_allclose(got, [[22.0, 44.0, 46.0], [22.0, 44.0, 50.0], [22.0, 44.0, 54.0]])
    flip_x = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    got = window_origins((10.0, 20.0, 30.0), (2.0, 3.0, 4.0), flip_x, (0,), (10, 8), 4)
    np.testing.assert_allclose(got, [[10.0 - 12.0, 44.0, 30.0]])


def test_carry_window_identity_is_crop_stack():
    imgs, _ = volume_with_roi()
    dp = imgs["DP"]
    arr = sitk.GetArrayFromImage(dp)
    slices, centre = (1, 2, 3), (3, 37)  # the window leaves the volume at the top right
    got = carry_window(dp, in_plane_grid(dp, None), slices, centre, 8, sitk.Transform())
    want = crop_stack(arr, slices, centre, 8)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want).any()
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-3)


def shifted_pair(tx: int, ty: int, zone_offset: tuple[int, int]):
    """A pre volume with a tumour disk and the same anatomy moved by (tx, ty) mm on the post
    grid, with an ablation zone disk offset by ``zone_offset`` (rows, cols) from the tumour."""
    rng = np.random.default_rng(3)
    a = rng.normal(100.0, 10.0, (5, 60, 60)).astype(np.float32)
    zz, yy, xx = np.mgrid[0:5, 0:60, 0:60]
    tumour = ((yy - 30) ** 2 + (xx - 28) ** 2 <= 36) & (zz >= 1) & (zz <= 3)
    a[tumour] += 200.0
    b = np.full_like(a, np.nan)
    b[:, ty:, tx:] = a[:, : 60 - ty, : 60 - tx]
    b = np.nan_to_num(b, nan=100.0)
    dy, dx = zone_offset
    zone = ((yy - 30 - ty - dy) ** 2 + (xx - 28 - tx - dx) ** 2 <= 81) & (zz >= 1) & (zz <= 3)

    def image(x: np.ndarray) -> sitk.Image:
        im = sitk.GetImageFromArray(x)
        im.SetSpacing((1.0, 1.0, 2.0))
        return im

    pre = {ph: image(a) for ph in PHASES}
    post = {ph: image(b) for ph in PHASES}
    return pre, image(tumour.astype(np.uint8)), post, image(zone.astype(np.uint8))


def test_crop_carried_undoes_a_known_shift_and_keeps_the_zone_offset():
    tx, ty, offset = 5, 3, (2, -4)
    pre, tumour, post, zone = shifted_pair(tx, ty, offset)
    s = native(size=32, normalisation="none", post_frame="pre")
    anchor = crop_timepoint(pre, tumour, s)
    # the transform maps pre points to post points: the anatomy moved by (+tx, +ty) mm
    moved = sitk.TranslationTransform(3, (float(tx), float(ty), 0.0))
    got = crop_carried(post, zone, pre["DP"], anchor, moved, s)
    assert got.slices == anchor.slices
    assert got.centre == anchor.centre
    np.testing.assert_allclose(got.crops, anchor.crops, rtol=0, atol=1e-3)
    # the zone keeps its offset from the tumour (the own-frame crop would centre it)
    rows, cols = np.nonzero(got.masks[1])
    t_rows, t_cols = np.nonzero(anchor.masks[1])
    assert rows.mean() - t_rows.mean() == pytest.approx(offset[0])
    assert cols.mean() - t_cols.mean() == pytest.approx(offset[1])
    own = crop_timepoint(post, zone, s)
    r2, c2 = np.nonzero(own.masks[1])
    assert abs(r2.mean() - 15.5) <= 0.5
    assert abs(c2.mean() - 15.5) <= 0.5
    assert got.roi_area_px == int(got.masks[1].sum())


def test_crop_patient_files_post_frame_pre_needs_the_transform(tmp_path: Path):
    reg = tmp_path / "registered" / "P007"
    pre, post = write_registered(reg / "pre", 2, 0), write_registered(reg / "post", 5, 1)
    masks = {"pre": pre / "mask.nii.gz", "post": post / "mask.nii.gz"}
    out = tmp_path / "P007.npz"
    s = native(size=16, post_frame="pre")
    with pytest.raises(RecurError, match=r"P007.*post-to-pre transform"):
        crop_patient_files("P007", {"pre": pre, "post": post}, masks, out, None, s)
    assert not out.exists()
    broken = tmp_path / "broken.tfm"
    broken.write_text("not a transform\n", encoding="utf-8")
    with pytest.raises(
        RecurError, match=r"patient P007: cannot read the post-to-pre transform broken\.tfm"
    ):
        crop_patient_files("P007", {"pre": pre, "post": post}, masks, out, None, s, broken)
    assert not out.exists()
    tfm = tmp_path / "post_to_pre.tfm"
    sitk.WriteTransform(sitk.Euler3DTransform(), str(tfm))
    res = crop_patient_files("P007", {"pre": pre, "post": post}, masks, out, None, s, tfm)
    # identity: the post crop is cut at the pre crop's slices and centre
    assert res["post"].slices == res["pre"].slices
    assert res["post"].centre == res["pre"].centre
    with np.load(out, allow_pickle=False) as z:
        assert str(z["post_frame"]) == "pre"


# --------------------------------------------------------------------------- files and QC
def write_registered(folder: Path, roi_slice: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for ph in PHASES:
        im = sitk.GetImageFromArray(rng.normal(100, 20, (6, 40, 44)).astype(np.float32))
        im.SetSpacing((0.9, 0.9, 3.0))
        sitk.WriteImage(im, str(folder / f"{ph}.nii.gz"))
    m = np.zeros((6, 40, 44), np.uint8)
    m[roi_slice, 15:25, 10:20] = 1
    mk = sitk.GetImageFromArray(m)
    mk.SetSpacing((0.9, 0.9, 3.0))
    sitk.WriteImage(mk, str(folder / "mask.nii.gz"))
    pd.DataFrame(
        {
            "phase": ["PS", "AP", "PVP"],
            "mi_before": [-0.5] * 3,
            "mi_after": [-0.7] * 3,
            "ncc_before": [0.8, 0.8, 0.8],
            "ncc_after": [0.9, 0.7, 0.9],
            "translation_mm": [1.0, 2.0, 12.0],
            "iterations": [30, 40, 50],
        }
    ).to_csv(folder / "qc.csv", index=False)
    return folder


def test_crop_cli_writes_npz_png_and_qc_table(tmp_path: Path):
    reg = tmp_path / "registered" / "P007"
    pre, post = write_registered(reg / "pre", 2, 0), write_registered(reg / "post", 5, 1)
    out, png = tmp_path / "crops" / "P007.npz", tmp_path / "qc" / "P007.png"
    argv = [
        "crop",
        "--patient",
        "P007",
        "--registered-pre",
        str(pre),
        "--registered-post",
        str(post),
        "--mask-pre",
        str(pre / "mask.nii.gz"),
        "--mask-post",
        str(post / "mask.nii.gz"),
        "--out",
        str(out),
        "--qc",
        str(png),
        "--settings",
        section_json(section_defaults("crop", size=32, spacing_mm=None, post_frame="own")),
    ]
    assert cli.main(argv) == 0
    with np.load(out, allow_pickle=False) as z:
        assert z["crops"].shape == (2, 4, 3, 32, 32)
        assert z["crops"].dtype == np.float32
        assert z["masks"].shape == (2, 3, 32, 32)
        assert z["masks"].dtype == np.uint8
        np.testing.assert_array_equal(z["slices"], [[1, 2, 3], [4, 5, 5]])
        np.testing.assert_array_equal(z["centre"], [[20, 15], [20, 15]])
        assert list(z["phases"]) == list(PHASES)
        assert z["masks"][1, 2].sum() == 100  # repeated edge slice
        assert z["masks"][0, 0].sum() == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"tEXt" not in data
    assert b"matplotlib" not in data

    table_path = tmp_path / "qc" / "crops.csv"
    assert (
        cli.main(
            [
                "crop-qc",
                "--crops",
                str(out),
                "--registration-qc",
                str(pre / "qc.csv"),
                str(post / "qc.csv"),
                "--out",
                str(table_path),
            ]
        )
        == 0
    )
    t = pd.read_csv(table_path, keep_default_na=False)
    assert list(t["patient_id"]) == ["P007", "P007"]
    assert list(t["timepoint"]) == ["pre", "post"]
    assert list(t["slice_largest"]) == [2, 5]
    assert list(t["roi_area_px"]) == [100, 100]
    assert t["roi_area_mm2"].iloc[0] == pytest.approx(81.0)
    assert t["AP_ncc_after"].iloc[0] == pytest.approx(0.7)
    assert "AP correlation dropped" in t["flags"].iloc[0]
    assert "PVP moved > 10 mm" in t["flags"].iloc[0]


def test_crop_refuses_empty_mask_and_writes_nothing(tmp_path: Path, capsys):
    reg = tmp_path / "registered" / "P008"
    pre, post = write_registered(reg / "pre", 2, 0), write_registered(reg / "post", 3, 1)
    empty = sitk.ReadImage(str(post / "mask.nii.gz")) * 0
    sitk.WriteImage(empty, str(post / "mask.nii.gz"))
    out, png = tmp_path / "crops" / "P008.npz", tmp_path / "qc" / "P008.png"
    with pytest.raises(RecurError, match=r"patient P008 \(post\).*empty"):
        crop_patient_files(
            "P008",
            {"pre": pre, "post": post},
            {"pre": pre / "mask.nii.gz", "post": post / "mask.nii.gz"},
            out,
            png,
            native(),
        )
    assert not out.exists()
    assert not png.exists()


def test_crop_qc_table_without_registration():
    assert crop_qc_table([]).empty


# --------------------------------------------------------------------------- rules
@pytest.mark.slow
def test_rules_check_mask_register_crop_and_param_change(tmp_path: Path):
    """register (mask check + registration) -> crop on a tiny directory cohort with NIfTIs
    already converted; then changing crop.size reruns only the crop (dry run), registration
    settings more."""
    import os
    import subprocess
    import sys

    from ..cohort.test_contract import write_cohort_tables
    from ..conftest import REPO as repo
    from .test_register import known_motion, moved, phantom

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    patients = write_cohort_tables(cohort, n_train=18, n_test=2)
    work = tmp_path / "work"
    dp = sitk.Cast(phantom(size=(48, 40, 12), spacing=(2.0, 2.0, 4.0)), sitk.sitkInt16)
    for t in ("pre", "post"):
        m = sitk.Cast(dp > 450, sitk.sitkUInt8)
        sitk.WriteImage(m, str(cohort / "rois" / f"P001_{t}.nii.gz"))
        folder = work / "results" / "nifti" / "P001" / t
        folder.mkdir(parents=True)
        sitk.WriteImage(dp, str(folder / "DP.nii.gz"))
        for i, ph in enumerate(("PS", "AP", "PVP")):
            mv = moved(dp, known_motion(dp, (0.0, 0.0, 1.0), (1.0 + i, -1.0, 2.0)))
            sitk.WriteImage(sitk.Cast(mv, sitk.sitkInt16), str(folder / f"{ph}.nii.gz"))
    assert patients[0] == "P001"
    base = cohort / "base.yaml"
    base.write_text(f"cohort: {{source: directory, dir: '{cohort}'}}\n", encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(repo / "Snakefile"),
        "-d",
        str(work),
        "--configfile",
        str(base),
        "--allowed-rules",
        "register",
        "margin_register",
        "crop",
        "--cores",
        "2",
        "results/crops/P001.npz",
    ]

    # jobs call `python -m recur`: the interpreter running the tests must come first on PATH
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cmd, *extra], capture_output=True, text=True, timeout=240, check=False, env=env
        )

    res = run()
    assert res.returncode == 0, res.stderr[-3000:]
    with np.load(work / "results" / "crops" / "P001.npz", allow_pickle=False) as z:
        assert z["crops"].shape == (2, 4, 3, 128, 128)
    assert (work / "results" / "qc" / "crops" / "P001.png").is_file()
    qc = pd.read_csv(work / "results" / "registered" / "P001" / "pre" / "qc.csv")
    assert (qc["ncc_after"] > qc["ncc_before"]).all()

    def planned(extra_yaml: str) -> dict[str, int]:
        cfg = tmp_path / "extra.yaml"
        cfg.write_text(extra_yaml, encoding="utf-8")
        out = run("-n", "--configfile", str(base), str(cfg)).stdout
        block = out.split("Job stats:", 1)[1] if "Job stats:" in out else ""
        counts = {}
        for line in block.splitlines():
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
        return counts

    assert planned("crop: {size: 128}\n") == {}
    assert planned("crop: {size: 64}\n") == {"crop": 1}
    # the re-checked masks also rerun the post-to-pre registration the crop uses
    assert planned("registration: {transform: affine}\n") == {
        "register": 1,  # one job per patient (both time points)
        "margin_register": 1,
        "crop": 1,
    }
    assert planned("crop: {post_frame: own}\n") == {"crop": 1}
    # a rule passes only the keys its command reads: the registration's threads and the
    # margin section's metric, model and target keys rerun none of these jobs
    assert planned("registration: {threads: 2}\n") == {}
    assert planned("margin: {mode: 2d, features: [pct_ge5], figure_patients: 1}\n") == {}
    assert planned("margin: {seed: 7}\n") == {"margin_register": 1, "crop": 1}
