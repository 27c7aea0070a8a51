"""End-to-end: the whole workflow on a tiny synthetic cohort, then the HTML report.

One real ``snakemake --cores 2`` run (synthetic DICOM → NIfTI → registration → crops → Pre and
PrePost → Clinical / DL_Clinical → tables, figures, margin) in a scratch working directory,
shared by the tests of this module. Training is shortened by config, nothing else is faked.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recur.constants import (
    DL_MODELS,
    DL_SCORE_COLUMNS,
    MODELS,
    RADIOMICS_MODELS,
    SCORE_COLUMNS,
)

from ..conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tiny_study: Path) -> Path:
    return tiny_study


def test_every_model_scores_every_patient(study: Path):
    patients = pd.read_csv(study / "results/cohort/patients.csv")
    split = pd.read_csv(study / "results/splits/split.csv")
    assert set(split["split"]) == {"train", "tune", "test"}
    for model in (*MODELS, *RADIOMICS_MODELS):
        pred = pd.read_csv(study / f"results/predictions/{model}.csv")
        columns = DL_SCORE_COLUMNS if model in DL_MODELS else SCORE_COLUMNS
        assert list(pred.columns) == list(columns)
        assert sorted(pred["patient_id"]) == sorted(patients["patient_id"])
        assert pred["score"].between(0, 1).all(), model


def test_dl_scores_are_the_stored_recalibration_of_the_network_output(study: Path):
    """predictions/{Pre,PrePost}.csv and their out-of-fold tables: score is the map in
    models/<model>/recalibration.json applied to raw_score (ranks kept); the bundle holds
    the same file."""
    from recur.evaluate.recalibration import read_recalibration

    for model in DL_MODELS:
        path = study / f"results/models/{model}/recalibration.json"
        rec = read_recalibration(path)
        bundled = study / f"results/bundle/models/{model}/recalibration.json"
        assert bundled.read_bytes() == path.read_bytes()
        for table in (f"predictions/{model}.csv", f"predictions/oof/{model}.csv"):
            pred = pd.read_csv(study / "results" / table)
            assert list(pred.columns) == list(DL_SCORE_COLUMNS)
            np.testing.assert_allclose(
                pred["score"], rec.apply(pred["raw_score"]), rtol=1e-6, atol=1e-9
            )
            ordered = pred.sort_values("raw_score")["score"].to_numpy()
            assert (np.diff(ordered) >= 0).all(), table  # an increasing map


def test_both_tabular_estimators_run(study: Path):
    """The tiny config gives Clinical the paper's ExtraTrees and leaves DL_Clinical on the
    default logistic regression: each stored model is the pipeline its manifest names."""
    from recur.models import tabular

    for model, estimator, step in (
        ("Clinical", "extra_trees", "trees"),
        ("DL_Clinical", "logistic", "logistic"),
    ):
        folder = study / "results/models" / model
        info = json.loads((folder / "manifest.json").read_text())
        assert info["settings"]["estimator"] == estimator, model
        fitted = tabular.load_model(folder / "model.skops", folder / "manifest.json")
        assert step in fitted.named_steps, model


def test_table2_is_complete_and_cis_contain_estimates(study: Path):
    t2 = pd.read_csv(study / "results/tables/table2.csv")
    for col in ("cohort", "model", "metric", "estimate", "ci_low", "ci_high"):
        assert col in t2.columns
    metrics = {"auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"}
    assert metrics <= set(t2["metric"].str.lower())
    assert set(MODELS) <= set(t2["model"])
    assert {"training", "tuning", "external", "siteB", "siteC"} <= set(t2["cohort"])
    ok = t2.dropna(subset=["estimate", "ci_low", "ci_high"])
    assert len(ok) > 0.8 * len(t2)
    assert (ok["ci_low"] <= ok["estimate"] + 1e-12).all()
    assert (ok["estimate"] <= ok["ci_high"] + 1e-12).all()


def test_survival_table_has_c_index_and_td_auc_of_the_paper_models(study: Path):
    surv = pd.read_csv(study / "results/tables/survival.csv")
    assert {"cohort", "model", "metric", "estimate", "ci_low", "ci_high", "n", "n_events"} <= set(
        surv.columns
    )
    for kind in ("cox", "binary"):
        rows = surv[(surv["kind"] == kind) & (surv["cohort"] == "external")]
        for model in ("Clinical", "Pre", "PrePost", "DL_Clinical"):
            have = set(rows.loc[rows["model"] == model, "metric"])
            assert {"harrell_c", "uno_c", "td_auc_12", "td_auc_24"} <= have, (kind, model)
    ok = surv.dropna(subset=["estimate"])
    assert len(ok) > 0.5 * len(surv)
    assert (ok["ci_low"] <= ok["estimate"] + 1e-12).all()
    assert (ok["estimate"] <= ok["ci_high"] + 1e-12).all()
    undefined = surv[surv["estimate"].isna()]
    assert (undefined["note"].fillna("") != "").all()  # every undefined value says why
    for name in ("td_auc", "calibration", "km"):
        assert (study / f"results/figures/survival/{name}_external.png").is_file()


def test_radiomics_models_are_evaluated_with_their_selected_features(study: Path):
    """Every patient has its feature table; the three radiomics models are in Table 2,
    DeLong and the survival stage's binary-model rows; the selected features are listed."""
    patients = pd.read_csv(study / "results/cohort/patients.csv")["patient_id"]
    for p in patients:
        table = pd.read_csv(study / f"results/radiomics/{p}.csv")
        assert list(table.columns) == ["feature", "value"]
        assert table["feature"].str.startswith("pre_DP_tumour__").any()
        assert table["feature"].str.startswith("post_DP_ring0-5__").any()
    t2 = pd.read_csv(study / "results/tables/table2.csv")
    assert set(RADIOMICS_MODELS) <= set(t2["model"])
    d = pd.read_csv(study / "results/tables/delong.csv")
    assert set(RADIOMICS_MODELS) <= set(d["model_a"]) | set(d["model_b"])
    surv = pd.read_csv(study / "results/tables/survival.csv")
    assert set(RADIOMICS_MODELS) <= set(surv.loc[surv["kind"] == "binary", "model"])
    sel = pd.read_csv(study / "results/models/radiomics_selected.csv")
    assert {"model", "feature", "coefficient", "odds_ratio_per_sd"} <= set(sel.columns)
    assert "Radiomics_Clinical" in set(sel["model"])
    for model in RADIOMICS_MODELS:
        assert (study / f"results/models/{model}/manifest.json").is_file()


