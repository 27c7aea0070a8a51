"""Is a patient's set of 8 series consistent?  Checks over their DICOM header values.

series.csv is typed by hand, and some of its mistakes give series that convert without a
single geometry problem: a row that points at another patient's series, one series given for
two phases, the pre and post rows swapped. The conversion job (:func:`recur.preprocess.convert.
convert_patient`) keeps a few header values of each series' first slice
(:func:`header_values`) and runs these checks on them:

* **one patient** (:func:`check_identity`): PatientID, PatientName and PatientBirthDate agree
  across the series. Only keyed hashes of them are kept (HMAC-SHA256 under a random key made
  once per process), in memory: no value nor hash is ever written, logged or shown. A series
  that differs from the majority is refused; with no majority, every group is named;
* **no series twice** (:func:`check_reuse`): no two phases / time points share one
  SeriesInstanceUID;
* **one study per time point** (:func:`check_one_study`): the 4 phases of a time point share
  their StudyInstanceUID;
* **phase order** (:func:`check_phase_order`): within a time point the acquisition times
  (AcquisitionTime, else SeriesTime, else ContentTime; the same keyword for every phase where
  they have one in common) follow PS < AP < PVP < DP. The phases of one examination are
  acquired on one day, so times of day are compared (with their dates when every phase has
  one);
* **post after pre** (:func:`check_interval`): the post series were acquired at least
  ``min_interval_days`` after the pre DP (``days_from_pre``).

A refusal is a :class:`~recur.errors.RecurError` of one line: "patient P, tp/phase, folder
'dicom_dir': problem" (the folder as given in series.csv, relative to the cohort directory),
and no identifying value, UID, date or time of day. Where the headers lack what a check needs
(no acquisition time, no examination date, no identity attribute), nothing is refused: a
:class:`Review` note says what was not checked (the job logs it and writes it into the time
point's ``acquisition.json``, under the phase's ``review`` key).

Everything here is pure: small frozen dataclasses in, notes out or an error raised.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recur.constants import PHASES, TIMEPOINTS
from recur.errors import RecurError

#: The attributes that say whose images these are (compared as keyed hashes only).
IDENTITY_KEYWORDS: tuple[str, ...] = ("PatientID", "PatientName", "PatientBirthDate")
#: Acquisition time keywords, in order of preference, each with the date that goes with it.
TIME_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("AcquisitionTime", "AcquisitionDate"),
    ("SeriesTime", "SeriesDate"),
    ("ContentTime", "ContentDate"),
)

#: Key of the identity hashes: random, made once per process, never stored.
_KEY = secrets.token_bytes(32)


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class SeriesHeader:
    """What the checks need from the header of a series' first slice.

    ``identity`` holds one keyed hash per :data:`IDENTITY_KEYWORDS` entry (None when the
    attribute is empty); ``times`` one ``(keyword, date or None, seconds of the day)`` per
    :data:`TIME_KEYWORDS` entry the header has. Neither is ever shown (``repr`` hides them).
    """

    series_uid: str = ""
    study_uid: str = ""
    identity: tuple[bytes | None, ...] = field(default=(None, None, None), repr=False)
    times: tuple[tuple[str, datetime.date | None, float], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Series:
    """One series of a patient: its place (time point, phase, folder as given in
    series.csv), its header values and, once known, its ``days_from_pre``."""

    timepoint: str
    phase: str
    folder: str
    header: SeriesHeader
    days_from_pre: int | None = None

    @property
    def name(self) -> str:
        return f"{self.timepoint}/{self.phase}"

    def context(self, patient: str) -> str:
        """The start of a refusal (as :func:`recur.preprocess.convert._convert_staged` words it)."""
        return f"patient {patient}, {self.name}, folder '{self.folder}'"


@dataclass(frozen=True)
class Review:
    """Something a check could not verify for one series (nothing is refused for it)."""

    timepoint: str
    phase: str
    note: str

    def __str__(self) -> str:
        return f"{self.timepoint}/{self.phase}: {self.note}"


def keyed_hash(value: str) -> bytes:
    """HMAC-SHA256 of ``value`` under this process's random key (equal values, equal
    hashes, within one process only)."""
    return hmac.new(_KEY, value.encode("utf-8"), hashlib.sha256).digest()


def _text(value: Any) -> str:
    """A header value as compared: surrounding spaces and trailing '^' dropped, runs of
    spaces as one, upper case (``Doe^Jane `` and ``DOE^JANE`` are one name)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = "\\".join(str(v) for v in value)
    return " ".join(str(value).split()).rstrip("^").upper()


