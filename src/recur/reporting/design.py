"""The study design the TRIPOD+AI checklist describes, built from the settings of the run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recur.constants import CLINICAL_FEATURES


@dataclass(frozen=True)
class StudyDesign:
    """What the checklist's method items say about this run."""

    clinical_features: tuple[str, ...]
    tune_fraction: float
    impute: str
    on_failure: str
    stacking: str
    clinical_estimator: str
    dl_clinical_estimator: str
    offset_models: tuple[str, ...]
    offset_variables: tuple[str, ...]

    @classmethod
    def from_sections(cls, sections: Mapping[str, Any]) -> StudyDesign:
        """From the validated config sections ``split``, ``clinical``, ``dl_clinical``, ``qc``
        and ``train`` (its ``offset``), each read by its settings class."""
        from recur.cohort.exclusions import QcSettings
        from recur.cohort.split import SplitSettings
        from recur.models.tabular import TabularSettings
        from recur.models.train import OffsetSettings

        clinical = TabularSettings.from_config(sections["clinical"], "clinical")
        dl_clinical = TabularSettings.from_config(sections["dl_clinical"], "dl_clinical")
        offset = OffsetSettings.from_config(sections["train"]["offset"])
        return cls(
            clinical_features=tuple(CLINICAL_FEATURES),
            tune_fraction=SplitSettings.from_config(sections["split"]).tune_fraction,
            impute=clinical.impute,
            on_failure=QcSettings.from_config(sections["qc"]).on_failure,
            stacking=str(sections["dl_clinical"]["stacking"]),
            clinical_estimator=clinical.estimator,
            dl_clinical_estimator=dl_clinical.estimator,
            offset_models=offset.models,
            offset_variables=offset.variables,
        )
