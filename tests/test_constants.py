"""The names every stage shares (recur.constants): their values and the orders derived from
one another."""

from __future__ import annotations

import ast
from pathlib import Path

from recur import constants as c


def test_phases_and_time_points_in_acquisition_order():
    assert c.PHASES == ("PS", "AP", "PVP", "DP")
    assert c.TIMEPOINTS == ("pre", "post")


def test_the_two_model_orders_hold_the_same_four_models():
    # built (and bundled by format 1 and 2 bundles): the DL models, then the tabular ones
    assert c.MODELS == ("Pre", "PrePost", "Clinical", "DL_Clinical")
    assert (*c.DL_MODELS, *c.TABULAR_MODELS) == c.MODELS
    # evaluated and reported: the clinical baseline first
    assert c.MODELS_PAPER_ORDER == ("Clinical", "Pre", "PrePost", "DL_Clinical")
    assert sorted(c.MODELS_PAPER_ORDER) == sorted(c.MODELS)
    assert not set(c.MARGIN_MODELS) & set(c.MODELS)


def test_table_columns():
    assert len(c.CLINICAL_FEATURES) == 5
    assert c.SPLIT_COLUMNS[0] == c.SCORE_COLUMNS[0] == "patient_id"
    assert set(c.SCORE_COLUMNS) - set(c.SPLIT_COLUMNS) == {"score"}
    assert c.DL_SCORE_COLUMNS[:-1] == c.SCORE_COLUMNS
    assert c.DL_SCORE_COLUMNS[-1] == "raw_score"
    assert c.SPLITS == ("train", "tune", "test")
    assert c.ER_HORIZON_MONTHS == 24.0


def test_the_module_imports_nothing_of_the_package():
    """Per-patient jobs and the rules files import it: it must stay free of imports."""
    tree = ast.parse(Path(c.__file__).read_text(encoding="utf-8"))
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [
        ("__future__", ["annotations"])
    ]


def test_variable_labels_name_every_predictor_and_table1_uses_them():
    from recur.evaluate.table1 import VARIABLES
    from recur.margin.models import FEATURES

    for name in (*c.CLINICAL_FEATURES, *FEATURES):
        assert c.variable_label(name) == c.VARIABLE_LABELS[name] != name
    assert c.variable_label("tp_g_l") == "Total protein (g/L)"
    assert c.variable_label("PrePost_signature") == "PrePost DL signature"
    assert c.variable_label("unknown_column") == "unknown_column"
    assert all(v.label == c.VARIABLE_LABELS[v.column] for v in VARIABLES)
