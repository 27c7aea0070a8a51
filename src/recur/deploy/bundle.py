"""The portable model bundle: everything `recur predict` needs to score a new patient.

``results/bundle/`` holds the trained models and the settings they were trained with, and no
patient data (no ids, no predictions)::

    manifest.json                      sha256 of every other file, recur version, layout version
    settings.json                      convert, registration, crop, architecture, clinical,
                                       dl_clinical (and margin: the post-to-pre registration)
                                       settings the workflow used
    cutoffs.csv                        Youden cutoff of each model on the tuning split
    models/Pre/{weights.pt,model.json}           Pre signature network (weights only): the
                                                 full + fold models' ensemble, or the full model
    models/Pre/recalibration.json                its logistic recalibration (tuning split)
    models/PrePost/{weights.pt,model.json,recalibration.json}  PrePost signature network
    models/Clinical/{model.skops,manifest.json}  Clinical ExtraTrees pipeline
    models/DL_Clinical/{model.skops,manifest.json,choice.json}  DL_Clinical + chosen signature

:func:`write_bundle` copies the workflow's files into a temporary folder, writes the manifest
last and renames the folder into place. :func:`load_bundle` re-hashes every file and refuses a
bundle whose manifest does not verify (a changed, missing or extra file) with a
:class:`~recur.errors.RecurError` naming the file. The manifest is a checksum, not a
signature: it detects corruption and accidental edits, not a deliberate forgery that also
rewrites the manifest.

Bundle format 2 added the recalibration of the DL models (``recalibration.json``); a format 1
bundle has none, and its workflow reported the networks' scores as they are, so it reads as
the identity map.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recur import __version__
from recur.constants import DL_MODELS, MODELS, TABULAR_MODELS
from recur.errors import RecurError
from recur.evaluate.recalibration import Recalibration, read_recalibration
from recur.io import sha256

#: Version of the bundle layout (bumped when files move or change meaning).
BUNDLE_FORMAT = 2
#: The first bundle format with the DL models' ``recalibration.json``.
RECALIBRATION_FORMAT = 2
MANIFEST = "manifest.json"
SETTINGS = "settings.json"
CUTOFFS = "cutoffs.csv"
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


def required_files(bundle_format: int = BUNDLE_FORMAT) -> list[str]:
    """Relative paths every bundle of ``bundle_format`` holds besides ``manifest.json``
    (sorted)."""
    files = [SETTINGS, CUTOFFS]
    for m in DL_MODELS:
        files += [f"models/{m}/weights.pt", f"models/{m}/model.json"]
        if bundle_format >= RECALIBRATION_FORMAT:
            files.append(f"models/{m}/recalibration.json")
    for m in TABULAR_MODELS:
        files += [f"models/{m}/model.skops", f"models/{m}/manifest.json"]
    files.append("models/DL_Clinical/choice.json")
    return sorted(files)


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings with every section of :data:`SETTINGS_SECTIONS` present (as dicts)."""
    missing = [s for s in SETTINGS_SECTIONS if not isinstance(settings.get(s), Mapping)]
    if missing:
        raise RecurError(f"bundle settings: section(s) {', '.join(missing)} missing")
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in settings.items()}


def check_cutoffs(table: pd.DataFrame, where: str = CUTOFFS) -> dict[str, float]:
    """``{model: cutoff}`` of a cutoffs table; every model of :data:`recur.constants.MODELS`
    must be there."""
    if not {"model", "cutoff"} <= set(table.columns):
        raise RecurError(f"{where}: columns 'model' and 'cutoff' are required")
    cut = dict(zip(table["model"].astype(str), pd.to_numeric(table["cutoff"]), strict=True))
    missing = [m for m in MODELS if m not in cut or not pd.notna(cut[m])]
    if missing:
        raise RecurError(f"{where}: no cutoff for model(s) {', '.join(missing)}")
    return {m: float(cut[m]) for m in MODELS}


