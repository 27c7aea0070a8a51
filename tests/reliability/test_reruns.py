"""Targeted reruns: one changed parameter reruns exactly its rule and what is downstream (item 5).

Dry runs only (``-n --configfile tiny.yaml change.yaml``) on the finished ``tiny_study``
working dir, which is never modified. The expected job set is derived independently of the
dry run: the rules that take the parameter (listed here by hand), closed under the
workflow's rule graph (``snakemake --rulegraph``); per-patient rules plan every patient.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import run_snakemake

pytestmark = pytest.mark.slow


def planned(study: Path, extra: Path | None = None) -> tuple[dict[str, int], str]:
    """``{rule: job count}`` and the raw output of a dry run, with config ``extra`` laid over
    the study's ``tiny.yaml``."""
    files = [str(study / "tiny.yaml")] + ([str(extra)] if extra else [])
    res = run_snakemake(study, "-n", "--configfile", *files, configfile="", timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    counts: dict[str, int] = {}
    block = out.split("Job stats:", 1)[1] if "Job stats:" in out else ""
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts, out


@pytest.fixture(scope="module")
def rule_graph(tiny_run: Path) -> dict[str, set[str]]:
    """``{rule: rules that consume its outputs}`` from ``snakemake --rulegraph``."""
    res = run_snakemake(tiny_run, "--rulegraph", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', res.stdout, flags=re.M))
    graph: dict[str, set[str]] = {n: set() for n in names.values()}
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", res.stdout, flags=re.M):
        graph[names[a]].add(names[b])
    # every crop feeds the crop QC table, which training names as its input
    assert "crop_qc" in graph.get("crop", ()), graph
    assert "train_dl" in graph.get("crop_qc", ()), graph
    return graph


#: Rules that may take evaluate.bootstrap (those that compute bootstrap CIs).
BOOTSTRAP_RULES = {
    "table2",
    "delong",
    "calibration",
    "km_figures",
    "cutoffs",
    "roc_figures",
    "dca_figures",
    "margin_table",
    "survival",  # its CIs use Table 2's resamples (evaluate's bootstrap and seed)
}


def downstream(graph: dict[str, set[str]], roots: set[str]) -> set[str]:
    seen, todo = set(roots), list(roots)
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.fixture(scope="module")
def nothing_to_do(tiny_run: Path) -> None:
    counts, out = planned(tiny_run)
    assert counts == {} or "Nothing to be done" in out, counts


@pytest.mark.parametrize(
    ("config", "roots", "per_patient"),
    [
        # crop size: the crops of every patient, then everything that reads crops
        ("crop: {size: 64}", {"crop"}, {"crop"}),
        # a DL hyper-parameter: every training job and what reads the networks
        ("train: {dropout: 0.25}", {"train_dl"}, set()),
        # a Clinical-model hyper-parameter: the Clinical model (and the Clinical+margin model,
        # which shares the section) and their consumers; not DL_Clinical
        ("clinical: {n_estimators: 77}", {"clinical_model", "margin_clinical_model"}, set()),
        # the bootstrap count: only the rules that bootstrap, nothing upstream
        ("evaluate: {bootstrap: 123}", None, set()),
    ],
    ids=["crop.size", "train.dropout", "clinical.n_estimators", "evaluate.bootstrap"],
)
def test_one_parameter_reruns_exactly_its_rule_and_downstream(
    tiny_run: Path, tmp_path: Path, rule_graph, nothing_to_do, config, roots, per_patient
):
    extra = tmp_path / "change.yaml"
    extra.write_text(config, encoding="utf-8")
    counts, out = planned(tiny_run, extra)
    assert counts, "nothing planned: the parameter change was not detected\n" + out[-2000:]
    changed = set(re.findall(r"rule (\w+):\n(?:.*\n)*?\s+reason: Params have changed", out))
    if roots is None:  # the rules holding the parameter are those whose params changed
        roots = changed
        assert roots, out[-3000:]
        assert roots <= BOOTSTRAP_RULES, roots
    expected = downstream(rule_graph, roots) - {"all"}
    got = set(counts) - {"all"}
    assert got == expected, f"planned {sorted(got)}, expected {sorted(expected)}"
    for rule in ("convert", "check_mask", "register", "split"):
        assert rule not in counts, rule
    n_patients = len(pd.read_csv(tiny_run / "results" / "cohort" / "patients.csv"))
    for rule in per_patient:
        assert counts[rule] == n_patients, (rule, counts[rule])
