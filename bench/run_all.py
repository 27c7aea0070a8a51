"""Run every stage's benchmark and print one table (and write it as CSV).

    python bench/run_all.py --csv bench/results/$(date +%F).csv
    python bench/run_all.py --only dag study            # just the DAG growth and study breakdown

Stages (each is a script of its own under bench/, run as a subprocess so its timings are not
disturbed by this one's imports):

- ``synth``: synthetic generation, seconds per patient, and the three AUC ceilings;
- ``convert``: DICOM->NIfTI seconds per series, ratio to dcm2niix on the same series;
- ``preprocess``: registration seconds per phase and TRE, crops per second;
- ``train``: seconds per epoch and peak RSS for Pre and PrePost;
- ``evaluate``: seconds for the Table 2 bootstrap at the default resample count;
- ``margin``: margin error against the generator's truth and seconds per patient;
- ``predict``: seconds to score one new patient from DICOM;
- ``dag``: dry-run (DAG build) seconds for 289, 2,000 and 10,000 planned patients (no images);
- ``study``: the per-rule breakdown of a finished study from Snakemake's benchmark files
  (``results/benchmarks``; run ``snakemake --cores 2`` first) with total job seconds.

Every stage's own script reports medians of repeated runs; this runner only gathers them into
one long table ``stage, case, metric, value`` and adds the machine it ran on.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "synth": ["bench/bench_synth.py"],
    "convert": ["bench/bench_convert.py"],
    "preprocess": ["bench/bench_preprocess.py"],
    "train": ["bench/bench_train.py"],
    "evaluate": ["bench/bench_evaluate.py"],
    "margin": ["bench/bench_margin.py", "--generate", "8"],
    "predict": ["bench/bench_predict.py"],
}
DAG_SIZES = (289, 2000, 10000)


def run_script(stage: str, argv: list[str], out: Path) -> list[dict[str, str]]:
    """Run one stage benchmark with ``--csv``; return its rows tagged with the stage."""
    csv_path = out / f"{stage}.csv"
    cmd = [sys.executable, *argv, "--csv", str(csv_path)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    sys.stderr.write(res.stdout + res.stderr[-2000:])
    rows: list[dict[str, str]] = []
    if res.returncode == 0 and csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                case = next(iter(row.values()), str(i))
                for key, value in row.items():
                    rows.append({"stage": stage, "case": case, "metric": key, "value": value})
    else:
        rows.append({"stage": stage, "case": "-", "metric": "error", "value": str(res.returncode)})
    rows.append({"stage": stage, "case": "-", "metric": "script_wall_s", "value": f"{wall:.1f}"})
    return rows


def dag_seconds(n_patients: int, repeats: int) -> float:
    """Median wall seconds of a dry run planning ``n_patients`` synthetic patients."""
    n_test = max(2, n_patients // 8)
    n_train = n_patients - 2 * n_test
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "c.yaml"
            cfg.write_text(f"synthetic: {{n_train: {n_train}, n_test: [{n_test}, {n_test}]}}\n")
            cmd = [
                sys.executable,
                "-m",
                "snakemake",
                "-s",
                str(REPO / "Snakefile"),
                "-d",
                tmp,
                "-n",
                "--quiet",
                "all",
                "--configfile",
                str(cfg),
            ]
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            times.append(time.perf_counter() - t0)
            if res.returncode != 0:
                raise RuntimeError(f"dry run for {n_patients} patients failed:\n{res.stderr}")
    return statistics.median(times)


def dag_rows(repeats: int) -> list[dict[str, str]]:
    rows = []
    base = None
    for n in DAG_SIZES:
        s = dag_seconds(n, repeats)
        base = base or s
        rows.append(
            {"stage": "dag", "case": f"{n} patients", "metric": "dry_run_s", "value": f"{s:.2f}"}
        )
        rows.append(
            {
                "stage": "dag",
                "case": f"{n} patients",
                "metric": "ratio_to_289",
                "value": f"{s / base:.2f}",
            }
        )
    return rows


def study_rows(results: Path) -> list[dict[str, str]]:
    """Per-rule job count, total and median job seconds, and peak RSS from benchmark files."""
    bench = results / "benchmarks"
    rows: list[dict[str, str]] = []
    if not bench.is_dir():
        return [{"stage": "study", "case": "-", "metric": "error", "value": f"no {bench}"}]
    total = 0.0
    for rule_dir in sorted(p for p in bench.iterdir() if p.is_dir()):
        secs, rss = [], []
        for tsv in rule_dir.rglob("*.tsv"):
            with open(tsv, newline="", encoding="utf-8") as fh:
                for rec in csv.DictReader(fh, delimiter="\t"):
                    secs.append(float(rec["s"]))
                    rss.append(float(rec["max_rss"]) if rec["max_rss"] not in ("", "-") else 0.0)
        if not secs:
            continue
        total += sum(secs)
        case = rule_dir.name
        rows += [
            {"stage": "study", "case": case, "metric": "jobs", "value": str(len(secs))},
            {"stage": "study", "case": case, "metric": "job_s_total", "value": f"{sum(secs):.1f}"},
            {
                "stage": "study",
                "case": case,
                "metric": "job_s_median",
                "value": f"{statistics.median(secs):.2f}",
            },
            {"stage": "study", "case": case, "metric": "peak_rss_mb", "value": f"{max(rss):.0f}"},
        ]
    rows.append(
        {"stage": "study", "case": "all rules", "metric": "job_s_total", "value": f"{total:.1f}"}
    )
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("stage", "case", "metric")}
    head = "  ".join(k.ljust(widths[k]) for k in ("stage", "case", "metric")) + "  value"
    print(head)
    print("-" * len(head))
    for r in rows:
        print("  ".join(r[k].ljust(widths[k]) for k in ("stage", "case", "metric")), r["value"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=[*SCRIPTS, "dag", "study"], help="stages")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the DAG dry runs")
    ap.add_argument("--results", type=Path, default=REPO / "results", help="a finished study")
    ap.add_argument("--csv", type=Path, help="write the long table here")
    a = ap.parse_args()
    stages = a.only or [*SCRIPTS, "dag", "study"]
    rows: list[dict[str, str]] = [
        {"stage": "machine", "case": "-", "metric": "cpus", "value": str(os.cpu_count())},
        {"stage": "machine", "case": "-", "metric": "python", "value": platform.python_version()},
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for stage in stages:
            if stage in SCRIPTS:
                rows += run_script(stage, SCRIPTS[stage], Path(tmp))
            elif stage == "dag":
                rows += dag_rows(a.repeats)
            elif stage == "study":
                rows += study_rows(a.results)
    print_table(rows)
    if a.csv:
        a.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(a.csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["stage", "case", "metric", "value"])
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
