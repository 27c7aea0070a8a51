"""Training, model selection, signatures and cross-fitting (recur.models: train, selection,
losses, crossfit, jobs)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import get_track_meta

from recur.cli.main import main
from recur.cohort.split import make_split, read_outcome, write_split
from recur.config import defaults
from recur.constants import DL_SCORE_COLUMNS, SCORE_COLUMNS
from recur.errors import RecurError
from recur.evaluate.recalibration import fit_on_tune, read_recalibration
from recur.models.crossfit import crossfit_table, job_patients
from recur.models.data import Augmentation, make_dataset, make_items, plain_tensors
from recur.models.jobs import load_model, read_aux_targets, read_offset_covariates
from recur.models.losses import covariate_offset, masked_huber, pos_weight, standardise_targets
from recur.models.selection import average_states, safe_auc, select_epoch, smoothed_auc
from recur.models.train import (
    LOG_COLUMNS,
    TrainConfig,
    TrainSettings,
    configure_torch,
    epoch_eta,
    format_duration,
    predict_logits,
    resolve_device,
    sigmoid,
    train_model,
)
from recur.settings import RULE_KEYS, section_json

from ..fixtures import toy_train_config, toy_train_settings, write_toy_cohort


def test_pos_weight_auc_sigmoid_by_hand():
    assert pos_weight([0, 0, 0, 1]) == 3.0
    assert pos_weight([1, 1, 0]) == 0.5
    with pytest.raises(RecurError, match="with and without ER"):
        pos_weight([0, 0])
    assert safe_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert np.isnan(safe_auc(np.array([1, 1]), np.array([0.1, 0.2])))
    np.testing.assert_allclose(sigmoid(np.array([0.0, np.log(3.0)])), [0.5, 0.75])
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RecurError, match="no CUDA"):
            resolve_device("cuda")


def test_train_config_gives_each_model_its_network_by_hand():
    """The study's choice: ROI channels and the margin target for PrePost, the covariate
    offset for Pre. Pre reads 12 channels (4 phases x 3 slices) and predicts ER alone; PrePost
    15 per time point (+ the tumour ROI of the 3 slices) and also the measured margin."""
    config = TrainConfig.defaults(
        roi_channel=["PrePost"],
        margin_target=["PrePost"],
        offset={"models": ["Pre"], "variables": ["hbv"]},
    )
    pre, prepost = config.architecture("Pre"), config.architecture("PrePost")
    assert (pre.roi_channel, pre.in_channels, pre.aux_targets) == (False, 12, ())
    assert (prepost.roi_channel, prepost.in_channels) == (True, 15)
    assert prepost.aux_targets == ("min_margin_mm",)
    assert pre.members == prepost.members == 1
    assert (pre.hidden, pre.tta, pre.widths) == (config.gru_hidden, config.tta, config.widths)
    assert config.offset.variables_of("Pre") == ("hbv",)
    assert config.offset.variables_of("PrePost") == ()
    both = TrainConfig.defaults(roi_channel=["Pre", "PrePost"], margin_target=[])
    assert both.architecture("Pre").in_channels == 15
    assert both.architecture("PrePost").aux_targets == ()
    opt = config.optimisation()
    assert (opt.augment, opt.seed, opt.epochs) == (config.augment, config.seed, config.epochs)
    # the rule's argument (the section without the rules' own keys) gives the same object
    text = section_json(defaults()["train"], omit=RULE_KEYS["train"])
    assert TrainConfig.from_json(text) == TrainConfig.defaults()


def test_train_config_refuses_an_unknown_model_and_bad_nested_keys():
    with pytest.raises(RecurError, match=r"train\.roi_channel: unknown model\(s\) \['Post'\]"):
        TrainConfig.defaults(roi_channel=["Post"])
    with pytest.raises(RecurError, match=r"train\.augment: prob must lie in \[0, 1\]"):
        TrainConfig.defaults(augment={"prob": 1.5})
    with pytest.raises(RecurError, match="no key"):
        TrainConfig.defaults(offset={"model": ["Pre"]})
    section = defaults()["train"]
    del section["augment"]["flip"]
    with pytest.raises(RecurError, match=r"'train\.augment': missing key\(s\) \['flip'\]"):
        TrainConfig.from_config(section)


def test_load_model_refuses_a_model_json_without_the_network_keys(tmp_path):
    arch = toy_train_config().architecture("Pre")
    torch.save(arch.build().state_dict(), tmp_path / "weights.pt")
    meta = {k: v for k, v in asdict(arch).items() if k != "tta"}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(RecurError, match=r"model\.json lacks \['tta'\]"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(asdict(arch)))
    assert load_model(tmp_path)[1] == arch


def _split_table():
    ids = [f"P{i}" for i in range(12)]
    split = ["train"] * 8 + ["tune"] * 2 + ["test"] * 2
    cohort = ["train"] * 10 + ["test"] * 2
    df = pd.DataFrame({"patient_id": ids, "site": "A", "cohort": cohort, "split": split})
    er = pd.Series([1, 0] * 6, index=ids, dtype=float)
    return df, er


def test_job_patients_full_and_folds():
    df, er = _split_table()
    train, tune, score = job_patients(df, er, "full", 2, seed=0)
    assert train == [f"P{i}" for i in range(8)]
    assert tune == ["P8", "P9"]
    assert score == list(df["patient_id"])
    held_all = []
    for k in ("0", "1"):
        tr, tu, held = job_patients(df, er, k, 2, seed=0)
        assert tu == tune
        assert set(tr).isdisjoint(held)
        assert set(tr) | set(held) == set(train)
        assert sum(er[held]) == 2  # 4 ER of 8 train patients: 2 per fold
        held_all += held
    assert sorted(held_all) == sorted(train)
    with pytest.raises(RecurError, match="fold must be"):
        job_patients(df, er, "2", 2, seed=0)


def test_crossfit_table_by_hand():
    df, _ = _split_table()
    full = df[["patient_id", "cohort", "split"]].assign(score=0.5)
    fold0 = full[full["patient_id"].isin(["P0", "P2", "P4", "P6"])].assign(score=0.1)
    fold1 = full[full["patient_id"].isin(["P1", "P3", "P5", "P7"])].assign(score=0.9)
    oof = crossfit_table(full, [fold1, fold0])
    assert list(oof.columns) == list(SCORE_COLUMNS)
    assert list(oof["patient_id"]) == list(full["patient_id"])
    expected = [0.1, 0.9] * 4 + [0.5] * 4  # train from folds; tune, test from the full model
    np.testing.assert_allclose(oof["score"], expected)
    with pytest.raises(RecurError, match="exactly the train-split"):
        crossfit_table(full, [fold0])
    with pytest.raises(RecurError, match="more than one fold"):
        crossfit_table(full, [fold0, fold0])


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy cohort of 28 + 8 patients (64x64 crops) and its split."""
    root = tmp_path_factory.mktemp("toy")
    paths = write_toy_cohort(root, n_train=28, n_test=8, size=64, seed=1, signal=1.5)
    patients = pd.read_csv(paths["patients"])
    er = read_outcome(paths["clinical"])
    paths["split"] = root / "split.csv"
    write_split(make_split(patients, er, 0.25, seed=0), paths["split"])
    return paths


