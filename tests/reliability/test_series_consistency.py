"""series.csv mistakes that convert without a geometry problem are refused by the conversion
job, from the series' DICOM headers (recur.cohort.series_checks).

A tiny synthetic cohort (real DICOM files, ``recur.synthetic.cohort.write_cohort``) gets a series
table with three mistakes, each in its own patient, and one patient left as it is:

* (a) P0002's pre AP row points at another patient's series (P0007's pre AP folder);
* (b) P0003's pre PVP row points at its own pre AP series;
* (c) P0004's pre and post rows are swapped (post then comes 27-35 days *before* pre).

The table's ``series_uid`` of the edited rows is left empty, as a user who types a folder
does: the cohort contract (which refuses the same folder and series_uid on two rows) lets
them through, so the conversion job is the one to refuse. The real ``snakemake`` runs only
these patients' conversion jobs (``--cores 1 --keep-going``): once with ``qc.on_failure:
stop`` (non-zero exit, a one-line message naming the patient in the job log, no output of
that patient) and once with ``exclude`` (the patient's outputs become exclusion placeholders
holding that reason; the run succeeds).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import run_snakemake
from .conftest import N_TEST, N_TRAIN, SEED, TRAIN_CONFIG

pytestmark = pytest.mark.slow

#: patient -> (time point/phase named, words the message must hold)
MISTAKES = {
    "P0002": ("pre/AP", ["patient identity", "another patient"]),
    "P0003": ("pre/PVP", ["the same series (SeriesInstanceUID) as pre/AP"]),
    "P0004": ("post/DP", ["post acquired", "days before pre", "are pre and post swapped"]),
}
CONSISTENT = "P0005"
PATIENTS = [*MISTAKES, CONSISTENT]
TARGETS = [f"results/nifti/{p}/pre/DP.nii.gz" for p in PATIENTS]


def _mistaken_series(series: pd.DataFrame) -> pd.DataFrame:
    df = series.copy()

    def row(pid: str, tp: str, ph: str) -> pd.Series:
        return (df["patient_id"] == pid) & (df["timepoint"] == tp) & (df["phase"] == ph)

    # (a) another patient's series
    df.loc[row("P0002", "pre", "AP"), ["dicom_dir", "series_uid"]] = [
        df.loc[row("P0007", "pre", "AP"), "dicom_dir"].item(),
        "",
    ]
    # (b) one series for AP and PVP
    df.loc[row("P0003", "pre", "PVP"), ["dicom_dir", "series_uid"]] = [
        df.loc[row("P0003", "pre", "AP"), "dicom_dir"].item(),
        "",
    ]
    # (c) pre and post swapped
    p4 = df["patient_id"] == "P0004"
    df.loc[p4, "timepoint"] = df.loc[p4, "timepoint"].map({"pre": "post", "post": "pre"})
    return df


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort; ``series_mistakes.csv`` beside its correct ``series.csv``."""
    from recur.synthetic import cohort as synth

    root = tmp_path_factory.mktemp("consistency")
    cohort = root / "cohort"
    synth.write_cohort(
        cohort,
        synth.SyntheticSettings.defaults(
            n_train=N_TRAIN, n_test=tuple(N_TEST), seed=SEED, er_share=None
        ),
        truth_path=root / "truth.csv",
        workers=2,
    )
    series = pd.read_csv(cohort / "series.csv", dtype=str, keep_default_na=False)
    _mistaken_series(series).to_csv(cohort / "series_mistakes.csv", index=False)
    return cohort


def _run(cohort: Path, work: Path, on_failure: str):
    work.mkdir()
    (work / "run.yaml").write_text(  # the tiny training settings: the cohort is checked for them
        f"cohort: {{source: directory, dir: '{cohort}', series: series_mistakes.csv}}\n"
        f"{TRAIN_CONFIG}qc: {{on_failure: {on_failure}}}\n",
        encoding="utf-8",
    )
    res = run_snakemake(work, "--cores", "1", "--keep-going", *TARGETS, configfile="run.yaml")
    return work, res