def write_bundle(
    outdir: str | Path,
    *,
    dl_models: Mapping[str, str | Path],
    recalibrations: Mapping[str, str | Path],
    tabular_models: Mapping[str, tuple[str | Path, str | Path]],
    choice: str | Path,
    cutoffs: str | Path,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Assemble the bundle in ``outdir`` (replaced as a whole, only once complete).

    ``dl_models[m]`` is the folder of the signature network of ``m`` (``weights.pt``,
    ``model.json``; the ensemble or the full model, ``train.signature``),
    ``recalibrations[m]`` its ``recalibration.json`` (checked by reading it),
    ``tabular_models[m]`` the ``(model.skops, manifest.json)`` pair, ``choice`` the
    DL_Clinical ``choice.json``, ``cutoffs`` the cutoffs table, ``settings`` the sections of
    :data:`SETTINGS_SECTIONS`. Returns the manifest written.
    """
    settings = check_settings(settings)
    cut_table = pd.read_csv(cutoffs)
    check_cutoffs(cut_table, str(cutoffs))
    sources: dict[str, Path] = {}
    for m in DL_MODELS:
        if m not in dl_models:
            raise RecurError(f"bundle: the {m} model folder is missing")
        for name in ("weights.pt", "model.json"):
            sources[f"models/{m}/{name}"] = Path(dl_models[m]) / name
        if m not in recalibrations:
            raise RecurError(f"bundle: the {m} recalibration is missing")
        read_recalibration(recalibrations[m])
        sources[f"models/{m}/recalibration.json"] = Path(recalibrations[m])
    for m in TABULAR_MODELS:
        if m not in tabular_models:
            raise RecurError(f"bundle: the {m} model files are missing")
        model_path, manifest_path = tabular_models[m]
        sources[f"models/{m}/model.skops"] = Path(model_path)
        sources[f"models/{m}/manifest.json"] = Path(manifest_path)
    sources["models/DL_Clinical/choice.json"] = Path(choice)
    for rel, src in sources.items():
        if not src.is_file():
            raise RecurError(f"bundle: {src} not found (for {rel})")

    outdir = Path(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        for rel, src in sources.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        # the bundle's models only, and only model, cutoff and how it was found (no ids)
        keep = ("model", "cutoff", "youden_j", "n_tune", "n_events_tune")
        rows = cut_table[cut_table["model"].astype(str).isin(MODELS)]
        rows[[c for c in keep if c in rows.columns]].to_csv(
            tmp / CUTOFFS, index=False, lineterminator="\n"
        )
        (tmp / SETTINGS).write_text(
            json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        manifest = {
            "format": "recur-model-bundle",
            "bundle_format": BUNDLE_FORMAT,
            "recur_version": __version__,
            "files": {rel: sha256(tmp / rel) for rel in required_files()},
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
    missing = sorted(set(required_files(fmt)) - set(files))
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
    return manifest


def bundle_format(manifest: Mapping[str, Any]) -> int:
    """The layout version a manifest records (0 when it records none)."""
    try:
        return int(manifest.get("bundle_format", 0))
    except (TypeError, ValueError):
        raise RecurError(f"{MANIFEST}: bundle_format {manifest.get('bundle_format')!r}") from None


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, manifest, settings, cutoffs, chosen signature and the
    DL models' recalibration."""

    root: Path
    manifest: dict[str, Any]
    settings: dict[str, Any]
    cutoffs: dict[str, float]
    signature: str
    #: ``{DL model: its recalibration}`` (the identity in a format 1 bundle)
    recalibrations: dict[str, Recalibration]
    #: ``{model: its AUC on the tuning split}`` (empty for a bundle written before it was kept)
    tune_aucs: dict[str, float] = field(default_factory=dict)

    def dl_model_dir(self, model: str) -> Path:
        """Folder of the Pre or PrePost network (``weights.pt``, ``model.json``)."""
        return self.root / "models" / model

    def tabular_paths(self, model: str) -> tuple[Path, Path]:
        """``(model.skops, manifest.json)`` of the Clinical or DL_Clinical model."""
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

        return RegistrationSettings.from_config(self.settings["registration"])

    def registration_threads(self) -> int:
        """Threads of one registration in the workflow (results may depend on them)."""
        return int(self.settings["registration"]["threads"])

    def crop_settings(self):  # -> recur.preprocess.settings.CropSettings
        """The crop settings the workflow used."""
        from recur.preprocess.settings import CropSettings

        # compatibility: bundles written before crop.post_frame existed cropped each time
        # point in its own frame (tests/deploy/test_predict.py loads such a bundle)
        return CropSettings.from_config({"post_frame": "own", **self.settings["crop"]})

    def cross_time_settings(self):  # -> recur.margin.settings.CrossTimeSettings
        """The post-to-pre registration settings (the ``margin`` section) the workflow used."""
        from recur.margin.settings import CrossTimeSettings

        if not isinstance(self.settings.get("margin"), Mapping):
            raise RecurError(
                "bundle settings: section margin missing (needed by crop.post_frame 'pre')"
            )
        return CrossTimeSettings.from_config(self.settings["margin"])


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Verify ``bundle_dir`` (:func:`verify_manifest`) and read its settings and cutoffs."""
    root = Path(bundle_dir)
    manifest = verify_manifest(root)
    try:
        settings = check_settings(json.loads((root / SETTINGS).read_text(encoding="utf-8")))
        choice = json.loads((root / "models/DL_Clinical/choice.json").read_text("utf-8"))
        signature = str(choice["signature"])
    except (OSError, ValueError, KeyError) as exc:
        raise RecurError(f"bundle {root}: settings or choice.json unreadable ({exc})") from None
    if signature not in DL_MODELS:
        raise RecurError(f"bundle {root}: choice.json names signature {signature!r}")
    cut_table = pd.read_csv(root / CUTOFFS)
    cutoffs = check_cutoffs(cut_table, f"bundle {root}: {CUTOFFS}")
    tune_aucs = (
        dict(zip(cut_table["model"], cut_table["tune_auc"].astype(float), strict=True))
        if "tune_auc" in cut_table
        else {}
    )
    if bundle_format(manifest) >= RECALIBRATION_FORMAT:
        recal = {m: read_recalibration(root / f"models/{m}/recalibration.json") for m in DL_MODELS}
    else:
        note = f"bundle format {bundle_format(manifest)}: no recalibration, scores as given"
        recal = {m: Recalibration.identity(note) for m in DL_MODELS}
    return Bundle(root, manifest, settings, cutoffs, signature, recal, tune_aucs)
