"""Consistency of a patient's 8 series (recur.cohort.series_checks): pure checks on hand-made header
values, then the wiring in the conversion job on hand-made DICOM stacks."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import pytest

from recur.cli.main import main
from recur.cohort import exclusions
from recur.cohort import series_checks as sc
from recur.constants import PHASES
from recur.errors import RecurError
from recur.preprocess import convert
from recur.preprocess.dicom_series import ConvertSettings
from tests.fixtures import settings_option

from ..preprocess.test_convert import write_stack

PATIENT = "P0042"
#: Identifying values of the hand-made headers: none may appear in a message.
ID_A = {"PatientID": "MRN-A-7781", "PatientName": "Doe^Jane", "PatientBirthDate": "19480312"}
ID_B = {"PatientID": "MRN-B-1234", "PatientName": "Roe^Rick", "PatientBirthDate": "19600101"}
SECRET_VALUES = [*ID_A.values(), *ID_B.values(), "Doe", "Roe", "MRN"]


def header(
    tp: str = "pre",
    phase: str = "PS",
    *,
    ident: dict | None = None,
    uid: str | None = None,
    study: str | None = None,
    time: str | None = "default",
    **extra,
) -> sc.SeriesHeader:
    """The header values of a consistent patient's series (override what a case breaks)."""
    i = PHASES.index(phase)
    values = dict(ID_A if ident is None else ident)
    values["SeriesInstanceUID"] = uid or f"1.2.3.{tp}.{i}"
    values["StudyInstanceUID"] = study or f"1.2.3.study.{tp}"
    if time == "default":
        time = f"1015{10 * i + 5:02d}.250000"
    if time is not None:
        values["AcquisitionTime"] = time
    values.update(extra)
    return sc.header_values(values)


def series(tp: str = "pre", phase: str = "PS", days: int | None = None, **kw) -> sc.Series:
    if days is None:
        days = 0 if tp == "pre" else 30
    return sc.Series(tp, phase, f"dicom/{tp}/{phase} séries", header(tp, phase, **kw), days)


def patient(**changes) -> list[sc.Series]:
    """8 consistent series; ``changes['post/AP'] = dict(...)`` overrides one series."""
    out = []
    for tp in ("pre", "post"):
        for ph in PHASES:
            out.append(series(tp, ph, **changes.get(f"{tp}/{ph}", {})))
    return out


def of(items: list[sc.Series], tp: str) -> list[sc.Series]:
    return [s for s in items if s.timepoint == tp]


def refusal(fn, *args) -> str:
    with pytest.raises(RecurError) as err:
        fn(*args)
    msg = str(err.value)
    assert "\n" not in msg
    for value in SECRET_VALUES:
        assert value.lower() not in msg.lower(), (value, msg)
    assert "1.2.3" not in msg  # no UID
    return msg


# --------------------------------------------------------------------------- values
def test_header_values_keep_only_keyed_hashes_of_the_identity():
    h = header()
    assert h.series_uid == "1.2.3.pre.0"
    assert h.study_uid == "1.2.3.study.pre"
    assert all(isinstance(v, bytes) and len(v) == 32 for v in h.identity)
    assert ID_A["PatientID"].encode() not in b"".join(h.identity)
    assert h.identity[0] != sc.hashlib.sha256(ID_A["PatientID"].encode()).digest()  # keyed
    text = repr(h) + repr(series())
    assert not any(v in text for v in SECRET_VALUES)
    # spelling variants of one name are one name; an empty attribute is None
    assert header(ident=dict(ID_A, PatientName=" DOE^JANE^ ")).identity == h.identity
    assert header(ident=dict(ID_A, PatientBirthDate="")).identity[2] is None


def test_parse_time_and_date():
    assert sc.parse_time("101502.5") == pytest.approx(36902.5)
    assert sc.parse_time("1015") == 36900
    assert sc.parse_time("10") == 36000
    assert sc.parse_time("10:15:02") == 36902
    for bad in ("", None, "2561", "ab", "10150", "101502.x"):
        assert sc.parse_time(bad) is None, bad
    assert sc.parse_date("20170313") == datetime.date(2017, 3, 13)
    assert sc.parse_date("20171313") is None
    assert sc.parse_date("") is None


def test_times_are_taken_in_order_with_their_dates():
    h = header(time=None, SeriesTime="090000", SeriesDate="20200101", ContentTime="090005")
    assert [(kw, d) for kw, d, _ in h.times] == [
        ("SeriesTime", datetime.date(2020, 1, 1)),
        ("ContentTime", None),
    ]


# --------------------------------------------------------------------------- no refusal
def test_a_consistent_patient_passes_without_notes():
    p = patient()
    for tp in ("pre", "post"):
        assert sc.check_timepoint(of(p, tp), PATIENT) == []
    sc.check_patient(p, PATIENT, 1)