def parse_time(value: Any) -> float | None:
    """Seconds of the day of a DICOM TM value (``HHMMSS.FFFFFF``, ``HHMM``, ``HH``, or the
    old ``HH:MM:SS``); None when empty or malformed.

    >>> parse_time("101502.5")
    36902.5
    """
    text = str(value or "").strip().replace(":", "")
    if not text:
        return None
    main, _, frac = text.partition(".")
    if len(main) not in (2, 4, 6) or not main.isdigit() or (frac and not frac.isdigit()):
        return None
    hh, mm, ss = int(main[:2]), int(main[2:4] or 0), int(main[4:6] or 0)
    if hh > 23 or mm > 59 or ss > 60:
        return None
    return hh * 3600 + mm * 60 + ss + (float(f"0.{frac}") if frac else 0.0)


def parse_date(value: Any) -> datetime.date | None:
    """A DICOM DA value (``YYYYMMDD``) as a date; None when empty or malformed."""
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def header_values(ds: Any) -> SeriesHeader:
    """The :class:`SeriesHeader` of one slice: ``ds`` is a pydicom Dataset already read (or
    any mapping from keyword to value; only ``ds.get(keyword)`` is used)."""
    identity = tuple(
        keyed_hash(text) if (text := _text(ds.get(kw))) else None for kw in IDENTITY_KEYWORDS
    )
    times = []
    for time_kw, date_kw in TIME_KEYWORDS:
        seconds = parse_time(ds.get(time_kw))
        if seconds is not None:
            times.append((time_kw, parse_date(ds.get(date_kw)), seconds))
    return SeriesHeader(
        series_uid=str(ds.get("SeriesInstanceUID") or "").strip(),
        study_uid=str(ds.get("StudyInstanceUID") or "").strip(),
        identity=identity,
        times=tuple(times),
    )


# --------------------------------------------------------------------------- helpers
def _ordered(series: Sequence[Series]) -> list[Series]:
    """Time point order (pre first), then phase order; unknown names last, order kept."""
    rank = {p: i for i, p in enumerate(PHASES)}
    tps = {t: i for i, t in enumerate(TIMEPOINTS)}
    return sorted(series, key=lambda s: (tps.get(s.timepoint, 9), rank.get(s.phase, len(rank))))


def _named(group: Sequence[Series]) -> str:
    return ", ".join(f"{s.name} (folder '{s.folder}')" for s in group)


def _groups(series: Sequence[Series], key: Callable[[Series], Hashable]) -> list[list[Series]]:
    """Series grouped by ``key``, the largest group first (ties: the group seen first)."""
    found: dict[Hashable, list[Series]] = {}
    for s in series:
        found.setdefault(key(s), []).append(s)
    return sorted(found.values(), key=len, reverse=True)


