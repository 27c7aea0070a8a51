"""File edges of the fitted Cox models: one folder per model, as the model bundle carries it.

``{folder}/design.skops`` + ``design.json`` (the design pipeline, fitted on the training
patients: imputation, log1p of AFP, log-odds of a DL signature, standardisation; stored by
:func:`recur.models.tabular.save_model`, loaded with its sha256 and trusted-type checks) and
``{folder}/cox.json`` (the predictors, the design columns left out as constant, and the
:class:`recur.survival.cox.CoxRecord`: coefficients, centring means and the baseline
cumulative hazard at the months the model is scored at). :func:`read_cox_model` gives back a
:class:`recur.survival.stage.CoxModel` that :func:`recur.survival.stage.cox_scores` scores as
the survival stage scores its patients.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from recur.constants import COX_MODEL_FILES
from recur.errors import RecurError
from recur.io import write_text_atomic
from recur.survival.cox import CoxRecord, cox_record
from recur.survival.stage import CoxModel

#: The files of one stored Cox model.
COX_FILES: tuple[str, ...] = COX_MODEL_FILES


def write_cox_model(
    model: CoxModel, folder: str | Path, tabular_settings: object, times: Sequence[float]
) -> None:
    """Store a fitted Cox model in ``folder`` (:data:`COX_FILES`); its survival is kept at
    ``times`` (months)."""
    from recur.models import tabular

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = model.fit if isinstance(model.fit, CoxRecord) else cox_record(model.fit, times)
    tabular.save_model(
        model.design,
        folder / "design.skops",
        folder / "design.json",
        features=list(model.features),
        settings=tabular_settings,
        extra={"model": model.name, "kind": "cox design"},
    )
    info = {
        "model": model.name,
        "features": list(model.features),
        "constant": list(model.constant),
        **record.to_dict(),
    }
    write_text_atomic(folder / "cox.json", json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_cox_model(folder: str | Path) -> CoxModel:
    """The Cox model stored by :func:`write_cox_model` (its fit a :class:`CoxRecord`)."""
    from recur.models import tabular

    folder = Path(folder)
    try:
        info = json.loads((folder / "cox.json").read_text(encoding="utf-8"))
        name, features = str(info["model"]), [str(f) for f in info["features"]]
        constant = tuple(str(c) for c in info.get("constant", []))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecurError(f"{folder.name}/cox.json: cannot read the Cox model ({exc})") from None
    design = tabular.load_model(folder / "design.skops", folder / "design.json")
    return CoxModel(name, features, design, CoxRecord.from_dict(info), constant)
