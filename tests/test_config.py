"""Unit tests of the configuration helpers (schema messages, defaults, the generated reference)."""

from __future__ import annotations

import re

import pytest

from recur import config
from recur.errors import RecurError

from .conftest import REPO


def test_defaults_validate_and_fill_every_section():
    d = config.defaults()
    assert d["cohort"]["source"] == "synthetic"
    assert d["synthetic"]["n_test"] == [20, 15]
    assert config.describe_errors(d, config.load_schema()) == []


def test_unknown_nested_key_message_lists_allowed_keys():
    problems = config.describe_errors({"cohort": {"sauce": "x"}}, config.load_schema())
    assert problems == [
        "config: unknown key 'sauce' in 'cohort' (allowed: clinical, dir, rois, series, source, "
        "tables_edited)"
    ]


def test_type_and_enum_errors():
    problems = config.describe_errors(
        {"synthetic": {"n_train": "many"}, "device": "gpu"}, config.load_schema()
    )
    assert any(p.startswith("config: 'synthetic.n_train' = 'many'") for p in problems)
    assert any(p.startswith("config: 'device' = 'gpu'") for p in problems)


def test_offset_defaults_and_outcome_columns_refused():
    offset = config.defaults()["train"]["offset"]
    assert offset == {
        "models": ["Pre"],
        "variables": ["tumor_number", "hbv", "tp_g_l", "afp_ng_ml"],
        "c": 1.0,
    }
    schema = config.load_schema()
    for leak in ("er", "rfs_months", "rfs_event", "patient_id"):
        problems = config.describe_errors({"train": {"offset": {"variables": [leak]}}}, schema)
        assert any(p.startswith("config: 'train.offset.variables.0'") for p in problems), leak
    problems = config.describe_errors({"train": {"offset": {"c": 0}}}, schema)
    assert any(p.startswith("config: 'train.offset.c' = 0") for p in problems)


def test_check_config_raises_user_error():
    with pytest.raises(RecurError, match="unknown key 'x' at the top level"):
        config.check_config({"x": 1})


def test_docs_config_reference_is_current():
    """docs/configuration.md's table is exactly what `recur config-doc` prints."""
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    m = re.search(
        r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", text, re.S
    )
    assert m, "docs/configuration.md lost its config-reference markers"
    assert m.group(1) == config.reference_markdown(), (
        "docs/configuration.md's table is stale: run  bash scripts/update-config-doc"
    )


def test_command_line_text_gets_its_schema_type():
    """Snakemake hands nested --config values over as text: typed keys get their type back."""
    cfg = {
        "cohort": {"tables_edited": "true", "dir": "123"},
        "crop": {"size": "96"},
        "split": {"tune_fraction": "0.25"},
        "train": {"batch_size": "two", "max_pool": "maybe"},
    }
    config.coerce_command_line_text(cfg, config.load_schema())
    assert cfg["cohort"] == {"tables_edited": True, "dir": "123"}  # dir stays text
    assert cfg["crop"]["size"] == 96
    assert cfg["split"]["tune_fraction"] == 0.25
    assert cfg["train"] == {"batch_size": "two", "max_pool": "maybe"}  # left for the check
    problems = config.describe_errors(cfg, config.load_schema())
    assert any("'train.batch_size' = 'two'" in p for p in problems)


def test_defaults_are_a_fresh_copy_each_call():
    first = config.defaults()
    first["synthetic"]["n_test"].append(99)
    first["synthetic"]["er_share"]["train"] = 0.9
    again = config.defaults()
    assert 99 not in again["synthetic"]["n_test"]
    assert again["synthetic"]["er_share"]["train"] != 0.9
    assert config.load_schema() is not config.load_schema()
