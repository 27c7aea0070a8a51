"""Radiomics features: known geometry (sphere volume and surface, ring shells), a constant
region, and pyradiomics' own result on a real MR volume reproduced by the rule's command."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from recur.cli.main import main as cli_main
from recur.errors import RecurError
from recur.radiomics import features as F
from recur.radiomics.settings import FeatureSettings

from ..conftest import REPO

PARAMS = REPO / "radiomics_params.yaml"
MR = "totalsegmentator-mr/tests/reference_files"


def sphere(radius: float, spacing=(1.0, 1.0, 1.0), extent: float = 64.0) -> sitk.Image:
    """A binary ball of ``radius`` mm centred in a cube of ``extent`` mm (voxel centres
    inside the ball are 1)."""
    size = [int(np.ceil(extent / s)) for s in spacing]
    pairs = zip(size[::-1], spacing[::-1], strict=True)
    axes = [(np.arange(n) + 0.5) * s - extent / 2 for n, s in pairs]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    img = sitk.GetImageFromArray((x**2 + y**2 + z**2 <= radius**2).astype(np.uint8))
    img.SetSpacing(spacing)
    return img


def ball_volume(r: float) -> float:
    return 4.0 / 3.0 * np.pi * r**3


def test_sphere_volume_and_surface_match_the_formulas():
    """pyradiomics' MeshVolume and SurfaceArea of a voxelised ball of radius 12 mm (1 mm
    voxels) through the rule's extractor: volume within 2% of 4/3 pi r^3; the marching-cubes
    mesh of a voxel staircase overestimates the area (8% here), so within 10% of 4 pi r^2."""
    r = 12.0
    mask = sphere(r)
    image = sitk.Cast(mask, sitk.sitkFloat32) * 100.0 + 50.0
    ext = F.Extractor(F.read_params(PARAMS))
    f = ext.features(ext.normalise(image), mask, shape=True)
    assert f["original_shape_MeshVolume"] == pytest.approx(ball_volume(r), rel=0.02)
    assert f["original_shape_VoxelVolume"] == pytest.approx(ball_volume(r), rel=0.02)
    assert f["original_shape_SurfaceArea"] == pytest.approx(4 * np.pi * r**2, rel=0.10)
    assert f["original_shape_SurfaceArea"] > 4 * np.pi * r**2  # the staircase adds area
    assert f["original_shape_Sphericity"] == pytest.approx(1.0, abs=0.1)
    # without shape: the same call gives none of them
    assert not [k for k in ext.features(ext.normalise(image), mask, False) if "shape" in k]


def test_constant_region_has_its_value_as_mean_and_no_spread():
    params = copy.deepcopy(F.read_params(PARAMS))
    params["setting"]["normalize"] = False
    params["featureClass"] = {"firstorder": None}
    mask = sphere(8.0)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 30, sitk.GetArrayFromImage(mask).shape).astype(np.float32)
    arr = np.where(sitk.GetArrayFromImage(mask) > 0, 137.0, 400.0 + noise).astype(np.float32)
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(mask)
    ext = F.Extractor(params)
    f = ext.features(ext.normalise(image), mask, shape=False)
    assert f["original_firstorder_Mean"] == pytest.approx(137.0)
    assert f["original_firstorder_Median"] == pytest.approx(137.0)
    assert f["original_firstorder_Variance"] == pytest.approx(0.0, abs=1e-9)
    assert f["original_firstorder_Range"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5)])
def test_rings_are_shells_of_the_requested_thickness(spacing):
    """Rings (0, 5] and (5, 10] mm around a ball of radius 12 mm hold the volume of the
    spherical shells, the distance measured from the surface voxels' centres: each ring's
    volume lies between the shells displaced by half the largest voxel size inwards and
    outwards; the rings are disjoint, outside the ball and nested in order."""
    r = 12.0
    mask = sphere(r, spacing)
    rings = F.ring_masks(mask, [(0, 5), (5, 10)])
    voxel = float(np.prod(spacing))
    h = max(spacing) / 2
    inside = sitk.GetArrayFromImage(mask) > 0
    arrays = [sitk.GetArrayFromImage(m) > 0 for m in rings]
    for (a, b), arr in zip([(0, 5), (5, 10)], arrays, strict=True):
        vol = arr.sum() * voxel
        low = ball_volume(r + b - h) - ball_volume(r + a - h)
        high = ball_volume(r + b + h) - ball_volume(r + a + h)
        assert low <= vol <= high, (a, b, vol, low, high)
        assert not (arr & inside).any()
    assert not (arrays[0] & arrays[1]).any()
    # the signed distance is in mm: a voxel's distance grows with its radius
    d = sitk.GetArrayFromImage(F.distance_map(mask))
    assert d[inside].max() <= 0 < d[arrays[0]].min()
    assert d[arrays[0]].max() <= 5.0 < d[arrays[1]].min()


def test_rings_stay_inside_a_restricting_mask():
    mask = sphere(10.0)
    half = sitk.GetArrayFromImage(mask) * 0
    half[:, :, : half.shape[2] // 2] = 1
    within = sitk.GetImageFromArray(half.astype(np.uint8))
    within.CopyInformation(mask)
    (ring,) = F.ring_masks(mask, [(0, 5)], within=within)
    arr = sitk.GetArrayFromImage(ring)
    assert arr.sum() > 0
    assert not arr[:, :, half.shape[2] // 2 :].any()


def test_crop_box_holds_the_region_and_its_widest_ring():
    mask = sphere(6.0, (1.0, 1.0, 2.5))
    index, size = F.crop_box(mask, 10.0)
    (ring,) = F.ring_masks(mask, [(0, 10)])
    full = sitk.GetArrayFromImage(ring).sum()
    cropped = F.ring_masks(F.crop(mask, index, size), [(0, 10)])[0]
    assert sitk.GetArrayFromImage(cropped).sum() == full
    with pytest.raises(RecurError, match="empty"):
        F.crop_box(mask * 0, 5.0)


def test_too_small_region_gives_no_features():
    mask = sitk.Image(20, 20, 20, sitk.sitkUInt8)
    mask.SetPixel(10, 10, 10, 1)
    image = sitk.Cast(mask, sitk.sitkFloat32)
    ext = F.Extractor(F.read_params(PARAMS))
    assert ext.features(image, mask, shape=True) == {}


def test_bad_parameter_file_is_refused(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("setting: {binWidth: -3, noSuchSetting: 1}\n")
    with pytest.raises(RecurError, match="pyradiomics parameters refused"):
        F.Extractor(F.read_params(bad))


def _real_case(testdata, tmp_path):
    """The abdominal MR volume as the DP of both time points, its liver label as the ROI."""
    image = sitk.ReadImage(str(testdata / MR / "example_mr_sm.nii.gz"))
    labels = sitk.ReadImage(str(testdata / MR / "example_seg_roi_subset_mr.nii.gz"))
    liver = sitk.Cast(labels == 5, sitk.sitkUInt8)
    for tp in ("pre", "post"):
        (tmp_path / tp).mkdir()
        sitk.WriteImage(image, str(tmp_path / tp / "DP.nii.gz"))
        sitk.WriteImage(liver, str(tmp_path / f"{tp}_mask.nii.gz"))
    return image, liver


def test_rule_reproduces_pyradiomics_on_a_real_volume(testdata, tmp_path):
    """``radiomics-features`` (the rule's command: normalisation over the whole volume, the
    region's box, rings) against pyradiomics' ``RadiomicsFeatureExtractor`` given the whole
    volume, the same parameter file and the region (the liver of a real abdominal MR)."""
    from radiomics import featureextractor

    image, liver = _real_case(testdata, tmp_path)
    settings = FeatureSettings.defaults(phases=["DP"])
    out = tmp_path / "features.csv"
    rc = cli_main(
        [
            "radiomics-features",
            "--patient",
            "MR1",
            "--registered-pre",
            str(tmp_path / "pre"),
            "--registered-post",
            str(tmp_path / "post"),
            "--mask-pre",
            str(tmp_path / "pre_mask.nii.gz"),
            "--mask-post",
            str(tmp_path / "post_mask.nii.gz"),
            "--params",
            str(PARAMS),
            "--settings",
            json.dumps({k: list(v) for k, v in settings.__dict__.items()}),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    table = pd.read_csv(out).set_index("feature")["value"]
    direct = featureextractor.RadiomicsFeatureExtractor(str(PARAMS))
    ring = F.ring_masks(liver, [(0, 5)])[0]  # on the whole grid, not the box
    for region, mask in (("tumour", liver), ("ring0-5", ring)):
        ref = {
            k: float(v)
            for k, v in direct.execute(image, mask).items()
            if not k.startswith("diagnostics_")
        }
        assert len(ref) > 90
        got = {
            k.split("__", 1)[1]: v for k, v in table.items() if k.startswith(f"pre_DP_{region}__")
        }
        assert set(got) == set(ref), region
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-7, abs=1e-9), (region, k)
    # the post time point reads the same volume and region: the same values
    post = table[table.index.str.startswith("post_DP_zone__")]
    pre = table[table.index.str.startswith("pre_DP_tumour__")]
    np.testing.assert_allclose(post.to_numpy(), pre.to_numpy())
    assert list(table.index).count("pre_DP_tumour__original_shape_MeshVolume") == 1


def test_a_patients_features_depend_on_that_patient_only(testdata, tmp_path):
    """Leakage: the feature table of a patient is a function of its own images, masks and the
    settings: computed alone or after another patient's, it is the same (nothing is kept
    between patients; the normalisation is per volume)."""
    image, liver = _real_case(testdata, tmp_path)
    settings = FeatureSettings.defaults(phases=["DP"], tumour_rings_mm=[[0, 5]])
    params = F.read_params(PARAMS)
    imgs = {"pre": {"DP": image}, "post": {"DP": image}}
    masks = {"pre": liver, "post": liver}
    alone = F.patient_features(imgs, masks, settings, params)
    other = sitk.Cast(image, sitk.sitkFloat32) * 3.0 + 1000.0
    F.patient_features({"pre": {"DP": other}, "post": {"DP": other}}, masks, settings, params)
    again = F.patient_features(imgs, masks, settings, params)
    pd.testing.assert_frame_equal(alone, again)


def test_pre_only_features_are_the_pre_rows_and_a_missing_mask_is_refused(testdata, tmp_path):
    """`recur predict` on a patient without a post-ablation series: the pre time point alone
    gives exactly the pre-ablation rows of the two-time-point table (Radiomics_Pre reads
    only those); a time point without its mask, or no pre time point, is refused naming the
    patient, and no table is written."""
    _real_case(testdata, tmp_path)
    settings = FeatureSettings.defaults(phases=["DP"], tumour_rings_mm=[[0, 5]])
    both, _ = F.features_files(
        {"pre": tmp_path / "pre", "post": tmp_path / "post"},
        {"pre": tmp_path / "pre_mask.nii.gz", "post": tmp_path / "post_mask.nii.gz"},
        PARAMS,
        tmp_path / "both.csv",
        settings,
        patient="MR1",
    )
    pre, _ = F.features_files(
        {"pre": tmp_path / "pre"},
        {"pre": tmp_path / "pre_mask.nii.gz"},
        PARAMS,
        tmp_path / "pre.csv",
        settings,
        patient="MR1",
    )
    assert len(pre) > 90
    assert pre["feature"].str.startswith("pre_").all()
    want = both[both["feature"].str.startswith("pre_")].reset_index(drop=True)
    pd.testing.assert_frame_equal(pre, want)
    for registered, masks in (
        (
            {"pre": tmp_path / "pre", "post": tmp_path / "post"},
            {"pre": tmp_path / "pre_mask.nii.gz"},
        ),
        ({"post": tmp_path / "post"}, {"post": tmp_path / "post_mask.nii.gz"}),
    ):
        with pytest.raises(RecurError, match=r"^MR1: radiomics needs the pre time point"):
            F.features_files(registered, masks, PARAMS, tmp_path / "bad.csv", settings, "MR1")
    assert not (tmp_path / "bad.csv").exists()
