"""Phase registration on the ROI's neighbourhood against the whole images: accuracy and CPU.

Each moving image is registered onto its fixed image twice, with the ``registration`` settings'
defaults and ``region_margin_mm`` set to null (the whole images) or to each ``--margins`` value
(the ROI's neighbourhood), on one thread. Reported per variant: the target registration error
(TRE, mm) at the ROI centroid and its largest value at the four in-plane corners of the crops'
field of view (the centroid ± 48 mm along x and y), and the CPU seconds of one registration
(``PhaseRegistration`` call: pyramid, optimisation, final resample onto the whole fixed grid
and QC).

``synthetic``: the phases of a synthetic cohort's run (``results/nifti/<p>/<tp>/<phase>.nii.gz``
and the checked masks ``results/masks/<p>/<tp>.nii.gz``) against the generator's known motions
(``truth.csv`` of ``recur synth --truth``: benchmarks may read it, no rule does).

``real``: the public liver CT (``tests/data/hcc048-ct-portal-venous``, 512×512×24 at
0.70 × 0.70 × 2.5 mm, and the same shrunk 2×2 in-plane) and abdominal MR
(``tests/data/totalsegmentator-mr``, 117×91×20 at 3 mm): the moving image is the fixed image
resampled by a known random rigid motion (up to about ±2.5° and ±4 mm per axis, as
``tests/data/README.md``) with another contrast scaling; the ROI is a 15 mm-radius sphere in
the liver (the CT's right-lobe point of ``tests/preprocess/test_register.py``; the centroid of
the MR's liver label).

    .venv/bin/python bench/bench_roi_registration.py synthetic --results RUN/results \\
        --truth truth.csv [--margins 60] [--csv out.csv]
    .venv/bin/python bench/bench_roi_registration.py real [--motions 8] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from recur.preprocess.register import PhaseRegistration  # noqa: E402
from recur.preprocess.settings import RegistrationSettings  # noqa: E402

#: Half the crops' field of view (128 px × 0.75 mm / 2).
CROP_HALF_MM = 48.0
CT_DIR = REPO / "tests/data/hcc048-ct-portal-venous/sample_data/HCC048_portal_venous"
MR_DIR = REPO / "tests/data/totalsegmentator-mr/tests/reference_files"


def probe_points(centroid) -> list[tuple[float, float, float]]:
    """The ROI centroid and the four in-plane corners of the crop field of view around it."""
    c = np.asarray(centroid, dtype=float)
    pts = [tuple(c)]
    for dx in (-CROP_HALF_MM, CROP_HALF_MM):
        for dy in (-CROP_HALF_MM, CROP_HALF_MM):
            pts.append(tuple(c + np.array([dx, dy, 0.0])))
    return pts


def errors(found: sitk.Transform, true: sitk.Transform, points) -> tuple[float, float]:
    """TRE at the first point, and the largest TRE over all points (mm)."""
    e = [
        float(np.linalg.norm(np.subtract(found.TransformPoint(p), true.TransformPoint(p))))
        for p in points
    ]
    return e[0], max(e)


def variants(margins: list[float]) -> dict[str, RegistrationSettings]:
    out = {"whole": RegistrationSettings.defaults(region_margin_mm=None)}
    for m in margins:
        out[f"roi{m:g}"] = RegistrationSettings.defaults(region_margin_mm=m)
    return out


def register_all(fixed, moving, roi, true, points, settings, case: dict) -> list[dict]:
    rows = []
    for name, s in settings.items():
        c0 = time.process_time()
        res = PhaseRegistration(s)(fixed, moving, phase="moving", roi_mask=roi)
        cpu = time.process_time() - c0
        tre, tre_max = errors(res.transform, true, points)
        rows.append(
            {
                **case,
                "variant": name,
                "tre_mm": round(tre, 4),
                "tre_crop_max_mm": round(tre_max, 4),
                "cpu_s": round(cpu, 4),
                "iterations": res.qc["iterations"],
                "mi_after": res.qc["mi_after"],
                "ncc_after": res.qc["ncc_after"],
            }
        )
    return rows


def bench_synthetic(a: argparse.Namespace) -> list[dict]:
    results = Path(a.results)
    truth = pd.read_csv(a.truth)
    settings = variants(a.margins)
    rows = []
    for (patient, tp), grp in truth.groupby(["patient_id", "timepoint"], sort=True):
        folder = results / "nifti" / patient / tp
        mask = results / "masks" / patient / f"{tp}.nii.gz"
        if not (folder / "DP.nii.gz").is_file() or not mask.is_file():
            continue
        dp = sitk.ReadImage(str(folder / "DP.nii.gz"))
        roi = sitk.ReadImage(str(mask))
        for r in grp[grp["phase"] != "DP"].itertuples(index=False):
            true = sitk.Euler3DTransform()
            true.SetCenter((r.center_x, r.center_y, r.center_z))
            true.SetRotation(r.angle_x, r.angle_y, r.angle_z)
            true.SetTranslation((r.translation_x, r.translation_y, r.translation_z))
            pts = probe_points((r.roi_centroid_x, r.roi_centroid_y, r.roi_centroid_z))
            moving = sitk.ReadImage(str(folder / f"{r.phase}.nii.gz"))
            case = {"patient": patient, "timepoint": tp, "phase": r.phase}
            case["motion_mm"] = round(errors(sitk.Euler3DTransform(), true, pts)[0], 3)
            rows += register_all(dp, moving, roi, true, pts, settings, case)
        print(f"{patient} {tp}", flush=True)
    return rows


def sphere(image: sitk.Image, centre, radius_mm: float) -> sitk.Image:
    """A uint8 mask on ``image``'s grid: voxels within ``radius_mm`` of ``centre``."""
    idx = np.indices(image.GetSize()[::-1]).reshape(3, -1)[::-1].T  # x, y, z index rows
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    phys = np.asarray(image.GetOrigin()) + (idx * np.asarray(image.GetSpacing())) @ d.T
    inside = np.linalg.norm(phys - np.asarray(centre), axis=1) <= radius_mm
    out = sitk.GetImageFromArray(inside.reshape(image.GetSize()[::-1]).astype(np.uint8))
    out.CopyInformation(image)
    return out


