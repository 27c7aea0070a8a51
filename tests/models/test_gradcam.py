"""Grad-CAM of the PrePost model (recur.models.gradcam)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recur.cohort.split import read_outcome
from recur.errors import RecurError
from recur.models.data import make_items
from recur.models.gradcam import (
    GradcamSettings,
    PrePostGradCAM,
    explain_patient,
    explained_network,
    prediction_groups,
    run_gradcam,
    select_patients,
    youden_cutoff,
)
from recur.models.networks import EnsembleNet
from recur.models.train import TrainSettings, configure_torch, train_model

from ..fixtures import network, toy_train_config, write_toy_cohort


def test_youden_and_groups_by_hand():
    assert youden_cutoff([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9]) == 0.6
    assert youden_cutoff([0, 1, 0, 1], [0.1, 0.3, 0.5, 0.9]) == 0.9  # J ties: first (strictest)
    with pytest.raises(RecurError, match="with and without ER"):
        youden_cutoff([1, 1], [0.2, 0.3])
    groups = prediction_groups(np.array([1, 1, 0, 0]), np.array([0.7, 0.2, 0.5, 0.1]), 0.5)
    assert list(groups) == ["TP", "FN", "FP", "TN"]


def test_select_patients_most_confident_per_cohort_and_group():
    pred = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "e", "f"],
            "cohort": ["train", "train", "train", "test", "test", "test"],
            "split": ["train", "tune", "train", "test", "test", "test"],
            "score": [0.9, 0.6, 0.2, 0.8, 0.3, 0.45],
        }
    )
    er = pd.Series([1, 1, 1, 0, 0, 0], index=list("abcdef"))
    sel = select_patients(pred, er, 0.5, n_per_group=1)
    got = set(zip(sel["cohort"], sel["group"], sel["patient_id"], strict=True))
    # train TP: a (0.9) beats b (0.6); train FN: c; test FP: d; test TN: e (0.3) beats f (0.45)
    assert got == {("train", "TP", "a"), ("train", "FN", "c"), ("test", "FP", "d"),
                   ("test", "TN", "e")}  # fmt: skip
    two = select_patients(pred, er, 0.5, n_per_group=2)
    assert sorted(two["patient_id"]) == list("abcdef")
    chosen = select_patients(pred, er, 0.5, 1, patients=["f", "b"])
    assert list(chosen["patient_id"]) == ["f", "b"]
    assert list(chosen["group"]) == ["TN", "TP"]
    with pytest.raises(RecurError, match="zz"):
        select_patients(pred, er, 0.5, 1, patients=["zz"])
    external = select_patients(pred, er, 0.5, n_per_group=1, splits=["test"])
    assert set(external["patient_id"]) == {"d", "e"}
    assert list(select_patients(pred, er, 0.5, 1, ["a"], splits=["test"])["patient_id"]) == ["a"]
    assert GradcamSettings.defaults().splits == ("test",)  # external patients by default


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A PrePost model trained briefly on a toy cohort (64x64 crops), and the cohort."""
    root = tmp_path_factory.mktemp("gc")
    paths = write_toy_cohort(root, n_train=16, n_test=4, size=64, seed=2, signal=1.5)
    configure_torch(0, threads=1)
    labels = read_outcome(paths["clinical"]).to_dict()
    ids = sorted(labels)
    items = make_items(ids, paths["crops"], labels)
    arch = toy_train_config().architecture("PrePost")
    settings = TrainSettings.defaults(epochs=2, batch_size=8, learning_rate=3e-3, seed=0)
    model, _, _ = train_model(arch, items[:12], items[12:], settings)
    return model, paths, labels


