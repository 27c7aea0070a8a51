"""Tests of the model bundle (recur.deploy.bundle) and `recur predict` (recur.deploy.predict)."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recur.config import defaults
from recur.constants import MARGIN_MODELS, MODELS, RADIOMICS_MODELS
from recur.deploy import bundle as rb
from recur.deploy import predict as rp
from recur.deploy import summary
from recur.deploy.registry import NO_POST, study_entries
from recur.errors import RecurError
from recur.evaluate.recalibration import Recalibration, recalibrate_table, write_recalibration
from recur.io import sha256
from recur.margin.settings import CrossTimeSettings
from recur.preprocess.settings import CropSettings, RegistrationSettings


# --------------------------------------------------------------------------- helpers
def _settings(cfg: dict | None = None) -> dict:
    """The settings sections exactly as rules/bundle.smk builds them from a config."""
    c = cfg or defaults()
    return {
        "convert": c["convert"],
        "registration": c["registration"],
        "crop": c["crop"],
        "margin": c["margin"],
        "architecture": {
            k: c["train"][k]
            for k in ("widths", "blocks", "gru_hidden", "dropout", "max_pool", "roi_channel")
        },
        "clinical": c["clinical"],
        "dl_clinical": c["dl_clinical"],
    }


#: The stand-in recalibrations of :func:`_fake_sources`.
FAKE_RECALIBRATION = {
    "Pre": Recalibration(0.0, 1.0, "identity", 6, 0, "all of one class"),
    "PrePost": Recalibration(-1.25, 0.8, "logistic", 6, 3),
}


def _fake_sources(root: Path) -> dict:
    """Stand-in model files of the four models of a bundle without margin or Cox models (bytes
    only: the bundle copies and hashes, never reads them) and recalibrations (read: they must
    be valid)."""
    files = {}
    for m in ("Pre", "PrePost"):
        d = root / m
        d.mkdir(parents=True)
        (d / "weights.pt").write_bytes(bytes(range(256)) * 4)
        (d / "model.json").write_text(json.dumps({"model": m}))
        write_recalibration(d / "recalibration.json", FAKE_RECALIBRATION[m], m)
        for name in ("weights.pt", "model.json", "recalibration.json"):
            files[f"models/{m}/{name}"] = d / name
    for m in ("Clinical", "DL_Clinical"):
        (root / f"{m}.skops").write_bytes(b"skops" + m.encode())
        (root / f"{m}.json").write_text("{}")
        files[f"models/{m}/model.skops"] = root / f"{m}.skops"
        files[f"models/{m}/manifest.json"] = root / f"{m}.json"
    (root / "choice.json").write_text(json.dumps({"signature": "PrePost"}))
    files["models/DL_Clinical/choice.json"] = root / "choice.json"
    pd.DataFrame(
        {
            "model": ["Clinical", "Pre", "PrePost", "DL_Clinical"],
            "cutoff": [0.4, 0.5, 0.25, 0.6],
            "youden_j": [0.1, 0.2, 0.3, 0.4],
            "tune_auc": [0.6, 0.7, 0.8, 0.75],
            "n_tune": [6] * 4,
            "n_events_tune": [3] * 4,
        }
    ).to_csv(root / "cutoffs.csv", index=False)
    return {
        "entries": study_entries(MODELS, (), "PrePost"),
        "files": files,
        "cutoffs": root / "cutoffs.csv",
        "primary": "PrePost",
    }


@pytest.fixture
def toy_bundle(tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    rb.write_bundle(out, settings=_settings(), **_fake_sources(tmp_path / "src"))
    return out


# --------------------------------------------------------------------------- bundle
def test_write_bundle_lists_every_file_with_its_sha256(toy_bundle: Path) -> None:
    manifest = json.loads((toy_bundle / "manifest.json").read_text())
    files = sorted(
        p.relative_to(toy_bundle).as_posix()
        for p in toy_bundle.rglob("*")
        if p.is_file() and p != toy_bundle / "manifest.json"
    )
    entries = study_entries(MODELS, (), "PrePost")
    assert sorted(manifest["files"]) == rb.required_files(rb.BUNDLE_FORMAT, entries) == files
    assert manifest["files"]["models/Pre/weights.pt"] == sha256(
        toy_bundle / "models/Pre/weights.pt"
    )
    assert manifest["recur_version"]
    b = rb.load_bundle(toy_bundle)
    assert b.signature == "PrePost"
    assert b.cutoffs == {"Pre": 0.5, "PrePost": 0.25, "Clinical": 0.4, "DL_Clinical": 0.6}
    assert manifest["bundle_format"] == rb.BUNDLE_FORMAT == 3
    assert b.recalibrations == FAKE_RECALIBRATION
    assert [e.name for e in b.entries] == list(MODELS)
    assert b.primary == "PrePost"
    pre = next(e for e in b.entries if e.name == "Pre")
    assert b.version(pre) == "sha256:" + manifest["files"]["models/Pre/weights.pt"][:12]
    # a digest of digits only must stay a text in predictions.csv
    digits = rb.Bundle(**{**b.__dict__, "manifest": {"files": {pre.files[0]: "953028139268ab"}}})
    table = pd.DataFrame({"Pre_version": [digits.version(pre)]})
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    back = pd.read_csv(io.StringIO(buf.getvalue()))
    assert back["Pre_version"].tolist() == ["sha256:953028139268"]
    # DL_Clinical reads the PrePost signature: it needs the post-ablation series
    assert {e.name: e.needs_post for e in b.entries} == {
        "Pre": False,
        "PrePost": True,
        "Clinical": False,
        "DL_Clinical": True,
    }


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda b: _flip(b / "models/PrePost/weights.pt"), "models/PrePost/weights.pt"),
        (lambda b: (b / "settings.json").write_text("{}"), "settings.json"),
        (lambda b: (b / "models/Pre/model.json").unlink(), "models/Pre/model.json is missing"),
        (
            lambda b: (b / "models/PrePost/recalibration.json").write_text("{}"),
            "models/PrePost/recalibration.json",
        ),
        (lambda b: (b / "notes.txt").write_text("x"), "notes.txt is not in manifest.json"),
        (lambda b: (b / "manifest.json").unlink(), "manifest.json not found"),
        (lambda b: (b / "manifest.json").write_text("{"), "manifest.json cannot be read"),
    ],
)
def test_tampered_bundle_is_refused_naming_the_file(toy_bundle: Path, tamper, message) -> None:
    tamper(toy_bundle)
    with pytest.raises(RecurError, match=message.replace(".", r"\.")):
        rb.load_bundle(toy_bundle)


def _flip(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_bundle_refuses_missing_settings_section_and_cutoff(tmp_path: Path) -> None:
    src = _fake_sources(tmp_path / "src")
    s = _settings()
    del s["crop"]
    with pytest.raises(RecurError, match="crop"):
        rb.write_bundle(tmp_path / "b1", settings=s, **src)
    pd.DataFrame({"model": ["Pre"], "cutoff": [0.5]}).to_csv(src["cutoffs"], index=False)
    with pytest.raises(RecurError, match="PrePost, Clinical, DL_Clinical"):
        rb.write_bundle(tmp_path / "b2", settings=_settings(), **src)
    assert not (tmp_path / "b1").exists()
    assert not (tmp_path / "b2").exists()


def test_bundle_settings_rebuild_the_workflow_settings(tmp_path: Path) -> None:
    cfg = defaults()
    cfg["registration"]["mask_margin_mm"] = 20.0
    cfg["registration"]["threads"] = 3
    cfg["crop"]["spacing_mm"] = None
    out = tmp_path / "b"
    rb.write_bundle(out, settings=_settings(cfg), **_fake_sources(tmp_path / "src"))
    b = rb.load_bundle(out)
    assert b.registration_settings() == RegistrationSettings.defaults(mask_margin_mm=20.0)
    assert b.registration_threads() == 3
    assert b.crop_settings() == CropSettings.defaults(size=128, spacing_mm=None, post_frame="pre")
    assert b.cross_time_settings() == CrossTimeSettings.from_config(cfg["margin"])
    assert b.cross_time_settings().rigid.mask_margin_mm == cfg["margin"]["rigid_region_mm"]
    # a bundle written before crop.post_frame existed: own-frame crops, no margin needed
    old = _settings(cfg)
    del old["crop"]["post_frame"], old["margin"]
    # and before the registration's region existed: the whole images were registered
    del old["registration"]["region_margin_mm"], old["registration"]["region_motion_mm"]
    rb.write_bundle(tmp_path / "old", settings=old, **_fake_sources(tmp_path / "src2"))
    b = rb.load_bundle(tmp_path / "old")
    assert b.crop_settings().post_frame == "own"
    assert b.registration_settings().region_margin_mm is None
    older = _settings(cfg)
    del older["margin"]["rigid_motion_mm"]
    rb.write_bundle(tmp_path / "older", settings=older, **_fake_sources(tmp_path / "src3"))
    assert rb.load_bundle(tmp_path / "older").cross_time_settings().rigid.region_margin_mm is None
    with pytest.raises(RecurError, match="margin"):
        b.cross_time_settings()
    assert b.convert_settings().min_slices == cfg["convert"]["min_slices"]


def test_predict_recalibrates_as_the_workflow(toy_bundle: Path, tmp_path: Path) -> None:
    """The probabilities `recur predict` reports for Pre and PrePost are the workflow's
    ``score``: the bundle's recalibration.json applied to the network's output (as
    recur.deploy.scoring.score_all does), the same function and parameters as
    recalibrate_table (signature-dl)."""
    b = rb.load_bundle(toy_bundle)
    raw = np.array([0.02, 0.3, 0.5, 0.77, 0.999])
    table = pd.DataFrame(
        {"patient_id": list("ABCDE"), "cohort": "test", "split": "test", "score": raw}
    )
    got = {m: b.recalibrations[m].apply(raw) for m in ("Pre", "PrePost")}
    for m in ("Pre", "PrePost"):
        want = recalibrate_table(table, FAKE_RECALIBRATION[m])
        np.testing.assert_array_equal(got[m], want["score"])
        np.testing.assert_array_equal(want["raw_score"], raw)
    np.testing.assert_array_equal(got["Pre"], raw)  # the identity keeps the output
    logit = np.log(raw / (1 - raw))
    np.testing.assert_allclose(got["PrePost"], 1 / (1 + np.exp(1.25 - 0.8 * logit)))
    # a format 1 bundle (written before the recalibration) reads as the identity
    manifest = json.loads((toy_bundle / "manifest.json").read_text())
    for m in ("Pre", "PrePost"):
        (toy_bundle / f"models/{m}/recalibration.json").unlink()
        del manifest["files"][f"models/{m}/recalibration.json"]
    manifest["bundle_format"] = 1
    (toy_bundle / "manifest.json").write_text(json.dumps(manifest))
    old = rb.load_bundle(toy_bundle)
    assert {r.method for r in old.recalibrations.values()} == {"identity"}
    np.testing.assert_array_equal(old.recalibrations["PrePost"].apply(raw), raw)
    manifest["bundle_format"] = 2
    (toy_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecurError, match=r"does not list models/Pre/recalibration\.json"):
        rb.load_bundle(toy_bundle)


# --------------------------------------------------------------------------- predict units
def test_new_clinical_needs_no_outcome_site_or_cohort() -> None:
    t = pd.DataFrame(
        {
            "patient_id": ["N1", "N2"],
            "tumor_size_cm": ["2.5", ""],
            "tumor_number": ["1", "2"],
            "hbv": ["1", "0"],
            "tp_g_l": ["70", "65.5"],
            "afp_ng_ml": ["12", "400"],
        }
    )
    out = rp.check_new_clinical(t)
    assert list(out["patient_id"]) == ["N1", "N2"]
    assert out["tumor_size_cm"].isna().tolist() == [False, True]
    assert out.loc[1, "tp_g_l"] == 65.5
    # site / cohort are ignored, whatever they hold
    t["cohort"] = ["validation", ""]
    assert list(rp.check_new_clinical(t)["cohort"]) == ["test", "test"]
    t.loc[1, "tumor_size_cm"] = "25"  # mm, not cm
    with pytest.raises(RecurError, match=r"N2.*tumor_size_cm"):
        rp.check_new_clinical(t)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_log_lines_otherwise(caplog) -> None:
    tty = _Tty()
    p = rp.Progress(4, tty, width=8)
    p.step("one")
    p.step("two")
    assert p.line("x").startswith("[####----] 2/4")
    p.close("end")
    text = tty.getvalue()
    assert "\r" in text
    assert "one" in text
    assert text.endswith("end\n")
    assert "[########] 4/4" in text

    plain = io.StringIO()
    with caplog.at_level(logging.INFO, logger="recur.deploy.predict"):
        q = rp.Progress(2, plain)
        q.step("convert")
        q.close()
    assert plain.getvalue() == ""
    assert "[1/2] convert" in caplog.text


def test_summary_html_embeds_images_and_warns(toy_bundle: Path, tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    b = rb.load_bundle(toy_bundle)
    rows = pd.DataFrame(
        {
            "patient_id": "<P1>",
            "model": list(MODELS),
            "kind": ["dl", "dl", "tabular", "tabular"],
            "available": [True, False, True, False],
            "probability": [0.5, np.nan, 0.5, np.nan],
            "raw_score": [0.4, np.nan, 0.5, np.nan],
            "cutoff": [0.3] * 4,
            "risk": ["high", NO_POST, "high", NO_POST],
            "note": ["", NO_POST, "", NO_POST],
        }
    )
    page = summary.summary_html("<P1>", rows, b, None, {"a": png, "b": png, "c": None})
    assert "&lt;P1&gt;" in page
    assert "<P1>" not in page
    assert page.count("data:image/png;base64,iVBORw0KGgpmYWtl") == 2
    assert "NOT FOR CLINICAL USE" in page
    assert page.count("high risk") == 2
    assert page.count(NO_POST) >= 5  # two models (probability, risk group) and the margin
    assert "Primary model: PrePost" in page


def test_predict_refuses_a_tampered_bundle_before_reading_inputs(toy_bundle: Path) -> None:
    _flip(toy_bundle / "models/Pre/weights.pt")
    with pytest.raises(RecurError, match=r"models/Pre/weights\.pt does not match its sha256"):
        rp.predict(toy_bundle, "no.csv", "no.csv", "no.csv", toy_bundle.parent / "out")
    assert not (toy_bundle.parent / "out").exists()


# --------------------------------------------------------------------------- on the tiny study
def _recur(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recur", "--threads", "2", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )


def _new_patient_tables(study: Path, ids: list[str], where: Path, drop_post=()) -> Path:
    """The tiny study's patients ``ids`` as new patients: no outcome, site or cohort columns;
    the patients of ``drop_post`` without any post-ablation row."""
    cohort = study / "results" / "synthetic" / "cohort"
    clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
    where.mkdir(parents=True)
    keep = ["patient_id", "tumor_size_cm", "tumor_number", "hbv", "tp_g_l", "afp_ng_ml"]
    clinical[clinical["patient_id"].isin(ids)][keep].to_csv(where / "clinical.csv", index=False)
    for name in ("series.csv", "rois.csv"):
        t = pd.read_csv(cohort / name, dtype=str)
        t = t[t["patient_id"].isin(ids)]
        t = t[~(t["patient_id"].isin(list(drop_post)) & (t["timepoint"] == "post"))]
        t.to_csv(where / name, index=False)
    return cohort


def _predict(study: Path, tables: Path, cohort: Path, out: Path, *extra: str):
    return _recur(
        "predict",
        "--bundle",
        str(study / "results" / "bundle"),
        "--series",
        str(tables / "series.csv"),
        "--rois",
        str(tables / "rois.csv"),
        "--clinical",
        str(tables / "clinical.csv"),
        "--cohort-dir",
        str(cohort),
        "--out",
        str(out),
        *extra,
    )


@pytest.fixture(scope="module")
def scored(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`recur predict` on the tiny study's external test patients, from their DICOM."""
    cohort = tiny_study / "results" / "synthetic" / "cohort"
    clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
    ids = list(clinical.loc[clinical["cohort"] == "test", "patient_id"])  # 10, both sites
    work = tmp_path_factory.mktemp("predict")
    _new_patient_tables(tiny_study, ids, work / "tables")
    out = work / "out"
    res = _predict(tiny_study, work / "tables", cohort, out)
    assert res.returncode == 0, res.stderr[-4000:]
    return {"ids": ids, "out": out, "study": tiny_study, "stderr": res.stderr}


