"""Values read from single DICOM files (pydicom data sets), before any stacking.

Header values as plain JSON-able Python (:func:`_number`), the non-identifying acquisition
parameters copied into ``acquisition.json`` (:data:`ACQUISITION_FIELDS`, an allow-list), the
examination day (:func:`dicom_date`, :func:`series_date`), of which only whole-day offsets
between time points are ever written (:func:`day_offset`), and the pixels of an uncompressed
slice read straight from its bytes (:func:`native_pixels`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

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
