"""Figure 1 flow counts, Table S1 aggregation, TRIPOD+AI items (values worked out by hand)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from recur.cohort.exclusions import Exclusion, write_placeholders
from recur.errors import RecurError
from recur.reporting import report as rp
from recur.reporting import tripod
from recur.reporting.design import StudyDesign


def _flow_inputs():
    patients = pd.DataFrame(
        {
            "patient_id": ["P1", "P2", "P3", "P4", "P5", "P6", "P7"],
            "site": ["A", "A", "A", "A", "A", "B", "B"],
            "cohort": ["train"] * 5 + ["test"] * 2,
        }
    )
    cfg = pd.DataFrame({"patient_id": ["P2"], "reason": ["withdrew consent"]})
    qc = pd.DataFrame(
        {
            "patient_id": ["P6", "P6"],
            "stage": ["convert", "check_mask"],
            "timepoint": ["pre", "post"],
            "reason": ["1 missing slice(s)", "mask size differs"],
        }
    )
    split = pd.DataFrame(
        {
            "patient_id": ["P1", "P3", "P4", "P5", "P7"],
            "site": ["A", "A", "A", "A", "B"],
            "cohort": ["train"] * 4 + ["test"],
            "split": ["train", "train", "tune", "train", "test"],
        }
    )
    return patients, cfg, qc, split


def _n(flow, box, site="all", split="", reason=""):
    r = flow[
        (flow.box == box) & (flow.site == site) & (flow.split == split) & (flow.reason == reason)
    ]
    assert len(r) == 1, (box, site, split, reason)
    return int(r["n"].iloc[0]), r["patient_ids"].iloc[0]


def test_flow_table_counts():
    flow = rp.flow_table(*_flow_inputs())
    assert _n(flow, "cohort") == (7, "P1;P2;P3;P4;P5;P6;P7")
    assert _n(flow, "cohort", "A")[0] == 5
    assert _n(flow, "cohort", "B")[0] == 2
    assert _n(flow, "excluded_config", reason="withdrew consent") == (1, "P2")
    # a patient with two records is counted once, with its first record as the reason
    assert _n(flow, "excluded_qc") == (1, "P6")
    assert _n(flow, "excluded_qc", reason="convert pre: 1 missing slice(s)") == (1, "P6")
    assert _n(flow, "analysed", split="train") == (3, "P1;P3;P5")
    assert _n(flow, "analysed", "A", "tune") == (1, "P4")
    assert _n(flow, "analysed", "B", "test") == (1, "P7")
    text = rp.flow_lines(flow)
    assert text["cohort"][0] == "Patients in the cohort files: n = 7"
    assert text["excluded"][0] == "Excluded: n = 2"
    assert any("P6" in line for line in text["excluded"])
    assert text["test"] == ["External test: n = 1", "B: n = 1"]


def test_flow_table_refuses_counts_that_do_not_add_up():
    patients, cfg, qc, split = _flow_inputs()
    with pytest.raises(RecurError, match="7 patients in the cohort files"):
        rp.flow_table(patients, cfg, qc.iloc[:0], split)  # P6 lost
    with pytest.raises(RecurError, match="do not add up"):
        rp.flow_table(patients, pd.DataFrame({"patient_id": ["P1"], "reason": ["x"]}), qc, split)


def test_write_flow_files(tmp_path: Path):
    flow = rp.flow_table(*_flow_inputs())
    rp.write_flow(flow, tmp_path / "f.csv", tmp_path / "f.png", tmp_path / "f.pdf")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    back = pd.read_csv(tmp_path / "f.csv", keep_default_na=False)
    assert back["n"].sum() == flow["n"].sum()


def _acq(tr, te, fs=3.0, model="Skyra", spacing=(0.75, 0.75), rows=256, cols=224):
    return {
        "manufacturer": "SIEMENS",
        "model": model,
        "field_strength_t": fs,
        "repetition_time_ms": tr,
        "echo_time_ms": te,
        "flip_angle_deg": 10.0,
        "slice_thickness_mm": 3.0,
        "rows": rows,
        "columns": cols,
        "pixel_spacing_mm": list(spacing),
        "n_slices": 40,
        "slice_spacing_mm": 3.0,
    }


def test_table_s1_medians_ranges_and_counts():
    acq = {
        ("P1", "pre"): {"AP": _acq(3.0, 1.0)},
        ("P1", "post"): {"AP": _acq(5.0, 1.0)},
        ("P2", "pre"): {"AP": _acq(4.0, 1.0, model="Aera", spacing=(0.7, 0.8), rows=320)},
        ("P3", "pre"): {"AP": _acq(4.5, 2.0, fs=1.5), "DP": _acq(4.5, 2.0, fs=1.5)},
    }
    rows = rp.acquisition_rows(acq, {"P1": "A", "P2": "A", "P3": "B"})
    assert len(rows) == 5
    assert "n_slices" not in rows.columns  # only Table S1 keys are carried
    t = rp.table_s1(rows).set_index(["Site", "Phase"])
    a = t.loc[("A", "AP")]
    assert a["Series (n)"] == 3
    assert a["TR (ms)"] == "4 (3–5)"  # median of 3, 5, 4
    assert a["TE (ms)"] == "1"  # all equal: one value
    assert a["Field strength (T)"] == "3"
    assert a["Pixel spacing (mm)"] == "0.75"  # (0.7 + 0.8) / 2 = 0.75 for P2 too
    assert a["Scanner (n series)"] == "SIEMENS Skyra (2); SIEMENS Aera (1)"
    assert a["Matrix (n series)"] == "224×256 (2); 224×320 (1)"
    b = t.loc[("B", "AP")]
    assert b["Field strength (T)"] == "1.5"
    assert b["Series (n)"] == 1
    assert list(t.index) == [("A", "AP"), ("B", "AP"), ("B", "DP")]


def test_median_range_and_missing():
    assert rp.median_range(pd.Series([1.0, None, 3.0])) == "2 (1–3)"
    assert rp.median_range(pd.Series([None, None])) == "not recorded"


def test_read_acquisitions_skips_placeholders(tmp_path: Path):
    good = tmp_path / "P1" / "pre" / "acquisition.json"
    good.parent.mkdir(parents=True)
    good.write_text(json.dumps({"DP": _acq(4.0, 1.0)}))
    bad = tmp_path / "P2" / "pre" / "acquisition.json"
    write_placeholders([bad], [Exclusion("P2", "convert", "pre", "x")])
    assert list(rp.read_acquisitions([good, bad])) == [("P1", "pre")]


#: A study design of the TRIPOD tests (the paper's choices, no margin models).
_DESIGN = StudyDesign(
    clinical_features=("afp_ng_ml",),
    tune_fraction=0.2,
    impute="median",
    on_failure="stop",
    stacking="in_sample",
    clinical_estimator="extra_trees",
    dl_clinical_estimator="extra_trees",
    offset_models=(),
    offset_variables=(),
)


def test_tripod_items_fill_what_the_run_knows():
    patients, cfg, qc, split = _flow_inputs()
    flow = rp.flow_table(patients, cfg, qc, split)
    clinical = pd.DataFrame(
        {
            "patient_id": ["P1", "P3", "P4", "P5", "P7"],
            "er": [1, 0, 0, 1, 1],
            "afp_ng_ml": [1.0, None, 3.0, 4.0, 5.0],
        }
    )
    table2 = pd.DataFrame(
        {
            "cohort": ["external"],
            "model": ["Clinical"],
            "metric": ["auc"],
            "estimate": [0.7],
            "ci_low": [0.55],
            "ci_high": [0.85],
            "n": [1],
            "n_events": [1],
        }
    )
    cal = pd.DataFrame(
        {
            "cohort": ["external"],
            "model": ["Clinical"],
            "brier": [0.2],
            "intercept": [0.1],
            "slope": [0.9],
        }
    )
    settings = _DESIGN
    items = tripod.tripod_items(clinical, split, flow, table2, cal, settings)
    by = items.set_index("item")
    spec_item = by.index[by["text"].str.startswith("Deep-learning models")][0]
    spec = by.loc[spec_item, "text"]
    assert "the DL signature (in-sample for the training patients" in spec
    assert "offset" not in spec
    assert "Clinical model: ExtraTrees on afp_ng_ml; DL_Clinical: ExtraTrees on" in spec
    other = dataclasses.replace(
        settings,
        clinical_estimator="logistic",
        stacking="crossfit",
        offset_models=("Pre", "PrePost"),
        offset_variables=("hbv", "afp_ng_ml"),
    )
    spec = tripod.tripod_items(clinical, split, flow, table2, cal, other).set_index("item")
    spec = spec.loc[spec_item, "text"]
    assert "out-of-fold DL signatures (cross-fitting)" in spec
    assert "Clinical model: L2-penalised logistic regression (penalty chosen by" in spec
    assert "; DL_Clinical: ExtraTrees on" in spec
    assert "Pre and PrePost trained with a fixed clinical log-odds offset" in spec
    assert "(logistic regression on hbv, afp_ng_ml, training patients)" in spec
    assert "training: n = 3, ER 2/3 (66.7%)" in by.loc["10", "text"]
    assert "afp_ng_ml: 1/5 (20.0%)" in by.loc["11", "text"]
    assert "AUC 0.700 (95% CI 0.550–0.850" in by.loc["23a", "text"]
    assert "Brier 0.200" in by.loc["23b", "text"]
    assert "1 excluded by configuration and 1 by image QC" in by.loc["20a-c", "text"]
    assert by.loc["1", "status"] == tripod.AUTHORS
    md = rp.to_markdown(items)
    assert md.count("\n") == len(items) + 2


# --------------------------------------------------------------------------- workflow
BROKEN = "P0003"  # training patient whose pre/AP series loses a middle slice
CONFIG_OUT = "P0006"  # excluded in the config (seed 5: training keeps 4 ER of 8)

SMALL_CONFIG = """\
cohort: {{source: directory, dir: {cohort}}}
train:
  epochs: 2
  patience: 2
  crossfit_folds: 2
  batch_size: 8
  widths: [8, 8, 16, 16]
