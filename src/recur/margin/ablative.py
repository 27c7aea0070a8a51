"""The ablative margin: cross-time registration of post onto pre and signed-distance metrics.

Three steps (see ``docs/methods/margin.md`` for the definitions and their biases):

1. :class:`CrossTimeRegistration` registers the post-ablation delayed phase (DP) onto the
   pre-ablation DP (rigid: :class:`recur.preprocess.register.PhaseRegistration`, the phase
   registration's engine and settings object, on a liver region around the tumour;
   optionally a B-spline refinement restricted to the region within ``region_mm`` of the
   tumour) and
   :func:`zone_on_pre` carries the post ablation-zone mask onto the pre grid.
2. :class:`MarginMetrics` computes, for every element of the tumour surface, the signed
   distance to the ablation-zone boundary (``sitk.SignedMaurerDistanceMap``, inside the zone
   positive) and summarises it: minimal margin and the surface fractions with margin < 0,
   < 5 mm and >= 5 mm. 3-D on full masks, a weaker per-slice 2-D mode when either ROI was
   drawn on a single slice.
3. :func:`margin_table`, :func:`plot_patient_margins`, :func:`plot_cohort_margins` and
   :func:`margin_model_data` turn the per-patient results into the cohort table, figures and
   the extra model features.

Convention (SimpleITK's): the transform maps points of the pre (fixed) physical space to
points of the post (moving) physical space, so ``Resample(post, pre, tx)`` puts post on the
pre grid. Only the ``*_files`` functions touch files.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:  # pandas is imported where used: per-patient jobs do not need it
    import pandas as pd

from recur.errors import RecurError
from recur.io import atomic_path, read_image, read_transform, write_text_atomic
from recur.preprocess.register import PhaseRegistration, RegistrationSettings, settings_from_args
from recur.preprocess.register import normalised_cross_correlation as ncc

#: Margin thresholds (mm) of the summary: < 0 (tumour outside the zone), < 5, >= 5.
SAFE_MARGIN_MM = 5.0
#: Columns of ``results/margin/margin.csv``.
TABLE_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "min_margin_mm",
    "pct_lt0",
    "pct_lt5",
    "pct_ge5",
    "mode",
)
#: Largest isotropic working grid of the 3-D metrics (voxels); coarser spacing beyond.
MAX_ISO_VOXELS = 16_000_000
#: Margin columns usable as model features.
FEATURES: tuple[str, ...] = ("min_margin_mm", "pct_lt0", "pct_lt5", "pct_ge5")
MODES: tuple[str, ...] = ("auto", "3d", "2d")
INTERPOLATIONS: tuple[str, ...] = ("sdm", "nearest", "linear")
#: Traffic-light colours of the figures (red < 0, amber < 5, green >= 5 mm).
COLOURS: dict[str, str] = {"lt0": "#d62728", "lt5": "#ff9f1c", "ge5": "#2ca02c"}
#: Default liver region of the rigid stage: the tumour's bounding box grown by this (mm).
RIGID_REGION_MM: float | None = 60.0


# --------------------------------------------------------------------------- registration
def default_rigid(**overrides: object) -> RegistrationSettings:
    """Rigid-stage settings of the cross-time registration (a ``RegistrationSettings``).

    The same settings object and machinery as the phase-to-DP registration
    (:class:`recur.preprocess.register.PhaseRegistration`); only the defaults differ: heavier
    pyramid smoothing (the post image differs from the pre image around the lesion by design), a
    larger voxel sample, and the metric restricted to the liver region around the tumour
    (``mask_margin_mm``: the tumour's bounding box grown by that many mm per side).
    """
    values: dict[str, object] = {
        "smoothing_sigmas_mm": (4.0, 2.0, 0.0),
        "sampling_fraction": 0.05,
        "mask_margin_mm": RIGID_REGION_MM,
    }
    values.update(overrides)
    return RegistrationSettings(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CrossTimeSettings:
    """Settings of the post-to-pre registration (the ``margin:`` config section).

    ``rigid``: the rigid stage, a :class:`recur.preprocess.register.RegistrationSettings` run by
    :class:`recur.preprocess.register.PhaseRegistration` with the pre DP as fixed and the post DP as
    moving image; its ``mask_margin_mm`` restricts the metric to the tumour's bounding box
    grown by that distance (``None``: whole image). ``deformable``: add a B-spline stage
    (control points every ``bspline_spacing_mm``, each displaced at most
    ``max_displacement_mm``) supported on the region within ``region_mm`` of the tumour; its
    metric (same MI / sampling settings) leaves out the tumour and ablation zone grown by
    ``exclude_mm``.
    """

    rigid: RegistrationSettings = field(default_factory=default_rigid)
    deformable: bool = False
    region_mm: float = 30.0
    bspline_spacing_mm: float = 25.0
    bspline_iterations: int = 50
    max_displacement_mm: float = 10.0
    exclude_mm: float = 3.0
    zone_interpolation: str = "sdm"

    def __post_init__(self) -> None:
        if self.rigid.transform != "rigid":
            raise RecurError(
                f"margin: the cross-time registration is rigid, not {self.rigid.transform!r}"
            )
        if self.zone_interpolation not in INTERPOLATIONS:
            raise RecurError(
                f"margin.zone_interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"not {self.zone_interpolation!r}"
            )
        if self.region_mm <= 0 or self.bspline_spacing_mm <= 0:
            raise RecurError("margin.region_mm and margin.bspline_spacing_mm must be > 0")


@dataclass
class CrossTimeResult:
    """The post-to-pre transform, its QC values and the post DP resampled onto the pre grid."""

    transform: sitk.Transform
    qc: dict[str, float | int | str] = field(default_factory=dict)
    post_on_pre: sitk.Image | None = None


def _binary(mask: sitk.Image) -> sitk.Image:
    """``mask > 0`` as uint8 with the same geometry."""
    return sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)


def region_mask(tumour: sitk.Image, distance_mm: float) -> sitk.Image:
    """uint8 mask of the voxels within ``distance_mm`` (physical, 3-D) of the tumour.

    The distance map is computed on the tumour's bounding box grown by the distance only
    (exact: every voxel outside that box is farther away), then pasted into the full grid.
    """
    t = _binary(tumour)
    out = sitk.Image(t.GetSize(), sitk.sitkUInt8)
    out.CopyInformation(t)
    arr = sitk.GetArrayViewFromImage(t) > 0
    if not arr.any():
        return out
    pad = [math.ceil(float(distance_mm) / sp) + 1 for sp in t.GetSpacing()[::-1]]
    box = _bbox(arr, pad)
    index = [b.start for b in box][::-1]  # numpy z,y,x -> sitk x,y,z
    size = [b.stop - b.start for b in box][::-1]
    sdm = sitk.SignedMaurerDistanceMap(
        sitk.RegionOfInterest(t, size, index),
        insideIsPositive=False,
        squaredDistance=False,
        useImageSpacing=True,
    )
    near = sitk.Cast(sdm <= float(distance_mm), sitk.sitkUInt8)
    return sitk.Paste(out, near, near.GetSize(), [0] * near.GetDimension(), index)


def _bbox_image(mask: sitk.Image, image: sitk.Image) -> sitk.Image:
    """``image`` cropped to the bounding box of ``mask`` (same grid; at least 2 voxels wide)."""
    box = _bbox(sitk.GetArrayViewFromImage(mask) > 0, 0)[::-1]  # sitk x,y,z order
    index = [b.start for b in box]
    size = [min(max(b.stop - b.start, 2), image.GetSize()[i] - index[i]) for i, b in enumerate(box)]
    return sitk.RegionOfInterest(image, size, index)


class CrossTimeRegistration:
    """Register the post-ablation DP onto the pre-ablation DP (settings, then call).

    The rigid stage is :class:`recur.preprocess.register.PhaseRegistration` (pre DP fixed, post DP
    moving, the tumour as ROI); the optional B-spline stage is built on the same metric.

    >>> reg = CrossTimeRegistration(CrossTimeSettings())     # doctest: +SKIP
    >>> result = reg(pre_dp, post_dp, tumour)               # doctest: +SKIP
    """

    def __init__(self, settings: CrossTimeSettings | None = None):
        self.settings = settings or CrossTimeSettings()
        self.phase_registration = PhaseRegistration(self.settings.rigid)

    def bspline(
        self,
        fixed: sitk.Image,
        moving: sitk.Image,
        rigid: sitk.Transform,
        region: sitk.Image,
        metric_mask: sitk.Image | None = None,
    ) -> tuple[sitk.BSplineTransform, int]:
        """Deformable stage on top of ``rigid``, supported on the bounding box of ``region``.

        The metric (the rigid stage's: Mattes MI on a seeded voxel sample) is evaluated
        inside ``metric_mask`` (default ``region``); control-point displacements are bounded
        by ``max_displacement_mm``.
        """
        s = self.settings
        domain = _bbox_image(region, fixed)
        extent = [sz * sp for sz, sp in zip(domain.GetSize(), domain.GetSpacing(), strict=True)]
        mesh = [max(1, round(e / s.bspline_spacing_mm)) for e in extent]
        bs = sitk.BSplineTransformInitializer(domain, mesh, 3)
        reg = self.phase_registration.metric_method(
            fixed, metric_mask if metric_mask is not None else region
        )
        # smoothed gradient images, not the rigid stage's central differences at the sampled
        # points: with the many B-spline parameters the latter made the stage far less stable
        # on the synthetic cohort (bench/bench_margin.py)
        reg.MetricUseFixedImageGradientFilterOn()
        reg.MetricUseMovingImageGradientFilterOn()
        reg.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=s.bspline_iterations,
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=4 * s.bspline_iterations,
            costFunctionConvergenceFactor=1e7,
            lowerBound=-s.max_displacement_mm,
            upperBound=s.max_displacement_mm,
        )
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetMovingInitialTransform(rigid)
        reg.SetInitialTransform(bs, inPlace=True)
        count = [0]
        reg.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))
        reg.Execute(fixed, moving)
        return bs, count[0]

    def __call__(
        self,
        pre_dp: sitk.Image,
        post_dp: sitk.Image,
        tumour: sitk.Image,
        zone: sitk.Image | None = None,
    ) -> CrossTimeResult:
        """Register ``post_dp`` onto ``pre_dp``; ``tumour`` (pre grid) defines the regions.

        ``zone`` (post grid, optional): with the deformable stage, the tumour and the rigidly
        carried ablation zone (grown by ``exclude_mm``) are left out of its metric, so the
        B-spline is driven by the surrounding liver and vessels, not by the tumour turning
        into the ablation zone (which would bend the zone onto the tumour). If the B-spline
        stage fails, the rigid transform is kept and ``bspline_failed`` is set in the QC.
        """
        s = self.settings
        t0 = time.perf_counter()
        fixed = sitk.Cast(pre_dp, sitk.sitkFloat32)
        moving = sitk.Cast(post_dp, sitk.sitkFloat32)
        tumour = _binary(tumour)
        if not (sitk.GetArrayViewFromImage(tumour) > 0).any():
            raise ValueError("the pre-ablation tumour mask is empty")
        res = self.phase_registration(fixed, moving, phase="post", roi_mask=tumour)
        rigid = sitk.Euler3DTransform(res.transform)
        tx: sitk.Transform = rigid
        qc: dict[str, float | int | str] = {"deformable": int(s.deformable)}
        # the phase registration's QC of the rigid stage (MI, NCC, angles, translation, ...)
        qc.update(
            {
                f"rigid_{k}" if k in ("iterations", "seconds") else k: v
                for k, v in res.qc.items()
                if k != "phase"
            }
        )
        region = region_mask(tumour, s.region_mm)
        after = res.registered
        if s.deformable:
            lesion = tumour
            if zone is not None:
                zr = sitk.Resample(_binary(zone), tumour, rigid, sitk.sitkNearestNeighbor, 0)
                lesion = sitk.Or(tumour, sitk.Cast(zr, sitk.sitkUInt8))
            keep = sitk.And(region, sitk.Not(region_mask(lesion, s.exclude_mm)))
            try:
                bs, bs_iters = self.bspline(fixed, moving, rigid, region, keep)
                tx = sitk.CompositeTransform([rigid, bs])
                after = sitk.Resample(moving, fixed, tx, sitk.sitkLinear, 0.0)
                qc["bspline_iterations"] = bs_iters
                qc["bspline_failed"] = ""
            except RuntimeError as exc:
                last = str(exc).strip().splitlines()[-1] if str(exc).strip() else "failed"
                qc["bspline_failed"] = last[:200]
        seconds = time.perf_counter() - t0
        # correlation of pre vs post around the tumour, before and after the final transform
        where = sitk.GetArrayViewFromImage(region) > 0
        f_arr = sitk.GetArrayViewFromImage(fixed)
        before = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, 0.0)
        qc.update(
            ncc_region_before=ncc(f_arr, sitk.GetArrayViewFromImage(before), where),
            ncc_region_after=ncc(f_arr, sitk.GetArrayViewFromImage(after), where),
            seconds=round(seconds, 3),
        )
        return CrossTimeResult(transform=tx, qc=qc, post_on_pre=after)


def roi_slices(mask: sitk.Image) -> np.ndarray:
    """Indices (array axis 0, i.e. image z) of the slices holding ROI voxels."""
    return np.flatnonzero((sitk.GetArrayViewFromImage(mask) > 0).any(axis=(1, 2)))


def distance_image(mask: sitk.Image) -> sitk.Image:
    """float32 image of :func:`signed_distance` of ``mask`` (mm, inside positive)."""
    arr = sitk.GetArrayViewFromImage(mask) > 0
    out = sitk.GetImageFromArray(signed_distance(arr, mask.GetSpacing()[::-1]).astype(np.float32))
    out.CopyInformation(mask)
    return out


def shape_resample(
    mask: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    smooth_voxels: float = 0.0,
) -> sitk.Image:
    """Shape-based resampling of a binary mask onto ``reference``'s grid (uint8 {0, 1}).

    The mask's signed distance map (:func:`distance_image`) is optionally smoothed with a
    Gaussian of ``smooth_voxels`` voxels of the mask's own grid per axis (removes the
    voxel staircase before it is resampled onto a finer grid), resampled with linear
    interpolation (under ``transform``: reference -> mask space) and thresholded at 0: the
    boundary is interpolated between slices instead of copied to the nearest voxel.
    """
    far = -1.0e4
    sdm = distance_image(mask)
    if smooth_voxels > 0:
        sdm = sitk.SmoothingRecursiveGaussian(sdm, [smooth_voxels * v for v in mask.GetSpacing()])
    out = sitk.Resample(
        sdm,
        reference,
        transform or sitk.Transform(mask.GetDimension(), sitk.sitkIdentity),
        sitk.sitkLinear,
        far,
        sitk.sitkFloat32,
    )
    return sitk.Cast(out > 0, sitk.sitkUInt8)


def iso_reference(
    masks: Sequence[sitk.Image], spacing_mm: float, pad_mm: float = 3.0
) -> sitk.Image:
    """An isotropic grid (spacing ``spacing_mm``) covering the ROIs of ``masks`` + ``pad_mm``.

    2-D or 3-D. The masks share one grid; the new grid keeps its orientation and covers the
    bounding box of all their ROI voxels (physical extent of the voxels) grown by ``pad_mm``
    per side.
    """
    ref = masks[0]
    union = np.zeros(sitk.GetArrayViewFromImage(ref).shape, dtype=bool)
    for m in masks:
        union |= sitk.GetArrayViewFromImage(m) > 0
    idx = np.argwhere(union)
    lo_zyx, hi_zyx = idx.min(axis=0), idx.max(axis=0)
    sp = np.array(ref.GetSpacing())
    lo = lo_zyx[::-1] - 0.5 - pad_mm / sp  # continuous index (x, y, z) of the box corners
    hi = hi_zyx[::-1] + 0.5 + pad_mm / sp
    size = [max(math.ceil((b - a) * s / spacing_mm), 1) for a, b, s in zip(lo, hi, sp, strict=True)]
    origin_index = lo + 0.5 * spacing_mm / sp  # first new voxel centre
    out = sitk.Image(size, sitk.sitkUInt8)
    out.SetSpacing([spacing_mm] * ref.GetDimension())
    out.SetDirection(ref.GetDirection())
    out.SetOrigin(ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in origin_index]))
    return out


def zone_on_pre(
    zone: sitk.Image,
    tumour: sitk.Image,
    transform: sitk.Transform,
    interpolation: str = "sdm",
) -> sitk.Image:
    """The post ablation-zone mask resampled onto the pre (tumour) grid as uint8 {0, 1}.

    ``sdm`` (shape-based): the zone's signed distance map (:func:`signed_distance`) resampled
    with linear interpolation, thresholded at 0; ``nearest``: nearest-neighbour;
    ``linear``: linear interpolation of the binary mask, thresholded at 0.5. A zone drawn on
    a single slice (2-D ROI) is first extruded through its volume, resampled, and kept only
    on one pre slice: the tumour's slice if the tumour is single-slice too, else the pre
    slice nearest to the transformed centre of the zone's slice (through-plane motion is
    ignored; see ``mode=2d``).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}")
    zb = _binary(zone)
    zslices = roi_slices(zb)
    if zslices.size == 0:
        raise ValueError("the ablation-zone mask is empty")
    single = zslices.size == 1
    if single:
        arr = sitk.GetArrayFromImage(zb)
        arr[:] = arr[zslices[0]][None]
        ext = sitk.GetImageFromArray(arr)
        ext.CopyInformation(zb)
        zb = ext
    if interpolation == "sdm":
        out = shape_resample(zb, tumour, transform)
    elif interpolation == "nearest":
        out = sitk.Resample(zb, tumour, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    else:
        f = sitk.Resample(sitk.Cast(zb, sitk.sitkFloat32), tumour, transform, sitk.sitkLinear, 0.0)
        out = sitk.Cast(f >= 0.5, sitk.sitkUInt8)
    if single:
        tslices = roi_slices(tumour)
        if tslices.size == 1:
            keep = int(tslices[0])
        else:
            # centre of the zone slice in post space -> pre space (inverse transform)
            nz = np.argwhere(sitk.GetArrayFromImage(zone)[zslices[0]] > 0)
            cy, cx = nz.mean(axis=0)
            p_post = zone.TransformContinuousIndexToPhysicalPoint(
                (float(cx), float(cy), float(zslices[0]))
            )
            try:
                p_pre = transform.GetInverse().TransformPoint(p_post)
            except RuntimeError:
                p_pre = p_post
            keep = round(tumour.TransformPhysicalPointToContinuousIndex(p_pre)[2])
            keep = min(max(keep, 0), tumour.GetSize()[2] - 1)
        arr = sitk.GetArrayFromImage(out)
        sel = np.zeros(arr.shape[0], dtype=bool)
        sel[keep] = True
        arr[~sel] = 0
        res = sitk.GetImageFromArray(arr)
        res.CopyInformation(out)
        out = res
    return out


# --------------------------------------------------------------------------- margin metrics
def surface_faces(
    tumour: np.ndarray, field_mm: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``field_mm`` on the tumour surface faces and the faces' areas.

    The surface of the voxelised tumour is the set of faces shared by a tumour voxel and a
    non-tumour voxel (face neighbours; beyond the array border counts as non-tumour). The
    value at a face centre is the mean of ``field_mm`` at the two voxel centres on either side
    (linear interpolation); the weight is the face area in mm² (3-D) or edge length in mm
    (2-D). ``spacing`` is per array axis (numpy order).
    """
    t = np.asarray(tumour) > 0
    nd = t.ndim
    if len(spacing) != nd or field_mm.shape != t.shape:
        raise ValueError("tumour, field and spacing disagree in shape")
    tp = np.pad(t, 1, constant_values=False)
    fp = np.pad(np.asarray(field_mm, dtype=np.float64), 1, mode="edge")
    inner = tuple(slice(1, -1) for _ in range(nd))
    vals, wts = [], []
    for ax in range(nd):
        face = float(np.prod([spacing[i] for i in range(nd) if i != ax]))
        for step in (-1, 1):
            nb_t = np.roll(tp, step, axis=ax)[inner]
            exposed = t & ~nb_t
            nb_f = np.roll(fp, step, axis=ax)[inner]
            vals.append(0.5 * (field_mm[exposed] + nb_f[exposed]))
            wts.append(np.full(int(exposed.sum()), face))
    return np.concatenate(vals), np.concatenate(wts)


def _maurer(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``sitk.SignedMaurerDistanceMap`` of a binary array (inside positive, mm)."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing([float(s) for s in spacing[::-1]])
    sdm = sitk.SignedMaurerDistanceMap(
        img, insideIsPositive=True, squaredDistance=False, useImageSpacing=True
    )
    return sitk.GetArrayFromImage(sdm).astype(np.float64)


def _face_neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels with at least one face neighbour in ``mask`` (array border: no neighbour)."""
    out = np.zeros(mask.shape, dtype=bool)
    for ax in range(mask.ndim):
        n = mask.shape[ax]
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[ax], hi[ax] = slice(0, n - 1), slice(1, n)
        out[tuple(lo)] |= mask[tuple(hi)]
        out[tuple(hi)] |= mask[tuple(lo)]
    return out


def signed_distance(zone: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed distance (mm) of every voxel to the zone boundary, positive inside the zone.

    Half-voxel-corrected: Maurer's map (``sitk.SignedMaurerDistanceMap``) measures the
    distance to the centres of the zone's own border voxels, i.e. to a surface half a voxel
    *inside* the true boundary; the same map of the layer of background voxels touching the
    zone measures to a surface half a voxel *outside*. Their mean puts the zero level
    half-way, on the faces between zone and background voxels. The mask is padded by 2 voxels
    so a zone touching the array border keeps a closed boundary.
    """
    z = np.pad(np.asarray(zone) > 0, 2)
    d_in = _maurer(z, spacing)  # 0 on the zone's border voxels, > 0 inside
    outer = _face_neighbours(z) & ~z
    d_out = np.abs(_maurer(outer, spacing))  # distance to the outer layer (thin: all contour)
    sdm = 0.5 * (d_in + np.where(z, d_out, -d_out))
    return sdm[tuple(slice(2, -2) for _ in range(z.ndim))]


@dataclass
class SurfaceMargins:
    """Per-surface-element margins of one patient and their summary."""

    margins_mm: np.ndarray
    weights: np.ndarray
    mode: str
    slices: tuple[int, ...] = ()

    def summary(self) -> dict[str, float | str | int]:
        """min margin (mm) and weighted percentages of surface with margin <0, <5, >=5 mm.

        ``pct_lt5`` includes ``pct_lt0``; ``pct_lt5 + pct_ge5 = 100``.
        """
        m, w = self.margins_mm, self.weights
        total = float(w.sum())
        lt0 = 100.0 * float(w[m < 0].sum()) / total
        lt5 = 100.0 * float(w[m < SAFE_MARGIN_MM].sum()) / total
        return {
            "min_margin_mm": float(m.min()),
            "median_margin_mm": float(np.median(m)),
            "pct_lt0": lt0,
            "pct_lt5": lt5,
            "pct_ge5": 100.0 - lt5,
            "mode": self.mode,
            "n_surface": int(m.size),
        }


def _bbox(mask: np.ndarray, pad: int | Sequence[int]) -> tuple[slice, ...]:
    """Slices (numpy axis order) of the bounding box of ``mask`` grown by ``pad`` voxels
    (one number, or one per axis), clipped to the array."""
    pads = [int(pad)] * mask.ndim if isinstance(pad, int) else [int(v) for v in pad]
    sl = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo, hi = int(idx[0]) - pads[ax], int(idx[-1]) + pads[ax] + 1
        sl.append(slice(max(lo, 0), min(hi, mask.shape[ax])))
    return tuple(sl)


def surface_margins_3d(
    tumour: np.ndarray, zone: np.ndarray, spacing: Sequence[float]
) -> SurfaceMargins:
    """3-D margins on the tumour surface faces (arrays and spacing in numpy axis order)."""
    t = np.asarray(tumour) > 0
    z = np.asarray(zone) > 0
    if t.shape != z.shape:
        raise ValueError(f"tumour {t.shape} and zone {z.shape} masks differ in shape")
    if not t.any():
        raise ValueError("the tumour mask is empty")
    if not z.any():
        raise ValueError("the ablation-zone mask is empty")
    box = _bbox(t | z, 1)
    t, z = t[box], z[box]
    m, w = surface_faces(t, signed_distance(z, spacing), spacing)
    return SurfaceMargins(m, w, "3d")


def surface_margins_2d(
    tumour: np.ndarray, zone: np.ndarray, spacing: Sequence[float]
) -> SurfaceMargins:
    """In-plane margins on every slice (axis 0) holding both tumour and zone.

    Each slice is treated as a 2-D image with the in-plane spacing; through-plane distances
    are ignored. Surface elements are the in-plane contour edges, weighted by length (mm).
    """
    t = np.asarray(tumour) > 0
    z = np.asarray(zone) > 0
    if t.shape != z.shape:
        raise ValueError(f"tumour {t.shape} and zone {z.shape} masks differ in shape")
    both = np.flatnonzero(t.any(axis=(1, 2)) & z.any(axis=(1, 2)))
    if both.size == 0:
        raise ValueError("no slice holds both the tumour and the ablation zone")
    ms, ws = [], []
    for k in both:
        box = _bbox(t[k] | z[k], 1)
        tk, zk = t[k][box], z[k][box]
        m, w = surface_faces(tk, signed_distance(zk, spacing[1:]), spacing[1:])
        ms.append(m)
        ws.append(w)
    return SurfaceMargins(np.concatenate(ms), np.concatenate(ws), "2d", tuple(int(k) for k in both))


class MarginMetrics:
    """Margins of the tumour surface to the ablation-zone boundary (settings, then call).

    ``mode``: ``auto`` uses 3-D unless either mask holds ROI on a single slice, then 2-D;
    ``3d`` / ``2d`` force one. ``iso_spacing_mm``: in 3-D, both masks are shape-resampled
    (:func:`shape_resample`, SDM smoothed by ``smooth_voxels`` voxels) onto an isotropic grid
    of spacing ``min(iso_spacing_mm, smallest voxel size)`` around the ROIs, which
    interpolates the boundaries between thick slices and removes the voxel staircase;
    ``None`` works on the native grid with no smoothing.
    """

    def __init__(
        self, mode: str = "auto", iso_spacing_mm: float | None = 0.5, smooth_voxels: float = 0.5
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if iso_spacing_mm is not None and iso_spacing_mm <= 0:
            raise ValueError("iso_spacing_mm must be > 0 or None")
        if smooth_voxels < 0:
            raise ValueError("smooth_voxels must be >= 0")
        self.mode = mode
        self.iso_spacing_mm = iso_spacing_mm
        self.smooth_voxels = smooth_voxels

    def resolve_mode(self, tumour: np.ndarray, zone: np.ndarray) -> str:
        """The mode used for these masks (numpy arrays, axis 0 = slices)."""
        if self.mode != "auto":
            return self.mode
        n_t = int((np.asarray(tumour) > 0).any(axis=(1, 2)).sum())
        n_z = int((np.asarray(zone) > 0).any(axis=(1, 2)).sum())
        return "2d" if min(n_t, n_z) <= 1 else "3d"

    def _iso_2d(self, t: np.ndarray, z: np.ndarray, spacing_xyz: Sequence[float]) -> SurfaceMargins:
        """2-D mode on an isotropic in-plane grid per slice (as the 3-D iso path, in-plane)."""
        sx, sy = float(spacing_xyz[0]), float(spacing_xyz[1])
        h = min(self.iso_spacing_mm or sx, sx, sy)
        both = np.flatnonzero((t > 0).any(axis=(1, 2)) & (z > 0).any(axis=(1, 2)))
        if both.size == 0:
            raise ValueError("no slice holds both the tumour and the ablation zone")
        ms, ws = [], []
        for k in both:
            imgs = []
            for a in (t[k], z[k]):
                im = sitk.GetImageFromArray((a > 0).astype(np.uint8))
                im.SetSpacing((sx, sy))
                imgs.append(im)
            ref = iso_reference(imgs, h, pad_mm=2.0 * max(sx, sy))
            ti = sitk.GetArrayFromImage(shape_resample(imgs[0], ref, None, self.smooth_voxels))
            zi = sitk.GetArrayFromImage(shape_resample(imgs[1], ref, None, self.smooth_voxels))
            if not (ti > 0).any() or not (zi > 0).any():
                raise ValueError(f"an ROI vanishes on the isotropic grid of slice {k}")
            m, w = surface_faces(ti, signed_distance(zi, (h, h)), (h, h))
            ms.append(m)
            ws.append(w)
        return SurfaceMargins(
            np.concatenate(ms), np.concatenate(ws), "2d", tuple(int(k) for k in both)
        )

    def __call__(
        self, tumour: sitk.Image, zone: sitk.Image, transform: sitk.Transform | None = None
    ) -> SurfaceMargins:
        """Margins of ``tumour`` (pre grid) to ``zone``.

        Without ``transform`` the zone lies on the tumour's grid; with it, the zone lies on
        its own (post) grid and ``transform`` maps pre points to post points: the zone is then
        carried straight onto the working grid (one interpolation, not two).
        """
        tumour = _binary(tumour)
        zone = _binary(zone)
        if transform is None and (
            tumour.GetSize() != zone.GetSize()
            or not np.allclose(tumour.GetSpacing(), zone.GetSpacing(), rtol=1e-4)
        ):
            raise ValueError(
                f"tumour (size {tumour.GetSize()}) and zone (size {zone.GetSize()}) masks are "
                "not on the same grid"
            )
        t = sitk.GetArrayViewFromImage(tumour)
        if not (t > 0).any():
            raise ValueError("the tumour mask is empty")
        if not (sitk.GetArrayViewFromImage(zone) > 0).any():
            raise ValueError("the ablation-zone mask is empty")
        zone_pre = zone if transform is None else zone_on_pre(zone, tumour, transform, "sdm")
        z = sitk.GetArrayViewFromImage(zone_pre)
        mode = self.resolve_mode(t, z)
        if mode == "2d":
            if self.iso_spacing_mm is None:
                return surface_margins_2d(t, z, tumour.GetSpacing()[::-1])
            return self._iso_2d(t, z, tumour.GetSpacing())
        if not (z > 0).any():
            raise ValueError("the ablation zone lies outside the tumour's image")
        if self.iso_spacing_mm is None:
            return surface_margins_3d(t, z, tumour.GetSpacing()[::-1])
        h = min(self.iso_spacing_mm, *tumour.GetSpacing())
        pad = 2.0 * max(tumour.GetSpacing())
        ref = iso_reference([tumour, zone_pre], h, pad_mm=pad)
        n = float(np.prod(ref.GetSize()))
        if n > MAX_ISO_VOXELS:  # very large ROIs: coarsen the working grid to bound memory
            h *= (n / MAX_ISO_VOXELS) ** (1.0 / 3.0)
            ref = iso_reference([tumour, zone_pre], h, pad_mm=pad)
        ti = shape_resample(tumour, ref, None, self.smooth_voxels)
        zi = shape_resample(zone, ref, transform, self.smooth_voxels)
        ta = sitk.GetArrayViewFromImage(ti)
        if not (ta > 0).any():
            raise ValueError("the tumour vanishes on the isotropic grid (too small)")
        za = sitk.GetArrayViewFromImage(zi)
        if not (za > 0).any():
            raise ValueError("the ablation zone vanishes on the isotropic grid (too small)")
        return surface_margins_3d(ta, za, (h, h, h))


# --------------------------------------------------------------------------- cohort use
def margin_table(records: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """The cohort table (:data:`TABLE_COLUMNS`) from per-patient metric records, sorted."""
    import pandas as pd

    rows = list(records)
    df = pd.DataFrame(rows)
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if rows and missing:
        raise RecurError(f"margin metrics lack column(s) {missing}")
    if not rows:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    dup = df["patient_id"][df["patient_id"].duplicated()]
    if len(dup):
        raise RecurError(f"patient {dup.iloc[0]} has more than one margin record")
    return df[list(TABLE_COLUMNS)].sort_values("patient_id", kind="stable").reset_index(drop=True)


def margin_model_data(
    base: pd.DataFrame, margins: pd.DataFrame, features: Sequence[str]
) -> pd.DataFrame:
    """``base`` (one row per patient) with the margin ``features`` joined on patient_id.

    Patients without a margin row get NaN (the models' imputer fills them).
    """
    bad = [f for f in features if f not in FEATURES]
    if bad:
        raise RecurError(f"unknown margin feature(s) {bad}; choose from {list(FEATURES)}")
    cols = ["patient_id", *features]
    out = base.drop(columns=[f for f in features if f in base.columns]).merge(
        margins[cols], on="patient_id", how="left"
    )
    return out


#: Names of the margin-extended models.
MARGIN_MODELS: tuple[str, ...] = ("Clinical_Margin", "DL_Clinical_Margin")


def model_data(
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    margins: pd.DataFrame,
    features: Sequence[str],
    signature: pd.Series | None = None,
    signature_name: str = "signature",
) -> pd.DataFrame:
    """One row per patient of ``split``: ids, ``er``, clinical predictors, margin features
    (and the DL ``signature``), ready for :func:`recur.models.tabular.fit_and_score`."""
    missing = sorted(set(split["patient_id"]) - set(clinical["patient_id"]))
    if missing:
        raise RecurError(
            f"clinical.csv: {len(missing)} patient(s) of split.csv are missing "
            f"(first: {missing[0]})"
        )
    base = split[["patient_id", "cohort", "split"]].merge(
        clinical.drop(columns=["cohort"], errors="ignore"), on="patient_id", how="left"
    )
    data = margin_model_data(base, margins, features)
    if signature is not None:
        data[signature_name] = data["patient_id"].map(signature).astype(float)
    return data.reset_index(drop=True)


def fit_margin_model(
    model: str,
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    margins: pd.DataFrame,
    features: Sequence[str],
    settings: object,
    signature: pd.Series | None = None,
    signature_name: str = "signature",
    n_jobs: int = 1,
) -> tuple[object, pd.DataFrame, list[str]]:
    """Fit ``Clinical_Margin`` or ``DL_Clinical_Margin`` with :mod:`recur.models.tabular`.

    The predictors are the Clinical model's five (``recur.cohort.contract.CLINICAL_FEATURES``),
    then (DL_Clinical_Margin only) the DL signature, then the margin ``features``. ``settings``
    is a :class:`recur.models.tabular.TabularSettings`. Returns (pipeline, predictions, features).
    """
    from recur.models import tabular

    if model not in MARGIN_MODELS:
        raise RecurError(f"unknown margin model {model!r}; expected one of {MARGIN_MODELS}")
    if model == "DL_Clinical_Margin" and signature is None:
        raise RecurError("DL_Clinical_Margin needs the DL signature")
    sig = signature if model == "DL_Clinical_Margin" else None
    data = model_data(clinical, split, margins, features, sig, signature_name)
    feats = [*tabular.CLINICAL_FEATURES, *([signature_name] if sig is not None else []), *features]
    fitted, pred = tabular.fit_and_score(data, feats, settings, n_jobs)
    return fitted, pred, feats


def _traffic_colour(v: float) -> str:
    if v < 0:
        return COLOURS["lt0"]
    return COLOURS["lt5"] if v < SAFE_MARGIN_MM else COLOURS["ge5"]


def plot_patient_margins(sm: SurfaceMargins, patient: str, out: str | Path) -> None:
    """Histogram of the tumour-surface margins (weighted %), traffic-light coloured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = sm.summary()
    m, w = sm.margins_mm, sm.weights
    lo = math.floor(min(m.min(), -1.0))
    hi = math.ceil(max(m.max(), SAFE_MARGIN_MM + 1.0))
    edges = np.arange(lo, hi + 1.0, 1.0)
    h, _ = np.histogram(m, bins=edges, weights=100.0 * w / w.sum())
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.bar(
        edges[:-1],
        h,
        width=1.0,
        align="edge",
        color=[_traffic_colour(e + 0.5) for e in edges[:-1]],
        edgecolor="white",
        linewidth=0.5,
    )
    ax.axvline(s["min_margin_mm"], color="k", ls="--", lw=1)
    ax.set_xlabel("margin at tumour surface (mm; < 0 = tumour outside the ablation zone)")
    ax.set_ylabel("% of tumour surface")
    ax.set_title(
        f"{patient} ({s['mode']}): min {s['min_margin_mm']:.1f} mm | <0 {s['pct_lt0']:.0f}% "
        f"| <5 {s['pct_lt5']:.0f}% | >=5 {s['pct_ge5']:.0f}%",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_cohort_margins(table: pd.DataFrame, out: str | Path) -> None:
    """Cohort figure: histogram of minimal margins and per-patient surface fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
    mm = table["min_margin_mm"].to_numpy(dtype=float)
    if mm.size:
        lo = math.floor(min(mm.min(), -1.0))
        hi = math.ceil(max(mm.max(), SAFE_MARGIN_MM + 1.0))
        edges = np.arange(lo, hi + 1.0, 1.0)
        h, _ = np.histogram(mm, bins=edges)
        a1.bar(
            edges[:-1],
            h,
            width=1.0,
            align="edge",
            edgecolor="white",
            linewidth=0.5,
            color=[_traffic_colour(e + 0.5) for e in edges[:-1]],
        )
        t = table.sort_values("pct_ge5", kind="stable")
        x = np.arange(len(t))
        lt0 = t["pct_lt0"].to_numpy(float)
        mid = t["pct_lt5"].to_numpy(float) - lt0
        a2.bar(x, lt0, width=1.0, color=COLOURS["lt0"], label="< 0 mm")
        a2.bar(x, mid, width=1.0, bottom=lt0, color=COLOURS["lt5"], label="0-5 mm")
        a2.bar(
            x,
            t["pct_ge5"].to_numpy(float),
            width=1.0,
            bottom=lt0 + mid,
            color=COLOURS["ge5"],
            label=">= 5 mm",
        )
        a2.legend(fontsize=8, loc="lower right")
    a1.set_xlabel("minimal ablative margin (mm)")
    a1.set_ylabel("patients")
    a1.set_title(f"Minimal ablative margin (n = {mm.size})", fontsize=10)
    a2.set_xlabel("patients (sorted by % surface >= 5 mm)")
    a2.set_ylabel("% of tumour surface")
    a2.set_ylim(0, 100)
    a2.set_title("Tumour surface by margin", fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_registration_qc(
    pre_dp: sitk.Image,
    post_on_pre: sitk.Image,
    tumour: sitk.Image,
    zone: sitk.Image,
    title: str,
    out: str | Path,
) -> None:
    """QC overlay on the tumour's largest slice: pre DP and registered post DP, both with the
    tumour outline (yellow) and the transformed ablation-zone outline (cyan), zoomed on the
    ROIs (+ 40 mm) and drawn at 0.5 mm per pixel (Pillow; :mod:`recur.preprocess.qc_images`)."""
    from recur.preprocess import qc_images

    t = sitk.GetArrayViewFromImage(tumour) > 0
    z = sitk.GetArrayViewFromImage(zone) > 0
    k = int(np.argmax(t.sum(axis=(1, 2))))
    sx, sy = pre_dp.GetSpacing()[:2]
    ny, nx = t.shape[1:]
    r0, r1, c0, c1 = 0, ny, 0, nx
    if t[k].any() or z[k].any():  # zoom on the ROIs (+ 40 mm)
        rows, cols = np.nonzero(t[k] | z[k])
        r0 = max(int(rows.min() - 40 / sy), 0)
        r1 = min(int(rows.max() + 1 + 40 / sy), ny)
        c0 = max(int(cols.min() - 40 / sx), 0)
        c1 = min(int(cols.max() + 1 + 40 / sx), nx)
    rows, cols = _display_grid(r1 - r0, c1 - c0, sx, sy, mm_per_pixel=0.5)
    tumour_k = t[k, r0:r1, c0:c1][rows][:, cols]
    zone_k = z[k, r0:r1, c0:c1][rows][:, cols]
    panels = [
        qc_images.overlay(
            qc_images.window(sitk.GetArrayViewFromImage(img)[k, r0:r1, c0:c1][rows][:, cols]),
            [(tumour_k, qc_images.YELLOW), (zone_k, qc_images.CYAN)],
        )
        for img in (pre_dp, post_on_pre)
    ]
    image = qc_images.montage(
        [panels],
        title=f"{title} (yellow: tumour, cyan: ablation zone)",
        col_labels=[f"pre DP, slice {k}", f"post DP on pre grid, slice {k}"],
    )
    qc_images.save_png(image, out)


def _display_grid(
    h: int, w: int, sx: float, sy: float, mm_per_pixel: float
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices that show an (h, w) slice of pixel size (sx, sy) mm at
    ``mm_per_pixel`` (nearest neighbour, true aspect)."""
    n_rows = max(round(h * sy / mm_per_pixel), 1)
    n_cols = max(round(w * sx / mm_per_pixel), 1)
    rows = np.minimum(np.arange(n_rows) * mm_per_pixel / sy, h - 1).astype(int)
    cols = np.minimum(np.arange(n_cols) * mm_per_pixel / sx, w - 1).astype(int)
    return rows, cols


# --------------------------------------------------------------------------- file edges
def _read(path: str | Path, patient: str, what: str, root: str | Path | None = None) -> sitk.Image:
    p = Path(path)
    try:
        rel = p.relative_to(root) if root else p
    except ValueError:
        rel = p
    return read_image(p, who=f"patient {patient}", what=what, shown=str(rel))


def _check_same_grid(a: sitk.Image, b: sitk.Image, patient: str, what: str) -> None:
    same = (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3 * max(a.GetSpacing()))
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)
    )
    if not same:
        raise RecurError(f"patient {patient}: {what} is not on the grid of its DP series")


def register_files(
    pre_dp: str | Path,
    post_dp: str | Path,
    pre_mask: str | Path,
    post_mask: str | Path,
    out_tfm: str | Path,
    out_mask: str | Path,
    qc_png: str | Path | None = None,
    qc_json: str | Path | None = None,
    settings: CrossTimeSettings | None = None,
    patient: str = "?",
) -> dict[str, float | int | str]:
    """Register post DP onto pre DP, write the transform, the zone on the pre grid and QC."""
    settings = settings or CrossTimeSettings()
    pre = _read(pre_dp, patient, "pre DP")
    post = _read(post_dp, patient, "post DP")
    tumour = _binary(_read(pre_mask, patient, "pre tumour mask"))
    zone = _binary(_read(post_mask, patient, "post ablation-zone mask"))
    _check_same_grid(pre, tumour, patient, f"pre tumour mask {Path(pre_mask).name}")
    _check_same_grid(post, zone, patient, f"post ablation-zone mask {Path(post_mask).name}")
    if roi_slices(tumour).size == 0:
        raise RecurError(f"patient {patient}: pre tumour mask {Path(pre_mask).name} is empty")
    if roi_slices(zone).size == 0:
        raise RecurError(
            f"patient {patient}: post ablation-zone mask {Path(post_mask).name} is empty"
        )
    try:
        result = CrossTimeRegistration(settings)(pre, post, tumour, zone)
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else "failed"
        raise RecurError(f"patient {patient}: post-to-pre registration failed ({last})") from None
    zone_pre = zone_on_pre(zone, tumour, result.transform, settings.zone_interpolation)
    qc = {"patient_id": patient, **result.qc}
    qc["zone_voxels_on_pre"] = int((sitk.GetArrayViewFromImage(zone_pre) > 0).sum())
    if qc["zone_voxels_on_pre"] == 0:
        raise RecurError(
            f"patient {patient}: the ablation zone falls outside the pre image after "
            "registration (check the post DP series and mask)"
        )
    post_on_pre = result.post_on_pre
    # everything computed: write
    with atomic_path(out_tfm) as tmp:
        sitk.WriteTransform(result.transform, str(tmp))
    with atomic_path(out_mask) as tmp:
        sitk.WriteImage(zone_pre, str(tmp), useCompression=True)
    if qc_png:
        plot_registration_qc(pre, post_on_pre, tumour, zone_pre, patient, qc_png)
    if qc_json:
        write_text_atomic(qc_json, json.dumps(qc, indent=2, sort_keys=True) + "\n")
    return qc


def metrics_files(
    tumour: str | Path,
    zone: str | Path,
    out_json: str | Path,
    out_surface: str | Path | None = None,
    mode: str = "auto",
    iso_spacing_mm: float | None = 0.5,
    smooth_voxels: float = 0.5,
    transform: str | Path | None = None,
    patient: str = "?",
) -> dict[str, float | int | str]:
    """Margin metrics of one patient from mask files; write JSON (and the surface margins).

    Without ``transform`` both masks lie on the pre grid; with it (the ``.tfm`` written by
    :func:`register_files`) ``zone`` is the post ablation-zone mask on its own grid.
    """
    t = _binary(_read(tumour, patient, "tumour mask"))
    z = _binary(_read(zone, patient, "ablation-zone mask"))
    tx = None
    if transform is not None:
        tx = read_transform(transform, who=f"patient {patient}")
    try:
        sm = MarginMetrics(mode, iso_spacing_mm, smooth_voxels)(t, z, tx)
    except ValueError as exc:
        raise RecurError(f"patient {patient}: margin of {Path(zone).name}: {exc}") from None
    rec: dict[str, float | int | str] = {"patient_id": patient, **sm.summary()}
    rec["slices_2d"] = " ".join(str(k) for k in sm.slices)
    rec["iso_spacing_mm"] = iso_spacing_mm if sm.mode == "3d" else None
    rec["smooth_voxels"] = smooth_voxels
    if out_surface:
        with atomic_path(out_surface) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                margins_mm=sm.margins_mm.astype(np.float32),
                weights=sm.weights.astype(np.float32),
                mode=np.array(sm.mode),
            )
    write_text_atomic(out_json, json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return rec


def load_surface(path: str | Path) -> SurfaceMargins:
    """Read a surface-margin file written by :func:`metrics_files`."""
    with np.load(path, allow_pickle=False) as d:
        return SurfaceMargins(
            d["margins_mm"].astype(float), d["weights"].astype(float), str(d["mode"])
        )


def table_files(
    metrics: Sequence[str | Path], out: str | Path, figure: str | Path | None = None
) -> pd.DataFrame:
    """Gather per-patient metric JSONs into ``margin.csv`` (and the cohort figure)."""
    recs = []
    for p in metrics:
        try:
            recs.append(json.loads(Path(p).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise RecurError(f"{Path(p).name}: cannot read margin metrics ({exc})") from None
    table = margin_table(recs)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    if figure:
        plot_cohort_margins(table, figure)
    return table


def settings_from_config(section: Mapping[str, object]) -> CrossTimeSettings:
    """:class:`CrossTimeSettings` of a ``margin:`` config section (as the workflow passes it)."""
    rigid = settings_from_args(
        "rigid",
        section["shrink_factors"],
        section["smoothing_sigmas_mm"],
        histogram_bins=section["histogram_bins"],
        sampling_fraction=section["sampling_fraction"],
        min_samples=section["min_samples"],
        iterations=section["iterations"],
        learning_rate=section["learning_rate"],
        min_step=section["min_step"],
        seed=section["seed"],
        mask_margin_mm=section["rigid_region_mm"],
    )
    return CrossTimeSettings(
        rigid=rigid,
        deformable=bool(section["deformable"]),
        region_mm=float(section["region_mm"]),
        bspline_spacing_mm=float(section["bspline_spacing_mm"]),
        bspline_iterations=int(section["bspline_iterations"]),
        max_displacement_mm=float(section["max_displacement_mm"]),
        exclude_mm=float(section["exclude_mm"]),
        zone_interpolation=section["zone_interpolation"],
    )


def settings_dict(settings: CrossTimeSettings) -> dict:
    """The settings as a plain dict (for logs and manifests)."""
    return asdict(settings)
