"""Ablative margin: signed distances, surface margins on hand-built masks, registration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from recur.cli.main import main as cli_main
from recur.errors import RecurError
from recur.figstyle import OKABE_ITO
from recur.margin import plots
from recur.margin.files import load_surface, register_files
from recur.margin.masks import region_mask, roi_slices, signed_distance, zone_on_pre
from recur.margin.metrics import (
    TABLE_COLUMNS,
    MarginMetrics,
    SurfaceMargins,
    margin_table,
    surface_faces,
)
from recur.margin.models import fit_margin_model, model_data
from recur.margin.registration import CrossTimeRegistration
from recur.margin.settings import CrossTimeSettings, MarginMetricSettings
from recur.settings import section_defaults, section_json


# --------------------------------------------------------------------------- helpers
def ball(
    size_xyz: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre: tuple[float, float, float],
    radius: float,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    radii: tuple[float, float, float] | None = None,
) -> sitk.Image:
    """uint8 mask of a ball (or axis-aligned ellipsoid) sampled at voxel centres (mm)."""
    ax = [origin[i] + np.arange(size_xyz[i]) * spacing[i] for i in range(3)]
    z, y, x = np.meshgrid(ax[2], ax[1], ax[0], indexing="ij")
    a, b, c = radii or (radius, radius, radius)
    inside = ((x - centre[0]) / a) ** 2 + ((y - centre[1]) / b) ** 2 + (
        (z - centre[2]) / c
    ) ** 2 <= 1.0
    img = sitk.GetImageFromArray(inside.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


C = (24.3, 23.8, 24.1)  # off-grid centre (mm)


def margin_metrics(**overrides) -> MarginMetrics:
    """The metrics with the schema's settings and ``overrides``."""
    return MarginMetrics(MarginMetricSettings.defaults(**overrides))


def metrics(t: sitk.Image, z: sitk.Image, **kw) -> dict:
    return margin_metrics(**kw)(t, z).summary()


# --------------------------------------------------------------------------- pure pieces
def test_surface_faces_area_of_a_box_and_face_values():
    # 2x2x2 voxels, spacing (z, y, x) = (1, 2, 3) mm: a 2 x 4 x 6 mm box, area 2(8+12+24)=88
    t = np.zeros((4, 4, 4), bool)
    t[1:3, 1:3, 1:3] = True
    field = np.zeros((4, 4, 4))
    field[1:3, 1:3, 1:3] = 2.0  # inside 2, outside 0 -> every face value is (2 + 0) / 2 = 1
    vals, w = surface_faces(t, field, (1.0, 2.0, 3.0))
    assert w.sum() == pytest.approx(88.0)
    assert len(vals) == 24  # 6 sides x 4 faces
    assert np.allclose(vals, 1.0)
    # faces normal to axis 0 have area 2*3 = 6 mm², axis 1: 1*3 = 3, axis 2: 1*2 = 2
    assert sorted(set(w.tolist())) == [2.0, 3.0, 6.0]


def test_signed_distance_of_a_slab_is_exact_at_voxel_centres():
    # zone = slices 4..13 of 14 (2.5 mm slices), 41 x 41 in-plane: the face plane between
    # slices 3 and 4 lies at index 3.5; beyond the array counts as outside the zone
    zone = np.zeros((14, 41, 41), bool)
    zone[4:] = True
    sdm = signed_distance(zone, (2.5, 1.0, 1.0))
    k = np.arange(9)
    assert np.allclose(sdm[:9, 20, 20], (k - 3.5) * 2.5)  # inside positive, 0 on the face
    assert sdm[13, 20, 20] == pytest.approx(1.25)  # half a slice inside the last slice


def test_signed_distance_of_a_zone_touching_the_array_border():
    zone = np.ones((3, 6, 6), bool)
    zone[:, :, 3:] = False
    sdm = signed_distance(zone, (1.0, 1.0, 1.0))
    # x = 0 touches the array border (outside beyond it): 0.5 mm from that boundary too
    assert np.allclose(sdm[1, 3, :], [0.5, 1.5, 0.5, -0.5, -1.5, -2.5])


def test_summary_weights_and_percentages():
    sm = SurfaceMargins(
        np.array([-1.0, 2.0, 4.99, 5.0, 8.0]), np.array([1.0, 1.0, 2.0, 3.0, 3.0]), "3d"
    )
    s = sm.summary()
    assert s["min_margin_mm"] == -1.0
    assert s["pct_lt0"] == pytest.approx(10.0)
    assert s["pct_lt5"] == pytest.approx(40.0)  # includes the < 0 part
    assert s["pct_ge5"] == pytest.approx(60.0)
    assert s["mode"] == "3d"


