"""Registration of PS/AP/PVP onto DP: pure helpers, recovery of known motion, file edges."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from recur.cli import main as cli
from recur.errors import RecurError
from recur.preprocess.register import (
    PhaseRegistration,
    RegistrationSettings,
    level_shrink_factors,
    normalised_cross_correlation,
    register_timepoint_dir,
    roi_box_mask,
    transform_summary,
)
from recur.settings import section_defaults, section_json

CT_DIR = "hcc048-ct-portal-venous/sample_data/HCC048_portal_venous"
#: A two-level pyramid: the command-line tests' registrations, quick.
QUICK = {"shrink_factors": [4, 2], "smoothing_sigmas_mm": [2.0, 1.0]}


# --------------------------------------------------------------------------- helpers
def phantom(size=(96, 80, 36), spacing=(2.0, 2.0, 3.0), seed=0) -> sitk.Image:
    """Abdomen-like phantom: body ellipse, 'liver', 'tumour', 'spine', random blobs, noise."""
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - n / 2) * s for n, s in zip(size[::-1], spacing[::-1], strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    a = np.zeros(x.shape, np.float32)
    a[(x / 90) ** 2 + (y / 70) ** 2 < 1] = 100
    a[((x + 30) / 45) ** 2 + ((y + 5) / 35) ** 2 + (z / 40) ** 2 < 1] = 300
    a[(x + 25) ** 2 + (y + 5) ** 2 + (z - 4) ** 2 < 12**2] = 500
    a[x**2 + (y - 45) ** 2 < 9**2] = 700
    for _ in range(20):
        c = rng.uniform(-60, 60, 3)
        r = rng.uniform(4, 10)
        a[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2] * 0.4) ** 2 < r**2] = rng.uniform(50, 600)
    a += rng.normal(0, 8, a.shape).astype(np.float32)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(spacing)
    img.SetOrigin((-95.0, -80.0, -54.0))
    return img


def centre_of(img: sitk.Image) -> tuple[float, ...]:
    return img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()])


def known_motion(img: sitk.Image, angles_deg, shift_mm) -> sitk.Euler3DTransform:
    tx = sitk.Euler3DTransform()
    tx.SetCenter(centre_of(img))
    tx.SetRotation(*(math.radians(a) for a in angles_deg))
    tx.SetTranslation(shift_mm)
    return tx


def moved(fixed: sitk.Image, true_tx: sitk.Transform, gain=1.0, offset=0.0) -> sitk.Image:
    """A 'moving phase' whose point true_tx(p) shows what the fixed image shows at p."""
    m = sitk.Resample(fixed, fixed, true_tx.GetInverse(), sitk.sitkLinear, 0.0)
    arr = sitk.GetArrayFromImage(m) * gain + offset
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(fixed)
    return out


def tre(found: sitk.Transform, true_tx: sitk.Transform, point) -> float:
    a = np.array(found.TransformPoint(tuple(point)))
    b = np.array(true_tx.TransformPoint(tuple(point)))
    return float(np.linalg.norm(a - b))


# --------------------------------------------------------------------------- pure helpers
def test_level_shrink_factors_by_hand():
    assert level_shrink_factors((1.5, 1.5, 3.0), 4) == [4, 4, 2]
    assert level_shrink_factors((0.7, 0.7, 2.5), 4) == [4, 4, 1]
    assert level_shrink_factors((1.5, 1.5, 3.0), 2) == [2, 2, 1]
    assert level_shrink_factors((2.0, 2.0, 2.0), 1) == [1, 1, 1]


def test_ncc_by_hand():
    a = np.array([1.0, 2.0, 3.0])
    assert normalised_cross_correlation(a, 2 * a + 5) == pytest.approx(1.0)
    assert normalised_cross_correlation(a, a[::-1]) == pytest.approx(-1.0)
    # [1, 2, 3] vs [1, 3, 2]: centred (-1, 0, 1)·(-1, 1, 0) = 1, norms sqrt(2) each -> 0.5
    assert normalised_cross_correlation(a, np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)
    assert math.isnan(normalised_cross_correlation(a, np.ones(3)))
    where = np.array([True, True, False])
    assert normalised_cross_correlation(a, np.array([0.0, 1.0, -9.0]), where) == pytest.approx(1)


def test_roi_box_mask_by_hand():
    arr = np.zeros((10, 12, 12), np.uint8)
    arr[5, 5, 5] = 1
    m = sitk.GetImageFromArray(arr)
    m.SetSpacing((1.0, 1.0, 2.0))
    box = sitk.GetArrayFromImage(roi_box_mask(m, 2.0))
    # 2 mm = 2 voxels in x and y, 1 voxel in z; clipped to the volume
    zs, ys, xs = np.nonzero(box)
    assert (zs.min(), zs.max(), ys.min(), ys.max(), xs.min(), xs.max()) == (4, 6, 3, 7, 3, 7)
    assert box.sum() == 3 * 5 * 5
    arr[:] = 0
    arr[0, 0, 11] = 1
    box = sitk.GetArrayFromImage(roi_box_mask(sitk.GetImageFromArray(arr), 3.0))
    assert box.sum() == 4 * 4 * 4  # clipped at every edge


def test_transform_summary_euler():
    tx = sitk.Euler3DTransform()
    tx.SetRotation(0.0, 0.0, math.radians(5))
    tx.SetTranslation((3.0, 4.0, 0.0))
    s = transform_summary(tx)
    assert s["rot_z_deg"] == pytest.approx(5.0)
    assert s["translation_mm"] == pytest.approx(5.0)


def test_settings_refused():
    with pytest.raises(RecurError, match="transform"):
        RegistrationSettings.defaults(transform="bspline")
    with pytest.raises(RecurError, match="levels"):
        RegistrationSettings.defaults(shrink_factors=(4, 2), smoothing_sigmas_mm=(1.0,))


# --------------------------------------------------------------------------- recovery
def test_rigid_recovers_known_motion_on_phantom():
    fixed = phantom()
    true_tx = known_motion(fixed, (2.0, -1.5, 3.0), (4.0, -3.0, 2.5))
    moving = moved(fixed, true_tx, gain=1.3, offset=20.0)  # other contrast scaling
    res = PhaseRegistration(RegistrationSettings.defaults())(fixed, moving, phase="AP")
    point = np.add(centre_of(fixed), (-25.0, -5.0, 4.0))  # the 'tumour'
    assert tre(res.transform, true_tx, point) < 1.0
    assert res.qc["mi_after"] < res.qc["mi_before"]  # SimpleITK's MI: lower is better
    assert res.qc["ncc_after"] > res.qc["ncc_before"]
    assert res.qc["ncc_after"] > 0.95
    assert res.registered.GetSize() == fixed.GetSize()
    assert res.registered.GetOrigin() == fixed.GetOrigin()
    # deterministic: the same seed gives the same transform (up to the summation order of
    # the threads; bit-identical with one thread, as the workflow runs it)
    again = PhaseRegistration(RegistrationSettings.defaults())(fixed, moving, phase="AP")
    np.testing.assert_allclose(
        again.transform.GetParameters(), res.transform.GetParameters(), rtol=0, atol=1e-9
    )
    other = PhaseRegistration(RegistrationSettings.defaults(seed=7))(fixed, moving, phase="AP")
    assert other.transform.GetParameters() != res.transform.GetParameters()


def test_affine_and_roi_box_metric_recover_translation():
    fixed = phantom(seed=1)
    true_tx = known_motion(fixed, (0.0, 0.0, 2.0), (-3.0, 2.0, 1.5))
    moving = moved(fixed, true_tx)
    roi = sitk.Cast(fixed > 450, sitk.sitkUInt8)  # the 'tumour'
    settings = RegistrationSettings.defaults(transform="affine", mask_margin_mm=40.0)
    res = PhaseRegistration(settings)(fixed, moving, phase="PVP", roi_mask=roi)
    assert res.transform.GetName() == "AffineTransform"
    point = np.add(centre_of(fixed), (-25.0, -5.0, 4.0))
    assert tre(res.transform, true_tx, point) < 1.0
    assert res.qc["ncc_roi_after"] > res.qc["ncc_roi_before"]


def test_roi_region_recovers_motion_and_writes_the_whole_grid():
    fixed = phantom(size=(128, 112, 36), seed=2)
    true_tx = known_motion(fixed, (1.5, -1.0, 2.0), (3.0, -2.0, 2.0))
    moving = moved(fixed, true_tx, gain=1.2, offset=10.0)
    point = np.add(centre_of(fixed), (-25.0, -5.0, 4.0))  # the 'tumour'
    roi = sitk.Cast(fixed * 0, sitk.sitkUInt8)
    index = fixed.TransformPhysicalPointToIndex(tuple(point))
    roi[index] = 1  # one voxel: its box is the voxel itself
    settings = RegistrationSettings.defaults(region_margin_mm=30.0, region_motion_mm=10.0)
    reg = PhaseRegistration(settings)
    # the regions: 30 mm = 15 voxels in x and y, 10 in z (2, 2, 3 mm) on either side of the
    # voxel; the moving one 10 mm (5, 5, 4 voxels: 3.3 rounded up) more, same grid
    f_reg, m_reg = reg.regions(fixed, moving, roi, reg.initial_transform(fixed, moving))
    assert f_reg.GetSize() == (31, 31, 21)
    np.testing.assert_allclose(
        f_reg.GetOrigin(),
        fixed.TransformIndexToPhysicalPoint(
            [i - g for i, g in zip(index, (15, 15, 10), strict=True)]
        ),
    )
    assert m_reg.GetSize() == (31 + 10, 31 + 10, 21 + 8)
    res = reg(fixed, moving, phase="AP", roi_mask=roi)
    assert tre(res.transform, true_tx, point) < 1.0
    # the transform is centred as without a region, and moves the whole moving phase
    np.testing.assert_allclose(res.transform.GetCenter(), centre_of(fixed), atol=1e-6)
    whole = sitk.Resample(moving, fixed, res.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(res.registered), sitk.GetArrayFromImage(whole)
    )
    assert res.qc["ncc_after"] > res.qc["ncc_before"]
    assert res.qc["mi_after"] < res.qc["mi_before"]


def test_without_roi_or_region_the_whole_images_are_registered():
    fixed = phantom(seed=4)
    true_tx = known_motion(fixed, (0.0, 1.0, 0.0), (2.0, 1.0, -1.0))
    moving = moved(fixed, true_tx)
    roi = sitk.Cast(fixed > 450, sitk.sitkUInt8)
    off = RegistrationSettings.defaults(region_margin_mm=None)
    a = PhaseRegistration(off)(fixed, moving, roi_mask=roi)
    b = PhaseRegistration(RegistrationSettings.defaults())(fixed, moving)  # no ROI: whole
    np.testing.assert_allclose(
        a.transform.GetParameters(), b.transform.GetParameters(), rtol=0, atol=1e-9
    )


@pytest.mark.slow
def test_rigid_recovers_known_motion_on_real_ct(testdata: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(testdata / CT_DIR)))
    ct = reader.Execute()
    # 512x512x24 at 0.70 mm -> 256x256x24 at 1.41 mm (the in-plane resolution of liver MRI)
    fixed = sitk.Cast(sitk.BinShrink(ct, [2, 2, 1]), sitk.sitkFloat32)
    true_tx = known_motion(fixed, (1.5, -2.0, 2.5), (3.0, -4.0, 2.5))
    moving = moved(fixed, true_tx)
    res = PhaseRegistration(RegistrationSettings.defaults())(fixed, moving, phase="PVP")
    liver = ct.TransformIndexToPhysicalPoint((150, 220, 12))  # centre of the right liver lobe
    before = tre(sitk.Euler3DTransform(), true_tx, liver)
    assert before > 4.0
    assert tre(res.transform, true_tx, liver) < 1.0
    assert res.qc["mi_after"] < res.qc["mi_before"]
    assert res.qc["ncc_after"] > res.qc["ncc_before"]


# --------------------------------------------------------------------------- file edges
def write_timepoint(folder: Path, seed=0) -> tuple[sitk.Image, dict[str, sitk.Euler3DTransform]]:
    folder.mkdir(parents=True, exist_ok=True)
    dp = sitk.Cast(phantom(size=(64, 56, 24), seed=seed), sitk.sitkInt16)
    truths = {}
    for i, ph in enumerate(("PS", "AP", "PVP")):
        t = known_motion(dp, (0.0, 0.0, 1.0 + i), (2.0, -1.0 - i, 1.0))
        truths[ph] = t
        sitk.WriteImage(
            sitk.Cast(moved(dp, t, gain=1.0 + 0.2 * i), sitk.sitkInt16),
            str(folder / f"{ph}.nii.gz"),
        )
    sitk.WriteImage(dp, str(folder / "DP.nii.gz"))
    mask = sitk.Cast(dp > 450, sitk.sitkUInt8)
    sitk.WriteImage(mask, str(folder / "mask.nii.gz"))
    return dp, truths


def test_register_timepoint_dir_writes_everything(tmp_path: Path):
    indir, outdir = tmp_path / "nifti", tmp_path / "registered"
    dp, truths = write_timepoint(indir)
    settings = RegistrationSettings.defaults()
    qc = register_timepoint_dir(indir, outdir, settings, mask=indir / "mask.nii.gz")
    assert sorted(p.name for p in outdir.iterdir()) == sorted(
        [
            "PS.nii.gz",
            "AP.nii.gz",
            "PVP.nii.gz",
            "DP.nii.gz",
            "PS.tfm",
            "AP.tfm",
            "PVP.tfm",
            "qc.csv",
        ]
    )
    out_dp = sitk.ReadImage(str(outdir / "DP.nii.gz"))
    assert out_dp.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(out_dp), sitk.GetArrayFromImage(dp).astype(np.float32)
    )
    table = pd.read_csv(outdir / "qc.csv")
    assert list(table["phase"]) == ["PS", "AP", "PVP"]
    assert (table["ncc_after"] > table["ncc_before"]).all()
    assert list(qc["phase"]) == ["PS", "AP", "PVP"]
    point = np.add(centre_of(dp), (10.0, 5.0, 3.0))
    for ph, true_tx in truths.items():
        tx = sitk.ReadTransform(str(outdir / f"{ph}.tfm"))
        assert tre(tx, true_tx, point) < 1.0, ph
        img = sitk.ReadImage(str(outdir / f"{ph}.nii.gz"))
        assert img.GetSize() == dp.GetSize()
        assert img.GetSpacing() == pytest.approx(dp.GetSpacing())


def test_register_refuses_missing_phase_and_writes_nothing(tmp_path: Path):
    indir, outdir = tmp_path / "nifti", tmp_path / "registered"
    write_timepoint(indir)
    (indir / "AP.nii.gz").unlink()
    with pytest.raises(RecurError, match=r"phase AP: .*AP.nii.gz: file not found"):
        register_timepoint_dir(indir, outdir, RegistrationSettings.defaults())
    assert not outdir.exists() or not any(outdir.iterdir())


def test_register_cli(tmp_path: Path, capsys):
    indir, outdir = tmp_path / "nifti", tmp_path / "out"
    write_timepoint(indir, seed=3)
    argv = [
        "--threads",
        "1",
        "register",
        "--indir",
        str(indir),
        "--outdir",
        str(outdir),
        "--mask",
        str(indir / "mask.nii.gz"),
        "--settings",
        section_json(section_defaults("registration", **QUICK)),
    ]
    assert cli.main(argv) == 0
    assert (outdir / "qc.csv").is_file()
    (indir / "DP.nii.gz").write_bytes(b"not an image")
    assert cli.main(argv) == 2
    assert "cannot read as an image" in capsys.readouterr().err


# --------------------------------------------------------------------------- one job per patient
FAST = [
    "--settings",
    section_json(section_defaults("registration", **QUICK, iterations=20)),
]


def _patient_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """nifti/{pre,post} of one patient and a cohort dir whose rois.csv names both masks."""
    nifti, cohort = tmp_path / "nifti" / "P1", tmp_path / "cohort"
    (cohort / "rois").mkdir(parents=True)
    rows = ["patient_id,timepoint,mask"]
    for i, tp in enumerate(("pre", "post")):
        write_timepoint(nifti / tp, seed=i)
        (nifti / tp / "mask.nii.gz").rename(cohort / "rois" / f"P1_{tp}.nii.gz")
        rows.append(f"P1,{tp},rois/P1_{tp}.nii.gz")
    (cohort / "rois.csv").write_text("\n".join(rows) + "\n")
    return nifti, cohort


def _files(*folders: Path) -> list[Path]:
    return sorted(p for f in folders if f.exists() for p in f.rglob("*") if p.is_file())


def test_register_patient_all_or_nothing_across_time_points(tmp_path: Path):
    from recur.preprocess.register import register_patient

    nifti, _ = _patient_dirs(tmp_path)
    (nifti / "post" / "AP.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "registered" / "P1"
    settings = RegistrationSettings.defaults(shrink_factors=(4, 2), smoothing_sigmas_mm=(2.0, 1.0))
    with pytest.raises(RecurError, match=r"phase AP: .*post/AP.nii.gz: cannot read"):
        register_patient(nifti, out, settings)
    assert _files(out) == []  # pre registered fine, but nothing of it is written


def test_cli_register_patient_checks_masks_then_registers_or_excludes(
    tmp_path: Path, capsys, caplog
):
    import logging

    from recur.cohort import exclusions

    caplog.set_level(logging.INFO, logger="recur")  # as the CLI's own logging set-up

    nifti, cohort = _patient_dirs(tmp_path)
    empty = sitk.ReadImage(str(cohort / "rois" / "P1_post.nii.gz")) * 0
    sitk.WriteImage(empty, str(cohort / "rois" / "P1_post.nii.gz"))
    out, masks = tmp_path / "registered" / "P1", tmp_path / "masks" / "P1"
    check_log = tmp_path / "logs" / "check_mask" / "P1.log"
    argv = [
        "register-patient",
        "--check-roi",
        "--cohort-dir",
        str(cohort),
        "--patient",
        "P1",
        "--nifti-dir",
        str(nifti),
        "--outdir",
        str(out),
        "--mask-dir",
        str(masks),
        "--check-log",
        str(check_log),
        *FAST,
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "patient P1 (post)" in err
    assert "ROI mask <rois.csv row 3>" in err  # its row of rois.csv, not its path
    assert "rois/P1_post.nii.gz" not in err
    assert "empty" in err
    log = check_log.read_text()
    assert "mask accepted: {'patient': 'P1', 'timepoint': 'pre'" in log  # pre checked first
    assert "error: patient P1 (post)" in log
    assert _files(out, masks) == []  # all or nothing

    assert cli.main([*argv, "--on-failure", "exclude"]) == 0
    pre = [masks / "pre.nii.gz", *(out / "pre").iterdir()]
    assert len(pre) == 1 + 4 + 3 + 1
    assert not any(exclusions.is_placeholder(p) for p in pre)
    assert pd.read_csv(out / "pre" / "qc.csv")["phase"].tolist() == ["PS", "AP", "PVP"]
    post = [masks / "post.nii.gz", *(out / "post").iterdir()]
    assert len(post) == 1 + 4 + 3 + 1
    for p in post:
        (record,) = exclusions.read_placeholder(p)
        assert (record.stage, record.timepoint) == ("check_mask", "post"), p
        assert "empty" in record.reason
    assert _files(out, masks) == sorted(pre + post)  # no temporary file left
