"""Registration of the PS, AP and PVP phases onto the delayed phase (DP) of one time point.

Each moving phase is registered to DP with SimpleITK's ``ImageRegistrationMethod``: Mattes
mutual information on a fixed random sample of voxels (seeded, so reruns are identical),
a multi-resolution pyramid, a rigid (``Euler3DTransform``) or affine transform initialised on
the image centres (geometry), regular-step gradient descent with scales from the physical-shift
estimator. With an ROI mask and ``region_margin_mm`` set (the default), the pyramid and the
optimisation work on the ROI's neighbourhood only: DP cut to the ROI's box grown by that
margin, the moving phase to that region grown by ``region_motion_mm``
(:mod:`recur.preprocess.regions`). The whole moving phase is then resampled onto the whole DP
grid with linear interpolation; DP itself is only cast to float32.

Convention (SimpleITK's): the returned transform maps points of the DP (fixed) physical
space to points of the moving phase's physical space, so ``Resample(moving, dp, tx)`` puts
the moving phase on the DP grid.

Only :func:`register_timepoint_dir` touches files; :class:`PhaseRegistration` and the helpers
work on ``SimpleITK.Image`` objects. The settings are a
:class:`recur.preprocess.settings.RegistrationSettings` (config section ``registration``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:  # pandas is imported where used: per-patient jobs do not need it
    import pandas as pd

from recur.constants import DERIVED_NIFTI_GZIP_LEVEL, PHASES, TIMEPOINTS
from recur.errors import RecurError
from recur.io import atomic_path, read_image, write_nifti_to
from recur.preprocess.regions import (
    crop_to_box,
    image_centre,
    recentred,
    roi_box_corners,
    same_grid,
)
from recur.preprocess.settings import RegistrationSettings
from recur.preprocess.steps import Abandon, Guard, run_step

#: The fixed phase, and the phases registered onto it (in acquisition order).
FIXED_PHASE = "DP"
MOVING_PHASES: tuple[str, ...] = tuple(ph for ph in PHASES if ph != FIXED_PHASE)
#: Step shrink factor of the regular-step gradient descent when the gradient turns back.
RELAXATION = 0.5


@dataclass
class PhaseResult:
    """The outcome of registering one moving phase onto DP."""

    phase: str
    transform: sitk.Transform
    registered: sitk.Image
    qc: dict[str, float | int | str] = field(default_factory=dict)


def as_float32(image: sitk.Image) -> sitk.Image:
    """A float32 copy of ``image`` carrying only its geometry (no header metadata)."""
    arr = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D scalar volume, got array shape {arr.shape}")
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out


def roi_box_mask(mask: sitk.Image, margin_mm: float) -> sitk.Image:
    """A uint8 mask on ``mask``'s grid: the ROI's bounding box grown by ``margin_mm`` per side."""
    arr = sitk.GetArrayViewFromImage(mask) > 0
    if not arr.any():
        raise ValueError("the ROI mask is empty")
    box = np.zeros(arr.shape, dtype=np.uint8)
    spacing_zyx = np.array(mask.GetSpacing()[::-1])
    grow = np.ceil(margin_mm / spacing_zyx).astype(int)
    sl = []
    for ax, g in enumerate(grow):
        other = tuple(i for i in range(3) if i != ax)
        idx = np.flatnonzero(arr.any(axis=other))
        lo = max(int(idx[0]) - int(g), 0)
        hi = min(int(idx[-1]) + int(g) + 1, arr.shape[ax])
        sl.append(slice(lo, hi))
    box[tuple(sl)] = 1
    out = sitk.GetImageFromArray(box)
    out.CopyInformation(mask)
    return out


def level_shrink_factors(spacing: Sequence[float], factor: int) -> list[int]:
    """Per-axis shrink factors of one pyramid level.

    ``factor`` applies to the finest axis; coarser axes are shrunk less so that the level's
    voxels become as near isotropic as whole factors allow (e.g. spacing (1.5, 1.5, 3) mm and
    factor 4 give (4, 4, 2)). Never below 1.
    """
    finest = min(spacing)
    return [max(1, round(factor * finest / sp)) for sp in spacing]


def pyramid_level(image: sitk.Image, factor: int, sigma_mm: float) -> sitk.Image:
    """One pyramid level: block-average by :func:`level_shrink_factors`, then Gaussian blur.

    Block averaging (``BinShrink``) is itself the anti-aliasing step, and smoothing the small
    image is cheap, so each level costs a fraction of blurring the full-resolution volume.
    """
    out = image
    shrink = level_shrink_factors(image.GetSpacing(), factor)
    if any(f > 1 for f in shrink):
        out = sitk.BinShrink(out, shrink)
    if sigma_mm > 0:
        out = sitk.SmoothingRecursiveGaussian(out, sigma_mm)
    return out


def normalised_cross_correlation(
    a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None
) -> float:
    """Pearson correlation of two equally shaped arrays (over ``where`` if given).

    Returns NaN when fewer than two voxels are selected or either image is constant there.
    """
    a, b = np.asarray(a), np.asarray(b)
    if where is not None:
        a, b = a[where], b[where]
    else:
        a, b = a.ravel(), b.ravel()
    if a.size < 2:
        return float("nan")
    a = a.astype(np.float64)  # a copy: centred in place below
    b = b.astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b) / den) if den > 0 else float("nan")


def transform_summary(tx: sitk.Transform) -> dict[str, float]:
    """Translation (mm) and, for rigid transforms, rotation angles (degrees) of ``tx``."""
    params = tx.GetParameters()
    out: dict[str, float] = {}
    if isinstance(tx, sitk.Euler3DTransform) or tx.GetName() == "Euler3DTransform":
        ax, ay, az, tx_, ty, tz = params
        out.update(
            rot_x_deg=math.degrees(ax),
            rot_y_deg=math.degrees(ay),
            rot_z_deg=math.degrees(az),
            tx_mm=tx_,
            ty_mm=ty,
            tz_mm=tz,
        )
    else:
        t = params[-3:]
        out.update(tx_mm=t[0], ty_mm=t[1], tz_mm=t[2])
    out["translation_mm"] = float(
        math.sqrt(out["tx_mm"] ** 2 + out["ty_mm"] ** 2 + out["tz_mm"] ** 2)
    )
    return out


class PhaseRegistration:
    """Register a moving phase onto the fixed DP volume (MONAI style: settings, then call).

    >>> reg = PhaseRegistration(RegistrationSettings.defaults())  # doctest: +SKIP
    >>> result = reg(dp, ap, phase="AP", roi_mask=mask)          # doctest: +SKIP
    """

    def __init__(self, settings: RegistrationSettings):
        self.settings = settings

    def _method(
        self, fixed: sitk.Image, fixed_mask: sitk.Image | None
    ) -> sitk.ImageRegistrationMethod:
        s = self.settings
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=s.histogram_bins)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        n_vox = (
            int(np.count_nonzero(sitk.GetArrayViewFromImage(fixed_mask)))
            if fixed_mask is not None
            else int(np.prod(fixed.GetSize()))
        )
        fraction = min(1.0, max(s.sampling_fraction, s.min_samples / max(n_vox, 1)))
        reg.SetMetricSamplingPercentage(fraction, s.seed)
        if fixed_mask is not None:
            reg.SetMetricFixedMask(fixed_mask)
        reg.SetInterpolator(sitk.sitkLinear)
        # Gradients by central differences at the sampled points only: building full gradient
        # images at every pyramid level costs more than the optimisation itself.
        reg.MetricUseFixedImageGradientFilterOff()
        reg.MetricUseMovingImageGradientFilterOff()
        return reg

    def metric_method(
        self, fixed: sitk.Image, fixed_mask: sitk.Image | None = None
    ) -> sitk.ImageRegistrationMethod:
        """The configured method (metric, seeded sampling, mask, interpolator), no optimiser.

        For stages built on this registration's metric (e.g. the B-spline of
        :mod:`recur.margin.registration`); the caller sets the optimiser, transform and pyramid.
        """
        return self._method(fixed, fixed_mask)

    def initial_transform(self, fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
        """Rigid or affine transform centred on the fixed image (geometry initialisation)."""
        base = (
            sitk.Euler3DTransform()
            if self.settings.transform == "rigid"
            else sitk.AffineTransform(3)
        )
        return sitk.CenteredTransformInitializer(
            fixed, moving, base, sitk.CenteredTransformInitializerFilter.GEOMETRY
        )

    def metric(
        self,
        fixed: sitk.Image,
        moving: sitk.Image,
        tx: sitk.Transform,
        fixed_mask: sitk.Image | None = None,
    ) -> float:
        """Mattes MI (SimpleITK's sign: lower = better) of ``moving`` under ``tx`` vs ``fixed``.

        Evaluated on the x2 pyramid level (block-averaged, not blurred) with the seeded random
        sample of the registration: evaluating at full resolution would cost as much as the
        registration itself, and the x2 level ranks transforms the same way.
        """
        return self.metrics(fixed, moving, [tx], fixed_mask)[0]

    def metrics(
        self,
        fixed: sitk.Image,
        moving: sitk.Image,
        transforms: Sequence[sitk.Transform],
        fixed_mask: sitk.Image | None = None,
    ) -> list[float]:
        """:meth:`metric` of each of ``transforms``, the x2 levels built once."""
        fixed = pyramid_level(fixed, 2, 0.0)
        moving = pyramid_level(moving, 2, 0.0)
        if fixed_mask is not None:
            fixed_mask = sitk.Resample(
                fixed_mask,
                fixed,
                sitk.Euler3DTransform(),
                sitk.sitkNearestNeighbor,
                0,
                sitk.sitkUInt8,
            )
        out = []
        for tx in transforms:
            reg = self._method(fixed, fixed_mask)
            reg.SetInitialTransform(tx, inPlace=False)
            out.append(float(reg.MetricEvaluate(fixed, moving)))
        return out

    def regions(
        self, fixed: sitk.Image, moving: sitk.Image, roi_mask: sitk.Image, tx: sitk.Transform
    ) -> tuple[sitk.Image, sitk.Image]:
        """The fixed and moving images cut to the ROI's neighbourhood (``region_margin_mm``).

        Fixed: the ROI's bounding box grown by ``region_margin_mm``, clipped to the image.
        Moving: that box's corners carried by ``tx`` (the initial transform), grown further by
        ``region_motion_mm`` (the largest expected motion), so that every fixed sample finds its
        moving voxels. Both keep their physical position (:mod:`recur.preprocess.regions`).
        """
        s = self.settings
        f_reg = crop_to_box(fixed, roi_box_corners(roi_mask), s.region_margin_mm)
        last = [n - 1 for n in f_reg.GetSize()]
        carried = [
            tx.TransformPoint(
                f_reg.TransformIndexToPhysicalPoint([n * k for n, k in zip(last, c, strict=True)])
            )
            for c in itertools.product((0, 1), repeat=3)
        ]
        m_reg = crop_to_box(moving, carried, s.region_motion_mm)
        return f_reg, m_reg

    def __call__(
        self,
        fixed: sitk.Image,
        moving: sitk.Image,
        *,
        phase: str = "moving",
        roi_mask: sitk.Image | None = None,
    ) -> PhaseResult:
        """Register ``moving`` onto ``fixed``; the result carries the transform, the registered
        image and the QC row.

        With ``roi_mask`` and ``region_margin_mm`` set, the pyramid, the optimisation and the
        MI columns of the QC work on the ROI's neighbourhood only (:meth:`regions`), about the
        centre of the fixed region; the transform is returned centred as without a region (on
        the fixed image's centre) and the registered image covers the whole fixed grid.
        """
        s = self.settings
        t0 = time.perf_counter()
        fixed = sitk.Cast(fixed, sitk.sitkFloat32)
        moving = sitk.Cast(moving, sitk.sitkFloat32)
        fixed_mask = None
        if roi_mask is not None and s.mask_margin_mm is not None:
            fixed_mask = roi_box_mask(roi_mask, s.mask_margin_mm)
        identity = sitk.Euler3DTransform()

        tx = self.initial_transform(fixed, moving)
        centre = tx.GetCenter()
        f_reg, m_reg = fixed, moving
        in_region = roi_mask is not None and s.region_margin_mm is not None
        if in_region:
            f_reg, m_reg = self.regions(fixed, moving, roi_mask, tx)
            tx = recentred(tx, image_centre(f_reg))
        iterations = 0
        stops = []
        for factor, sigma in zip(s.shrink_factors, s.smoothing_sigmas_mm, strict=True):
            f_lvl = pyramid_level(f_reg, factor, sigma)
            m_lvl = pyramid_level(m_reg, factor, sigma)
            mask_lvl = None
            if fixed_mask is not None:
                mask_lvl = sitk.Resample(
                    fixed_mask, f_lvl, identity, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
                )
            reg = self._method(f_lvl, mask_lvl)
            reg.SetOptimizerAsRegularStepGradientDescent(
                learningRate=s.learning_rate,
                minStep=s.min_step,
                numberOfIterations=s.iterations,
                relaxationFactor=RELAXATION,
                gradientMagnitudeTolerance=1e-8,
            )
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetInitialTransform(tx, inPlace=True)
            reg.Execute(f_lvl, m_lvl)
            iterations += int(reg.GetOptimizerIteration())
            stops.append(f"x{factor}: {reg.GetOptimizerStopConditionDescription()}")
        if in_region:
            tx = recentred(tx, centre)
        seconds = time.perf_counter() - t0

        # voxels outside the moving phase's field of view come out NaN: that is the coverage
        # the correlations need; they are written as 0
        registered = sitk.Resample(moving, fixed, tx, sitk.sitkLinear, math.nan, sitk.sitkFloat32)
        r_arr = sitk.GetArrayFromImage(registered)
        overlap = ~np.isnan(r_arr)
        if same_grid(moving, fixed):
            b_arr = sitk.GetArrayViewFromImage(moving)  # the identity resample, voxel for voxel
        else:
            before = sitk.Resample(moving, fixed, identity, sitk.sitkLinear, math.nan)
            b_arr = sitk.GetArrayFromImage(before)
            overlap &= ~np.isnan(b_arr)
        r_arr[np.isnan(r_arr)] = 0.0
        registered = sitk.GetImageFromArray(r_arr)
        registered.CopyInformation(fixed)
        # correlations over the voxels the moving phase covers both before and after (voxels
        # outside its field of view would bias the comparison)
        region = None
        if fixed_mask is not None:
            region = sitk.GetArrayViewFromImage(fixed_mask) > 0
        elif roi_mask is not None:
            # the box image must outlive the view of its voxels (a view of a temporary image
            # read freed memory: the ROI correlations changed from run to run)
            box_img = roi_box_mask(roi_mask, 20.0)
            region = sitk.GetArrayViewFromImage(box_img) > 0
        f_arr = sitk.GetArrayViewFromImage(fixed)
        mi_before, mi_after = self.metrics(f_reg, m_reg, [identity, tx], fixed_mask)
        qc: dict[str, float | int | str] = {
            "phase": phase,
            "transform": s.transform,
            "mi_before": mi_before,
            "mi_after": mi_after,
            "ncc_before": normalised_cross_correlation(f_arr, b_arr, overlap),
            "ncc_after": normalised_cross_correlation(f_arr, r_arr, overlap),
            "ncc_roi_before": float("nan"),
            "ncc_roi_after": float("nan"),
        }
        if region is not None:
            qc["ncc_roi_before"] = normalised_cross_correlation(f_arr, b_arr, region & overlap)
            qc["ncc_roi_after"] = normalised_cross_correlation(f_arr, r_arr, region & overlap)
        qc.update(transform_summary(tx))
        qc.update(
            iterations=iterations,
            stop_condition=" | ".join(stops),
            seconds=round(seconds, 3),
            parameters=" ".join(f"{p:.6g}" for p in tx.GetParameters()),
            fixed_parameters=" ".join(f"{p:.6g}" for p in tx.GetFixedParameters()),
        )
        return PhaseResult(phase=phase, transform=tx, registered=registered, qc=qc)


def register_timepoint(
    phases: Mapping[str, sitk.Image],
    settings: RegistrationSettings,
    roi_mask: sitk.Image | None = None,
) -> tuple[dict[str, sitk.Image], dict[str, sitk.Transform], pd.DataFrame]:
    """Register PS, AP and PVP onto DP; return (images on the DP grid, transforms, QC table)."""
    import pandas as pd

    reg = PhaseRegistration(settings)
    dp = as_float32(phases[FIXED_PHASE])
    images: dict[str, sitk.Image] = {}
    transforms: dict[str, sitk.Transform] = {}
    rows = []
    for ph in MOVING_PHASES:
        res = reg(dp, phases[ph], phase=ph, roi_mask=roi_mask)
        images[ph] = as_float32(res.registered)
        transforms[ph] = res.transform
        rows.append(res.qc)
    images[FIXED_PHASE] = dp
    return images, transforms, pd.DataFrame(rows)


def _read(path: Path, what: str) -> sitk.Image:
    return read_image(path, who=what, what="")


def phase_images(folder: str | Path) -> list[Path]:
    """``folder/{PS,AP,PVP,DP}.nii.gz``: a time point's converted or registered phases."""
    return [Path(folder) / f"{ph}.nii.gz" for ph in PHASES]


def registration_outputs(outdir: str | Path) -> list[Path]:
    """The files one time point's registration writes into ``outdir``."""
    outdir = Path(outdir)
    return [
        *phase_images(outdir),
        *(outdir / f"{ph}.tfm" for ph in MOVING_PHASES),
        outdir / "qc.csv",
    ]


def register_timepoint_dir(
    indir: str | Path,
    outdir: str | Path,
    settings: RegistrationSettings,
    mask: str | Path | None = None,
    threads: int | None = None,
    *,
    stack: contextlib.ExitStack | None = None,
) -> pd.DataFrame:
    """Read ``indir/{PS,AP,PVP,DP}.nii.gz``, register, and write the outputs to ``outdir``.

    Writes ``{PS,AP,PVP,DP}.nii.gz`` (float32, DP grid), ``{PS,AP,PVP}.tfm`` and ``qc.csv``
    only after every registration succeeded, all renamed into place together. With ``stack``
    the files stay under temporary names registered on it, renamed when the caller's stack
    closes without an error (so several time points commit together).
    """
    if threads:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(int(threads))
    indir, outdir = Path(indir), Path(outdir)
    phases = {ph: _read(indir / f"{ph}.nii.gz", f"phase {ph}") for ph in PHASES}
    roi = _read(Path(mask), "ROI mask") if mask else None
    dp = phases[FIXED_PHASE]
    if roi is not None and (
        roi.GetSize() != dp.GetSize()
        or not np.allclose(roi.GetOrigin(), dp.GetOrigin(), atol=1e-3)
        or not np.allclose(roi.GetSpacing(), dp.GetSpacing(), rtol=1e-4)
    ):
        raise RecurError(f"ROI mask {mask} is not on the grid of {indir / 'DP.nii.gz'}")
    try:
        images, transforms, qc = register_timepoint(phases, settings, roi)
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "failed"
        raise RecurError(f"registration of {indir} failed: {msg}") from None
    outdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as own:
        staged = own if stack is None else stack
        for ph, img in images.items():
            tmp = staged.enter_context(atomic_path(outdir / f"{ph}.nii.gz"))
            write_nifti_to(img, tmp, DERIVED_NIFTI_GZIP_LEVEL)  # ISA-L: ~10x faster than ITK's
        for ph, tx in transforms.items():
            tmp = staged.enter_context(atomic_path(outdir / f"{ph}.tfm"))
            sitk.WriteTransform(tx, str(tmp))
        tmp = staged.enter_context(atomic_path(outdir / "qc.csv"))
        qc.to_csv(tmp, index=False)
    return qc


def register_patient(
    nifti_dir: str | Path,
    outdir: str | Path,
    settings: RegistrationSettings,
    *,
    masks_dir: str | Path | None = None,
    check_mask: Callable[[str, Path, Path], object] | None = None,
    timepoints: Sequence[str] = TIMEPOINTS,
    threads: int | None = None,
    guard: Guard | None = None,
) -> dict[str, pd.DataFrame]:
    """Register every time point of one patient (one workflow job); ``{tp: QC table}``.

    Reads ``nifti_dir/{tp}/{phase}.nii.gz`` and writes ``outdir/{tp}/`` as
    :func:`register_timepoint_dir` does. ``masks_dir/{tp}.nii.gz`` is the ROI mask of each
    time point (the metric's region); with ``check_mask(tp, dp_path, out_path)`` that file is
    first written by the check (``recur.preprocess.masks.check_mask_file`` with the cohort's names,
    as the CLI's ``register-patient --check-roi`` does), before the registration reads it.

    **All or nothing**: every file of both time points (checked masks included) goes to a
    temporary name, and all are renamed only after every check and registration succeeded.
    ``guard`` (see :data:`Guard`) runs each step; a time point whose step it handled keeps the
    placeholders the guard wrote and loses its staged files, the other time point goes on.
    """

    if check_mask is not None and masks_dir is None:
        raise ValueError("check_mask needs masks_dir (where the checked masks go)")
    guard = guard or run_step
    nifti_dir, outdir = Path(nifti_dir), Path(outdir)
    qc: dict[str, pd.DataFrame] = {}
    with contextlib.ExitStack() as stack:
        for tp in timepoints:
            indir = nifti_dir / tp
            dp = indir / f"{FIXED_PHASE}.nii.gz"
            mask_out = Path(masks_dir) / f"{tp}.nii.gz" if masks_dir is not None else None
            outputs = registration_outputs(outdir / tp)
            if check_mask is not None:
                outputs = [mask_out, *outputs]
            try:
                with contextlib.ExitStack() as tp_stack:
                    mask = mask_out
                    if check_mask is not None:
                        mask = tp_stack.enter_context(atomic_path(mask_out))
                        ran = guard(
                            "check_mask",
                            tp,
                            lambda tp=tp, dp=dp, mask=mask: check_mask(tp, dp, mask),
                            [dp],
                            outputs,
                        )
                        if not ran:
                            raise Abandon
                    inputs = [indir / f"{ph}.nii.gz" for ph in PHASES]
                    inputs += [mask] if mask is not None else []

                    def step(tp=tp, indir=indir, mask=mask, tp_stack=tp_stack) -> None:
                        qc[tp] = register_timepoint_dir(
                            indir, outdir / tp, settings, mask, threads, stack=tp_stack
                        )

                    if not guard("register", tp, step, inputs, outputs):
                        raise Abandon
                    stack.enter_context(tp_stack.pop_all())
            except Abandon:
                qc.pop(tp, None)
    return qc
