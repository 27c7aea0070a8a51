"""recur.evaluate.figures: every figure kind is written, metadata-free and deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recur.evaluate import figures


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
    imp = pd.DataFrame({"feature": ["a", "b"], "importance": [0.7, 0.3]})
    figures.save_figure(figures.importance_figure(imp), tmp_path / "i.png", tmp_path / "i.pdf")
    assert (tmp_path / "i.png").stat().st_size > 1000
    assert b"CreationDate" not in (tmp_path / "i.pdf").read_bytes()
