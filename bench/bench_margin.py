"""Benchmark of the ablative margin against the synthetic generator's true minimal margin.

For every patient of a synthetic cohort (``results/synthetic/`` by default: ``cohort/`` and
``truth.csv``; or a small one generated into a temporary folder with ``--generate N``) this
reads the pre and post DP series (``recur.preprocess.dicom_series.SeriesReader`` when available,
else SimpleITK's ImageSeriesReader) and the ROI masks, registers post onto pre
(:class:`recur.margin.registration.CrossTimeRegistration`), computes the margin
(:class:`recur.margin.metrics.MarginMetrics`) and compares the minimal margin with ``margin_mm``
of ``truth.csv``. The table gives per variant the median absolute error (MAE), the median
signed error (bias), the largest absolute error, the median seconds per patient
(registration + metric, median of ``--repeats``; wall clock, registration alone, and CPU
seconds, which a busy machine disturbs less) and both ratioed to the reference variant
measured in the same run (nearest-neighbour zone transfer on the native grid), when run.

    python bench/bench_margin.py                      # results/synthetic/
    python bench/bench_margin.py --generate 8 --csv bench_margin.csv
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from recur.margin.masks import zone_on_pre
from recur.margin.metrics import MarginMetrics
from recur.margin.registration import CrossTimeRegistration
from recur.margin.settings import CrossTimeSettings, MarginMetricSettings


def read_dp(folder: Path) -> sitk.Image:
    """The DP series of ``folder`` as a SimpleITK image."""
    try:
        from recur.preprocess.dicom_series import ConvertSettings, SeriesReader

        return SeriesReader(ConvertSettings.defaults())(folder).image
    except ImportError:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        return reader.Execute()


def load(cohort: Path, patient: str) -> dict[str, sitk.Image]:
    series = pd.read_csv(cohort / "series.csv")
    rois = pd.read_csv(cohort / "rois.csv")
    out = {}
    for tp in ("pre", "post"):
        row = series[(series.patient_id == patient) & (series.timepoint == tp)]
        row = row[row.phase == "DP"].iloc[0]
        out[f"{tp}_dp"] = read_dp(cohort / row.dicom_dir)
        m = rois[(rois.patient_id == patient) & (rois.timepoint == tp)].iloc[0]
        mask = sitk.ReadImage(str(cohort / m["mask"]))
        out[f"{tp}_mask"] = sitk.Cast(mask > 0, sitk.sitkUInt8)
    return out


def _metrics(**overrides: object) -> MarginMetrics:
    """The margin metrics with the schema's settings and ``overrides``."""
    return MarginMetrics(MarginMetricSettings.defaults(**overrides))


def _rigid_variant(**rigid: object) -> tuple[CrossTimeSettings, MarginMetrics, bool]:
    """The default pipeline with other rigid-stage settings (``margin`` section keys)."""
    settings = CrossTimeSettings.defaults(**rigid)
    return settings, _metrics(mode="auto", iso_spacing_mm=0.5, smooth_voxels=0.5), True


#: name -> (registration settings, metric settings, zone carried via the transform?)
VARIANTS = {
    "rigid (region 60 mm), iso 0.5 mm, smooth 0.5": (
        CrossTimeSettings.defaults(rigid_region_mm=60.0),
        _metrics(mode="auto", iso_spacing_mm=0.5, smooth_voxels=0.5),
        True,
    ),
    "rigid, nearest zone, native grid": (
        CrossTimeSettings.defaults(rigid_region_mm=60.0, zone_interpolation="nearest"),
        _metrics(mode="auto", iso_spacing_mm=None, smooth_voxels=0.5),
        False,
    ),
    "rigid+bspline, iso 0.5 mm, smooth 0.5": (
        CrossTimeSettings.defaults(rigid_region_mm=60.0, deformable=True),
        _metrics(mode="auto", iso_spacing_mm=0.5, smooth_voxels=0.5),
        True,
    ),
    "rigid whole image, iso 0.5 mm": _rigid_variant(rigid_region_mm=None),
    "rigid region 30 mm, iso 0.5 mm": _rigid_variant(rigid_region_mm=30.0),
    "rigid region 80 mm, iso 0.5 mm": _rigid_variant(rigid_region_mm=80.0),
    "rigid 0.5% sample, iso 0.5 mm": _rigid_variant(rigid_region_mm=60.0, sampling_fraction=0.005),
}


REFERENCE = "rigid, nearest zone, native grid"


