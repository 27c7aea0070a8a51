"""Benchmark of the preprocessing stage: registration speed and accuracy, crop throughput.

Registration: one moving phase onto DP on one thread, on an abdomen-like phantom moved by a
known rigid motion (breathing-like: a few mm, mostly cranio-caudal, a few degrees), at the
synthetic cohort's size and at a typical liver-MRI size. Reports the median seconds per phase
(wall clock and CPU) over ``--repeats`` runs, the target registration error (TRE, mm) at the
'tumour', and the ratio of CPU seconds (registration + QC) to a reference measured in the same
run: SimpleITK's built-in pyramid (full-resolution smoothing per level, gradient-image filters
on) with the same metric, optimiser and sampling.

Crops: ``crop_timepoint`` (reorient, slice choice, 4 phases × 3 slices × 128²,
normalisation) per second. The crop job's QC montage in a fresh interpreter (what a
per-patient job pays, imports included): Pillow (``recur.preprocess.qc_images``) against the
matplotlib figure it replaced, the reference.

    .venv/bin/python bench/bench_preprocess.py [--repeats 5] [--csv bench.csv]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from recur.constants import PHASES
from recur.preprocess.crops import crop_timepoint
from recur.preprocess.register import RELAXATION, PhaseRegistration
from recur.preprocess.settings import CropSettings, RegistrationSettings

SIZES = {
    "synthetic 160x160x26 @1.8x1.8x5mm": ((160, 160, 26), (1.8, 1.8, 5.0)),
    "liver MRI 256x256x72 @1.5x1.5x3mm": ((256, 256, 72), (1.5, 1.5, 3.0)),
}


def phantom(size, spacing, seed=0) -> sitk.Image:
    """Body ellipse, liver, tumour, spine, random blobs, Gaussian noise (float32)."""
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - n / 2) * s for n, s in zip(size[::-1], spacing[::-1], strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    a = np.zeros(x.shape, np.float32)
    a[(x / 160) ** 2 + (y / 115) ** 2 < 1] = 100
    a[((x + 50) / 80) ** 2 + ((y + 10) / 60) ** 2 + (z / 70) ** 2 < 1] = 300
    a[(x + 40) ** 2 + (y + 5) ** 2 + (z - 6) ** 2 < 18**2] = 500
    a[x**2 + (y - 80) ** 2 < 14**2] = 700
    for _ in range(30):
        c = rng.uniform(-100, 100, 3)
        r = rng.uniform(5, 15)
        a[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2] * 0.3) ** 2 < r**2] = rng.uniform(50, 600)
    a += rng.normal(0, 10, a.shape).astype(np.float32)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(spacing)
    img.SetOrigin(tuple(-n * s / 2 for n, s in zip(size, spacing, strict=True)))
    return img


def motion(img: sitk.Image, rng: np.random.Generator) -> sitk.Euler3DTransform:
    tx = sitk.Euler3DTransform()
    tx.SetCenter(img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()]))
    tx.SetRotation(*(math.radians(v) for v in rng.normal(0, [1.5, 1.0, 1.0])))
    tx.SetTranslation(tuple(rng.normal(0, [1.2, 2.0, 4.5])))
    return tx


def moved(fixed: sitk.Image, tx: sitk.Transform) -> sitk.Image:
    m = sitk.Resample(fixed, fixed, tx.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(m) * 1.25 + 15.0  # another phase's contrast
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(fixed)
    return out


def reference_registration(fixed, moving, s: RegistrationSettings) -> sitk.Transform:
    """SimpleITK's built-in multi-resolution registration with the same settings."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(s.histogram_bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.01, s.seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        s.learning_rate, s.min_step, s.iterations, RELAXATION
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(s.shrink_factors))
    reg.SetSmoothingSigmasPerLevel(list(s.smoothing_sigmas_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    tx = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(fixed, moving)
    return tx


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Median wall-clock and median CPU seconds of ``repeats`` calls, and the last result.

    On one thread the CPU time is what the wall time would be on an idle core (the wall
    time also counts waiting for a core on a busy machine).
    """
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def tre(found: sitk.Transform, true: sitk.Transform, point) -> float:
    return float(
        np.linalg.norm(np.subtract(found.TransformPoint(point), true.TransformPoint(point)))
    )


def cohort_tre(results: Path) -> pd.DataFrame:
    """TRE (mm) at the ROI centroid of every registered phase of a synthetic-cohort run.

    Reads ``results/synthetic/truth.csv`` (the generator's motions; benchmarks may read it)
    and ``results/registered/{patient}/{timepoint}/{phase}.tfm``.
    """
    truth = pd.read_csv(results / "synthetic" / "truth.csv")
    rows = []
    for r in truth[truth["phase"] != "DP"].itertuples(index=False):
        tfm = results / "registered" / r.patient_id / r.timepoint / f"{r.phase}.tfm"
        if not tfm.is_file():
            continue
        true = sitk.Euler3DTransform()
        true.SetCenter((r.center_x, r.center_y, r.center_z))
        true.SetRotation(r.angle_x, r.angle_y, r.angle_z)
        true.SetTranslation((r.translation_x, r.translation_y, r.translation_z))
        p = (r.roi_centroid_x, r.roi_centroid_y, r.roi_centroid_z)
        rows.append(
            {
                "motion_mm": tre(sitk.Euler3DTransform(), true, p),
                "tre_mm": tre(sitk.ReadTransform(str(tfm)), true, p),
            }
        )
    return pd.DataFrame(rows)


#: The crop QC montage as it was drawn before recur.preprocess.qc_images (matplotlib), the
#: reference.
_MATPLOTLIB_MONTAGE = """
import sys, numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
crops = np.random.default_rng(0).normal(size=(2, 4, 3, 128, 128)).astype(np.float32)
masks = np.zeros((2, 3, 128, 128), np.uint8); masks[:, :, 50:80, 50:80] = 1
fig, axes = plt.subplots(2, 4, figsize=(8.8, 4.9), squeeze=False)
for t in range(2):
    for p in range(4):
        ax = axes[t, p]; img = crops[t, p, 1]; lo, hi = np.percentile(img, [1, 99])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.contour(masks[t, 1], levels=[0.5], colors="red", linewidths=0.8)
        ax.set_xticks([]); ax.set_yticks([])
fig.suptitle("P0001"); fig.tight_layout()
fig.savefig(sys.argv[1], format="png", dpi=80, metadata={"Software": None})
"""

#: The same picture through recur.preprocess.crop_files.qc_montage (Pillow,
#: recur.preprocess.qc_images).
_PILLOW_MONTAGE = """
import sys, numpy as np
from recur.preprocess.crop_files import qc_montage
crops = np.random.default_rng(0).normal(size=(2, 4, 3, 128, 128)).astype(np.float32)
masks = np.zeros((2, 3, 128, 128), np.uint8); masks[:, :, 50:80, 50:80] = 1
qc_montage(crops, masks, "P0001", sys.argv[1])
"""


def _child_seconds(code: str, out: Path, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of a fresh interpreter running ``code`` (imports included:
    what a per-patient job pays)."""
    import resource
    import subprocess

    wall, cpu = [], []
    env_path = str(Path(__file__).resolve().parents[1] / "src")
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code, str(out)],
            check=True,
            env={**__import__("os").environ, "PYTHONPATH": env_path},
        )
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(wall), statistics.median(cpu)


def qc_picture_row(repeats: int) -> dict:
    """The crop job's QC montage in a fresh process: Pillow (ours) against matplotlib."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        w_ours, c_ours = _child_seconds(_PILLOW_MONTAGE, Path(tmp) / "a.png", repeats)
        w_ref, c_ref = _child_seconds(_MATPLOTLIB_MONTAGE, Path(tmp) / "b.png", repeats)
    return {
        "task": "crop QC montage in a fresh process (imports included)",
        "case": "2 x 4 panels of 128^2",
        "wall_s": round(w_ours, 3),
        "cpu_s": round(c_ours, 3),
        "reference_wall_s": round(w_ref, 3),
        "reference_cpu_s": round(c_ref, 3),
        "cpu_ratio_to_reference": round(c_ours / c_ref, 3),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", type=int, default=3, help="random motions per image size")
    ap.add_argument("--csv", default=None)
    ap.add_argument(
        "--results",
        default=None,
        help="a synthetic-cohort results/ folder: also report TRE of its registrations",
    )
    a = ap.parse_args(argv)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    settings = RegistrationSettings.defaults()
    rows = []
    rng = np.random.default_rng(2025)
    for name, (size, spacing) in SIZES.items():
        fixed = phantom(size, spacing)
        point = (-40.0, -5.0, 6.0)  # the 'tumour'
        for case in range(a.cases):
            true = motion(fixed, rng)
            mov = moved(fixed, true)
            reg = PhaseRegistration(settings)
            t_ours, c_ours, res = timed(lambda: reg(fixed, mov, phase="AP"), a.repeats)  # noqa: B023
            t_reg = statistics.median(
                [reg(fixed, mov, phase="AP").qc["seconds"] for _ in range(a.repeats)]
            )
            t_ref, c_ref, ref_tx = timed(
                lambda: reference_registration(fixed, mov, settings),  # noqa: B023
                max(1, a.repeats // 2),
            )
            rows.append(
                {
                    "task": "register one phase (1 thread)",
                    "case": f"{name} #{case}",
                    "wall_s": round(t_ours, 3),
                    "cpu_s": round(c_ours, 3),
                    "wall_s_registration_only": round(float(t_reg), 3),
                    "reference_wall_s": round(t_ref, 3),
                    "reference_cpu_s": round(c_ref, 3),
                    "cpu_ratio_to_reference": round(c_ours / c_ref, 3),
                    "motion_mm": round(tre(sitk.Euler3DTransform(), true, point), 2),
                    "tre_mm": round(tre(res.transform, true, point), 3),
                    "reference_tre_mm": round(tre(ref_tx, true, point), 3),
                    "iterations": res.qc["iterations"],
                }
            )
    # crops
    size, spacing = SIZES["synthetic 160x160x26 @1.8x1.8x5mm"]
    fixed = phantom(size, spacing)
    phases = {ph: fixed for ph in PHASES}
    mask = sitk.Cast(fixed > 450, sitk.sitkUInt8)
    crop_settings = CropSettings.defaults(spacing_mm=None)  # the phantom's own pixel grid
    t_crop, c_crop, _ = timed(lambda: crop_timepoint(phases, mask, crop_settings), a.repeats * 4)
    rows.append(
        {
            "task": "crop one time point (4 phases x 3 x 128^2)",
            "case": "synthetic 160x160x26",
            "wall_s": round(t_crop, 4),
            "cpu_s": round(c_crop, 4),
            "crops_per_cpu_second": round(1.0 / c_crop, 1),
        }
    )
    rows.append(qc_picture_row(a.repeats))
    if a.results:
        t = cohort_tre(Path(a.results))
        if len(t):
            rows.append(
                {
                    "task": "synthetic cohort registrations (TRE at ROI centroid)",
                    "case": f"{len(t)} phases",
                    "motion_mm": round(float(t["motion_mm"].median()), 2),
                    "tre_mm": round(float(t["tre_mm"].median()), 3),
                    "max_tre_mm": round(float(t["tre_mm"].max()), 3),
                }
            )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    if a.csv:
        table.to_csv(a.csv, index=False)
    return table


if __name__ == "__main__":
    main()
