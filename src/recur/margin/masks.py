"""Binary masks on image grids for the margin: regions, signed distances, resampling.

Bounding boxes and the region within a distance of the tumour (:func:`region_mask`, the
support of the registration's B-spline stage), the half-voxel-corrected signed distance of
every voxel to a mask's boundary (:func:`signed_distance`, inside positive), shape-based
resampling of a mask through its signed distance map (:func:`shape_resample`) onto another
grid or an isotropic one around the ROIs (:func:`iso_reference`), and :func:`zone_on_pre`,
which carries the post ablation-zone mask onto the pre (tumour) grid under the post-to-pre
transform of :mod:`recur.margin.registration`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from recur.margin.settings import INTERPOLATIONS


def binary_mask(mask: sitk.Image) -> sitk.Image:
    """``mask > 0`` as uint8 with the same geometry."""
    return sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)


def bounding_box(mask: np.ndarray, pad: int | Sequence[int]) -> tuple[slice, ...]:
    """Slices (numpy axis order) of the bounding box of ``mask`` grown by ``pad`` voxels
    (one number, or one per axis), clipped to the array."""
    pads = [int(pad)] * mask.ndim if isinstance(pad, int) else [int(v) for v in pad]
    sl = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo, hi = int(idx[0]) - pads[ax], int(idx[-1]) + pads[ax] + 1
        sl.append(slice(max(lo, 0), min(hi, mask.shape[ax])))
    return tuple(sl)


def roi_slices(mask: sitk.Image) -> np.ndarray:
    """Indices (array axis 0, i.e. image z) of the slices holding ROI voxels."""
    return np.flatnonzero((sitk.GetArrayViewFromImage(mask) > 0).any(axis=(1, 2)))


def region_mask(tumour: sitk.Image, distance_mm: float) -> sitk.Image:
    """uint8 mask of the voxels within ``distance_mm`` (physical, 3-D) of the tumour.

    The distance map is computed on the tumour's bounding box grown by the distance only
    (exact: every voxel outside that box is farther away), then pasted into the full grid.
    """
    t = binary_mask(tumour)
    out = sitk.Image(t.GetSize(), sitk.sitkUInt8)
    out.CopyInformation(t)
    arr = sitk.GetArrayViewFromImage(t) > 0
    if not arr.any():
        return out
    pad = [math.ceil(float(distance_mm) / sp) + 1 for sp in t.GetSpacing()[::-1]]
    box = bounding_box(arr, pad)
    index = [b.start for b in box][::-1]  # numpy z,y,x -> sitk x,y,z
    size = [b.stop - b.start for b in box][::-1]
    sdm = sitk.SignedMaurerDistanceMap(
        sitk.RegionOfInterest(t, size, index),
        insideIsPositive=False,
        squaredDistance=False,
        useImageSpacing=True,
    )
    near = sitk.Cast(sdm <= float(distance_mm), sitk.sitkUInt8)
    return sitk.Paste(out, near, near.GetSize(), [0] * near.GetDimension(), index)


def _maurer(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``sitk.SignedMaurerDistanceMap`` of a binary array (inside positive, mm)."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing([float(s) for s in spacing[::-1]])
    sdm = sitk.SignedMaurerDistanceMap(
        img, insideIsPositive=True, squaredDistance=False, useImageSpacing=True
    )
    return sitk.GetArrayFromImage(sdm).astype(np.float64)


def _face_neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels with at least one face neighbour in ``mask`` (array border: no neighbour)."""
    out = np.zeros(mask.shape, dtype=bool)
    for ax in range(mask.ndim):
        n = mask.shape[ax]
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[ax], hi[ax] = slice(0, n - 1), slice(1, n)
        out[tuple(lo)] |= mask[tuple(hi)]
        out[tuple(hi)] |= mask[tuple(lo)]
    return out


