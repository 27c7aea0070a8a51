"""One patient's DICOM series -> de-identified NIfTI files plus ``acquisition.json``.

:func:`convert_patient` (the workflow's job) converts both time points of a patient,
:func:`convert_timepoint` one time point and :func:`convert_series` one folder, all or nothing:
files are staged under temporary names and renamed into place only once every phase converted
and the series consistency checks (:mod:`recur.cohort.series_checks`) passed. The series are
read by :class:`recur.preprocess.dicom_series.SeriesReader`; the NIfTI files carry geometry and
voxels only (:func:`strip_metadata`), ``acquisition.json`` the allow-listed acquisition
parameters and whole-day offsets from the pre DP series (never a date).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import SimpleITK as sitk

from recur.cohort import series_checks
from recur.constants import PHASES, TIMEPOINTS
from recur.errors import RecurError
from recur.io import atomic_path, write_nifti, write_nifti_to
from recur.preprocess.dicom_series import ConvertedSeries, ConvertSettings, SeriesReader
from recur.preprocess.dicom_slice import day_offset, series_date
from recur.preprocess.series_table import SeriesRows, read_series_table, series_lookup
from recur.preprocess.steps import Abandon, Guard, run_step

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- writing
def strip_metadata(image: sitk.Image) -> sitk.Image:
    """Remove every metadata entry (a NIfTI written from it carries geometry only)."""
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    return image


def write_deidentified_nifti(image: sitk.Image, path: str | Path, compression_level: int) -> None:
    """Write ``image`` as NIfTI (``.nii`` or ``.nii.gz``) with no metadata, atomically
    (:func:`strip_metadata`, then :func:`recur.io.write_nifti`: ITK writes the NIfTI, a ``.gz``
    path is then gzipped at ``compression_level``, by ISA-L when installed)."""
    write_nifti(strip_metadata(image), path, compression_level)


def convert_series(
    folder: str | Path,
    out: str | Path,
    *,
    series_uid: str | None = None,
    echo: int | None = None,
    settings: ConvertSettings,
    allow_single_slice: bool = False,
    context: str | None = None,
) -> ConvertedSeries:
    """Convert one DICOM folder to a de-identified NIfTI file (``recur convert``)."""
    reader = SeriesReader(settings, allow_single_slice=allow_single_slice)
    result = reader(folder, series_uid=series_uid, echo=echo, context=context)
    write_deidentified_nifti(result.image, out, settings.compression_level)
    return result


def timepoint_outputs(outdir: str | Path, phases: Sequence[str] = PHASES) -> list[Path]:
    """The files one time point's conversion writes into ``outdir``."""
    outdir = Path(outdir)
    return [*(outdir / f"{ph}.nii.gz" for ph in phases), outdir / "acquisition.json"]


def _pre_dp_date(rows: SeriesRows, cohort_dir: Path, patient: str) -> datetime.date | None:
    """The examination day of the patient's pre DP series, from that folder's headers (None
    when unknown)."""
    try:
        rel, uid = series_lookup(rows, patient, "pre", "DP")
    except RecurError:
        return None
    return series_date(cohort_dir / rel, uid or None)