def true_shifts(
    patients: pd.DataFrame, motions: pd.DataFrame
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per patient: (pre tumour centroid, true post-minus-pre table shift), in mm.

    The generator moves the whole body between the time points by a translation; it is
    recovered from ``truth.csv`` as the post ROI centroid minus the pre ROI centroid minus
    the zone's planned offset (``zone_dx``, ``zone_dy``): approximate to the voxelised
    centroids' error (a few tenths of a mm).
    """
    dp = motions[motions["phase"] == "DP"].set_index(["patient_id", "timepoint"])
    cols = ["roi_centroid_x", "roi_centroid_y", "roi_centroid_z"]
    out = {}
    for row in patients.itertuples():
        pre = dp.loc[(row.patient_id, "pre"), cols].to_numpy(float)
        post = dp.loc[(row.patient_id, "post"), cols].to_numpy(float)
        out[row.patient_id] = (pre, post - pre - np.array([row.zone_dx, row.zone_dy, 0.0]))
    return out


def shift_error(tx: sitk.Transform, centre: np.ndarray, shift: np.ndarray) -> float:
    """Distance (mm) between where ``tx`` maps the tumour centre and where it truly moved."""
    return float(np.linalg.norm(np.array(tx.TransformPoint(centre.tolist())) - centre - shift))


def run(root: Path, repeats: int, limit: int | None, variants: list[str]) -> pd.DataFrame:
    from recur.synthetic import cohort as synth

    cohort = root / "cohort"
    patients, motions = synth.load_truth(root / "truth.csv")
    truth = patients.set_index("patient_id")["margin_mm"]
    shifts = true_shifts(patients, motions)
    ids = list(truth.index)[: limit or None]
    rows = []
    for pid in ids:
        imgs = load(cohort, pid)
        for name in variants:
            settings, metrics, direct = VARIANTS[name]
            reg = CrossTimeRegistration(settings)
            times, reg_times, cpu_times = [], [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                res = reg(imgs["pre_dp"], imgs["post_dp"], imgs["pre_mask"], imgs["post_mask"])
                reg_times.append(time.perf_counter() - t0)
                if direct:
                    sm = metrics(imgs["pre_mask"], imgs["post_mask"], res.transform)
                else:
                    zone = zone_on_pre(
                        imgs["post_mask"],
                        imgs["pre_mask"],
                        res.transform,
                        settings.zone_interpolation,
                    )
                    sm = metrics(imgs["pre_mask"], zone)
                times.append(time.perf_counter() - t0)
                cpu_times.append(time.process_time() - c0)
            s = sm.summary()
            rows.append(
                {
                    "patient_id": pid,
                    "variant": name,
                    "true_mm": float(truth[pid]),
                    "min_margin_mm": s["min_margin_mm"],
                    "error_mm": s["min_margin_mm"] - float(truth[pid]),
                    "mode": s["mode"],
                    "seconds": statistics.median(times),
                    "reg_seconds": statistics.median(reg_times),
                    "cpu_seconds": statistics.median(cpu_times),
                    "shift_err_mm": shift_error(res.transform, *shifts[pid]),
                }
            )
            print(
                f"  {pid} {name:<30} true {truth[pid]:6.2f}  est {s['min_margin_mm']:6.2f}  "
                f"{statistics.median(times):5.2f} s (registration "
                f"{statistics.median(reg_times):5.2f} s)",
                file=sys.stderr,
            )
    return pd.DataFrame(rows)


def summarise(per: pd.DataFrame) -> pd.DataFrame:
    g = per.groupby("variant", sort=False)
    out = pd.DataFrame(
        {
            "n": g.size(),
            "mae_mm": g["error_mm"].apply(lambda e: float(np.median(np.abs(e)))),
            "bias_mm": g["error_mm"].median(),
            "max_abs_mm": g["error_mm"].apply(lambda e: float(np.max(np.abs(e)))),
            "s_per_patient": g["seconds"].median(),
            "reg_s_per_patient": g["reg_seconds"].median(),
            "cpu_s_per_patient": g["cpu_seconds"].median(),
            "shift_err_mm": g["shift_err_mm"].median(),
        }
    ).reset_index()
    ref = out[out["variant"] == REFERENCE]
    if len(ref):
        out["mae_vs_ref"] = out["mae_mm"] / float(ref["mae_mm"].iloc[0])
        out["time_vs_ref"] = out["s_per_patient"] / float(ref["s_per_patient"].iloc[0])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="results/synthetic", help="holds cohort/ and truth.csv")
    ap.add_argument("--generate", type=int, default=0, help="generate N patients in a temp dir")
    ap.add_argument("--limit", type=int, default=None, help="first N patients only")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS)[:2], choices=list(VARIANTS))
    ap.add_argument("--csv", help="write the summary table here")
    ap.add_argument("--per-patient-csv", help="write the per-patient table here")
    a = ap.parse_args(argv)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    root = Path(a.root)
    tmp = None
    if a.generate or not (root / "truth.csv").is_file():
        from recur.synthetic import cohort as synth

        n = a.generate or 6
        tmp = tempfile.TemporaryDirectory(prefix="bench_margin_")
        root = Path(tmp.name)
        print(f"generating {n} synthetic patients in {root}", file=sys.stderr)
        synth.write_cohort(
            root / "cohort",
            synth.SyntheticSettings.defaults(
                n_train=max(n - 2, 1), n_test=(2,), seed=11, er_share=None
            ),
        )
    per = run(root, a.repeats, a.limit, a.variants)
    summ = summarise(per)
    with pd.option_context("display.width", 120, "display.precision", 3):
        print(summ.to_string(index=False))
    if a.csv:
        summ.to_csv(a.csv, index=False)
    if a.per_patient_csv:
        per.to_csv(a.per_patient_csv, index=False)
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
