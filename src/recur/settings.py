"""Settings objects built from the validated configuration: one source for every setting.

A setting's type, range, description and default live in ``schemas/config.schema.yaml`` and
nowhere else. Each config section is read by one frozen dataclass (its *settings class*) whose
fields carry no defaults: :func:`from_section` builds it from the section as the schema
validated it (every key present, defaults filled), so the workflow, the command line,
``recur predict`` and the bundle all read the same values. Code outside the workflow (tests,
bench scripts, a notebook) starts from the schema's defaults with :func:`section_defaults`.

A rule hands its section to a command as one JSON argument (:func:`section_json`), so a
changed value reruns exactly the rules that read that section; the command rebuilds the
settings object with :func:`from_json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, ClassVar, TypeVar

from recur.errors import RecurError

T = TypeVar("T")


def _frozen(value: Any, annotation: object = None) -> Any:
    """Lists become tuples so that a frozen settings object is hashable and immutable; a whole
    number for a ``float`` field becomes a float (as the command line's ``type=float`` made
    it, so that ``1`` and ``1.0`` in the config give the same output)."""
    kind = getattr(annotation, "__name__", str(annotation))
    if isinstance(value, list):
        inner = "float" if kind.startswith("tuple[float") else None
        return tuple(_frozen(v, inner) for v in value)
    if kind in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def field_names(cls: type) -> tuple[str, ...]:
    """The names of a settings class's fields (the config keys it reads)."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a settings dataclass")
    return tuple(f.name for f in fields(cls))


def from_section(cls: type[T], section: Mapping[str, Any], name: str = "") -> T:
    """``cls`` built from a validated config ``section``.

    Every field must be present (the schema fills defaults); keys the class does not read are
    ignored here (the rules or another settings class read them; ``tests/test_settings.py``
    checks that every schema key has a reader).
    """
    where = f"config section {name!r}" if name else "config section"
    missing = [k for k in field_names(cls) if k not in section]
    if missing:
        raise RecurError(f"{where}: missing key(s) {missing} (was the config validated?)")
    return cls(**{f.name: _frozen(section[f.name], f.type) for f in fields(cls)})


def section_defaults(section: str, **overrides: Any) -> dict[str, Any]:
    """The schema's defaults of config ``section`` with ``overrides`` applied (unknown keys
    refused), for code that runs outside the workflow. A nested section is named by its path
    (``"train.augment"``)."""
    from recur.config import defaults

    values: dict[str, Any] = defaults()
    for part in section.split("."):
        values = values[part]
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise RecurError(f"config section {section!r} has no key(s) {unknown}")
    return {**values, **overrides}


def section_json(
    section: Mapping[str, Any], cls: type | None = None, omit: Iterable[str] = ()
) -> str:
    """A config section as one compact JSON argument (keys sorted, so equal sections give
    equal text and Snakemake's parameter check reruns a rule only on a real change).

    With ``cls``, only the keys that settings class reads: a rule whose command reads part
    of a section (e.g. the bootstrap keys of ``evaluate``) then reruns only when that part
    changes. ``omit``: keys left out (the section's :data:`RULE_KEYS` that the rule reads
    itself and the command does not, so that changing them reruns no job of that rule).
    """
    keys = field_names(cls) if cls is not None else tuple(section)
    left_out = set(omit)
    kept = {k: section[k] for k in keys if k not in left_out}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


def settings_json(cls: type, section: Mapping[str, Any]) -> str:
    """The keys of ``section`` that ``cls`` reads, as one JSON argument (:func:`section_json`).

    For a section that several commands read in parts (``margin``) or that holds keys only the
    rules read (``registration.threads``): a rule passes only what its command reads, so a
    changed value reruns exactly the rules that read it.
    """
    return section_json(section, cls)


def json_section(text: str) -> dict[str, Any]:
    """The section serialised by :func:`section_json` (a ``--settings`` argument)."""
    try:
        section = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecurError(f"--settings is not valid JSON ({e.msg})") from None
    if not isinstance(section, dict):
        raise RecurError("--settings must be a JSON object (one config section)")
    return section


def from_json(cls: type[T], text: str, name: str = "") -> T:
    """``cls`` built from a section serialised by :func:`section_json`."""
    return from_section(cls, json_section(text), name)


