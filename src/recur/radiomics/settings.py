"""The settings of the radiomics stage, read from the ``radiomics:`` config section.

:class:`FeatureSettings` (the regions and phases: ``radiomics-features``) and
:class:`ModelSettings` (the reduction and the penalised model: ``radiomics-models``). The
rules read the rest themselves (``enabled``: which targets; ``params``: the pyradiomics
parameter file, an input of the feature rule; :data:`recur.settings.RULE_KEYS`). Kept apart
from the image code so that the workflow reads them without importing SimpleITK; types,
ranges, meanings and defaults live in ``schemas/config.schema.yaml`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from recur.constants import PHASES
from recur.errors import RecurError
from recur.settings import SectionSettings


def _check_rings(key: str, rings: tuple[tuple[float, float], ...]) -> None:
    for ring in rings:
        if len(ring) != 2 or not 0 <= ring[0] < ring[1]:
            raise RecurError(
                f"radiomics.{key}: each ring is [inner, outer] in mm with 0 <= inner < outer, "
                f"not {list(ring)}"
            )


@dataclass(frozen=True)
class FeatureSettings(SectionSettings):
    """Regions and phases of the feature extraction (config section ``radiomics``).

    Pre-ablation: the tumour and the rings ``tumour_rings_mm`` around it; post-ablation: the
    ablation zone and the rings ``zone_rings_mm`` around it; each on every phase of
    ``phases``. A ring ``(a, b)`` holds the voxels whose distance to the region's surface
    (outside it) is in ``(a, b]`` mm.
    """

    SECTION = "radiomics"

    tumour_rings_mm: tuple[tuple[float, float], ...]
    zone_rings_mm: tuple[tuple[float, float], ...]
    phases: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "tumour_rings_mm", tuple(tuple(map(float, r)) for r in self.tumour_rings_mm)
        )
        object.__setattr__(
            self, "zone_rings_mm", tuple(tuple(map(float, r)) for r in self.zone_rings_mm)
        )
        _check_rings("tumour_rings_mm", self.tumour_rings_mm)
        _check_rings("zone_rings_mm", self.zone_rings_mm)
        bad = [p for p in self.phases if p not in PHASES]
        if bad or not self.phases:
            raise RecurError(f"radiomics.phases: choose from {list(PHASES)}, not {bad}")


@dataclass(frozen=True)
class ModelSettings(SectionSettings):
    """The feature reduction and the penalised logistic regression (config section
    ``radiomics``; :func:`recur.radiomics.model.radiomics_pipeline`)."""

    SECTION = "radiomics"

    #: features whose |Spearman rho| with an already kept, more discriminating one exceeds
    #: this are dropped
    correlation_threshold: float
    #: elastic-net mixing values tried by the cross-validation (1 = lasso)
    l1_ratios: tuple[float, ...]
    #: penalty values tried (log-spaced C over 1e-3 .. 1e2)
    cs: int
    #: stratified folds choosing the penalty, and of the out-of-fold signature
    cv_folds: int
    seed: int
