"""Exclusions: config list checks, placeholders, the stop|exclude policy, the QC table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recur.cohort import exclusions as ex
from recur.errors import RecurError

from ..conftest import run_snakemake


def test_config_exclusions_table_and_errors():
    t = ex.config_exclusions([{"patient_id": "P2", "reason": "withdrew"}], ["P1", "P2", "P3"])
    assert t.to_dict("records") == [{"patient_id": "P2", "reason": "withdrew"}]
    assert ex.config_exclusions([], ["P1"]).empty
    with pytest.raises(RecurError, match="'P9' is not in the cohort"):
        ex.config_exclusions([{"patient_id": "P9", "reason": "x"}], ["P1"])
    with pytest.raises(RecurError, match="listed twice"):
        ex.config_exclusions([{"patient_id": "P1", "reason": "a"}] * 2, ["P1"])
    with pytest.raises(RecurError, match="needs a reason"):
        ex.config_exclusions([{"patient_id": "P1", "reason": " "}], ["P1"])
    assert ex.remaining_patients(["P1", "P2", "P3"], {"P2"}) == ["P1", "P3"]


def test_placeholder_round_trip_and_real_files_are_not_placeholders(tmp_path: Path):
    rec = ex.Exclusion("P1", "check_mask", "post", "mask size 10x10x3 != DP 12x12x3")
    ph = tmp_path / "mask.nii.gz"
    ex.write_placeholders([ph], [rec])
    assert ex.is_placeholder(ph)
    assert ex.read_placeholder(ph) == [rec]
    real = tmp_path / "crops.npz"
    np.savez(real, crops=np.zeros(3, np.float32))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert not ex.is_placeholder(real)
    assert not ex.is_placeholder(empty)  # zero bytes is not a recorded exclusion
    assert not ex.is_placeholder(tmp_path / "missing")
    with pytest.raises(RecurError, match="not an exclusion placeholder"):
        ex.read_placeholder(real)


def _failing() -> None:
    raise RecurError("patient P7, pre/AP: 1 missing slice(s)")


def test_run_or_exclude_stop_raises_and_writes_nothing(tmp_path: Path):
    out = tmp_path / "a.nii.gz"
    with pytest.raises(RecurError, match="patient P7, pre/AP"):
        ex.run_or_exclude(
            _failing,
            on_failure="stop",
            patient="P7",
            stage="convert",
            timepoint="pre",
            inputs=[],
            outputs=[out],
        )
    assert not out.exists()


def test_run_or_exclude_records_then_passes_on(tmp_path: Path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.json"
    recs = ex.run_or_exclude(
        _failing,
        on_failure="exclude",
        patient="P7",
        stage="convert",
        timepoint="pre",
        inputs=[],
        outputs=[a, b],
    )
    assert recs == [ex.Exclusion("P7", "convert", "pre", "patient P7, pre/AP: 1 missing slice(s)")]
    assert ex.read_placeholder(a) == recs
    assert ex.read_placeholder(b) == recs
    # the next step sees a placeholder input: it does not run and passes the record on
    ran = []
    c = tmp_path / "c.npz"
    png = tmp_path / "c.png"
    got = ex.run_or_exclude(
        lambda: ran.append(1),
        on_failure="exclude",
        patient="P7",
        stage="crop",
        timepoint="pre+post",
        inputs=[tmp_path / "x", a],
        outputs=[c],
        write_excluded=lambda r: ex.excluded_png(png, "P7", r),
    )
    assert ran == []
    assert got == recs
    assert ex.read_placeholder(c) == recs
    assert png.read_bytes()[:4] == b"\x89PNG"
    # a step with real inputs runs and returns no record
    assert (
        ex.run_or_exclude(
            lambda: ran.append(2),
            on_failure="exclude",
            patient="P8",
            stage="crop",
            timepoint="pre+post",
            inputs=[],
            outputs=[],
        )
        == []
    )
    assert ran == [2]
    with pytest.raises(RecurError, match="on_failure"):
        ex.run_or_exclude(
            lambda: None,
            on_failure="skip",
            patient="P8",
            stage="crop",
            timepoint="",
            inputs=[],
            outputs=[],
        )


def test_exclusion_table_lists_placeholders_only(tmp_path: Path):
    ok = tmp_path / "P1.npz"
    np.savez(ok, crops=np.zeros(2))
    bad = tmp_path / "P2.npz"
    ex.write_placeholders([bad], [ex.Exclusion("P2", "register", "post", "no overlap")])
    t = ex.exclusion_table({"P1": ok, "P2": bad})
    assert t.to_dict("records") == [
        {"patient_id": "P2", "stage": "register", "timepoint": "post", "reason": "no overlap"}
    ]
    assert ex.exclusion_table({"P1": ok}).columns.tolist() == list(ex.EXCLUSION_COLUMNS)


def test_dry_run_drops_config_excluded_and_refuses_unknown_id(tmp_path: Path):
    (tmp_path / "tiny.yaml").write_text(
        "synthetic: {n_train: 6, n_test: [2, 2]}\n"
        "exclude:\n  - {patient_id: P0002, reason: withdrew consent}\n",
        encoding="utf-8",
    )
    res = run_snakemake(tmp_path, "-n", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "results/crops/P0001.npz" in out
    assert "results/crops/P0002.npz" not in out
    assert "results/nifti/P0002/" not in out
    (tmp_path / "tiny.yaml").write_text(
        "synthetic: {n_train: 6, n_test: [2, 2]}\n"
        "exclude:\n  - {patient_id: P0099, reason: typo}\n",
        encoding="utf-8",
    )
    res = run_snakemake(tmp_path, "-n", timeout=300)
    assert res.returncode != 0
    assert "exclude[0]: patient 'P0099' is not in the cohort" in res.stdout + res.stderr


def _refuse_with_folder() -> None:
    raise RecurError("patient P1, pre/AP, folder 'Doe John/pre AP': 3 slices missing")


def _hide(message: str) -> str:
    return message.replace("Doe John/pre AP", "<series.csv row 3>")


def test_refusals_are_redacted_in_records_pictures_logs_and_stop(tmp_path: Path, caplog):
    out = tmp_path / "AP.nii.gz"
    png = tmp_path / "qc.png"
    recs = ex.run_or_exclude(
        _refuse_with_folder,
        on_failure="exclude",
        patient="P1",
        stage="convert",
        timepoint="pre",
        inputs=[],
        outputs=[out],
        write_excluded=lambda r: ex.excluded_png(png, "P1", r),
        redact=_hide,
    )
    want = "patient P1, pre/AP, folder '<series.csv row 3>': 3 slices missing"
    assert [r.reason for r in recs] == [want]
    assert ex.read_placeholder(out)[0].reason == want
    assert "Doe" not in caplog.text
    assert want in caplog.text
    assert ex.excluded_lines("P1", recs) == [
        "patient P1: EXCLUDED by QC",
        f"convert pre: {want}",
    ]
    from PIL import Image

    with Image.open(png) as im:
        assert dict(im.text) == {}  # no text chunks
    with pytest.raises(RecurError) as exc:
        ex.run_or_exclude(
            _refuse_with_folder,
            on_failure="stop",
            patient="P1",
            stage="convert",
            timepoint="pre",
            inputs=[],
            outputs=[tmp_path / "b.nii.gz"],
            redact=_hide,
        )
    assert str(exc.value) == want
    assert not (tmp_path / "b.nii.gz").exists()
