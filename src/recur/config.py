"""Configuration: concise messages for a config that breaks ``schemas/config.schema.yaml``.

The workflow validates with ``snakemake.utils.validate`` (which also fills defaults); this
module runs the same JSON schema first so that a typo reads as one line per problem
("config: unknown key 'sourc' in cohort (allowed: source, dir, ...)") instead of a dump of the
whole schema.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # jsonschema is imported where a config is checked (not by every job)
    from jsonschema.exceptions import ValidationError

from recur.errors import RecurError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=4)
def _parsed_schema(path: Path) -> dict[str, Any]:
    """The schema file parsed once per process (libyaml's loader where installed: every
    ``python -m recur`` job reads the schema's defaults when it builds its parser)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config schema (a copy: callers may change it)."""
    return copy.deepcopy(_parsed_schema(Path(path).resolve()))


def _location(error: ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _subschema(schema: dict[str, Any], path: list[Any]) -> dict[str, Any]:
    node = schema
    for key in path:
        node = node.get("properties", {}).get(key, {}) if isinstance(key, str) else node
    return node


def describe_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """One human-readable line per schema violation of ``config`` (empty list: valid)."""
    problems = []
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = _location(err)
        if err.validator == "additionalProperties":
            allowed = sorted(_subschema(schema, list(err.absolute_path)).get("properties", {}))
            keys = set(err.instance) if isinstance(err.instance, dict) else set()
            extra = sorted(keys - set(allowed))
            for key in extra:
                scope = f"in '{where}'" if err.absolute_path else "at the top level"
                problems.append(
                    f"config: unknown key '{key}' {scope} (allowed: {', '.join(allowed)})"
                )
        else:
            problems.append(f"config: '{where}' = {err.instance!r}: {err.message}")
    return problems


_SCALARS = {"boolean": bool, "integer": int, "number": (int, float)}


def coerce_command_line_text(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Give nested values typed on the command line their schema type, in place.

    Snakemake reads a nested ``--config`` value (``--config cohort='{tables_edited: true}'``)
    with YAML's base loader, so every leaf arrives as text; a text leaf whose key is a
    boolean, integer or number in the schema, and that YAML reads as one, becomes that value.
    Any other text is left for the schema check to refuse.
    """

    def walk(node: dict[str, Any], values: dict[str, Any]) -> None:
        for key, value in values.items():
            sub = node.get("properties", {}).get(key, {})
            if isinstance(value, dict):
                walk(sub, value)
                continue
            kind = sub.get("type")
            if not isinstance(value, str) or not isinstance(kind, str) or kind not in _SCALARS:
                continue
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
            wanted = _SCALARS[kind]
            if isinstance(parsed, wanted) and (kind == "boolean") == isinstance(parsed, bool):
                values[key] = parsed

    walk(schema, config)


def check_config(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> None:
    """Raise :class:`RecurError` listing every problem of ``config`` (command-line text given
    its schema type first: :func:`coerce_command_line_text`)."""
    schema = load_schema(schema_path)
    coerce_command_line_text(config, schema)
    problems = describe_errors(config, schema)
    if problems:
        raise RecurError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def defaults(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full default configuration implied by the schema (a new copy each call)."""
    if schema is None:
        return copy.deepcopy(_schema_defaults())
    return with_defaults({}, schema)


@functools.lru_cache(maxsize=1)
def _schema_defaults() -> dict[str, Any]:
    return with_defaults({}, _parsed_schema(SCHEMA_PATH))


def with_defaults(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config`` (already checked) with every key it leaves out taken from the schema, as
    Snakemake's ``validate(..., set_default=True)`` fills the workflow's config."""
    schema = schema or load_schema()

    def merge(node: dict[str, Any], given: Any) -> Any:
        if node.get("type") == "object" and "properties" in node and isinstance(given, dict):
            filled = {
                k: merge(sub, given[k]) if k in given else fill(sub)
                for k, sub in node["properties"].items()
            }
            return filled | {k: v for k, v in given.items() if k not in node["properties"]}
        return given

    def fill(node: dict[str, Any]) -> Any:
        if node.get("type") == "object" and "properties" in node:
            return {k: fill(v) for k, v in node["properties"].items()}
        return copy.deepcopy(node.get("default"))

    return merge(schema, config)


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """A config YAML (the workflow's format) checked against the schema, every key filled
    (the schema's defaults where it is silent); ``None``: the defaults alone. For commands a
    person runs outside the workflow (``recur synth``, ``recur scan``, ``recur convert``)."""
    if path is None:
        return defaults()
    try:
        given = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RecurError(f"config {Path(path).name}: cannot be read ({exc})") from None
    if not isinstance(given, dict):
        raise RecurError(f"config {Path(path).name}: expected a mapping of sections")
    check_config(given)
    return with_defaults(given)


def reference_rows(schema: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """``(key path, default, description)`` for every leaf key of the schema, in order."""
    schema = schema or load_schema()
    rows: list[tuple[str, str, str]] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            for key, sub in node["properties"].items():
                walk(sub, f"{path}.{key}" if path else key)
        else:
            default = yaml.safe_dump(node.get("default"), default_flow_style=True).strip()
            default = default.removesuffix("...").strip()
            desc = " ".join(str(node.get("description", "")).split())
            rows.append((path, default, desc))

    walk(schema, "")
    return rows


def reference_markdown(schema: dict[str, Any] | None = None) -> str:
    """The configuration reference as a Markdown table (docs/configuration.md)."""
    lines = ["| key | default | what it does |", "|---|---|---|"]
    for key, default, desc in reference_rows(schema):
        cell, text = default.replace("|", "\\|"), desc.replace("|", "\\|")
        lines.append(f"| `{key}` | `{cell}` | {text} |")
    return "\n".join(lines) + "\n"