evaluate: {{bootstrap: 200}}
registration: {{iterations: 30}}
margin: {{figure_patients: 1, iterations: 30}}
gradcam: {{n_per_group: 1}}
exclude:
  - {{patient_id: {config_out}, reason: "lost to follow-up"}}
qc: {{on_failure: {mode}}}
"""


def _delete_middle_slice(series_dir: Path) -> None:
    """Remove the slice at the middle position of a series (a gap the converter refuses)."""
    import pydicom

    files = sorted(series_dir.iterdir())
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    order = sorted(range(len(files)), key=lambda i: z[i])
    files[order[len(order) // 2]].unlink()


@pytest.fixture(scope="module")
def broken_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10 + 3 + 3 synthetic cohort (directory source) with one broken series."""
    from recur.synthetic import cohort as synth

    cohort = tmp_path_factory.mktemp("rep_cohort") / "cohort"
    synth.write_cohort(
        cohort,
        synth.SyntheticSettings.defaults(n_train=10, n_test=(3, 3), seed=5, er_share=None),
        workers=2,
    )
    series = pd.read_csv(cohort / "series.csv")
    row = series[
        (series.patient_id == BROKEN) & (series.timepoint == "pre") & (series.phase == "AP")
    ].iloc[0]
    _delete_middle_slice(cohort / row["dicom_dir"])
    return cohort