def _log(aucs, losses=None):
    losses = losses or [1.0] * len(aucs)
    return pd.DataFrame({"epoch": range(1, len(aucs) + 1), "tune_auc": aucs, "tune_loss": losses})


def test_smoothed_auc_by_hand():
    assert smoothed_auc([0.5, 0.7, 0.6], 2) == pytest.approx(0.65)
    assert smoothed_auc([0.5, 0.7, 0.6], 3) == pytest.approx(0.6)
    assert smoothed_auc([0.9], 3) == pytest.approx(0.9)  # shorter history: what there is
    assert smoothed_auc([0.6, float("nan")], 2) == pytest.approx(0.6)
    assert np.isnan(smoothed_auc([float("nan")], 1))
    with pytest.raises(ValueError, match="window"):
        smoothed_auc([0.5], 0)


def test_select_epoch_ignores_a_lucky_early_epoch_and_smooths():
    # epoch 1 has the best single AUC (0.9) but lies before min_epochs=3. From epoch 3 on, the
    # 2-epoch means are e3 (0.5+0.6)/2=0.55, e4 0.65, e5 (0.7+0.7)/2=0.70, e6 0.60 -> epoch 5.
    aucs = [0.9, 0.5, 0.6, 0.7, 0.7, 0.5]
    assert select_epoch(_log(aucs), min_epochs=3, smooth_epochs=2) == 5
    # no smoothing, no warm-up: the lucky epoch 1
    assert select_epoch(_log(aucs), min_epochs=1, smooth_epochs=1) == 1
    # no smoothing from epoch 3: e4 and e5 tie at 0.7 with equal loss -> the earlier, 4
    assert select_epoch(_log(aucs), min_epochs=3, smooth_epochs=1) == 4


def test_select_epoch_ties_and_fallbacks():
    # equal smoothed AUC: the lower tuning loss wins
    assert select_epoch(_log([0.6, 0.6], [0.9, 0.8]), min_epochs=1, smooth_epochs=1) == 2
    # single-class tuning split (all NaN): the tuning loss alone decides
    nan = float("nan")
    assert select_epoch(_log([nan] * 3, [0.9, 0.7, 0.8]), min_epochs=1, smooth_epochs=2) == 2
    # fewer epochs than min_epochs: the last epoch is kept
    assert select_epoch(_log([0.9, 0.5]), min_epochs=10, smooth_epochs=3) == 2
    with pytest.raises(ValueError, match="empty"):
        select_epoch(_log([]), 1, 1)