@pytest.mark.slow
def test_bundle_holds_no_patient_id(tiny_study: Path) -> None:
    root = tiny_study / "results" / "bundle"
    rb.verify_manifest(root)
    ids = pd.read_csv(tiny_study / "results" / "cohort" / "patients.csv", dtype=str)["patient_id"]
    assert len(ids) == 26
    hits = [
        (p.relative_to(root).as_posix(), pid)
        for p in root.rglob("*")
        if p.is_file()
        for pid in ids
        if pid.encode() in p.read_bytes()
    ]
    assert hits == []
    assert not any("predictions" in p.name for p in root.rglob("*"))


def _workflow(study: Path, model: str) -> pd.DataFrame:
    return pd.read_csv(
        study / "results" / "predictions" / f"{model}.csv", dtype={"patient_id": str}
    ).set_index("patient_id")


@pytest.mark.slow
def test_predict_reproduces_every_model_margin_and_cox_of_the_workflow(scored: dict) -> None:
    """Every model of the study: probability, raw score and risk group equal the workflow's
    predictions/<model>.csv; the margin equals margin.csv's row; each Cox model's 12- and
    24-month recurrence-free probability equals the survival stage's."""
    out, ids, study = scored["out"], scored["ids"], scored["study"]
    results = study / "results"
    got = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert list(got.index) == ids
    bundle = rb.load_bundle(results / "bundle")
    models = [e.name for e in bundle.binary]
    assert models == [
        "Clinical",
        "Pre",
        "PrePost",
        "DL_Clinical",
        *MARGIN_MODELS,
        *RADIOMICS_MODELS,
    ]
    with_cox = [m for m in models if m not in RADIOMICS_MODELS]
    assert sorted(e.name for e in bundle.entries if e.kind == "survival") == sorted(with_cox)
    cut = pd.read_csv(results / "tables" / "cutoffs.csv")
    cut = dict(zip(cut["model"], cut["cutoff"], strict=True))
    cox = pd.read_csv(results / "predictions" / "survival.csv", dtype={"patient_id": str})
    for model in models:
        want = _workflow(study, model).loc[ids]
        raw = want["raw_score"] if "raw_score" in want else want["score"]
        np.testing.assert_allclose(got[model], want["score"], rtol=0, atol=1e-5, err_msg=model)
        np.testing.assert_allclose(got[f"{model}_raw"], raw, rtol=0, atol=1e-5, err_msg=model)
        high = want["score"].to_numpy() >= cut[model]
        assert list(got[f"{model}_risk"]) == ["high" if h else "low" for h in high], model
        assert (got[f"{model}_cutoff"] == cut[model]).all()
        assert got[f"{model}_version"].str.fullmatch("sha256:[0-9a-f]{12}").all(), model
        if model not in with_cox:
            assert got[f"{model}_rfs_24m"].isna().all(), model
            assert got[f"{model}_cox_version"].isna().all(), model
            continue
        c = cox[cox["model"] == model].set_index("patient_id").loc[ids]
        for t in ("12", "24"):
            np.testing.assert_allclose(
                got[f"{model}_rfs_{t}m"], c[f"rfs_{t}m"], rtol=0, atol=1e-6, err_msg=model
            )
    margin = pd.read_csv(results / "margin" / "margin.csv", dtype={"patient_id": str})
    margin = margin.set_index("patient_id").loc[ids]
    for col in ("min_margin_mm", "pct_lt0", "pct_lt5"):
        np.testing.assert_array_equal(got[col], margin[col], err_msg=col)
    primary = pd.read_csv(results / "bundle" / "cutoffs.csv")
    assert (got["primary_model"] == primary.loc[primary["tune_auc"].idxmax(), "model"]).all()
    for pid in ids:
        for name in ("crops.png", "gradcam.png", "margin.png", "margin_overlay.png"):
            assert (out / pid / name).stat().st_size > 1000, (pid, name)
        page = (out / pid / "summary.html").read_text()
        assert page.count("base64,") == 4
        assert "Primary model: " in page
        assert "Minimal ablative margin" in page
        assert (out / "crops" / f"{pid}.npz").is_file()
    assert not (out / "work").exists()
    # not a terminal: plain log lines, numbered by one counter from 1 to its total
    steps = [tuple(map(int, m)) for m in re.findall(r"\[(\d+)/(\d+)\]", scored["stderr"])]
    assert [k for k, _ in steps] == list(range(1, len(steps) + 1))
    assert {n for _, n in steps} == {len(steps)}
    assert "check ROI masks, register PS/AP/PVP onto DP" in scored["stderr"]
    assert "radiomics features" in scored["stderr"]