# --------------------------------------------------------------------------- one patient
def test_a_series_of_another_patient_is_refused():
    p = patient(**{"pre/AP": {"ident": ID_B}})
    msg = refusal(sc.check_timepoint, of(p, "pre"), PATIENT)
    assert msg.startswith("patient P0042, pre/AP, folder 'dicom/pre/AP séries': ")
    assert "patient identity" in msg
    assert "other 3 series (pre/PS, pre/PVP, pre/DP)" in msg
    assert "another patient" in msg
    # across time points the majority is 7 of 8
    msg = refusal(sc.check_patient, p, PATIENT, 1)
    assert msg.startswith("patient P0042, pre/AP,")
    assert "other 7 series" in msg


def test_two_series_of_another_patient_are_both_named():
    p = patient(**{"post/AP": {"ident": ID_B}, "post/DP": {"ident": ID_B}})
    msg = refusal(sc.check_patient, p, PATIENT, 1)
    assert msg.startswith("patient P0042, post/AP,")
    assert "post/DP (folder 'dicom/post/DP séries') differ too" in msg


def test_a_tie_names_both_groups():
    p = patient(**{f"post/{ph}": {"ident": ID_B} for ph in PHASES})
    for tp in ("pre", "post"):  # each time point on its own is consistent
        assert sc.check_timepoint(of(p, tp), PATIENT) == []
    msg = refusal(sc.check_patient, p, PATIENT, 1)
    assert msg.startswith("patient P0042, post/PS, folder 'dicom/post/PS séries': ")
    assert "4 against 4" in msg
    assert "no majority" in msg
    for tp in ("pre", "post"):
        for ph in PHASES:
            assert f"{tp}/{ph} (folder 'dicom/{tp}/{ph} séries')" in msg
    # a tie within a time point (2 against 2)
    p = patient(**{"pre/PVP": {"ident": ID_B}, "pre/DP": {"ident": ID_B}})
    msg = refusal(sc.check_timepoint, of(p, "pre"), PATIENT)
    assert msg.startswith("patient P0042, pre/PVP,")
    assert "2 against 2" in msg
    assert "pre/PS (folder" in msg
    assert "pre/DP (folder" in msg


def test_missing_identity_is_a_review_note_not_a_refusal():
    empty = {"PatientID": "", "PatientName": "", "PatientBirthDate": ""}
    p = patient(**{"pre/AP": {"ident": empty}})
    notes = sc.check_timepoint(of(p, "pre"), PATIENT)
    assert [(n.timepoint, n.phase) for n in notes] == [("pre", "AP")]
    assert "not checked" in notes[0].note
    # an attribute one series lacks is left out of the comparison ...
    no_birth = dict(ID_A, PatientBirthDate="")
    p = patient(**{"pre/AP": {"ident": no_birth}})
    assert sc.check_timepoint(of(p, "pre"), PATIENT) == []
    # ... but the others still tell another patient
    p = patient(**{"pre/AP": {"ident": dict(ID_B, PatientBirthDate="")}})
    msg = refusal(sc.check_timepoint, of(p, "pre"), PATIENT)
    assert "(PatientID, PatientName)" in msg


# --------------------------------------------------------------------------- no series twice
def test_one_series_for_two_phases_is_refused():
    p = patient(**{"pre/PVP": {"uid": "1.2.3.pre.1"}})  # the AP series again
    msg = refusal(sc.check_timepoint, of(p, "pre"), PATIENT)
    assert msg.startswith("patient P0042, pre/PVP, folder 'dicom/pre/PVP séries': ")
    assert "the same series (SeriesInstanceUID) as pre/AP (folder 'dicom/pre/AP séries')" in msg


def test_one_series_for_two_time_points_is_refused():
    p = patient(**{"post/AP": {"uid": "1.2.3.pre.1"}})
    for tp in ("pre", "post"):
        sc.check_timepoint(of(p, tp), PATIENT)
    msg = refusal(sc.check_patient, p, PATIENT, 1)
    assert msg.startswith("patient P0042, post/AP,")
    assert "as pre/AP" in msg


# --------------------------------------------------------------------------- one study
def test_a_phase_from_another_study_is_refused():
    p = patient(**{"post/DP": {"study": "1.2.3.study.other"}})
    msg = refusal(sc.check_timepoint, of(p, "post"), PATIENT)
    assert msg.startswith("patient P0042, post/DP, folder 'dicom/post/DP séries': ")
    assert "study (StudyInstanceUID)" in msg
    assert "(post/PS, post/AP, post/PVP)" in msg
    p = patient(**{f"post/{ph}": {"study": "1.2.3.study.other"} for ph in ("PVP", "DP")})
    msg = refusal(sc.check_timepoint, of(p, "post"), PATIENT)
    assert "2 against 2" in msg
    assert "post/PS (folder" in msg
    assert "post/DP (folder" in msg


