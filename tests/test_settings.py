"""One source per setting: the schema holds every default, settings classes read the sections."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields

import pytest

from recur import config, settings
from recur.errors import RecurError
from recur.models.tabular import TabularSettings

SCHEMA = config.load_schema()
SECTIONS = sorted(SCHEMA["properties"])


@pytest.mark.parametrize("section", sorted(settings.SECTION_READERS))
def test_every_schema_key_has_exactly_its_readers(section: str):
    keys = set(SCHEMA["properties"][section]["properties"])
    read = {f.name for cls in settings.reader_classes(section) for f in fields(cls)}
    rule_keys = set(settings.RULE_KEYS.get(section, ()))
    assert read <= keys, f"{section}: settings fields without a schema key: {read - keys}"
    assert keys <= read | rule_keys, f"{section}: schema keys nobody reads: {keys - read}"
    assert not (read & rule_keys), f"{section}: read by a class and by the rules"


@pytest.mark.parametrize("section", sorted(settings.SECTION_READERS))
def test_settings_classes_restate_no_default(section: str):
    for cls in settings.reader_classes(section):
        for f in fields(cls):
            assert f.default is MISSING, (cls, f.name)
            assert f.default_factory is MISSING, (cls, f.name)


def test_from_section_takes_the_schema_defaults_and_overrides():
    st = TabularSettings.defaults("dl_clinical", n_estimators=7)
    want = config.defaults()["dl_clinical"]
    assert st.n_estimators == 7
    assert st.estimator == want["estimator"]
    assert st.cv_folds == want["cv_folds"]
    with pytest.raises(RecurError, match="no key"):
        settings.section_defaults("clinical", n_trees=3)


def test_a_section_round_trips_through_its_json_argument():
    section = settings.section_defaults("clinical", max_features=0.5, class_weight="balanced")
    text = settings.section_json(section)
    assert text == settings.section_json(dict(reversed(list(section.items()))))  # key order
    assert json.loads(text) == section
    assert settings.from_json(TabularSettings, text) == TabularSettings.from_config(section)


def test_missing_keys_and_bad_json_are_one_line_errors():
    section = config.defaults()["clinical"]
    del section["cv_folds"]
    with pytest.raises(RecurError, match=r"missing key\(s\) \['cv_folds'\]"):
        TabularSettings.from_config(section)
    with pytest.raises(RecurError, match="not valid JSON"):
        settings.from_json(TabularSettings, "{estimator: logistic}")
    with pytest.raises(RecurError, match="expected sqrt, log2 or a fraction"):
        TabularSettings.defaults(max_features="all")


def test_a_rule_passes_only_the_keys_its_command_reads():
    from recur.margin.settings import CrossTimeSettings, MarginMetricSettings
    from recur.preprocess.settings import RegistrationSettings

    cfg = config.defaults()
    text = settings.settings_json(RegistrationSettings, cfg["registration"])
    assert "threads" not in json.loads(text)
    assert settings.from_json(RegistrationSettings, text) == RegistrationSettings.defaults()
    metric = json.loads(settings.settings_json(MarginMetricSettings, cfg["margin"]))
    assert sorted(metric) == ["iso_spacing_mm", "mode", "smooth_voxels"]
    cross = json.loads(settings.settings_json(CrossTimeSettings, cfg["margin"]))
    assert not set(cross) & set(metric)
    assert not set(cross) & set(settings.RULE_KEYS["margin"])


def test_numbers_reach_the_settings_as_floats():
    from recur.preprocess.settings import CropSettings, RegistrationSettings

    st = RegistrationSettings.defaults(learning_rate=3, smoothing_sigmas_mm=[2, 1, 0])
    assert type(st.learning_rate) is float
    assert [type(v) for v in st.smoothing_sigmas_mm] == [float] * 3
    assert type(CropSettings.defaults(spacing_mm=1).spacing_mm) is float
    assert CropSettings.defaults(spacing_mm=None).spacing_mm is None
