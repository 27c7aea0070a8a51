"""recur.models.tabular (Clinical / DL_Clinical ExtraTrees) and the evaluation CLI on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recur.cli import main as cli
from recur.errors import RecurError
from recur.models import tabular
from tests.fixtures import settings_option

SMALL = tabular.TabularSettings.defaults(
    estimator="extra_trees", n_estimators=40, min_samples_leaf=2, seed=1
)


def _cohort(n_train=40, n_tune=12, n_test=14, seed=0):
    """A tiny clinical table + split (er depends on tumour size) and two DL predictions."""
    rng = np.random.default_rng(seed)
    n = n_train + n_tune + n_test
    split = np.array(["train"] * n_train + ["tune"] * n_tune + ["test"] * n_test)
    er = np.tile([1, 0, 0], n // 3 + 1)[:n]
    site = np.where(split == "test", np.where(np.arange(n) % 2, "B", "C"), "A")
    ids = [f"P{i:03d}" for i in range(n)]
    clinical = pd.DataFrame(
        {
            "patient_id": ids,
            "site": site,
            "cohort": np.where(split == "test", "test", "train"),
            "er": er,
            "rfs_months": np.where(er == 1, rng.uniform(2, 23, n), rng.uniform(25, 50, n)),
            "rfs_event": er,
            "tumor_size_cm": np.round(np.clip(1.5 + 1.5 * er + rng.normal(0, 0.5, n), 0.5, 9), 1),
            "tumor_number": rng.integers(1, 3, n),
            "hbv": rng.integers(0, 2, n),
            "tp_g_l": np.round(rng.normal(70, 5, n), 1),
            "afp_ng_ml": np.round(rng.lognormal(3, 1, n), 1),
        }
    )
    clinical.loc[1, "tp_g_l"] = np.nan  # a missing predictor of a training patient
    spl = pd.DataFrame(
        {"patient_id": ids, "site": site, "cohort": clinical["cohort"], "split": split}
    )
    full = {}
    for m, strength in (("Pre", 0.1), ("PrePost", 0.6)):
        s = np.clip(strength * er + rng.uniform(0.1, 0.5, n), 0, 1)
        full[m] = spl[["patient_id", "cohort", "split"]].assign(score=s)
    return clinical, spl, full


def test_clinical_model_fits_on_train_only_and_scores_everyone():
    clinical, split, _ = _cohort()
    # test patients with absurd values: they must not move the imputer's medians
    clinical.loc[split["split"] == "test", "tp_g_l"] = 119.0
    model, pred = tabular.clinical_model(clinical, split, SMALL)
    assert list(pred.columns) == ["patient_id", "cohort", "split", "score"]
    assert list(pred["patient_id"]) == list(split["patient_id"])
    assert pred["score"].between(0, 1).all()
    imputer = model.named_steps["impute"]
    train = clinical[split["split"] == "train"]
    assert imputer.statistics_[3] == pytest.approx(train["tp_g_l"].median())
    assert model.named_steps["trees"].n_features_in_ == 5
    # ER depends on tumour size: the training fit separates the classes well
    tr = pred[pred["split"] == "train"].merge(clinical[["patient_id", "er"]])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(tr["er"], tr["score"]) > 0.9


def test_clinical_model_refuses_single_class_train():
    clinical, split, _ = _cohort()
    clinical.loc[split["split"] == "train", "er"] = 0
    with pytest.raises(RecurError, match="single outcome class"):
        tabular.clinical_model(clinical, split, SMALL)


def test_choose_signature_by_tune_auc_and_tie_rule():
    clinical, _, full = _cohort()
    best, aucs = tabular.choose_signature(full, clinical)
    assert best == "PrePost"
    assert aucs["PrePost"] > aucs["Pre"]
    swapped = {"Pre": full["PrePost"], "PrePost": full["Pre"]}
    assert tabular.choose_signature(swapped, clinical)[0] == "Pre"
    same = {"Pre": full["Pre"], "PrePost": full["Pre"]}
    assert tabular.choose_signature(same, clinical)[0] == "PrePost"


def test_crossfit_uses_oof_for_train_and_full_elsewhere():
    clinical, split, full = _cohort()
    oof = full["PrePost"].assign(score=0.123)
    cf = tabular.signature_values(full["PrePost"], oof, split, "crossfit")
    ins = tabular.signature_values(full["PrePost"], oof, split, "in_sample")
    is_train = (split["split"] == "train").to_numpy()
    assert (cf[is_train] == 0.123).all()
    np.testing.assert_array_equal(
        cf[~is_train].to_numpy(), full["PrePost"]["score"].to_numpy()[~is_train]
    )
    np.testing.assert_array_equal(ins.to_numpy(), full["PrePost"]["score"].to_numpy())
    # different inputs -> different fitted models and predictions
    _, p_cf, feats = tabular.dl_clinical_model(clinical, split, cf, "PrePost_signature", SMALL)
    _, p_in, _ = tabular.dl_clinical_model(clinical, split, ins, "PrePost_signature", SMALL)
    assert feats[-1] == "PrePost_signature"
    assert len(feats) == 6
    assert not np.allclose(p_cf["score"], p_in["score"])
    with pytest.raises(RecurError, match="out-of-fold"):
        tabular.signature_values(full["PrePost"], oof.iloc[1:], split, "crossfit")


def test_signature_is_the_network_output_not_the_recalibrated_score():
    """A DL prediction table's signature is its raw_score; the out-of-fold table must carry
    the same columns."""
    clinical, split, full = _cohort()
    raw = full["PrePost"]
    table = raw.assign(raw_score=raw["score"], score=0.2 + 0.1 * raw["score"])
    oof = table.assign(raw_score=0.123)
    raw_oof = raw.assign(score=0.123)
    for stacking in ("crossfit", "in_sample"):
        sig = tabular.signature_values(table, oof, split, stacking)
        want = tabular.signature_values(raw, raw_oof, split, stacking)
        pd.testing.assert_series_equal(sig, want)
    assert tabular.tune_auc(table, clinical) == tabular.tune_auc(raw, clinical)
    cf = tabular.signature_values(table, oof, split, "crossfit")
    assert (cf[(split["split"] == "train").to_numpy()] == 0.123).all()
    with pytest.raises(RecurError, match="raw_score in one of them only"):
        tabular.signature_values(table, raw, split, "crossfit")


def test_dl_signature_reads_chooses_and_stacks_by_hand(tmp_path):
    """Six patients: on the three tuning patients (C with ER; D, E without) Pre ranks C
    above E only (AUC 0.5), PrePost above both (AUC 1): PrePost's signature is chosen. With
    crossfit stacking the train patients A, B take their out-of-fold scores; the Pre
    out-of-fold table is never read."""
    ids = ["A", "B", "C", "D", "E", "F"]
    split = pd.DataFrame(
        {
            "patient_id": ids,
            "site": "S",
            "cohort": ["train"] * 5 + ["test"],
            "split": ["train", "train", "tune", "tune", "tune", "test"],
        }
    )
    clinical = pd.DataFrame({"patient_id": ids, "er": [0, 1, 1, 0, 0, 1]})

    def write(name: str, scores: list[float], rows: list[str] = ids) -> Path:
        table = split.set_index("patient_id").loc[rows, ["cohort", "split"]].reset_index()
        path = tmp_path / f"{name}.csv"
        table.assign(score=scores).to_csv(path, index=False)
        return path

    full = {
        "Pre": write("Pre", [0.5, 0.5, 0.2, 0.6, 0.1, 0.5]),
        "PrePost": write("PrePost", [0.7, 0.8, 0.9, 0.3, 0.4, 0.55]),
    }
    oof = {"Pre": tmp_path / "absent.csv", "PrePost": write("oof", [0.35, 0.45], ["A", "B"])}
    sig = tabular.dl_signature(full, oof, clinical, split, "crossfit")
    assert (sig.model, sig.name, sig.stacking) == ("PrePost", "PrePost_signature", "crossfit")
    assert sig.tune_auc == {"Pre": 0.5, "PrePost": 1.0}
    assert list(sig.values.index) == ids
    np.testing.assert_allclose(sig.values, [0.35, 0.45, 0.9, 0.3, 0.4, 0.55])
    in_sample = tabular.dl_signature(
        full, {"Pre": None, "PrePost": None}, clinical, split, "in_sample"
    )
    np.testing.assert_allclose(in_sample.values, [0.7, 0.8, 0.9, 0.3, 0.4, 0.55])
    with pytest.raises(RecurError, match="out-of-fold predictions of PrePost"):
        tabular.dl_signature(
            full, {"Pre": oof["PrePost"], "PrePost": None}, clinical, split, "crossfit"
        )


@pytest.mark.slow
def test_feature_importance_and_safe_storage(tmp_path):
    clinical, split, full = _cohort()
    sig = tabular.signature_values(full["PrePost"], None, split, "in_sample")
    model, _, feats = tabular.dl_clinical_model(clinical, split, sig, "sig", SMALL)
    imp = tabular.feature_importance(model, feats)
    assert set(imp["feature"]) == set(feats)
    assert imp["importance"].sum() == pytest.approx(1.0)
    assert imp["importance"].is_monotonic_decreasing
    path, man = tmp_path / "m.skops", tmp_path / "manifest.json"
    tabular.save_model(model, path, man, features=feats, settings=SMALL)
    info = json.loads(man.read_text())
    assert info["features"] == feats
    assert len(info["sha256"]) == 64
    back = tabular.load_model(path, man)
    x = pd.DataFrame({f: [1.0, 2.0] for f in feats}).to_numpy()
    np.testing.assert_array_equal(back.predict_proba(x), model.predict_proba(x))
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(RecurError, match="sha256"):
        tabular.load_model(path, man)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    """Every evaluation command on tiny CSVs, as the rules call them."""
    clinical, split, full = _cohort(n_train=60, n_tune=21, n_test=24)
    d = tmp_path
    clinical.to_csv(d / "clinical.csv", index=False)
    split.to_csv(d / "split.csv", index=False)
    (d / "oof").mkdir()
    for m, p in full.items():
        p.to_csv(d / f"{m}.csv", index=False)
        p.assign(score=np.clip(p["score"] + 0.05, 0, 1)).to_csv(d / "oof" / f"{m}.csv", index=False)
    common = ["--clinical", str(d / "clinical.csv"), "--split", str(d / "split.csv")]
    from recur.settings import section_defaults, section_json

    small = section_defaults("clinical", estimator="extra_trees", n_estimators=30)
    trees = ["--settings", section_json(small)]

    def run(*args):
        assert cli.main([*args]) == 0

    run(
        "clinical-model",
        *common,
        *trees,
        "--out",
        str(d / "Clinical.csv"),
        "--model",
        str(d / "c.skops"),
        "--manifest",
        str(d / "c.json"),
    )
    run(
        "dl-clinical-model",
        *common,
        *trees,
        "--pre",
        str(d / "Pre.csv"),
        "--prepost",
        str(d / "PrePost.csv"),
        "--pre-oof",
        str(d / "oof/Pre.csv"),
        "--prepost-oof",
        str(d / "oof/PrePost.csv"),
        "--out",
        str(d / "DL_Clinical.csv"),
        "--model",
        str(d / "d.skops"),
        "--manifest",
        str(d / "d.json"),
        "--choice",
        str(d / "choice.json"),
        "--importance",
        str(d / "imp.csv"),
        "--stacking",
        "in_sample",
    )
    choice = json.loads((d / "choice.json").read_text())
    assert choice["signature"] == "PrePost"
    assert choice["stacking"] == "in_sample"
    preds = ["--predictions"] + [
        f"{m}={d / m}.csv" for m in ("Clinical", "Pre", "PrePost", "DL_Clinical")
    ]
    run("cutoffs", *common, *preds, "--out", str(d / "cutoffs.csv"))
    run(
        "table2",
        *common,
        *preds,
        "--cutoffs",
        str(d / "cutoffs.csv"),
        *settings_option("evaluate", bootstrap=200),
        "--out",
        str(d / "t2.csv"),
        "--md",
        str(d / "t2.md"),
        "--html",
        str(d / "t2.html"),
    )
    t2 = pd.read_csv(d / "t2.csv")
    assert set(t2["cohort"]) == {"training", "tuning", "external", "B", "C"}
    assert len(t2) == 5 * 4 * 7
    assert "[" in (d / "t2.md").read_text()
    run("delong", *common, *preds, "--out", str(d / "delong.csv"))
    assert len(pd.read_csv(d / "delong.csv")) == 5 * 6
    run(
        "calibration",
        *common,
        *preds,
        *settings_option("evaluate"),
        "--out",
        str(d / "cal.csv"),
        "--figdir",
        str(d / "cal"),
    )
    run(
        "table1",
        "--clinical",
        str(d / "clinical.csv"),
        *settings_option("evaluate"),
        "--out",
        str(d / "t1.csv"),
        "--md",
        str(d / "t1.md"),
    )
    run(
        "figures",
        *common,
        *preds,
        "--kind",
        "km",
        "--cutoffs",
        str(d / "cutoffs.csv"),
        "--outdir",
        str(d / "km"),
        "--table",
        str(d / "km.csv"),
    )
    assert sorted(p.name for p in (d / "km").iterdir()) == sorted(
        f"{c}.{e}" for c in ("training", "tuning", "external", "B", "C") for e in ("png", "pdf")
    )
    run(
        "importance-figure",
        "--importance",
        str(d / "imp.csv"),
        "--png",
        str(d / "i.png"),
        "--pdf",
        str(d / "i.pdf"),
    )
    # a bad input gives exit status 2 and one message, not a traceback
    assert (
        cli.main(
            [
                "cutoffs",
                *common,
                "--predictions",
                f"Pre={d / 'nope.csv'}",
                "--out",
                str(d / "x.csv"),
            ]
        )
        == 2
    )


# --------------------------------------------------------------------------- logistic
def _logistic_data(n=160, seed=4):
    """Training rows whose ER depends on log AFP and a signature; a few missing cells."""
    rng = np.random.default_rng(seed)
    afp = rng.lognormal(3.0, 1.5, n)
    sig = rng.uniform(0.05, 0.95, n)
    size = rng.uniform(1.0, 5.0, n)
    eta = -0.5 + 0.6 * (np.log1p(afp) - 3.0) + 1.2 * np.log(sig / (1 - sig)) + 0.3 * (size - 3)
    er = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(int)
    data = pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "cohort": "train",
            "split": "train",
            "er": er,
            "tumor_size_cm": size,
            "afp_ng_ml": afp,
            "PrePost_signature": sig,
        }
    )
    data.loc[[2, 7], "afp_ng_ml"] = np.nan
    return data, ["tumor_size_cm", "afp_ng_ml", "PrePost_signature"]


def test_logistic_design_transforms_by_hand():
    """Median imputation, then log(1 + AFP) and the signature's log-odds; size as it is."""
    data = pd.DataFrame(
        {
            "tumor_size_cm": [1.0, 2.0, 4.0],
            "afp_ng_ml": [0.0, np.nan, np.e - 1.0],
            "PrePost_signature": [0.5, 0.75, 0.0],
        }
    )
    design = tabular.TabularSettings.defaults(estimator="logistic").design(list(data.columns))
    out = design.fit_transform(data.to_numpy())
    # AFP: the missing cell gets the median of 0 and e - 1, i.e. (e - 1) / 2
    np.testing.assert_allclose(out[:, 0], [1.0, 2.0, 4.0])
    np.testing.assert_allclose(out[:, 1], [0.0, np.log1p((np.e - 1) / 2), 1.0])
    # log-odds: 0.5 -> 0, 0.75 -> log 3, 0 clipped to 1e-6 -> log(1e-6 / (1 - 1e-6))
    np.testing.assert_allclose(out[:, 2], [0.0, np.log(3.0), np.log(1e-6 / (1 - 1e-6))])
    splined = tabular.TabularSettings.defaults(estimator="logistic", spline_knots=4).design(
        ["tumor_size_cm", "hbv"]
    )
    # 4 knots, degree 3: 4 + 3 - 1 = 6 B-splines, less the one that adds to the intercept:
    # 5 columns; hbv (binary) stays one
    assert splined.fit_transform(np.c_[[1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1]]).shape == (4, 6)


