"""How a command receives its config section(s): ``--settings JSON`` from a rule
(:func:`recur.settings.section_json`), or, for a command a person runs, ``--config FILE``
(the workflow's YAML; the schema's defaults where it is silent) with options that override
single keys. No option restates a default: an option left out means "the config's value"."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from recur.errors import RecurError


def add_settings(p: argparse.ArgumentParser, section: str, *, person: bool = False) -> None:
    """``--settings`` (required from a rule); with ``person``, ``--config`` instead as the
    usual way and ``--settings`` optional."""
    if person:
        p.add_argument(
            "--config",
            metavar="YAML",
            help=f"config file whose '{section}' section to use (default: the schema's "
            "defaults; docs/configuration.md)",
        )
    p.add_argument(
        "--settings",
        required=not person,
        metavar="JSON",
        help=f"the config section '{section}' as JSON (as the rules pass it)",
    )


def section_of(a: argparse.Namespace, section: str, **options: Any) -> dict[str, Any]:
    """The section a command runs with: ``--settings`` if given, else ``--config``'s (or the
    schema's defaults); then every option in ``options`` that was given (not None)."""
    from recur import config

    if getattr(a, "settings", None):
        try:
            values = json.loads(a.settings)
        except json.JSONDecodeError as e:
            raise RecurError(f"--settings is not valid JSON ({e.msg})") from None
        if not isinstance(values, Mapping):
            raise RecurError("--settings must be a JSON object (one config section)")
        values = dict(values)
    else:
        values = dict(config.load_config(getattr(a, "config", None))[section])
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(config.defaults()[section]))
    if unknown:
        raise RecurError(f"config section {section!r} has no key(s) {unknown}")
    return {**values, **given}


def schema_default(section: str, key: str | None = None) -> Any:
    """The schema's default of ``section.key`` (or of a top-level ``section``): for an option
    a person may leave out, read from the one source instead of restated."""
    from recur import config

    value = config.defaults()[section]
    return value if key is None else value[key]
