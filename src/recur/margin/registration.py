"""Cross-time registration: the post-ablation DP registered onto the pre-ablation DP.

:class:`CrossTimeRegistration` registers the post-ablation delayed phase (DP) onto the
pre-ablation DP (rigid: :class:`recur.preprocess.register.PhaseRegistration`, the phase
registration's engine and settings object, on a liver region around the tumour; optionally a
B-spline refinement restricted to the region within ``region_mm`` of the tumour), with the
settings of :class:`CrossTimeSettings` (from the ``margin:`` config section:
:func:`settings_from_config`). :func:`recur.margin.masks.zone_on_pre` then carries the post
ablation-zone mask onto the pre grid. See ``docs/methods/margin.md``.

Convention (SimpleITK's): the transform maps points of the pre (fixed) physical space to
points of the post (moving) physical space, so ``Resample(post, pre, tx)`` puts post on the
pre grid.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import SimpleITK as sitk

from recur.errors import RecurError
from recur.margin.masks import INTERPOLATIONS, binary_mask, bounding_box, region_mask
from recur.preprocess.register import PhaseRegistration, RegistrationSettings, settings_from_args
from recur.preprocess.register import normalised_cross_correlation as ncc

#: Default liver region of the rigid stage: the tumour's bounding box grown by this (mm).
RIGID_REGION_MM: float | None = 60.0


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
