"""Leakage: splits are disjoint per patient; no statistic crosses patients or splits (item 7).

Read-only checks on the ``tiny_study`` run (26 patients), plus crops recomputed in a scratch
dir from one patient's own files, and the Clinical pipeline refitted with the tune and test
rows changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from recur.cli.main import main as recur_main
from recur.cohort import split
from recur.constants import CLINICAL_FEATURES, DL_MODELS, PHASES, TIMEPOINTS
from recur.models import tabular
from recur.settings import section_defaults, section_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tiny_run: Path) -> Path:
    return tiny_run


def _split(study: Path) -> pd.DataFrame:
    return pd.read_csv(study / "results" / "splits" / "split.csv", dtype={"patient_id": str})


def test_train_tune_test_are_disjoint_and_cover_every_patient(study: Path):
    s = _split(study)
    patients = pd.read_csv(study / "results" / "cohort" / "patients.csv", dtype=str)
    assert s["patient_id"].is_unique
    assert set(s["patient_id"]) == set(patients["patient_id"])
    groups = {k: set(g["patient_id"]) for k, g in s.groupby("split")}
    assert set(groups) == {"train", "tune", "test"}
    assert not groups["train"] & groups["tune"]
    assert not groups["train"] & groups["test"]
    assert not groups["tune"] & groups["test"]
    # the external test cohort is never used for training or tuning
    assert set(s.loc[s["cohort"] == "test", "split"]) == {"test"}
    assert set(s.loc[s["cohort"] == "train", "split"]) == {"train", "tune"}


def test_a_patients_phases_and_time_points_stay_together(study: Path):
    """One crops file per patient holds both time points and all four phases, and every
    model scores each patient once, under the patient's split."""
    s = _split(study).set_index("patient_id")
    for p in s.index:
        with np.load(study / "results" / "crops" / f"{p}.npz", allow_pickle=False) as z:
            assert z["crops"].shape[:3] == (2, len(PHASES), 3), p
    for model in DL_MODELS:
        scores = pd.read_csv(
            study / "results" / "models" / model / "full" / "scores.csv", dtype={"patient_id": str}
        )
        assert scores["patient_id"].is_unique
        own = s.loc[scores["patient_id"], "split"].to_numpy()
        assert (scores["split"].to_numpy() == own).all(), model


def test_out_of_fold_signatures_come_from_models_that_did_not_see_the_patient(study: Path):
    s = _split(study)
    clinical = study / "results" / "synthetic" / "cohort" / "clinical.csv"
    er = split.read_outcome(clinical)
    folds = split.crossfit_folds(s, er, k=2, seed=42)
    for model in DL_MODELS:
        oof = pd.read_csv(
            study / "results" / "predictions" / "oof" / f"{model}.csv", dtype={"patient_id": str}
        ).set_index("patient_id")
        for k in range(2):
            held = set(folds.index[folds == k])
            scores = pd.read_csv(
                study / "results" / "models" / model / str(k) / "scores.csv",
                dtype={"patient_id": str},
            ).set_index("patient_id")
            fold_train = set(scores.index)
            # the fold model scored its held-out patients, and those got that score (the
            # network's output: ``score`` is its recalibration on the tuning split)
            assert held <= fold_train | held
            for p in held:
                assert p in scores.index, (model, k, p)
                assert oof.loc[p, "raw_score"] == pytest.approx(scores.loc[p, "score"], rel=1e-6)


def _registered_copy(study: Path, patient: str, dest: Path) -> dict[str, Path]:
    out = {}
    for t in TIMEPOINTS:
        d = dest / "registered" / t
        shutil.copytree(study / "results" / "registered" / patient / t, d)
        out[t] = d
        m = dest / "masks" / f"{t}.nii.gz"
        m.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(study / "results" / "masks" / patient / f"{t}.nii.gz", m)
    shutil.copy(study / "results" / "margin" / patient / "post_to_pre.tfm", dest)
    return out