def _refuse_odd_ones(
    series: Sequence[Series], key: Callable[[Series], Hashable], patient: str, what: str, fix: str
) -> None:
    """Refuse the series whose ``key`` differs from the majority's; with no majority name
    every group. ``what`` names the compared attribute(s), ``fix`` the way out."""
    groups = _groups(series, key)
    if len(groups) < 2:
        return
    if len(groups[0]) > len(groups[1]):
        odd = [s for g in groups[1:] for s in g]
        odd = _ordered(odd)
        first, rest = odd[0], odd[1:]
        others = _ordered(groups[0])
        also = f" ({_named(rest)} differ too)" if rest else ""
        raise RecurError(
            f"{first.context(patient)}: its {what} differs from that of the other "
            f"{len(others)} series ({', '.join(s.name for s in others)}){also}; {fix}"
        )
    listed = " against ".join(_named(_ordered(g)) for g in groups)
    sizes = " against ".join(str(len(g)) for g in groups)
    first = _ordered(groups[1])[0]
    raise RecurError(
        f"{first.context(patient)}: the series differ in {what}, {sizes} with no majority, "
        f"so which is wrong cannot be told: {listed}; {fix}"
    )


# --------------------------------------------------------------------------- checks
def check_identity(series: Sequence[Series], patient: str) -> list[Review]:
    """Refuse a series of another patient (see the module text); returns review notes for
    series whose headers hold no identity attribute (those are not compared).

    Only the attributes every compared series has are compared (one site may leave the
    birth date empty); series that share none are not compared either (review notes).
    """
    reviews: list[Review] = []
    present = []
    for s in series:
        if any(v is not None for v in s.header.identity):
            present.append(s)
        else:
            reviews.append(
                Review(
                    s.timepoint,
                    s.phase,
                    "no PatientID, PatientName or PatientBirthDate in the headers: not "
                    "checked to be of the same patient as the other series",
                )
            )
    if len(present) < 2:
        return reviews
    common = [
        i for i in range(len(IDENTITY_KEYWORDS)) if all(s.header.identity[i] for s in present)
    ]
    if not common:
        note = "the series share no identity attribute: not checked to be of one patient"
        return reviews + [Review(s.timepoint, s.phase, note) for s in present]
    what = "patient identity (" + ", ".join(IDENTITY_KEYWORDS[i] for i in common) + ")"
    _refuse_odd_ones(
        present,
        lambda s: tuple(s.header.identity[i] for i in common),
        patient,
        what,
        "is a row of series.csv pointing at another patient's series?",
    )
    return reviews


def check_reuse(series: Sequence[Series], patient: str) -> None:
    """Refuse one series (SeriesInstanceUID) used for two phases or time points; the later
    use (time point, then phase order) is named, with the earlier one."""
    seen: dict[str, Series] = {}
    for s in _ordered(series):
        uid = s.header.series_uid
        if not uid:
            continue
        if uid in seen:
            raise RecurError(
                f"{s.context(patient)}: the same series (SeriesInstanceUID) as "
                f"{_named([seen[uid]])}; each phase and time point needs its own series: "
                "check these rows of series.csv"
            )
        seen[uid] = s


def check_one_study(series: Sequence[Series], patient: str) -> list[Review]:
    """Refuse a phase of a time point that comes from another study (StudyInstanceUID) than
    the time point's other phases; ``series`` are the phases of one time point."""
    known = [s for s in series if s.header.study_uid]
    reviews = [
        Review(s.timepoint, s.phase, "no StudyInstanceUID: not checked to be of one study")
        for s in series
        if not s.header.study_uid
    ]
    _refuse_odd_ones(
        known,
        lambda s: s.header.study_uid,
        patient,
        "study (StudyInstanceUID)",
        "the 4 phases of a time point come from one examination: check the rows of series.csv",
    )
    return reviews


