"""The portable model bundle: everything `recur predict` needs to score a new patient.

``results/bundle/`` holds the trained models, the settings they were trained with and the
study's performance of each, and no patient data (no ids, no predictions)::

    manifest.json                      sha256 of every other file, recur version, layout version
    settings.json                      convert, roi, registration, crop, margin, architecture,
                                       clinical, dl_clinical, radiomics (regions, phases)
                                       settings the workflow used
    models.json                        every model (recur.deploy.registry entries: kind, inputs,
                                       whether it needs the post series), its study performance
                                       (cutoff, tuning AUC, external AUC with CI, calibration,
                                       the Cox model's external C-index) and the primary model
    cutoffs.csv                        Youden cutoff of each binary model on the tuning split
    models/<dl>/{weights.pt,model.json,recalibration.json}   Pre, PrePost signature networks
    models/<tabular>/{model.skops,manifest.json}  Clinical, DL_Clinical, the margin models,
                                                 Radiomics_Clinical
    models/<radiomics>/{model.skops,manifest.json}  Radiomics_Pre, Radiomics_PrePost
    radiomics_params.yaml              the pyradiomics parameter file (with radiomics models)
    models/DL_Clinical/choice.json               the DL signature of the fusion models
    models/survival/<model>/{design.skops,design.json,cox.json}  the Cox model of each

:func:`write_bundle` copies the workflow's files into a temporary folder, writes the manifest
last and renames the folder into place. :func:`load_bundle` re-hashes every file and refuses a
bundle whose manifest does not verify (a changed, missing or extra file, or a file of a model
of ``models.json`` that the manifest does not list) with a :class:`~recur.errors.RecurError`
naming the file. The manifest is a checksum, not a signature: it detects corruption and
accidental edits, not a deliberate forgery that also rewrites the manifest.

Bundle format 2 added the recalibration of the DL models (``recalibration.json``); a format 1
bundle has none, and its workflow reported the networks' scores as they are, so it reads as
the identity map. Format 3 added ``models.json`` and with it the margin and Cox models; a
format 1 or 2 bundle reads as its four models (Pre, PrePost, Clinical, DL_Clinical).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recur import __version__
from recur.constants import DL_MODELS, MODELS
from recur.deploy.registry import (
    CHOICE_FILE,
    RADIOMICS_PARAMS,
    ModelEntry,
    study_entries,
    uses_radiomics,
)
from recur.errors import RecurError
from recur.evaluate.recalibration import Recalibration, read_recalibration
from recur.io import sha256

#: Version of the bundle layout (bumped when files move or change meaning).
BUNDLE_FORMAT = 3
#: The first bundle format with the DL models' ``recalibration.json``.
RECALIBRATION_FORMAT = 2
#: The first bundle format whose models are listed in ``models.json`` (every model the study
#: evaluates, its Cox models, their cutoffs and study performance).
REGISTRY_FORMAT = 3
MANIFEST = "manifest.json"
SETTINGS = "settings.json"
CUTOFFS = "cutoffs.csv"
MODELS_FILE = "models.json"
#: The settings sections a bundle must record (the config sections of the same name; the
#: architecture is the ``train`` section's network keys).
SETTINGS_SECTIONS: tuple[str, ...] = (
    "convert",
    "registration",
    "crop",
    "architecture",
    "clinical",
    "dl_clinical",
)


def legacy_entries(signature: str = "PrePost") -> list[ModelEntry]:
    """The models of a bundle written before ``models.json`` (format 1 and 2): Pre, PrePost,
    Clinical, DL_Clinical."""
    return study_entries(MODELS, (), signature)


def base_files(bundle_format: int = BUNDLE_FORMAT) -> list[str]:
    """The files every bundle of ``bundle_format`` holds besides ``manifest.json`` and its
    models' files."""
    files = [SETTINGS, CUTOFFS, CHOICE_FILE]
    if bundle_format >= REGISTRY_FORMAT:
        files.append(MODELS_FILE)
    return sorted(files)