def test_gradcam_map_per_timepoint(trained):
    model, paths, _ = trained
    x = torch.from_numpy(
        np.stack([np.load(paths["crops"] / f"T000{i}.npz")["crops"] for i in (1, 2)])
    ).reshape(2, 2, 12, 64, 64)
    maps = PrePostGradCAM(model)(x)
    assert maps.shape == (2, 2, 64, 64)  # (patients, time points, crop size)
    assert maps.min() >= 0
    assert np.isclose(maps.max(axis=(1, 2, 3)), 1).all()  # joint scale per patient
    assert (maps.reshape(2, 2, -1).var(axis=2) > 0).all()  # informative for pre AND post
    assert not model.training
    with pytest.raises(TypeError):
        PrePostGradCAM(network("Pre"))
    with torch.no_grad():  # works even when called inside no_grad
        assert PrePostGradCAM(network("PrePost").eval())(x[:1]).shape == (1, 2, 64, 64)


def test_run_gradcam_writes_pngs_and_index(trained, tmp_path):
    model, paths, labels = trained
    ids = sorted(labels)
    pred = pd.DataFrame(
        {
            "patient_id": ids,
            "cohort": ["train"] * 16 + ["test"] * 4,
            "split": ["tune"] * 4 + ["train"] * 12 + ["test"] * 4,  # T0001-4: ER 1, 1, 0, 0
            "score": np.linspace(0.05, 0.95, 20),
        }
    )
    out = tmp_path / "gradcam"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    settings = GradcamSettings.defaults(n_per_group=1)
    index = run_gradcam(model, pred, pd.Series(labels), paths["crops"], out, settings)
    files = sorted(p.name for p in out.iterdir())
    pdfs = [f.replace(".png", ".pdf") for f in index["file"]]
    assert files == sorted([*index["file"], *pdfs, "index.csv"])
    assert 1 <= len(index) <= 4
    assert set(index["split"]) == {"test"}  # the default: external test patients only
    assert (out / index["file"].iloc[0]).read_bytes()[:4] == b"\x89PNG"
    assert (out / pdfs[0]).read_bytes()[:5] == b"%PDF-"
    table = pd.read_csv(out / "index.csv")
    assert {"patient_id", "score", "er", "group", "cutoff", "file"} <= set(table.columns)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left


def test_explain_patient_with_roi_channels(trained, tmp_path):
    """A network over 15 channels per time point (ROI channels) gets its ROI from the file."""
    _, paths, _ = trained
    torch.manual_seed(0)
    model = network("PrePost", widths=(8, 8, 16, 16), hidden=8, in_channels=15).eval()
    png = tmp_path / "roi.png"
    maps = explain_patient(PrePostGradCAM(model), paths["crops"] / "T0001.npz", "T0001", "t", png)
    assert maps.shape == (2, 64, 64)
    assert png.is_file()


def test_explained_network_is_the_full_model_of_an_ensemble():
    full, fold = network("PrePost"), network("PrePost")
    assert explained_network(EnsembleNet([full, fold])) is full
    assert explained_network(full) is full


def test_plot_patient_has_a_colour_bar_and_the_patient_sides(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    from recur import figstyle
    from recur.models.gradcam import plot_patient

    drawn = {}

    def keep(fig, png, pdf=None, **options):
        drawn["fig"], drawn["files"], drawn["options"] = fig, (png, pdf), options

    monkeypatch.setattr(figstyle, "save_figure", keep)
    maps = np.zeros((2, 16, 16), dtype=np.float32)
    maps[0, 4:8, 4:8] = 1.0
    images = np.random.default_rng(0).normal(size=(2, 16, 16))
    plot_patient(images, maps, maps > 0, "t", tmp_path / "a.png", pdf=tmp_path / "a.pdf")
    fig = drawn["fig"]
    assert drawn["files"] == (tmp_path / "a.png", tmp_path / "a.pdf")
    assert drawn["options"]["palette"] is False  # a continuous map is not banded
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    assert "relative to the patient's peak" in bars[0].get_ylabel()
    assert bars[0].get_ylim() == (0.0, 1.0)
    letters = {t.get_text() for t in fig.axes[0].texts}
    assert letters == {"R", "L"}
    plt.close(fig)
