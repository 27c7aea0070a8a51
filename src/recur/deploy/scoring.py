"""Score new patients with every model of a bundle, one :class:`~recur.deploy.registry.ModelEntry`
at a time, with the workflow's own functions.

* ``dl`` (Pre, PrePost): :func:`recur.models.jobs.load_model` +
  :func:`recur.models.train.predict_logits` (the network's output: the ``raw_score`` of the
  workflow's prediction tables), then the bundle's recalibration
  (:meth:`recur.evaluate.recalibration.Recalibration.apply`: the workflow's ``score``).
* ``radiomics`` (Radiomics_Pre, Radiomics_PrePost): :func:`recur.radiomics.model.load_pipeline`
  + :func:`recur.radiomics.model.score` on the patient's radiomics features (extracted in
  the image steps by :func:`recur.radiomics.features.features_files`, as the workflow's
  ``radiomics_features`` rule does), before the tabular models (:func:`radiomics_outputs`).
* ``tabular`` (Clinical, DL_Clinical, the margin models, Radiomics_Clinical):
  :func:`recur.models.tabular.load_model` + :func:`recur.models.tabular.predict_scores` on the
  columns the model's manifest lists; a DL signature is the network's output and the
  Radiomics_PrePost signature that model's score, as the workflow gives its tuning and test
  patients. The workflow does not recalibrate the tabular and radiomics models: the raw score
  is the probability.
* ``survival`` (the Cox models): :func:`recur.survival.files.read_cox_model` +
  :func:`recur.survival.stage.cox_scores`, the recurrence-free probability at the months the
  bundle recorded (``survival.auc_months``: 12 and 24).

The model inputs are columns of one frame of the patients (:func:`feature_frame`): each input
of :data:`recur.deploy.registry.INPUTS` is given by a function of :data:`FEATURE_FUNCTIONS`. A
model whose entry needs the post-ablation series is not scored for a patient without one: its
cells are empty and its note is :data:`recur.deploy.registry.NO_POST`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recur.constants import CLINICAL_FEATURES, SIGNATURE_SUFFIX
from recur.deploy.bundle import Bundle
from recur.deploy.registry import NO_POST, RADIOMICS_FUSED, ModelEntry
from recur.errors import RecurError

#: The margin columns reported for every patient (``margin.csv``'s, as the margin stage writes
#: them).
MARGIN_REPORT: tuple[str, ...] = ("min_margin_mm", "pct_lt0", "pct_lt5")


@dataclass
class Patients:
    """What the image steps produced for the patients being scored."""

    ids: list[str]
    clinical: pd.DataFrame
    #: ``{patient: whether it has a post-ablation series}``
    has_post: dict[str, bool]
    crops_dir: Path
    #: ``{patient: its row of margin.csv}`` (patients with a post series)
    margins: dict[str, dict] = field(default_factory=dict)
    #: ``{DL model: network output per patient}`` (:func:`network_outputs`)
    network: dict[str, dict[str, float]] = field(default_factory=dict)
    #: ``{patient: its long radiomics feature table}`` (``feature``, ``value``: the time
    #: points it has)
    radiomics: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: ``{radiomics model: score per patient}`` (:func:`radiomics_outputs`)
    radiomics_scores: dict[str, dict[str, float]] = field(default_factory=dict)


# --------------------------------------------------------------------------- features
def _clinical(bundle: Bundle, p: Patients) -> pd.DataFrame:
    c = p.clinical.set_index("patient_id").reindex(p.ids)
    return c[list(CLINICAL_FEATURES)].reset_index(drop=True)


def _signatures(bundle: Bundle, p: Patients) -> pd.DataFrame:
    return pd.DataFrame(
        {
            f"{m}{SIGNATURE_SUFFIX}": [p.network.get(m, {}).get(pid, np.nan) for pid in p.ids]
            for m in p.network
        }
    )


def _margin(bundle: Bundle, p: Patients) -> pd.DataFrame:
    rows = [p.margins.get(pid, {}) for pid in p.ids]
    cols = sorted({k for r in rows for k in r if k != "patient_id"})
    return pd.DataFrame({c: [r.get(c, np.nan) for r in rows] for c in cols}, dtype=object)


def _radiomics_wide(p: Patients, timepoint: str) -> pd.DataFrame:
    """The features of ``timepoint`` of every patient, one row each (a patient without them:
    NaN, imputed by the model like a feature the workflow could not extract)."""
    from recur.radiomics.model import feature_matrix

    wide = feature_matrix(p.radiomics).reindex(p.ids)
    cols = [c for c in wide.columns if c.split("_", 1)[0] == timepoint]
    return wide[cols].reset_index(drop=True)


def _radiomics(bundle: Bundle, p: Patients) -> pd.DataFrame:
    return _radiomics_wide(p, "pre")


def _radiomics_post(bundle: Bundle, p: Patients) -> pd.DataFrame:
    return _radiomics_wide(p, "post")


def _radiomics_signature(bundle: Bundle, p: Patients) -> pd.DataFrame:
    scores = p.radiomics_scores.get(RADIOMICS_FUSED, {})
    column = f"{RADIOMICS_FUSED}{SIGNATURE_SUFFIX}"
    return pd.DataFrame({column: [scores.get(i, np.nan) for i in p.ids]})


#: ``{input: function(bundle, patients) -> DataFrame}``: the columns an input gives, one row per
#: patient in ``patients.ids`` order (the image inputs are read by the DL models from the crops).
FEATURE_FUNCTIONS: dict[str, Callable[[Bundle, Patients], pd.DataFrame]] = {
    "clinical": _clinical,
    "signature": _signatures,
    "margin": _margin,
    "radiomics": _radiomics,
    "radiomics_post": _radiomics_post,
    "radiomics_signature": _radiomics_signature,
}


def feature_frame(bundle: Bundle, p: Patients, inputs: Sequence[str] | None = None) -> pd.DataFrame:
    """``patient_id`` and the columns of ``inputs`` (default: every input the bundle's
    tabular, radiomics and Cox models read)."""
    if inputs is None:
        inputs = {i for e in bundle.entries for i in e.inputs if i in FEATURE_FUNCTIONS}
    inputs = sorted(inputs)
    parts = [pd.DataFrame({"patient_id": p.ids})]
    parts += [FEATURE_FUNCTIONS[i](bundle, p) for i in inputs]
    frame = pd.concat(parts, axis=1)
    for c in frame.columns[1:]:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


# --------------------------------------------------------------------------- models
def load_dl_model(bundle: Bundle, entry: ModelEntry, device: str = "cpu"):
    """``(network, architecture)`` of a DL entry (:func:`recur.models.jobs.load_model`)."""
    from recur.models import jobs, train

    model, arch = jobs.load_model(bundle.model_dir(entry), train.resolve_device(device))
    if arch.model != entry.name:
        raise RecurError(f"bundle {bundle.root}: {entry.folder}/model.json describes {arch.model}")
    return model, arch


def load_tabular_model(bundle: Bundle, entry: ModelEntry):
    """``(pipeline, features)`` of a tabular entry (:func:`recur.models.tabular.load_model`:
    sha256 and trusted types checked)."""
    from recur.models import tabular

    d = bundle.model_dir(entry)
    model = tabular.load_model(d / "model.skops", d / "manifest.json")
    features = list(json.loads((d / "manifest.json").read_text(encoding="utf-8"))["features"])
    sig = sorted(f for f in features if f.endswith(SIGNATURE_SUFFIX))
    if sig != expected_signatures(bundle, entry):
        raise RecurError(
            f"bundle {bundle.root}: {entry.name} features {features} do not use the "
            f"signature(s) {expected_signatures(bundle, entry)} of models.json and choice.json"
        )
    return model, features


def expected_signatures(bundle: Bundle, entry: ModelEntry) -> list[str]:
    """The signature features an entry's model must read: the DL signature choice.json names
    (input ``signature``), the Radiomics_PrePost signature (input ``radiomics_signature``)."""
    names = {"signature": bundle.signature, "radiomics_signature": RADIOMICS_FUSED}
    return sorted(f"{names[i]}{SIGNATURE_SUFFIX}" for i in entry.inputs if i in names)


def load_radiomics_model(bundle: Bundle, entry: ModelEntry):
    """``(pipeline, features)`` of a radiomics entry (:func:`recur.radiomics.model.load_pipeline`:
    sha256 and trusted types checked)."""
    from recur.radiomics.model import load_pipeline

    d = bundle.model_dir(entry)
    pipe, info = load_pipeline(d / "model.skops", d / "manifest.json")
    return pipe, list(info["features"])


def load_cox_model(bundle: Bundle, entry: ModelEntry):
    """The :class:`recur.survival.stage.CoxModel` of a survival entry."""
    from recur.survival.files import read_cox_model

    return read_cox_model(bundle.model_dir(entry))


def load_models(bundle: Bundle, device: str = "cpu") -> dict[str, object]:
    """``{entry key: loaded model}`` of every entry of the bundle."""
    loaders = {
        "dl": lambda e: load_dl_model(bundle, e, device),
        "tabular": lambda e: load_tabular_model(bundle, e),
        "radiomics": lambda e: load_radiomics_model(bundle, e),
        "survival": lambda e: load_cox_model(bundle, e),
    }
    return {e.key: loaders[e.kind](e) for e in bundle.entries}


# --------------------------------------------------------------------------- scoring
def network_outputs(
    bundle: Bundle,
    p: Patients,
    models: Mapping[str, object],
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """``{DL model: {patient: network output}}`` (:func:`recur.models.train.predict_logits`,
    evaluation transform, as the workflow scores them), for the patients each can score."""
    from recur.models import train
    from recur.models.data import make_dataset, make_items

    dev = train.resolve_device(device)
    out = {}
    for e in bundle.entries:
        if e.kind != "dl":
            continue
        ids = [pid for pid in p.ids if p.has_post[pid] or not e.needs_post]
        if not ids:
            out[e.name] = {}
            continue
        model, arch = models[e.key]
        ds = make_dataset(make_items(ids, p.crops_dir), arch.timepoints, None, roi=arch.roi_channel)
        raw = train.sigmoid(train.predict_logits(model, ds, dev, tta=arch.tta))
        out[e.name] = dict(zip(ids, np.asarray(raw, dtype=float).tolist(), strict=True))
    return out


def radiomics_outputs(
    bundle: Bundle, p: Patients, models: Mapping[str, object]
) -> dict[str, dict[str, float]]:
    """``{radiomics model: {patient: score}}`` (:func:`recur.radiomics.model.score`) for the
    patients each can score (``p.radiomics`` must hold their features)."""
    from recur.radiomics.model import score

    entries = [e for e in bundle.entries if e.kind == "radiomics"]
    if not entries:
        return {}
    frame = feature_frame(bundle, p, {i for e in entries for i in e.inputs})
    out = {}
    for e in entries:
        ok = np.array([p.has_post[pid] or not e.needs_post for pid in p.ids])
        pipe, feats = models[e.key]
        ids = list(np.asarray(p.ids)[ok])
        values = score(pipe, frame[ok].reset_index(drop=True), feats) if ids else []
        out[e.name] = dict(zip(ids, np.asarray(values, dtype=float).tolist(), strict=True))
    return out


def score_all(bundle: Bundle, p: Patients, models: Mapping[str, object]) -> pd.DataFrame:
    """Long table, one row per patient and binary model: ``patient_id, model, kind, available,
    probability, raw_score, cutoff, risk, rfs_<t>m... (its Cox model), note``. ``p.network``
    must hold the DL models' outputs (:func:`network_outputs`) and ``p.radiomics_scores`` the
    radiomics models' (:func:`radiomics_outputs`)."""
    from recur.evaluate.tables import risk_groups
    from recur.survival.stage import cox_scores

    frame = feature_frame(bundle, p)
    rows = []
    for e in bundle.binary:
        cox = bundle.cox(e.name)
        times = list(models[cox.key].fit.times) if cox is not None else []
        ok = np.array([p.has_post[pid] or not e.needs_post for pid in p.ids])
        prob = np.full(len(p.ids), np.nan)
        raw = np.full(len(p.ids), np.nan)
        if ok.any():
            if e.kind == "dl":
                raw[ok] = [p.network[e.name][pid] for pid in np.asarray(p.ids)[ok]]
                prob[ok] = bundle.recalibrations[e.name].apply(raw[ok])
            elif e.kind == "radiomics":
                prob[ok] = [p.radiomics_scores[e.name][pid] for pid in np.asarray(p.ids)[ok]]
                raw[ok] = prob[ok]
            else:
                from recur.models import tabular

                pipe, feats = models[e.key]
                sub = frame[ok].reset_index(drop=True)
                prob[ok] = tabular.predict_scores(pipe, sub, feats)
                raw[ok] = prob[ok]
        surv = np.full((len(p.ids), len(times)), np.nan)
        if cox is not None and ok.any():
            cm = models[cox.key]
            sub = frame[ok].reset_index(drop=True)
            surv[ok] = cox_scores({cox.name: cm}, sub, times)[cox.name][1]
        cut = bundle.cutoffs[e.name]
        high = np.zeros(len(p.ids), dtype=bool)
        if ok.any():
            groups = risk_groups(pd.DataFrame({e.name: prob[ok]}), {e.name: cut})[e.name]
            high[ok] = np.asarray(groups) == 1
        for i, pid in enumerate(p.ids):
            row = {
                "patient_id": pid,
                "model": e.name,
                "kind": e.kind,
                "available": bool(ok[i]),
                "probability": prob[i],
                "raw_score": raw[i],
                "cutoff": cut,
                "risk": ("high" if high[i] else "low") if ok[i] else NO_POST,
                "note": "" if ok[i] else NO_POST,
            }
            for j, t in enumerate(times):
                row[f"rfs_{t:g}m"] = surv[i, j]
            rows.append(row)
    return pd.DataFrame(rows)


