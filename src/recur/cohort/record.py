"""One cohort per working directory, fixed when a run starts.

Two guards keep a run from reading another cohort's images or mixing two cohorts' results:

* **The cohort record** (``results/cohort.json``): what cohort ``results/`` was made from,
  as digests of the validated tables (directory cohort) or of the ``synthetic:`` settings
  (embedded cohort), and the patient count; no path, no id. It is written when a run starts
  executing jobs (Snakemake's ``onstart``, after its lock is held), never by a dry run. A run
  or dry run whose cohort differs is refused before anything is written
  (:func:`record_problem`); a user who edited the tables on purpose says so with
  ``cohort.tables_edited``.
* **The working-directory lock** (``.snakemake/recur-workdir.lock``, an advisory ``flock``
  held for the life of the Snakemake process that took it): only the process that holds it
  writes the input links or the record. A second invocation (a dry run included) while a run
  holds it writes nothing; it is refused when its cohort tables differ from the ones the
  links were made from.

Pure functions build and compare identities; :func:`read_record`, :func:`write_record` and
:func:`hold_lock` are the file edges.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recur.errors import RecurError
from recur.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

#: The cohort record, relative to the working directory.
RECORD = "results/cohort.json"
#: The working-directory lock, relative to the working directory.
LOCK = ".snakemake/recur-workdir.lock"
#: How to start over, quoted in refusals.
START_OVER = "rm -r results input_links"

# the open lock file of this process (kept open: closing it releases the lock)
_held: dict[str, int] = {}


def table_digest(table: pd.DataFrame) -> str:
    """sha256 of a validated table as CSV (rows and columns in their order)."""
    return hashlib.sha256(table.to_csv(index=False).encode("utf-8")).hexdigest()


def directory_identity(tables: Mapping[str, pd.DataFrame], n_patients: int) -> dict[str, Any]:
    """The identity of a directory cohort: ``{table name: sha256}`` of its validated tables."""
    return {
        "source": "directory",
        "patients": int(n_patients),
        "tables": {name: table_digest(df) for name, df in tables.items()},
    }


def synthetic_identity(settings: Mapping[str, Any], n_patients: int) -> dict[str, Any]:
    """The identity of the embedded synthetic cohort: a digest of its ``synthetic:`` settings."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return {
        "source": "synthetic",
        "patients": int(n_patients),
        "settings": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


def record_problem(
    recorded: Mapping[str, Any] | None, current: Mapping[str, Any], *, tables_edited: bool
) -> str | None:
    """Why this run may not use a working directory whose results were made from
    ``recorded`` (None: it may). Pure.

    * nothing recorded, or the same identity: fine;
    * both synthetic with other settings: fine (the generator's settings are rule parameters:
      Snakemake regenerates the cohort and reruns everything downstream);
    * a directory cohort whose tables differ: refused unless ``tables_edited`` (the user says
      the tables were edited on purpose; the changed rows' jobs rerun);
    * a synthetic cohort against a directory one, either way: refused.
    """
    if not recorded or _same(recorded, current):
        return None
    src_was, src_now = recorded.get("source"), current.get("source")
    if src_was == src_now == "synthetic":
        return None
    how = (
        "run this cohort in another working directory (snakemake -d DIR), or start over "
        f"here ({START_OVER})"
    )
    if src_was != src_now:
        return (
            f"results/ here was made from {_describe(recorded)}, and this config asks for "
            f"{_describe(current)}: {how}"
        )
    if tables_edited:
        return None
    changed = [
        name
        for name in sorted(set(recorded.get("tables", {})) | set(current.get("tables", {})))
        if recorded.get("tables", {}).get(name) != current.get("tables", {}).get(name)
    ]
    return (
        f"results/ here was made from other cohort tables ({', '.join(changed)} differ; "
        f"{recorded.get('patients')} patients then, {current.get('patients')} now): {how}; "
        "if you edited this cohort's tables on purpose, rerun with "
        "--config cohort='{tables_edited: true}' (the jobs whose inputs changed rerun)"
    )


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    keys = ("source", "tables", "settings")
    return all(a.get(k) == b.get(k) for k in keys)


def _describe(identity: Mapping[str, Any]) -> str:
    kind = (
        "the embedded synthetic cohort"
        if identity.get("source") == "synthetic"
        else ("a cohort directory")
    )
    return f"{kind} ({identity.get('patients')} patients)"


def read_record(root: str | Path = ".") -> dict[str, Any] | None:
    """The cohort record of the working directory ``root`` (None when there is none)."""
    path = Path(root) / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise RecurError(
            f"{RECORD} cannot be read: results/ may be damaged; start over ({START_OVER})"
        ) from None


def write_record(identity: Mapping[str, Any], root: str | Path = ".") -> None:
    """Write the cohort record atomically (only the process holding the lock calls it)."""
    path = Path(root) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(dict(identity), indent=2) + "\n", encoding="utf-8")


def hold_lock(root: str | Path = ".") -> bool:
    """Take the working-directory lock for the rest of this process (non-blocking).

    True when this process holds it (now or already); False when another process does.
    """
    path = os.path.abspath(Path(root) / LOCK)
    if path in _held:
        return True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _held[path] = fd
    return True


def release_lock(root: str | Path = ".") -> None:
    """Release the lock taken by :func:`hold_lock` (tests; a process exit releases it too)."""
    fd = _held.pop(os.path.abspath(Path(root) / LOCK), None)
    if fd is not None:
        os.close(fd)