@pytest.mark.slow
def test_predict_without_the_post_series_gives_the_pre_only_models(
    scored: dict, tmp_path: Path
) -> None:
    """A patient whose post-ablation rows are removed gets the models that read only the
    pre-ablation images and the clinical variables, equal to the workflow's; the others and
    the margin read "not available: no post-ablation series"; the other patient is scored as
    with its post series."""
    study, ids = scored["study"], scored["ids"]
    pid, other = ids[0], ids[1]
    cohort = _new_patient_tables(study, [pid, other], tmp_path / "tables", drop_post=[pid])
    res = _predict(study, tmp_path / "tables", cohort, tmp_path / "out")
    assert res.returncode == 0, res.stderr[-4000:]
    got = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"patient_id": str})
    got = got.set_index("patient_id")
    full = pd.read_csv(scored["out"] / "predictions.csv", dtype={"patient_id": str})
    full = full.set_index("patient_id")
    bundle = rb.load_bundle(study / "results" / "bundle")
    assert bool(got.loc[pid, "post_series"]) is False
    assert got.loc[pid, "margin_note"] == NO_POST
    assert np.isnan(got.loc[pid, "min_margin_mm"])
    pre_only = [e.name for e in bundle.binary if not e.needs_post]
    assert {"Clinical", "Pre", "Radiomics_Pre"} <= set(pre_only)
    for e in bundle.binary:
        if e.needs_post:
            assert got.loc[pid, f"{e.name}_risk"] == NO_POST, e.name
            assert np.isnan(got.loc[pid, e.name]), e.name
        else:
            want = _workflow(study, e.name).loc[pid, "score"]
            assert got.loc[pid, e.name] == pytest.approx(want, abs=1e-5), e.name
            assert got.loc[pid, f"{e.name}_risk"] in ("high", "low")
            if bundle.cox(e.name) is not None:
                assert np.isfinite(got.loc[pid, f"{e.name}_rfs_24m"]), e.name
    for c in full.columns:
        a, b = got.loc[other, c], full.loc[other, c]
        if isinstance(b, float):
            assert a == pytest.approx(b, abs=1e-6, nan_ok=True), c
        else:
            assert a == b, c
    page = (tmp_path / "out" / pid / "summary.html").read_text()
    assert page.count(NO_POST) >= 1 + 2 * (len(bundle.binary) - len(pre_only))
    assert not (tmp_path / "out" / pid / "gradcam.png").exists()


