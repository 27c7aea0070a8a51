"""The benchmark runner's own arithmetic (bench/run_all.py): study breakdown and configs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from ..conftest import REPO


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "bench" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_bench(path: Path, seconds: float, rss: str, end: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\n" + f"{seconds}\t0:00:01\t{rss}\t1\n", encoding="utf-8"
    )
    os.utime(path, (end, end))


def test_study_rows_union_of_job_intervals_and_per_rule_totals(tmp_path: Path, run_all):
    bench = tmp_path / "results" / "benchmarks"
    # two overlapping jobs [100, 110] and [105, 120], then a gap, then [200, 204]:
    # busy 20 + 4 = 24 s (not the 104 s span)
    write_bench(bench / "register" / "P1" / "pre.tsv", 10.0, "100", 1110.0)
    write_bench(bench / "register" / "P1" / "post.tsv", 15.0, "300", 1120.0)
    write_bench(bench / "crop" / "P1.tsv", 4.0, "-", 1204.0)
    rows = {(r["case"], r["metric"]): r for r in run_all.study_rows(tmp_path, None)}
    wall = rows[("whole study (union of job intervals)", "wall_s")]
    assert float(wall["value"]) == pytest.approx(24.0)
    assert wall["target"] == "<= 900"
    assert rows[("all rules", "jobs")]["value"] == "3"
    assert float(rows[("all rules", "job_s_total")]["value"]) == pytest.approx(29.0)
    assert float(rows[("register", "job_s_total")]["value"]) == pytest.approx(25.0)
    assert float(rows[("register", "job_s_median")]["value"]) == pytest.approx(12.5)
    assert float(rows[("register", "peak_rss_mb")]["value"]) == pytest.approx(300.0)
    assert float(rows[("crop", "share_of_job_s")]["value"]) == pytest.approx(4 / 29, rel=1e-3)


def test_study_rows_prefer_the_measured_wall_time(tmp_path: Path, run_all):
    write_bench(tmp_path / "results" / "benchmarks" / "crop" / "P1.tsv", 4.0, "1", 1000.0)
    rows = run_all.study_rows(tmp_path, 812.5)
    assert rows[0]["case"] == "whole study (snakemake --cores 2)"
    assert float(rows[0]["value"]) == pytest.approx(812.5)


def test_synthetic_config_splits_like_the_default_study(run_all):
    assert run_all.synthetic_config(289) == "synthetic: {n_train: 254, n_test: [20, 15]}\n"
    assert run_all.synthetic_config(50) == "synthetic: {n_train: 44, n_test: [3, 3]}\n"
    # the schema's minimums: 4 training patients, 2 per test site
    assert run_all.synthetic_config(5) == "synthetic: {n_train: 4, n_test: [2, 2]}\n"


def cited_result_files(text: str) -> list[str]:
    """Every ``bench/results/<file>`` a text names (globs kept as written), and every bare
    dated ``<date>[-...].csv`` on a line that names bench/results (pure function)."""
    import re

    found = re.findall(r"bench/results/([A-Za-z0-9_.*-]+\.csv)", text)
    for line in text.splitlines():
        if "bench/results" in line:
            found += re.findall(r"(?<![/\w-])(20\d\d-\d\d-\d\d[A-Za-z0-9_.*-]*\.csv)", line)
    return sorted(set(found))


def test_cited_result_files_finds_paths_globs_and_bare_names():
    text = (
        "see [x](bench/results/2026-12-04.csv) and bench/results/a-*.csv\n"
        "bench/results/2026-12-04-train.csv (`2026-12-04-cpu.csv`)\n"
        "elsewhere 2026-01-01.csv is not a citation\n"
    )
    assert cited_result_files(text) == [
        "2026-12-04-cpu.csv",
        "2026-12-04-train.csv",
        "2026-12-04.csv",
        "a-*.csv",
    ]


def test_every_cited_benchmark_result_is_in_the_repository():
    """A figure quoted from a result file must come with the file (a .gitignore rule once
    hid bench/results/, and the cited CSVs never reached the repository)."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
    missing = []
    for doc in docs:
        for name in cited_result_files(doc.read_text(encoding="utf-8")):
            if not list((REPO / "bench" / "results").glob(name)):
                missing.append(f"{doc.relative_to(REPO)}: bench/results/{name}")
    assert not missing, "cited but not in bench/results/:\n" + "\n".join(missing)


