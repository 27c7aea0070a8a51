"""Targeted reruns: one changed parameter reruns exactly its rule and what is downstream (item 5).

Dry runs only (``-n --config ...``) on the finished ``tiny_study`` working dir, which is never
modified. The expected job set is derived independently of the dry run: the rules that take
the parameter (listed here by hand), closed under the workflow's rule graph
(``snakemake --rulegraph``); for per-patient rules every patient must be planned.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..conftest import run_snakemake

pytestmark = pytest.mark.slow


def planned(study: Path, *config: str) -> tuple[dict[str, int], str]:
    """``{rule: job count}`` and the raw output of a dry run with ``--config config``."""
    res = run_snakemake(study, "-n", "--config", *config, timeout=600)
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
def rule_graph(tiny_study: Path) -> dict[str, set[str]]:
    """``{rule: rules that consume its outputs}`` from ``snakemake --rulegraph``."""
    res = run_snakemake(tiny_study, "--rulegraph", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', res.stdout, flags=re.M))
    graph: dict[str, set[str]] = {n: set() for n in names.values()}
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", res.stdout, flags=re.M):
        graph[names[a]].add(names[b])
    assert "train_dl" in graph.get("crop", ()), graph
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
def nothing_to_do(tiny_study: Path) -> None:
    counts, out = planned(tiny_study)
    assert counts == {} or "Nothing to be done" in out, counts


@pytest.mark.parametrize(
    ("config", "roots", "per_patient"),
    [
        # crop size: the crops of every patient, then everything that reads crops
        (["crop={'size': 64}"], {"crop"}, {"crop"}),
        # a DL hyper-parameter: every training job and what reads the networks
        (["train={'dropout': 0.25}"], {"train_dl"}, set()),
        # a Clinical-model hyper-parameter: only the Clinical model and its consumers
        (["clinical={'n_estimators': 77}"], {"clinical_model"}, set()),
        # the bootstrap count: only the rules that bootstrap, nothing upstream
        (["evaluate={'bootstrap': 123}"], None, set()),
    ],
    ids=["crop.size", "train.dropout", "clinical.n_estimators", "evaluate.bootstrap"],
)
def test_one_parameter_reruns_exactly_its_rule_and_downstream(
    tiny_study: Path, rule_graph, nothing_to_do, config, roots, per_patient
):
    counts, out = planned(tiny_study, *config)
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
    tiny_patients = 26
    for rule in per_patient:
        assert counts[rule] == tiny_patients, (rule, counts[rule])