def test_crops_have_the_paper_shape(study: Path):
    crops = sorted((study / "results/crops").glob("*.npz"))
    assert len(crops) == 26
    with np.load(crops[0], allow_pickle=False) as z:
        assert z["crops"].shape == (2, 4, 3, 128, 128)
        assert z["masks"].shape == (2, 3, 128, 128)
        assert np.isfinite(z["crops"]).all()


def test_every_rule_wrote_a_log_and_a_benchmark(study: Path):
    logs = {
        p.relative_to(study / "results/logs").parts[0]
        for p in (study / "results/logs").rglob("*")
        if p.is_file()
    }
    bench = {
        p.relative_to(study / "results/benchmarks").parts[0]
        for p in (study / "results/benchmarks").rglob("*.tsv")
    }
    for rule in ("synth_cohort", "convert", "register", "crop", "train_dl", "table2"):
        assert rule in logs, rule
        assert rule in bench, rule
    # the register job also checks the ROI mask and keeps that step's log apart
    # (logs/check_mask/...); every other log folder is a rule with its benchmark
    assert logs - {"check_mask"} == bench


def test_nothing_is_left_to_do(study: Path):
    res = run_snakemake(study, "-n")
    assert res.returncode == 0, res.stderr
    assert "Nothing to be done" in res.stdout + res.stderr


def test_report_has_every_figure(study: Path):
    res = run_snakemake(
        study,
        "--report",
        str(study / "results/report.html"),
        "--report-metadata",
        str(REPO / "report" / "metadata.yaml"),
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    page = (study / "results/report.html").read_text(encoding="utf-8", errors="replace")
    assert len(page) > 100_000
    text = html.unescape(page)
    # every category of the study is in the report
    for word in ("Headline", "Table 1", "Table 2", "ROC", "Kaplan", "Grad-CAM", "QC", "Survival"):
        assert word.lower() in text.lower(), word
    # every figure the workflow registered for the report was embedded (no missing image)
    pngs = list((study / "results/figures").rglob("*.png"))
    assert pngs
    assert len(re.findall(r"data:image/png;base64", page)) + page.count(".png") >= len(pngs) // 2