class SectionSettings:
    """Base of a settings dataclass that reads config section :attr:`SECTION` (or part of it):
    :meth:`from_config` for the workflow and the commands, :meth:`defaults` for code outside
    the workflow, :meth:`from_json` for a command given the section by :func:`section_json`."""

    SECTION: ClassVar[str]

    @classmethod
    def from_config(cls: type[T], section: Mapping[str, Any]) -> T:
        return from_section(cls, section, cls.SECTION)  # type: ignore[attr-defined]

    @classmethod
    def defaults(cls: type[T], **overrides: Any) -> T:
        """The schema's defaults with ``overrides`` (tests, bench scripts, a notebook)."""
        return cls.from_config(section_defaults(cls.SECTION, **overrides))  # type: ignore[attr-defined]

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return from_json(cls, text, cls.SECTION)  # type: ignore[attr-defined]

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """The config keys this class reads."""
        return field_names(cls)

    @classmethod
    def json(cls, section: Mapping[str, Any]) -> str:
        """The part of ``section`` this class reads, as one JSON argument (:func:`section_json`)."""
        return section_json(section, cls)


#: Which settings classes read each config section (``module:Class``; a nested section by its
#: path, ``train.augment``), and the keys of a section that the rules read themselves (DAG
#: shape, a flag of one command). Together they cover every key of the schema:
#: ``tests/test_settings.py`` checks it both ways.
SECTION_READERS: dict[str, tuple[str, ...]] = {
    "cohort": ("recur.cohort.contract:CohortSettings",),
    "synthetic": ("recur.synthetic.cohort:SyntheticSettings",),
    "scan": ("recur.cohort.scan:ScanSettings",),
    "clinical": ("recur.models.tabular:TabularSettings",),
    "dl_clinical": ("recur.models.tabular:TabularSettings",),
    "evaluate": (
        "recur.evaluate.settings:BootstrapSettings",
        "recur.evaluate.settings:DecisionCurveSettings",
        "recur.evaluate.settings:CalibrationSettings",
        "recur.evaluate.settings:Table1Settings",
    ),
    "convert": ("recur.preprocess.dicom_series:ConvertSettings",),
    "roi": ("recur.preprocess.dicom_rois:RoiSettings",),
    "survival": ("recur.survival.settings:SurvivalSettings",),
    "split": ("recur.cohort.split:SplitSettings",),
    "gradcam": ("recur.models.gradcam:GradcamSettings",),
    "qc": ("recur.cohort.exclusions:QcSettings",),
    "train": ("recur.models.train:TrainConfig",),
    "train.offset": ("recur.models.train:OffsetSettings",),
    "train.augment": ("recur.models.data:Augmentation",),
    "registration": ("recur.preprocess.settings:RegistrationSettings",),
    "crop": ("recur.preprocess.settings:CropSettings",),
    "margin": (
        "recur.margin.settings:CrossTimeSettings",
        "recur.margin.settings:MarginMetricSettings",
    ),
    "radiomics": (
        "recur.radiomics.settings:FeatureSettings",
        "recur.radiomics.settings:ModelSettings",
    ),
}
RULE_KEYS: dict[str, tuple[str, ...]] = {
    "dl_clinical": ("stacking",),
    # threads: the rules' threads; signature: which model folder scores (the DAG's shape)
    "train": ("threads", "signature"),
    "registration": ("threads",),
    "margin": ("enabled", "models", "figure_patients", "features"),
    "radiomics": ("enabled", "params"),
}
#: Top-level scalar keys (no section of their own): the commands the rules pass each one to,
#: as the required option of the same name (``--device``).
SCALAR_READERS: dict[str, tuple[str, ...]] = {
    "device": ("train-dl", "ensemble-dl", "gradcam"),
}
#: The top-level keys that are not sections (a list or a single value) and the function
#: that reads each.
VALUE_READERS: dict[str, str] = {
    "exclude": "recur.cohort.exclusions:config_exclusions",
}


def resolve(ref: str) -> Any:
    """The object named by ``"module:name"``."""
    import importlib

    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def reader_classes(section: str) -> list[type]:
    """The settings classes registered for ``section`` in :data:`SECTION_READERS`."""
    return [resolve(ref) for ref in SECTION_READERS.get(section, ())]
