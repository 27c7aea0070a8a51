"""Settings of the survival stage: config section ``survival`` (meanings and defaults in
``schemas/config.schema.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from recur.errors import RecurError
from recur.settings import SectionSettings


@dataclass(frozen=True)
class SurvivalSettings(SectionSettings):
    """Cox penalty, the metric times, the bootstrap size and the calibration groups."""

    SECTION = "survival"

    penalizer: float
    auc_months: tuple[float, ...]
    curve_months: tuple[float, float]
    bootstrap: int
    calibration_groups: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "auc_months", tuple(float(t) for t in self.auc_months))
        object.__setattr__(self, "curve_months", tuple(float(t) for t in self.curve_months))
        lo, hi = self.curve_months
        if not 0 < lo < hi:
            raise RecurError(f"survival: curve_months {list(self.curve_months)} (0 < first < last)")

    def curve_grid(self) -> tuple[float, ...]:
        """The months of the time-dependent AUC curve and of the Brier score's grid."""
        lo, hi = self.curve_months
        out, t = [], lo
        while t <= hi + 1e-9:
            out.append(round(t, 6))
            t += 1.0
        return tuple(out)
