"""The settings of the registration and the crops: config sections ``registration`` and ``crop``.

Kept apart from the image code (:mod:`recur.preprocess.register`, :mod:`recur.preprocess.crops`,
which re-export them) so that the workflow can read their keys while it builds the DAG without
importing SimpleITK. Types, ranges, meanings and defaults live in
``schemas/config.schema.yaml`` only; build a settings object with ``from_config`` (a validated
section) or ``defaults`` (the schema's defaults, for tests and bench scripts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recur.errors import RecurError
from recur.settings import SectionSettings

TRANSFORMS: tuple[str, ...] = ("rigid", "affine")
NORMALISATIONS: tuple[str, ...] = ("robust_zscore", "zscore", "minmax", "none")
REGIONS: tuple[str, ...] = ("crop", "volume")
POST_FRAMES: tuple[str, ...] = ("pre", "own")


def check_pyramid(
    section: str,
    shrink_factors: Sequence[int],
    smoothing_sigmas_mm: Sequence[float],
    sampling_fraction: float,
) -> None:
    """Refuse a registration pyramid of unequal levels or a sampling fraction outside (0, 1]
    (``section`` names the config section in the message)."""
    if len(shrink_factors) != len(smoothing_sigmas_mm) or not shrink_factors:
        raise RecurError(
            f"{section}: shrink_factors and smoothing_sigmas_mm need the same, non-zero "
            f"number of levels (got {len(shrink_factors)} and {len(smoothing_sigmas_mm)})"
        )
    if not 0.0 < sampling_fraction <= 1.0:
        raise RecurError(f"{section}.sampling_fraction must be in (0, 1]")


@dataclass(frozen=True)
class RegistrationSettings(SectionSettings):
    """Settings of one phase-to-DP registration (the ``registration:`` config section, less
    ``threads``, which sets the rule's threads).

    ``shrink_factors`` and ``smoothing_sigmas_mm`` give one entry per pyramid level, coarse to
    fine; the sigmas are in millimetres. ``sampling_fraction`` is the fraction of fixed-image
    voxels (random, seeded with ``seed``) on which the metric is evaluated at each level, but
    never fewer than ``min_samples`` voxels (or all of them) so coarse levels stay stable.
    ``mask_margin_mm``: when set and an ROI mask is given, the metric is evaluated only inside
    the ROI's bounding box grown by this margin (in mm) on every side; ``None`` uses the whole
    image. ``region_margin_mm``: when set and an ROI mask is given, the pyramid and the
    optimisation work on the ROI's bounding box grown by this margin (fixed image) and by
    ``region_motion_mm`` more (moving image) only. The cross-time registration
    (:class:`recur.margin.settings.CrossTimeSettings`)
    builds one from the ``margin`` section.
    """

    SECTION = "registration"

    transform: str
    shrink_factors: tuple[int, ...]
    smoothing_sigmas_mm: tuple[float, ...]
    histogram_bins: int
    sampling_fraction: float
    min_samples: int
    iterations: int
    learning_rate: float
    min_step: float
    seed: int
    mask_margin_mm: float | None
    region_margin_mm: float | None
    region_motion_mm: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "shrink_factors", tuple(int(f) for f in self.shrink_factors))
        if self.transform not in TRANSFORMS:
            raise RecurError(
                f"registration.transform must be one of {', '.join(TRANSFORMS)}, "
                f"not {self.transform!r}"
            )
        check_pyramid(
            "registration", self.shrink_factors, self.smoothing_sigmas_mm, self.sampling_fraction
        )


@dataclass(frozen=True)
class CropSettings(SectionSettings):
    """Settings of the crops (the ``crop:`` config section; :mod:`recur.preprocess.crops`)."""

    SECTION = "crop"

    size: int
    spacing_mm: float | None
    normalisation: str
    region: str
    post_frame: str

    def __post_init__(self) -> None:
        if self.size < 8:
            raise RecurError(f"crop.size must be at least 8, not {self.size}")
        if self.spacing_mm is not None and not self.spacing_mm > 0:
            raise RecurError(f"crop.spacing_mm must be positive or null, not {self.spacing_mm}")
        check_normalisation(self.normalisation)
        if self.region not in REGIONS:
            raise RecurError(
                f"crop.region must be one of {', '.join(REGIONS)}, not {self.region!r}"
            )
        if self.post_frame not in POST_FRAMES:
            raise RecurError(
                f"crop.post_frame must be one of {', '.join(POST_FRAMES)}, not {self.post_frame!r}"
            )


def check_normalisation(method: str) -> None:
    """Refuse an intensity normalisation that is not one of :data:`NORMALISATIONS`."""
    if method not in NORMALISATIONS:
        raise RecurError(
            f"crop.normalisation must be one of {', '.join(NORMALISATIONS)}, not {method!r}"
        )
