"""Image regions in physical space: the ROI's neighbourhood that a registration works on.

A *box* is given by physical points (the corners of the ROI's bounding box, or those corners
carried into another image's space by a transform); :func:`box_region` finds the smallest block
of an image's voxels that holds every point within ``margin_mm`` of them, clipped to the image,
whatever the image's spacing and direction; :func:`crop_to_box` cuts that block out (the
sub-image keeps its physical position: origin, spacing, direction). :func:`recentred` moves a
rigid or affine transform's centre of rotation without changing the mapping.

Pure functions over ``SimpleITK.Image`` / ``Transform`` objects; nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np
import SimpleITK as sitk


def roi_box_corners(mask: sitk.Image) -> np.ndarray:
    """The 8 physical corners (rows, x y z mm) of the ROI's bounding box on ``mask``'s grid.

    The corners are the centres of the box's extreme voxels (ROI = value > 0); a margin of at
    least half a voxel around them covers the voxels themselves. Raises ``ValueError`` on an
    empty mask.
    """
    arr = sitk.GetArrayViewFromImage(mask) > 0
    if not arr.any():
        raise ValueError("the ROI mask is empty")
    bounds = []  # (lo, hi) index per sitk axis x, y, z (numpy axes reversed)
    for ax in (2, 1, 0):
        other = tuple(i for i in range(3) if i != ax)
        idx = np.flatnonzero(arr.any(axis=other))
        bounds.append((int(idx[0]), int(idx[-1])))
    return np.array(
        [mask.TransformIndexToPhysicalPoint(corner) for corner in product(*bounds)], dtype=float
    )


def box_region(
    image: sitk.Image, points: Sequence[Sequence[float]] | np.ndarray, margin_mm: float
) -> tuple[list[int], list[int]]:
    """``(index, size)`` of the smallest block of ``image``'s voxels whose centres span every
    physical point within ``margin_mm`` of ``points`` (their hull), clipped to the image.

    The points are carried into the image's continuous index space (its origin, spacing and
    direction: oblique and anisotropic grids included), their range is grown by ``margin_mm``
    divided by each axis' spacing, rounded outwards to whole voxels and clipped to the image.
    Raises ``ValueError`` when the grown box misses the image altogether.
    """
    ci = np.array(
        [image.TransformPhysicalPointToContinuousIndex(tuple(map(float, p))) for p in points]
    )
    grow = float(margin_mm) / np.asarray(image.GetSpacing(), dtype=float)
    size = np.asarray(image.GetSize())
    lo = np.floor(ci.min(axis=0) - grow + 1e-9)
    hi = np.ceil(ci.max(axis=0) + grow - 1e-9)
    if np.any(hi < 0) or np.any(lo > size - 1):
        raise ValueError("the box lies outside the image")
    lo = np.clip(lo, 0, size - 1).astype(int)
    hi = np.clip(hi, 0, size - 1).astype(int)
    return [int(v) for v in lo], [int(v) for v in hi - lo + 1]


def crop_to_box(
    image: sitk.Image, points: Sequence[Sequence[float]] | np.ndarray, margin_mm: float
) -> sitk.Image:
    """``image`` cut to :func:`box_region` (same voxels, same physical position)."""
    index, size = box_region(image, points, margin_mm)
    if size == list(image.GetSize()):
        return image
    return sitk.RegionOfInterest(image, size, index)


def recentred(tx: sitk.Transform, center: Sequence[float]) -> sitk.Transform:
    """A copy of the rigid or affine ``tx`` with centre of rotation ``center``, same mapping.

    ``T(x) = A (x - c) + c + t``; with centre ``c'`` the translation becomes
    ``t' = t + (A - I)(c' - c)``. Optimising about the centre of the region the metric sees
    decouples rotation from translation; moving the centre back afterwards keeps the written
    parameters' meaning.
    """
    out = (
        sitk.Euler3DTransform(tx)
        if tx.GetName() == "Euler3DTransform"
        else sitk.AffineTransform(tx)
    )
    a = np.asarray(out.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(out.GetCenter(), dtype=float)
    t = np.asarray(out.GetTranslation(), dtype=float)
    c2 = np.asarray(center, dtype=float)
    t2 = t + (a - np.eye(3)) @ (c2 - c)
    out.SetCenter(tuple(float(v) for v in c2))
    out.SetTranslation(tuple(float(v) for v in t2))
    return out


def image_centre(image: sitk.Image) -> tuple[float, ...]:
    """The physical centre of ``image``'s voxel grid (middle of its first and last voxels)."""
    return image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether ``a`` and ``b`` have the same size, origin, spacing and direction (to 1e-6)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-6)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-6)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-6)
    )
