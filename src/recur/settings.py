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
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from recur.errors import RecurError

T = TypeVar("T")


def _frozen(value: Any) -> Any:
    """Lists become tuples so that a frozen settings object is hashable and immutable."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
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
    return cls(**{k: _frozen(section[k]) for k in field_names(cls)})


def section_defaults(section: str, **overrides: Any) -> dict[str, Any]:
    """The schema's defaults of config ``section`` with ``overrides`` applied (unknown keys
    refused), for code that runs outside the workflow."""
    from recur.config import defaults

    values = defaults()[section]
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise RecurError(f"config section {section!r} has no key(s) {unknown}")
    return {**values, **overrides}


def section_json(section: Mapping[str, Any]) -> str:
    """A config section as one compact JSON argument (keys sorted, so equal sections give
    equal text and Snakemake's parameter check reruns a rule only on a real change)."""
    return json.dumps(dict(section), sort_keys=True, separators=(",", ":"))


def settings_json(cls: type, section: Mapping[str, Any]) -> str:
    """The keys of ``section`` that ``cls`` reads, as one JSON argument (:func:`section_json`).

    For a section that several commands read in parts (``margin``) or that holds keys only the
    rules read (``registration.threads``): a rule passes only what its command reads, so a
    changed value reruns exactly the rules that read it.
    """
    return section_json({k: section[k] for k in field_names(cls)})


def store_floats(settings: Any, *names: str) -> None:
    """Store the fields ``names`` of a frozen settings object as floats (a number, or each
    number of a tuple; None stays None), from ``__post_init__``: YAML and JSON write 2 for 2.0,
    and a value must reach the science as the same float whether it came from a rule, a bundle
    or a test."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, tuple):
            value = tuple(float(v) for v in value)
        elif value is not None:
            value = float(value)
        object.__setattr__(settings, name, value)


def from_json(cls: type[T], text: str, name: str = "") -> T:
    """``cls`` built from a section serialised by :func:`section_json`."""
    try:
        section = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecurError(f"--settings is not valid JSON ({e.msg})") from None
    if not isinstance(section, dict):
        raise RecurError("--settings must be a JSON object (one config section)")
    return from_section(cls, section, name)


#: Which settings classes read each config section (``module:Class``), and the keys of a
#: section that the rules read themselves (DAG shape, a flag of one command). Together they
#: cover every key of the schema: ``tests/test_settings.py`` checks it both ways.
SECTION_READERS: dict[str, tuple[str, ...]] = {
    "clinical": ("recur.models.tabular:TabularSettings",),
    "dl_clinical": ("recur.models.tabular:TabularSettings",),
    "gradcam": ("recur.models.gradcam:GradcamSettings",),
    "registration": ("recur.preprocess.settings:RegistrationSettings",),
    "crop": ("recur.preprocess.settings:CropSettings",),
    "margin": (
        "recur.margin.settings:CrossTimeSettings",
        "recur.margin.settings:MarginMetricSettings",
    ),
}
RULE_KEYS: dict[str, tuple[str, ...]] = {
    "dl_clinical": ("stacking",),
    "registration": ("threads",),
    "margin": ("enabled", "models", "figure_patients", "features"),
}


def reader_classes(section: str) -> list[type]:
    """The settings classes registered for ``section`` in :data:`SECTION_READERS`."""
    import importlib

    out = []
    for ref in SECTION_READERS.get(section, ()):
        module, name = ref.split(":")
        out.append(getattr(importlib.import_module(module), name))
    return out