@pytest.fixture(scope="module")
def pool_external():
    spec = importlib.util.spec_from_file_location(
        "pool_external", REPO / "bench" / "pool_external.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_table_by_hand(pool_external):
    """AUC of [0.1, 0.4 | 0.35, 0.8] is 3 of 4 pairs; gap = ceiling - AUC."""
    import numpy as np

    table = pool_external.summary_table(
        np.array([0, 0, 1, 1]),
        {"Pre": np.array([0.1, 0.4, 0.35, 0.8])},
        {"Pre": "Pre"},
        {"Pre": 0.9, "Pre_without_satellite": 0.8},
        {},
    )
    row = table.iloc[0]
    assert (row["model"], row["n"], row["n_er"], row["auc"]) == ("Pre", 4, 2, 0.75)
    assert row["gap"] == pytest.approx(0.15)
    assert row["ceiling_without_satellite"] == 0.8
    assert np.isnan(row["learnable"])


def test_pooled_scores_prefix_each_cohort_and_check_the_truth(tmp_path: Path, pool_external):
    cohorts = []
    for i, (ids, er) in enumerate(((["P0001", "P0002"], [0, 1]), (["P0001"], [1]))):
        root = tmp_path / f"c{i}"
        work = root / "bench_external_work" / "KEY"
        work.mkdir(parents=True)
        rows = "\n".join(f"{p},pre,DP,{e}" for p, e in zip(ids, er, strict=True))
        (root / "truth.csv").write_text(f"patient_id,timepoint,phase,er\n{rows}\n")
        scored = "\n".join(f"{p},0.5,{e}" for p, e in zip(ids, er, strict=True))
        (work / "scores-B.csv").write_text(f"patient_id,Pre,er\n{scored}\n")
        cohorts.append(root / "cohort")
    got = pool_external.pooled_scores(cohorts, "KEY", "scores-B.csv")
    assert list(got["patient_id"]) == ["c0:P0001", "c0:P0002", "c1:P0001"]
    assert list(got["er"]) == [0, 1, 1]
    (tmp_path / "c1" / "truth.csv").write_text("patient_id,timepoint,phase,er\nP0001,pre,DP,0\n")
    with pytest.raises(SystemExit, match="disagree"):
        pool_external.pooled_scores(cohorts, "KEY", "scores-B.csv")
    with pytest.raises(SystemExit, match="not found"):
        pool_external.pooled_scores(cohorts, "OTHER", "scores-B.csv")
    with pytest.raises(SystemExit, match="not found"):  # another bundle's scores
        pool_external.pooled_scores(cohorts, "KEY", "scores-A.csv")


@pytest.fixture(scope="module")
def bench_clinical():
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(
        "bench_clinical", REPO / "bench" / "bench_clinical.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_clinical_sees_the_clinical_table_recur_synth_writes(tmp_path: Path, bench_clinical):
    """The Clinical measurement uses the rows `recur synth` writes into clinical.csv, blank
    cells included, not the generator's true values."""
    import pandas as pd

    from recur.cohort import contract
    from recur.constants import CLINICAL_FEATURES
    from recur.synthetic import cohort as synth
    from recur.synthetic.latent import PAPER_ER_SHARE

    synth.write_cohort(
        tmp_path / "cohort",
        synth.SyntheticSettings.defaults(n_train=3, n_test=(3,), seed=5, er_share=PAPER_ER_SHARE),
    )
    written = contract.check_clinical(contract.read_table(tmp_path / "cohort" / "clinical.csv"))
    rows = bench_clinical.clinical_rows(5, 3, (3,), PAPER_ER_SHARE)
    shown = bench_clinical.shown_clinical(rows)
    cols = ["patient_id", "cohort", "er", *CLINICAL_FEATURES]
    pd.testing.assert_frame_equal(
        shown[cols].reset_index(drop=True),
        written[cols].reset_index(drop=True),
        check_dtype=False,
    )
