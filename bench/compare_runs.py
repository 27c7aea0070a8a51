"""Differences between two workflow runs' crops, margins and transforms (one cohort).

For every patient present in both ``results/`` folders: the largest absolute difference of the
crops (``results/crops/<p>.npz``: ``crops``, and the number of differing mask pixels, slice
indices and centres), of each numeric value of ``results/margin/<p>/margin.json``, and the
distance between the two runs' transforms at the ROI centroid (the phase transforms
``results/registered/<p>/<tp>/<phase>.tfm`` at the time point's ROI centroid, the post-to-pre
transform ``results/margin/<p>/post_to_pre.tfm`` at the pre tumour's centroid). Used to compare
a code change with the registration's own noise (two runs with different metric seeds).

With ``--truth`` (the synthetic cohort's ``truth.csv``; benchmarks may read it, no rule does),
each run is also scored against the generator: the post-to-pre error at the pre tumour's
centre (as ``bench/bench_margin.py``: the true table shift recovered from the ROI centroids,
to a few tenths of a mm) and the error of ``min_margin_mm`` against the true margin.

    .venv/bin/python bench/compare_runs.py RUN_A/results RUN_B/results [--truth truth.csv] \
        [--csv out.csv]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

PHASES = ("PS", "AP", "PVP")
TIMEPOINTS = ("pre", "post")


def centroid(mask_path: Path) -> tuple[float, float, float]:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(sitk.ReadImage(str(mask_path)) > 0, sitk.sitkUInt8))
    return stats.GetCentroid(1)


def point_distance(tfm_a: Path, tfm_b: Path, point) -> float:
    a = sitk.ReadTransform(str(tfm_a)).TransformPoint(point)
    b = sitk.ReadTransform(str(tfm_b)).TransformPoint(point)
    return float(np.linalg.norm(np.subtract(a, b)))


def compare_patient(a: Path, b: Path, patient: str) -> dict:
    row: dict = {"patient": patient}
    za, zb = np.load(a / "crops" / f"{patient}.npz"), np.load(b / "crops" / f"{patient}.npz")
    row["crop_max_abs"] = float(np.nanmax(np.abs(za["crops"] - zb["crops"])))
    row["crop_mean_abs"] = float(np.nanmean(np.abs(za["crops"] - zb["crops"])))
    row["mask_px_diff"] = int((za["masks"] != zb["masks"]).sum())
    row["slices_diff"] = int((za["slices"] != zb["slices"]).sum())
    row["centre_diff"] = int(np.abs(za["centre"] - zb["centre"]).max())
    ma = json.loads((a / "margin" / patient / "margin.json").read_text())
    mb = json.loads((b / "margin" / patient / "margin.json").read_text())
    for key, va in ma.items():
        if isinstance(va, (int, float)) and not isinstance(va, bool) and key in mb:
            row[f"margin_{key}"] = abs(float(va) - float(mb[key]))
    for tp in TIMEPOINTS:
        c = centroid(a / "masks" / patient / f"{tp}.nii.gz")
        row[f"tx_{tp}_max_mm"] = max(
            point_distance(
                a / "registered" / patient / tp / f"{ph}.tfm",
                b / "registered" / patient / tp / f"{ph}.tfm",
                c,
            )
            for ph in PHASES
        )
    row["post_to_pre_mm"] = point_distance(
        a / "margin" / patient / "post_to_pre.tfm",
        b / "margin" / patient / "post_to_pre.tfm",
        centroid(a / "masks" / patient / "pre.nii.gz"),
    )
    return row


def truth_errors(results: Path, truth: Path, patients: list[str]) -> pd.DataFrame:
    """Per patient: post-to-pre error at the tumour centre and min-margin error (mm)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_margin import shift_error, true_shifts
    from recur.synthetic import cohort as synth

    table, motions = synth.load_truth(truth)
    shifts = true_shifts(table, motions)
    true_margin = table.set_index("patient_id")["margin_mm"]
    rows = []
    for p in patients:
        tx = sitk.ReadTransform(str(results / "margin" / p / "post_to_pre.tfm"))
        m = json.loads((results / "margin" / p / "margin.json").read_text())
        rows.append(
            {
                "shift_err_mm": shift_error(tx, *shifts[p]),
                "min_margin_err_mm": abs(float(m["min_margin_mm"]) - float(true_margin[p])),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--truth", default=None, help="the synthetic cohort's truth.csv")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    a, b = Path(args.a), Path(args.b)
    patients = sorted(
        p.stem for p in (a / "crops").glob("*.npz") if (b / "crops" / p.name).is_file()
    )
    frame = pd.DataFrame([compare_patient(a, b, p) for p in patients])
    summary = frame.drop(columns="patient").agg(["median", "max"]).T
    with pd.option_context("display.width", 160):
        print(f"{len(frame)} patients")
        print(summary.round(4).to_string())
    if args.truth:
        for name, run in (("a", a), ("b", b)):
            err = truth_errors(run, Path(args.truth), patients)
            print(f"run {name} against the truth (median, max):")
            print(err.agg(["median", "max"]).T.round(4).to_string())
    if args.csv:
        frame.to_csv(args.csv, index=False)
    return frame


if __name__ == "__main__":
    sys.exit(0 if len(main()) else 1)
