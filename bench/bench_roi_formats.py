"""Benchmark of the ROI mask formats: NIfTI, DICOM SEG and RTSTRUCT on one synthetic cohort.

Writes one small synthetic cohort per ``synthetic.roi_format`` (same seed, so the same images and
masks), converts each DP series once, and checks every mask the way the workflow's register job
does (``recur.preprocess.masks.CohortMasks.check``). Prints, per format: masks, the Dice of the
placed mask against the NIfTI mask (min, mean), and the check time per mask (median, max), with
the ratio of the medians against NIfTI (the reference, measured in the same run); also the time
to write one mask file and its size.

Usage: ``python bench/bench_roi_formats.py [--n-train 8] [--n-test 4 4] [--seed 7] [--workers 1]
[--csv out.csv]`` (the default cohort: ``--n-train 254 --n-test 20 15 --seed 2025``)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from recur.preprocess import masks
from recur.preprocess.dicom_series import ConvertSettings, SeriesReader
from recur.synthetic import cohort as synth

FORMATS = ("nifti", "seg", "rtstruct")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.astype(bool).sum() + b.astype(bool).sum()))


def _write_times(root: Path, rois: pd.DataFrame, series: pd.DataFrame) -> dict[str, list[float]]:
    """Seconds to write each mask again in each format (the writer alone)."""
    from recur.synthetic import roi_writer

    times: dict[str, list[float]] = {f: [] for f in FORMATS}
    for row in rois.itertuples():
        mask = sitk.ReadImage(str(root / "nifti" / "cohort" / row.mask))
        array = sitk.GetArrayFromImage(mask)
        dp = series[
            (series.patient_id == row.patient_id)
            & (series.timepoint == row.timepoint)
            & (series.phase == "DP")
        ].dicom_dir.iloc[0]
        folder = root / "nifti" / "cohort" / dp
        for fmt in FORMATS:
            out = root / "again" / f"{row.patient_id}_{row.timepoint}_{fmt}"
            out.parent.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            if fmt == "nifti":
                sitk.WriteImage(mask, f"{out}.nii.gz", True)
            else:
                write = roi_writer.write_seg if fmt == "seg" else roi_writer.write_rtstruct
                write(array, folder, out, label="ROI", uid_key=("bench", row.Index))
            times[fmt].append(time.perf_counter() - t)
    return times


def run(n_train: int, n_test: list[int], seed: int, root: Path, workers: int = 1) -> pd.DataFrame:
    for fmt in FORMATS:
        settings = synth.SyntheticSettings.defaults(
            n_train=n_train, n_test=tuple(n_test), seed=seed, er_share=None, roi_format=fmt
        )
        synth.write_cohort(root / fmt / "cohort", settings, workers=workers)
    series = pd.read_csv(root / "nifti" / "cohort" / "series.csv", dtype=str)
    reader = SeriesReader(ConvertSettings.defaults())
    dps = root / "dp"
    dps.mkdir()
    for row in series[series.phase == "DP"].itertuples():
        image = reader(root / "nifti" / "cohort" / row.dicom_dir).image
        sitk.WriteImage(image, str(dps / f"{row.patient_id}_{row.timepoint}.nii.gz"))
    placed: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    check_s: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    for fmt in FORMATS:
        cohort = root / fmt / "cohort"
        checker = masks.CohortMasks(cohort, "rois.csv", "series.csv")
        rois = pd.read_csv(cohort / "rois.csv", dtype=str)
        sizes[fmt] = [(cohort / m).stat().st_size for m in rois["mask"]]
        placed[fmt], check_s[fmt] = {}, []
        for row in rois.itertuples():
            out = root / "masks" / fmt / f"{row.patient_id}_{row.timepoint}.nii.gz"
            out.parent.mkdir(parents=True, exist_ok=True)
            dp = dps / f"{row.patient_id}_{row.timepoint}.nii.gz"
            t = time.perf_counter()
            checker.check(row.patient_id, row.timepoint, dp, out)
            check_s[fmt].append(time.perf_counter() - t)
            placed[fmt][(row.patient_id, row.timepoint)] = sitk.GetArrayFromImage(
                sitk.ReadImage(str(out))
            )
    rois = pd.read_csv(root / "nifti" / "cohort" / "rois.csv", dtype=str)
    write_s = _write_times(root, rois, series)
    ref_median = statistics.median(check_s["nifti"])
    rows = []
    for fmt in FORMATS:
        dice = [_dice(placed[fmt][k], placed["nifti"][k]) for k in placed["nifti"]]
        rows.append(
            {
                "format": fmt,
                "masks": len(dice),
                "dice_min": min(dice),
                "dice_mean": float(np.mean(dice)),
                "check_ms_median": 1000 * statistics.median(check_s[fmt]),
                "check_ms_max": 1000 * max(check_s[fmt]),
                "check_ratio_vs_nifti": statistics.median(check_s[fmt]) / ref_median,
                "write_ms_median": 1000 * statistics.median(write_s[fmt]),
                "file_kb_median": statistics.median(sizes[fmt]) / 1024,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=8)
    ap.add_argument("--n-test", type=int, nargs="+", default=[4, 4])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=1, help="processes writing the cohorts")
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = run(a.n_train, a.n_test, a.seed, Path(tmp), a.workers)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if a.csv:
        table.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