@pytest.mark.slow
def test_training_lowers_loss(toy):
    configure_torch(0, threads=1)
    labels = read_outcome(toy["clinical"]).to_dict()
    split = pd.read_csv(toy["split"])
    ids = list(split.loc[split["split"] != "test", "patient_id"])
    items = make_items(ids, toy["crops"], labels)
    # mild settings: the point is that the optimisation works, not the regularisation
    settings = TrainSettings.defaults(
        epochs=8,
        patience=8,
        batch_size=8,
        learning_rate=3e-3,
        weight_decay=1e-4,
        seed=0,
        scheduler="constant",
        augment=Augmentation.defaults(rotate_deg=15, prob=0.5, flip_vertical=False),
    )
    for name in ("Pre", "PrePost"):
        arch = toy_train_config(dropout=0.3).architecture(name)
        _, log, best = train_model(arch, items, items[:8], settings)
        assert list(log.columns) == LOG_COLUMNS
        assert len(log) == 8
        assert 1 <= best <= 8
        assert log["train_loss"].iloc[-2:].mean() < 0.85 * log["train_loss"].iloc[0], name


def test_epoch_eta_and_format_duration_by_hand():
    assert format_duration(0) == "0 s"
    assert format_duration(42.4) == "42 s"
    assert format_duration(59.6) == "1 min 00 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(2 * 3600 + 7 * 60 + 20) == "2 h 07 min"
    # 3 epochs took 30 s in all: 10 s each, 37 left -> 370 s
    assert epoch_eta(3, 40, 30.0) == "about 6 min 10 s left"
    # early stopping could end at epoch 24 (< 40): it may end sooner
    note = epoch_eta(3, 40, 30.0, earliest_stop=24)
    assert note == "about 6 min 10 s left (early stopping may end sooner)"
    # not before the last epoch: no such note
    assert epoch_eta(1, 8, 2.5, earliest_stop=8) == "about 18 s left"
    assert epoch_eta(40, 40, 400.0, earliest_stop=24) == "last epoch"


def test_training_logs_one_line_per_epoch_with_the_time_left(toy, caplog):
    """One log line per epoch run: ``epoch k/N``, the metrics and the time left (with the
    early-stopping note while early stopping could still end before epoch N)."""
    configure_torch(0, threads=1)
    labels = read_outcome(toy["clinical"]).to_dict()
    split = pd.read_csv(toy["split"])
    ids = list(split.loc[split["split"] != "test", "patient_id"])
    items = make_items(ids, toy["crops"], labels)
    settings = TrainSettings.defaults(
        epochs=3, patience=1, min_epochs=1, smooth_epochs=1, batch_size=8, seed=0
    )
    caplog.set_level(logging.INFO, logger="recur.models.train")
    _, log, _ = train_model(toy_train_config().architecture("Pre"), items, items[:8], settings)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == len(log)
    line = re.compile(
        r"epoch (\d)/3: train loss .*, tune AUC .* \(\d+\.\d s\); "
        r"(about \d+ s left( \(early stopping may end sooner\))?|last epoch)"
    )
    matches = [line.fullmatch(text) for text in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == list(log["epoch"])
    # after epoch 1 (kept), epoch 2 could already stop it (patience 1)
    assert lines[0].endswith("left (early stopping may end sooner)")


def test_standardise_targets_and_masked_huber_by_hand():
    mean, sd = standardise_targets(np.array([[1.0, 10.0], [3.0, np.nan], [5.0, 20.0]]))
    np.testing.assert_allclose(mean, [3.0, 15.0])
    np.testing.assert_allclose(sd, [2.0, np.sqrt(50.0)])  # sample SD (ddof 1)
    with pytest.raises(RecurError, match="at least 2 different"):
        standardise_targets(np.array([[1.0], [np.nan]]))
    with pytest.raises(RecurError, match="at least 2 different"):
        standardise_targets(np.array([[2.0], [2.0]]))
    pred = torch.tensor([[0.0], [3.0], [1.0]], requires_grad=True)
    target = torch.tensor([[0.5], [0.0], [float("nan")]])
    # errors 0.5 (quadratic: 0.5 * 0.25) and 3 (linear: 3 - 0.5); the NaN row is left out
    loss = masked_huber(pred, target)
    assert loss.item() == pytest.approx((0.125 + 2.5) / 2)
    loss.backward()
    assert pred.grad[2, 0] == 0
    none = masked_huber(pred, torch.full((3, 1), float("nan")))
    assert none.item() == 0
    assert none.requires_grad


def test_read_aux_targets(tmp_path):
    path = tmp_path / "margin.csv"
    path.write_text("patient_id,min_margin_mm,mode\nT1,2.5,3d\nT2,,3d\n")
    got = read_aux_targets(path, ["min_margin_mm"], ["T1", "T2", "T3"])
    assert got["T1"].tolist() == [2.5]
    assert np.isnan(got["T2"]).all()
    assert np.isnan(got["T3"]).all()
    with pytest.raises(RecurError, match=r"margin\.csv: missing column"):
        read_aux_targets(path, ["pct_lt5"], ["T1"])


@pytest.mark.slow
def test_auxiliary_margin_target_is_learnt_and_saved(toy, tmp_path):
    """With an auxiliary target the network learns it (its loss falls), model.json names it,
    and the saved model reloads and scores like the trained one."""
    split = pd.read_csv(toy["split"])
    ids = list(split.loc[split["split"] == "train", "patient_id"])
    # a target the images show: the toy ER cases have an off-centre ablation ring
    er = read_outcome(toy["clinical"])
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "patient_id": ids,
            "min_margin_mm": er.loc[ids].to_numpy() * 3.0 + rng.normal(0, 0.3, len(ids)),
        }
    )
    table.loc[0, "min_margin_mm"] = np.nan  # an unknown target adds nothing
    table.to_csv(tmp_path / "margin.csv", index=False)
    settings = toy_train_settings(
        epochs=6,
        batch_size=8,
        min_epochs=1,
        scheduler="constant",
        weight_decay=0.0001,
        margin_target=["PrePost"],
    )
    cmd = ["--threads", "1", "train-dl", "--model", "PrePost", "--split", str(toy["split"])]
    cmd += ["--clinical", str(toy["clinical"]), "--crops-dir", str(toy["crops"])]
    cmd += ["--outdir", str(tmp_path / "m"), "--device", "cpu", "--settings", settings]
    cmd += ["--aux-table", str(tmp_path / "margin.csv")]
    assert main(cmd) == 0
    log = pd.read_csv(tmp_path / "m" / "training_log.csv")
    assert log["train_aux_loss"].notna().all()
    assert log["train_aux_loss"].iloc[-2:].mean() < 0.85 * log["train_aux_loss"].iloc[0]
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["aux_targets"] == ["min_margin_mm"]
    model, arch = load_model(tmp_path / "m")
    assert arch.aux_targets == ("min_margin_mm",)
    scores = pd.read_csv(tmp_path / "m" / "scores.csv", dtype={"patient_id": str})
    ds = make_dataset(make_items(list(scores["patient_id"]), toy["crops"]), 2, None)
    np.testing.assert_allclose(
        sigmoid(predict_logits(model, ds, torch.device("cpu"))), scores["score"], rtol=1e-5
    )
    # a margin target without its table: a clear error, nothing written
    no_table = cmd[:-2]
    no_table[no_table.index(str(tmp_path / "m"))] = str(tmp_path / "n")
    assert main(no_table) == 2
    assert not (tmp_path / "n").exists()


