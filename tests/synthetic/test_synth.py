"""The synthetic cohort generator: latent model (fast, n = 2000) and a tiny written cohort.

The tiny cohort (4 training + 2 + 2 test patients) is generated once per module and read back
with pydicom, SimpleITK (GDCM series reader) and the input-contract validator.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from recur.cohort import contract
from recur.constants import PHASES, SYNTHETIC_TABLES, TIMEPOINTS
from recur.errors import RecurError
from recur.synthetic.acquisition import Motion, _smooth_field
from recur.synthetic.anatomy import (
    CAPSULE,
    HVEIN,
    LIVER,
    PERITUMORAL,
    PORTAL,
    SATELLITE,
    TUMOUR,
    ZONE_RIM,
    Grid,
    PatientAnatomy,
)
from recur.synthetic.ceilings import (
    INFORMATION_SETS,
    information_ceilings,
    information_scores,
    latent_features,
    learnable_ceilings,
    outcome_ceilings,
)
from recur.synthetic.cohort import SyntheticSettings, load_truth, write_cohort, write_patient
from recur.synthetic.dicom_writer import _LAST, _PRIVATE_CREATOR
from recur.synthetic.latent import (
    CLINICAL_COLUMNS,
    PAPER_ER_SHARE,
    RISK,
    _force_both_classes,
    blank_cells,
    conditional_bernoulli,
    ellipse_distance,
    er_count,
    random_stream,
    risk_components,
    sample_clinical,
    sample_latent,
    sample_outcome,
    sample_post_image,
)
from recur.synthetic.sites import SITE_PROFILES, planned_patients

SEED = 7
N_TRAIN, N_TEST = 4, (2, 2)


# --------------------------------------------------------------------------- pure functions
def test_ellipse_distance_hand_values():
    # circle of radius 10, point at distance 5 from the centre -> 5 to the boundary
    assert ellipse_distance(np.array([3.0]), np.array([4.0]), 10.0, 10.0)[0] == (
        pytest.approx(5.0, abs=1e-6)
    )
    # ellipse a=10, b=5: from the centre the nearest boundary point is the minor vertex
    assert ellipse_distance(np.array([0.0]), np.array([0.0]), 10.0, 5.0)[0] == (
        pytest.approx(5.0, abs=1e-6)
    )
    # point (6, 0): 6 < (a^2 - b^2)/a = 7.5, so the nearest point is off-axis at
    # x = a^2 * 6 / (a^2 - b^2) = 8, y = 5 * sqrt(1 - 0.64) = 3 -> distance sqrt(4 + 9)
    d = ellipse_distance(np.array([6.0]), np.array([0.0]), 10.0, 5.0)[0]
    assert d == pytest.approx(math.sqrt(13.0), abs=1e-5)
    # beyond that threshold the nearest point is the major vertex
    d = ellipse_distance(np.array([8.0]), np.array([0.0]), 10.0, 5.0)[0]
    assert d == pytest.approx(2.0, abs=1e-5)


def test_post_image_margin_matches_geometry():
    """margin_mm = distance(tumour centre, zone boundary) - radius, checked by dense sampling."""
    rng = np.random.default_rng(0)
    r = rng.uniform(4, 20, 200)
    post = sample_post_image(rng, r)
    phi = np.linspace(0, 2 * np.pi, 20000)
    a, b, ang = post["zone_a"].to_numpy(), post["zone_b"].to_numpy(), post["zone_angle"].to_numpy()
    # boundary points of the zone relative to the tumour centre: zone centre is at (dx, dy)
    bx = a[:, None] * np.cos(phi)
    by = b[:, None] * np.sin(phi)
    gx = np.cos(ang)[:, None] * bx - np.sin(ang)[:, None] * by + post["zone_dx"].to_numpy()[:, None]
    gy = np.sin(ang)[:, None] * bx + np.cos(ang)[:, None] * by + post["zone_dy"].to_numpy()[:, None]
    dense = np.hypot(gx, gy).min(axis=1) - r
    np.testing.assert_allclose(post["margin_mm"].to_numpy(), dense, atol=0.01)


def test_sample_outcome_is_consistent():
    rng = np.random.default_rng(1)
    out = sample_outcome(rng, np.full(3000, 0.3))
    er1 = out[out["er"] == 1]
    er0 = out[out["er"] == 0]
    assert (er1["rfs_event"] == 1).all()
    assert (er1["rfs_months"] <= 24).all()
    assert (er1["rfs_months"] >= 1).all()
    assert (er0["rfs_months"] > 24).all()
    assert 0.2 < er0["rfs_event"].mean() < 0.4  # late recurrences
    assert er0["rfs_months"].max() <= 100
    assert 0.27 < out["er"].mean() < 0.33


def test_force_both_classes_flips_most_likely():
    er = _force_both_classes(np.array([0, 0, 0]), np.array([0.1, 0.5, 0.2]))
    assert er.tolist() == [0, 1, 0]
    er = _force_both_classes(np.array([1, 1]), np.array([0.9, 0.4]))
    assert er.tolist() == [1, 0]
    assert _force_both_classes(np.array([0, 1]), np.array([0.1, 0.2])).tolist() == [0, 1]


def test_smooth_field_is_standardised_and_smooth():
    f = _smooth_field(np.random.default_rng(3), (30, 40, 50), (3.0, 5.0, 5.0))
    assert f.shape == (30, 40, 50)
    assert f.dtype == np.float32
    assert abs(float(f.mean())) < 1e-3
    assert float(f.std()) == pytest.approx(1.0, abs=1e-3)
    # neighbouring voxels along x are strongly correlated (smooth), unlike white noise
    assert np.corrcoef(f[:, :, :-1].ravel(), f[:, :, 1:].ravel())[0, 1] > 0.9


# --------------------------------------------------------------------------- latent model
@pytest.fixture(scope="module")
def latent2000() -> pd.DataFrame:
    return sample_latent(2000, (20, 15), seed=11, er_share=None)


def test_latent_resembles_table1(latent2000: pd.DataFrame):
    tr = latent2000[latent2000["cohort"] == "train"]
    assert len(tr) == 2000
    assert list(tr["patient_id"][:2]) == ["P0001", "P0002"]
    assert 0.19 < tr["er"].mean() < 0.27  # paper: 59/254 = 23%
    assert 0.84 < (tr["sex"] == "M").mean() < 0.90
    assert 0.93 < tr["hbv"].mean() < 0.99
    assert tr["tumor_size_cm"].median() == pytest.approx(2.0, abs=0.15)
    q1, q3 = tr["tumor_size_cm"].quantile([0.25, 0.75])
    assert 1.3 <= q1 <= 1.7
    assert 2.4 <= q3 <= 2.8
    assert 0.16 < (tr["tumor_number"] > 1).mean() < 0.24
    assert 12 < tr["afp_ng_ml"].median() < 32
    assert tr["tp_g_l"].mean() == pytest.approx(68, abs=1.0)
    assert tr["albi"].median() == pytest.approx(-2.8, abs=0.15)
    assert tr["age"].mean() == pytest.approx(53, abs=1.5)


def test_latent_margin_range(latent2000: pd.DataFrame):
    m = latent2000["margin_mm"]
    assert m.quantile(0.02) < -2.5
    assert m.min() > -8
    assert m.quantile(0.98) > 8.5
    assert m.max() < 13
    # insufficient margin raises risk: post component decreases with the margin
    assert np.corrcoef(m.clip(-4, 10), latent2000["post_image_component"])[0, 1] == (
        pytest.approx(-1.0, abs=1e-9)
    )


def test_latent_risk_decomposition(latent2000: pd.DataFrame):
    d = latent2000
    total = (
        RISK["b0"]
        + d["clinical_component"]
        + d["pre_image_component"]
        + (d["post_image_component"])
    )
    np.testing.assert_allclose(total, d["logit"], atol=1e-9)
    np.testing.assert_allclose(d["p"], 1 / (1 + np.exp(-d["logit"])), atol=1e-12)


def test_latent_is_deterministic_and_seed_dependent():
    a = sample_latent(30, (5,), seed=1, er_share=None)
    b = sample_latent(30, (5,), seed=1, er_share=None)
    c = sample_latent(30, (5,), seed=2, er_share=None)
    pd.testing.assert_frame_equal(a, b)
    assert not a["p"].equals(c["p"])


def test_conditional_bernoulli_by_hand():
    # p = (0.5, 0.2, 0.7), exactly 2 events: the three pairs have weights
    # {0,1}: 0.5*0.2*0.3 = 0.03, {0,2}: 0.5*0.8*0.7 = 0.28, {1,2}: 0.5*0.2*0.7 = 0.07 (sum 0.38),
    # so P(X0) = 0.31/0.38 = 0.8158, P(X1) = 0.10/0.38 = 0.2632, P(X2) = 0.35/0.38 = 0.9211
    rng = np.random.default_rng(0)
    draws = np.array([conditional_bernoulli(rng, [0.5, 0.2, 0.7], 2) for _ in range(20000)])
    assert (draws.sum(axis=1) == 2).all()
    np.testing.assert_allclose(
        draws.mean(axis=0), [0.31 / 0.38, 0.10 / 0.38, 0.35 / 0.38], atol=0.01
    )
    # the pair {0, 2} in 0.28/0.38 = 73.7% of the draws
    assert (draws[:, 1] == 0).mean() == pytest.approx(0.28 / 0.38, abs=0.01)
    # the edges: no event, all events, forced by a certain patient
    assert conditional_bernoulli(rng, [0.3, 0.6], 0).tolist() == [0, 0]
    assert conditional_bernoulli(rng, [0.3, 0.6], 2).tolist() == [1, 1]
    assert conditional_bernoulli(rng, [0.0, 1.0, 0.0], 1).tolist() == [0, 1, 0]
    # deterministic for the generator's state
    a = conditional_bernoulli(np.random.default_rng(5), np.full(50, 0.3), 9)
    b = conditional_bernoulli(np.random.default_rng(5), np.full(50, 0.3), 9)
    assert a.tolist() == b.tolist()
    assert a.sum() == 9
    with pytest.raises(ValueError, match="cannot place 3 events among 2"):
        conditional_bernoulli(rng, [0.5, 0.5], 3)
    with pytest.raises(ValueError, match="impossible"):
        conditional_bernoulli(rng, [0.0, 0.0], 1)
    with pytest.raises(ValueError, match="probabilities"):
        conditional_bernoulli(rng, [0.5, 1.5], 1)


def test_conditional_bernoulli_many_patients_no_underflow():
    # 2,000 patients with small risks and an improbable count (expected 100, asked 300)
    p = np.linspace(0.01, 0.09, 2000)
    x = conditional_bernoulli(np.random.default_rng(1), p, 300)
    assert x.sum() == 300
    # conditioning keeps the risk ordering: the riskier half holds more of the events
    assert x[1000:].sum() > x[:1000].sum()


def test_er_count():
    assert er_count(59 / 254, 254) == 59
    assert er_count(0.2, 35) == 7
    assert er_count(0.2, 4) == 1  # round(0.8)
    assert er_count(0.01, 10) == 1  # at least one event
    assert er_count(0.99, 10) == 9  # at least one non-event
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        er_count(1.0, 10)
    with pytest.raises(ValueError, match="at least 2 patients"):
        er_count(0.5, 1)


def test_er_share_fixes_the_paper_counts():
    free = sample_latent(254, (20, 15), seed=2025, er_share=None)
    fixed = sample_latent(254, (20, 15), seed=2025, er_share=PAPER_ER_SHARE)
    counts = fixed.groupby("cohort")["er"].agg(["sum", "count"])
    assert counts.loc["train"].tolist() == [59, 254]  # paper, Table 1: 59 of 254
    assert counts.loc["test"].tolist() == [7, 35]  # 7 of 35
    # only the outcome columns change: patients, images and risks are the same
    same = [c for c in free.columns if c not in ("er", "rfs_months", "rfs_event", "er_forced")]
    pd.testing.assert_frame_equal(free[same], fixed[same])
    # RFS stays consistent with the (conditioned) ER
    er = fixed["er"] == 1
    assert (fixed.loc[er, "rfs_event"] == 1).all()
    assert (fixed.loc[er, "rfs_months"] <= 24).all()
    assert (fixed.loc[~er, "rfs_months"] > 24).all()
    # the conditioned draw still follows the risk: events are the likelier patients
    assert fixed.loc[er, "p"].mean() > fixed.loc[~er, "p"].mean() + 0.1
    # None keeps the independent draws of the generator before er_share existed: with seed
    # 2025 they gave 5 of 35 and 55 of 254 (docs/methods/synthetic.md), i.e. the random streams of
    # the other variables are consumed exactly as before
    assert free.groupby("cohort")["er"].sum().tolist() == [5, 55]


def test_synth_cli_er_share(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from recur.cli import main as cli

    out = tmp_path / "cohort"
    argv = ["synth", str(out), "--n-train", "4", "--n-test", "2", "--seed", "3"]
    assert cli.main([*argv, "--er-share", "0.5", "0.9"]) == 0
    clinical = pd.read_csv(out / "clinical.csv")
    # round(0.5 * 4) = 2 of the 4 training patients; round(0.9 * 2) = 2, kept at n - 1 = 1
    assert clinical.groupby("cohort")["er"].sum().to_dict() == {"test": 1, "train": 2}
    truth, _ = load_truth(tmp_path / "truth.csv")
    assert truth.set_index("patient_id")["er"].to_dict() == (
        clinical.set_index("patient_id")["er"].to_dict()
    )
    # a share outside (0, 1): a clear error and no cohort folder left behind
    bad = tmp_path / "bad"
    assert (
        cli.main(["synth", str(bad), "--n-train", "4", "--n-test", "2", "--er-share", "1.5", "0.2"])
        == 2
    )
    assert "strictly between 0 and 1, not 1.5" in capsys.readouterr().err
    assert not bad.exists()
    assert not (tmp_path / ".bad.partial").exists()


def test_er_share_default_is_the_papers():
    from recur import config

    assert config.defaults()["synthetic"]["er_share"] == PAPER_ER_SHARE


def test_ceilings_are_ordered(latent2000: pd.DataFrame):
    tr = latent2000[latent2000["cohort"] == "train"]
    ceil = outcome_ceilings(tr, n_mc=40, seed=0)
    assert 0.58 < ceil["clinical"] < ceil["clinical_pre"] - 0.04
    assert ceil["clinical_pre"] < ceil["all"] - 0.04
    assert ceil["all"] < 0.95


def test_information_ceilings_grow_with_information(latent2000: pd.DataFrame):
    tr = latent2000[latent2000["cohort"] == "train"]
    c = information_ceilings(tr, n_mc=30, seed=0)
    # more information, higher ceiling; everything = the AUC of p itself
    assert c["Clinical"] < c["Clinical+Pre"] < c["Clinical+PrePost"] <= c["all"] + 0.01
    assert c["Pre"] < c["PrePost"] - 0.03
    assert c["Pre"] < c["Clinical+Pre"]
    assert abs(c["Clinical+PrePost"] - c["all"]) < 1e-9  # nothing left to integrate out
    # without the satellite nodule: lower than with it; the margin still adds on top
    assert c["Pre_without_satellite"] < c["Pre"] - 0.01
    assert c["PrePost_without_satellite"] < c["PrePost"] - 0.01
    assert c["Pre_without_satellite"] < c["PrePost_without_satellite"] - 0.03
    with pytest.raises(ValueError, match="lacks"):
        information_ceilings(tr.drop(columns=["margin_mm"]))


def test_information_scores_are_conditional_means_of_the_risk(latent2000: pd.DataFrame):
    tr = latent2000[latent2000["cohort"] == "train"].iloc[:300]
    s = information_scores(tr, n_mc=30, seed=0)
    assert list(s.columns) == [*INFORMATION_SETS, "all"]
    assert s.index.equals(tr.index)
    p = risk_components(tr, tr, tr)["p"].to_numpy()
    np.testing.assert_allclose(s["all"], p)
    np.testing.assert_allclose(s["Clinical+PrePost"], p)  # every part known: p itself
    # a conditional mean keeps the mean of p (tower rule) but varies less than p
    for name in ("Clinical", "Pre", "PrePost"):
        assert abs(s[name].mean() - p.mean()) < 0.02, name
        assert s[name].std() < p.std(), name
    assert s["Pre"].std() < s["PrePost"].std()


def test_blank_cells_rate():
    clin = sample_clinical(np.random.default_rng(0), 4000, SITE_PROFILES["siteA"])
    out = blank_cells(np.random.default_rng(1), clin)
    rate = out["afp_ng_ml"].isna().mean()
    assert 0.012 < rate < 0.03
    assert out["tumor_size_cm"].notna().all()
    assert out["tumor_number"].notna().all()


# --------------------------------------------------------------------------- written cohort
@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "cohort"
    write_cohort(
        root,
        SyntheticSettings.defaults(n_train=N_TRAIN, n_test=tuple(N_TEST), seed=SEED, er_share=None),
        workers=2,
    )
    return root


def _read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _series_dir(root: Path, pid: str, tp: str, phase: str) -> Path:
    ser = pd.read_csv(root / "series.csv")
    row = contract.series_row(ser, pid, tp, phase)
    return root / row["dicom_dir"]


@pytest.mark.slow
def test_cohort_layout_and_contract(cohort: Path):
    assert sorted(p.name for p in cohort.iterdir()) == [
        "clinical.csv",
        "dicom",
        "rois",
        "rois.csv",
        "series.csv",
    ]
    assert (cohort.parent / "truth.csv").is_file()
    assert not any(p.name.startswith(".") for p in cohort.parent.iterdir())  # no leftovers
    c = contract.load_cohort(cohort, *SYNTHETIC_TABLES.values())
    planned = planned_patients(N_TRAIN, N_TEST)
    assert c.patients == list(planned["patient_id"])
    assert list(c.clinical["site"]) == list(planned["site"])
    assert len(c.series) == 8 * len(planned)
    assert len(c.rois) == 2 * len(planned)
    for col in ("dicom_dir",):
        assert not c.series[col].str.startswith("/").any()


@pytest.mark.slow
def test_dicom_files_are_valid_mr_with_fake_identifiers(cohort: Path):
    ser = pd.read_csv(cohort / "series.csv")
    dates = {}
    syntaxes = set()
    for _, row in ser.iterrows():
        files = sorted((cohort / row["dicom_dir"]).iterdir())
        ds = pydicom.dcmread(files[0])
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "MR"
        assert ds.BitsAllocated == 16
        assert ds.PixelRepresentation == 0
        assert ds.SeriesInstanceUID == row["series_uid"]
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        for kw in (
            "MagneticFieldStrength",
            "RepetitionTime",
            "EchoTime",
            "FlipAngle",
            "Manufacturer",
            "ManufacturerModelName",
            "SpacingBetweenSlices",
        ):
            assert kw in ds, kw
        # fake identifying values, present so that de-identification can be tested
        assert str(ds.PatientName).split("^")[0] in _LAST
        assert ds.PatientID.startswith("FKMRN")
        assert ds.AccessionNumber.startswith("FKACC")
        assert "FAKE" in ds.InstitutionName
        assert ds.StationName.startswith("FKSTN")
        assert ds.DeviceSerialNumber.startswith("FKSN")
        assert str(ds.ReferringPhysicianName).startswith("FAKEDOC")
        assert len(ds.PatientBirthDate) == 8
        block = ds.private_block(0x0029, _PRIVATE_CREATOR)
        assert block[0x10].value.startswith("FAKEPRIV-")
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        dates[(row["patient_id"], row["timepoint"])] = ds.StudyDate
        assert ds.StudyDate == ds.AcquisitionDate
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"} <= syntaxes  # plain and RLE
    for pid in ser["patient_id"].unique():
        pre = pd.Timestamp(dates[(pid, "pre")])
        post = pd.Timestamp(dates[(pid, "post")])
        assert 27 <= (post - pre).days <= 35


@pytest.mark.slow
def test_acquisition_time_and_numbering(cohort: Path):
    times = []
    for phase in PHASES:
        ds = pydicom.dcmread(next(_series_dir(cohort, "P0001", "pre", phase).iterdir()))
        times.append(float(ds.AcquisitionTime))
        assert ds.SeriesDescription
    assert times == sorted(times)
    assert len(set(times)) == 4
    folder = _series_dir(cohort, "P0001", "pre", "DP")
    files = sorted(folder.iterdir())  # by name
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    inst = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
    assert z != sorted(z)
    assert z != sorted(z, reverse=True)
    assert sorted(inst) == list(range(1, len(files) + 1))
    # InstanceNumber 1 is the most cranial slice
    assert z[inst.index(1)] == max(z)


@pytest.mark.slow
def test_sitk_geometry_matches_masks(cohort: Path):
    c = contract.load_cohort(cohort, *SYNTHETIC_TABLES.values())
    for pid in c.patients:
        for tp in TIMEPOINTS:
            mask = sitk.ReadImage(str(contract.roi_path(c.rois, c.root, pid, tp)))
            assert mask.GetPixelID() == sitk.sitkUInt8
            for phase in PHASES:
                img = _read_series(_series_dir(cohort, pid, tp, phase))
                assert img.GetSize() == mask.GetSize()
                np.testing.assert_allclose(img.GetSpacing(), mask.GetSpacing(), atol=1e-4)
                np.testing.assert_allclose(img.GetOrigin(), mask.GetOrigin(), atol=1e-4)
                np.testing.assert_allclose(img.GetDirection(), mask.GetDirection(), atol=1e-4)


@pytest.mark.slow
def test_masks_nonempty_in_liver(cohort: Path):
    truth, _ = load_truth(cohort.parent / "truth.csv")
    for i, row in enumerate(truth.to_dict("records")):
        anatomy = PatientAnatomy(row, random_stream(SEED, 100, i + 1))
        for tp in TIMEPOINTS:
            mask_img = sitk.ReadImage(str(cohort / "rois" / f"{row['patient_id']}_{tp}.nii.gz"))
            mask = sitk.GetArrayFromImage(mask_img)
            assert set(np.unique(mask)) == {0, 1}
            assert mask.sum() >= 5
            grid = Grid(mask_img.GetOrigin(), mask_img.GetSpacing(), mask_img.GetSize())
            labels = anatomy.rasterise(grid, tp)
            ring = sitk.GetArrayFromImage(sitk.BinaryDilate(mask_img, [3, 3, 1])).astype(
                bool
            ) & ~mask.astype(bool)
            around = labels[ring]
            liverish = np.isin(
                around,
                (
                    LIVER,
                    PERITUMORAL,
                    ZONE_RIM,
                    HVEIN,
                    PORTAL,
                    CAPSULE,
                    SATELLITE,
                    TUMOUR,
                ),
            )
            assert liverish.mean() > 0.8, (row["patient_id"], tp, liverish.mean())


@pytest.mark.slow
def test_truth_table(cohort: Path):
    truth = pd.read_csv(cohort.parent / "truth.csv")
    assert len(truth) == 8 * (N_TRAIN + sum(N_TEST))
    patients, motion = load_truth(cohort.parent / "truth.csv")
    clinical = pd.read_csv(cohort / "clinical.csv")
    assert list(patients["patient_id"]) == list(clinical["patient_id"])
    assert (patients["er"].to_numpy() == clinical["er"].to_numpy()).all()
    for col in (
        "p",
        "logit",
        "margin_mm",
        "rim_aphe",
        "capsule",
        "heterogeneity",
        "satellite",
        "peritumoral",
        "clinical_component",
        "pre_image_component",
        "post_image_component",
    ):
        assert col in patients.columns, col
        assert patients[col].notna().all(), col
    dp = motion[motion["phase"] == "DP"]
    assert (
        dp[
            ["angle_x", "angle_y", "angle_z", "translation_x", "translation_y", "translation_z"]
        ].to_numpy()
        == 0
    ).all()
    # the recorded ROI centroid is the centroid of the mask in physical coordinates
    for _, row in dp.iterrows():
        img = sitk.ReadImage(
            str(cohort / "rois" / f"{row['patient_id']}_{row['timepoint']}.nii.gz")
        )
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(img)
        np.testing.assert_allclose(
            stats.GetCentroid(1),
            row[["roi_centroid_x", "roi_centroid_y", "roi_centroid_z"]].astype(float),
            atol=1e-3,
        )


def _corr_after(moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform) -> float:
    res = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    a = sitk.GetArrayFromImage(res)
    b = sitk.GetArrayFromImage(sitk.Cast(fixed, sitk.sitkFloat32))
    keep = (a > 0) & (b > 0)
    keep[:3] = keep[-3:] = False  # edge slices may be partly outside
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


@pytest.mark.slow
def test_recorded_motion_moves_the_anatomy(cohort: Path):
    """Resampling a phase with the recorded T onto DP aligns it better than identity or T^-1."""
    _, motion = load_truth(cohort.parent / "truth.csv")
    checked = 0
    for _, row in motion[motion["phase"] != "DP"].iterrows():
        shift = np.abs(row[["translation_x", "translation_y", "translation_z"]].astype(float))
        if shift.max() < 2.5:
            continue
        fixed = _read_series(_series_dir(cohort, row["patient_id"], row["timepoint"], "DP"))
        moving = _read_series(
            _series_dir(cohort, row["patient_id"], row["timepoint"], row["phase"])
        )
        t = Motion(
            tuple(row[["center_x", "center_y", "center_z"]].astype(float)),
            tuple(row[["angle_x", "angle_y", "angle_z"]].astype(float)),
            tuple(row[["translation_x", "translation_y", "translation_z"]].astype(float)),
        ).transform()
        c_t = _corr_after(moving, fixed, t)
        c_id = _corr_after(moving, fixed, sitk.Transform(3, sitk.sitkIdentity))
        c_inv = _corr_after(moving, fixed, t.GetInverse())
        assert c_t > c_id + 0.01, (row.to_dict(), c_t, c_id)
        assert c_t > c_inv + 0.01, (row.to_dict(), c_t, c_inv)
        checked += 1
        if checked == 4:
            break
    assert checked >= 2


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_same_seed_identical_other_seed_different(cohort: Path, tmp_path: Path):
    latent = sample_latent(N_TRAIN, N_TEST, SEED, er_share=None)
    # first patient of siteC: it stores half its series RLE-compressed, whose encoder must not
    # draw fresh random UIDs
    rle = N_TRAIN + N_TEST[0]
    row = latent.iloc[rle].to_dict()
    again = write_patient((row, SEED, rle + 1, str(tmp_path / "again_rle"), "nifti"))
    pid = row["patient_id"]
    syntaxes = {
        str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        for f in (cohort / "dicom" / pid).rglob("*")
        if f.is_file()
    }
    assert str(pydicom.uid.RLELossless) in syntaxes, "the siteC patient has no RLE series"
    assert again["series"]
    assert _tree_hash(tmp_path / "again_rle" / "dicom" / pid) == _tree_hash(cohort / "dicom" / pid)
    row = latent.iloc[N_TRAIN].to_dict()  # first patient of siteB (written by a worker)
    pid = row["patient_id"]
    res = write_patient((row, SEED, N_TRAIN + 1, str(tmp_path / "again"), "nifti"))
    assert _tree_hash(tmp_path / "again" / "dicom" / pid) == _tree_hash(cohort / "dicom" / pid)
    assert (tmp_path / "again" / "rois" / f"{pid}_pre.nii.gz").read_bytes() == (
        cohort / "rois" / f"{pid}_pre.nii.gz"
    ).read_bytes()
    ser = pd.read_csv(cohort / "series.csv")
    assert [r["series_uid"] for r in res["series"]] == list(
        ser[ser["patient_id"] == pid]["series_uid"]
    )
    # tables: regenerate the clinical table alone
    clin = blank_cells(random_stream(SEED, 99), latent.loc[:, list(CLINICAL_COLUMNS)])
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    assert (tmp_path / "clinical.csv").read_bytes() == (cohort / "clinical.csv").read_bytes()
    # a different seed gives different pixels and uids
    other = write_patient((row, SEED + 1, N_TRAIN + 1, str(tmp_path / "other"), "nifti"))
    assert _tree_hash(tmp_path / "other" / "dicom" / pid) != _tree_hash(cohort / "dicom" / pid)
    assert other["series"][0]["series_uid"] != res["series"][0]["series_uid"]


def test_write_cohort_refuses_bad_sizes_and_leaves_nothing(tmp_path: Path):
    with pytest.raises(RecurError, match="external test sites"):
        write_cohort(
            tmp_path / "cohort",
            SyntheticSettings.defaults(n_train=4, n_test=(2,) * 6, seed=1, er_share=None),
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_synth_reports_bad_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from recur.cli import main as cli

    rc = cli.main(["synth", str(tmp_path / "c"), "--n-train", "4", "--n-test", *["1"] * 6])
    assert rc == 2
    assert "at most 5 external test sites" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_same_bytes_whatever_the_blas_thread_count(tmp_path: Path):
    """Multi-threaded BLAS may round differently; the generator must not depend on it."""
    from threadpoolctl import threadpool_limits

    latent = sample_latent(N_TRAIN, N_TEST, SEED, er_share=None)
    index = N_TRAIN + N_TEST[0]  # a siteC patient (RLE series too)
    row = latent.iloc[index].to_dict()
    hashes = []
    for n in (1, 2):
        with threadpool_limits(limits=n, user_api="blas"):
            write_patient((row, SEED, index + 1, str(tmp_path / f"blas{n}"), "nifti"))
        hashes.append(_tree_hash(tmp_path / f"blas{n}" / "dicom" / row["patient_id"]))
    assert hashes[0] == hashes[1]


def test_information_without_satellite_ignores_the_satellite(latent2000: pd.DataFrame):
    """The satellite nodule is integrated out of the *_without_satellite sets: flipping every
    patient's satellite leaves them unchanged (same seed, same draws) but moves Pre."""
    tr = latent2000[latent2000["cohort"] == "train"].iloc[:50]
    flipped = tr.assign(satellite=1 - tr["satellite"])
    a = information_scores(tr, n_mc=5, seed=3)
    b = information_scores(flipped, n_mc=5, seed=3)
    for name in ("Pre_without_satellite", "PrePost_without_satellite", "Clinical"):
        np.testing.assert_allclose(a[name], b[name], err_msg=name)
    assert not np.allclose(a["Pre"], b["Pre"])