def required_files(
    bundle_format: int = BUNDLE_FORMAT, entries: Sequence[ModelEntry] | None = None
) -> list[str]:
    """Relative paths a bundle of ``bundle_format`` holding ``entries`` (by default the
    models of a format 1/2 bundle) holds besides ``manifest.json`` (sorted)."""
    entries = list(entries) if entries is not None else legacy_entries()
    files = set(base_files(bundle_format))
    if uses_radiomics(entries):
        files.add(RADIOMICS_PARAMS)
    for e in entries:
        files.update(e.files)
        if e.kind == "dl" and bundle_format < RECALIBRATION_FORMAT:
            files.discard(f"{e.folder}/recalibration.json")
    return sorted(files)


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings with every section of :data:`SETTINGS_SECTIONS` present (as dicts)."""
    missing = [s for s in SETTINGS_SECTIONS if not isinstance(settings.get(s), Mapping)]
    if missing:
        raise RecurError(f"bundle settings: section(s) {', '.join(missing)} missing")
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in settings.items()}


def check_cutoffs(
    table: pd.DataFrame, where: str = CUTOFFS, models: Sequence[str] = MODELS
) -> dict[str, float]:
    """``{model: cutoff}`` of a cutoffs table; every one of ``models`` must be there."""
    if not {"model", "cutoff"} <= set(table.columns):
        raise RecurError(f"{where}: columns 'model' and 'cutoff' are required")
    cut = dict(zip(table["model"].astype(str), pd.to_numeric(table["cutoff"]), strict=True))
    missing = [m for m in models if m not in cut or not pd.notna(cut[m])]
    if missing:
        raise RecurError(f"{where}: no cutoff for model(s) {', '.join(missing)}")
    return {m: float(cut[m]) for m in models}


def _num(value: object) -> float | None:
    """A finite float, or None (an undefined estimate: JSON has no NaN)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _estimate(rows: pd.DataFrame) -> dict[str, float | int | None] | None:
    if rows.empty:
        return None
    r = rows.iloc[0]
    return {k: _num(r[k]) for k in ("estimate", "ci_low", "ci_high") if k in r.index} | {
        k: int(r[k]) for k in ("n", "n_events") if k in r.index and pd.notna(r[k])
    }


def study_performance(
    entries: Sequence[ModelEntry],
    cutoffs: pd.DataFrame,
    table2: pd.DataFrame | None = None,
    survival: pd.DataFrame | None = None,
    calibration: pd.DataFrame | None = None,
    cohort: str = "external",
) -> dict[str, dict[str, Any]]:
    """``{entry key: performance}`` from the study's tables: a binary model's tuning AUC and
    Youden cutoff (``cutoffs.csv``), external AUC with its CI (``table2.csv``), external
    calibration intercept, slope and Brier score (``calibration.csv``) and its Cox model's
    external Harrell C with its CI (``survival.csv``, kind ``cox``). Numbers only, no patient."""
    out: dict[str, dict[str, Any]] = {}
    cut = cutoffs.set_index(cutoffs["model"].astype(str))
    for e in entries:
        perf: dict[str, Any] = {}
        if e.kind == "survival":
            if survival is not None:
                rows = survival[
                    (survival["cohort"] == cohort)
                    & (survival["model"] == e.name)
                    & (survival["kind"] == "cox")
                    & (survival["metric"] == "harrell_c")
                ]
                perf["c_index"] = _estimate(rows)
            out[e.key] = perf
            continue
        if e.name in cut.index:
            r = cut.loc[e.name]
            perf["cutoff"] = float(r["cutoff"])
            for k in ("tune_auc", "youden_j"):
                if k in r.index:
                    perf[k] = _num(r[k])
        if table2 is not None:
            rows = table2[
                (table2["cohort"] == cohort)
                & (table2["model"] == e.name)
                & (table2["metric"] == "auc")
            ]
            perf["auc"] = _estimate(rows)
        if calibration is not None:
            rows = calibration[(calibration["cohort"] == cohort) & (calibration["model"] == e.name)]
            if not rows.empty:
                r = rows.iloc[0]
                perf["calibration"] = {
                    k: _num(r[k]) for k in ("intercept", "slope", "brier") if k in r.index
                }
        out[e.key] = perf
    return out