def random_motion(image: sitk.Image, rng: np.random.Generator) -> sitk.Euler3DTransform:
    tx = sitk.Euler3DTransform()
    tx.SetCenter(
        image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    )
    tx.SetRotation(*(math.radians(v) for v in rng.uniform(-2.5, 2.5, 3)))
    tx.SetTranslation(tuple(rng.uniform(-4.0, 4.0, 3)))
    return tx


def moved(fixed: sitk.Image, true: sitk.Transform) -> sitk.Image:
    """The moving image whose point true(p) shows what ``fixed`` shows at p."""
    m = sitk.Resample(fixed, fixed, true.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(m) * 1.25 + 15.0)
    out.CopyInformation(fixed)
    return out


def real_images() -> dict[str, tuple[sitk.Image, tuple[float, ...]]]:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(CT_DIR)))
    ct = sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    liver = ct.TransformIndexToPhysicalPoint((150, 220, 12))  # right liver lobe
    mr = sitk.Cast(sitk.ReadImage(str(MR_DIR / "example_mr_sm.nii.gz")), sitk.sitkFloat32)
    seg = sitk.ReadImage(str(MR_DIR / "example_seg_roi_subset_mr.nii.gz"))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(seg == 5, sitk.sitkUInt8))
    return {
        "CT 512x512x24 @0.70x0.70x2.5mm": (ct, liver),
        "CT 256x256x24 @1.41x1.41x2.5mm": (sitk.BinShrink(ct, [2, 2, 1]), liver),
        "MR 117x91x20 @3mm": (mr, stats.GetCentroid(1)),
    }


def bench_real(a: argparse.Namespace) -> list[dict]:
    settings = variants(a.margins)
    rng = np.random.default_rng(a.seed)
    rows = []
    for name, (fixed, centre) in real_images().items():
        roi = sphere(fixed, centre, 15.0)
        pts = probe_points(centre)
        for k in range(a.motions):
            true = random_motion(fixed, rng)
            case = {"image": name, "motion": k}
            case["motion_mm"] = round(errors(sitk.Euler3DTransform(), true, pts)[0], 3)
            rows += register_all(fixed, moved(fixed, true), roi, true, pts, settings, case)
        print(name, flush=True)
    return rows


def summary(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.groupby(by).agg(
        n=("tre_mm", "size"),
        tre_median=("tre_mm", "median"),
        tre_max=("tre_mm", "max"),
        tre_crop_max=("tre_crop_max_mm", "max"),
        cpu_s_median=("cpu_s", "median"),
        cpu_s_total=("cpu_s", "sum"),
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["synthetic", "real"])
    ap.add_argument("--results", help="a synthetic cohort run's results/ folder (synthetic)")
    ap.add_argument("--truth", help="the cohort's truth.csv (synthetic)")
    ap.add_argument("--margins", type=float, nargs="+", default=[60.0])
    ap.add_argument("--motions", type=int, default=8, help="random motions per image (real)")
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--csv", default=None)
    a = ap.parse_args(argv)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    rows = bench_synthetic(a) if a.what == "synthetic" else bench_real(a)
    frame = pd.DataFrame(rows)
    by = ["variant"] if a.what == "synthetic" else ["image", "variant"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary(frame, by).round(4).to_string())
    if a.csv:
        frame.to_csv(a.csv, index=False)
        print(f"wrote {a.csv}")
    return frame


if __name__ == "__main__":
    main()
