"""``recur scan``: draft a ``series.csv`` from a raw DICOM export tree, for the user to review.

The tree is walked once, reading headers only (``stop_before_pixels``). Files are grouped into
series by SeriesInstanceUID, series into patients by PatientID and into time points by study
(StudyInstanceUID) in StudyDate order: the first study is ``pre``, the second ``post``. The
contrast phase is guessed from SeriesDescription with the configurable regular expressions of
``scan.phase_patterns``; series that match no phase or several, or series of one dynamic run
with near-identical names ("LAVA Phase 1..4"), are placed by AcquisitionTime order within the
study. Every guess the scanner is not sure of is marked in the ``review`` column with the
reason.

De-identification: the draft names patients by running pseudonyms (P001, P002, ...) in the
order of their first folder, never by a DICOM PatientID or name, and holds no date. It does
hold SeriesInstanceUIDs (the converter needs them where a folder holds several series), so it
is meant to stay on the site's own machine like the export itself.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pydicom

from recur.constants import PHASES, TIMEPOINTS
from recur.errors import RecurError
from recur.io import atomic_path
from recur.settings import SectionSettings

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = (
    "patient_id",
    "timepoint",
    "phase",
    "dicom_dir",
    "series_uid",
    "review",
    "n_files",
    "series_number",
    "series_description",
)

#: Header fields read per file (identifying ones are used for grouping only, never written).
_TAGS = (
    "SOPClassUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "SeriesDescription",
    "SeriesNumber",
    "AcquisitionTime",
    "SeriesTime",
    "ContentTime",
    "Modality",
)
_NON_IMAGE_MODALITIES = {"SR", "PR", "KO", "REG", "SEG", "RTSTRUCT", "DOC"}


# --------------------------------------------------------------------------- patterns
@dataclass(frozen=True)
class ScanSettings(SectionSettings):
    """The phase guesses of ``recur scan``: config section ``scan`` (defaults in
    ``schemas/config.schema.yaml``)."""

    SECTION = "scan"

    #: ``{phase: case-insensitive regular expression}`` for PS, AP, PVP, DP
    phase_patterns: Mapping[str, str]

    def compiled(self) -> dict[str, re.Pattern[str]]:
        """The patterns compiled (:func:`compile_patterns`)."""
        return compile_patterns({ph: self.phase_patterns[ph] for ph in PHASES})


def load_patterns(config_path: Path | None = None) -> dict[str, re.Pattern[str]]:
    """The phase regular expressions of a config YAML's ``scan.phase_patterns`` (checked
    against the schema; its defaults for what the file leaves out, all of them when
    ``config_path`` is None), compiled: ``{phase: pattern}`` for PS, AP, PVP, DP."""
    from recur.config import load_config

    return ScanSettings.from_config(load_config(config_path)["scan"]).compiled()


def compile_patterns(patterns: Mapping[str, str]) -> dict[str, re.Pattern[str]]:
    """Compile ``{phase: regex}`` case-insensitively; a bad regex is a :class:`RecurError`."""
    out = {}
    for ph, pat in patterns.items():
        try:
            out[ph] = re.compile(pat, re.IGNORECASE)
        except re.error as exc:
            raise RecurError(
                f"scan.phase_patterns.{ph} = {pat!r} is not a valid regex: {exc}"
            ) from None
    return out


def match_phases(description: str, patterns: Mapping[str, re.Pattern[str]]) -> list[str]:
    """The phases whose pattern matches ``description``, in PS, AP, PVP, DP order.

    The description is tried as written and with ``_ - . /`` read as spaces, so word-boundary
    patterns such as ``\\bpv\\b`` also match vendor names like ``t1_vibe_fs_tra_pv``.
    """
    text = description or ""
    spaced = re.sub(r"[_\-./]+", " ", text)
    return [
        ph
        for ph in PHASES
        if ph in patterns and (patterns[ph].search(text) or patterns[ph].search(spaced))
    ]


def _run_key(description: str) -> str:
    """SeriesDescription without digits and punctuation: the members of one dynamic run
    ("LAVA Phase 1", "LAVA Phase 2", ...) share it."""
    return " ".join(re.sub(r"[\d_\-.:()\[\]/]+", " ", (description or "").lower()).split())


# --------------------------------------------------------------------------- phase guessing
@dataclass
class PhaseGuess:
    """Phase (or "") and review note per series of one study, in input order."""

    phases: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)


def guess_phases(
    descriptions: Sequence[str],
    times: Sequence[float | None],
    patterns: Mapping[str, re.Pattern[str]],
) -> PhaseGuess:
    """Guess the contrast phase of each series of one study.

    1. A series whose description matches exactly one phase, claimed by no other series,
       gets it (confident).
    2. The rest that look like phases (several phases match; several series claim the same
       phase; or unmatched series of one dynamic run, i.e. two or more sharing a description
       up to digits) are ordered by acquisition time (``times``, seconds of the day) and get
       the phases still free in PS < AP < PVP < DP order, when their number equals the number
       of free phases; they are marked for review with the reason.
    3. Everything else gets no phase; unmatched series are noted as "no phase pattern matched".

    Confident phases whose acquisition times contradict the phase order are also marked.
    """
    n = len(descriptions)
    matches = [match_phases(d, patterns) for d in descriptions]
    phases = [""] * n
    review = [""] * n
    claims: dict[str, list[int]] = {}
    for i, m in enumerate(matches):
        if len(m) == 1:
            claims.setdefault(m[0], []).append(i)
    confident = {ph: idx[0] for ph, idx in claims.items() if len(idx) == 1}
    for ph, i in confident.items():
        phases[i] = ph

    candidates: list[int] = []
    reason: dict[int, str] = {}
    for ph, idx in claims.items():
        if len(idx) > 1:
            for i in idx:
                candidates.append(i)
                reason[i] = f"{len(idx)} series match {ph}"
    for i, m in enumerate(matches):
        if len(m) > 1:
            candidates.append(i)
            reason[i] = f"description matches {'+'.join(m)}"
    runs: dict[str, list[int]] = {}
    for i, m in enumerate(matches):
        if not m:
            runs.setdefault(_run_key(descriptions[i]), []).append(i)
    for key, idx in runs.items():
        if len(idx) >= 2:
            for i in idx:
                candidates.append(i)
                reason[i] = f"one of {len(idx)} series named like '{key}'"

    free = [ph for ph in PHASES if ph not in confident]
    candidates = sorted(set(candidates))
    if candidates:
        timed = all(times[i] is not None for i in candidates)
        if timed and len(candidates) == len(free):
            order = sorted(candidates, key=lambda i: times[i])  # type: ignore[arg-type,return-value]
            for ph, i in zip(free, order, strict=True):
                phases[i] = ph
                review[i] = f"phase from acquisition-time order ({reason[i]})"
        else:
            why = (
                "no acquisition time"
                if not timed
                else (f"{len(candidates)} candidate series for {len(free)} free phase(s)")
            )
            for i in candidates:
                review[i] = f"phase unclear: {reason[i]}; {why}"
    for i, m in enumerate(matches):
        if not m and i not in reason:
            review[i] = "no phase pattern matched (not a contrast phase?)"

    # the assigned phases must follow acquisition order PS < AP < PVP < DP
    placed = [(PHASES.index(phases[i]), times[i], i) for i in range(n) if phases[i]]
    placed = [p for p in placed if p[1] is not None]
    for a in placed:
        for b in placed:
            if a[0] < b[0] and a[1] > b[1]:  # type: ignore[operator]
                for _, _, i in (a, b):
                    note = "acquisition times contradict the phase order"
                    if note not in review[i]:
                        review[i] = f"{review[i]}; {note}" if review[i] else note
    return PhaseGuess(phases, review)


def _seconds(value: object) -> float | None:
    """DICOM TM ('HHMMSS.frac', 'HH:MM:SS') as seconds of the day, None when absent."""
    s = str(value or "").strip().replace(":", "")
    if not s:
        return None
    try:
        hh, mm, ss = int(s[0:2]), int(s[2:4] or 0), float(s[4:] or 0)
    except ValueError:
        return None
    return hh * 3600 + mm * 60 + ss


# --------------------------------------------------------------------------- tree walk
@dataclass
class _Series:
    uid: str
    dirs: set[str] = field(default_factory=set)
    n_files: int = 0
    patient_key: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    description: str = ""
    number: str = ""
    modality: str = ""
    time: float | None = None


def _read_headers(root: Path) -> tuple[dict[str, _Series], int]:
    series: dict[str, _Series] = {}
    skipped = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            path = Path(dirpath) / name
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
            except Exception:  # not DICOM, or unreadable: the draft lists readable series
                skipped += 1
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
            modality = str(ds.get("Modality", "") or "").strip().upper()
            if not uid or modality in _NON_IMAGE_MODALITIES:
                skipped += 1
                continue
            rel = path.parent.relative_to(root).as_posix()
            s = series.get(uid)
            if s is None:
                s = series[uid] = _Series(
                    uid=uid,
                    patient_key=str(ds.get("PatientID", "") or "").strip()
                    or f"folder:{rel.split('/')[0]}",
                    study_uid=str(ds.get("StudyInstanceUID", "") or "").strip(),
                    study_date=str(ds.get("StudyDate", "") or "").strip(),
                    study_time=str(ds.get("StudyTime", "") or "").strip(),
                    description=str(ds.get("SeriesDescription", "") or "").strip(),
                    number=str(ds.get("SeriesNumber", "") or "").strip(),
                    modality=modality,
                )
            s.dirs.add(rel)
            s.n_files += 1
            t = _seconds(ds.get("AcquisitionTime") or ds.get("SeriesTime") or ds.get("ContentTime"))
            if t is not None and (s.time is None or t < s.time):
                s.time = t
    return series, skipped


def _common_dir(dirs: set[str]) -> str:
    parts = [d.split("/") for d in sorted(dirs)]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common) or "."


def scan_tree(root: Path, patterns: Mapping[str, re.Pattern[str]]) -> pd.DataFrame:
    """Walk ``root`` and return the draft series table (see :data:`COLUMNS`).

    ``dicom_dir`` is relative to ``root`` (so ``root`` can serve as the cohort directory).
    """
    root = Path(root)
    if not root.is_dir():
        raise RecurError(f"DICOM root {root} is not a folder")
    series, skipped = _read_headers(root)
    if skipped:
        log.info("skipped %d file(s) that are not DICOM images", skipped)
    if not series:
        raise RecurError(f"no DICOM image series found under {root}")

    rows: list[dict[str, object]] = []
    for s in series.values():
        note = "" if len(s.dirs) == 1 else f"files spread over {len(s.dirs)} folders"
        rows.append(
            {
                "_series": s,
                "dicom_dir": _common_dir(s.dirs),
                "series_uid": s.uid,
                "n_files": s.n_files,
                "series_number": s.number,
                "series_description": s.description,
                "review": note,
            }
        )

    # patients: pseudonyms in order of their first folder
    by_patient: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_patient.setdefault(r["_series"].patient_key, []).append(r)  # type: ignore[union-attr]
    ordered = sorted(by_patient.values(), key=lambda rs: min(str(r["dicom_dir"]) for r in rs))
    width = max(3, len(str(len(ordered))))
    for k, prs in enumerate(ordered, start=1):
        pid = f"P{k:0{width}d}"
        studies: dict[str, list[dict[str, object]]] = {}
        for r in prs:
            r["patient_id"] = pid
            s = r["_series"]
            studies.setdefault(s.study_uid or f"dir:{r['dicom_dir']}", []).append(r)  # type: ignore[union-attr]

        def study_key(rs: list[dict[str, object]]) -> tuple[str, str, str]:
            s0 = rs[0]["_series"]
            return (
                s0.study_date or "99999999",
                s0.study_time,  # type: ignore[union-attr]
                min(str(r["dicom_dir"]) for r in rs),
            )

        study_list = sorted(studies.values(), key=study_key)
        undated = any(not rs[0]["_series"].study_date for rs in study_list)  # type: ignore[union-attr]
        for j, rs in enumerate(study_list):
            tp = TIMEPOINTS[j] if j < len(TIMEPOINTS) else ""
            notes = []
            if not tp:
                notes.append(f"study {j + 1} of {len(study_list)} by date: not pre or post?")
            if undated and len(study_list) > 1:
                notes.append("a study has no StudyDate: time point guessed from folder order")
            if len(study_list) == 1:
                notes.append("only one study for this patient (no post)")
            guess = guess_phases(
                [str(r["series_description"]) for r in rs],
                [r["_series"].time for r in rs],  # type: ignore[union-attr]
                patterns,
            )
            for r, ph, why in zip(rs, guess.phases, guess.review, strict=True):
                r["timepoint"] = tp
                r["phase"] = ph
                r["review"] = "; ".join(x for x in (str(r["review"]), why, *notes) if x)
            if tp:
                missing = [ph for ph in PHASES if ph not in guess.phases]
                if missing:
                    log.warning(
                        "%s %s: no series found for phase(s) %s", pid, tp, ", ".join(missing)
                    )

    table = pd.DataFrame([{c: r.get(c, "") for c in COLUMNS} for r in rows], columns=list(COLUMNS))
    tp_rank = {t: i for i, t in enumerate(TIMEPOINTS)}
    ph_rank = {p: i for i, p in enumerate(PHASES)}
    table = table.assign(
        _t=table["timepoint"].map(lambda t: tp_rank.get(t, 9)),
        _p=table["phase"].map(lambda p: ph_rank.get(p, 9)),
        _n=pd.to_numeric(table["series_number"], errors="coerce"),
    ).sort_values(["patient_id", "_t", "_p", "_n", "dicom_dir"], kind="stable")
    return table.drop(columns=["_t", "_p", "_n"]).reset_index(drop=True)


def write_draft(table: pd.DataFrame, path: Path) -> None:
    """Write the draft table as CSV, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