def write_bundle(
    outdir: str | Path,
    *,
    entries: Sequence[ModelEntry],
    files: Mapping[str, str | Path],
    cutoffs: str | Path,
    settings: Mapping[str, Any],
    performance: Mapping[str, Mapping[str, Any]] | None = None,
    primary: str | None = None,
) -> dict[str, Any]:
    """Assemble the bundle in ``outdir`` (replaced as a whole, only once complete).

    ``entries``: the models (:mod:`recur.deploy.registry`); ``files``: ``{bundle-relative
    path: source file}`` of every entry's files and of the DL_Clinical ``choice.json``
    (a DL model's ``recalibration.json`` is checked by reading it); ``cutoffs``: the cutoffs
    table (every binary model needs one); ``settings``: the sections of
    :data:`SETTINGS_SECTIONS`; ``performance``: :func:`study_performance`; ``primary``: the
    model the study's tuning split ranks first. Writes ``models.json`` (the entries with their
    performance) and returns the manifest written.
    """
    settings = check_settings(settings)
    cut_table = pd.read_csv(cutoffs)
    binary = [e.name for e in entries if e.kind != "survival"]
    check_cutoffs(cut_table, str(cutoffs), binary)
    keys = [e.key for e in entries]
    if len(set(keys)) != len(keys):
        raise RecurError(f"bundle: a model is listed twice ({keys})")
    if primary is not None and primary not in binary:
        raise RecurError(f"bundle: the primary model {primary} is not among {binary}")
    sources: dict[str, Path] = {}
    for rel in required_files(BUNDLE_FORMAT, entries):
        if rel in (SETTINGS, CUTOFFS, MODELS_FILE):
            continue
        if rel not in files:
            raise RecurError(f"bundle: no source file for {rel}")
        sources[rel] = Path(files[rel])
    for rel, src in sources.items():
        if not src.is_file():
            raise RecurError(f"bundle: {src} not found (for {rel})")
        if rel.endswith("/recalibration.json"):
            read_recalibration(src)

    outdir = Path(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        for rel, src in sources.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        # the bundle's models only, and only model, cutoff and how it was found (no ids)
        keep = ("model", "cutoff", "youden_j", "tune_auc", "n_tune", "n_events_tune")
        rows = cut_table[cut_table["model"].astype(str).isin(binary)]
        rows[[c for c in keep if c in rows.columns]].to_csv(
            tmp / CUTOFFS, index=False, lineterminator="\n"
        )
        (tmp / SETTINGS).write_text(
            json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        perf = performance or {}
        registry = {
            "primary": primary,
            "primary_rule": "highest AUC on the tuning split (recur.evaluate.tables.primary_model)",
            "models": [{**e.to_dict(), "performance": dict(perf.get(e.key, {}))} for e in entries],
        }
        (tmp / MODELS_FILE).write_text(
            json.dumps(registry, indent=2, sort_keys=True, allow_nan=False) + "\n",
            encoding="utf-8",
        )
        manifest = {
            "format": "recur-model-bundle",
            "bundle_format": BUNDLE_FORMAT,
            "recur_version": __version__,
            "files": {rel: sha256(tmp / rel) for rel in required_files(BUNDLE_FORMAT, entries)},
        }
        (tmp / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        for p in tmp.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(tmp, 0o755)
        if outdir.exists():
            shutil.rmtree(outdir)
        os.replace(tmp, outdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def verify_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """Check every file of the bundle against ``manifest.json``; return the manifest.

    Refuses (RecurError naming the file) a missing or unreadable manifest, a file whose
    sha256 differs, a listed file that is missing, a file that is not listed, a manifest that
    lacks a required file, and a newer bundle format.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise RecurError(f"bundle {root}: folder not found")
    mpath = root / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except FileNotFoundError:
        raise RecurError(f"bundle {root}: {MANIFEST} not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecurError(f"bundle {root}: {MANIFEST} cannot be read ({exc})") from None
    fmt = bundle_format(manifest)
    if fmt > BUNDLE_FORMAT:
        raise RecurError(
            f"bundle {root}: format {manifest.get('bundle_format')} is newer than this recur "
            f"({__version__}) reads (format {BUNDLE_FORMAT})"
        )
    missing = sorted(set(base_files(fmt)) - set(files))
    if missing:
        raise RecurError(f"bundle {root}: {MANIFEST} does not list {', '.join(missing)}")
    present = {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p != mpath
    }
    extra = sorted(present - set(files))
    if extra:
        raise RecurError(f"bundle {root}: file {extra[0]} is not in {MANIFEST}; refusing")
    for rel in sorted(files):
        path = root / rel
        if not path.is_file():
            raise RecurError(f"bundle {root}: file {rel} is missing")
        if sha256(path) != files[rel]:
            raise RecurError(
                f"bundle {root}: file {rel} does not match its sha256 in {MANIFEST} "
                "(changed or corrupted); refusing to use the bundle"
            )
    # every file of every model listed (models.json itself verified just above)
    missing = sorted(set(required_files(fmt, read_entries(root, fmt))) - set(files))
    if missing:
        raise RecurError(f"bundle {root}: {MANIFEST} does not list {', '.join(missing)}")
    return manifest


def bundle_format(manifest: Mapping[str, Any]) -> int:
    """The layout version a manifest records (0 when it records none)."""
    try:
        return int(manifest.get("bundle_format", 0))
    except (TypeError, ValueError):
        raise RecurError(f"{MANIFEST}: bundle_format {manifest.get('bundle_format')!r}") from None


def read_registry(root: Path, bundle_format: int) -> dict[str, Any]:
    """``models.json`` of a bundle (a format 1/2 bundle: its four models, no performance)."""
    if bundle_format < REGISTRY_FORMAT:
        return {"primary": None, "models": [e.to_dict() for e in legacy_entries()]}
    try:
        data = json.loads((root / MODELS_FILE).read_text(encoding="utf-8"))
        [ModelEntry.from_dict(d) for d in data["models"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecurError(f"bundle {root}: {MODELS_FILE} cannot be read ({exc})") from None
    return data


def read_entries(root: Path, bundle_format: int) -> list[ModelEntry]:
    """The models a bundle lists (:func:`read_registry`)."""
    return [ModelEntry.from_dict(d) for d in read_registry(root, bundle_format)["models"]]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, manifest, settings, models (:mod:`recur.deploy.registry`
    entries) with their cutoffs and study performance, the chosen signature and the DL
    models' recalibration."""

    root: Path
    manifest: dict[str, Any]
    settings: dict[str, Any]
    #: ``{binary model: Youden cutoff on the tuning split}``
    cutoffs: dict[str, float]
    signature: str
    #: ``{DL model: its recalibration}`` (the identity in a format 1 bundle)
    recalibrations: dict[str, Recalibration]
    #: ``{model: its AUC on the tuning split}`` (empty for a bundle written before it was kept)
    tune_aucs: dict[str, float] = field(default_factory=dict)
    #: every model of the bundle, binary models first, then the Cox models
    entries: tuple[ModelEntry, ...] = ()
    #: ``{entry key: the study's performance}`` (:func:`study_performance`)
    performance: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the model the study's tuning split ranks first (None in a format 1/2 bundle)
    primary: str | None = None

    @property
    def binary(self) -> list[ModelEntry]:
        """The binary models (every kind but ``survival``), in the bundle's order."""
        return [e for e in self.entries if e.kind != "survival"]

    def cox(self, model: str) -> ModelEntry | None:
        """The Cox model of the binary ``model``, if the bundle has one."""
        return next((e for e in self.entries if e.kind == "survival" and e.name == model), None)

    def model_dir(self, entry: ModelEntry) -> Path:
        """The folder of a model's files."""
        return self.root / entry.folder

    def version(self, entry: ModelEntry) -> str:
        """A model's version: ``sha256:`` and the first 12 hex digits of the sha256 of its
        first file (the prefix keeps a digest of digits only, or of digits around one ``e``,
        a text for CSV readers such as pandas and spreadsheets); empty if not listed."""
        digest = str(self.manifest["files"].get(entry.files[0], ""))
        return f"sha256:{digest[:12]}" if digest else ""

    def dl_model_dir(self, model: str) -> Path:
        """Folder of the Pre or PrePost network (``weights.pt``, ``model.json``)."""
        return self.root / "models" / model

    def tabular_paths(self, model: str) -> tuple[Path, Path]:
        """``(model.skops, manifest.json)`` of a tabular model."""
        d = self.root / "models" / model
        return d / "model.skops", d / "manifest.json"

    def convert_settings(self):  # -> recur.preprocess.dicom_series.ConvertSettings
        """The conversion settings the workflow used."""
        from dataclasses import fields

        from recur.preprocess.dicom_series import ConvertSettings

        names = {f.name for f in fields(ConvertSettings)}
        s = self.settings["convert"]
        return ConvertSettings(**{k: v for k, v in s.items() if k in names})

    def roi_settings(self):  # -> recur.preprocess.dicom_rois.RoiSettings
        """How the workflow placed SEG / RTSTRUCT masks on the DP grid (the schema's
        defaults for a bundle written before the roi section existed)."""
        from recur.preprocess.dicom_rois import RoiSettings

        section = self.settings.get("roi")
        return RoiSettings.from_config(section) if section else RoiSettings.defaults()

    def registration_settings(self):  # -> recur.preprocess.settings.RegistrationSettings
        """The registration settings the workflow used."""
        from recur.preprocess.settings import RegistrationSettings

        # compatibility: bundles written before the region settings existed registered the
        # whole images (region_motion_mm then unused)
        old = {"region_margin_mm": None, "region_motion_mm": 0.0}
        return RegistrationSettings.from_config({**old, **self.settings["registration"]})

    def registration_threads(self) -> int:
        """Threads of one registration in the workflow (results may depend on them)."""
        return int(self.settings["registration"]["threads"])

    def crop_settings(self):  # -> recur.preprocess.settings.CropSettings
        """The crop settings the workflow used."""
        from recur.preprocess.settings import CropSettings

        # compatibility: bundles written before crop.post_frame existed cropped each time
        # point in its own frame (tests/deploy/test_predict.py loads such a bundle)
        return CropSettings.from_config({"post_frame": "own", **self.settings["crop"]})

    def radiomics_settings(self):  # -> recur.radiomics.settings.FeatureSettings
        """The regions and phases of the workflow's radiomics features (the ``radiomics``
        section; the bundle of a study with radiomics models records it)."""
        from recur.radiomics.settings import FeatureSettings

        if not isinstance(self.settings.get("radiomics"), Mapping):
            raise RecurError("bundle settings: section radiomics missing (radiomics models)")
        return FeatureSettings.from_config(self.settings["radiomics"])

    @property
    def radiomics_params(self) -> Path:
        """The pyradiomics parameter file the workflow's features used."""
        return self.root / RADIOMICS_PARAMS

    def cross_time_settings(self):  # -> recur.margin.settings.CrossTimeSettings
        """The post-to-pre registration settings (the ``margin`` section) the workflow used."""
        from recur.margin.settings import CrossTimeSettings

        if not isinstance(self.settings.get("margin"), Mapping):
            raise RecurError(
                "bundle settings: section margin missing (needed by crop.post_frame 'pre')"
            )
        # compatibility: bundles written before margin.rigid_motion_mm existed ran the rigid
        # stage on the whole images (its metric restricted to the region): null
        return CrossTimeSettings.from_config({"rigid_motion_mm": None, **self.settings["margin"]})


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Verify ``bundle_dir`` (:func:`verify_manifest`) and read its settings, models and
    cutoffs."""
    root = Path(bundle_dir)
    manifest = verify_manifest(root)
    fmt = bundle_format(manifest)
    try:
        settings = check_settings(json.loads((root / SETTINGS).read_text(encoding="utf-8")))
        choice = json.loads((root / CHOICE_FILE).read_text("utf-8"))
        signature = str(choice["signature"])
    except (OSError, ValueError, KeyError) as exc:
        raise RecurError(f"bundle {root}: settings or choice.json unreadable ({exc})") from None
    if signature not in DL_MODELS:
        raise RecurError(f"bundle {root}: choice.json names signature {signature!r}")
    registry = read_registry(root, fmt)
    entries = tuple(ModelEntry.from_dict(d) for d in registry["models"])
    if fmt < REGISTRY_FORMAT:
        entries = tuple(legacy_entries(signature))
    binary = [e.name for e in entries if e.kind != "survival"]
    cut_table = pd.read_csv(root / CUTOFFS)
    cutoffs = check_cutoffs(cut_table, f"bundle {root}: {CUTOFFS}", binary)
    tune_aucs = (
        dict(zip(cut_table["model"], cut_table["tune_auc"].astype(float), strict=True))
        if "tune_auc" in cut_table
        else {}
    )
    dl = [e.name for e in entries if e.kind == "dl"]
    if fmt >= RECALIBRATION_FORMAT:
        recal = {m: read_recalibration(root / f"models/{m}/recalibration.json") for m in dl}
    else:
        note = f"bundle format {fmt}: no recalibration, scores as given"
        recal = {m: Recalibration.identity(note) for m in dl}
    performance = {
        d_["name"] if d_["kind"] != "survival" else f"survival/{d_['name']}": dict(
            d_.get("performance") or {}
        )
        for d_ in registry["models"]
    }
    return Bundle(
        root,
        manifest,
        settings,
        cutoffs,
        signature,
        recal,
        tune_aucs,
        entries,
        performance,
        registry.get("primary"),
    )