def _crop(work: Path, patient: str, reg: dict[str, Path], out: Path) -> np.ndarray:
    rc = recur_main(
        [
            "crop",
            "--patient",
            patient,
            "--registered-pre",
            str(reg["pre"]),
            "--registered-post",
            str(reg["post"]),
            "--mask-pre",
            str(work / "masks" / "pre.nii.gz"),
            "--mask-post",
            str(work / "masks" / "post.nii.gz"),
            "--out",
            str(out),
            "--settings",  # the crop section of the study's run (the schema's defaults)
            section_json(section_defaults("crop")),
            "--post-to-pre",
            str(work / "post_to_pre.tfm"),
        ]
    )
    assert rc in (0, None)
    with np.load(out, allow_pickle=False) as z:
        return z["crops"]


def test_crops_are_normalised_from_the_patients_own_images(study: Path, tmp_path: Path):
    """A patient's crop is rebuilt from that patient's files alone (no other patient
    present) and equals the workflow's; rescaling the patient's own images leaves it unchanged,
    i.e. the statistics are the patient's own, not a cohort's."""
    patient = _split(study)["patient_id"].iloc[0]
    with np.load(study / "results" / "crops" / f"{patient}.npz", allow_pickle=False) as z:
        reference = z["crops"]
    reg = _registered_copy(study, patient, tmp_path)
    alone = _crop(tmp_path, patient, reg, tmp_path / "alone.npz")
    np.testing.assert_array_equal(alone, reference)
    for t in TIMEPOINTS:  # affine change of this patient's intensities
        for phase in PHASES:
            f = reg[t] / f"{phase}.nii.gz"
            img = sitk.Cast(sitk.ReadImage(str(f)), sitk.sitkFloat32)
            sitk.WriteImage(img * 3.0 + 250.0, str(f))
    rescaled = _crop(tmp_path, patient, reg, tmp_path / "rescaled.npz")
    np.testing.assert_allclose(rescaled, reference, atol=1e-3)


@pytest.mark.parametrize("estimator", ["extra_trees", "logistic"])
def test_clinical_imputer_and_model_are_fitted_on_the_train_split_only(estimator: str):
    rng = np.random.default_rng(3)
    n = 40
    data = pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "cohort": ["train"] * 30 + ["test"] * 10,
            "split": ["train"] * 24 + ["tune"] * 6 + ["test"] * 10,
            "er": np.r_[np.tile([0, 1], 15), np.tile([0, 1], 5)],
        }
    )
    for f in CLINICAL_FEATURES:
        data[f] = rng.normal(5.0, 1.0, n)
    data.loc[[0, 5, 30], "afp_ng_ml"] = np.nan
    settings = tabular.TabularSettings.defaults(estimator=estimator, n_estimators=20, seed=1)
    features = list(CLINICAL_FEATURES)
    model, pred = tabular.fit_and_score(data, features, settings)
    train_rows = data["split"] == "train"
    expected = data.loc[train_rows, features].median().to_numpy()
    np.testing.assert_allclose(tabular.imputation_values(model, features), expected)
    # change every tune and test value (and add missing ones): the fit does not move
    changed = data.copy()
    other = ~train_rows
    changed.loc[other, features] = 1000.0
    changed.loc[other & (changed.index % 2 == 0), "tumor_size_cm"] = np.nan
    changed.loc[other, "er"] = 1
    model2, pred2 = tabular.fit_and_score(changed, features, settings)
    np.testing.assert_allclose(tabular.imputation_values(model2, features), expected)
    np.testing.assert_allclose(pred2.loc[train_rows, "score"], pred.loc[train_rows, "score"])


def test_workflow_clinical_model_imputer_holds_train_split_medians(study: Path):
    models = study / "results" / "models"
    path = next(models.rglob("Clinical/*.skops"))
    manifest = path.parent / "manifest.json"
    model = tabular.load_model(path, manifest)
    s = _split(study)
    clinical = study / "results" / "synthetic" / "cohort" / "clinical.csv"
    clin = pd.read_csv(clinical, dtype={"patient_id": str})
    train = clin[clin["patient_id"].isin(s.loc[s["split"] == "train", "patient_id"])]
    expected = train[list(CLINICAL_FEATURES)].astype(float).median().to_numpy()
    features = list(CLINICAL_FEATURES)
    np.testing.assert_allclose(tabular.imputation_values(model, features), expected)
    everyone = clin[list(CLINICAL_FEATURES)].astype(float).median().to_numpy()
    assert not np.allclose(everyone, expected), "train and all-patient medians coincide"


