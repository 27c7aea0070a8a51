"""Cross-time registration: the post-ablation DP registered onto the pre-ablation DP.

:class:`CrossTimeRegistration` registers the post-ablation delayed phase (DP) onto the
pre-ablation DP (rigid: :class:`recur.preprocess.register.PhaseRegistration`, the phase
registration's engine and settings object, on a liver region around the tumour: the pre DP
cut to that region, the post DP to the region grown by the largest expected displacement;
optionally a B-spline refinement restricted to the region within ``region_mm`` of the
tumour), with the settings of :class:`recur.margin.settings.CrossTimeSettings` (config
section ``margin``). :func:`recur.margin.masks.zone_on_pre` then carries the post ablation-zone
mask onto the pre grid. See ``docs/methods/margin.md``.

Convention (SimpleITK's): the transform maps points of the pre (fixed) physical space to
points of the post (moving) physical space, so ``Resample(post, pre, tx)`` puts post on the
pre grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import SimpleITK as sitk

from recur.margin.masks import binary_mask, bounding_box, region_mask
from recur.margin.settings import CrossTimeSettings
from recur.preprocess.register import PhaseRegistration
from recur.preprocess.register import normalised_cross_correlation as ncc


@dataclass
class CrossTimeResult:
    """The post-to-pre transform, its QC values and the post DP resampled onto the pre grid."""

    transform: sitk.Transform
    qc: dict[str, float | int | str] = field(default_factory=dict)
    post_on_pre: sitk.Image | None = None


def _bbox_image(mask: sitk.Image, image: sitk.Image) -> sitk.Image:
    """``image`` cropped to the bounding box of ``mask`` (same grid; at least 2 voxels wide)."""
    box = bounding_box(sitk.GetArrayViewFromImage(mask) > 0, 0)[::-1]  # sitk x,y,z order
    index = [b.start for b in box]
    size = [min(max(b.stop - b.start, 2), image.GetSize()[i] - index[i]) for i, b in enumerate(box)]
    return sitk.RegionOfInterest(image, size, index)


class CrossTimeRegistration:
    """Register the post-ablation DP onto the pre-ablation DP (settings, then call).

    The rigid stage is :class:`recur.preprocess.register.PhaseRegistration` (pre DP fixed, post DP
    moving, the tumour as ROI); the optional B-spline stage is built on the same metric.

    >>> reg = CrossTimeRegistration(CrossTimeSettings.defaults())  # doctest: +SKIP
    >>> result = reg(pre_dp, post_dp, tumour)                     # doctest: +SKIP
    """

    def __init__(self, settings: CrossTimeSettings):
        self.settings = settings
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
        tumour = binary_mask(tumour)
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
                zr = sitk.Resample(binary_mask(zone), tumour, rigid, sitk.sitkNearestNeighbor, 0)
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
        # correlation of pre vs post around the tumour, before and after the final transform,
        # on the region's bounding box (the voxels outside it are not in the region)
        region_box = _bbox_image(region, region)
        f_box = _bbox_image(region, fixed)
        after_box = _bbox_image(region, after)
        where = sitk.GetArrayViewFromImage(region_box) > 0
        f_arr = sitk.GetArrayViewFromImage(f_box)
        before = sitk.Resample(moving, f_box, sitk.Transform(), sitk.sitkLinear, 0.0)
        qc.update(
            ncc_region_before=ncc(f_arr, sitk.GetArrayViewFromImage(before), where),
            ncc_region_after=ncc(f_arr, sitk.GetArrayViewFromImage(after_box), where),
            seconds=round(seconds, 3),
        )
        return CrossTimeResult(transform=tx, qc=qc, post_on_pre=after)