def test_missing_study_uid_is_a_review_note():
    s = series()
    bare = sc.Series("pre", "AP", "f", sc.SeriesHeader(series_uid="9"), 0)
    notes = sc.check_one_study([s, bare], PATIENT)
    assert [(n.phase, "StudyInstanceUID" in n.note) for n in notes] == [("AP", True)]


# --------------------------------------------------------------------------- phase order
def test_phases_out_of_order_are_refused():
    # AP and PVP rows swapped: the "PVP" series was acquired before the "AP" one
    p = patient(**{"pre/AP": {"time": "101535"}, "pre/PVP": {"time": "101515"}})
    msg = refusal(sc.check_timepoint, of(p, "pre"), PATIENT)
    assert msg.startswith("patient P0042, pre/PVP, folder 'dicom/pre/PVP séries': ")
    assert "acquired 20 s before pre/AP (folder 'dicom/pre/AP séries')" in msg
    assert "PS < AP < PVP < DP" in msg
    assert "AcquisitionTime" in msg
    assert "1015" not in msg  # durations only, never a time of day
    # the DP before the PS, across the other phases too
    p = patient(**{"pre/DP": {"time": "090000"}})
    msg = refusal(sc.check_timepoint, of(p, "pre"), PATIENT)
    assert msg.startswith("patient P0042, pre/DP,")
    assert "before pre/PS" in msg


def test_missing_or_equal_times_are_review_notes():
    p = patient(**{"post/AP": {"time": None}})
    notes = sc.check_timepoint(of(p, "post"), PATIENT)
    assert [(n.timepoint, n.phase) for n in notes] == [("post", "AP")]
    assert "no acquisition time" in notes[0].note
    assert str(notes[0]).startswith("post/AP: ")
    p = patient(**{"post/PVP": {"time": "101515.250000"}})  # the AP's time
    notes = sc.check_timepoint(of(p, "post"), PATIENT)
    assert [(n.phase, "same acquisition time as post/AP" in n.note) for n in notes] == [
        ("PVP", True)
    ]
    # no times at all: four notes, nothing refused
    p = patient(**{f"pre/{ph}": {"time": None} for ph in PHASES})
    assert len(sc.check_timepoint(of(p, "pre"), PATIENT)) == 4


def test_the_keyword_every_phase_has_is_compared():
    # the AP's AcquisitionTime is missing: all four are compared by SeriesTime instead (the
    # AcquisitionTimes alone would put the PVP first)
    changes = {
        f"pre/{ph}": {"time": t, "SeriesTime": s}
        for ph, t, s in zip(
            PHASES,
            ("101500", None, "101400", "101900"),
            ("101500", "101600", "101700", "101800"),
            strict=True,
        )
    }
    assert sc.check_timepoint(of(patient(**changes), "pre"), PATIENT) == []


def test_times_with_dates_across_midnight():
    dated = {
        "pre/PS": {"time": "235930", "AcquisitionDate": "20200101"},
        "pre/AP": {"time": "235959", "AcquisitionDate": "20200101"},
        "pre/PVP": {"time": "000030", "AcquisitionDate": "20200102"},
        "pre/DP": {"time": "000300", "AcquisitionDate": "20200102"},
    }
    assert sc.check_timepoint(of(patient(**dated), "pre"), PATIENT) == []


# --------------------------------------------------------------------------- post after pre
@pytest.mark.parametrize(
    ("days", "minimum", "words"),
    [
        (-34, 1, "post acquired 34 days before pre"),
        (-1, 0, "post acquired 1 day before pre"),
        (0, 1, "post acquired on the same day as pre"),
        (3, 7, "post acquired 3 days after pre"),
    ],
)
def test_post_before_pre_is_refused(days: int, minimum: int, words: str):
    p = patient(**{f"post/{ph}": {"days": days} for ph in PHASES})
    msg = refusal(sc.check_patient, p, PATIENT, minimum)
    assert msg.startswith("patient P0042, post/DP, folder 'dicom/post/DP séries': ")
    assert words in msg
    assert "are pre and post swapped" in msg
    assert f"at least {minimum} day" in msg