def _workdir(tmp_path_factory, cohort: Path, mode: str) -> Path:
    from ..conftest import failed_logs, run_snakemake  # noqa: F401

    work = tmp_path_factory.mktemp(f"rep_{mode}")
    (work / "small.yaml").write_text(
        SMALL_CONFIG.format(cohort=cohort, config_out=CONFIG_OUT, mode=mode), encoding="utf-8"
    )
    return work


@pytest.fixture(scope="module")
def excluded_study(tmp_path_factory, broken_cohort: Path) -> Path:
    """The whole workflow with qc.on_failure: exclude on the broken cohort."""
    from ..conftest import failed_logs, run_snakemake

    work = _workdir(tmp_path_factory, broken_cohort, "exclude")
    res = run_snakemake(work, "--cores", "2", configfile="small.yaml")
    if res.returncode != 0:
        pytest.fail(f"workflow failed:\n{res.stderr[-6000:]}\n{failed_logs(work)[-6000:]}")
    return work


@pytest.mark.slow
def test_exclude_mode_runs_to_the_end_and_figure1_shows_the_patient(excluded_study: Path):
    res = excluded_study / "results"
    flow = pd.read_csv(res / "tables" / "figure1_flow.csv", keep_default_na=False)
    qc = flow[(flow.box == "excluded_qc") & (flow.reason != "")]
    assert qc["patient_ids"].tolist() == [BROKEN]
    assert qc["reason"].iloc[0].startswith(f"convert pre: patient {BROKEN}, pre/AP")
    assert "missing slice" in qc["reason"].iloc[0]
    cfg = flow[(flow.box == "excluded_config") & (flow.reason != "")]
    assert cfg[["reason", "patient_ids"]].values.tolist() == [["lost to follow-up", CONFIG_OUT]]
    assert _n(flow, "cohort")[0] == 16
    split = pd.read_csv(res / "splits" / "split.csv")
    assert len(split) == 14
    assert not {BROKEN, CONFIG_OUT} & set(split.patient_id)
    for model in ("Pre", "PrePost", "Clinical", "DL_Clinical"):
        pred = pd.read_csv(res / "predictions" / f"{model}.csv")
        assert BROKEN not in set(pred.patient_id)
    assert (res / "figures" / "figure1.png").stat().st_size > 1000
    # Table S1: one row per site and phase, each site's own scanner
    s1 = pd.read_csv(res / "tables" / "table_s1.csv")
    assert len(s1) == 3 * 4
    scanners = s1.groupby("Site")["Scanner (n series)"].first()
    assert scanners.nunique() == 3
    tripod = (res / "tables" / "tripod_ai.md").read_text()
    assert "AUTHORS: to write" in tripod
    assert "95% CI" in tripod


