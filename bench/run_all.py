"""Run every stage's benchmark and print one table; write it as a dated CSV.

    python bench/run_all.py                                   # -> bench/results/<YYYY-MM-DD>.csv
    python bench/run_all.py --study /tmp/study --run-study    # + the whole default study, timed
    python bench/run_all.py --study /tmp/study                # + a finished study's breakdown
    python bench/run_all.py --only dag growth                 # just the growth rows
    python bench/run_all.py --quick --only dag growth         # small sizes: check the runner

Stages (each a script of its own under bench/, run as a subprocess so its timings are not
disturbed by this one's imports; each reports medians of ``--repeats`` runs and, where one
exists, the ratio to a reference measured in the same run):

- ``synth``: synthetic generation, seconds per patient, and the three AUC ceilings;
- ``convert``: DICOM->NIfTI seconds per series, ratio to dcm2niix on the same series;
- ``preprocess``: registration seconds per phase and TRE (ratio to SimpleITK's own pyramid),
  crops per second;
- ``train``: seconds per epoch and peak RSS for Pre and PrePost (ratio to Pre);
- ``evaluate``: seconds for the Table 2 bootstrap at the default resample count;
- ``margin``: margin error against the generator's truth and seconds per patient;
- ``predict``: seconds to score one new patient from DICOM;
- ``reporting``: Table S1 / Figure 1 / TRIPOD seconds;
- ``dag``: dry-run (DAG build) seconds for 289, 2,000 and 10,000 planned synthetic patients
  (no images), median of ``--dag-repeats``, with the ratio per patient to the smallest and
  the CPU ratio to a bare workflow of the same shape (:data:`BARE_SNAKEFILE`: Snakemake's
  own cost for as many jobs, on the same machine in the same run);
- ``growth``: preprocessing wall time (convert, register with its mask checks, crop, crop QC;
  ``snakemake --cores 2``) for 50, 100 and 200 synthetic patients, with seconds per patient
  and the ratio per patient to the smallest (1.0 = linear);
- ``study`` (with ``--study WORKDIR``): the whole default study: wall time (measured when
  ``--run-study`` runs ``snakemake --cores 2`` there from scratch, else the time during
  which at least one job ran, from the benchmark files' end times and durations) and the
  per-rule breakdown (jobs, total / median job seconds, peak RSS) from
  ``WORKDIR/results/benchmarks``.

The table is long: ``stage, case, metric, value, target``; ``target`` holds the issue's target
for that figure where there is one (``<= 900`` etc.). The machine is often shared: the table
starts with the CPU count and the load average at the start, so a reader can judge the noise.
"""

from __future__ import annotations

import argparse
import csv
import datetime
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
    "reporting": ["bench/bench_reporting.py"],
}
#: Extra arguments with ``--quick`` (fewer repeats / smaller inputs: checks the runner only).
QUICK_ARGS = {
    "synth": ["--n-patients", "4", "--n", "200", "--seeds", "1", "--repeats", "1"],
    "convert": ["--repeats", "1"],
    "preprocess": ["--repeats", "1", "--cases", "1"],
    "train": ["--patients", "40", "--epochs", "1"],
    "evaluate": ["--repeats", "1", "--boot", "200"],
    "margin": ["--generate", "2"],
    "predict": ["--repeats", "1"],
    "reporting": ["--repeats", "1", "--patients", "40"],
}
DAG_SIZES = (289, 2000, 10000)
GROWTH_SIZES = (50, 100, 200)
FIELDS = ["stage", "case", "metric", "value", "target"]
#: Speed targets: (stage, metric) -> target, for rows whose case needs no match.
TARGETS = {
    ("study", "wall_s"): "<= 900",
    ("preprocess", "wall_s_registration_only"): "< 1",
    ("convert", "ratio"): "<= 1",
    ("convert", "cpu_ratio"): "<= 1",
    ("train", "rss_mb"): "< 3072",
}
#: The default study's per-patient preprocessing target (growth rows): about linear.
LINEAR = "about 1"


def _env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH (the rules call ``python -m recur``)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def row(stage: str, case: str, metric: str, value, target: str = "") -> dict[str, str]:
    if isinstance(value, float):
        value = f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    target = target or TARGETS.get((stage, metric), "")
    return {"stage": stage, "case": case, "metric": metric, "value": str(value), "target": target}


