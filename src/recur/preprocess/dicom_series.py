"""DICOM series folder -> checked SimpleITK image, with the geometry checked rather than trusted.

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
metadata at all, so the NIfTI written from it (:mod:`recur.preprocess.convert`) holds geometry
and voxels only.

The geometry logic lives in pure functions over numpy arrays of positions and orientations
(:mod:`recur.preprocess.dicom_geometry`) and the per-file values in
:mod:`recur.preprocess.dicom_slice`, so they can be tested by hand; :class:`SeriesReader` is the
file edge. :class:`ConvertSettings` holds the tolerances, :class:`ConvertedSeries` the result.
"""

from __future__ import annotations

import datetime
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from recur.cohort import series_checks
from recur.cohort.series_checks import SeriesHeader
from recur.errors import RecurError
from recur.preprocess.dicom_geometry import (
    GeometryError,
    check_slice_spacing,
    check_stacking,
    direction_matrix,
    orientation_groups,
    output_dtype,
    position_groups,
)
from recur.preprocess.dicom_slice import (
    _number,
    acquisition_parameters,
    dicom_date,
    native_pixels,
)
from recur.settings import SectionSettings

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
#: Element values larger than this are read from the file only when accessed.
DEFER_BYTES = 16384


# --------------------------------------------------------------------------- settings/results
@dataclass(frozen=True)
class ConvertSettings(SectionSettings):
    """Tolerances and options of the conversion: config section ``convert`` (meanings and
    defaults in ``schemas/config.schema.yaml``)."""

    SECTION = "convert"

    spacing_tolerance: float
    orientation_tolerance: float
    stack_tolerance_mm: float
    min_slices: int
    compression_level: int
    #: fewest days from the pre DP to a post series (recur.cohort.series_checks.check_interval)
    min_interval_days: int

    def __post_init__(self) -> None:
        if self.min_interval_days < 0 or self.min_slices < 2:
            raise RecurError(
                f"convert: min_interval_days {self.min_interval_days} (>= 0), "
                f"min_slices {self.min_slices} (>= 2)"
            )
        if not 1 <= self.compression_level <= 9:
            raise RecurError(f"convert: compression_level {self.compression_level} (1..9)")


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

    def __init__(self, settings: ConvertSettings, *, allow_single_slice: bool = False) -> None:
        self.settings = settings
        #: accept a series of exactly one slice (``recur convert --allow-single-slice``)
        self.allow_single_slice = allow_single_slice
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
            if not self.allow_single_slice:
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
