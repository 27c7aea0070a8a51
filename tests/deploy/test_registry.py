"""Tests of the bundle's model registry (recur.deploy.registry) and the stored Cox models
(recur.survival.files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recur.constants import COX_MODEL_FILES, MARGIN_MODELS, MODELS_PAPER_ORDER, RADIOMICS_MODELS
from recur.deploy import registry
from recur.errors import RecurError
from recur.evaluate.tables import primary_model
from recur.models.tabular import TabularSettings
from recur.radiomics.model import FUSED
from recur.survival import cox, files, stage


def test_every_evaluated_model_is_one_catalogue_entry() -> None:
    assert list(registry.CATALOGUE) == [*MODELS_PAPER_ORDER, *MARGIN_MODELS, *RADIOMICS_MODELS]
    models = [*MODELS_PAPER_ORDER, *MARGIN_MODELS]
    entries = registry.study_entries(models, models, "Pre")
    assert [e.key for e in entries] == [*models, *(f"survival/{m}" for m in models)]
    post = {e.key: e.needs_post for e in entries}
    # with the Pre signature, DL_Clinical reads no post image; the margin models do
    assert post["DL_Clinical"] is False
    assert post["PrePost"] is True
    assert post["Clinical_Margin"] is True
    assert post["survival/DL_Clinical_Margin"] is True
    assert registry.study_entries(["DL_Clinical"], [], "PrePost")[0].needs_post is True
    cox_entry = entries[len(models)]
    assert cox_entry.files == [f"models/survival/Clinical/{f}" for f in COX_MODEL_FILES]
    with pytest.raises(ValueError, match="catalogue"):
        registry.study_entries(["Radiomics_Lung"], [], "Pre")
    with pytest.raises(ValueError, match="unknown input"):
        registry.ModelEntry("X", "tabular", ("pixels",), False)


def test_radiomics_entries_need_post_and_the_parameter_file() -> None:
    """Radiomics_Pre reads only pre-ablation features; Radiomics_PrePost and, through its
    signature, Radiomics_Clinical need the post series; a bundle with a radiomics model holds
    the pyradiomics parameter file."""
    entries = registry.study_entries(RADIOMICS_MODELS, [], "Pre")
    assert {e.name: (e.kind, e.needs_post) for e in entries} == {
        "Radiomics_Pre": ("radiomics", False),
        "Radiomics_PrePost": ("radiomics", True),
        "Radiomics_Clinical": ("tabular", True),
    }
    assert registry.uses_radiomics(entries)
    assert not registry.uses_radiomics(entries[2:])
    assert registry.RADIOMICS_FUSED == FUSED
    with pytest.raises(ValueError, match="Radiomics_PrePost signature"):
        registry.study_entries(["Radiomics_Clinical"], [], "Pre")
    src = registry.workflow_sources(["Radiomics_Pre"], [], "results", "ensemble", "p.yaml")
    assert src[registry.RADIOMICS_PARAMS] == "p.yaml"
    assert src["models/Radiomics_Pre/model.skops"] == "results/models/Radiomics_Pre/model.skops"
    with pytest.raises(ValueError, match="parameter file"):
        registry.workflow_sources(["Radiomics_Pre"], [], "results", "ensemble")
    assert registry.RADIOMICS_PARAMS not in registry.workflow_sources(
        ["Radiomics_Clinical"], [], "results", "ensemble"
    )


def test_workflow_sources_name_the_rules_outputs() -> None:
    src = registry.workflow_sources(["Pre", "Clinical"], ["Pre"], "results", "ensemble")
    assert src == {
        "models/Pre/weights.pt": "results/models/Pre/ensemble/weights.pt",
        "models/Pre/model.json": "results/models/Pre/ensemble/model.json",
        "models/Pre/recalibration.json": "results/models/Pre/recalibration.json",
        "models/Clinical/model.skops": "results/models/Clinical/model.skops",
        "models/Clinical/manifest.json": "results/models/Clinical/manifest.json",
        **{f"models/survival/Pre/{f}": f"results/models/survival/Pre/{f}" for f in COX_MODEL_FILES},
        registry.CHOICE_FILE: f"results/{registry.CHOICE_FILE}",
    }


def test_primary_model_is_the_highest_tuning_auc() -> None:
    cut = pd.DataFrame(
        {"model": ["Clinical", "Pre", "PrePost", "DL_Clinical"], "tune_auc": [0.6, 0.8, 0.8, 0.7]}
    )
    assert primary_model(cut) == "Pre"  # a tie goes to the earlier model
    assert primary_model(cut, ["Clinical", "DL_Clinical"]) == "DL_Clinical"
    with pytest.raises(RecurError, match="tuning AUC"):
        primary_model(cut.drop(columns="tune_auc"))


def _frame(n: int = 40, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(n)],
            "split": ["train"] * 30 + ["tune"] * 5 + ["test"] * (n - 35),
            "tumor_size_cm": rng.uniform(1, 5, n),
            "afp_ng_ml": rng.exponential(100, n),
            "PrePost_signature": rng.uniform(0.01, 0.99, n),
            "rfs_months": rng.exponential(20, n) + 0.5,
            "rfs_event": rng.integers(0, 2, n),
        }
    )
    f.loc[3, "afp_ng_ml"] = np.nan
    return f


def test_a_stored_cox_model_scores_as_the_fitted_one(tmp_path: Path) -> None:
    """The survival stage's Cox model written for the bundle and read back gives the same
    risk and 12/24-month recurrence-free probabilities, bit for bit."""
    f = _frame()
    st = TabularSettings.defaults("clinical")
    sets = {"DL_Clinical": ["tumor_size_cm", "afp_ng_ml", "PrePost_signature"]}
    fitted = stage.fit_cox_models(f, sets, st, 0.01)
    files.write_cox_model(fitted["DL_Clinical"], tmp_path / "m", st, [12, 24])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(COX_MODEL_FILES)
    back = files.read_cox_model(tmp_path / "m")
    assert isinstance(back.fit, cox.CoxRecord)
    a = stage.cox_scores(fitted, f, [12, 24])["DL_Clinical"]
    b = stage.cox_scores({"DL_Clinical": back}, f, [12, 24])["DL_Clinical"]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(RecurError, match=r"no baseline hazard at \[36\.0\]"):
        stage.cox_scores({"DL_Clinical": back}, f, [12, 36])
