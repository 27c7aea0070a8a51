"""recur.evaluate.figures: every figure kind is written, metadata-free and deterministic."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from recur.constants import MODELS_PAPER_ORDER
from recur.evaluate import figures, metrics
from recur.figstyle import OKABE_ITO


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    n = 40
    split = np.array(["train"] * 16 + ["tune"] * 12 + ["test"] * 12)
    y = np.tile([1, 0, 0, 0], 10)
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "site": np.where(split == "test", "X", "A"),
            "cohort": np.where(split == "test", "test", "train"),
            "split": split,
            "er": y,
            "rfs_months": np.where(y == 1, rng.uniform(1, 23, n), rng.uniform(25, 50, n)),
            "rfs_event": y,
            "M1": np.clip(0.5 * y + rng.uniform(0.05, 0.45, n), 0, 1),
            "M2": rng.uniform(0.05, 0.95, n),
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["roc", "dca", "calibration"])
def test_cohort_figures_written_deterministic_no_metadata(frame, kind, tmp_path):
    kw = {
        "dca": {"thresholds": np.arange(0.05, 0.8, 0.05)},
        "calibration": {"frac": 2 / 3},
    }.get(kind, {})
    figures.cohort_figures(frame, ["M1", "M2"], kind, tmp_path / "a", **kw)
    figures.cohort_figures(frame, ["M1", "M2"], kind, tmp_path / "b", **kw)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(
        f"{c}.{e}" for c in ("training", "tuning", "external", "X") for e in ("png", "pdf")
    )
    for name in names:
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes(), name
        assert b"Matplotlib" not in a
        assert b"CreationDate" not in a
    assert (tmp_path / "a" / "external.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_km_table_counts_and_empty_group(frame, tmp_path):
    # M2's cutoff above every score: nobody is high risk -> no log-rank test
    tab = figures.cohort_figures(
        frame, ["M1", "M2"], "km", tmp_path, cutoffs={"M1": 0.5, "M2": 2.0}
    )
    assert list(tab["cohort"].unique()) == ["training", "tuning", "external", "X"]
    tr = tab[(tab["cohort"] == "training") & (tab["model"] == "M1")].iloc[0]
    sub = frame[frame["split"] == "train"]
    assert tr["n_high"] == int((sub["M1"] >= 0.5).sum())
    assert tr["n_low"] + tr["n_high"] == len(sub)
    assert tr["events_low"] + tr["events_high"] == int(sub["rfs_event"].sum())
    assert 0 <= tr["p_logrank"] <= 1
    assert tab.loc[tab["model"] == "M2", "p_logrank"].isna().all()
    assert (tmp_path / "tuning.pdf").is_file()


def test_importance_figure(tmp_path):
    imp = pd.DataFrame(
        {"feature": ["tp_g_l", "PrePost_signature", "other"], "importance": [0.5, 0.3, 0.2]}
    )
    fig = figures.importance_figure(imp)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["other", "PrePost DL signature", "Total protein (g/L)"]  # ascending
    figures.save_figure(fig, tmp_path / "i.png", tmp_path / "i.pdf")
    assert (tmp_path / "i.png").stat().st_size > 1000
    assert b"CreationDate" not in (tmp_path / "i.pdf").read_bytes()


def test_model_styles_distinct_and_paper_models_fixed():
    paper = list(MODELS_PAPER_ORDER)
    eight = [*paper, "Clinical_Margin", "DL_Clinical_Margin", "M1", "M2"]
    styles = [figures.model_style(m, eight) for m in eight]
    pairs = {(s["color"], str(s["linestyle"])) for s in styles}
    assert len(pairs) == 8
    assert len({s["color"] for s in styles}) == 8  # eight colours before any repeats
    assert len({str(s["linestyle"]) for s in styles}) == 8
    assert set(s["color"] for s in styles) == set(OKABE_ITO.values())
    # the paper's models keep their style whatever else the figure shows, and in any order
    fixed = {
        "Clinical": "#0072B2",
        "Pre": "#E69F00",
        "PrePost": "#009E73",
        "DL_Clinical": "#D55E00",
    }
    for models in (paper, paper[::-1], ["M9", *eight[::-1]], ["DL_Clinical"]):
        for m in set(models) & set(paper):
            assert figures.model_style(m, models) == figures.model_style(m, paper)
            assert figures.model_style(m, models)["color"] == fixed[m]
    # others take the next free slots in the figure's order
    assert figures.model_style("M1", ["M1"]) == figures.model_style("Clinical_Margin", eight)
    # beyond eight models colours repeat with another dash pattern: pairs stay distinct
    many = [f"X{i}" for i in range(40)]
    pairs = {
        (s["color"], str(s["linestyle"])) for s in (figures.model_style(m, many) for m in many)
    }
    assert len(pairs) == 40


def test_roc_legend_gives_auc_and_its_delong_ci(frame):
    sub = frame[frame["split"] == "test"]
    fig = figures.roc_figure(sub, ["M1", "M2"], "external")
    try:
        texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    finally:
        plt.close(fig)
    assert len(texts) == 2
    assert all(re.fullmatch(r"M\d: AUC [01]\.\d{3} \[[01]\.\d{3}, [01]\.\d{3}\]", t) for t in texts)
    a, lo, hi = figures.auc_delong_ci(sub["er"], sub["M1"])
    aucs, cov = metrics.delong_auc_cov(sub["er"], sub["M1"].to_numpy()[None, :])
    assert a == pytest.approx(aucs[0])
    assert hi - a == pytest.approx(min(1.96 * np.sqrt(cov[0, 0]), 1 - a), rel=1e-3)
    assert texts[0] == f"M1: AUC {a:.3f} [{lo:.3f}, {hi:.3f}]"
    assert 0 <= lo <= a <= hi <= 1


def test_km_table_has_hazard_ratios_and_panels_say_the_direction():
    rng = np.random.default_rng(5)
    n = 40
    score = rng.uniform(0, 1, n)
    time = rng.exponential(30 * np.exp(-1.5 * score))  # a high score recurs sooner
    censor = rng.uniform(10, 60, n)
    sub = pd.DataFrame(
        {
            "er": (time <= 24).astype(int),
            "rfs_months": np.minimum(time, censor),
            "rfs_event": (time <= censor).astype(int),
            "M1": score,
            "M3": 1 - score,
            "M2": rng.uniform(0, 1, n),
        }
    )
    fig, tab = figures.km_figure(
        sub, ["M1", "M3", "M2"], "training", {"M1": 0.5, "M3": 0.5, "M2": 2.0}
    )
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    finally:
        plt.close(fig)
    assert {"hr", "hr_low", "hr_high"} <= set(tab.columns)
    m1, m3, m2 = (tab.set_index("model").loc[m] for m in ("M1", "M3", "M2"))
    assert m1["hr_low"] <= m1["hr"] <= m1["hr_high"]
    assert m1["hr"] > 1  # M1 is informative: its high-risk group recurs more
    assert m3["hr_low"] <= m3["hr"] <= m3["hr_high"]
    assert m3["hr"] < 1  # the inverse of M1
    assert np.isnan([m2["hr"], m2["hr_low"], m2["hr_high"]]).all()  # nobody is high risk
    # a Cox model on the group indicator alone: lifelines by hand
    from lifelines import CoxPHFitter

    high = (sub["M1"] >= 0.5).astype(int)
    cph = CoxPHFitter().fit(
        pd.DataFrame({"t": sub["rfs_months"], "e": sub["rfs_event"], "h": high}), "t", "e"
    )
    assert m1["hr"] == pytest.approx(float(np.exp(cph.params_["h"])))
    assert m1["hr_low"] == pytest.approx(float(cph.summary.loc["h", "exp(coef) lower 95%"]))
    assert "high-risk group recurs more" in titles[0]
    assert f"{m1['hr']:.2f} [{m1['hr_low']:.2f}, {m1['hr_high']:.2f}]" in titles[0]
    assert "recurs less: the split is inverted" in titles[1]
    assert "not estimable" in titles[2]


def test_hazard_ratio_undefined_without_events_in_a_group():
    t = np.array([1.0, 2, 3, 4, 5, 6])
    high = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    assert np.isnan(figures.hazard_ratio(t, np.array([1, 1, 0, 0, 0, 0]), high)).all()
    assert np.isnan(figures.hazard_ratio(t, np.array([1, 0, 1, 1, 0, 1]), np.zeros(6, bool))).all()


def test_plots_are_saved_as_palette_pngs_and_images_in_full_colour(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from recur.figstyle import save_figure

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], color=OKABE_ITO["vermillion"], linewidth=4)
    save_figure(fig, tmp_path / "plot.png", tmp_path / "plot.pdf", dpi=50)
    with Image.open(tmp_path / "plot.png") as im:
        assert im.mode == "P"  # 256-colour palette
        assert im.size == (100, 100)  # 2 in at 50 dpi
        colours = {c for _, c in im.convert("RGB").getcolors()}
    assert (0xD5, 0x5E, 0x00) in colours  # the line's colour is kept exactly
    assert (255, 255, 255) in colours
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(np.linspace(0, 1, 256 * 256).reshape(256, 256), cmap="inferno")
    save_figure(fig, tmp_path / "image.png", palette=False, dpi=100)
    with Image.open(tmp_path / "image.png") as im:
        assert im.mode in ("RGB", "RGBA")
        assert len(im.convert("RGB").getcolors(1 << 24)) > 256  # a continuous map, not banded