def test_interval_boundaries_and_unknown_dates():
    sc.check_patient(patient(**{f"post/{ph}": {"days": 0} for ph in PHASES}), PATIENT, 0)
    sc.check_patient(patient(**{f"post/{ph}": {"days": 1} for ph in PHASES}), PATIENT, 1)
    p = [sc.Series(s.timepoint, s.phase, s.folder, s.header, None) for s in patient()]
    sc.check_patient(p, PATIENT, 1)  # unknown: not refused ...
    notes = sc.check_timepoint(of(p, "post"), PATIENT)  # ... but noted, on post only
    assert [(n.timepoint, n.phase) for n in notes] == [("post", ph) for ph in PHASES]
    assert all("days_from_pre is null" in n.note for n in notes)
    assert sc.check_timepoint(of(p, "pre"), PATIENT) == []


# --------------------------------------------------------------------------- in the job
def _cohort(root: Path, post_date: str = "20190516", times: bool = True) -> Path:
    """Both time points of P1 as hand-made stacks (pre 20190405; post ``post_date``)."""
    rows = ["patient_id,timepoint,phase,dicom_dir"]
    for tp in ("pre", "post"):
        for i, ph in enumerate(PHASES):
            rel = f"dicom/P1/{tp}/{ph}"
            extra = {"StudyDate": post_date} if tp == "post" else {}
            if times:
                extra["AcquisitionTime"] = f"10{i:02d}00"
            uid = f"1.2.826.0.1.3680043.8.498.{20 * (tp == 'post') + i + 1}"
            write_stack(root / rel, n=3, seed=i, series_uid=uid, extra=extra)
            rows.append(f"P1,{tp},{ph},{rel}")
    (root / "series.csv").write_text("\n".join(rows) + "\n")
    return root


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_job_refuses_swapped_time_points_and_writes_nothing(tmp_path):
    root = _cohort(tmp_path / "cohort", post_date="20190302")  # 34 days before pre
    out = tmp_path / "nifti" / "P1"
    with pytest.raises(RecurError) as err:
        convert.convert_patient(root, "series.csv", "P1", out, settings=ConvertSettings.defaults())
    assert str(err.value).startswith(
        "patient P1, post/DP, folder 'dicom/P1/post/DP': post acquired 34 days before pre"
    )
    assert _files(out) == []  # both time points converted fine; neither is written


def test_job_exclude_marks_both_time_points_on_a_cross_time_point_refusal(tmp_path):
    root = _cohort(tmp_path / "cohort", post_date="20190302")
    out = tmp_path / "nifti" / "P1"
    argv = ["convert-patient", "--cohort-dir", str(root), "--patient", "P1", "--outdir", str(out)]
    argv += settings_option("convert")
    assert main(argv) == 2
    assert _files(out) == []
    assert main([*argv, "--on-failure", "exclude"]) == 0
    files = [p for tp in ("pre", "post") for p in convert.timepoint_outputs(out / tp)]
    assert sorted(_files(out)) == sorted(files)
    assert all(exclusions.is_placeholder(p) for p in files)
    (record,) = exclusions.read_placeholder(files[0])
    assert (record.patient_id, record.stage, record.timepoint) == ("P1", "convert", "pre+post")
    assert "post acquired 34 days before pre" in record.reason


def test_job_min_interval_days_option(tmp_path):
    root = _cohort(tmp_path / "cohort", post_date="20190405")  # the pre day
    out = tmp_path / "nifti" / "P1"
    argv = ["convert-patient", "--cohort-dir", str(root), "--patient", "P1", "--outdir", str(out)]
    assert main([*argv, *settings_option("convert")]) == 2  # default: at least 1 day
    assert _files(out) == []
    assert main([*argv, *settings_option("convert", min_interval_days=0)]) == 0
    acq = json.loads((out / "post" / "acquisition.json").read_text())
    assert {a["days_from_pre"] for a in acq.values()} == {0}
    assert main([*argv, *settings_option("convert", min_interval_days=-1)]) == 2


def test_job_notes_missing_times_and_dates_for_review(tmp_path, caplog):
    # no post date at all (the hand-made slices carry StudyDate only), no time anywhere
    root = _cohort(tmp_path / "cohort", post_date="", times=False)
    out = tmp_path / "nifti" / "P1"
    with caplog.at_level(logging.WARNING):
        convert.convert_patient(root, "series.csv", "P1", out, settings=ConvertSettings.defaults())
    pre = json.loads((out / "pre" / "acquisition.json").read_text())
    post = json.loads((out / "post" / "acquisition.json").read_text())
    assert list(pre) == list(PHASES)  # phases only: readers iterate over them
    assert all(len(pre[ph]["review"]) == 1 for ph in PHASES)
    assert "no acquisition time" in pre["AP"]["review"][0]
    assert all(post[ph]["days_from_pre"] is None for ph in PHASES)
    assert all(len(post[ph]["review"]) == 2 for ph in PHASES)
    assert "days_from_pre is null" in post["DP"]["review"][1]
    assert caplog.text.count("to review") == 12
    assert "dicom/P1" not in caplog.text  # notes name time point and phase, not the folder