def run_script(stage: str, argv: list[str], out: Path) -> list[dict[str, str]]:
    """Run one stage benchmark with ``--csv``; return its rows tagged with the stage."""
    csv_path = out / f"{stage}.csv"
    cmd = [sys.executable, *argv, "--csv", str(csv_path)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, env=_env())
    wall = time.perf_counter() - t0
    sys.stderr.write(res.stdout + res.stderr[-2000:])
    rows: list[dict[str, str]] = []
    if res.returncode == 0 and csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8") as fh:
            for i, rec in enumerate(csv.DictReader(fh)):
                keys = list(rec)
                # the first column names the row; a 'case' column (if not first) refines it
                case = str(rec[keys[0]]) if keys else str(i)
                if "case" in rec and keys and keys[0] != "case" and rec["case"]:
                    case = f"{case}: {rec['case']}"
                for key in keys[1:]:
                    if key == "case" or rec[key] in ("", None):
                        continue
                    rows.append(row(stage, case, key, rec[key]))
    else:
        rows.append(row(stage, "-", "error", f"exit {res.returncode}"))
    rows.append(row(stage, "-", "script_wall_s", wall))
    return rows


def synthetic_config(n_patients: int) -> str:
    """A config for ``n_patients`` synthetic patients split like the default study (254/20/15)."""
    n_a = max(2, round(n_patients * 20 / 289))  # the schema's minimums: 2 per test site,
    n_b = max(2, round(n_patients * 15 / 289))
    n_train = max(4, n_patients - n_a - n_b)  # 4 training patients
    return f"synthetic: {{n_train: {n_train}, n_test: [{n_a}, {n_b}]}}\n"


def snakemake_cmd(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]


# The reference of the dry-run rows: a bare workflow with the same per-patient shape as ours
# (a chain of JOBS_PER_PATIENT rules per patient, each with a log and a shell command, one
# target rule over all patients) and nothing else: no config validation, input functions,
# params, resources or benchmark files. Our dry run over its dry run, in the same run, is
# what our rules add to Snakemake's own cost per job (which depends on the machine).
JOBS_PER_PATIENT = 5
BARE_SNAKEFILE = """
N = int(config["n"])
STEPS = "abcde"


rule all:
    input:
        expand("out/{p}.e", p=range(N)),


rule a:
    output:
        "out/{p}.a",
    log:
        "logs/a/{p}.log",
    shell:
        "touch {output} 2> {log}"


for prev, step in zip(STEPS, STEPS[1:]):

    rule:
        name:
            step
        input:
            f"out/{{p}}.{prev}",
        output:
            f"out/{{p}}.{step}",
        log:
            f"logs/{step}/{{p}}.log",
        shell:
            "cp {input} {output} 2> {log}"
"""


def _dry_run(cmd: list[str], repeats: int, what: str) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeats`` runs of the dry-run command ``cmd``."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = os.times()
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
        walls.append(time.perf_counter() - t0)
        after = os.times()
        cpus.append(
            after.children_user
            + after.children_system
            - before.children_user
            - before.children_system
        )
        if res.returncode != 0:
            raise RuntimeError(f"dry run ({what}) failed:\n{res.stderr}")
    return statistics.median(walls), statistics.median(cpus)


