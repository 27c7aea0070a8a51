"""The settings of the margin stage, read from the ``margin:`` config section.

The section is read in two parts, each by the commands that use it: :class:`CrossTimeSettings`
(the post-to-pre registration: ``margin-register``, ``recur predict``) and
:class:`MarginMetricSettings` (the margin geometry: ``margin-metrics``). The rules read the
rest themselves (``enabled``, ``models``, ``figure_patients``: which targets; ``features``:
the margin models' ``--features``; :data:`recur.settings.RULE_KEYS`). Kept apart from the image
code so that the workflow can read the keys while it builds the DAG without importing
SimpleITK; types, ranges, meanings and defaults live in ``schemas/config.schema.yaml`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from recur.errors import RecurError
from recur.preprocess.settings import RegistrationSettings, check_pyramid
from recur.settings import SectionSettings

#: Ways of carrying the zone mask onto the pre grid (:func:`recur.margin.masks.zone_on_pre`).
INTERPOLATIONS: tuple[str, ...] = ("sdm", "nearest", "linear")
#: Margin geometries (:class:`recur.margin.metrics.MarginMetrics`).
MODES: tuple[str, ...] = ("auto", "3d", "2d")


@dataclass(frozen=True)
class CrossTimeSettings(SectionSettings):
    """Settings of the post-to-pre registration (config section ``margin``, its registration
    keys; :class:`recur.margin.registration.CrossTimeRegistration`).

    The rigid stage (:attr:`rigid`) is a :class:`recur.preprocess.settings.RegistrationSettings`
    run by :class:`recur.preprocess.register.PhaseRegistration` with the pre DP as fixed and the
    post DP as moving image; ``rigid_region_mm`` restricts its metric to the tumour's bounding
    box grown by that distance (``None``: whole image), and the rigid stage then works on that
    region of the pre DP and on the post DP's region grown by ``rigid_motion_mm`` only
    (``None``: on the whole images, the metric restricted to the region).
    ``deformable``: add a B-spline stage
    (control points every ``bspline_spacing_mm``, each displaced at most
    ``max_displacement_mm``) supported on the region within ``region_mm`` of the tumour; its
    metric (same MI / sampling settings) leaves out the tumour and ablation zone grown by
    ``exclude_mm``.
    """

    SECTION = "margin"

    shrink_factors: tuple[int, ...]
    smoothing_sigmas_mm: tuple[float, ...]
    histogram_bins: int
    sampling_fraction: float
    min_samples: int
    iterations: int
    learning_rate: float
    min_step: float
    rigid_region_mm: float | None
    rigid_motion_mm: float | None
    deformable: bool
    region_mm: float
    bspline_spacing_mm: float
    bspline_iterations: int
    max_displacement_mm: float
    exclude_mm: float
    zone_interpolation: str
    seed: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "shrink_factors", tuple(int(f) for f in self.shrink_factors))
        object.__setattr__(self, "deformable", bool(self.deformable))
        check_pyramid(
            "margin", self.shrink_factors, self.smoothing_sigmas_mm, self.sampling_fraction
        )
        if self.zone_interpolation not in INTERPOLATIONS:
            raise RecurError(
                f"margin.zone_interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"not {self.zone_interpolation!r}"
            )
        if self.region_mm <= 0 or self.bspline_spacing_mm <= 0:
            raise RecurError("margin.region_mm and margin.bspline_spacing_mm must be > 0")

    @property
    def rigid(self) -> RegistrationSettings:
        """The rigid stage: the phase registration's settings object with these values (always
        a rigid transform; the metric's region and the registration's region is
        ``rigid_region_mm``, the moving image's extra margin ``rigid_motion_mm``)."""
        return RegistrationSettings(
            transform="rigid",
            shrink_factors=self.shrink_factors,
            smoothing_sigmas_mm=self.smoothing_sigmas_mm,
            histogram_bins=self.histogram_bins,
            sampling_fraction=self.sampling_fraction,
            min_samples=self.min_samples,
            iterations=self.iterations,
            learning_rate=self.learning_rate,
            min_step=self.min_step,
            seed=self.seed,
            mask_margin_mm=self.rigid_region_mm,
            region_margin_mm=self.rigid_region_mm if self.rigid_motion_mm is not None else None,
            region_motion_mm=self.rigid_motion_mm or 0.0,
        )


@dataclass(frozen=True)
class MarginMetricSettings(SectionSettings):
    """The margin geometry (config section ``margin``, its metric keys;
    :class:`recur.margin.metrics.MarginMetrics`).

    ``mode``: ``auto`` uses 3-D unless either mask holds ROI on a single slice, then 2-D;
    ``3d`` / ``2d`` force one. ``iso_spacing_mm``: both masks are shape-resampled (SDM smoothed
    by ``smooth_voxels`` voxels) onto an isotropic grid of spacing ``min(iso_spacing_mm,
    smallest voxel size)``; ``None`` works on the native grid with no smoothing.
    """

    SECTION = "margin"

    mode: str
    iso_spacing_mm: float | None
    smooth_voxels: float

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RecurError(f"margin.mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.iso_spacing_mm is not None and self.iso_spacing_mm <= 0:
            raise RecurError("margin.iso_spacing_mm must be > 0 or null")
        if self.smooth_voxels < 0:
            raise RecurError("margin.smooth_voxels must be >= 0")
