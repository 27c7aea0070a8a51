"""The whole survival stage for one study, over DataFrames (the ``survival`` command's one call).

:func:`analyse` fits the Cox models, scores every patient, and builds every table and figure of
the stage (:class:`SurvivalResult`); the command writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from recur.constants import ER_HORIZON_MONTHS
from recur.evaluate.tables import cohort_masks
from recur.survival import figures, stage
from recur.survival.settings import SurvivalSettings

#: The cohort the figures show (every external test patient).
FIGURE_COHORT = "external"


@dataclass
class SurvivalResult:
    """Every output of the stage."""

    table: pd.DataFrame  # survival.csv (long)
    comparisons: pd.DataFrame  # paired C-index differences
    cox: pd.DataFrame  # hazard ratios and PH tests
    cutoffs: pd.DataFrame  # Cox risk cutoffs (tuning split)
    predictions: pd.DataFrame  # per patient and Cox model: risk, group, RFS at the metric times
    curves: pd.DataFrame  # time-dependent AUC curve values (figure cohort)
    calibration: pd.DataFrame  # calibration points (figure cohort)
    km: pd.DataFrame  # log-rank table of the Cox risk groups (figure cohort)
    figures: dict[str, Figure] = field(default_factory=dict)  # name -> figure
    models: dict[str, stage.CoxModel] = field(default_factory=dict)  # the fitted Cox models


def analyse(
    frame: pd.DataFrame,
    predictor_sets: Mapping[str, Sequence[str]],
    binary_models: Sequence[str],
    tabular_settings: object,
    settings: SurvivalSettings,
    *,
    table2_resamples: int,
    seed: int,
    level: float,
) -> SurvivalResult:
    """Fit, score and evaluate; ``frame`` is :func:`recur.survival.data.survival_frame` with
    one score column per binary model."""
    from recur.evaluate.figures import km_figure

    models = stage.fit_cox_models(frame, predictor_sets, tabular_settings, settings.penalizer)
    grid = list(settings.curve_grid())
    scores = stage.cox_scores(models, frame, grid)
    at_times = stage.cox_scores(models, frame, settings.auc_months)
    cutoffs = stage.risk_cutoffs(frame, scores)
    cut = dict(zip(cutoffs["model"], cutoffs["cutoff"], strict=True))
    table, comparisons = stage.survival_table(
        frame,
        scores,
        binary_models,
        settings,
        table2_resamples=table2_resamples,
        seed=seed,
        level=level,
    )
    result = SurvivalResult(
        table=table,
        comparisons=comparisons,
        cox=stage.cox_table(models, frame),
        cutoffs=cutoffs,
        predictions=stage.predictions_table(
            frame, {m: at_times[m] for m in models}, settings.auc_months, cut
        ),
        curves=pd.DataFrame(),
        calibration=pd.DataFrame(),
        km=pd.DataFrame(),
        models=models,
    )
    mask = cohort_masks(frame).get(FIGURE_COHORT)
    if mask is None or not mask.any():
        return result
    train = (frame["split"] == "train").to_numpy()
    t, e = frame[stage.TIME].to_numpy(float), frame[stage.EVENT].to_numpy(int)
    fig, result.curves = figures.td_auc_figure(
        FIGURE_COHORT,
        (t[train], e[train]),
        (t[mask], e[mask]),
        {m: r[mask] for m, (r, _) in scores.items()},
        {m: frame[m].to_numpy(float)[mask] for m in binary_models if m in scores},
        grid,
    )
    result.figures["td_auc"] = fig
    horizon = ER_HORIZON_MONTHS
    j = int(np.argmin(np.abs(np.asarray(grid) - horizon)))
    predicted = {m: 1.0 - s[mask, j] for m, (_, s) in scores.items()}
    fig, result.calibration = figures.calibration_figure(
        FIGURE_COHORT, t[mask], e[mask], predicted, float(grid[j]), settings.calibration_groups
    )
    result.figures["calibration"] = fig
    sub = frame.loc[mask, ["patient_id", "er", stage.TIME, stage.EVENT]].copy()
    for m, (r, _) in scores.items():
        sub[m] = r[mask]
    fig, result.km = km_figure(sub, list(scores), FIGURE_COHORT, cut)
    result.figures["km"] = fig
    return result
