"""ROI masks stored as DICOM SEG or RTSTRUCT, turned into a mask on the DP series' grid.

The mask of a time point may be a NIfTI label map (ITK-SNAP), a DICOM Segmentation (SEG) or an
RT Structure Set (RTSTRUCT); :func:`mask_format` tells them apart by content, never by file
name. A SEG or RTSTRUCT is placed on the grid of the series it was drawn on -- the DP series as
``recur`` converts it (:class:`ReferenceSeries`) -- by geometry alone, and refused rather than
repaired when it does not belong there:

* its referenced series (SEG: ReferencedSeriesSequence and the frames' source images;
  RTSTRUCT: RTReferencedSeriesSequence and the contours' ContourImageSequence) is not the DP
  series, or its FrameOfReferenceUID differs from the DP series';
* the named segment / ROI does not exist, or several exist and none is named;
* a SEG frame or a contour lies off the planes of the DP slices (beyond
  ``RoiSettings.plane_tolerance_mm``), or outside the image, or a SEG's pixels are not the DP
  pixels (other pixel spacing, rotated in-plane);
* a FRACTIONAL SEG holds values strictly between 0 and 1 (probabilities or partial volumes:
  recur does not pick a threshold for the user);
* nothing is left (an empty segment, no closed contour).

SEG is read with highdicom (frame decoding, segment descriptions, the volume's affine); its
voxels are mapped onto the DP grid by an exact index transform (each SEG voxel centre must land
on a DP voxel centre), so flipped, permuted or partial SEGs land correctly and nothing is
resampled. RTSTRUCT contours (pydicom) are mapped to continuous DP voxel indices through the DP
image's direction, spacing and origin, each contour must lie in one slice plane, and the
polygons are filled with :func:`skimage.draw.polygon2mask` from the exact (sub-pixel) vertices:
a voxel is inside when its centre is. Contours of one ROI on one slice combine by the even-odd
rule (a contour inside another is a hole), as the DICOM standard describes for nested contours.
rt-utils was not used: it rounds each vertex to the nearest pixel before filling (half-pixel
shifts), keeps only contours that name their image by SOP instance, needs OpenCV and sorts
the series itself.

Nothing of the SEG or RTSTRUCT header (names, UIDs, descriptions, dates) leaves this module:
the result is a bare array on the DP grid, and messages name segments and ROIs only by the
labels the user chose among.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recur.errors import RecurError
from recur.settings import SectionSettings

#: The ROI mask formats of rois.csv's ``mask`` column.
ROI_FORMATS = ("nifti", "seg", "rtstruct")
_SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
_RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: Modalities of objects that may sit in an image folder without being one of its images.
_NOT_IMAGES = ("SEG", "RTSTRUCT", "SR", "PR", "KO", "REG", "RTPLAN", "RTDOSE")


@dataclass(frozen=True)
class RoiSettings(SectionSettings):
    """How a SEG or RTSTRUCT is placed on the DP grid: config section ``roi`` (meanings and
    defaults in ``schemas/config.schema.yaml``)."""

    SECTION = "roi"

    plane_tolerance_mm: float

    def __post_init__(self) -> None:
        if not self.plane_tolerance_mm > 0:
            raise RecurError(f"roi: plane_tolerance_mm {self.plane_tolerance_mm} (> 0)")


@dataclass(frozen=True)
class ReferenceSeries:
    """The series a mask must lie on: its grid as recur converts it (``grid``, a SimpleITK
    image whose pixels are not used) and the identifiers a SEG/RTSTRUCT references it by.
    Never written anywhere."""

    grid: object  # SimpleITK.Image
    series_uid: str
    frame_of_reference_uid: str
    sop_uids: frozenset[str]


class RoiProblem(RecurError):
    """A SEG/RTSTRUCT refused; the caller prefixes the patient, time point and file."""


# --------------------------------------------------------------------------- format
def mask_format(path: str | Path) -> str:
    """``"seg"``, ``"rtstruct"`` or ``"nifti"`` (any other image file SimpleITK reads) from the
    file's content. A DICOM file of another kind raises :class:`RoiProblem`. pydicom is
    imported only for a DICOM file (a NIfTI mask's job does not pay its 0.3 s import)."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return "nifti"  # gzip, NIfTI-1/2 or another image format: SimpleITK reads or refuses it
    import pydicom

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"]
        )
    except Exception as exc:
        raise RoiProblem(f"unreadable DICOM file ({type(exc).__name__})") from None
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if sop in _SEG_SOP_CLASSES or modality == "SEG":
        return "seg"
    if sop == _RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "rtstruct"
    raise RoiProblem(
        f"a DICOM file of modality {modality or '?'}, not a segmentation (SEG) or structure "
        "set (RTSTRUCT)"
    )