# --------------------------------------------------------------------------- 3-D margins
def test_concentric_spheres_min_margin_and_all_surface_adequate():
    t = ball((48, 48, 48), (1.0, 1.0, 1.0), C, 8.0)
    z = ball((48, 48, 48), (1.0, 1.0, 1.0), C, 14.0)
    s = metrics(t, z)
    assert s["mode"] == "3d"
    assert s["min_margin_mm"] == pytest.approx(6.0, abs=1.0)
    assert s["median_margin_mm"] == pytest.approx(6.0, abs=0.5)
    assert s["pct_ge5"] == pytest.approx(100.0)
    assert s["pct_lt0"] == 0.0


def test_native_grid_concentric_within_one_voxel():
    t = ball((48, 48, 48), (1.0, 1.0, 1.0), C, 8.0)
    z = ball((48, 48, 48), (1.0, 1.0, 1.0), C, 14.0)
    s = metrics(t, z, iso_spacing_mm=None)
    # the minimum over a voxel staircase runs up to about one voxel low (docs/methods/margin.md)
    assert s["min_margin_mm"] == pytest.approx(6.0, abs=1.2)
    assert s["median_margin_mm"] == pytest.approx(6.0, abs=1.0)


def test_shifted_sphere_min_margin_is_R_minus_r_minus_d():
    t = ball((48, 48, 48), (1.0, 1.0, 1.0), C, 8.0)
    z = ball((48, 48, 48), (1.0, 1.0, 1.0), (C[0] + 1.8, C[1] + 2.4, C[2]), 14.0)  # d = 3
    s = metrics(t, z)
    assert s["min_margin_mm"] == pytest.approx(3.0, abs=1.0)
    assert 0.0 < s["pct_lt5"] < 100.0
    assert s["pct_lt0"] == 0.0


def test_negative_margin_when_tumour_sticks_out():
    t = ball((48, 48, 48), (1.0, 1.0, 1.0), C, 10.0)
    z = ball((48, 48, 48), (1.0, 1.0, 1.0), (C[0] + 3.0, C[1] + 4.0, C[2]), 12.0)  # d = 5
    s = metrics(t, z)
    assert s["min_margin_mm"] == pytest.approx(-3.0, abs=1.0)
    assert s["min_margin_mm"] < 0
    assert 10.0 < s["pct_lt0"] < 60.0
    assert s["pct_lt5"] > s["pct_lt0"]


def test_anisotropic_spacing():
    sp = (0.8, 0.8, 3.0)
    t = ball((60, 60, 16), sp, C, 8.0)
    z = ball((60, 60, 16), sp, (C[0] + 1.2, C[1] + 1.6, C[2]), 14.0)  # d = 2
    s = metrics(t, z)
    assert s["min_margin_mm"] == pytest.approx(4.0, abs=1.0)
    # the isotropic shape-based grid beats the native 3 mm slices at the poles
    native = metrics(t, z, iso_spacing_mm=None)
    assert abs(s["median_margin_mm"] - 5.6) < abs(native["median_margin_mm"] - 5.6) + 0.3


