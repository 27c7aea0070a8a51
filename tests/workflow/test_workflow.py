"""Workflow-level checks: dry-run DAG on both cohort sources, lint, and refusals before any job.

Each test runs the real ``snakemake`` on the repository's Snakefile in a scratch working
directory, so nothing is written into the checkout.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recur.synthetic.sites import planned_patients

from ..cohort.test_contract import write_cohort_tables
from ..conftest import REPO

#: Rules that run once per patient: conversion and registration cover both time points in one
#: job each, and the mask check runs inside the register job (no check_mask jobs); the
#: radiomics features (radiomics.enabled, the default) are one more job per patient.
PER_PATIENT = (
    "convert",
    "register",
    "crop",
    "margin_register",
    "margin_metrics",
    "radiomics_features",
)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, check=False)


def job_counts(stdout: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts: dict[str, int] = {}
    block = stdout.split("Job stats:", 1)[1] if "Job stats:" in stdout else ""
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_chain_per_patient(counts: dict[str, int], n_patients: int) -> None:
    assert "check_mask" not in counts, counts
    for rule in PER_PATIENT:
        assert counts.get(rule) == n_patients, (rule, counts)
    if n_patients > 50:  # (small cohorts: the 12 training jobs, 20 margin figures)
        # nothing else runs once per patient (or per patient and time point): Snakemake's
        # own cost is per job (docs/methods/scale.md)
        per_patient = {r for r, n in counts.items() if n >= n_patients}
        assert per_patient == set(PER_PATIENT), counts


def test_dry_run_default_config(tmp_path: Path):
    res = snakemake(tmp_path, "-n")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert counts["synth_cohort"] == 1
    assert counts["validate_cohort"] == 1
    assert_chain_per_patient(counts, 254 + 20 + 15)
    assert not (tmp_path / "results").exists(), "a dry run must not write results"
    # the workflow profile (greedy job selection) applies to runs from any directory
    assert "Using workflow specific profile profiles/default" in res.stderr + res.stdout


def test_dry_run_small_synthetic_lists_one_chain_per_patient(tmp_path: Path):
    cfg = write_config(tmp_path / "c.yaml", "synthetic: {n_train: 6, n_test: [2, 3]}\n")
    res = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr + res.stdout
    assert_chain_per_patient(job_counts(res.stdout), 11)
    planned = planned_patients(6, [2, 3])
    assert list(planned["cohort"]).count("test") == 5


def test_dry_run_cohort_directory_config(tmp_path: Path):
    """A user's YAML with only cohort.source and cohort.dir works; defaults fill the rest."""
    cohort = tmp_path / "my cohort é"  # spaces and non-ASCII in the path
    cohort.mkdir()
    patients = write_cohort_tables(cohort, n_train=18, n_test=2)
    cfg = write_config(tmp_path / "user.yaml", f"cohort: {{source: directory, dir: '{cohort}'}}\n")
    work = tmp_path / "work"
    work.mkdir()
    res = snakemake(work, "-n", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert "synth_cohort" not in counts
    assert counts["validate_cohort"] == 1
    assert_chain_per_patient(counts, len(patients))


def test_lint_is_clean(tmp_path: Path):
    res = snakemake(tmp_path, "--lint")
    assert res.returncode == 0, res.stderr
    assert "Lints for" not in res.stdout + res.stderr, res.stdout + res.stderr


def test_unknown_config_key_is_refused_before_any_job(tmp_path: Path):
    cfg = write_config(tmp_path / "bad.yaml", "cohort: {sourc: synthetic}\n")
    res = snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg))
    assert res.returncode != 0
    err = res.stderr + res.stdout
    assert "unknown key 'sourc' in 'cohort'" in err
    assert "allowed: clinical, dir, rois, series, source" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("synthetic: {n_train: -3}\n", "'synthetic.n_train' = -3: -3 is less than the minimum"),
        ("device: tpu\n", "'device' = 'tpu'"),
        ("bogus: 1\n", "unknown key 'bogus' at the top level"),
    ],
)
def test_bad_config_values_are_refused(tmp_path: Path, yaml_text: str, expected: str):
    cfg = write_config(tmp_path / "bad.yaml", yaml_text)
    res = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert res.returncode != 0
    assert expected in res.stderr + res.stdout


def test_broken_clinical_table_is_refused_before_any_job(tmp_path: Path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write_cohort_tables(cohort)
    clin = pd.read_csv(cohort / "clinical.csv", dtype=str)
    clin.loc[2, "tumor_size_cm"] = "31"  # millimetres
    clin.to_csv(cohort / "clinical.csv", index=False)
    cfg = write_config(tmp_path / "user.yaml", f"cohort: {{source: directory, dir: {cohort}}}\n")
    res = snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg))
    assert res.returncode != 0
    err = res.stderr + res.stdout
    assert "clinical.csv" in err
    assert "row 4 (patient P003): column 'tumor_size_cm' = '31'" in err
    assert not (tmp_path / "results").exists()


def test_config_defaults_cover_every_key():
    """Every schema key has a description and a default (objects default to {})."""
    from recur.config import load_schema

    def walk(node: dict, path: str) -> None:
        if path:
            assert "description" in node, f"{path} has no description"
            assert "default" in node, f"{path} has no default"
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'top'} allows unknowns"
            for key, sub in node["properties"].items():
                walk(sub, f"{path}.{key}" if path else key)

    walk(load_schema(), "")