def test_latent_features_by_hand():
    lat = pd.DataFrame(
        {
            "tumor_size_cm": [1.0, math.e],
            "tumor_number": [1, 2],
            "afp_ng_ml": [1.0, math.e**2],
            "hbv": [0, 1],
            "tp_g_l": [70.0, 60.0],
            "rim_aphe": [1, 0],
            "capsule": [0, 1],
            "heterogeneity": [0.25, 0.75],
            "satellite": [1, 0],
            "peritumoral": [0, 1],
            "margin_mm": [-7.0, 12.0],
        }
    )
    np.testing.assert_allclose(latent_features(lat, ("size",)), [[0.0], [1.0]])
    np.testing.assert_allclose(
        latent_features(lat, ("size", "clinical_rest")),
        [[0.0, 0.0, 0.0, 0.0, 70.0], [1.0, 1.0, 2.0, 1.0, 60.0]],
    )
    # PRE_LATENTS order: rim_aphe, capsule, heterogeneity, satellite, peritumoral
    np.testing.assert_allclose(
        latent_features(lat, ("pre_no_satellite", "post")),
        [[1, 0, 0.25, 0, -4.0], [0, 1, 0.75, 1, 10.0]],  # margin clipped to [-4, 10]
    )
    assert latent_features(lat, ("size", "pre", "post")).shape == (2, 7)
    with pytest.raises(ValueError, match=r"lacks \['margin_mm'\]"):
        latent_features(lat.drop(columns=["margin_mm"]), ("size", "post"))
    # a part not asked for may be missing
    assert latent_features(lat.drop(columns=["margin_mm"]), ("size",)).shape == (2, 1)


def test_learnable_ceilings(latent2000: pd.DataFrame):
    all_train = latent2000[latent2000["cohort"] == "train"]
    tr, te = all_train.iloc[:1500], all_train.iloc[1500:]
    got = learnable_ceilings(tr, te)
    assert set(got) == set(INFORMATION_SETS)
    ceil = information_ceilings(te, n_mc=30, seed=0)
    for name in ("Pre", "PrePost", "Clinical+PrePost"):
        # learning the weights costs something, but with many patients little
        assert ceil[name] - 0.06 < got[name] < ceil[name] + 0.03, name
    assert got["Pre_without_satellite"] < got["Pre"]
    assert got["Pre"] < got["PrePost"]
    with pytest.raises(ValueError, match="both outcomes"):
        learnable_ceilings(tr.assign(er=0), te)
