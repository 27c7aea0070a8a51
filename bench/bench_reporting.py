"""Seconds per reporting step at the study's size (289 patients, 2 time points, 4 phases).

Steps: ``placeholder_scan`` (checking every patient's crops file for an exclusion marker, the
``qc-exclusions`` checkpoint; real 1 MB .npz files written to a temporary folder), ``table_s1``
(reading 578 acquisition.json files and aggregating), ``figure1`` (flow table + PNG/PDF) and
``tripod`` (checklist). Reference: ``np_load`` = loading the same crops files with numpy (what
a reader that did not check the marker first would pay). Median of ``--repeats``.

    .venv/bin/python bench/bench_reporting.py [--repeats 5] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recur.cohort import exclusions
from recur.reporting import report as reporting


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--patients", type=int, default=289)
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n = a.patients
    ids = [f"P{i + 1:04d}" for i in range(n)]
    sites = ["siteA"] * (n - 35) + ["siteB"] * 20 + ["siteC"] * 15
    patients = pd.DataFrame({"patient_id": ids, "site": sites})
    patients["cohort"] = np.where(patients["site"] == "siteA", "train", "test")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        crops = {}
        for i, pid in enumerate(ids):
            p = tmp / "crops" / f"{pid}.npz"
            p.parent.mkdir(exist_ok=True)
            if i % 50 == 7:
                rec = exclusions.Exclusion(pid, "convert", "pre", "1 missing slice(s)")
                exclusions.write_placeholders([p], [rec])
            else:
                np.savez(p, crops=rng.random((2, 4, 3, 128, 128), dtype=np.float32))
            crops[pid] = p
        acq_files = []
        for pid in ids:
            for tp in ("pre", "post"):
                d = tmp / "nifti" / pid / tp
                d.mkdir(parents=True)
                acq = {
                    ph: {
                        "manufacturer": "SIEMENS",
                        "model": "Skyra",
                        "field_strength_t": 3.0,
                        "repetition_time_ms": float(rng.uniform(3, 5)),
                        "echo_time_ms": 1.3,
                        "flip_angle_deg": 9.0,
                        "slice_thickness_mm": 3.0,
                        "rows": 256,
                        "columns": 224,
                        "pixel_spacing_mm": [1.5, 1.5],
                    }
                    for ph in ("PS", "AP", "PVP", "DP")
                }
                (d / "acquisition.json").write_text(json.dumps(acq))
                acq_files.append(d / "acquisition.json")
        site_of = dict(zip(ids, sites, strict=True))

        def scan():
            return exclusions.exclusion_table(crops)

        def np_load():
            for p in crops.values():
                if not exclusions.is_placeholder(p):
                    np.load(p, allow_pickle=False)["crops"]

        qc = scan()
        rest = patients[~patients["patient_id"].isin(qc["patient_id"])].copy()
        rest["split"] = np.where(rest["cohort"] == "test", "test", "train")
        rest.loc[rest.index[::5], "split"] = "tune"
        rest.loc[rest["cohort"] == "test", "split"] = "test"
        cfg = pd.DataFrame(columns=["patient_id", "reason"])

        def table_s1():
            rows = reporting.acquisition_rows(reporting.read_acquisitions(acq_files), site_of)
            return reporting.table_s1(rows)

        def figure1():
            flow = reporting.flow_table(patients, cfg, qc, rest)
            reporting.write_flow(flow, tmp / "f.csv", tmp / "f.png", tmp / "f.pdf")
            return flow

        flow = figure1()
        clinical = pd.DataFrame({"patient_id": ids, "er": rng.integers(0, 2, n)})
        t2 = pd.DataFrame(
            {
                "cohort": ["external"],
                "model": ["Clinical"],
                "metric": ["auc"],
                "estimate": [0.7],
                "ci_low": [0.6],
                "ci_high": [0.8],
                "n": [35],
                "n_events": [10],
            }
        )
        cal = pd.DataFrame(
            {
                "cohort": ["external"],
                "model": ["Clinical"],
                "brier": [0.2],
                "intercept": [0.0],
                "slope": [1.0],
            }
        )

        def tripod():
            return reporting.tripod_items(clinical, rest, flow, t2, cal, {})

        ref = _timed(np_load, a.repeats)
        rows = [{"step": "np_load (reference)", "seconds": ref, "ratio_to_np_load": 1.0}]
        for name, fn in (
            ("placeholder_scan", scan),
            ("table_s1", table_s1),
            ("figure1", figure1),
            ("tripod", tripod),
        ):
            s = _timed(fn, a.repeats)
            rows.append({"step": name, "seconds": s, "ratio_to_np_load": s / ref})
    df = pd.DataFrame(rows)
    print(f"{n} patients, median of {a.repeats} (shared machine: timings are noisy)")
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if a.csv:
        df.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