def predictions_wide(
    long: pd.DataFrame,
    bundle: Bundle,
    p: Patients,
) -> pd.DataFrame:
    """``predictions.csv``: one row per patient. ``patient_id``, ``post_series``, the margin
    (:data:`MARGIN_REPORT` and ``margin_note``), ``primary_model``; then per binary model
    ``<m>`` (calibrated probability), ``<m>_raw``, ``<m>_cutoff``, ``<m>_risk``, its Cox
    model's ``<m>_rfs_<t>m``, ``<m>_version`` and ``<m>_cox_version``
    (:meth:`recur.deploy.bundle.Bundle.version`); last ``bundle_recur_version``."""
    out = pd.DataFrame({"patient_id": p.ids})
    out["post_series"] = [p.has_post[pid] for pid in p.ids]
    for c in MARGIN_REPORT:
        out[c] = [p.margins.get(pid, {}).get(c, np.nan) for pid in p.ids]
    out["margin_note"] = ["" if pid in p.margins else NO_POST for pid in p.ids]
    out["primary_model"] = bundle.primary or ""
    rfs = [c for c in long.columns if c.startswith("rfs_")]
    for e in bundle.binary:
        sub = long[long["model"] == e.name].set_index("patient_id").reindex(p.ids)
        out[e.name] = sub["probability"].to_numpy(float)
        out[f"{e.name}_raw"] = sub["raw_score"].to_numpy(float)
        out[f"{e.name}_cutoff"] = bundle.cutoffs[e.name]
        out[f"{e.name}_risk"] = sub["risk"].to_numpy()
        for c in rfs:
            out[f"{e.name}_{c}"] = sub[c].to_numpy(float)
        out[f"{e.name}_version"] = bundle.version(e)
        cox = bundle.cox(e.name)
        out[f"{e.name}_cox_version"] = bundle.version(cox) if cox is not None else ""
    out["bundle_recur_version"] = str(bundle.manifest.get("recur_version", ""))
    return out


def model_columns(models: Sequence[str], times: Sequence[float]) -> list[str]:
    """The per-model columns of ``predictions.csv`` (:func:`predictions_wide`), in order."""
    cols = []
    for m in models:
        cols += [m, f"{m}_raw", f"{m}_cutoff", f"{m}_risk"]
        cols += [f"{m}_rfs_{t:g}m" for t in times]
        cols += [f"{m}_version", f"{m}_cox_version"]
    return cols
