"""DICOM series -> de-identified NIfTI, with the geometry checked rather than trusted.

A folder of single-frame DICOM files is read with pydicom (its pixel-data plugins decode RLE
and, through pylibjpeg, JPEG / JPEG-LS / JPEG 2000 transfer syntaxes). The slices are sorted by
their position along the slice normal (the cross product of the ImageOrientationPatient row
and column cosines, dotted with ImagePositionPatient), never by file name or InstanceNumber,
and the stack is refused with a clear :class:`recur.errors.RecurError` when it is not one
regular volume: missing or duplicated slices, non-uniform spacing, mixed orientations, several
series, echoes or time points in one folder, gantry tilt, too few slices, truncated files or
missing geometry tags.

The result is a SimpleITK image in ITK's LPS world convention (origin = position of the first
slice along the normal, spacing = (column spacing, row spacing, slice step computed from the
positions), direction columns = row cosine, column cosine, slice normal) that carries no
metadata at all, so the NIfTI written from it holds geometry and voxels only.

The geometry logic lives in pure functions over numpy arrays of positions and orientations
(:func:`slice_normal`, :func:`orientation_groups`, :func:`position_groups`,
:func:`check_stacking`, :func:`check_slice_spacing`, :func:`direction_matrix`) so it can be
tested by hand; :class:`SeriesReader` is the file edge.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from recur.cohort import series_checks
from recur.cohort.series_checks import SeriesHeader
from recur.errors import RecurError
from recur.io import atomic_path, write_nifti_to
from recur.preprocess.steps import TIMEPOINTS, Abandon, Guard, run_step

log = logging.getLogger(__name__)

PHASES: tuple[str, ...] = ("PS", "AP", "PVP", "DP")

#: The only DICOM attributes copied into ``acquisition.json`` (output key -> DICOM keyword).
#: None of them identifies a patient, a site's staff, a device serial or a date.
ACQUISITION_FIELDS: dict[str, str] = {
    "manufacturer": "Manufacturer",
    "model": "ManufacturerModelName",
    "field_strength_t": "MagneticFieldStrength",
    "repetition_time_ms": "RepetitionTime",
    "echo_time_ms": "EchoTime",
    "flip_angle_deg": "FlipAngle",
    "slice_thickness_mm": "SliceThickness",
    "rows": "Rows",
    "columns": "Columns",
    "pixel_spacing_mm": "PixelSpacing",
}

#: Dates tried, in order, for a series' examination day. Only the day *offset* between the
#: time points is kept (``days_from_pre`` in acquisition.json); a date is never written.
DATE_KEYWORDS: tuple[str, ...] = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")

#: Attributes that tell volumes apart when several slices share one position.
VOLUME_KEYS: tuple[str, ...] = (
    "EchoNumbers",
    "TemporalPositionIdentifier",
    "TriggerTime",
    "DiffusionBValue",
    "AcquisitionNumber",
)

#: File names that are never DICOM slices (checked case-insensitively).
_NOT_DICOM_SUFFIXES = (".txt", ".md", ".json", ".xml", ".csv", ".nii", ".gz", ".zip", ".pdf")
#: Files with these suffixes must be DICOM: if unreadable they are refused, not skipped.
_DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
#: Slices closer than this along the normal (mm) are at the same position.
SAME_POSITION_MM = 0.01
#: Element values larger than this are read from the file only when accessed.
DEFER_BYTES = 16384


class GeometryError(RecurError):
    """A stack of slices is not one regular volume (message: the problem only)."""


# --------------------------------------------------------------------------- pure geometry
def slice_normal(orientation: Sequence[float] | np.ndarray) -> np.ndarray:
    """Unit slice normal of an ImageOrientationPatient ``[rx, ry, rz, cx, cy, cz]``.

    The normal is ``row x col``, so ``(row, col, normal)`` is right-handed.
    """
    o = np.asarray(orientation, dtype=float)
    if o.shape != (6,) or not np.all(np.isfinite(o)):
        raise GeometryError(f"ImageOrientationPatient must hold 6 numbers, got {o.size}")
    row, col = o[:3], o[3:]
    n = np.cross(row, col)
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        raise GeometryError("ImageOrientationPatient row and column cosines are parallel")
    return n / norm


def direction_matrix(orientation: Sequence[float] | np.ndarray) -> np.ndarray:
    """3x3 direction matrix (columns: row cosine, column cosine, normal), orthonormalised.

    DICOM stores the cosines as decimal strings; they are normalised and the column cosine is
    made exactly orthogonal to the row cosine (Gram-Schmidt) so ITK accepts the matrix.
    Refuses cosines that are far from unit length or from orthogonal (corrupt header).
    """
    o = np.asarray(orientation, dtype=float)
    row, col = o[:3], o[3:]
    nr, nc = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if abs(nr - 1) > 0.01 or abs(nc - 1) > 0.01:
        raise GeometryError(
            f"ImageOrientationPatient cosines are not unit vectors (lengths {nr:.3f}, {nc:.3f})"
        )
    row = row / nr
    if abs(float(row @ col)) / nc > 0.01:
        raise GeometryError("ImageOrientationPatient row and column cosines are not orthogonal")
    col = col - (row @ col) * row
    col = col / np.linalg.norm(col)
    return np.column_stack([row, col, np.cross(row, col)])


def orientation_groups(orientations: np.ndarray, tolerance: float) -> np.ndarray:
    """Label each slice's orientation; slices within ``tolerance`` (max abs cosine
    difference) of a group's first member share its label. Returns int labels ``(n,)``."""
    o = np.asarray(orientations, dtype=float).reshape(-1, 6)
    labels = np.full(len(o), -1, dtype=int)
    reps: list[np.ndarray] = []
    for i, v in enumerate(o):
        for k, r in enumerate(reps):
            if np.max(np.abs(v - r)) <= tolerance:
                labels[i] = k
                break
        else:
            reps.append(v)
            labels[i] = len(reps) - 1
    return labels