@pytest.mark.slow
def test_predict_cli_refuses_a_tampered_weights_file(tiny_study: Path, tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_study / "results" / "bundle", bundle)
    _flip(bundle / "models" / "PrePost" / "weights.pt", offset=2000)
    cohort = tiny_study / "results" / "synthetic" / "cohort"
    res = _recur(
        "predict",
        "--bundle",
        str(bundle),
        "--series",
        str(cohort / "series.csv"),
        "--rois",
        str(cohort / "rois.csv"),
        "--clinical",
        str(cohort / "clinical.csv"),
        "--out",
        str(tmp_path / "out"),
    )
    assert res.returncode == 2
    assert "models/PrePost/weights.pt does not match its sha256" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_predict_checks_the_tables_before_any_image_step(toy_bundle: Path, tmp_path: Path) -> None:
    new = tmp_path / "new"
    rows = []
    for t in ("pre", "post"):
        for ph in ("PS", "AP", "PVP", "DP"):
            (new / "dicom" / t / ph).mkdir(parents=True)
            rows.append(("N1", t, ph, f"dicom/{t}/{ph}"))
    pd.DataFrame(rows, columns=["patient_id", "timepoint", "phase", "dicom_dir"]).to_csv(
        new / "series.csv", index=False
    )
    (new / "rois").mkdir()
    (new / "rois" / "pre.nii.gz").write_bytes(b"")
    pd.DataFrame(
        {"patient_id": ["N1", "N1"], "timepoint": ["pre", "post"], "mask": ["rois/pre.nii.gz",
         "rois/post.nii.gz"]}
    ).to_csv(new / "rois.csv", index=False)  # fmt: skip
    pd.DataFrame(
        {"patient_id": ["N1"], "tumor_size_cm": [2.0], "tumor_number": [1], "hbv": [1],
         "tp_g_l": [70], "afp_ng_ml": [10]}
    ).to_csv(new / "clinical.csv", index=False)  # fmt: skip
    with pytest.raises(
        RecurError, match=r"(?s)rois\.csv.*N1.*'rois/post\.nii\.gz'.*does not exist"
    ):
        rp.predict(
            toy_bundle, new / "series.csv", new / "rois.csv", new / "clinical.csv", tmp_path / "o"
        )
    assert not (tmp_path / "o").exists()