# --------------------------------------------------------------------------- reference
def reference_identifiers(
    folder: str | Path, series_uid: str | None = None
) -> tuple[str, str, frozenset[str]]:
    """``(series UID, FrameOfReferenceUID, SOP instance UIDs)`` of the series in ``folder``
    (the one with ``series_uid`` when given), from the headers only."""
    import pydicom

    tags = ["SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "Modality", "Rows"]
    by_series: dict[str, tuple[set[str], set[str]]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(entry.path, stop_before_pixels=True, specific_tags=tags)
        except Exception:
            continue  # not DICOM: the conversion already accepted or skipped it
        if "Rows" not in ds or str(ds.get("Modality", "")).upper() in _NOT_IMAGES:
            continue  # a structure set, segmentation, report... stored beside the images
        uid = str(ds.get("SeriesInstanceUID", "")).strip()
        sops, frames = by_series.setdefault(uid, (set(), set()))
        if ds.get("SOPInstanceUID"):
            sops.add(str(ds.SOPInstanceUID).strip())
        if ds.get("FrameOfReferenceUID"):
            frames.add(str(ds.FrameOfReferenceUID).strip())
    if series_uid:
        chosen = series_uid
    elif len(by_series) == 1:
        chosen = next(iter(by_series))
    else:
        raise RoiProblem(f"the reference folder holds {len(by_series)} series: give its series UID")
    if chosen not in by_series:
        raise RoiProblem("the reference folder holds no series with the series UID given")
    sops, frames = by_series[chosen]
    return chosen, (sorted(frames)[0] if len(frames) == 1 else ""), frozenset(sops)


# --------------------------------------------------------------------------- pure helpers
def choose_roi(names: Sequence[str], wanted: str | None, *, kind: str, holder: str) -> int:
    """Index of the ROI to use among ``names``: ``wanted`` (exact, else the only
    case-insensitive match), or the only one when ``wanted`` is empty."""
    listed = ", ".join(repr(n) for n in names) or "none"
    if wanted:
        exact = [i for i, n in enumerate(names) if n == wanted]
        if len(exact) == 1:
            return exact[0]
        loose = [i for i, n in enumerate(names) if n.strip().lower() == wanted.strip().lower()]
        if len(exact) > 1 or len(loose) > 1:
            raise RoiProblem(
                f"the {holder} holds several {kind}s named {wanted!r}: the name must be unique"
            )
        if len(loose) == 1:
            return loose[0]
        raise RoiProblem(f"the {holder} holds no {kind} named {wanted!r} (it holds: {listed})")
    if len(names) == 1:
        return 0
    if not names:
        raise RoiProblem(f"the {holder} holds no {kind}")
    raise RoiProblem(
        f"the {holder} holds {len(names)} {kind}s ({listed}): name one in the roi column of "
        "rois.csv (recur roi: --roi)"
    )


def array_affine(image) -> np.ndarray:
    """4x4 affine from array indices (slice, row, column) -- SimpleITK's array order z, y, x --
    to patient coordinates (LPS, mm) of a SimpleITK image."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=float)
    out = np.eye(4)
    out[:3, :3] = (direction * spacing)[:, ::-1]
    out[:3, 3] = image.GetOrigin()
    return out


def voxel_indices(points_lps: np.ndarray, image) -> np.ndarray:
    """Continuous array indices (slice, row, column) of patient points (N x 3, LPS mm)."""
    affine = array_affine(image)
    return np.linalg.solve(affine[:3, :3], (np.asarray(points_lps, float) - affine[:3, 3]).T).T


def _off_plane_mm(fraction: np.ndarray, spacing: float) -> float:
    return float(np.max(np.abs(fraction - np.round(fraction)))) * spacing if fraction.size else 0.0


def place_indices(
    indices: np.ndarray, shape: Sequence[int], spacing_zyx: Sequence[float], tolerance_mm: float
) -> np.ndarray:
    """Integer indices of SEG voxel centres mapped onto the DP grid (N x 3 continuous
    indices); refuses centres off the DP voxel centres or outside the grid."""
    if not len(indices):
        return np.zeros((0, 3), dtype=np.int64)
    nearest = np.round(indices)
    off = np.abs(indices - nearest) * np.asarray(spacing_zyx, float)
    worst = off.max(axis=0)
    if worst[0] > tolerance_mm:
        raise RoiProblem(
            f"frames lie off the slice planes of the DP series (up to {worst[0]:.3g} mm from "
            f"the nearest slice; tolerance {tolerance_mm:g} mm)"
        )
    if max(worst[1], worst[2]) > tolerance_mm:
        raise RoiProblem(
            f"its pixels are not the DP series' pixels (centres up to "
            f"{max(worst[1], worst[2]):.3g} mm apart; tolerance {tolerance_mm:g} mm)"
        )
    out = nearest.astype(np.int64)
    outside = np.any((out < 0) | (out >= np.asarray(shape)), axis=1)
    if outside.any():
        raise RoiProblem(
            f"{int(outside.sum())} segmented voxel(s) lie outside the DP series' volume"
        )
    return out


def fill_contours(
    contours: Iterable[np.ndarray], shape: Sequence[int], tolerance_mm: float, spacing_zyx
) -> np.ndarray:
    """Rasterise closed planar contours given as continuous array indices (each M x 3:
    slice, row, column) into a (slice, row, column) uint8 mask.

    Each contour must lie in one slice plane (within ``tolerance_mm``) and inside the image;
    contours on one slice combine by the even-odd rule (nested contours are holes). A voxel
    is inside a polygon when its centre is.
    """
    from skimage.draw import polygon2mask

    nz, ny, nx = (int(s) for s in shape)
    sz, sy, sx = (float(s) for s in spacing_zyx)
    out = np.zeros((nz, ny, nx), dtype=bool)
    for idx in contours:
        k = idx[:, 0]
        plane = int(np.round(np.median(k)))
        off = float(np.max(np.abs(k - plane))) * sz
        if off > tolerance_mm:
            raise RoiProblem(
                f"a contour lies off the slice planes of the DP series (up to {off:.3g} mm "
                f"from slice plane {plane}; tolerance {tolerance_mm:g} mm)"
            )
        if not 0 <= plane < nz:
            beyond_slices = plane - nz + 1 if plane >= nz else -plane
            raise RoiProblem(
                f"a contour lies on a plane outside the DP series ({beyond_slices} slice(s) "
                "beyond its first or last slice)"
            )
        rows, cols = idx[:, 1], idx[:, 2]
        beyond = max(
            float(np.max(-0.5 - rows)) * sy,
            float(np.max(rows - (ny - 0.5))) * sy,
            float(np.max(-0.5 - cols)) * sx,
            float(np.max(cols - (nx - 0.5))) * sx,
        )
        if beyond > tolerance_mm:
            raise RoiProblem(
                f"a contour on slice {plane} reaches {beyond:.3g} mm outside the DP image"
            )
        if len(idx) < 3:
            continue  # a point or a line encloses no voxel centre
        out[plane] ^= polygon2mask((ny, nx), np.column_stack([rows, cols]))
    return out.astype(np.uint8)


# --------------------------------------------------------------------------- SEG
def seg_mask(ds, reference: ReferenceSeries, roi: str | None, settings: RoiSettings) -> np.ndarray:
    """The chosen segment of a SEG dataset as a (z, y, x) uint8 array on ``reference.grid``."""
    import highdicom as hd

    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:
        raise RoiProblem(f"not a valid DICOM SEG ({type(exc).__name__})") from None
    _check_seg_references(seg, reference)
    numbers = [n for n in seg.get_segment_numbers() if n > 0]  # a label map's background: 0
    labels = [str(seg.get_segment_description(n).segment_label) for n in numbers]
    number = numbers[choose_roi(labels, roi, kind="segment", holder="SEG")]
    try:
        volume = seg.get_volume(
            segment_numbers=[number],
            combine_segments=False,
            allow_missing_positions=True,
            rescale_fractional=True,
        )
    except Exception as exc:
        raise RoiProblem(
            f"its frames do not form one regular stack of slices ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from None
    values = np.asarray(volume.array)
    if values.ndim == 4:  # the segment axis
        values = values[..., 0]
    seg_type = str(getattr(seg.segmentation_type, "value", seg.segmentation_type))
    if seg_type == "FRACTIONAL":
        partial = (values > 0) & (values < 1)
        if partial.any():
            raise RoiProblem(
                f"a FRACTIONAL SEG with {int(partial.sum())} voxel(s) strictly between 0 and 1 "
                f"(e.g. {float(values[partial].flat[0]):.3g}): recur does not threshold "
                "probabilities or partial volumes; export a BINARY SEG (or threshold it "
                "yourself and export that)"
            )
    nonzero = np.argwhere(values > 0)
    if not len(nonzero):
        raise RoiProblem(f"segment {labels[numbers.index(number)]!r} is empty")
    grid = reference.grid
    to_grid = np.linalg.solve(array_affine(grid), np.asarray(volume.affine, dtype=float))
    mapped = nonzero @ to_grid[:3, :3].T + to_grid[:3, 3]
    spacing_zyx = tuple(reversed(grid.GetSpacing()))
    shape = tuple(reversed(grid.GetSize()))
    seg_pixel = np.asarray(volume.pixel_spacing, dtype=float)
    grid_pixel = np.asarray(spacing_zyx[1:], dtype=float)
    if not np.allclose(np.sort(seg_pixel), np.sort(grid_pixel), rtol=1e-3, atol=0):
        raise RoiProblem(
            f"its pixel spacing ({seg_pixel[0]:.4g} x {seg_pixel[1]:.4g} mm) is not the DP "
            f"series' ({grid_pixel[0]:.4g} x {grid_pixel[1]:.4g} mm)"
        )
    placed = place_indices(mapped, shape, spacing_zyx, settings.plane_tolerance_mm)
    out = np.zeros(shape, dtype=np.uint8)
    out[placed[:, 0], placed[:, 1], placed[:, 2]] = 1
    return out


def _check_seg_references(seg, reference: ReferenceSeries) -> None:
    series = {
        str(item.SeriesInstanceUID).strip()
        for item in seg.get("ReferencedSeriesSequence", [])
        if "SeriesInstanceUID" in item
    }
    sources = seg.get_source_image_uids()
    series |= {str(s).strip() for _, s, _ in sources}
    sops = {str(i).strip() for _, _, i in sources}
    _check_references(series, sops, str(seg.get("FrameOfReferenceUID", "")), reference, "SEG")


def _check_references(
    series: set[str], sops: set[str], frame_of_reference: str, reference, holder: str
) -> None:
    if not series and not sops:
        raise RoiProblem(
            f"the {holder} names no referenced series or image: it cannot be checked to "
            "belong to the DP series"
        )
    if series and reference.series_uid not in series:
        raise RoiProblem(
            f"the {holder} references another series than the DP series named in series.csv"
        )
    foreign = sops - reference.sop_uids
    if foreign:
        raise RoiProblem(
            f"the {holder} references {len(foreign)} image(s) that are not in the DP series "
            "named in series.csv"
        )
    frame = frame_of_reference.strip()
    if frame and reference.frame_of_reference_uid and frame != reference.frame_of_reference_uid:
        raise RoiProblem(
            f"the {holder}'s frame of reference is not the DP series' (drawn on another "
            "examination?)"
        )


# --------------------------------------------------------------------------- RTSTRUCT
def rtstruct_mask(
    ds, reference: ReferenceSeries, roi: str | None, settings: RoiSettings
) -> np.ndarray:
    """The chosen ROI of an RTSTRUCT dataset as a (z, y, x) uint8 array on ``reference.grid``."""
    rois = list(ds.get("StructureSetROISequence", []))
    names = [str(item.get("ROIName", "")).strip() for item in rois]
    chosen = rois[choose_roi(names, roi, kind="ROI", holder="RTSTRUCT")]
    number = int(chosen.ROINumber)
    contours = [
        c
        for item in ds.get("ROIContourSequence", [])
        if int(item.get("ReferencedROINumber", -1)) == number
        for c in item.get("ContourSequence", [])
    ]
    series: set[str] = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for ser in study.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in ser:
                    series.add(str(ser.SeriesInstanceUID).strip())
    sops = {
        str(img.ReferencedSOPInstanceUID).strip()
        for c in contours
        for img in c.get("ContourImageSequence", [])
        if "ReferencedSOPInstanceUID" in img
    }
    _check_references(
        series,
        sops,
        str(chosen.get("ReferencedFrameOfReferenceUID", "")),
        reference,
        "RTSTRUCT",
    )
    closed = [
        c for c in contours if str(c.get("ContourGeometricType", "")).upper() == "CLOSED_PLANAR"
    ]
    if not closed:
        kinds = sorted({str(c.get("ContourGeometricType", "?")) for c in contours})
        raise RoiProblem(
            f"ROI {names[names.index(str(chosen.get('ROIName', '')).strip())]!r} has no closed "
            "planar contour" + (f" (only {', '.join(kinds)})" if kinds else "")
        )
    grid = reference.grid
    points = [np.asarray(c.ContourData, dtype=float).reshape(-1, 3) for c in closed]
    indices = [voxel_indices(p, grid) for p in points]
    spacing_zyx = tuple(reversed(grid.GetSpacing()))
    shape = tuple(reversed(grid.GetSize()))
    mask = fill_contours(indices, shape, settings.plane_tolerance_mm, spacing_zyx)
    if not mask.any():
        raise RoiProblem("its contours enclose no voxel centre of the DP series")
    return mask


# --------------------------------------------------------------------------- file edge
def dicom_mask(
    path: str | Path, reference: ReferenceSeries, roi: str | None, settings: RoiSettings
):
    """Read a SEG or RTSTRUCT file and return its ROI as a uint8 SimpleITK image on
    ``reference.grid`` (geometry only, no metadata). Raises :class:`RoiProblem`."""
    import pydicom
    import SimpleITK as sitk

    kind = mask_format(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise RoiProblem(f"unreadable DICOM file ({type(exc).__name__})") from None
    if kind == "seg":
        array = seg_mask(ds, reference, roi, settings)
    elif kind == "rtstruct":
        array = rtstruct_mask(ds, reference, roi, settings)
    else:
        raise RoiProblem("not a DICOM SEG or RTSTRUCT file")
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference.grid)
    return image


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else ""