def position_groups(distances: np.ndarray, tolerance: float = SAME_POSITION_MM) -> list[np.ndarray]:
    """Group slice indices by position along the normal, in ascending order.

    ``distances`` are the positions projected on the normal (mm). Each group holds the indices
    of the slices within ``tolerance`` of the previous one in sorted order (one group per
    distinct position); the indices inside a group keep their input order.
    """
    d = np.asarray(distances, dtype=float)
    if d.size == 0:
        return []
    order = np.argsort(d, kind="stable")
    breaks = np.flatnonzero(np.diff(d[order]) > tolerance) + 1
    return [np.sort(g) for g in np.split(order, breaks)]


def check_stacking(positions: np.ndarray, normal: np.ndarray, tolerance_mm: float) -> float:
    """Check that the slices step along the slice normal; return the largest in-plane offset.

    ``positions`` (n, 3) are ImagePositionPatient of the slices (any order). Each position's
    offset from the first, minus its component along the normal, is the in-plane shift; when
    the largest exceeds ``tolerance_mm`` the stack is sheared (gantry tilt or a non-orthogonal
    acquisition) and is refused, with the angle between the stepping and the normal.
    """
    p = np.asarray(positions, dtype=float).reshape(-1, 3)
    n = np.asarray(normal, dtype=float)
    rel = p - p[0]
    along = rel @ n
    inplane = rel - np.outer(along, n)
    shift = np.linalg.norm(inplane, axis=1)
    worst = float(shift.max()) if len(shift) else 0.0
    if worst > tolerance_mm:
        i = int(np.argmax(shift))
        angle = math.degrees(math.atan2(shift[i], abs(along[i])))
        raise GeometryError(
            f"the slices do not step along the slice normal: slice positions are sheared by "
            f"{angle:.1f} degrees (in-plane offset {worst:.2f} mm > {tolerance_mm:g} mm); gantry "
            "tilt or a non-orthogonal stack is not supported (reconstruct without tilt)"
        )
    return worst


def check_slice_spacing(distances: np.ndarray, tolerance: float) -> float:
    """Check that sorted distinct slice positions form a regular grid; return the step (mm).

    ``distances`` are ascending positions along the normal, one per slice (>= 2). The step is
    ``(last - first) / (n - 1)``. Refuses missing slices (every gap is, within ``tolerance``, a
    whole multiple of the smallest gap and some are >= 2 of it: says how many and where) and
    any slice further than ``tolerance * step`` from the regular grid (non-uniform spacing).
    """
    d = np.asarray(distances, dtype=float)
    if d.size < 2:
        raise GeometryError("a slice spacing needs at least two slices")
    gaps = np.diff(d)
    if np.any(gaps <= 0):
        raise GeometryError("slice positions are not distinct")
    # missing slices: every gap a whole multiple of the smallest one, some of them >= 2
    typical = float(gaps.min())
    multiples = np.round(gaps / typical)
    regular = bool(np.all(np.abs(gaps - multiples * typical) <= tolerance * typical))
    missing = np.flatnonzero(multiples >= 2)
    if regular and missing.size:
        total = int(np.sum(multiples[missing] - 1))
        where = ", ".join(
            f"after slice {i + 1} of {d.size} (gap {gaps[i]:.3f} mm)" for i in missing[:3]
        )
        raise GeometryError(
            f"{total} missing slice(s): the slice step is {typical:.3f} mm but there is a "
            f"larger gap {where}"
        )
    step = float((d[-1] - d[0]) / (d.size - 1))
    deviation = np.abs(d - (d[0] + step * np.arange(d.size)))
    if float(deviation.max()) > tolerance * step:
        raise GeometryError(
            f"non-uniform slice spacing: gaps range from {gaps.min():.3f} to {gaps.max():.3f} mm "
            f"(a slice lies {deviation.max():.3f} mm off the regular {step:.3f} mm grid; "
            f"tolerance {tolerance:g} of a step)"
        )
    return step