def test_average_states_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "bn.num_batches_tracked": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "bn.num_batches_tracked": torch.tensor(4)}
    out = average_states([a, b])
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 4.0]))
    assert out["bn.num_batches_tracked"].item() == 4  # integers: the last state's
    assert average_states([a])["w"] is not a["w"]  # a copy, not the caller's tensor
    torch.testing.assert_close(average_states([a])["w"], a["w"])
    with pytest.raises(ValueError, match="at least one"):
        average_states([])
    with pytest.raises(ValueError, match="other keys"):
        average_states([{"v": torch.zeros(2)}, b])


def test_average_window_keeps_the_mean_of_the_selected_window(toy):
    """With average_window the model holds the mean of the window's weights; the window
    is the smooth_epochs epochs ending at the selected one, and is handed to on_select."""
    labels = read_outcome(toy["clinical"]).to_dict()
    split = pd.read_csv(toy["split"])
    ids = list(split.loc[split["split"] != "test", "patient_id"])
    items = make_items(ids, toy["crops"], labels)
    arch = toy_train_config().architecture("Pre")
    got = {}
    for average in (False, True):
        configure_torch(0, threads=1)
        settings = TrainSettings.defaults(
            epochs=4, batch_size=8, seed=0, min_epochs=1, smooth_epochs=2, average_window=average
        )
        model, _, best = train_model(
            arch, items, items[:8], settings, on_select=lambda e, w: got.update(e=e, w=w)
        )
        assert got["e"] == best
        assert len(got["w"]) == min(2, best)
        want = average_states(got["w"]) if average else got["w"][-1]
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, want[k])
    # the window's two epochs differ, so the mean is not either epoch's weights
    first = next(k for k, v in got["w"][-1].items() if torch.is_floating_point(v))
    if len(got["w"]) == 2:
        assert not torch.equal(got["w"][0][first], got["w"][1][first])


def _train_cli(toy, outdir, fold="full", epochs=2):
    """`recur train-dl` in-process (the CLI parsing and file edges, without torch start-up)."""
    settings = toy_train_settings(crossfit_folds=2, epochs=epochs, batch_size=8)
    cmd = ["--threads", "1", "train-dl", "--model", "PrePost"]
    cmd += ["--fold", fold, "--split", str(toy["split"])]
    cmd += ["--clinical", str(toy["clinical"]), "--crops-dir", str(toy["crops"])]
    cmd += ["--outdir", str(outdir), "--device", "cpu", "--settings", settings]
    assert main(cmd) == 0
    return pd.read_csv(outdir / "scores.csv", dtype={"patient_id": str})


