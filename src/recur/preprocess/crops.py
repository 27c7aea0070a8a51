"""Three-slice S×S crops around the ROI from every registered phase, and their QC.

For each time point (pre, post):

1. The four registered phases and the checked DP mask (all on the DP grid) are reoriented to
   LPS with ``sitk.DICOMOrient`` (a lossless permutation/flip), so every crop shows the
   patient the radiological way: rows run anterior → posterior, columns right → left, and
   the third image axis runs inferior → superior. ``slices`` in the output index that axis of
   the reoriented volume.
2. Optionally (``spacing_mm``) every phase is resampled in-plane to that pixel spacing with
   SimpleITK (linear; the mask linearly and thresholded at 0.5); the slice spacing is kept.
3. Slice choice (:func:`largest_slice`): the slice with the most ROI pixels (ties: the
   lowest index) and its two neighbours, [k-1, k, k+1]. At the first/last slice of the volume
   the missing neighbour repeats the edge slice (:func:`neighbour_slices`).
4. Centre (:func:`bbox_centre`): the centre of the ROI's bounding box on slice k, rounded
   so that an S-window puts as many pixels before the box as after it (ties: towards the
   lower index). The same window is cut from all three slices and all four phases.
5. Crop (:func:`crop_stack`): where the window leaves the volume it is padded. Padding is
   marked NaN while cropping and, after normalisation, set to the *normalised background
   value*: the value the statistics region's lowest intensity maps to (air, for MRI).
6. Normalisation (:class:`Normalise`), per patient, time point and phase (no cohort
   statistics): ``robust_zscore`` (x − median) / (IQR / 1.349) [default], ``zscore``
   (x − mean) / sd, ``minmax`` (x − p0.5) / (p99.5 − p0.5) clipped to [0, 1], or ``none``.
   The statistics come from ``region``: ``crop`` = the in-volume pixels of the phase's
   three-slice window [default], or ``volume`` = the whole (reoriented) volume.

Post-ablation frame (``post_frame``): with ``"pre"`` [the workflow's default] the post phases
are not cropped around their own ROI. They are carried onto the *pre* crop's own pixel grid
(the same three slices and window, step 2's spacing) through the cross-time rigid transform
(post DP registered onto pre DP, :mod:`recur.margin.registration`), linearly, by
:func:`crop_carried`: tumour and ablation zone then sit at the same pixels of the two time
points, so a network can read the ablative margin by comparing them. The post masks are the
ablation zone carried the same way (linear, thresholded at 0.5). With ``"own"`` each time
point is cropped around its own ROI as in the paper; the zone's offset from the tumour is then
lost.

Pure functions over numpy arrays do the science and a few SimpleITK steps reorient, resample
and carry the images; :mod:`recur.preprocess.crop_files` reads a patient's registered phases
and writes the crops, :mod:`recur.preprocess.crop_qc` tabulates the crops' QC for the cohort.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from recur.constants import PHASES
from recur.preprocess.settings import CropSettings, check_normalisation

IQR_TO_SD = 1.349  # IQR of a standard normal distribution


# --------------------------------------------------------------------------- pure functions
def largest_slice(mask: np.ndarray) -> int:
    """Index (along numpy axis 0 = the third image axis) of the slice with the most ROI pixels.

    ``mask`` is a (slices, rows, cols) array; ROI = value > 0. Ties go to the lowest index.
    Raises ``ValueError`` on an empty mask.
    """
    m = np.asarray(mask) > 0
    if m.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {m.shape}")
    area = m.reshape(m.shape[0], -1).sum(axis=1)
    if area.max() == 0:
        raise ValueError("the ROI mask is empty")
    return int(np.argmax(area))


def neighbour_slices(k: int, n_slices: int) -> tuple[int, int, int]:
    """(k-1, k, k+1) clamped to [0, n_slices-1]: an edge slice is repeated."""
    if not 0 <= k < n_slices:
        raise ValueError(f"slice {k} outside a volume of {n_slices} slices")
    return (max(k - 1, 0), k, min(k + 1, n_slices - 1))


def bbox_centre(mask2d: np.ndarray) -> tuple[int, int]:
    """(row, col) centre of the ROI's bounding box on one slice.

    For a box spanning rows r0..r1 (inclusive) the centre is (r0 + r1 + 1) // 2, so an even
    window [c - S//2, c + S//2) has as many pixels before r0 as after r1 (one more after when
    the box's extent is odd).
    """
    m = np.asarray(mask2d) > 0
    if not m.any():
        raise ValueError("the ROI is empty on this slice")
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return (int(rows[0] + rows[-1] + 1) // 2, int(cols[0] + cols[-1] + 1) // 2)


def _window(centre: int, size: int, length: int) -> tuple[slice, slice]:
    """Source slice in [0, length) and destination slice in [0, size) of one crop axis."""
    start = centre - size // 2
    src0, src1 = max(start, 0), min(start + size, length)
    if src1 <= src0:
        return slice(0, 0), slice(0, 0)
    return slice(src0, src1), slice(src0 - start, src1 - start)


def crop_2d(
    image: np.ndarray, centre: tuple[int, int], size: int, fill: float = np.nan
) -> np.ndarray:
    """A size×size window of a 2-D array centred on ``centre`` (rows [c-size//2, c+size-size//2)).

    Pixels outside ``image`` are ``fill``. The result is float32 (NaN fill needs a float).
    """
    img = np.asarray(image)
    out = np.full((size, size), fill, dtype=np.float32)
    rs, rd = _window(centre[0], size, img.shape[0])
    cs, cd = _window(centre[1], size, img.shape[1])
    out[rd, cd] = img[rs, cs]
    return out


def crop_stack(
    volume: np.ndarray,
    slices: Sequence[int],
    centre: tuple[int, int],
    size: int,
    fill: float = np.nan,
) -> np.ndarray:
    """(len(slices), size, size) float32 stack of :func:`crop_2d` windows of ``volume[k]``."""
    vol = np.asarray(volume)
    return np.stack([crop_2d(vol[k], centre, size, fill) for k in slices])


class Normalise:
    """Per-image intensity normalisation; statistics from the finite values of ``reference``.

    ``method``: one of :data:`recur.preprocess.settings.NORMALISATIONS`. Calling returns
    ``(normalised, background)`` where ``background`` is what the reference's minimum maps to
    (the padding value).
    A constant reference (zero spread) is only shifted, never divided by zero.
    """

    def __init__(self, method: str):
        check_normalisation(method)
        self.method = method

    def stats(self, reference: np.ndarray) -> tuple[float, float, float]:
        """(offset, scale, minimum) of the finite values of ``reference``."""
        ref = np.asarray(reference, dtype=np.float64)
        ref = ref[np.isfinite(ref)]
        if ref.size == 0:
            raise ValueError("no finite pixel to normalise on")
        lo = float(ref.min())
        if self.method == "none":
            return 0.0, 1.0, lo
        if self.method == "robust_zscore":
            q25, med, q75 = np.percentile(ref, [25, 50, 75])
            offset, scale = float(med), float(q75 - q25) / IQR_TO_SD
            if scale <= 0:
                scale = float(ref.std())
        elif self.method == "zscore":
            offset, scale = float(ref.mean()), float(ref.std())
        else:  # minmax
            p_lo, p_hi = np.percentile(ref, [0.5, 99.5])
            offset, scale = float(p_lo), float(p_hi - p_lo)
        if not scale > 0:
            scale = 1.0
        return offset, scale, lo

    def __call__(
        self, values: np.ndarray, reference: np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        ref = values if reference is None else reference
        offset, scale, lo = self.stats(ref)
        out = (np.asarray(values, dtype=np.float64) - offset) / scale
        background = (lo - offset) / scale
        if self.method == "minmax":
            out = np.clip(out, 0.0, 1.0)
            background = min(max(background, 0.0), 1.0)
        return out.astype(np.float32), float(background)


@dataclass
class TimepointCrop:
    """One time point's crops: images (4, 3, S, S), masks (3, S, S), and where they came from."""

    crops: np.ndarray
    masks: np.ndarray
    slices: tuple[int, int, int]
    centre: tuple[int, int]
    spacing: tuple[float, float, float]
    roi_area_px: int
    roi_area_mm2: float


def crop_arrays(
    phases: Sequence[np.ndarray],
    mask: np.ndarray,
    spacing_xyz: Sequence[float],
    settings: CropSettings,
) -> TimepointCrop:
    """Crop equally shaped (slices, rows, cols) phase volumes around the ROI of ``mask``.

    ``phases`` in the order of :data:`PHASES`; ``spacing_xyz`` = (col, row, slice) spacing in mm.
    """
    s = settings
    m = np.asarray(mask) > 0
    k = largest_slice(m)
    slices = neighbour_slices(k, m.shape[0])
    centre = bbox_centre(m[k])
    out = np.empty((len(phases), 3, s.size, s.size), dtype=np.float32)
    for i, vol in enumerate(phases):
        vol = np.asarray(vol)
        if vol.shape != m.shape:
            raise ValueError(f"phase {i} has shape {vol.shape}, the mask {m.shape}")
        out[i] = normalise_window(crop_stack(vol, slices, centre, s.size), vol, s)
    masks = crop_stack(m.astype(np.float32), slices, centre, s.size, fill=0.0).astype(np.uint8)
    area = int(m[k].sum())
    return TimepointCrop(
        crops=out,
        masks=masks,
        slices=slices,
        centre=centre,
        spacing=(float(spacing_xyz[0]), float(spacing_xyz[1]), float(spacing_xyz[2])),
        roi_area_px=area,
        roi_area_mm2=float(area * spacing_xyz[0] * spacing_xyz[1]),
    )


def normalise_window(raw: np.ndarray, volume: np.ndarray, settings: CropSettings) -> np.ndarray:
    """Normalise a cropped stack (NaN = outside the image) by ``settings``; NaN -> background.

    The statistics come from the stack's finite pixels (``region`` crop) or ``volume``.
    """
    reference = raw if settings.region == "crop" else volume
    normed, background = Normalise(settings.normalisation)(raw, reference)
    return np.where(np.isnan(raw), np.float32(background), normed).astype(np.float32)


def window_origins(
    origin: Sequence[float],
    spacing: Sequence[float],
    direction: Sequence[float],
    slices: Sequence[int],
    centre: tuple[int, int],
    size: int,
) -> np.ndarray:
    """Physical position (x, y, z) of the first pixel of each slice's crop window.

    The grid is ``origin``/``spacing``/``direction`` (row-major 3x3); the window of slice k
    starts at index (col, row, slice) = (centre_col - size//2, centre_row - size//2, k), as
    :func:`crop_2d` cuts it. Returns a (len(slices), 3) array.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    sp = np.asarray(spacing, dtype=np.float64)
    idx = np.array(
        [[centre[1] - size // 2, centre[0] - size // 2, k] for k in slices], dtype=np.float64
    )
    return np.asarray(origin, dtype=np.float64) + (idx * sp) @ d.T


# --------------------------------------------------------------------------- SimpleITK steps
def in_plane_grid(image: sitk.Image, spacing_mm: float | None) -> dict:
    """Size, spacing, origin and direction of ``image`` resampled in-plane to ``spacing_mm``.

    The first voxel's centre and the physical extent are kept (size rounded); ``None`` keeps
    the image's own grid.
    """
    sp = image.GetSpacing()
    size = image.GetSize()
    if spacing_mm is None:
        new_sp, new_size = tuple(sp), list(size)
    else:
        new_sp = (float(spacing_mm), float(spacing_mm), sp[2])
        new_size = [
            max(1, round(size[0] * sp[0] / new_sp[0])),
            max(1, round(size[1] * sp[1] / new_sp[1])),
            size[2],
        ]
    return {
        "size": [int(x) for x in new_size],
        "spacing": tuple(float(x) for x in new_sp),
        "origin": tuple(image.GetOrigin()),
        "direction": tuple(image.GetDirection()),
    }


def resample_in_plane(image: sitk.Image, spacing_mm: float, *, is_mask: bool = False) -> sitk.Image:
    """Resample ``image`` to ``spacing_mm`` along its first two axes, keeping the third.

    The first voxel's centre and the physical extent are kept (size rounded). Images are
    interpolated linearly; masks (``is_mask``) linearly as float and thresholded at 0.5.
    """
    g = in_plane_grid(image, spacing_mm)
    src = sitk.Cast(image, sitk.sitkFloat32)
    out = sitk.Resample(
        src,
        g["size"],
        sitk.Transform(),
        sitk.sitkLinear,
        g["origin"],
        g["spacing"],
        g["direction"],
        0.0,
        sitk.sitkFloat32,
    )
    if is_mask:
        out = sitk.Cast(out >= 0.5, sitk.sitkUInt8)
    return out


def crop_timepoint(
    phases: Mapping[str, sitk.Image], mask: sitk.Image, settings: CropSettings
) -> TimepointCrop:
    """Reorient to LPS, optionally resample in-plane, and crop (see the module docstring)."""
    s = settings
    lps = {ph: sitk.DICOMOrient(phases[ph], "LPS") for ph in PHASES}
    m = sitk.DICOMOrient(mask, "LPS")
    if s.spacing_mm is not None:
        lps = {ph: resample_in_plane(img, s.spacing_mm) for ph, img in lps.items()}
        m = resample_in_plane(m, s.spacing_mm, is_mask=True)
    arrays = [sitk.GetArrayViewFromImage(lps[ph]) for ph in PHASES]
    return crop_arrays(arrays, sitk.GetArrayViewFromImage(m), m.GetSpacing(), s)


def carry_window(
    image: sitk.Image,
    grid: Mapping,
    slices: Sequence[int],
    centre: tuple[int, int],
    size: int,
    transform: sitk.Transform,
) -> np.ndarray:
    """(len(slices), size, size) float32: ``image`` sampled (linearly) on a crop window of ``grid``.

    ``grid`` (:func:`in_plane_grid`) and the window (``slices``, ``centre``, ``size``) are in
    the fixed frame; ``transform`` maps fixed points to ``image``'s points (SimpleITK's
    resampling convention, as registration writes it). Outside ``image``: NaN.
    """
    src = sitk.Cast(image, sitk.sitkFloat32)
    starts = window_origins(
        grid["origin"], grid["spacing"], grid["direction"], slices, centre, size
    )
    out = np.empty((len(slices), size, size), dtype=np.float32)
    for i, start in enumerate(starts):
        res = sitk.Resample(
            src,
            [size, size, 1],
            transform,
            sitk.sitkLinear,
            tuple(float(x) for x in start),
            grid["spacing"],
            grid["direction"],
            float("nan"),
            sitk.sitkFloat32,
        )
        out[i] = sitk.GetArrayViewFromImage(res)[0]
    return out


def crop_carried(
    phases: Mapping[str, sitk.Image],
    mask: sitk.Image,
    pre_dp: sitk.Image,
    anchor: TimepointCrop,
    transform: sitk.Transform,
    settings: CropSettings,
) -> TimepointCrop:
    """Post-ablation crops on the pre crop's pixel grid (``post_frame: pre``).

    ``phases`` and ``mask`` (the ablation zone) are on the post DP grid; ``transform`` maps
    pre DP points to post DP points (:mod:`recur.margin.registration`'s ``post_to_pre.tfm``);
    ``anchor`` is the pre time point's crop of ``pre_dp`` (its slices and centre). Each phase is
    sampled once (linearly) on the pre window, normalised like any crop (``region: volume`` takes
    the post phase's own volume), and the zone mask is carried the same way and thresholded at
    0.5.
    """
    s = settings
    grid = in_plane_grid(sitk.DICOMOrient(pre_dp, "LPS"), s.spacing_mm)
    where = (anchor.slices, anchor.centre, s.size, transform)
    out = np.empty((len(PHASES), 3, s.size, s.size), dtype=np.float32)
    for i, ph in enumerate(PHASES):
        raw = carry_window(phases[ph], grid, *where)
        if not np.isfinite(raw).any():
            raise ValueError("the post-ablation image falls outside the pre crop window")
        vol = sitk.GetArrayViewFromImage(phases[ph]) if s.region == "volume" else raw
        out[i] = normalise_window(raw, vol, s)
    zone = carry_window(mask, grid, *where)
    masks = (np.nan_to_num(zone, nan=0.0) >= 0.5).astype(np.uint8)
    area = int(masks[1].sum())
    sp = grid["spacing"]
    return TimepointCrop(
        crops=out,
        masks=masks,
        slices=anchor.slices,
        centre=anchor.centre,
        spacing=(float(sp[0]), float(sp[1]), float(sp[2])),
        roi_area_px=area,
        roi_area_mm2=float(area * sp[0] * sp[1]),
    )