def dag_seconds(n_patients: int, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of a dry run planning ``n_patients`` synthetic patients."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.yaml"
        cfg.write_text(synthetic_config(n_patients), encoding="utf-8")
        cmd = [*snakemake_cmd(Path(tmp)), "-n", "--quiet", "all", "--configfile", str(cfg)]
        return _dry_run(cmd, repeats, f"{n_patients} patients")


def bare_dag_seconds(n_patients: int, repeats: int) -> tuple[float, float]:
    """The same for the bare reference workflow (:data:`BARE_SNAKEFILE`)."""
    with tempfile.TemporaryDirectory() as tmp:
        snakefile = Path(tmp) / "Snakefile"
        snakefile.write_text(BARE_SNAKEFILE, encoding="utf-8")
        cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", tmp, "-n"]
        cmd += ["--workflow-profile", "none"]  # not this repository's profiles/default
        cfg = Path(tmp) / "c.yaml"
        cfg.write_text(f"n: {n_patients}\n", encoding="utf-8")
        cmd += ["--quiet", "all", "--configfile", str(cfg)]
        return _dry_run(cmd, repeats, f"bare reference, {n_patients} patients")


def dag_rows(sizes: tuple[int, ...], repeats: int) -> list[dict[str, str]]:
    rows = []
    base = None
    for n in sizes:
        wall, cpu = dag_seconds(n, repeats)
        _, bare_cpu = bare_dag_seconds(n, repeats)
        base = base or wall / n
        case = f"{n} patients"
        rows.append(row("dag", case, "dry_run_s", wall, "< 60" if n >= 10000 else ""))
        rows.append(row("dag", case, "dry_run_cpu_s", cpu))
        rows.append(row("dag", case, "ms_per_patient", 1000 * wall / n))
        rows.append(row("dag", case, "per_patient_ratio_to_smallest", wall / n / base))
        rows.append(row("dag", case, "bare_snakemake_dry_run_cpu_s", bare_cpu))
        rows.append(row("dag", case, "cpu_ratio_to_bare_snakemake", cpu / bare_cpu))
    return rows


def _timed_snakemake(
    work: Path, target: str, args: list[str]
) -> tuple[subprocess.CompletedProcess, float]:
    """Run the workflow in ``work`` for ``target``; (the finished process, wall seconds)."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [*snakemake_cmd(work), target, *args],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    return res, time.perf_counter() - t0


def growth_rows(sizes: tuple[int, ...], cores: int) -> list[dict[str, str]]:
    """Preprocessing wall time for growing synthetic cohorts (generation timed apart)."""
    rows = []
    base = None
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="recur_growth_") as tmp:
            work = Path(tmp)
            cfg = work / "c.yaml"
            cfg.write_text(synthetic_config(n), encoding="utf-8")
            common = ["--configfile", str(cfg), "--cores", str(cores), "--quiet", "all"]
            gen, t_gen = _timed_snakemake(work, "results/synthetic/truth.csv", common)
            if gen.returncode != 0:
                sys.stderr.write(gen.stdout[-3000:] + gen.stderr[-3000:])
                rows.append(row("growth", f"{n} patients", "error", "synthetic cohort failed"))
                continue
            res, wall = _timed_snakemake(work, "results/qc/crops.csv", common)
            if res.returncode != 0:
                sys.stderr.write(res.stderr[-3000:])
                rows.append(row("growth", f"{n} patients", "error", f"exit {res.returncode}"))
                continue
            jobs = sum(1 for _ in (work / "results" / "benchmarks").rglob("*.tsv")) - 1
        base = base or wall / n
        case = f"{n} patients"
        rows.append(row("growth", case, "synthetic_cohort_s", t_gen))
        rows.append(row("growth", case, "preprocess_wall_s", wall))
        rows.append(row("growth", case, "preprocess_jobs", jobs))
        rows.append(row("growth", case, "s_per_patient", wall / n))
        rows.append(row("growth", case, "per_patient_ratio_to_smallest", wall / n / base, LINEAR))
    return rows


def run_study(workdir: Path, cores: int) -> float:
    """Run the whole default study in ``workdir`` from scratch; return its wall seconds."""
    if (workdir / "results").exists():
        raise SystemExit(f"--run-study: {workdir}/results exists; give an empty working dir")
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = subprocess.run(
        [*snakemake_cmd(workdir), "--cores", str(cores), "--quiet", "all"],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    wall = time.perf_counter() - t0
    (workdir / "run_all_study.log").write_text(res.stdout + res.stderr, encoding="utf-8")
    if res.returncode != 0:
        raise SystemExit(f"the study failed (exit {res.returncode}); see run_all_study.log")
    return wall


def read_benchmarks(bench: Path) -> dict[str, list[tuple[float, float, float]]]:
    """``{rule: [(seconds, max_rss_mb, end_time)]}`` from Snakemake's benchmark files."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for rule_dir in sorted(p for p in bench.iterdir() if p.is_dir()):
        recs = []
        for tsv in rule_dir.rglob("*.tsv"):
            end = tsv.stat().st_mtime
            with open(tsv, newline="", encoding="utf-8") as fh:
                for rec in csv.DictReader(fh, delimiter="\t"):
                    rss = rec.get("max_rss", "")
                    rss_mb = float(rss) if rss not in ("", "-", "NA") else 0.0
                    recs.append((float(rec["s"]), rss_mb, end))
        if recs:
            out[rule_dir.name] = recs
    return out


def study_rows(workdir: Path, measured_wall: float | None) -> list[dict[str, str]]:
    """Whole-study wall time and per-rule breakdown from ``workdir/results/benchmarks``."""
    bench = workdir / "results" / "benchmarks"
    if not bench.is_dir():
        return [row("study", "-", "error", f"no {bench}")]
    per_rule = read_benchmarks(bench)
    all_recs = [r for recs in per_rule.values() for r in recs]
    rows: list[dict[str, str]] = []
    if measured_wall is not None:
        rows.append(row("study", "whole study (snakemake --cores 2)", "wall_s", measured_wall))
    else:
        # time during which at least one job ran (union of the jobs' [end - s, end]): the
        # study's wall time when it ran in one go, without the gaps when it ran in parts
        busy, until = 0.0, float("-inf")
        for start, end in sorted((e - s, e) for s, _, e in all_recs):
            if end > until:
                busy += end - max(start, until)
                until = end
        rows.append(row("study", "whole study (union of job intervals)", "wall_s", busy))
    total = sum(s for s, _, _ in all_recs)
    rows.append(row("study", "all rules", "jobs", len(all_recs)))
    rows.append(row("study", "all rules", "job_s_total", total))
    for rule, recs in sorted(per_rule.items(), key=lambda kv: -sum(s for s, _, _ in kv[1])):
        secs = [s for s, _, _ in recs]
        rows += [
            row("study", rule, "jobs", len(secs)),
            row("study", rule, "job_s_total", sum(secs)),
            row("study", rule, "share_of_job_s", sum(secs) / total if total else 0.0),
            row("study", rule, "job_s_median", statistics.median(secs)),
            row("study", rule, "peak_rss_mb", max(r for _, r, _ in recs)),
        ]
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    cols = ["stage", "case", "metric", "value"]
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in cols}
    head = "  ".join(k.ljust(widths[k]) for k in cols) + "  target"
    print(head)
    print("-" * len(head))
    for r in rows:
        print("  ".join(r[k].ljust(widths[k]) for k in cols), r["target"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = [*SCRIPTS, "dag", "growth", "study"]
    ap.add_argument("--only", nargs="+", choices=stages, help="run only these stages")
    ap.add_argument("--skip", nargs="+", choices=stages, default=[], help="leave these out")
    ap.add_argument("--quick", action="store_true", help="small sizes: check the runner works")
    ap.add_argument("--dag-sizes", type=int, nargs="+", default=None, help="patients per dry run")
    ap.add_argument("--dag-repeats", type=int, default=3, help="repeats of each dry run")
    ap.add_argument("--growth-sizes", type=int, nargs="+", default=None, help="patients")
    ap.add_argument("--cores", type=int, default=2, help="--cores of the workflow runs")
    ap.add_argument("--study", type=Path, help="a working dir with the default study")
    ap.add_argument(
        "--run-study", action="store_true", help="first run the study there from scratch"
    )
    ap.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="write the table here (default: bench/results/<today>.csv; none with --quick)",
    )
    a = ap.parse_args(argv)
    if a.csv is None and not a.quick:
        a.csv = REPO / "bench" / "results" / f"{datetime.date.today().isoformat()}.csv"
    chosen = [s for s in (a.only or stages) if s not in a.skip]
    dag_sizes = tuple(a.dag_sizes or ((40, 80) if a.quick else DAG_SIZES))
    growth_sizes = tuple(a.growth_sizes or ((8, 16) if a.quick else GROWTH_SIZES))
    load = os.getloadavg()
    rows: list[dict[str, str]] = [
        row("machine", "-", "date", datetime.datetime.now().isoformat(timespec="minutes")),
        row("machine", "-", "cpus", os.cpu_count()),
        row("machine", "-", "load_average_1min_at_start", round(load[0], 2)),
        row("machine", "-", "python", platform.python_version()),
    ]
    if a.quick:
        rows.append(row("machine", "-", "mode", "quick (small sizes; not the benchmark)"))
    with tempfile.TemporaryDirectory() as tmp:
        for stage in chosen:
            t0 = time.perf_counter()
            if stage in SCRIPTS:
                argv_ = SCRIPTS[stage] + (QUICK_ARGS.get(stage, []) if a.quick else [])
                rows += run_script(stage, argv_, Path(tmp))
            elif stage == "dag":
                rows += dag_rows(dag_sizes, 1 if a.quick else a.dag_repeats)
            elif stage == "growth":
                rows += growth_rows(growth_sizes, a.cores)
            elif stage == "study" and a.study:
                wall = run_study(a.study, a.cores) if a.run_study else None
                rows += study_rows(a.study, wall)
            sys.stderr.write(f"[run_all] {stage}: {time.perf_counter() - t0:.0f} s\n")
    print_table(rows)
    if a.csv:
        a.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(a.csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
        print(f"written: {a.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
