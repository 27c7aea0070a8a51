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
    #: train.signature ('ensemble' | 'full') and the fold models of the ensemble
    signature: str = "full"
    crossfit_folds: int = 0
    #: test-time augmentation of every signature (train.tta)
    tta: bool = False
    #: models that also learn the measured minimal margin (train.margin_target, aux_weight)
    margin_target: tuple[str, ...] = ()
    aux_weight: float = 0.0
    #: the margin models (margin.enabled and margin.models) and their margin features
    margin_models: bool = False
    margin_features: tuple[str, ...] = ()

    @classmethod
    def from_sections(cls, sections: Mapping[str, Any]) -> StudyDesign:
        """From the validated config sections ``split``, ``clinical``, ``dl_clinical``, ``qc``,
        ``train`` (its ``offset``, ``signature``, ``tta``, ``margin_target``) and, when given,
        ``margin``, each read by its settings class where it has one."""
        from recur.cohort.exclusions import QcSettings
        from recur.cohort.split import SplitSettings
        from recur.models.tabular import TabularSettings
        from recur.models.train import OffsetSettings

        clinical = TabularSettings.from_config(sections["clinical"], "clinical")
        dl_clinical = TabularSettings.from_config(sections["dl_clinical"], "dl_clinical")
        offset = OffsetSettings.from_config(sections["train"]["offset"])
        train, margin = sections["train"], sections.get("margin", {})
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
            signature=str(train["signature"]),
            crossfit_folds=int(train["crossfit_folds"]),
            tta=bool(train["tta"]),
            margin_target=tuple(train["margin_target"]),
            aux_weight=float(train["aux_weight"]),
            margin_models=bool(margin.get("enabled") and margin.get("models")),
            margin_features=tuple(margin.get("features", ())),
        )