@pytest.mark.slow
def test_stop_mode_stops_with_the_message_naming_the_patient(tmp_path_factory, broken_cohort):
    from ..conftest import run_snakemake

    work = _workdir(tmp_path_factory, broken_cohort, "stop")
    res = run_snakemake(
        work, "--cores", "2", f"results/crops/{BROKEN}.npz", configfile="small.yaml"
    )
    assert res.returncode != 0
    log = (work / "results" / "logs" / "convert" / f"{BROKEN}.log").read_text()
    assert f"error: patient {BROKEN}, pre/AP" in log
    assert "missing slice" in log
    assert not (work / "results" / "nifti" / BROKEN / "pre" / "DP.nii.gz").exists()


def test_study_design_reads_each_section_through_its_settings_class():
    from recur.config import defaults

    sections = defaults()
    sections["split"]["tune_fraction"] = 0.3
    sections["qc"]["on_failure"] = "exclude"
    sections["dl_clinical"] |= {"estimator": "extra_trees", "stacking": "crossfit"}
    sections["train"]["offset"] |= {"models": ["Pre"], "variables": ["hbv"]}
    design = StudyDesign.from_sections(sections)
    assert (design.tune_fraction, design.on_failure, design.stacking) == (
        0.3,
        "exclude",
        "crossfit",
    )
    assert design.dl_clinical_estimator == "extra_trees"
    assert (design.offset_models, design.offset_variables) == (("Pre",), ("hbv",))
    sections["split"]["tune_fraction"] = 1.5
    with pytest.raises(RecurError, match="tune fraction"):
        StudyDesign.from_sections(sections)


def test_tripod_describes_every_model_and_flags_few_events():
    clinical = pd.DataFrame({"patient_id": ["P1", "P2"], "er": [1, 0], "afp_ng_ml": [1.0, 2.0]})
    split = pd.DataFrame(
        {
            "patient_id": ["P1", "P2"],
            "site": ["A", "B"],
            "cohort": ["train", "test"],
            "split": ["train", "test"],
        }
    )
    flow = rp.flow_table(*_flow_inputs())
    table2 = pd.DataFrame(
        {
            "cohort": ["external"],
            "model": ["PrePost"],
            "metric": ["auc"],
            "estimate": [0.8],
            "ci_low": [0.6],
            "ci_high": [0.9],
            "n": [35],
            "n_events": [7],
        }
    )
    cal = pd.DataFrame(
        {
            "cohort": ["external"],
            "model": ["PrePost"],
            "brier": [0.12],
            "intercept": [0.09],
            "slope": [float("nan")],
            "n_events": [7],
        }
    )
    design = dataclasses.replace(
        _DESIGN,
        stacking="crossfit",
        signature="ensemble",
        crossfit_folds=3,
        tta=True,
        margin_target=("PrePost",),
        aux_weight=3.0,
        margin_models=True,
        margin_features=("min_margin_mm", "pct_lt5"),
    )
    by = tripod.tripod_items(clinical, split, flow, table2, cal, design).set_index("item")
    text = " ".join(by["text"])
    assert "mean logit of the full model and its 3 cross-fitting fold models" in text
    assert "8 dihedral views of the crops (test-time augmentation)" in text
    assert "PrePost also learns the measured minimal ablative margin" in text
    assert "Clinical_Margin and DL_Clinical_Margin" in text
    assert "(min_margin_mm, pct_lt5)" in text
    assert "recalibrated on the tuning split" in text
    assert "events = 7) [fewer than 10 events]" in by.loc["23a", "text"]
    assert "slope undefined [fewer than 10 events]" in by.loc["23b", "text"]
