"""Patient exclusions: by configuration, and by a QC refusal recorded as a decision.

Two ways a patient leaves the analysis (docs/guide/reporting.md):

* **by configuration** (``exclude:`` in the config: patient id + reason): removed from the DAG
  at parse time, counted in Figure 1 with the reason;
* **by QC** (``qc.on_failure: exclude``): a per-patient step (convert, check-mask, register,
  crop) that refuses its input (:class:`~recur.errors.RecurError`) writes an *exclusion
  placeholder* in place of each declared output instead of failing. A placeholder is a small
  text file that starts with :data:`MARKER` followed by a JSON list of exclusion records; a
  later per-patient step that finds a placeholder among its inputs passes the records on to
  its own outputs. The cohort step ``qc-exclusions`` reads every patient's crops file and
  lists the excluded patients with stage and reason; the split drops them, so every model and
  table sees only included patients.

No reader ever takes a placeholder for data: :func:`is_placeholder` checks the marker bytes
explicitly (a NIfTI starts with the gzip magic, an ``.npz`` with ``PK``).
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where used: per-patient jobs do not need it
    import pandas as pd

from recur.errors import RecurError
from recur.io import atomic_path
from recur.settings import SectionSettings

log = logging.getLogger(__name__)

#: First bytes of every exclusion placeholder.
MARKER = b"RECUR-EXCLUDED-PLACEHOLDER\n"
#: What ``qc.on_failure`` may say.
ON_FAILURE = ("stop", "exclude")


@dataclass(frozen=True)
class QcSettings(SectionSettings):
    """What a per-patient refusal does: config section ``qc`` (``schemas/config.schema.yaml``)."""

    SECTION = "qc"

    on_failure: str

    def __post_init__(self) -> None:
        if self.on_failure not in ON_FAILURE:
            raise RecurError(f"qc.on_failure = {self.on_failure!r}; expected one of {ON_FAILURE}")


#: Columns of the QC exclusion table (``results/qc/exclusions.csv``).
EXCLUSION_COLUMNS = ("patient_id", "stage", "timepoint", "reason")


@dataclass(frozen=True)
class Exclusion:
    """One recorded exclusion: which patient, at which step (and time point), and why."""

    patient_id: str
    stage: str
    timepoint: str
    reason: str


# --------------------------------------------------------------------------- config exclusions
def config_exclusions(entries: Sequence[dict] | None, known_ids: Iterable[str]) -> pd.DataFrame:
    """The ``exclude:`` config list as a table (patient_id, reason), checked against the cohort.

    Ids are NFC-normalised as the cohort tables' are. Raises :class:`RecurError` naming an id
    that is not in the cohort, listed twice, or whose reason is empty.
    """
    import pandas as pd

    known = {str(p) for p in known_ids}
    rows = []
    seen: set[str] = set()
    for i, e in enumerate(entries or []):
        pid = unicodedata.normalize("NFC", str(e.get("patient_id", "")).strip())
        reason = str(e.get("reason", "")).strip()
        if pid not in known:
            raise RecurError(
                f"config: exclude[{i}]: patient '{pid}' is not in the cohort "
                f"(clinical table / synthetic plan)"
            )
        if pid in seen:
            raise RecurError(f"config: exclude[{i}]: patient '{pid}' is listed twice")
        if not reason:
            raise RecurError(f"config: exclude[{i}]: patient '{pid}' needs a reason")
        seen.add(pid)
        rows.append({"patient_id": pid, "reason": reason})
    return pd.DataFrame(rows, columns=["patient_id", "reason"])


def remaining_patients(patients: Sequence[str], excluded: Iterable[str]) -> list[str]:
    """``patients`` without ``excluded``, order kept."""
    drop = set(excluded)
    return [p for p in patients if p not in drop]


# --------------------------------------------------------------------------- placeholders
def is_placeholder(path: str | Path) -> bool:
    """True when ``path`` is an exclusion placeholder (checked by its marker bytes)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MARKER)) == MARKER
    except (FileNotFoundError, IsADirectoryError):
        return False


def read_placeholder(path: str | Path) -> list[Exclusion]:
    """The exclusion records held by a placeholder."""
    raw = Path(path).read_bytes()
    if not raw.startswith(MARKER):
        raise RecurError(f"{path}: not an exclusion placeholder")
    return [Exclusion(**r) for r in json.loads(raw[len(MARKER) :].decode("utf-8"))]