def test_empty_and_mismatched_masks_are_refused():
    t = ball((20, 20, 20), (1.0, 1.0, 1.0), (10, 10, 10), 4.0)
    empty = sitk.Image(t.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(t)
    with pytest.raises(ValueError, match="empty"):
        margin_metrics()(t, empty)
    other = ball((21, 20, 20), (1.0, 1.0, 1.0), (10, 10, 10), 6.0)
    with pytest.raises(ValueError, match="same grid"):
        margin_metrics()(t, other)


# --------------------------------------------------------------------------- 2-D mode
def _single_slice(img: sitk.Image, k: int) -> sitk.Image:
    a = sitk.GetArrayFromImage(img)
    keep = np.zeros_like(a)
    keep[k] = a[k]
    out = sitk.GetImageFromArray(keep)
    out.CopyInformation(img)
    return out


def test_2d_mode_on_single_slice_rois():
    sp = (0.8, 0.8, 5.0)
    k = 5
    t = _single_slice(ball((60, 60, 10), sp, (24.3, 23.8, 25.0), 8.0), k)
    z = _single_slice(ball((60, 60, 10), sp, (24.3 + 1.8, 23.8 + 2.4, 25.0), 14.0), k)  # d = 3
    sm = margin_metrics()(t, z)
    s = sm.summary()
    assert s["mode"] == "2d"
    assert sm.slices == (k,)
    assert s["min_margin_mm"] == pytest.approx(3.0, abs=0.8)
    assert (
        margin_metrics(mode="3d").resolve_mode(
            sitk.GetArrayViewFromImage(t), sitk.GetArrayViewFromImage(z)
        )
        == "3d"
    )


def test_single_slice_zone_is_carried_to_the_tumour_slice():
    sp = (1.0, 1.0, 4.0)
    t = _single_slice(ball((40, 40, 10), sp, (20.2, 19.7, 20.0), 6.0), 5)
    z = _single_slice(ball((40, 40, 10), sp, (20.2, 19.7, 20.0), 11.0), 5)
    shift = sitk.TranslationTransform(3, (0.0, 0.0, 6.0))  # through-plane motion: ignored
    zp = zone_on_pre(z, t, shift)
    assert roi_slices(zp).tolist() == [5]
    s = margin_metrics()(t, z, shift).summary()
    assert s["mode"] == "2d"
    assert s["min_margin_mm"] == pytest.approx(5.0, abs=1.1)  # about one pixel


# --------------------------------------------------------------------------- registration
def phantom(shift=(0.0, 0.0, 0.0), zone: bool = False, seed: int = 0):
    """Abdomen-like phantom (body, liver, vessels, lesion) whose content is moved by -shift."""
    size, sp = (96, 86, 30), (1.5, 1.5, 2.5)
    ax = [np.arange(size[i]) * sp[i] for i in range(3)]
    z, y, x = np.meshgrid(ax[2], ax[1], ax[0], indexing="ij")
    x, y, z = x + shift[0], y + shift[1], z + shift[2]
    img = 90.0 * (((x - 72) / 66) ** 2 + ((y - 64) / 56) ** 2 + ((z - 36) / 60) ** 2 <= 1)
    img += 70.0 * (((x - 60) / 40) ** 2 + ((y - 60) / 34) ** 2 + ((z - 36) / 30) ** 2 <= 1)
    for cx, cy, cz, r in [(40, 50, 30, 5), (75, 70, 45, 4), (55, 80, 25, 4), (100, 50, 40, 7)]:
        img += 110.0 * ((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r)
    rho = np.sqrt((x - 62.7) ** 2 + (y - 58.3) ** 2 + (z - 36.9) ** 2)
    roi = rho <= (13.0 if zone else 8.0)
    img += -60.0 * roi if zone else 50.0 * roi
    img += np.random.default_rng(seed).normal(0, 4, img.shape)
    im = sitk.GetImageFromArray(img.astype(np.float32))
    im.SetSpacing(sp)
    m = sitk.GetImageFromArray(roi.astype(np.uint8))
    m.CopyInformation(im)
    return im, m


def test_rigid_registration_recovers_a_known_shift():
    pre, tumour = phantom()
    shift = (3.0, -2.0, 4.5)
    post, zone = phantom(shift, zone=True, seed=1)
    res = CrossTimeRegistration(CrossTimeSettings.defaults())(pre, post, tumour)
    p = np.array([62.7, 58.3, 36.9])  # tumour centre, pre space
    mapped = np.array(res.transform.TransformPoint(p.tolist()))
    assert np.linalg.norm(mapped - (p - np.array(shift))) < 1.0
    assert res.qc["translation_mm"] == pytest.approx(np.linalg.norm(shift), abs=1.0)
    # the zone carried onto pre is concentric with the tumour again: margin 13 - 8 = 5, as
    # measured without motion (1.5 x 1.5 x 2.5 mm voxels: the minimum runs ~half a voxel low)
    s = margin_metrics()(tumour, zone, res.transform).summary()
    still = margin_metrics()(tumour, phantom(zone=True, seed=1)[1]).summary()
    assert still["min_margin_mm"] == pytest.approx(5.0, abs=1.5)
    assert s["min_margin_mm"] == pytest.approx(still["min_margin_mm"], abs=0.7)
    assert s["median_margin_mm"] == pytest.approx(5.0, abs=0.6)
    unregistered = margin_metrics()(tumour, zone, sitk.TranslationTransform(3)).summary()
    assert unregistered["min_margin_mm"] < s["min_margin_mm"] - 2.0


@pytest.mark.slow
def test_deformable_stage_runs_and_keeps_the_rigid_solution(tmp_path):
    pre, tumour = phantom()
    post, zone = phantom((2.0, 1.0, -3.0), zone=True, seed=1)
    settings = CrossTimeSettings.defaults(deformable=True, bspline_iterations=10)
    res = CrossTimeRegistration(settings)(pre, post, tumour, zone)
    assert res.qc["bspline_failed"] == ""
    assert res.transform.GetName() == "CompositeTransform"
    p = [62.7, 58.3, 36.9]
    mapped = np.array(res.transform.TransformPoint(p))
    assert np.linalg.norm(mapped - (np.array(p) - [2.0, 1.0, -3.0])) < 1.5
    sitk.WriteTransform(res.transform, str(tmp_path / "t.tfm"))
    back = sitk.ReadTransform(str(tmp_path / "t.tfm"))
    assert np.allclose(back.TransformPoint(p), mapped, atol=1e-4)


def test_settings_are_checked():
    with pytest.raises(RecurError, match=r"margin: shrink_factors .* same, non-zero"):
        CrossTimeSettings.defaults(shrink_factors=[2, 1], smoothing_sigmas_mm=[1.0])
    with pytest.raises(RecurError, match="zone_interpolation"):
        CrossTimeSettings.defaults(zone_interpolation="cubic")
    with pytest.raises(RecurError, match=r"margin\.mode must be one of auto, 3d, 2d"):
        MarginMetricSettings.defaults(mode="4d")


def test_region_mask_is_exact_on_the_cropped_box():
    t = ball((60, 50, 20), (1.5, 1.5, 4.0), (30.0, 40.0, 10.0), 6.0)
    full = sitk.SignedMaurerDistanceMap(
        t, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    for d in (3.0, 10.0, 30.0):
        got = region_mask(t, d)
        assert got.GetSize() == t.GetSize()
        assert got.GetOrigin() == t.GetOrigin()
        ref = sitk.GetArrayFromImage(full <= d)
        assert np.array_equal(sitk.GetArrayFromImage(got), ref)
    # row z = 8 mm, y = 39 mm (2.24 mm off the centre): the ball covers x = 25.5..34.5 mm
    # (indices 17..23, 1.5 mm voxels); within 3 mm of those voxel centres: indices 15..25
    arr = sitk.GetArrayFromImage(region_mask(t, 3.0))
    assert arr[2, 26, :].nonzero()[0].tolist() == list(range(15, 26))


def test_rigid_stage_is_the_phase_registration_with_the_margin_values():
    """The rigid stage is recur.preprocess.register's settings object, read from the margin
    section (its rigid_region_mm is the metric's region)."""
    from recur import config
    from recur.preprocess.settings import RegistrationSettings

    schema = config.defaults()["margin"]
    rigid = CrossTimeSettings.defaults(rigid_region_mm=None).rigid
    assert isinstance(rigid, RegistrationSettings)
    assert rigid.transform == "rigid"
    assert rigid.mask_margin_mm is None
    assert CrossTimeSettings.defaults().rigid.mask_margin_mm == schema["rigid_region_mm"]
    # the rigid stage works on the region (the post DP's grown by rigid_motion_mm); without a
    # region, or with rigid_motion_mm null, on the whole images
    default = CrossTimeSettings.defaults().rigid
    assert default.region_margin_mm == schema["rigid_region_mm"]
    assert default.region_motion_mm == schema["rigid_motion_mm"]
    assert rigid.region_margin_mm is None
    assert CrossTimeSettings.defaults(rigid_motion_mm=None).rigid.region_margin_mm is None
    for key in ("histogram_bins", "sampling_fraction", "min_samples", "iterations", "seed"):
        assert getattr(rigid, key) == schema[key], key
    assert list(rigid.shrink_factors) == schema["shrink_factors"]
    assert list(rigid.smoothing_sigmas_mm) == schema["smoothing_sigmas_mm"]
    # numbers written as integers in a config reach the registration as floats
    s = CrossTimeSettings.defaults(region_mm=30, smoothing_sigmas_mm=[4, 2, 0])
    assert type(s.region_mm) is float
    assert [type(v) for v in s.rigid.smoothing_sigmas_mm] == [float] * 3


# --------------------------------------------------------------------------- files and CLI
#: margin-metrics' --settings: the margin section as the rules pass it (extra keys ignored)
METRIC_SETTINGS = section_json(section_defaults("margin"))


def _write(img: sitk.Image, path) -> str:
    sitk.WriteImage(img, str(path))
    return str(path)


def test_cli_register_metrics_figure_table(tmp_path):
    pre, tumour = phantom()
    post, zone = phantom((2.0, -1.0, 3.0), zone=True, seed=1)
    f = {
        n: _write(i, tmp_path / f"{n}.nii.gz")
        for n, i in [("pre", pre), ("post", post), ("t", tumour), ("z", zone)]
    }
    out = tmp_path / "out"
    rc = cli_main(
        [
            "--threads",
            "1",
            "margin-register",
            "--patient",
            "P0001",
            "--pre-dp",
            f["pre"],
            "--post-dp",
            f["post"],
            "--pre-mask",
            f["t"],
            "--post-mask",
            f["z"],
            "--out-tfm",
            str(out / "t.tfm"),
            "--out-mask",
            str(out / "zone.nii.gz"),
            "--qc",
            str(out / "qc.png"),
            "--qc-json",
            str(out / "reg.json"),
            "--settings",
            section_json(section_defaults("margin")),
        ]
    )
    assert rc == 0
    assert (out / "qc.png").stat().st_size > 1000
    zp = sitk.ReadImage(str(out / "zone.nii.gz"))
    assert zp.GetSize() == pre.GetSize()
    assert sitk.GetArrayViewFromImage(zp).max() == 1
    rc = cli_main(
        [
            "margin-metrics",
            "--patient",
            "P0001",
            "--tumour",
            f["t"],
            "--zone",
            f["z"],
            "--transform",
            str(out / "t.tfm"),
            "--out",
            str(out / "m.json"),
            "--surface",
            str(out / "s.npz"),
            "--settings",
            METRIC_SETTINGS,
        ]
    )
    assert rc == 0
    rec = json.loads((out / "m.json").read_text())
    assert rec["patient_id"] == "P0001"
    assert rec["mode"] == "3d"
    assert rec["min_margin_mm"] == pytest.approx(5.0, abs=1.5)
    assert rec["median_margin_mm"] == pytest.approx(5.0, abs=0.6)
    sm = load_surface(out / "s.npz")
    assert sm.summary()["min_margin_mm"] == pytest.approx(rec["min_margin_mm"], abs=1e-4)
    assert (
        cli_main(
            [
                "margin-figure",
                "--surface",
                str(out / "s.npz"),
                "--out",
                str(out / "fig.png"),
                "--pdf",
                str(out / "fig.pdf"),
                "--patient",
                "P0001",
            ]
        )
        == 0
    )
    rec2 = dict(rec, patient_id="P0002", min_margin_mm=-1.0, pct_lt0=5.0, mode="2d")
    (out / "m2.json").write_text(json.dumps(rec2))
    assert (
        cli_main(
            [
                "margin-table",
                "--metrics",
                str(out / "m2.json"),
                str(out / "m.json"),
                "--out",
                str(out / "margin.csv"),
                "--figure",
                str(out / "c.png"),
                "--figure-pdf",
                str(out / "c.pdf"),
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "margin.csv")
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["patient_id"].tolist() == ["P0001", "P0002"]
    assert (out / "c.png").stat().st_size > 1000
    for pdf in ("fig.pdf", "c.pdf"):
        data = (out / pdf).read_bytes()
        assert data[:5] == b"%PDF-"
        assert b"CreationDate" not in data


def test_cli_errors_name_the_patient_and_file(tmp_path, capsys):
    _, tumour = phantom()
    empty = sitk.Image(tumour.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(tumour)
    t = _write(tumour, tmp_path / "pre.nii.gz")
    z = _write(empty, tmp_path / "post.nii.gz")
    out = str(tmp_path / "m.json")
    rc = cli_main(
        [
            *("margin-metrics", "--patient", "P0042", "--tumour", t, "--zone", z),
            *("--out", out, "--settings", METRIC_SETTINGS),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "P0042" in err
    assert "post.nii.gz" in err
    assert "empty" in err
    assert not (tmp_path / "m.json").exists()
    missing = str(tmp_path / "missing.nii.gz")
    rc = cli_main(
        [
            *("margin-metrics", "--patient", "P0042", "--tumour", t, "--zone", missing),
            *("--out", out, "--settings", METRIC_SETTINGS),
        ]
    )
    assert rc == 2
    assert "file not found" in capsys.readouterr().err


def test_register_refuses_mask_off_its_dp_grid(tmp_path):
    pre, tumour = phantom()
    post, zone = phantom(zone=True)
    moved = sitk.Image(tumour)
    moved.SetOrigin((5.0, 0.0, 0.0))
    with pytest.raises(RecurError, match=r"P0007: pre tumour mask t\.nii\.gz is not on the grid"):
        register_files(
            _write(pre, tmp_path / "pre.nii.gz"),
            _write(post, tmp_path / "post.nii.gz"),
            _write(moved, tmp_path / "t.nii.gz"),
            _write(zone, tmp_path / "z.nii.gz"),
            tmp_path / "x.tfm",
            tmp_path / "x.nii.gz",
            CrossTimeSettings.defaults(),
            patient="P0007",
        )
    assert not (tmp_path / "x.tfm").exists()


# --------------------------------------------------------------------------- table and models
def test_margin_table_refuses_duplicates_and_sorts():
    rec = {c: 0.0 for c in TABLE_COLUMNS} | {"mode": "3d"}
    t = margin_table([rec | {"patient_id": "P2"}, rec | {"patient_id": "P1"}])
    assert t["patient_id"].tolist() == ["P1", "P2"]
    with pytest.raises(RecurError, match="P1"):
        margin_table([rec | {"patient_id": "P1"}, rec | {"patient_id": "P1"}])


def _tabular_inputs(n: int = 60):
    rng = np.random.default_rng(3)
    ids = [f"P{i:04d}" for i in range(n)]
    er = np.tile([0, 1], n // 2)
    clinical = pd.DataFrame(
        {
            "patient_id": ids,
            "site": "siteA",
            "cohort": "train",
            "er": er,
            "tumor_size_cm": rng.uniform(1, 5, n),
            "tumor_number": rng.integers(1, 3, n),
            "hbv": rng.integers(0, 2, n),
            "tp_g_l": rng.uniform(55, 80, n),
            "afp_ng_ml": rng.uniform(1, 500, n),
        }
    )
    split = pd.DataFrame(
        {"patient_id": ids, "cohort": "train", "split": ["train"] * 40 + ["tune"] * 20}
    )
    margins = pd.DataFrame(
        {
            "patient_id": ids[:-1],  # last patient without margin -> imputed
            "min_margin_mm": 6.0 - 6.0 * er[:-1] + rng.normal(0, 0.5, n - 1),
            "pct_lt0": rng.uniform(0, 10, n - 1),
            "pct_lt5": rng.uniform(10, 60, n - 1),
            "pct_ge5": rng.uniform(40, 90, n - 1),
            "mode": "3d",
        }
    )
    return clinical, split, margins


def test_model_data_joins_margin_features():
    clinical, split, margins = _tabular_inputs()
    d = model_data(clinical, split, margins, ["min_margin_mm"])
    assert len(d) == 60
    assert "min_margin_mm" in d
    assert np.isnan(d.loc[d.patient_id == "P0059", "min_margin_mm"]).all()
    with pytest.raises(RecurError, match="unknown margin feature"):
        model_data(clinical, split, margins, ["volume"])


def test_clinical_margin_model_uses_the_margin():
    from recur.models.tabular import TabularSettings

    clinical, split, margins = _tabular_inputs()
    st = TabularSettings.defaults(estimator="extra_trees", n_estimators=50, min_samples_leaf=1)
    _, pred, feats = fit_margin_model(
        "Clinical_Margin", clinical, split, margins, ["min_margin_mm", "pct_lt5"], st
    )
    assert feats[-2:] == ["min_margin_mm", "pct_lt5"]
    assert len(feats) == 7
    assert list(pred.columns) == ["patient_id", "cohort", "split", "score"]
    tune = pred[pred.split == "tune"].merge(clinical[["patient_id", "er"]])
    # the margin separates the classes in this toy data: tune AUC near 1
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(tune["er"], tune["score"]) > 0.9
    sig = pd.Series(np.linspace(0, 1, 60), index=clinical["patient_id"])
    _, _, feats = fit_margin_model(
        "DL_Clinical_Margin", clinical, split, margins, ["pct_lt0"], st, sig, "Pre_signature"
    )
    assert feats[-2:] == ["Pre_signature", "pct_lt0"]
    with pytest.raises(RecurError, match="needs the DL signature"):
        fit_margin_model("DL_Clinical_Margin", clinical, split, margins, ["pct_lt0"], st)


def test_margin_classes_are_colour_blind_safe_and_hatched():
    assert set(plots.COLOURS.values()) <= set(OKABE_ITO.values())
    assert len(set(plots.COLOURS.values())) == len(set(plots.HATCHES.values())) == 3
    assert [plots.margin_class(v) for v in (-0.1, 0.0, 4.9, 5.0)] == ["lt0", "lt5", "lt5", "ge5"]
