"""The ``evaluate`` config section, read in parts: each evaluation command reads only the
keys it uses (so a changed value reruns only the rules that use it). Meanings, ranges and
defaults are in ``schemas/config.schema.yaml``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recur.errors import RecurError
from recur.settings import SectionSettings


@dataclass(frozen=True)
class BootstrapSettings(SectionSettings):
    """Table 2's stratified bootstrap confidence intervals."""

    SECTION = "evaluate"

    bootstrap: int
    ci_level: float
    seed: int

    def __post_init__(self) -> None:
        if self.bootstrap < 1 or not 0 < self.ci_level < 1:
            raise RecurError(
                f"evaluate: bootstrap {self.bootstrap} (>= 1), ci_level {self.ci_level} (0..1)"
            )


@dataclass(frozen=True)
class DecisionCurveSettings(SectionSettings):
    """The threshold probabilities of the decision curves."""

    SECTION = "evaluate"

    dca_min: float
    dca_max: float
    dca_step: float

    def __post_init__(self) -> None:
        if not 0 <= self.dca_min < self.dca_max < 1 or self.dca_step <= 0:
            raise RecurError(
                f"evaluate: decision-curve thresholds {self.dca_min}..{self.dca_max} step "
                f"{self.dca_step}: need 0 <= dca_min < dca_max < 1 and a positive step"
            )

    def thresholds(self) -> np.ndarray:
        """``dca_min, dca_min + dca_step, ...`` up to ``dca_max`` (both ends kept, below 1)."""
        t = np.round(np.arange(self.dca_min, self.dca_max + self.dca_step / 2, self.dca_step), 6)
        return t[t < 1]


@dataclass(frozen=True)
class CalibrationSettings(SectionSettings):
    """The lowess calibration curves."""

    SECTION = "evaluate"

    lowess_frac: float


@dataclass(frozen=True)
class Table1Settings(SectionSettings):
    """Table 1's choice of test (t-test when both groups look normal, else Mann-Whitney U)."""

    SECTION = "evaluate"

    normality_alpha: float