def placeholder_bytes(records: Sequence[Exclusion]) -> bytes:
    """The content of a placeholder holding ``records``."""
    return MARKER + json.dumps([asdict(r) for r in records], indent=1).encode("utf-8") + b"\n"


def write_placeholders(paths: Iterable[str | Path], records: Sequence[Exclusion]) -> None:
    """Write a placeholder holding ``records`` at each of ``paths`` (atomically)."""
    content = placeholder_bytes(records)
    for p in paths:
        with atomic_path(p) as tmp:
            Path(tmp).write_bytes(content)


def inherited_records(inputs: Iterable[str | Path]) -> list[Exclusion]:
    """The exclusion records of every placeholder among ``inputs`` (duplicates dropped)."""
    out: list[Exclusion] = []
    for p in inputs:
        if is_placeholder(p):
            for r in read_placeholder(p):
                if r not in out:
                    out.append(r)
    return out


def run_or_exclude(
    run: Callable[[], object],
    *,
    on_failure: str,
    patient: str,
    stage: str,
    timepoint: str,
    inputs: Sequence[str | Path],
    outputs: Sequence[str | Path],
    write_excluded: Callable[[Sequence[Exclusion]], None] | None = None,
    redact: Callable[[str], str] | None = None,
) -> list[Exclusion]:
    """Run one per-patient step under the ``qc.on_failure`` policy.

    * an input is a placeholder (an earlier step excluded the patient): the step is skipped
      and its outputs become placeholders holding the same records;
    * ``run()`` raises :class:`RecurError`: with ``stop`` the error propagates (the run
      fails with its message); with ``exclude`` the outputs become placeholders holding a
      new record (patient, stage, time point, the message).

    ``write_excluded(records)``, when given, writes outputs meant for human eyes instead of a
    placeholder (e.g. a QC PNG saying why); it runs after the placeholders. ``redact`` takes
    the cohort's paths out of a refusal's message (recur.cohort.links.redact) before it is
    raised, logged or recorded: records, placeholders, logs and QC pictures name the patient,
    the step and the problem, and a cohort file only by its table row. Returns the records
    (empty when the step ran).
    """
    if on_failure not in ON_FAILURE:
        raise RecurError(f"qc.on_failure must be one of {ON_FAILURE}, not '{on_failure}'")
    records = inherited_records(inputs)
    if records:
        log.warning(
            "patient %s %s: excluded earlier (%s); passing on", patient, stage, records[0].reason
        )
    else:
        try:
            run()
            return []
        except RecurError as exc:
            reason = redact(str(exc)) if redact is not None else str(exc)
            if on_failure == "stop":
                if reason == str(exc):
                    raise
                raise RecurError(reason) from None
            records = [Exclusion(str(patient), stage, timepoint, reason)]
            log.warning("patient %s excluded at %s: %s", patient, stage, reason)
    write_placeholders(outputs, records)
    if write_excluded is not None:
        write_excluded(records)
    return records


def excluded_lines(patient: str, records: Sequence[Exclusion]) -> list[str]:
    """The text lines :func:`excluded_png` draws: the pseudonym, step and reason only."""
    import textwrap

    lines = [f"patient {patient}: EXCLUDED by QC"]
    for r in records:
        lines.extend(textwrap.wrap(f"{r.stage} {r.timepoint}: {r.reason}", 100))
    return lines


def excluded_png(path: str | Path, patient: str, records: Sequence[Exclusion]) -> None:
    """A small PNG that says the patient was excluded and why (for the QC montage slot)."""
    from recur.preprocess import qc_images

    qc_images.save_png(qc_images.text_image(excluded_lines(patient, records)), path)


# --------------------------------------------------------------------------- cohort table
def exclusion_table(files: dict[str, str | Path]) -> pd.DataFrame:
    """QC exclusions from each patient's last per-patient output (``{patient: path}``).

    One row per record (patient_id, stage, timepoint, reason); patients whose file is real
    data have no row.
    """
    import pandas as pd

    rows = []
    for pid, path in files.items():
        if is_placeholder(path):
            rows.extend(asdict(r) | {"patient_id": str(pid)} for r in read_placeholder(path))
    return pd.DataFrame(rows, columns=list(EXCLUSION_COLUMNS))


def read_exclusions(path: str | Path | None) -> pd.DataFrame:
    """The QC exclusion table written by :func:`exclusion_table` (empty when ``path`` is None)."""
    import pandas as pd

    if path is None:
        return pd.DataFrame(columns=list(EXCLUSION_COLUMNS))
    return pd.read_csv(path, dtype=str, keep_default_na=False)
