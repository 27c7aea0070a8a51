"""Seconds to score one new patient end to end from DICOM with `recur predict`.

Runs ``python -m recur --threads T predict --bundle ... --patients ID`` (a fresh process: Python
start-up, imports, bundle verification, DICOM conversion of 8 series, mask checks,
registration of both time points, the margin, crops, radiomics features, every model of the
bundle, Grad-CAM and the HTML summary) ``--repeats`` times and reports the median; then times the
stages in-process once more (``stage_*`` rows). ``cpu_s`` is the CPU time (user + system) of
the process, a steadier figure than wall time on a shared machine. Target: under 30 s on 2 CPU cores
(``ratio`` = median / 30 s; < 1 meets it).

The bundle and the cohort come from a finished workflow directory (``--study``, e.g. a tiny
study made with ``snakemake --configfile tiny.yaml``); without it the tiny study of the test
suite is run first into a temporary folder (several minutes).

    .venv/bin/python bench/bench_predict.py --study /path/to/workdir [--threads 2]
        [--repeats 3] [--patient P0017] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 30.0


def tiny_study(workdir: Path) -> Path:
    """Run the test suite's tiny workflow into ``workdir`` (needs the tests package)."""
    sys.path.insert(0, str(REPO))
    from tests.conftest import TINY_CONFIG, run_snakemake

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tiny.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    res = run_snakemake(workdir, "--cores", "2")
    if res.returncode != 0:
        sys.exit(f"tiny workflow failed:\n{res.stderr[-3000:]}")
    return workdir


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cli_once(study: Path, patient: str, threads: int, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `recur predict` process."""
    cohort = study / "results" / "synthetic" / "cohort"
    cmd = [
        sys.executable, "-m", "recur", "--threads", str(threads), "predict",
        "--bundle", str(study / "results" / "bundle"),
        "--series", str(cohort / "series.csv"), "--rois", str(cohort / "rois.csv"),
        "--clinical", str(cohort / "clinical.csv"), "--patients", patient,
        "--out", str(out),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    c0, t0 = _children_cpu(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if res.returncode != 0:
        sys.exit(f"recur predict failed:\n{res.stderr[-3000:]}")
    return dt, cpu


def stages_once(study: Path, patient: str, threads: int, out: Path) -> dict[str, float]:
    """The stages of :func:`recur.deploy.predict.predict`, timed in this process."""
    from recur.deploy import predict as rp
    from recur.deploy import scoring
    from recur.deploy.bundle import load_bundle
    from recur.models import train

    cohort = study / "results" / "synthetic" / "cohort"
    times: dict[str, float] = {}
    t = time.perf_counter()
    bundle = load_bundle(study / "results" / "bundle")
    inputs = rp.read_inputs(
        cohort / "series.csv", cohort / "rois.csv", cohort / "clinical.csv", None, [patient]
    )
    times["stage_verify_and_inputs"] = time.perf_counter() - t
    train.configure_torch(0, threads)
    t = time.perf_counter()
    rp.prepare_patient(
        patient, inputs, bundle, out / "work", out / "crops" / f"{patient}.npz", out / patient
    )
    times["stage_convert_mask_register_margin_crop_radiomics"] = time.perf_counter() - t
    t = time.perf_counter()
    models = scoring.load_models(bundle)
    times["stage_load_models"] = time.perf_counter() - t
    t = time.perf_counter()
    pts = scoring.Patients([patient], inputs.clinical, {patient: True}, out / "crops")
    margin = out / patient / "margin.csv"
    if margin.is_file():
        pts.margins[patient] = pd.read_csv(margin).iloc[0].to_dict()
    features = out / "work" / rp.RADIOMICS_FEATURES
    if features.is_file():
        pts.radiomics[patient] = pd.read_csv(features)
    pts.network = scoring.network_outputs(bundle, pts, models)
    pts.radiomics_scores = scoring.radiomics_outputs(bundle, pts, models)
    times["stage_dl_and_radiomics_models"] = time.perf_counter() - t
    t = time.perf_counter()
    scoring.score_all(bundle, pts, models)
    times["stage_tabular_and_cox_models"] = time.perf_counter() - t
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, help="finished workflow directory (default: run one)")
    ap.add_argument("--patient", help="patient to score (default: first external test patient)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--csv", type=Path)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        study = a.study.resolve() if a.study else tiny_study(tmp / "study")
        clinical = pd.read_csv(study / "results/synthetic/cohort/clinical.csv", dtype=str)
        patient = a.patient or clinical.loc[clinical["cohort"] == "test", "patient_id"].iloc[0]
        runs, cpus = [], []
        for k in range(a.repeats):
            wall, cpu = cli_once(study, patient, a.threads, tmp / f"out{k}")
            runs.append(wall)
            cpus.append(cpu)
            shutil.rmtree(tmp / f"out{k}", ignore_errors=True)
        rows = [
            {
                "what": "recur predict, 1 patient, end to end (CLI)",
                "patient": patient,
                "threads": a.threads,
                "repeats": a.repeats,
                "median_s": statistics.median(runs),
                "min_s": min(runs),
                "max_s": max(runs),
                "cpu_s": statistics.median(cpus),
                "target_s": TARGET_S,
                "ratio": statistics.median(runs) / TARGET_S,
            }
        ]
        for name, secs in stages_once(study, patient, a.threads, tmp / "stages").items():
            rows.append(
                {"what": name, "patient": patient, "threads": a.threads, "repeats": 1,
                 "median_s": secs, "min_s": secs, "max_s": secs}
            )  # fmt: skip
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if a.csv:
        table.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