def output_dtype(slopes: np.ndarray, intercepts: np.ndarray, lo: float, hi: float) -> type:
    """``np.int16`` when rescaling is exact in int16 (slope 1, whole intercepts, range fits),
    else ``np.float32``. ``lo``/``hi`` are the raw stored-value extremes."""
    s = np.asarray(slopes, dtype=float)
    b = np.asarray(intercepts, dtype=float)
    if np.all(s == 1.0) and np.all(b == np.round(b)):
        vmin, vmax = lo + float(b.min()), hi + float(b.max())
        if np.iinfo(np.int16).min <= vmin and vmax <= np.iinfo(np.int16).max:
            return np.int16
    return np.float32


# --------------------------------------------------------------------------- settings/results
@dataclass(frozen=True)
class ConvertSettings:
    """Tolerances and options of the conversion (the ``convert:`` config section)."""

    spacing_tolerance: float = 0.05
    orientation_tolerance: float = 1e-3
    stack_tolerance_mm: float = 0.1
    min_slices: int = 3
    allow_single_slice: bool = False
    compression_level: int = 1
    #: fewest days from the pre DP to a post series (recur.cohort.series_checks.check_interval)
    min_interval_days: int = 1


@dataclass
class ConvertedSeries:
    """One converted series: the image (no metadata) and what was done to get it."""

    image: sitk.Image
    acquisition: dict[str, Any]
    n_slices: int
    n_duplicates_dropped: int = 0
    n_files_skipped: int = 0
    notes: list[str] = field(default_factory=list)
    #: examination day (for day offsets only; never written)
    study_date: datetime.date | None = field(default=None, repr=False)
    #: header values of the consistency checks (recur.cohort.series_checks; never written)
    header: SeriesHeader = field(default_factory=SeriesHeader, repr=False)
    #: this series as the checks see it (set by the per-patient conversion)
    checked: series_checks.Series | None = field(default=None, repr=False)


@dataclass
class _Slice:
    name: str
    ds: pydicom.Dataset


def _describe(context: str | None, problem: str) -> str:
    return f"{context}: {problem}" if context else problem


def _number(ds: pydicom.Dataset, keyword: str) -> Any:
    """A header value as plain JSON-able Python (float/int/str/list), or None when absent."""
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    if isinstance(v, pydicom.multival.MultiValue | list | tuple):
        return [_plain(x) for x in v]
    return _plain(v)


def _plain(v: Any) -> Any:
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, float | np.floating | pydicom.valuerep.DSfloat | pydicom.valuerep.DSdecimal):
        return float(v)
    if isinstance(v, pydicom.valuerep.IS):
        return int(v)
    return str(v).strip()


def acquisition_parameters(ds: pydicom.Dataset) -> dict[str, Any]:
    """The non-identifying acquisition parameters of a slice (see :data:`ACQUISITION_FIELDS`)."""
    return {key: _number(ds, kw) for key, kw in ACQUISITION_FIELDS.items()}


def dicom_date(ds: pydicom.Dataset) -> datetime.date | None:
    """The examination day of a slice: the first valid DA of :data:`DATE_KEYWORDS`, else None."""
    for kw in DATE_KEYWORDS:
        v = str(ds.get(kw) or "").strip()
        if len(v) == 8 and v.isdigit():
            with contextlib.suppress(ValueError):
                return datetime.date(int(v[:4]), int(v[4:6]), int(v[6:]))
    return None


def day_offset(day: datetime.date | None, reference: datetime.date | None) -> int | None:
    """Whole days from ``reference`` to ``day`` (positive: later); None when either is unknown.

    >>> day_offset(datetime.date(2017, 4, 12), datetime.date(2017, 3, 13))
    30
    """
    if day is None or reference is None:
        return None
    return (day - reference).days


