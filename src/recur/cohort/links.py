"""Pseudonymous links to a user's cohort, so that the workflow's records name no input folder.

A hospital export names folders after patients (name, MRN, exam date). Snakemake records every
job's input paths and shell command in ``.snakemake/`` (metadata, logs, locks), so a rule
whose inputs were the user's DICOM folders would copy those names there. Instead the workflow
reads the cohort through symbolic links named by pseudonym only::

    input_links/cohort                     -> the cohort directory (absolute path)
    input_links/<patient>/<tp>/<phase>     -> cohort/<dicom_dir>     (series.csv)
    input_links/<patient>/<tp>/roi         -> cohort/<mask>          (rois.csv; any mask format)

The per-series and per-mask links point *through* ``input_links/cohort`` (relative targets),
so moving the cohort directory replaces one link only. A link is written only when it is
missing or its target changed, and then atomically (a new link renamed over the old one):
parsing the workflow again (every snakemake call, every cluster job) leaves the links and
their modification times untouched, while a changed row of series.csv/rois.csv replaces that
row's link with a new one, which Snakemake sees as newer than the job's outputs (it takes the
newer of a link's and its target's modification time) and reruns that job only. A changed
DICOM folder is seen through the link as before.

The link *targets* hold the real folder names: ``input_links/`` is local plumbing, never to be
shared (``results/`` and ``.snakemake/`` name pseudonyms only).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pandas as pd

from recur.errors import RecurError

#: Folder (relative to the working directory) holding the links.
INPUT_LINKS = "input_links"
#: Name of the link to the cohort directory inside :data:`INPUT_LINKS`.
COHORT_LINK = "cohort"
#: File name of the ROI-mask link of a patient and time point (any of the mask formats).
ROI_LINK = "roi"


def series_link(patient: str, timepoint: str, phase: str, root: str = INPUT_LINKS) -> str:
    """The link path of one DICOM series (relative to the working directory)."""
    return f"{root}/{patient}/{timepoint}/{phase}"


def roi_link(patient: str, timepoint: str, root: str = INPUT_LINKS) -> str:
    """The link path of one ROI mask (relative to the working directory)."""
    return f"{root}/{patient}/{timepoint}/{ROI_LINK}"


def _through_cohort(rel: str) -> str:
    """Target of a ``<patient>/<tp>/<name>`` link for a path relative to the cohort dir."""
    if Path(rel).is_absolute():
        return str(rel)
    return f"../../{COHORT_LINK}/{Path(rel).as_posix()}"


def link_plan(
    series: pd.DataFrame, rois: pd.DataFrame, cohort_dir: str | Path, root: str = INPUT_LINKS
) -> dict[str, str]:
    """``{link path: target}`` of every link of a cohort (pure: nothing is touched).

    ``series`` and ``rois`` are the validated tables (``patient_id, timepoint, phase,
    dicom_dir`` and ``patient_id, timepoint, mask``); ``cohort_dir`` becomes absolute.
    """
    plan = {f"{root}/{COHORT_LINK}": os.path.abspath(Path(cohort_dir).expanduser())}
    for r in series.itertuples(index=False):
        plan[series_link(r.patient_id, r.timepoint, r.phase, root)] = _through_cohort(r.dicom_dir)
    for r in rois.itertuples(index=False):
        plan[roi_link(r.patient_id, r.timepoint, root)] = _through_cohort(r.mask)
    return plan


def ensure_link(link: str | Path, target: str, current: str | None = None) -> bool:
    """Make ``link`` a symbolic link to ``target``; True when it was (re)written.

    An existing link with the same target is left alone (its modification time too); one with
    another target is replaced atomically. Anything else at ``link`` (a file, a folder) is
    refused: the workflow never deletes what it did not create. ``current``: the link's
    target when already known (saves one system call per link).
    """
    link = Path(link)
    if current is None:
        try:
            current = os.readlink(link)
        except FileNotFoundError:
            current = None
        except OSError:  # EINVAL: there is something, and it is not a link
            raise RecurError(
                f"{link} exists and is not a link; the workflow keeps links to the cohort "
                "there (move it away)"
            ) from None
    if current == target:
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(6)}.tmp")
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return True


def existing_links(root: str = INPUT_LINKS) -> dict[str, str]:
    """``{link path: target}`` of every link under ``root`` (links to folders not entered)."""
    found: dict[str, str] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for e in entries:
            path = f"{folder}/{e.name}"
            if e.is_symlink():
                found[path] = os.readlink(path)
            elif e.is_dir():
                stack.append(path)
    return found


def sync_links(plan: dict[str, str], root: str = INPUT_LINKS) -> list[str]:
    """Apply :func:`link_plan`'s plan and remove the links it no longer holds (a patient or
    row removed); returns the links (re)written. Paths are relative to the working dir."""
    have = existing_links(root)
    for stale in sorted(set(have) - set(plan)):
        Path(stale).unlink(missing_ok=True)
    items = sorted(plan.items(), key=lambda kv: (kv[0].count("/"), kv[0]))
    return [link for link, target in items if ensure_link(link, target, have.get(link))]


# --------------------------------------------------------------------------- redaction
def path_replacements(
    series: pd.DataFrame | None,
    rois: pd.DataFrame | None,
    cohort_dir: str | Path | None = None,
    series_name: str = "series.csv",
    rois_name: str = "rois.csv",
) -> list[tuple[str, str]]:
    """``(text, replacement)`` pairs that take every cohort path out of a message: each row's
    ``dicom_dir`` / ``mask`` becomes ``<series.csv row N>`` / ``<rois.csv row N>`` (N as a
    spreadsheet shows it), the cohort directory (as given and resolved) ``<cohort>``. Longest
    first, so a folder inside another is replaced before its parent. Pure."""
    rows: dict[str, dict[str, list[int]]] = {}
    for table, col, name in ((series, "dicom_dir", series_name), (rois, "mask", rois_name)):
        if table is None or col not in table:
            continue
        for i, v in enumerate(table[col]):
            if isinstance(v, str) and v.strip():
                for form in {v.strip(), os.path.normpath(v.strip())}:
                    if form not in (".", ""):
                        rows.setdefault(form, {}).setdefault(name, []).append(i + 2)
    # a folder listed on several rows names them all
    pairs = {
        form: "<"
        + "; ".join(
            f"{name} row{'s' if len(nums) > 1 else ''} {', '.join(map(str, nums))}"
            for name, nums in by_table.items()
        )
        + ">"
        for form, by_table in rows.items()
    }
    if cohort_dir is not None:
        for form in {str(cohort_dir), os.path.abspath(cohort_dir), os.path.realpath(cohort_dir)}:
            if form not in (".", "", "/"):
                pairs.setdefault(form, "<cohort>")
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def redact(message: str, replacements: list[tuple[str, str]]) -> str:
    """``message`` with every text of :func:`path_replacements` replaced. Pure."""
    for text, repl in replacements:
        if text in message:
            message = message.replace(text, repl)
    return message
