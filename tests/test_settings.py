"""One source per setting: the schema holds every default, settings classes read the sections."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields

import pytest

from recur import config, settings
from recur.errors import RecurError
from recur.models.data import Augmentation
from recur.models.gradcam import GradcamSettings
from recur.models.tabular import TabularSettings

SCHEMA = config.load_schema()
SECTIONS = sorted(SCHEMA["properties"])


def schema_node(section: str) -> dict:
    """The schema of config section ``section`` (a nested one by its path, ``train.augment``)."""
    node = SCHEMA
    for part in section.split("."):
        node = node["properties"][part]
    return node


def test_every_top_level_key_has_a_reader():
    objects = {k for k, v in SCHEMA["properties"].items() if "properties" in v}
    values = set(SCHEMA["properties"]) - objects
    assert objects <= set(settings.SECTION_READERS), "sections without a settings class"
    assert values == set(settings.VALUE_READERS) | set(settings.SCALAR_READERS), "values"
    for ref in settings.VALUE_READERS.values():
        assert callable(settings.resolve(ref))


@pytest.mark.parametrize("section", sorted(settings.SECTION_READERS))
def test_every_schema_key_has_exactly_its_readers(section: str):
    keys = set(schema_node(section)["properties"])
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


@pytest.mark.parametrize("section", sorted(settings.SECTION_READERS))
def test_the_schema_defaults_build_every_settings_class(section: str):
    for cls in settings.reader_classes(section):
        built = cls.defaults() if hasattr(cls, "defaults") else None
        if isinstance(built, cls):
            defaults = config.defaults()
            for part in section.split("."):
                defaults = defaults[part]
            for f in fields(cls):
                want = defaults[f.name]
                if isinstance(want, dict):  # a nested section: its own class checks it
                    continue
                got = getattr(built, f.name)
                assert got == _tuples(want), f.name


def _tuples(value):
    """A config value with its lists (nested ones too) as tuples, as settings hold them."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


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


def test_every_nested_section_of_a_read_section_has_its_reader():
    """A nested object is a section of its own (``train.augment``), or one field holding the
    whole mapping (``scan.phase_patterns``)."""
    for section in settings.SECTION_READERS:
        whole = {
            f.name
            for cls in settings.reader_classes(section)
            for f in fields(cls)
            if str(f.type).startswith("Mapping")
        }
        for key, node in schema_node(section)["properties"].items():
            if node.get("type") == "object" and "properties" in node and key not in whole:
                assert f"{section}.{key}" in settings.SECTION_READERS, f"{section}.{key}"


def test_every_top_level_scalar_is_a_required_option_of_the_commands_that_read_it():
    """A scalar key (no section of its own) reaches each command that reads it as the
    required option of the same name; the rules pass it, so no command restates its default."""
    from recur.cli.main import build_parser

    scalars = {k for k, v in SCHEMA["properties"].items() if v["type"] not in ("object", "array")}
    assert scalars == set(settings.SCALAR_READERS)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for key, commands in settings.SCALAR_READERS.items():
        assert commands, key
        for command in commands:
            option = next(a for a in sub.choices[command]._actions if a.dest == key)
            assert option.required, (command, key)
            assert option.default is None, (command, key)
            if "enum" in SCHEMA["properties"][key]:  # the choices are the schema's
                assert list(option.choices) == SCHEMA["properties"][key]["enum"], command


def test_a_nested_section_takes_its_defaults_by_path():
    assert settings.section_defaults("train.augment", prob=0.5) == {
        **config.defaults()["train"]["augment"],
        "prob": 0.5,
    }
    with pytest.raises(RecurError, match="no key"):
        settings.section_defaults("train.offset", columns=[])


def test_omitted_keys_stay_out_of_the_json_argument():
    section = config.defaults()["train"]
    text = settings.section_json(section, omit=settings.RULE_KEYS["train"])
    assert set(json.loads(text)) == set(section) - {"threads", "signature"}


def test_a_whole_number_for_a_float_setting_becomes_a_float():
    st = GradcamSettings.defaults(cutoff=1)  # float | None: left as given
    assert st.cutoff == 1
    aug = Augmentation.defaults(prob=1, rotate_deg=90)
    assert isinstance(aug.prob, float)
    assert isinstance(aug.rotate_deg, float)
    assert aug.flip is True  # booleans are not numbers here


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
