"""The GPU path (``device: auto`` on a machine with a CUDA GPU): training, scoring, reloading
on the CPU and Grad-CAM through the cuDNN RNN. Skipped where torch sees no CUDA GPU (CI);
run on a GPU machine with ``pytest -m gpu``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recur.cli.main import main
from recur.cohort.split import make_split, read_outcome, write_split
from recur.models.data import make_dataset, make_items
from recur.models.gradcam import PrePostGradCAM
from recur.models.jobs import load_model
from recur.models.train import (
    TrainSettings,
    predict_logits,
    resolve_device,
    sigmoid,
    train_model,
)

from ..fixtures import network, toy_train_config, toy_train_settings, write_toy_cohort

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy cohort of 28 + 8 patients (64x64 crops), its split and toy margins."""
    root = tmp_path_factory.mktemp("toy_gpu")
    paths = write_toy_cohort(root, n_train=28, n_test=8, size=64, seed=1, signal=1.5)
    split = make_split(pd.read_csv(paths["patients"]), read_outcome(paths["clinical"]), 0.25, 0)
    paths["split"] = root / "split.csv"
    write_split(split, paths["split"])
    paths["margin"] = root / "margin.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {"patient_id": split["patient_id"], "min_margin_mm": rng.normal(3, 3, len(split))}
    ).to_csv(paths["margin"], index=False)
    return paths


def _train_cli(toy, outdir, device="auto"):
    settings = toy_train_settings(
        crossfit_folds=2,
        epochs=3,
        batch_size=8,
        roi_channel=["PrePost"],
        margin_target=["PrePost"],
    )
    cmd = ["--threads", "1", "train-dl", "--model", "PrePost", "--fold", "full"]
    cmd += ["--split", str(toy["split"]), "--clinical", str(toy["clinical"])]
    cmd += ["--crops-dir", str(toy["crops"]), "--outdir", str(outdir), "--settings", settings]
    cmd += ["--aux-table", str(toy["margin"]), "--device", device]
    assert main(cmd) == 0
    return pd.read_csv(outdir / "scores.csv", dtype={"patient_id": str})


def test_auto_is_the_gpu():
    assert resolve_device("auto").type == "cuda"


def test_gpu_training_lowers_the_loss():
    """A few epochs on the GPU lower the training loss (the 64x64 toy with a clear signal)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_toy_cohort(tmp, n_train=32, n_test=4, size=64, seed=3, signal=2.0)
        labels = read_outcome(paths["clinical"]).to_dict()
        items = make_items(sorted(labels), paths["crops"], labels)
        arch = toy_train_config(gru_hidden=32).architecture("Pre")
        settings = TrainSettings.defaults(epochs=8, batch_size=8, learning_rate=3e-3, seed=0)
        model, log, _ = train_model(arch, items[:28], items[28:], settings, "cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]


def test_gpu_weights_reload_on_the_cpu_with_the_same_scores(toy, tmp_path):
    """`train-dl --device auto` trains PrePost (ROI channels, margin target) on the GPU; the
    saved state_dict loads with weights_only=True on a CPU-only reader and scores the same
    patients the same way (up to the GPU's float arithmetic)."""
    gpu_scores = _train_cli(toy, tmp_path / "gpu")
    assert gpu_scores["score"].nunique() > 1
    state = torch.load(tmp_path / "gpu" / "weights.pt", weights_only=True, map_location="cpu")
    assert all(v.device.type == "cpu" for v in state.values())
    model, arch = load_model(tmp_path / "gpu")
    ds = make_dataset(make_items(list(gpu_scores["patient_id"]), toy["crops"]), 2, None, roi=True)
    cpu = sigmoid(predict_logits(model.cpu(), ds, torch.device("cpu"), tta=arch.tta))
    np.testing.assert_allclose(cpu, gpu_scores["score"], atol=2e-3)
    again = _train_cli(toy, tmp_path / "again")
    diff = np.abs(again["score"].to_numpy() - gpu_scores["score"].to_numpy()).max()
    print(f"GPU rerun, same seed: max |score difference| {diff:.2e}")
    assert diff < 2e-3  # deterministic algorithms where CUDA has them (warn-only elsewhere)


def test_gradcam_on_the_gpu_through_the_cudnn_rnn(toy):
    """Grad-CAM backpropagates through the GRU in eval mode (cuDNN's RNN backward refuses
    eval mode; PrePostGradCAM switches cuDNN off for that pass)."""

    torch.manual_seed(0)
    model = network("PrePost", widths=(8, 8, 16, 16), hidden=8).cuda().eval()
    x = torch.from_numpy(
        np.stack([np.load(toy["crops"] / f"T000{i}.npz")["crops"] for i in (1, 2)])
    ).reshape(2, 2, 12, 64, 64)
    maps = PrePostGradCAM(model)(x.cuda())  # numpy on the CPU, whatever the model's device
    assert isinstance(maps, np.ndarray)
    assert maps.shape == (2, 2, 64, 64)
    assert (maps.reshape(2, 2, -1).var(axis=2) > 0).all()
    assert not model.training
    assert torch.backends.cudnn.enabled  # switched back on after the pass