def signed_distance(zone: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed distance (mm) of every voxel to the zone boundary, positive inside the zone.

    Half-voxel-corrected: Maurer's map (``sitk.SignedMaurerDistanceMap``) measures the
    distance to the centres of the zone's own border voxels, i.e. to a surface half a voxel
    *inside* the true boundary; the same map of the layer of background voxels touching the
    zone measures to a surface half a voxel *outside*. Their mean puts the zero level
    half-way, on the faces between zone and background voxels. The mask is padded by 2 voxels
    so a zone touching the array border keeps a closed boundary.
    """
    z = np.pad(np.asarray(zone) > 0, 2)
    d_in = _maurer(z, spacing)  # 0 on the zone's border voxels, > 0 inside
    outer = _face_neighbours(z) & ~z
    d_out = np.abs(_maurer(outer, spacing))  # distance to the outer layer (thin: all contour)
    sdm = 0.5 * (d_in + np.where(z, d_out, -d_out))
    return sdm[tuple(slice(2, -2) for _ in range(z.ndim))]


def distance_image(mask: sitk.Image) -> sitk.Image:
    """float32 image of :func:`signed_distance` of ``mask`` (mm, inside positive)."""
    arr = sitk.GetArrayViewFromImage(mask) > 0
    out = sitk.GetImageFromArray(signed_distance(arr, mask.GetSpacing()[::-1]).astype(np.float32))
    out.CopyInformation(mask)
    return out


def shape_resample(
    mask: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    smooth_voxels: float = 0.0,
) -> sitk.Image:
    """Shape-based resampling of a binary mask onto ``reference``'s grid (uint8 {0, 1}).

    The mask's signed distance map (:func:`distance_image`) is optionally smoothed with a
    Gaussian of ``smooth_voxels`` voxels of the mask's own grid per axis (removes the
    voxel staircase before it is resampled onto a finer grid), resampled with linear
    interpolation (under ``transform``: reference -> mask space) and thresholded at 0: the
    boundary is interpolated between slices instead of copied to the nearest voxel.
    """
    far = -1.0e4
    sdm = distance_image(mask)
    if smooth_voxels > 0:
        sdm = sitk.SmoothingRecursiveGaussian(sdm, [smooth_voxels * v for v in mask.GetSpacing()])
    out = sitk.Resample(
        sdm,
        reference,
        transform or sitk.Transform(mask.GetDimension(), sitk.sitkIdentity),
        sitk.sitkLinear,
        far,
        sitk.sitkFloat32,
    )
    return sitk.Cast(out > 0, sitk.sitkUInt8)


def iso_reference(
    masks: Sequence[sitk.Image], spacing_mm: float, pad_mm: float = 3.0
) -> sitk.Image:
    """An isotropic grid (spacing ``spacing_mm``) covering the ROIs of ``masks`` + ``pad_mm``.

    2-D or 3-D. The masks share one grid; the new grid keeps its orientation and covers the
    bounding box of all their ROI voxels (physical extent of the voxels) grown by ``pad_mm``
    per side.
    """
    ref = masks[0]
    union = np.zeros(sitk.GetArrayViewFromImage(ref).shape, dtype=bool)
    for m in masks:
        union |= sitk.GetArrayViewFromImage(m) > 0
    idx = np.argwhere(union)
    lo_zyx, hi_zyx = idx.min(axis=0), idx.max(axis=0)
    sp = np.array(ref.GetSpacing())
    lo = lo_zyx[::-1] - 0.5 - pad_mm / sp  # continuous index (x, y, z) of the box corners
    hi = hi_zyx[::-1] + 0.5 + pad_mm / sp
    size = [max(math.ceil((b - a) * s / spacing_mm), 1) for a, b, s in zip(lo, hi, sp, strict=True)]
    origin_index = lo + 0.5 * spacing_mm / sp  # first new voxel centre
    out = sitk.Image(size, sitk.sitkUInt8)
    out.SetSpacing([spacing_mm] * ref.GetDimension())
    out.SetDirection(ref.GetDirection())
    out.SetOrigin(ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in origin_index]))
    return out


def zone_on_pre(
    zone: sitk.Image,
    tumour: sitk.Image,
    transform: sitk.Transform,
    interpolation: str = "sdm",
) -> sitk.Image:
    """The post ablation-zone mask resampled onto the pre (tumour) grid as uint8 {0, 1}.

    ``sdm`` (shape-based): the zone's signed distance map (:func:`signed_distance`) resampled
    with linear interpolation, thresholded at 0; ``nearest``: nearest-neighbour;
    ``linear``: linear interpolation of the binary mask, thresholded at 0.5. A zone drawn on
    a single slice (2-D ROI) is first extruded through its volume, resampled, and kept only
    on one pre slice: the tumour's slice if the tumour is single-slice too, else the pre
    slice nearest to the transformed centre of the zone's slice (through-plane motion is
    ignored; see ``mode=2d``).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}")
    zb = binary_mask(zone)
    zslices = roi_slices(zb)
    if zslices.size == 0:
        raise ValueError("the ablation-zone mask is empty")
    single = zslices.size == 1
    if single:
        arr = sitk.GetArrayFromImage(zb)
        arr[:] = arr[zslices[0]][None]
        ext = sitk.GetImageFromArray(arr)
        ext.CopyInformation(zb)
        zb = ext
    if interpolation == "sdm":
        out = shape_resample(zb, tumour, transform)
    elif interpolation == "nearest":
        out = sitk.Resample(zb, tumour, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    else:
        f = sitk.Resample(sitk.Cast(zb, sitk.sitkFloat32), tumour, transform, sitk.sitkLinear, 0.0)
        out = sitk.Cast(f >= 0.5, sitk.sitkUInt8)
    if single:
        tslices = roi_slices(tumour)
        if tslices.size == 1:
            keep = int(tslices[0])
        else:
            # centre of the zone slice in post space -> pre space (inverse transform)
            nz = np.argwhere(sitk.GetArrayFromImage(zone)[zslices[0]] > 0)
            cy, cx = nz.mean(axis=0)
            p_post = zone.TransformContinuousIndexToPhysicalPoint(
                (float(cx), float(cy), float(zslices[0]))
            )
            try:
                p_pre = transform.GetInverse().TransformPoint(p_post)
            except RuntimeError:
                p_pre = p_post
            keep = round(tumour.TransformPhysicalPointToContinuousIndex(p_pre)[2])
            keep = min(max(keep, 0), tumour.GetSize()[2] - 1)
        arr = sitk.GetArrayFromImage(out)
        sel = np.zeros(arr.shape[0], dtype=bool)
        sel[keep] = True
        arr[~sel] = 0
        res = sitk.GetImageFromArray(arr)
        res.CopyInformation(out)
        out = res
    return out