def _convert_staged(
    stack: contextlib.ExitStack,
    reader: SeriesReader,
    table: SeriesRows,
    cohort_dir: Path,
    patient: str,
    timepoint: str,
    outdir: Path,
    compression_level: int,
    phases: Sequence[str],
    reference: Callable[[str, dict[str, ConvertedSeries]], datetime.date | None],
) -> dict[str, ConvertedSeries]:
    """Convert the phases of one time point into temporary files registered on ``stack``
    (renamed into ``outdir`` when the stack closes without an error, removed otherwise).

    ``reference(timepoint, results)`` gives the pre DP examination day once the phases are
    converted. The time point's consistency checks (:func:`recur.cohort.series_checks.
    check_timepoint`) run before ``acquisition.json`` is written; what they could not check
    goes into its phases' ``review`` lists (and the log).
    """
    results: dict[str, ConvertedSeries] = {}
    folders: dict[str, str] = {}
    for phase in phases:
        rel, uid = series_lookup(table, patient, timepoint, phase)
        folders[phase] = rel
        context = f"patient {patient}, {timepoint}/{phase}, folder '{rel}'"
        res = reader(cohort_dir / rel, series_uid=uid or None, context=context)
        tmp = stack.enter_context(atomic_path(outdir / f"{phase}.nii.gz"))
        write_nifti_to(strip_metadata(res.image), tmp, compression_level)
        res.image = sitk.Image()  # free the voxels; the file holds them now
        results[phase] = res
        size = "x".join(str(v) for v in (res.acquisition["columns"], res.acquisition["rows"]))
        log.info(
            "patient %s %s/%s: %d slices of %s, slice step %.3f mm%s",
            patient,
            timepoint,
            phase,
            res.n_slices,
            size,
            res.acquisition["slice_spacing_mm"],
            ("; " + "; ".join(res.notes)) if res.notes else "",
        )
    day0 = reference(timepoint, results)
    acq = {}
    for phase in phases:
        acq[phase] = dict(results[phase].acquisition)
        acq[phase]["days_from_pre"] = day_offset(results[phase].study_date, day0)
    if day0 is None:
        log.warning(
            "patient %s %s: no pre DP examination date: days_from_pre is null", patient, timepoint
        )
    for phase in phases:
        res = results[phase]
        days = acq[phase]["days_from_pre"]
        res.checked = series_checks.Series(timepoint, phase, folders[phase], res.header, days)
    checked = [r.checked for r in results.values() if r.checked]
    for review in series_checks.check_timepoint(checked, patient):
        acq[review.phase].setdefault("review", []).append(review.note)
        log.warning("patient %s %s: to review: %s", patient, timepoint, review)
    tmp = stack.enter_context(atomic_path(outdir / "acquisition.json"))
    tmp.write_text(json.dumps(acq, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return results


def convert_timepoint(
    cohort_dir: str | Path,
    series_table: str | Path,
    patient: str,
    timepoint: str,
    outdir: str | Path,
    *,
    settings: ConvertSettings,
    phases: Sequence[str] = PHASES,
) -> dict[str, ConvertedSeries]:
    """Convert the phases of one patient and time point; write all files or none.

    Reads the rows of ``series_table`` (relative to ``cohort_dir`` unless absolute) with
    :mod:`recur.cohort.contract`, converts each phase, and writes ``{phase}.nii.gz`` plus
    ``acquisition.json`` into ``outdir``. Files are first written to temporary names and
    renamed only once every phase converted, so a refusal leaves no output behind.

    Each phase of ``acquisition.json`` also gets ``days_from_pre``: whole days from the
    pre-ablation DP series' examination day to this series' (0 on the pre time point; on the
    post time point the pre DP folder's headers are read for it; null when a date is missing).
    The dates themselves are never written. :func:`convert_patient` converts both time points
    in one go (the workflow's job).
    """
    return convert_patient(
        cohort_dir,
        series_table,
        patient,
        outdir,
        settings=settings,
        timepoints=(timepoint,),
        phases=phases,
        flat=True,
    )[timepoint]


def convert_patient(
    cohort_dir: str | Path,
    series_table: str | Path,
    patient: str,
    outdir: str | Path,
    *,
    settings: ConvertSettings,
    timepoints: Sequence[str] = TIMEPOINTS,
    phases: Sequence[str] = PHASES,
    guard: Guard | None = None,
    flat: bool = False,
) -> dict[str, dict[str, ConvertedSeries]]:
    """Convert every time point of one patient (one workflow job): ``outdir/{tp}/{phase}.nii.gz``
    and ``outdir/{tp}/acquisition.json``; returns ``{tp: {phase: ConvertedSeries}}``.

    The series table is read once, and the post time point's ``days_from_pre`` takes the pre
    DP examination day from this run's pre conversion (the pre DP folder is not read again).

    **All or nothing**: every file goes to a temporary name first, and all of them are renamed
    only after every time point converted; a refusal (:class:`RecurError` naming patient,
    time point, phase and the folder relative to ``cohort_dir``) leaves no file of either time
    point behind. ``guard`` (see :data:`Guard`) runs each time point's conversion; a guard that
    handles a refusal itself (writing placeholders, as ``--on-failure exclude`` does) lets the
    other time point go on, and the refused time point has no entry in the result.

    **Consistency** (:mod:`recur.cohort.series_checks`): each time point's step also checks its 4
    series against each other (one patient, no series twice, one study, phase order). Once
    every time point converted, and before anything is renamed into place, the checks across
    time points (one patient over all series, no series twice, post acquired at least
    ``settings.min_interval_days`` after pre) run as one more guarded step over the outputs of
    *both* time points (time point ``pre+post``): a refusal there leaves no converted file of
    either, and a guard that excludes writes placeholders for both (empty result).

    ``flat=True`` writes the files of a single time point straight into ``outdir``
    (:func:`convert_timepoint`).
    """
    if flat and len(timepoints) != 1:
        raise ValueError("flat=True converts exactly one time point")
    cohort_dir = Path(cohort_dir)
    table = read_series_table(cohort_dir, series_table)
    reader = SeriesReader(settings)
    guard = guard or run_step
    results: dict[str, dict[str, ConvertedSeries]] = {}

    def reference(timepoint: str, current: dict[str, ConvertedSeries]) -> datetime.date | None:
        pre = current if timepoint == "pre" else results.get("pre", {})
        if "DP" in pre:
            return pre["DP"].study_date
        return _pre_dp_date(table, cohort_dir, patient)

    folders = {tp: Path(outdir) if flat else Path(outdir) / tp for tp in timepoints}
    try:
        with contextlib.ExitStack() as stack:
            for tp in timepoints:
                folder = folders[tp]
                try:
                    with contextlib.ExitStack() as tp_stack:

                        def step(tp: str = tp, folder: Path = folder, staged=tp_stack) -> None:
                            results[tp] = _convert_staged(
                                staged,
                                reader,
                                table,
                                cohort_dir,
                                patient,
                                tp,
                                folder,
                                settings.compression_level,
                                phases,
                                reference,
                            )

                        if not guard("convert", tp, step, [], timepoint_outputs(folder, phases)):
                            raise Abandon
                        stack.enter_context(tp_stack.pop_all())
                except Abandon:
                    results.pop(tp, None)
            if len(results) == len(timepoints):  # (else the patient is excluded already)
                checked = [
                    r.checked for tp in timepoints for r in results[tp].values() if r.checked
                ]
                outputs = [p for tp in timepoints for p in timepoint_outputs(folders[tp], phases)]

                def across() -> None:
                    series_checks.check_patient(checked, patient, settings.min_interval_days)

                if not guard("convert", "+".join(timepoints), across, [], outputs):
                    raise Abandon  # placeholders at every output: drop all staged files
    except Abandon:
        return {}
    return results