def check_phase_order(series: Sequence[Series], patient: str) -> list[Review]:
    """Refuse phases of one time point acquired out of the order PS < AP < PVP < DP.

    A phase without any acquisition time is not checked (a review note); two phases with
    the same time are not refused either (a note: the order cannot be told). The keyword
    compared is the first of :data:`TIME_KEYWORDS` that every timed phase has, else each
    phase's own first one.
    """
    reviews: list[Review] = []
    timed = []
    for s in _ordered(series):
        if s.header.times:
            timed.append(s)
        else:
            reviews.append(
                Review(
                    s.timepoint,
                    s.phase,
                    "no acquisition time (AcquisitionTime, SeriesTime, ContentTime) in the "
                    "headers: the phase order was not checked for it",
                )
            )
    if len(timed) < 2:
        return reviews
    keywords = [{kw for kw, _, _ in s.header.times} for s in timed]
    common = next((kw for kw, _ in TIME_KEYWORDS if all(kw in k for k in keywords)), None)

    def pick(s: Series) -> tuple[str, datetime.date | None, float]:
        return next((t for t in s.header.times if t[0] == common), s.header.times[0])

    picked = [pick(s) for s in timed]
    with_dates = all(d is not None for _, d, _ in picked)
    when = [(d.toordinal() * 86400.0 if with_dates and d else 0.0) + sec for _, d, sec in picked]
    for j in range(1, len(timed)):
        b = timed[j]
        for i in range(j):
            if when[j] < when[i]:
                source = common or f"{picked[j][0]} and {picked[i][0]}"
                raise RecurError(
                    f"{b.context(patient)}: acquired {_duration(when[i] - when[j])} before "
                    f"{_named([timed[i]])} ({source}), but the phases of a time point are "
                    "acquired in the order PS < AP < PVP < DP: are phase rows of series.csv "
                    "swapped?"
                )
        same = [timed[i].name for i in range(j) if when[i] == when[j]]
        if same:
            note = f"the same acquisition time as {', '.join(same)}: their order was not checked"
            reviews.append(Review(b.timepoint, b.phase, note))
    return reviews


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _days(n: int) -> str:
    return f"{n} day" if abs(n) == 1 else f"{n} days"


def check_interval(series: Sequence[Series], patient: str, min_interval_days: int) -> None:
    """Refuse a post series acquired less than ``min_interval_days`` after the pre DP
    (``days_from_pre``; pre and post swapped give a negative count). Series of other time
    points and series without ``days_from_pre`` (a date is missing: see
    :func:`interval_review`) are not checked. The post DP is named first when several fail.
    """
    post = [s for s in _ordered(series) if s.timepoint == "post"]
    for s in sorted(post, key=lambda s: s.phase != "DP"):  # (stable: phase order after DP)
        days = s.days_from_pre
        if days is not None and days < min_interval_days:
            when = (
                f"{_days(-days)} before pre"
                if days < 0
                else ("on the same day as pre" if days == 0 else f"{_days(days)} after pre")
            )
            raise RecurError(
                f"{s.context(patient)}: post acquired {when} (days from the pre DP); expected "
                f"at least {_days(min_interval_days)} after pre (convert.min_interval_days): are "
                "pre and post swapped in series.csv?"
            )


def interval_review(series: Sequence[Series]) -> list[Review]:
    """Review notes for post series whose ``days_from_pre`` is unknown (no examination date
    here or on the pre DP): that post follows pre could not be checked for them."""
    return [
        Review(
            s.timepoint,
            s.phase,
            "no examination date (here or on the pre DP): days_from_pre is null and that post "
            "was acquired after pre was not checked",
        )
        for s in _ordered(series)
        if s.timepoint == "post" and s.days_from_pre is None
    ]


# --------------------------------------------------------------------------- entry points
def check_timepoint(series: Sequence[Series], patient: str) -> list[Review]:
    """Every check within one time point (its converted phases): one patient, no series
    twice, one study, phase order; returns the review notes (including unknown dates)."""
    reviews = check_identity(series, patient)
    check_reuse(series, patient)
    reviews += check_one_study(series, patient)
    reviews += check_phase_order(series, patient)
    reviews += interval_review(series)
    return reviews


def check_patient(series: Sequence[Series], patient: str, min_interval_days: int) -> None:
    """The checks across a patient's time points (run once every time point converted):
    one patient over all series, no series twice, post acquired after pre."""
    check_identity(series, patient)
    check_reuse(series, patient)
    check_interval(series, patient, min_interval_days)
