"""Radiomics models: the filter, the penalised pipeline, the fusion, storage and leakage
(selection and fit see the training patients only)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recur.cli.main import main as cli_main
from recur.constants import CLINICAL_FEATURES, RADIOMICS_MODELS, SCORE_COLUMNS
from recur.errors import RecurError
from recur.models.tabular import TabularSettings
from recur.radiomics import model as rm
from recur.radiomics.settings import ModelSettings
from recur.settings import section_defaults, section_json


def toy_cohort(n_train=60, n_tune=20, n_test=20, p=30, seed=0):
    """Wide radiomics features (pre and post) with a planted signal in two of them, a
    clinical table and a split."""
    rng = np.random.default_rng(seed)
    n = n_train + n_tune + n_test
    ids = [f"P{i:03d}" for i in range(n)]
    er = (rng.random(n) < 0.4).astype(int)
    er[:2], er[2:4] = 1, 0
    X = rng.normal(size=(n, p))
    X[:, 0] += 1.5 * er  # a pre-ablation signal
    X[:, 1] = X[:, 0] + 0.01 * rng.normal(size=n)  # a near copy of it
    X[:, 2] = 7.0  # constant
    X[:, -1] += 1.5 * er  # a post-ablation signal
    names = [f"pre_DP_tumour__f{j:02d}" for j in range(p - 5)]
    names += [f"post_DP_zone__f{j:02d}" for j in range(5)]
    wide = pd.DataFrame(X, index=pd.Index(ids, name="patient_id"), columns=names)
    split = pd.DataFrame(
        {
            "patient_id": ids,
            "site": ["siteA"] * (n_train + n_tune) + ["siteB"] * n_test,
            "cohort": ["train"] * (n_train + n_tune) + ["test"] * n_test,
            "split": ["train"] * n_train + ["tune"] * n_tune + ["test"] * n_test,
        }
    )
    clinical = pd.DataFrame(
        {
            "patient_id": ids,
            "er": er,
            "tumor_size_cm": np.round(2.5 + 0.5 * er + 0.5 * rng.random(n), 1),
            "tumor_number": 1,
            "hbv": rng.integers(0, 2, n),
            "tp_g_l": np.round(rng.uniform(60, 80, n), 1),
            "afp_ng_ml": np.round(rng.uniform(1, 400, n), 1),
        }
    )
    return wide, split, clinical


SETTINGS = ModelSettings.defaults(cs=6, cv_folds=3)


def test_filter_drops_constants_and_correlated_copies_keeps_the_stronger():
    wide, _split, clinical = toy_cohort()
    X = wide.to_numpy()
    y = clinical["er"].to_numpy()
    f = rm.CorrelationFilter(0.9).fit(X, y)
    kept = set(np.flatnonzero(f.support_))
    assert 2 not in kept  # constant
    assert (0 in kept) != (1 in kept)  # one of the two near copies
    assert f.transform(X).shape == (len(X), len(kept))
    # every pair kept is below the threshold
    from scipy.stats import spearmanr

    rho = np.abs(spearmanr(X[:, sorted(kept)]).statistic)
    np.fill_diagonal(rho, 0)
    assert rho.max() <= 0.9


def test_models_find_the_planted_signal_and_score_every_patient():
    wide, split, clinical = toy_cohort()
    for model in rm.MODEL_TIMEPOINTS:
        pipe, pred, feats = rm.fit_radiomics_model(model, wide, split, clinical, SETTINGS)
        assert list(pred.columns) == list(SCORE_COLUMNS)
        assert list(pred["patient_id"]) == list(split["patient_id"])
        assert pred["score"].between(0, 1).all()
        sel = rm.selected_features(pipe, feats, model)
        assert not sel.empty
        assert (sel["coefficient"] != 0).all()
        assert sel["feature"].iloc[0].split("__")[1] in ("f00", "f01", "f04"), model
        if model == "Radiomics_Pre":
            assert all(f.startswith("pre_") for f in feats)
        else:
            assert any(f.startswith("post_") for f in feats)
        s = rm.selection_summary(pipe, feats, model)
        assert s["n_selected"] <= s["n_after_filter"] < s["n_features"] == len(feats)
        assert s["l1_ratio"] in SETTINGS.l1_ratios


def test_selection_and_fit_see_the_training_patients_only():
    """Leakage: changing every tuning and test patient's features and outcome leaves the
    fitted filter, penalty, coefficients and the training patients' scores unchanged, and the
    out-of-fold signature of the training patients too."""
    wide, split, clinical = toy_cohort()
    other_w, other_c = wide.copy(), clinical.copy()
    held = (split["split"] != "train").to_numpy()
    rng = np.random.default_rng(5)
    other_w.loc[held] = rng.normal(size=(held.sum(), wide.shape[1])) * 50
    other_c.loc[held, "er"] = 1 - other_c.loc[held, "er"]
    train = ~held
    for model in rm.MODEL_TIMEPOINTS:
        a, pa, _ = rm.fit_radiomics_model(model, wide, split, clinical, SETTINGS)
        b, pb, _ = rm.fit_radiomics_model(model, other_w, split, other_c, SETTINGS)
        assert (a.named_steps["filter"].support_ == b.named_steps["filter"].support_).all()
        np.testing.assert_array_equal(
            a.named_steps["logistic"].coef_, b.named_steps["logistic"].coef_
        )
        np.testing.assert_array_equal(pa["score"][train], pb["score"][train])
    oa = rm.out_of_fold_scores(rm.FUSED, wide, split, clinical, SETTINGS)
    ob = rm.out_of_fold_scores(rm.FUSED, other_w, split, other_c, SETTINGS)
    pd.testing.assert_series_equal(oa, ob)
    assert set(oa.index) == set(split.loc[train, "patient_id"])


def test_out_of_fold_scores_differ_from_in_sample_and_fusion_uses_them():
    wide, split, clinical = toy_cohort()
    _, pred, _ = rm.fit_radiomics_model(rm.FUSED, wide, split, clinical, SETTINGS)
    oof = rm.out_of_fold_scores(rm.FUSED, wide, split, clinical, SETTINGS)
    assert oof.notna().all()
    in_sample = pred.set_index("patient_id").loc[oof.index, "score"]
    assert not np.allclose(in_sample.to_numpy(), oof.to_numpy())
    fusion = TabularSettings.defaults("dl_clinical")
    model, fused, feats = rm.fit_fusion_model(pred, oof, split, clinical, fusion)
    assert feats == [*CLINICAL_FEATURES, "Radiomics_PrePost_signature"]
    assert list(fused.columns) == list(SCORE_COLUMNS)
    coef = rm.fusion_coefficients(model, "Radiomics_Clinical")
    assert "Radiomics_PrePost_signature" in set(coef["feature"])


def test_out_of_fold_scores_of_a_cohort_with_two_events_use_a_fixed_penalty():
    wide, split, clinical = toy_cohort(n_train=8)
    train = split.loc[split["split"] == "train", "patient_id"]
    er = clinical.set_index("patient_id")["er"]
    er.loc[train] = [1, 1, 0, 0, 0, 0, 0, 0]  # 2 events: a 2-fold split leaves 1 per fit set
    clinical["er"] = er.to_numpy()
    oof = rm.out_of_fold_scores(rm.FUSED, wide, split, clinical, SETTINGS)
    assert oof.notna().all()
    assert oof.index.tolist() == train.tolist()
    pipe = rm.fixed_penalty_pipeline(SETTINGS)
    assert np.isclose(pipe.named_steps["logistic"].C, 10 ** np.mean(rm.C_RANGE))


def test_missing_features_are_imputed_and_a_single_class_is_refused():
    wide, split, clinical = toy_cohort()
    wide.iloc[5, 3] = np.nan
    wide["pre_DP_tumour__only_some"] = np.nan  # a feature no training patient has
    _pipe, pred, _feats = rm.fit_radiomics_model("Radiomics_Pre", wide, split, clinical, SETTINGS)
    assert pred["score"].notna().all()
    one = clinical.assign(er=0)
    with pytest.raises(RecurError, match="fewer than 2"):
        rm.fit_radiomics_model("Radiomics_Pre", wide, split, one, SETTINGS)
    with pytest.raises(RecurError, match="no radiomics features"):
        rm.fit_radiomics_model("Radiomics_Pre", wide.iloc[3:], split, clinical, SETTINGS)


def test_radiomics_models_command_writes_predictions_models_and_selection(tmp_path):
    wide, split, clinical = toy_cohort()
    feats = []
    for pid, row in wide.iterrows():
        f = tmp_path / "radiomics" / f"{pid}.csv"
        f.parent.mkdir(exist_ok=True)
        pd.DataFrame({"feature": row.index, "value": row.to_numpy()}).to_csv(f, index=False)
        feats.append(str(f))
    clinical.merge(split[["patient_id", "site", "cohort"]]).assign(
        rfs_months=np.where(clinical["er"] == 1, 12.0, 30.0), rfs_event=clinical["er"]
    ).to_csv(tmp_path / "clinical.csv", index=False)
    split.to_csv(tmp_path / "split.csv", index=False)
    outs = [str(tmp_path / f"{m}.csv") for m in RADIOMICS_MODELS]
    dirs = [str(tmp_path / "models" / m) for m in RADIOMICS_MODELS]
    rad = section_defaults("radiomics", cs=6, cv_folds=3)
    rc = cli_main(
        [
            "radiomics-models",
            "--clinical",
            str(tmp_path / "clinical.csv"),
            "--split",
            str(tmp_path / "split.csv"),
            "--features",
            *feats,
            "--radiomics-settings",
            json.dumps(rad),
            "--settings",
            section_json(section_defaults("dl_clinical")),
            "--out",
            *outs,
            "--model-dir",
            *dirs,
            "--selected",
            str(tmp_path / "selected.csv"),
        ]
    )
    assert rc == 0
    for out in outs:
        pred = pd.read_csv(out)
        assert list(pred.columns) == list(SCORE_COLUMNS)
        assert len(pred) == len(split)
    sel = pd.read_csv(tmp_path / "selected.csv")
    assert set(sel["model"]) == set(RADIOMICS_MODELS)
    for m, d in zip(RADIOMICS_MODELS[:2], dirs[:2], strict=True):
        pipe, info = rm.load_pipeline(f"{d}/model.skops", f"{d}/manifest.json")
        assert info["selection"]["model"] == m
        ids = pd.read_csv(outs[RADIOMICS_MODELS.index(m)])
        np.testing.assert_allclose(
            rm.score(pipe, wide.loc[ids["patient_id"]], info["features"]),
            ids["score"],
            rtol=1e-5,
        )
    # a tampered model file is refused
    path = tmp_path / "models" / "Radiomics_Pre" / "model.skops"
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(RecurError, match="sha256"):
        rm.load_pipeline(path, path.with_name("manifest.json"))