@pytest.fixture(scope="module")
def stopped(cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    return _run(cohort, tmp_path_factory.mktemp("stop") / "work", "stop")


@pytest.fixture(scope="module")
def excluded(cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    return _run(cohort, tmp_path_factory.mktemp("exclude") / "work", "exclude")


def _message_line(text: str, patient: str, where: str) -> str:
    """The one line of ``text`` that starts the refusal of ``patient`` at ``where``."""
    start = f"patient {patient}, {where}, folder '"
    lines = [ln for ln in text.splitlines() if start in ln]
    assert lines, f"no line with {start!r} in:\n{text}"
    return lines[0]


def _check_message(line: str, cohort: Path, patient: str, where: str, words: list[str]) -> None:
    for w in words:
        assert w in line, (w, line)
    # the folder by its row(s) of series.csv, never by its name (job messages are stored
    # under results/ and a folder may be named after a patient)
    folder = re.search(r"folder '([^']*)'", line).group(1)
    assert re.fullmatch(r"<series_mistakes\.csv rows? \d+(, \d+)*>", folder), line
    assert "dicom/" not in line, line
    assert str(cohort) not in line, line
    for secret in ("FKMRN", "FAKEMAN", "TESTWOOD", "DUMMSON", "NOTREAL", "PLACEBO", "MOCKLEY"):
        assert secret not in line, line  # no identifying value (synth's fake ones)
    assert "1.2.826.0.1.3680043" not in line, line  # no UID


@pytest.mark.parametrize("patient", sorted(MISTAKES))
def test_mistake_is_refused_naming_the_patient(stopped, cohort: Path, patient: str):
    work, res = stopped
    assert res.returncode != 0
    where, words = MISTAKES[patient]
    log = (work / "results" / "logs" / "convert" / f"{patient}.log").read_text(encoding="utf-8")
    assert "Traceback" not in log, log
    line = _message_line(log, patient, where)
    assert line.startswith("recur convert-patient: error: patient "), line
    _check_message(line, cohort, patient, where, words)
    # all or nothing: not a file of either time point
    out = work / "results" / "nifti" / patient
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], list(out.rglob("*"))


def test_consistent_patient_converts_without_review_notes(stopped):
    work, _ = stopped
    for tp in ("pre", "post"):
        out = work / "results" / "nifti" / CONSISTENT / tp
        assert sorted(p.name for p in out.iterdir()) == [
            "AP.nii.gz",
            "DP.nii.gz",
            "PS.nii.gz",
            "PVP.nii.gz",
            "acquisition.json",
        ]
        acq = json.loads((out / "acquisition.json").read_text(encoding="utf-8"))
        assert all("review" not in a for a in acq.values()), acq
        assert {a["days_from_pre"] for a in acq.values()} != {None}
    log = (work / "results" / "logs" / "convert" / f"{CONSISTENT}.log").read_text()
    assert "to review" not in log, log


def test_exclude_records_the_refusal_for_both_time_points(excluded, cohort: Path):
    from recur.cohort import exclusions
    from recur.preprocess import convert

    work, res = excluded
    assert res.returncode == 0, res.stderr[-3000:]
    for patient, (where, words) in MISTAKES.items():
        folder = work / "results" / "nifti" / patient
        files = [p for tp in ("pre", "post") for p in convert.timepoint_outputs(folder / tp)]
        records = {
            r for p in files if exclusions.is_placeholder(p) for r in exclusions.read_placeholder(p)
        }
        assert len(records) == 1, (patient, records)
        (record,) = records
        assert (record.patient_id, record.stage) == (patient, "convert")
        _check_message(_message_line(record.reason, patient, where), cohort, patient, where, words)
        # a refusal within a time point excludes that one (as a geometry refusal does); one
        # across time points (pre and post swapped) excludes both
        tp = where.split("/")[0] if patient != "P0004" else "pre+post"
        assert record.timepoint == tp
        placeholders = [p for p in files if exclusions.is_placeholder(p)]
        expected = files if tp == "pre+post" else [p for p in files if p.parent.name == tp]
        assert placeholders == expected
    good = work / "results" / "nifti" / CONSISTENT / "pre" / "DP.nii.gz"
    assert not exclusions.is_placeholder(good)