def test_radiomics_features_come_from_the_patients_own_files(study: Path, tmp_path: Path):
    """A patient's radiomics features are rebuilt from that patient's registered phases and
    masks alone (no other patient present) by the rule's command and equal the workflow's;
    the whole-volume normalisation makes an affine change of the patient's own intensities
    leave the intensity and texture features (bin width on the normalised scale) unchanged."""
    from recur.radiomics.settings import FeatureSettings

    patient = _split(study)["patient_id"].iloc[1]
    reference = pd.read_csv(study / "results" / "radiomics" / f"{patient}.csv")
    reg = _registered_copy(study, patient, tmp_path)

    def extract(out: Path) -> pd.Series:
        rc = recur_main(
            [
                "radiomics-features",
                "--patient",
                patient,
                "--registered-pre",
                str(reg["pre"]),
                "--registered-post",
                str(reg["post"]),
                "--mask-pre",
                str(tmp_path / "masks" / "pre.nii.gz"),
                "--mask-post",
                str(tmp_path / "masks" / "post.nii.gz"),
                "--params",
                str(Path(__file__).resolve().parents[2] / "radiomics_params.yaml"),
                "--settings",  # the radiomics section of the study's run (the defaults)
                section_json(section_defaults("radiomics"), FeatureSettings),
                "--out",
                str(out),
            ]
        )
        assert rc in (0, None)
        return pd.read_csv(out).set_index("feature")["value"]

    alone = extract(tmp_path / "alone.csv")
    pd.testing.assert_series_equal(alone, reference.set_index("feature")["value"])
    for t in TIMEPOINTS:
        for phase in PHASES:
            f = reg[t] / f"{phase}.nii.gz"
            img = sitk.Cast(sitk.ReadImage(str(f)), sitk.sitkFloat32)
            sitk.WriteImage(img * 3.0 + 250.0, str(f))
    rescaled = extract(tmp_path / "rescaled.csv")
    np.testing.assert_allclose(rescaled.to_numpy(), alone.to_numpy(), rtol=1e-3, atol=1e-3)


def test_workflow_radiomics_models_are_fitted_on_the_train_split_only(study: Path):
    """Refitting the study's radiomics models with every tuning and test patient's features
    and outcome changed gives the same selected features and coefficients as the workflow's
    stored models."""
    from recur.evaluate import readers
    from recur.radiomics import model as rm
    from recur.radiomics.settings import ModelSettings

    s = _split(study)
    clinical = readers.read_clinical(study / "results" / "synthetic" / "cohort" / "clinical.csv")
    tables = {p: pd.read_csv(study / "results" / "radiomics" / f"{p}.csv") for p in s["patient_id"]}
    wide = rm.feature_matrix(tables)
    held = s.loc[s["split"] != "train", "patient_id"]
    wide.loc[held] = np.random.default_rng(0).normal(size=(len(held), wide.shape[1]))
    changed = clinical.copy()
    rows = changed["patient_id"].isin(held)
    changed.loc[rows, "er"] = 1 - changed.loc[rows, "er"]
    settings = ModelSettings.defaults()
    for model in rm.MODEL_TIMEPOINTS:
        folder = study / "results" / "models" / model
        stored, info = rm.load_pipeline(folder / "model.skops", folder / "manifest.json")
        refit, _, feats = rm.fit_radiomics_model(model, wide, s, changed, settings)
        assert feats == info["features"]
        np.testing.assert_array_equal(
            refit.named_steps["filter"].support_, stored.named_steps["filter"].support_
        )
        np.testing.assert_allclose(
            refit.named_steps["logistic"].coef_, stored.named_steps["logistic"].coef_, rtol=1e-9
        )