@pytest.mark.slow
def test_training_is_deterministic_and_writes_outputs(toy, tmp_path):
    a = _train_cli(toy, tmp_path / "a")
    b = _train_cli(toy, tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)  # same seed and config -> identical signature
    assert list(a.columns) == list(SCORE_COLUMNS)
    assert len(a) == 36
    assert a["score"].between(0, 1).all()
    assert a["score"].nunique() > 1
    weights = (tmp_path / "a" / "weights.pt").read_bytes()
    assert weights == (tmp_path / "b" / "weights.pt").read_bytes()  # byte-identical
    assert b"T0001" not in weights  # no patient ids inside the weights
    state = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model, arch = load_model(tmp_path / "a")
    assert arch.model == "PrePost"
    assert arch.widths == (8, 8, 16, 16)
    ds = make_dataset(make_items(list(a["patient_id"]), toy["crops"]), 2, None)
    reloaded = sigmoid(predict_logits(model, ds, torch.device("cpu")))
    np.testing.assert_allclose(reloaded, a["score"], rtol=1e-5)  # weights reproduce scores
    meta = json.loads((tmp_path / "a" / "model.json").read_text())
    log = pd.read_csv(tmp_path / "a" / "training_log.csv")
    assert meta["selected_epoch"] in set(log["epoch"])


@pytest.mark.slow
def test_fold_jobs_and_signature_cli(toy, tmp_path):
    full = tmp_path / "full"
    _train_cli(toy, full, epochs=1)
    for k in ("0", "1"):
        s = _train_cli(toy, tmp_path / k, fold=k, epochs=1)
        assert (s["split"] == "train").all()
    pred, fig = tmp_path / "pred.csv", tmp_path / "curve.png"
    recal = tmp_path / "recalibration.json"
    cmd = ["signature-dl", str(full), "--clinical", str(toy["clinical"])]
    cmd += ["--recalibration", str(recal), "--out", str(pred), "--figure", str(fig)]
    assert main(cmd) == 0
    oof = tmp_path / "oof.csv"
    cmd = ["crossfit-dl", "--full", str(full), "--recalibration", str(recal)]
    cmd += ["--folds", str(tmp_path / "0"), str(tmp_path / "1"), "--out", str(oof)]
    assert main(cmd) == 0
    pred_df = pd.read_csv(pred, dtype={"patient_id": str})
    oof_df = pd.read_csv(oof, dtype={"patient_id": str})
    assert list(pred_df.columns) == list(oof_df.columns) == list(DL_SCORE_COLUMNS)
    assert fig.read_bytes()[:4] == b"\x89PNG"
    # the network's output as it scored the patients; score its recalibration on the tune split
    scores = pd.read_csv(full / "scores.csv", dtype={"patient_id": str})
    np.testing.assert_allclose(pred_df["raw_score"], scores["score"])
    rec = fit_on_tune(scores, read_outcome(toy["clinical"]))
    assert read_recalibration(recal) == rec
    for df in (pred_df, oof_df):
        np.testing.assert_allclose(df["score"], rec.apply(df["raw_score"]), rtol=1e-6)
    same = oof_df["split"] != "train"
    np.testing.assert_allclose(oof_df.loc[same, "raw_score"], pred_df.loc[same, "raw_score"])
    assert not np.allclose(oof_df.loc[~same, "raw_score"], pred_df.loc[~same, "raw_score"])


@pytest.mark.slow
def test_ensemble_cli_scores_with_the_mean_logit_and_reloads(toy, tmp_path):
    """`recur ensemble-dl` joins the full and fold models: its score of every patient is the
    sigmoid of the members' mean logit, its weights reload as one network (as the bundle and
    `recur predict` use it), and members of different designs are refused."""
    dirs = [tmp_path / "full", tmp_path / "0", tmp_path / "1"]
    for d, fold in zip(dirs, ("full", "0", "1"), strict=True):
        _train_cli(toy, d, fold=fold, epochs=1)
    out = tmp_path / "ens"
    cmd = ["--threads", "1", "ensemble-dl", *map(str, dirs), "--split", str(toy["split"])]
    cmd += ["--crops-dir", str(toy["crops"]), "--outdir", str(out), "--device", "cpu"]
    assert main(cmd) == 0
    scores = pd.read_csv(out / "scores.csv", dtype={"patient_id": str})
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert len(scores) == len(pd.read_csv(toy["split"]))
    ids = list(scores["patient_id"])
    ds = make_dataset(make_items(ids, toy["crops"]), 2, None)
    logits = [predict_logits(load_model(d)[0], ds, torch.device("cpu")) for d in dirs]
    np.testing.assert_allclose(scores["score"], sigmoid(np.mean(logits, axis=0)), rtol=1e-5)
    model, arch = load_model(out)
    assert arch.members == 3
    assert arch.model == "PrePost"
    np.testing.assert_allclose(
        sigmoid(predict_logits(model, ds, torch.device("cpu"))), scores["score"], rtol=1e-5
    )
    meta = json.loads((out / "model.json").read_text())
    assert meta["member_models"] == ["full", "0", "1"]
    # a member of another design (Pre) is refused, nothing written
    pre = tmp_path / "pre"
    cmd_pre = ["--threads", "1", "train-dl", "--model", "Pre", "--split", str(toy["split"])]
    cmd_pre += ["--clinical", str(toy["clinical"]), "--crops-dir", str(toy["crops"])]
    cmd_pre += ["--outdir", str(pre), "--device", "cpu"]
    cmd_pre += ["--settings", toy_train_settings(epochs=1, gru_hidden=32)]
    assert main(cmd_pre) == 0
    bad = ["ensemble-dl", str(dirs[0]), str(pre), "--split", str(toy["split"])]
    bad += ["--crops-dir", str(toy["crops"]), "--outdir", str(tmp_path / "bad")]
    bad += ["--device", "cpu"]
    assert main(bad) == 2
    assert not (tmp_path / "bad").exists()


