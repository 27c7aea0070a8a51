"""Speed of the workflow against an earlier commit, side by side in one run.

``patient``: the per-patient preprocessing (conversion, mask check, phase registration, crops,
post-to-pre registration, margin) of one synthetic cohort (default 40 patients, made once with
``recur synth``), run by Snakemake (``--cores``) with this checkout's workflow and with the
workflow of ``--baseline`` (a detached ``git worktree`` of that commit, same interpreter and
packages; ``--current COMMIT`` measures a commit instead of this checkout), alternately
``--repeats`` times, each in a fresh directory. The targets are files both versions write:
``results/crops/<patient>.npz`` and ``results/margin/<patient>/margin.json``. Prints each run's
wall time, the median per code version and the ratio current / baseline, the jobs' CPU seconds
by rule (Snakemake ``benchmark:`` files) and Snakemake's own CPU (the run's children's CPU minus
the jobs').

``study``: the whole default study (``snakemake --cores``) from scratch, once per code version,
with the same breakdown: wall time, jobs' CPU by rule, Snakemake's own CPU.

    .venv/bin/python bench/bench_speed.py patient --baseline f4aee8f [--n 40] [--repeats 3] \\
        [--cores 2] [--work /tmp/bench_speed] [--csv bench/results/DATE-speed-patient.csv]
    .venv/bin/python bench/bench_speed.py study --baseline f4aee8f [--csv ...]

Wall times depend on the machine and its load: compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def code_tree(commit: str | None, work: Path) -> Path:
    """This checkout (``commit`` None) or a detached worktree of ``commit`` under ``work``."""
    if commit is None:
        return REPO
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = work / f"code-{sha}"
    if not tree.exists():
        # a worktree folder deleted by hand stays registered until pruned
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=True)
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), sha],
            check=True,
            capture_output=True,
        )
    return tree


def make_cohort(work: Path, n: int, seed: int) -> Path:
    """A synthetic cohort of ``n`` patients, one at each test site (made once)."""
    cohort = work / f"cohort-{n}-{seed}"
    if not (cohort / "clinical.csv").is_file():
        subprocess.run(
            [
                *(sys.executable, "-m", "recur", "synth", str(cohort)),
                *("--n-train", str(n - 2), "--n-test", "1", "1", "--seed", str(seed)),
                *("--truth", str(work / "truth.csv")),
            ],
            check=True,
            env=_env(REPO),
        )
    return cohort


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def run_snakemake(tree: Path, rundir: Path, args: list[str]) -> tuple[float, float]:
    """Run ``snakemake`` of ``tree`` in ``rundir``; (wall s, CPU s of all its children)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(tree / "Snakefile"), "-d", str(rundir)]
    log = rundir.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd + args, stdout=out, stderr=subprocess.STDOUT, env=_env(tree), cwd=tree
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"snakemake failed in {rundir}: see {log}")
    return wall, usage.ru_utime + usage.ru_stime


def jobs_cpu(rundir: Path) -> pd.Series:
    """CPU seconds by rule from the run's ``results/benchmarks/<rule>/*.tsv``."""
    rows = []
    for tsv in (rundir / "results" / "benchmarks").glob("*/*.tsv"):
        try:
            bench = pd.read_csv(tsv, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if len(bench) and "cpu_time" in bench:
            rows.append((tsv.parent.name, float(bench["cpu_time"].iloc[-1])))
    frame = pd.DataFrame(rows, columns=["rule", "cpu_s"])
    return frame.groupby("rule")["cpu_s"].sum().sort_values(ascending=False)


def patient_targets(cohort: Path) -> list[str]:
    patients = pd.read_csv(cohort / "clinical.csv", dtype=str)["patient_id"].tolist()
    return [f"results/crops/{p}.npz" for p in patients] + [
        f"results/margin/{p}/margin.json" for p in patients
    ]


def bench_patient(a: argparse.Namespace) -> list[dict]:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cohort = make_cohort(work, a.n, a.seed)
    config = work / "config.yaml"
    config.write_text(f"cohort: {{source: directory, dir: {cohort}}}\n")
    targets = patient_targets(cohort)
    trees = {"baseline": code_tree(a.baseline, work), "current": code_tree(a.current, work)}
    rows = []
    for repeat in range(a.repeats):
        for version, tree in trees.items():
            rundir = work / f"run-{version}-{repeat}"
            shutil.rmtree(rundir, ignore_errors=True)
            rundir.mkdir()
            args = [*targets, "--cores", str(a.cores), "--configfile", str(config)]
            wall, children_cpu = run_snakemake(tree, rundir, args)
            by_rule = jobs_cpu(rundir)
            row = {
                "version": version,
                "repeat": repeat,
                "patients": a.n,
                "wall_s": round(wall, 2),
                "jobs_cpu_s": round(float(by_rule.sum()), 2),
                "snakemake_cpu_s": round(children_cpu - float(by_rule.sum()), 2),
            }
            row.update({f"cpu_{rule}": round(v, 2) for rule, v in by_rule.items()})
            rows.append(row)
            print(
                f"{version:8s} repeat {repeat}: {wall:7.1f} s wall, jobs {row['jobs_cpu_s']} CPU s,"
                f" snakemake {row['snakemake_cpu_s']} CPU s",
                flush=True,
            )
            shutil.rmtree(rundir, ignore_errors=True)
    return rows


def bench_study(a: argparse.Namespace) -> list[dict]:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for version, commit in (("baseline", a.baseline), ("current", a.current)):
        tree = code_tree(commit, work)
        rundir = work / f"study-{version}"
        shutil.rmtree(rundir, ignore_errors=True)
        rundir.mkdir()
        wall, children_cpu = run_snakemake(tree, rundir, ["--cores", str(a.cores)])
        by_rule = jobs_cpu(rundir)
        row = {
            "version": version,
            "repeat": 0,
            "wall_s": round(wall, 1),
            "jobs_cpu_s": round(float(by_rule.sum()), 1),
            "snakemake_cpu_s": round(children_cpu - float(by_rule.sum()), 1),
        }
        row.update({f"cpu_{rule}": round(v, 1) for rule, v in by_rule.items()})
        rows.append(row)
        print(f"{version}: {wall / 60:.1f} min wall", flush=True)
    return rows


def summary(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    med = frame.groupby("version").median(numeric_only=True).drop(columns="repeat")
    med = med.reindex(["baseline", "current"])
    print("\nmedians by code version (CPU columns: seconds by rule, summed over jobs)")
    print(med.T.round(2).to_string())
    ratio = med.loc["current", "wall_s"] / med.loc["baseline", "wall_s"]
    print(f"\nwall time current / baseline: {ratio:.3f}")
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["patient", "study"])
    parser.add_argument("--baseline", required=True, help="the earlier commit to compare with")
    parser.add_argument(
        "--current",
        default=None,
        help="a commit to measure as the current code (default: this checkout as it is)",
    )
    parser.add_argument("--n", type=int, default=40, help="patients (patient)")
    parser.add_argument("--seed", type=int, default=11, help="cohort seed (patient)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per version (patient)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--work", default="/tmp/bench_speed")
    parser.add_argument("--csv", default=None, help="write every run's row here")
    a = parser.parse_args(argv)
    rows = bench_patient(a) if a.what == "patient" else bench_study(a)
    frame = summary(rows)
    if a.csv:
        frame.to_csv(a.csv, index=False)
        print(f"wrote {a.csv}")


if __name__ == "__main__":
    main()
