"""Tuning split and cross-fitting folds (recur.cohort.split)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recur.cli.main import main
from recur.cohort.split import crossfit_folds, make_split, read_outcome, read_split
from recur.errors import RecurError
from tests.fixtures import settings_option


def _cohort(n_train: int = 100, n_pos: int = 30, n_test: int = 15):
    ids = [f"P{i:03d}" for i in range(n_train + n_test)]
    patients = pd.DataFrame(
        {
            "patient_id": ids,
            "site": ["A"] * n_train + ["B"] * n_test,
            "cohort": ["train"] * n_train + ["test"] * n_test,
        }
    )
    er = np.zeros(n_train + n_test, dtype=int)
    er[:n_pos] = 1  # ER patients first in the training cohort
    er[n_train : n_train + 3] = 1
    return patients, pd.Series(er, index=ids)


def test_split_is_stratified_20_percent_and_disjoint():
    patients, er = _cohort(100, 30, 15)
    s = make_split(patients, er, 0.2, seed=7)
    assert list(s.columns) == ["patient_id", "site", "cohort", "split"]
    assert list(s["patient_id"]) == list(patients["patient_id"])
    tune = s[s["split"] == "tune"]
    train = s[s["split"] == "train"]
    assert len(tune) == 20  # 20% of 100
    assert int(er[tune["patient_id"]].sum()) == 6  # 30% ER kept in tune: 6 of 20
    assert int(er[train["patient_id"]].sum()) == 24
    assert set(tune["patient_id"]).isdisjoint(train["patient_id"])
    assert (s.loc[s["cohort"] == "test", "split"] == "test").all()
    assert (s.loc[s["cohort"] == "train", "split"] != "test").all()


def test_split_reproducible_and_seed_dependent():
    patients, er = _cohort()
    a = make_split(patients, er, 0.2, seed=1)
    b = make_split(patients, er, 0.2, seed=1)
    c = make_split(patients, er, 0.2, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert set(a.loc[a["split"] == "tune", "patient_id"]) != set(
        c.loc[c["split"] == "tune", "patient_id"]
    )


def test_split_refuses_missing_label_and_bad_fraction():
    patients, er = _cohort()
    with pytest.raises(RecurError, match="P005"):
        make_split(patients, er.drop("P005"), 0.2, 1)
    with pytest.raises(RecurError, match="fraction"):
        make_split(patients, er, 1.0, 1)
    few = er.copy()
    few[:] = 0
    few.iloc[0] = 1
    with pytest.raises(RecurError, match="at least 2"):
        make_split(patients, few, 0.2, 1)


def test_crossfit_folds_partition_train_split_stratified():
    patients, er = _cohort(100, 30, 15)
    s = make_split(patients, er, 0.2, seed=3)
    folds = crossfit_folds(s, er, 4, seed=5)
    train_ids = set(s.loc[s["split"] == "train", "patient_id"])
    assert set(folds.index) == train_ids  # every train patient in exactly one fold
    assert sorted(folds.value_counts().tolist()) == [20, 20, 20, 20]
    pos = er[folds.index].groupby(folds.to_numpy()).sum()
    assert sorted(pos.tolist()) == [6, 6, 6, 6]  # 24 ER patients / 4 folds
    pd.testing.assert_series_equal(folds, crossfit_folds(s, er, 4, seed=5))
    with pytest.raises(RecurError, match="folds need"):
        crossfit_folds(s, er, 30, seed=5)


def test_read_outcome_and_split_cli(tmp_path):
    patients, er = _cohort(40, 12, 6)
    patients.to_csv(tmp_path / "patients.csv", index=False)
    pd.DataFrame({"patient_id": er.index, "er": er.to_numpy()}).to_csv(
        tmp_path / "clinical.csv", index=False
    )
    assert read_outcome(tmp_path / "clinical.csv").to_dict() == er.to_dict()
    out = tmp_path / "splits" / "split.csv"
    cmd = ["split", "--patients", str(tmp_path / "patients.csv")]
    cmd += ["--clinical", str(tmp_path / "clinical.csv"), *settings_option("split", seed=9)]
    cmd += ["--out", str(out)]
    assert main(cmd) == 0
    s = read_split(out)
    assert (s["split"] == "tune").sum() == 8
    pd.testing.assert_frame_equal(s, make_split(patients, er, 0.2, 9))

    pd.DataFrame({"patient_id": ["P000"], "er": [2]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(RecurError, match="0 or 1"):
        read_outcome(tmp_path / "bad.csv")


def test_read_split_reads_text_and_names_what_is_wrong(tmp_path):
    p = tmp_path / "split.csv"
    with pytest.raises(RecurError, match="split table not found"):
        read_split(p)
    p.write_text("patient_id,site,cohort,split\n007,1,train,train\n008,2,test,test\n")
    s = read_split(p)
    assert list(s.columns) == ["patient_id", "site", "cohort", "split"]
    assert list(s["patient_id"]) == ["007", "008"]
    assert list(s["site"]) == ["1", "2"]  # site names stay text, as in the cohort tables
    p.write_text("patient_id,site,split\nP1,A,train\n")
    with pytest.raises(RecurError, match=r"split\.csv: missing column\(s\) cohort"):
        read_split(p)
    p.write_text("patient_id,site,cohort,split\nP1,A,train,train\nP2,A,train,valid\n")
    with pytest.raises(RecurError, match="patient P2 has split 'valid'; expected train, tune or"):
        read_split(p)