def test_logistic_coefficients_match_statsmodels_without_penalty():
    """With the penalty taken away (C -> infinity) the fitted coefficients are the maximum
    likelihood estimates statsmodels finds on the same standardised design."""
    import statsmodels.api as sm

    data, features = _logistic_data()
    pipe = tabular.TabularSettings.defaults(estimator="logistic").pipeline(features)
    pipe.set_params(logistic__Cs=[1e12])
    X, y = data[features].to_numpy(float), data["er"].to_numpy()
    pipe.fit(X, y)
    design = pipe[:-1].transform(X)
    mle = sm.Logit(y, sm.add_constant(design)).fit(disp=0)
    lr = pipe.named_steps["logistic"]
    np.testing.assert_allclose(lr.intercept_[0], mle.params[0], atol=1e-3)
    np.testing.assert_allclose(lr.coef_[0], mle.params[1:], atol=1e-3)
    # the log-odds signature carries the largest weight, as the data were made
    assert np.argmax(np.abs(mle.params[1:])) == 2


def test_logistic_penalty_is_chosen_on_training_rows_and_stored_safely(tmp_path):
    data, features = _logistic_data()
    tune = data.copy().assign(split="tune", patient_id=lambda d: "T" + d["patient_id"])
    both = pd.concat([data, tune], ignore_index=True)
    st = tabular.TabularSettings.defaults(estimator="logistic", cs=5, cv_folds=3)
    model, pred = tabular.fit_and_score(both, features, st)
    lr = model.named_steps["logistic"]
    assert lr.C_ in np.logspace(*tabular.C_RANGE, 5)
    # tune rows moved nothing: the same fit on the training rows alone
    alone, _ = tabular.fit_and_score(data, features, st)
    np.testing.assert_allclose(alone.named_steps["logistic"].coef_, lr.coef_)
    imp = tabular.feature_importance(model, features)
    assert imp["importance"].sum() == pytest.approx(1.0)
    assert imp["feature"].iloc[0] == "PrePost_signature"
    tabular.save_model(
        model, tmp_path / "m.skops", tmp_path / "m.json", features=features, settings=st
    )
    back = tabular.load_model(tmp_path / "m.skops", tmp_path / "m.json")
    np.testing.assert_allclose(tabular.predict_scores(back, both, features), pred["score"])
    assert json.loads((tmp_path / "m.json").read_text())["settings"]["estimator"] == "logistic"


def test_unknown_estimator_is_refused():
    with pytest.raises(RecurError, match="estimator = 'svm'"):
        tabular.TabularSettings.defaults(estimator="svm").pipeline(["tumor_size_cm"])


def test_logistic_folds_shrink_to_the_rarer_class():
    """Four training patients with ER: four folds, not five; one: refused."""
    data, features = _logistic_data(n=40)
    rare = data.index[data["er"] == 1][4:]
    data.loc[rare, "er"] = 0
    model, _ = tabular.fit_and_score(
        data, features, tabular.TabularSettings.defaults(estimator="logistic")
    )
    assert model.named_steps["logistic"].cv == 4
    data.loc[data.index[data["er"] == 1][1:], "er"] = 0
    with pytest.raises(RecurError, match="fewer than 2 patients of a class"):
        tabular.fit_and_score(
            data, features, tabular.TabularSettings.defaults(estimator="logistic")
        )
