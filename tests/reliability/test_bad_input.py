"""Bad configuration and bad cohort tables are refused before any job runs.

Each case runs the real ``snakemake`` (not a dry run: ``--cores 1``) on the repository's
Snakefile in a scratch directory and asserts that it stops at parse time with one clear
message naming the key, or the table, row and patient, and that no ``results/`` folder was
created. Cases already covered in tests/workflow/test_workflow.py (unknown key ``cohort.sourc``,
negative ``synthetic.n_train``, ``device: tpu``, unknown top-level key, tumour size in mm)
are not repeated here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ..cohort.test_contract import write_cohort_tables
from ..conftest import run_snakemake

pytestmark = pytest.mark.slow


def refused(workdir: Path, config_text: str) -> str:
    """Run the workflow with ``config_text``; assert it refused before any job; return output."""
    (workdir / "bad.yaml").write_text(config_text, encoding="utf-8")
    res = run_snakemake(workdir, "--cores", "1", configfile="bad.yaml", timeout=300)
    out = res.stderr + res.stdout
    assert res.returncode != 0, out
    assert not (workdir / "results").exists(), "results/ was created before the refusal"
    assert "rule " not in res.stdout, "a job started: " + out
    assert "localrule " not in out, "a job started: " + out
    return out


#: Bad config values, all in one file: each is listed on its own line with the key path.
BAD_CONFIG = """\
train: {epoch: 3, batch_size: two, max_pool: maybe}
crop: {sise: 64, size: 4}
synthetic: {n_test: 5}
split: {tune_fraction: 1.5}
evaluate: {bootstrap: 0}
"""
BAD_CONFIG_MESSAGES = [
    # mistyped nested keys, named with their section and the allowed keys
    "unknown key 'epoch' in 'train' (allowed: augment, aux_weight, average_window,",
    "unknown key 'sise' in 'crop' (allowed: normalisation, post_frame, region, size,",
    # wrong types
    "'train.batch_size' = 'two': 'two' is not of type 'integer'",
    "'train.max_pool' = 'maybe': 'maybe' is not of type 'boolean'",
    "'synthetic.n_test' = 5: 5 is not of type 'array'",
    # out-of-range values
    "'split.tune_fraction' = 1.5: 1.5 is greater than or equal to the maximum of 1",
    "'crop.size' = 4: 4 is less than the minimum of 8",
    "'evaluate.bootstrap' = 0: 0 is less than the minimum of 1",
]


def test_bad_config_is_refused_before_any_job(tmp_path: Path):
    out = refused(tmp_path, BAD_CONFIG)
    for text in BAD_CONFIG_MESSAGES:
        assert text in out, f"{text!r} not in:\n{out}"
    assert "Traceback" not in out, out


def _clinical(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "clinical.csv", dtype=str, keep_default_na=False)


def _edit(root: Path, table: str, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    df = pd.read_csv(root / table, dtype=str, keep_default_na=False)
    fn(df).to_csv(root / table, index=False)


def duplicate_id(root: Path) -> None:
    _edit(root, "clinical.csv", lambda d: pd.concat([d, d.iloc[[0]]], ignore_index=True))


def clinical_patient_without_series(root: Path) -> None:
    _edit(root, "series.csv", lambda d: d[d["patient_id"] != "P002"])
    _edit(root, "rois.csv", lambda d: d[d["patient_id"] != "P002"])


def series_patient_not_in_clinical(root: Path) -> None:
    (root / "dicom" / "P999").mkdir()
    extra = {"patient_id": "P999", "timepoint": "pre", "phase": "PS", "dicom_dir": "dicom/P999"}
    _edit(root, "series.csv", lambda d: pd.concat([d, pd.DataFrame([extra])]))


def missing_outcome(root: Path) -> None:
    def f(d: pd.DataFrame) -> pd.DataFrame:
        d.loc[2, "er"] = ""
        return d

    _edit(root, "clinical.csv", f)


def missing_predictor_column(root: Path) -> None:
    _edit(root, "clinical.csv", lambda d: d.drop(columns=["afp_ng_ml"]))


def negative_afp(root: Path) -> None:
    def f(d: pd.DataFrame) -> pd.DataFrame:
        d.loc[3, "afp_ng_ml"] = "-12"
        return d

    _edit(root, "clinical.csv", f)


def missing_phase(root: Path) -> None:
    _edit(
        root,
        "series.csv",
        lambda d: d[
            ~((d["patient_id"] == "P003") & (d["phase"] == "AP") & (d["timepoint"] == "post"))
        ],
    )


def missing_timepoint(root: Path) -> None:
    drop = lambda d: d[~((d["patient_id"] == "P004") & (d["timepoint"] == "post"))]  # noqa: E731
    _edit(root, "series.csv", drop)
    _edit(root, "rois.csv", drop)


def both_cohorts(root: Path) -> None:
    def f(d: pd.DataFrame) -> pd.DataFrame:
        row = d.iloc[[1]].copy()
        row["cohort"] = "test"
        row["site"] = "B"
        return pd.concat([d, row], ignore_index=True)

    _edit(root, "clinical.csv", f)


def single_class(root: Path) -> None:
    def f(d: pd.DataFrame) -> pd.DataFrame:
        train = d["cohort"] == "train"
        d.loc[train, ["er", "rfs_event", "rfs_months"]] = ["0", "0", "40"]
        return d

    _edit(root, "clinical.csv", f)


def missing_dicom_folder(root: Path) -> None:
    (root / "dicom" / "P005" / "pre" / "DP").rmdir()


def clinical_problems(root: Path) -> None:
    duplicate_id(root)
    missing_outcome(root)
    negative_afp(root)
    both_cohorts(root)


def series_problems(root: Path) -> None:
    clinical_patient_without_series(root)
    series_patient_not_in_clinical(root)
    missing_phase(root)
    missing_timepoint(root)
    missing_dicom_folder(root)


@pytest.mark.parametrize(
    ("breakers", "expected"),
    [
        (
            [clinical_problems],
            [
                "clinical.csv",
                "patient P001 appears more than once (rows 2, 8)",
                "row 4 (patient P003): column 'er'",
                "row 5 (patient P004): column 'afp_ng_ml' = '-12'",
                "patient P002 is listed in both cohorts",
            ],
        ),
        ([missing_predictor_column], ["clinical.csv", "missing required column 'afp_ng_ml'"]),
        ([single_class], ["clinical.csv", "cohort 'train' has a single outcome class"]),
        (
            [series_problems],
            [
                "series.csv",
                "patient P002: no series",
                "patient P999 is not in clinical.csv",
                "patient P003: no series for post/AP",
                "patient P004: no series for post/",
                "'dicom/P005/pre/DP'",
                "does not exist",
            ],
        ),
    ],
    ids=["clinical", "missing_column", "single_class", "series"],
)
def test_bad_cohort_table_is_refused_before_any_job(
    tmp_path: Path, breakers: list[Callable[[Path], None]], expected: list[str]
):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write_cohort_tables(cohort, n_train=4, n_test=2)
    for breaker in breakers:
        breaker(cohort)
    work = tmp_path / "work"
    work.mkdir()
    out = refused(work, f"cohort: {{source: directory, dir: '{cohort}'}}\n")
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"
    # one message per problem, not a library traceback
    assert "Traceback" not in out, out