def series_date(folder: str | Path, series_uid: str | None = None) -> datetime.date | None:
    """The examination day of a DICOM series folder, read from file headers only.

    The first file (by name) that is DICOM, belongs to ``series_uid`` when one is given, and
    holds a date decides; None when no file does (the caller keeps no offset then).
    """
    tags = [*DATE_KEYWORDS, "SeriesInstanceUID"]
    try:
        entries = [e for e in os.scandir(folder) if e.is_file() and e.name[:1] != "."]
    except OSError:
        return None
    for e in sorted(entries, key=lambda e: e.name):
        try:
            ds = pydicom.dcmread(e.path, stop_before_pixels=True, specific_tags=tags)
        except Exception:
            continue
        if series_uid and str(ds.get("SeriesInstanceUID", "")) != series_uid:
            continue
        day = dicom_date(ds)
        if day is not None:
            return day
    return None


# --------------------------------------------------------------------------- reading
def _read_without_preamble(path: str) -> pydicom.Dataset | None:
    """A DICOM data set stored without the 128-byte preamble (old exports), else None."""
    try:
        ds = pydicom.dcmread(path, force=True)
        if "ImagePositionPatient" in ds and "PixelData" in ds and "Rows" in ds:
            return ds
    except Exception:
        pass
    return None


#: Uncompressed little-endian transfer syntaxes (Implicit / Explicit VR Little Endian).
NATIVE_LITTLE_ENDIAN: frozenset[str] = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def native_pixels(ds: pydicom.Dataset) -> np.ndarray | None:
    """The frame of a single-frame, grey-scale, uncompressed little-endian slice read straight
    from its bytes (``np.frombuffer``; read-only), else None (then ``ds.pixel_array`` decodes).

    Same values and dtype as pydicom's ``pixel_array`` for these slices (unused high bits
    cleared, or sign-extended for signed data, as pydicom does), without its per-call
    option handling, which costs more than the copy for a 512x512 slice.
    """
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None or str(ts) not in NATIVE_LITTLE_ENDIAN:
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        signed = int(ds.PixelRepresentation)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 0)
        photometric = str(ds.get("PhotometricInterpretation") or "").strip()
    except (AttributeError, TypeError, ValueError):
        return None
    if (
        allocated not in (8, 16)
        or not 1 <= stored <= allocated
        or signed not in (0, 1)
        or frames != 1
        or samples != 1
        or photometric not in ("MONOCHROME1", "MONOCHROME2")
        or rows < 1
        or cols < 1
    ):
        return None
    data = ds.get("PixelData")
    if not isinstance(data, bytes | bytearray) or len(data) != rows * cols * allocated // 8:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    arr = np.frombuffer(data, dtype=dtype).reshape(rows, cols)
    if stored < allocated:  # as pydicom: clear (or sign-extend from) the unused bits
        shift = allocated - stored
        arr = arr.copy()
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr


def _stat_key(entry: os.DirEntry) -> tuple[int, int]:
    st = entry.stat()
    return st.st_size, st.st_mtime_ns