def test_cli_error_names_patient(toy, tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    for f in toy["crops"].glob("*.npz"):
        (crops / f.name).symlink_to(f)
    (crops / "T0003.npz").unlink()
    cmd = ["train-dl", "--model", "Pre", "--split", str(toy["split"])]
    cmd += ["--clinical", str(toy["clinical"]), "--crops-dir", str(crops), "--device", "cpu"]
    cmd += ["--settings", toy_train_settings()]
    assert main([*cmd, "--outdir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "patient T0003: crop file crops/T0003.npz not found" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_augmentation_settings_reach_transforms():
    aug = Augmentation.defaults(
        rotate_deg=0, flip=False, flip_vertical=False, intensity_scale=0, intensity_shift=0.2
    )
    names = [type(t).__name__ for t in aug.transforms()]
    assert names == ["RandShiftIntensityd"]
    tfs = Augmentation.defaults().transforms()
    names = [type(t).__name__ for t in tfs]
    assert names == [
        "RandRotated",
        "RandFlipd",
        "RandFlipd",
        "RandScaleIntensityd",
        "RandShiftIntensityd",
    ]
    assert [t.flipper.spatial_axis for t in tfs[1:3]] == [1, 0]  # left-right, then up-down


def test_plain_tensors_leave_the_augmented_crops_identical(toy):
    """Dropping MONAI's metadata tracking is a speed-up only: the same seeded draws give the
    same numbers, and the previous setting comes back (also after an error)."""
    ids = pd.read_csv(toy["split"])["patient_id"].head(4).tolist()
    items = make_items(ids, toy["crops"], read_outcome(toy["clinical"]).to_dict())

    def draw() -> list[torch.Tensor]:
        ds = make_dataset(items, 2, Augmentation.defaults(), seed=3, roi=True)
        return [ds[i]["image"] for i in range(len(ds))]

    assert get_track_meta()
    tracked = draw()
    with plain_tensors():
        assert not get_track_meta()
        plain = draw()
    assert get_track_meta()
    assert all(torch.equal(a, b) for a, b in zip(tracked, plain, strict=True))
    # and the draws did transform the crops (the equality above is not of untouched inputs)
    unaugmented = make_dataset(items, 2, None, roi=True)
    assert any(not torch.equal(a, unaugmented[i]["image"]) for i, a in enumerate(tracked))
    with pytest.raises(ValueError, match="inside"), plain_tensors():
        raise ValueError("inside")
    assert get_track_meta()


def test_dihedral_views_are_the_eight_symmetries_of_the_square():
    from recur.models.train import dihedral_views

    x = torch.arange(9.0).reshape(1, 1, 3, 3)  # 0 1 2 / 3 4 5 / 6 7 8
    views = dihedral_views(x)
    assert len(views) == 8
    assert torch.equal(views[0], x)
    # rot90 turns counter-clockwise: the top row becomes 2 5 8
    assert views[1][0, 0, 0].tolist() == [2.0, 5.0, 8.0]
    assert views[2][0, 0, 0].tolist() == [8.0, 7.0, 6.0]
    # the flipped identity mirrors left-right
    assert views[4][0, 0, 0].tolist() == [2.0, 1.0, 0.0]
    corners = {tuple(v[0, 0, 0, :].tolist()) for v in views}
    assert len(corners) == 8  # all distinct for an asymmetric image
    # a group: the views of a view are the same set
    again = {tuple(v.flatten().tolist()) for v in dihedral_views(views[3])}
    assert again == {tuple(v.flatten().tolist()) for v in views}
    # every channel and time point turns together: (B, T, C, H, W)
    y = torch.rand(2, 2, 3, 4, 4)
    for v, w in zip(dihedral_views(y), dihedral_views(y[:, 1]), strict=True):
        assert torch.equal(v[:, 1], w)
    with pytest.raises(ValueError, match="square"):
        dihedral_views(torch.zeros(1, 1, 2, 3))


def test_tta_scores_are_the_mean_logit_of_the_views(toy):
    from recur.models.train import dihedral_views

    items = make_items(["T0001", "T0002", "T0003"], toy["crops"])
    ds = make_dataset(items, 1)

    class Corner(torch.nn.Module):  # looks at one pixel: not rotation-invariant
        def forward(self, x):
            return x[:, 0, 0, :1] * 2.0 + 1.0

    model = Corner()
    x = torch.stack([ds[i]["image"] for i in range(3)])
    by_hand = torch.stack([model(v).reshape(-1) for v in dihedral_views(x)]).mean(0)
    tta = predict_logits(model, ds, torch.device("cpu"), tta=True)
    plain = predict_logits(model, ds, torch.device("cpu"))
    np.testing.assert_allclose(tta, by_hand.numpy(), rtol=1e-6)
    np.testing.assert_allclose(plain, model(x).reshape(-1).numpy(), rtol=1e-6)
    assert not np.allclose(tta, plain)

    class Mean(torch.nn.Module):  # rotation- and flip-invariant: TTA changes nothing
        def forward(self, x):
            return x.mean(dim=(1, 2, 3)).reshape(-1, 1)

    np.testing.assert_allclose(
        predict_logits(Mean(), ds, torch.device("cpu"), tta=True),
        predict_logits(Mean(), ds, torch.device("cpu")),
        rtol=1e-5,
    )


# --------------------------------------------------------------------------- covariate offset
def test_covariate_offset_of_one_binary_covariate_is_the_log_odds_ratio():
    """One binary covariate, no penalty to speak of: the logistic regression's log-odds
    difference between the two groups is the table's log odds ratio, worked out by hand:
    6 of 10 with ER where x = 1, 2 of 10 where x = 0 -> OR = (6/4) / (2/8) = 6. Centred
    over the 20 patients (10 in each group), the offsets are +-ln(6)/2."""
    ids = [f"P{i:02d}" for i in range(20)]
    x = [1] * 10 + [0] * 10
    y = [1] * 6 + [0] * 4 + [1] * 2 + [0] * 8
    cov = pd.DataFrame({"hbv": x}, index=ids)
    offset, coefs = covariate_offset(cov, pd.Series(y, index=ids, dtype=float), c=1e6)
    np.testing.assert_allclose(offset.iloc[:10], np.log(6) / 2, rtol=1e-4)
    np.testing.assert_allclose(offset.iloc[10:], -np.log(6) / 2, rtol=1e-4)
    assert offset.mean() == pytest.approx(0, abs=1e-12)
    assert list(offset.index) == ids
    assert coefs["hbv"] > 0


def test_covariate_offset_ignores_monotone_rescaling_and_imputes():
    rng = np.random.default_rng(3)
    ids = [f"P{i:03d}" for i in range(120)]
    afp = np.exp(rng.normal(3, 2.4, 120))  # skewed, as AFP is
    number = rng.integers(1, 4, 120).astype(float)
    y = pd.Series((rng.random(120) < 1 / (1 + np.exp(-(np.log(afp) - 3)))).astype(float), ids)
    raw = pd.DataFrame({"afp_ng_ml": afp, "tumor_number": number}, index=ids)
    logged = raw.assign(afp_ng_ml=np.log(raw["afp_ng_ml"]))
    a, coefs = covariate_offset(raw, y, c=1.0)
    b, _ = covariate_offset(logged, y, c=1.0)
    np.testing.assert_allclose(a, b, atol=1e-9)  # rank-based: log(AFP) changes nothing
    assert coefs["afp_ng_ml"] > 0  # higher AFP, more ER in this draw
    assert np.corrcoef(a, np.log(afp))[0, 1] > 0.9
    holes = raw.copy()
    holes.iloc[:5, 0] = np.nan  # empty cells get the column's median
    c, _ = covariate_offset(holes, y, c=1.0)
    assert np.isfinite(c).all()


def test_covariate_offset_refuses_bad_input():
    ids = ["A", "B", "C", "D"]
    y = pd.Series([0.0, 1.0, 0.0, 1.0], index=ids)
    ok = pd.DataFrame({"tp_g_l": [60.0, 70.0, 65.0, 72.0]}, index=ids)
    with pytest.raises(RecurError, match=r"outcome column\(s\) \['er'\]"):
        covariate_offset(ok.assign(er=y), y, c=1.0)
    with pytest.raises(RecurError, match="no covariates"):
        covariate_offset(ok[[]], y, c=1.0)
    with pytest.raises(RecurError, match="both classes"):
        covariate_offset(ok, pd.Series(0.0, index=ids), c=1.0)
    with pytest.raises(RecurError, match="same patients"):
        covariate_offset(ok, y.set_axis(["A", "B", "C", "E"]), c=1.0)
    text = ok.astype(object)
    text.loc["C", "tp_g_l"] = "high"
    with pytest.raises(RecurError, match=r"'tp_g_l' is not numeric \(patient C\)"):
        covariate_offset(text, y, c=1.0)
    with pytest.raises(RecurError, match="'tp_g_l' has no value"):
        covariate_offset(ok.assign(tp_g_l=np.nan), y, c=1.0)


def test_read_offset_covariates(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text("patient_id,er,hbv,afp_ng_ml\nT1,0,1,12.5\nT2,1,0,\nT3,0,1,400\n")
    got = read_offset_covariates(path, ["afp_ng_ml", "hbv"], ["T3", "T1", "T2"])
    assert list(got.index) == ["T3", "T1", "T2"]
    assert list(got.columns) == ["afp_ng_ml", "hbv"]
    assert got.loc["T3", "afp_ng_ml"] == 400
    assert np.isnan(got.loc["T2", "afp_ng_ml"])
    with pytest.raises(RecurError, match=r"clinical\.csv: offset variable\(s\) \['tp_g_l'\]"):
        read_offset_covariates(path, ["tp_g_l"], ["T1"])
    with pytest.raises(RecurError, match=r"clinical\.csv: patient T9 has no row"):
        read_offset_covariates(path, ["hbv"], ["T1", "T9"])


def test_offset_enters_the_training_loss_only(toy):
    """An offset that already explains the labels leaves the network little to learn: the
    training loss starts far lower than without it. Tuning AUC and loss are the network's
    own (no offset there). Offsets for some patients only are refused."""
    configure_torch(0, threads=1)
    labels = read_outcome(toy["clinical"]).to_dict()
    split = pd.read_csv(toy["split"])
    ids = list(split.loc[split["split"] == "train", "patient_id"])
    tune = make_items(list(split.loc[split["split"] == "tune", "patient_id"]), toy["crops"], labels)
    items = make_items(ids, toy["crops"], labels)
    explained = [{**i, "offset": np.float32(8.0 if i["label"] == 1 else -8.0)} for i in items]
    settings = TrainSettings.defaults(
        epochs=1, batch_size=8, seed=0, min_epochs=1, scheduler="constant"
    )
    arch = toy_train_config().architecture("Pre")
    _, plain_log, _ = train_model(arch, items, tune, settings)
    _, off_log, _ = train_model(arch, explained, tune, settings)
    assert off_log["train_loss"].iloc[0] < 0.1 * plain_log["train_loss"].iloc[0]
    assert off_log["tune_loss"].iloc[0] > 0.1  # the network alone: not explained there
    with pytest.raises(RecurError, match="every training patient needs an offset, or none"):
        train_model(arch, explained[:3] + items[3:], tune, settings)


@pytest.mark.slow
def test_train_dl_cli_records_the_offset_and_refuses_bad_variables(toy, tmp_path, capsys):
    table = pd.read_csv(toy["clinical"], dtype={"patient_id": str})
    rng = np.random.default_rng(0)
    table["afp_ng_ml"] = np.exp(rng.normal(3, 2, len(table)) + 1.5 * table["er"])
    table.loc[1, "afp_ng_ml"] = np.nan
    clinical = tmp_path / "clinical.csv"
    table.to_csv(clinical, index=False)
    cmd = ["--threads", "1", "train-dl", "--model", "Pre", "--split", str(toy["split"])]
    cmd += ["--clinical", str(clinical), "--crops-dir", str(toy["crops"]), "--device", "cpu"]

    def offset(*variables: str) -> list[str]:
        settings = toy_train_settings(
            epochs=1,
            batch_size=8,
            min_epochs=1,
            gru_hidden=32,
            offset={"models": ["Pre"], "variables": list(variables)},
        )
        return ["--settings", settings]

    assert main([*cmd, "--outdir", str(tmp_path / "m"), *offset("afp_ng_ml")]) == 0
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["training_offset"]["variables"] == ["afp_ng_ml"]
    assert meta["training_offset"]["coefficients"]["afp_ng_ml"] > 0
    load_model(tmp_path / "m")  # the extra record does not disturb reloading
    bad = [*cmd, "--outdir", str(tmp_path / "n"), *offset("albumin")]
    assert main(bad) == 2
    assert not (tmp_path / "n").exists()
    # a value that is not a number: the error names the table, the column and the patient
    train_id = pd.read_csv(toy["split"]).query("split == 'train'")["patient_id"].iloc[0]
    table["afp_ng_ml"] = table["afp_ng_ml"].astype(object)
    table.loc[table["patient_id"] == train_id, "afp_ng_ml"] = "high"
    table.to_csv(clinical, index=False)
    capsys.readouterr()
    text = [*cmd, "--outdir", str(tmp_path / "t"), *offset("afp_ng_ml")]
    assert main(text) == 2
    err = capsys.readouterr().err
    assert f"clinical.csv: offset: column 'afp_ng_ml' is not numeric (patient {train_id})" in err
    assert "Traceback" not in err
    assert not (tmp_path / "t").exists()