class SeriesReader:
    """Read one DICOM series folder into a checked SimpleITK image.

    Settings go to ``__init__``; ``reader(folder, ...)`` converts. Every refusal raises
    :class:`RecurError` whose message starts with ``context`` (e.g. "patient P0001, pre/AP,
    folder 'dicom/P0001/pre/AP'") and names the problem; no DICOM identifying value (names,
    IDs, dates, UIDs, institution) ever appears in a message or log line.

    A reader keeps the parsed headers of the last folder it read (pixel data is read when
    used): reading another series (``series_uid``) or echo of the same, unchanged folder
    parses no file again. Use one reader per job; a changed file listing (names, sizes,
    modification times) is read afresh.
    """

    def __init__(self, settings: ConvertSettings | None = None) -> None:
        self.settings = settings or ConvertSettings()
        # the parsed files of the last folder read, keyed by its listing (names, sizes,
        # mtimes): a second series or echo of the same folder is not parsed again
        self._last: tuple[tuple, list[_Slice], int] | None = None

    def __call__(
        self,
        folder: str | Path,
        *,
        series_uid: str | None = None,
        echo: int | None = None,
        context: str | None = None,
    ) -> ConvertedSeries:
        folder = Path(folder)
        if context is None:
            context = f"folder '{folder}'"
        try:
            return self._read(folder, series_uid or None, echo)
        except RecurError as exc:
            raise RecurError(_describe(context, str(exc))) from None

    # -- files -------------------------------------------------------------------------
    def _load_files(self, folder: Path) -> tuple[list[_Slice], int]:
        if not folder.is_dir():
            raise RecurError("the DICOM folder does not exist")
        entries = sorted(
            (e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name
        )
        files = [e for e in entries if e.is_file()]
        key = (str(folder), tuple((e.name, *_stat_key(e)) for e in files))
        if self._last is not None and self._last[0] == key:
            return list(self._last[1]), self._last[2]
        self._last = None  # one folder's files at most stay in memory
        slices: list[_Slice] = []
        skipped = 0
        for e in files:
            name = e.name
            lower = name.lower()
            if lower.endswith(_NOT_DICOM_SUFFIXES) or lower in ("license", "readme", "dicomdir"):
                skipped += 1
                continue
            try:
                # large values (pixel data, vendor blobs) are read only when used
                ds = pydicom.dcmread(e.path, defer_size=DEFER_BYTES)
            except InvalidDicomError:
                ds = _read_without_preamble(e.path)
                if ds is None:
                    if lower.endswith(_DICOM_SUFFIXES):
                        raise RecurError(f"file '{name}' is not a readable DICOM file") from None
                    skipped += 1  # a stray non-DICOM file
                    continue
            except Exception as exc:
                raise RecurError(
                    f"file '{name}' is truncated or unreadable ({type(exc).__name__})"
                ) from None
            if "PixelData" not in ds:
                sop = ds.get("SOPClassUID") or getattr(
                    getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None
                )
                if sop is not None and "Image Storage" in getattr(sop, "name", ""):
                    raise RecurError(
                        f"file '{name}' is an image without pixel data (truncated file?)"
                    )
                skipped += 1  # DICOMDIR, structured report, presentation state, ...
                continue
            slices.append(_Slice(name, ds))
        if not slices:
            subdirs = [e.name for e in entries if e.is_dir()]
            hint = (
                " (it holds sub-folders: point dicom_dir at the series folder)" if subdirs else ""
            )
            raise RecurError(f"no DICOM image files in the folder{hint}")
        self._last = (key, slices, skipped)
        return list(slices), skipped

    @staticmethod
    def _select_series(slices: list[_Slice], series_uid: str | None) -> list[_Slice]:
        by_uid: dict[str, list[_Slice]] = {}
        for s in slices:
            by_uid.setdefault(str(s.ds.get("SeriesInstanceUID", "")).strip(), []).append(s)
        if series_uid is not None:
            if series_uid not in by_uid:
                raise RecurError(
                    f"the series_uid given matches none of the {len(by_uid)} series in the "
                    "folder (run `recur scan` to list them)"
                )
            return by_uid[series_uid]
        if len(by_uid) > 1:
            parts = [  # series numbers and file counts only: no UID, no free text
                f"series number {group[0].ds.get('SeriesNumber', '?')} ({len(group)} files)"
                for group in by_uid.values()
            ]
            raise RecurError(
                f"the folder holds {len(by_uid)} series ({'; '.join(parts)}): give series_uid "
                "in series.csv (`recur scan` lists the UIDs in a local draft)"
            )
        return slices

    @staticmethod
    def _select_echo(slices: list[_Slice], echo: int | None) -> list[_Slice]:
        if echo is None:
            return slices
        echoes = Counter(_number(s.ds, "EchoNumbers") for s in slices)
        keep = [s for s in slices if _number(s.ds, "EchoNumbers") == echo]
        if not keep:
            present = sorted(str(e) for e in echoes)
            raise RecurError(f"no slice has EchoNumbers = {echo} (present: {', '.join(present)})")
        return keep

    @staticmethod
    def _check_single_volume(slices: list[_Slice]) -> None:
        """Several echoes, time points or b-values are several volumes, even when their
        slices do not share positions (an interleaved stack would pass the spacing check)."""
        for kw in ("EchoNumbers", "TemporalPositionIdentifier", "DiffusionBValue"):
            values = {_number(s.ds, kw) for s in slices} - {None}
            if len(values) > 1:
                shown = ", ".join(sorted(str(v) for v in values)[:6])
                if kw == "EchoNumbers":
                    raise RecurError(
                        f"the series holds several echoes (EchoNumbers {shown}): select one "
                        "with the echo option"
                    )
                raise RecurError(
                    f"the series holds several volumes ({kw} {shown}): export one volume per "
                    "series (or give series_uid)"
                )

    # -- geometry ------------------------------------------------------------------------
    def _header_arrays(self, slices: list[_Slice]) -> tuple[np.ndarray, np.ndarray]:
        positions = np.empty((len(slices), 3))
        orientations = np.empty((len(slices), 6))
        for i, s in enumerate(slices):
            ds = s.ds
            frames = _number(ds, "NumberOfFrames")
            if frames is not None and int(frames) > 1:
                raise RecurError(
                    f"file '{s.name}' is a multi-frame (enhanced) image with {frames} frames; "
                    "export the series as single-frame (classic) DICOM"
                )
            for kw in (
                "ImagePositionPatient",
                "ImageOrientationPatient",
                "PixelSpacing",
                "Rows",
                "Columns",
            ):
                if ds.get(kw) in (None, ""):
                    raise RecurError(f"file '{s.name}' lacks the geometry tag {kw}")
            try:
                positions[i] = [float(x) for x in ds.ImagePositionPatient]
                orientations[i] = [float(x) for x in ds.ImageOrientationPatient]
            except (ValueError, TypeError):
                raise RecurError(
                    f"file '{s.name}' has a malformed ImagePositionPatient or "
                    "ImageOrientationPatient"
                ) from None
            if int(ds.get("SamplesPerPixel", 1)) != 1:
                raise RecurError(
                    f"file '{s.name}' is a colour image; a grey-scale series is needed"
                )
        return positions, orientations

    def _check_uniform(self, slices: list[_Slice]) -> tuple[int, int, tuple[float, float]]:
        shapes = Counter((int(s.ds.Rows), int(s.ds.Columns)) for s in slices)
        if len(shapes) > 1:
            desc = ", ".join(f"{r}x{c} ({k} slices)" for (r, c), k in shapes.items())
            raise RecurError(f"slices differ in matrix size: {desc}")
        spacings = Counter(tuple(round(float(x), 4) for x in s.ds.PixelSpacing) for s in slices)
        if len(spacings) > 1:
            desc = ", ".join(f"{a:g}x{b:g} mm ({k} slices)" for (a, b), k in spacings.items())
            raise RecurError(f"slices differ in pixel spacing: {desc}")
        ((rows, cols),) = shapes
        ps = [float(x) for x in slices[0].ds.PixelSpacing]
        if len(ps) != 2 or min(ps) <= 0:
            raise RecurError(f"file '{slices[0].name}' has an invalid PixelSpacing")
        return rows, cols, (ps[0], ps[1])

    def _pixels(self, s: _Slice) -> np.ndarray:
        arr = native_pixels(s.ds)
        if arr is not None:
            return arr
        try:
            arr = s.ds.pixel_array
        except Exception as exc:
            ts = getattr(s.ds.file_meta, "TransferSyntaxUID", None)
            tsname = getattr(ts, "name", str(ts))
            raise RecurError(
                f"cannot decode the pixel data of file '{s.name}' (transfer syntax {tsname}; "
                f"truncated file or missing decoder): {type(exc).__name__}"
            ) from None
        if arr.ndim != 2:
            raise RecurError(f"file '{s.name}' does not hold one 2-D grey-scale frame")
        return arr

    @staticmethod
    def _rescale(s: _Slice) -> tuple[float, float]:
        slope = _number(s.ds, "RescaleSlope")
        inter = _number(s.ds, "RescaleIntercept")
        slope = 1.0 if slope is None else float(slope)
        inter = 0.0 if inter is None else float(inter)
        if slope == 0 or not math.isfinite(slope) or not math.isfinite(inter):
            raise RecurError(f"file '{s.name}' has an invalid RescaleSlope/RescaleIntercept")
        return slope, inter

    def _dedupe(
        self, slices: list[_Slice], groups: list[np.ndarray], distances: np.ndarray
    ) -> tuple[list[int], int]:
        """One slice index per position; identical duplicates dropped, others refused."""
        keep: list[int] = []
        dropped = 0
        multi = [g for g in groups if len(g) > 1]
        if multi:
            # several volumes at the same positions?  Look at what tells them apart.
            for kw in VOLUME_KEYS:
                vals = {_number(slices[i].ds, kw) for g in multi for i in g}
                vals.discard(None)
                per_group = all(
                    len({_number(slices[i].ds, kw) for i in g}) == len(g) for g in multi
                )
                if len(vals) > 1 and per_group:
                    shown = ", ".join(sorted(str(v) for v in vals)[:6])
                    if kw == "EchoNumbers":
                        raise RecurError(
                            f"the series holds several echoes at the same slice positions "
                            f"(EchoNumbers {shown}): select one with the echo option"
                        )
                    raise RecurError(
                        f"the series holds several volumes at the same slice positions "
                        f"({kw} {shown}): export one volume per series (or give series_uid)"
                    )
        for g in groups:
            first = int(g[0])
            if len(g) > 1:
                ref = self._pixels(slices[first])
                ref_scale = self._rescale(slices[first])
                for j in g[1:]:
                    other = slices[int(j)]
                    if self._rescale(other) != ref_scale or not np.array_equal(
                        self._pixels(other), ref
                    ):
                        raise RecurError(
                            f"duplicated slice position {distances[first]:.3f} mm along the "
                            f"normal with different pixel data (files '{slices[first].name}' "
                            f"and '{other.name}')"
                        )
                    dropped += 1
            keep.append(first)
        return keep, dropped

    def _read(self, folder: Path, series_uid: str | None, echo: int | None) -> ConvertedSeries:
        cfg = self.settings
        slices, skipped = self._load_files(folder)
        slices = self._select_series(slices, series_uid)
        slices = self._select_echo(slices, echo)
        self._check_single_volume(slices)
        positions, orientations = self._header_arrays(slices)

        labels = orientation_groups(orientations, cfg.orientation_tolerance)
        if labels.max() > 0:
            counts = Counter(labels.tolist())
            raise GeometryError(
                f"mixed slice orientations: {len(counts)} different ImageOrientationPatient "
                f"values ({', '.join(str(k) for k in sorted(counts.values(), reverse=True))} "
                "slices); one series must be one stack"
            )
        rows, cols, (row_sp, col_sp) = self._check_uniform(slices)
        direction = direction_matrix(orientations[0])
        normal = direction[:, 2]
        distances = positions @ normal
        groups = position_groups(distances)
        keep, dropped = self._dedupe(slices, groups, distances)
        pos = positions[keep]
        dist = distances[keep]
        n = len(keep)

        if n == 1:
            if not cfg.allow_single_slice:
                raise GeometryError(
                    "a single slice is not a volume (allow_single_slice is off)"
                    + (f"; {dropped} identical duplicates were dropped" if dropped else "")
                )
            thick = _number(slices[keep[0]].ds, "SpacingBetweenSlices") or _number(
                slices[keep[0]].ds, "SliceThickness"
            )
            step = float(thick) if thick else 1.0
        else:
            if n < cfg.min_slices:
                raise GeometryError(
                    f"only {n} slices: too few for a volume (a localizer or an incomplete "
                    f"series?); at least {cfg.min_slices} are required"
                )
            step = check_slice_spacing(dist, cfg.spacing_tolerance)
            check_stacking(pos, normal, cfg.stack_tolerance_mm)

        # pixels, in slice order, with the modality rescale applied
        raws = []
        scales = np.empty((n, 2))
        for k, i in enumerate(keep):
            raw = self._pixels(slices[i])
            if raw.shape != (rows, cols):
                raise RecurError(
                    f"file '{slices[i].name}' has {raw.shape[0]}x{raw.shape[1]} pixels but its "
                    f"header says {rows}x{cols}"
                )
            raws.append(raw)
            scales[k] = self._rescale(slices[i])
        lo = float(min(r.min() for r in raws))
        hi = float(max(r.max() for r in raws))
        dtype = output_dtype(scales[:, 0], scales[:, 1], lo, hi)
        volume = np.empty((n, rows, cols), dtype=dtype)
        for k, raw in enumerate(raws):
            if dtype is np.int16:  # exact: checked by output_dtype
                np.add(raw, np.int32(scales[k, 1]), out=volume[k], casting="unsafe")
            else:
                volume[k] = raw.astype(np.float64) * scales[k, 0] + scales[k, 1]

        image = sitk.GetImageFromArray(volume, isVector=False)
        image.SetOrigin(tuple(float(x) for x in pos[0]))
        image.SetSpacing((col_sp, row_sp, step))
        image.SetDirection(tuple(float(x) for x in direction.ravel()))

        study_date = dicom_date(slices[keep[0]].ds)
        acq = acquisition_parameters(slices[keep[0]].ds)
        acq["n_slices"] = n
        acq["slice_spacing_mm"] = round(step, 6)
        notes = []
        if dropped:
            notes.append(f"dropped {dropped} duplicate slice(s) with identical pixels")
        if skipped:
            notes.append(f"skipped {skipped} non-image file(s)")
        header = series_checks.header_values(slices[keep[0]].ds)
        return ConvertedSeries(
            image, acq, n, dropped, skipped, notes, study_date=study_date, header=header
        )


# --------------------------------------------------------------------------- writing
def strip_metadata(image: sitk.Image) -> sitk.Image:
    """Remove every metadata entry (a NIfTI written from it carries geometry only)."""
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    return image


def write_nifti(image: sitk.Image, path: str | Path, compression_level: int = 1) -> None:
    """Write ``image`` as NIfTI (``.nii`` or ``.nii.gz``) with no metadata, atomically."""
    with atomic_path(path) as tmp:
        _write_nifti_to(image, tmp, compression_level)


def _write_nifti_to(image: sitk.Image, path: Path, compression_level: int) -> None:
    """Strip the metadata and write (:func:`recur.io.write_nifti_to`: ITK writes the NIfTI, a
    ``.gz`` path is then gzipped at ``compression_level``, by ISA-L when installed)."""
    strip_metadata(image)
    write_nifti_to(image, path, compression_level)


def convert_series(
    folder: str | Path,
    out: str | Path,
    *,
    series_uid: str | None = None,
    echo: int | None = None,
    settings: ConvertSettings | None = None,
    context: str | None = None,
) -> ConvertedSeries:
    """Convert one DICOM folder to a de-identified NIfTI file (``recur convert``)."""
    settings = settings or ConvertSettings()
    result = SeriesReader(settings)(folder, series_uid=series_uid, echo=echo, context=context)
    write_nifti(result.image, out, settings.compression_level)
    return result


def timepoint_outputs(outdir: str | Path, phases: Sequence[str] = PHASES) -> list[Path]:
    """The files one time point's conversion writes into ``outdir``."""
    outdir = Path(outdir)
    return [*(outdir / f"{ph}.nii.gz" for ph in phases), outdir / "acquisition.json"]


#: One series row (patient, time point, phase) -> (dicom_dir, series_uid or '').
SeriesRows = dict[tuple[str, str, str], list[tuple[str, str]]]


def read_series_table(cohort_dir: str | Path, series_table: str | Path) -> SeriesRows:
    """The rows of the series table (relative to ``cohort_dir`` unless absolute), indexed by
    (patient_id, timepoint, phase), values ``(dicom_dir, series_uid or '')``.

    Read with the ``csv`` module as :func:`recur.cohort.contract.read_table` reads it with pandas
    (every cell text, spaces after a comma skipped, header names stripped): a conversion job
    then does not import pandas (~0.15 CPU s of a ~0.8 s job). Raises
    :class:`recur.cohort.contract.ContractError` for a missing file or column.
    """
    import csv

    table_path = Path(series_table)
    if not table_path.is_absolute():
        table_path = Path(cohort_dir) / table_path
    try:
        with open(table_path, newline="", encoding="utf-8-sig") as fh:
            records = list(csv.reader(fh, skipinitialspace=True))
    except FileNotFoundError:
        _contract_error(table_path.name, [f"file not found: {table_path}"])
    except (UnicodeDecodeError, csv.Error) as exc:
        _contract_error(table_path.name, [f"cannot be read as CSV: {exc}"])
    header = [c.strip() for c in records[0]] if records else []
    need = ("patient_id", "timepoint", "phase", "dicom_dir")
    missing = [c for c in need if c not in header]
    if missing:
        _contract_error(table_path.name, [f"missing required column '{c}'" for c in missing])
    col = {c: header.index(c) for c in header}
    uid = col.get("series_uid")
    rows: SeriesRows = {}
    for rec in records[1:]:
        if not any(v.strip() for v in rec):
            continue  # a blank line (pandas skips it too)
        rec = rec + [""] * (len(header) - len(rec))
        key = tuple(rec[col[c]] for c in need[:3])
        value = rec[col["dicom_dir"]], (rec[uid].strip() if uid is not None else "")
        rows.setdefault(key, []).append(value)  # type: ignore[arg-type]
    return rows


def _contract_error(table: str, problems: list[str]) -> NoReturn:
    from recur.cohort.contract import ContractError  # (imports pandas: the error path only)

    raise ContractError(table, problems)


def series_lookup(rows: SeriesRows, patient: str, timepoint: str, phase: str) -> tuple[str, str]:
    """``(dicom_dir, series_uid)`` of one series (as :func:`recur.cohort.contract.series_row`)."""
    found = rows.get((patient, timepoint, phase), [])
    if len(found) != 1:
        _contract_error(
            "series.csv",
            [f"patient {patient}: expected one row for {timepoint}/{phase}, found {len(found)}"],
        )
    return found[0]


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
        _write_nifti_to(res.image, tmp, compression_level)
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
    settings: ConvertSettings | None = None,
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
    settings: ConvertSettings | None = None,
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
    settings = settings or ConvertSettings()
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
