"""Pure geometry of a stack of DICOM slices, over numpy arrays of positions and orientations.

The slices are ordered by their position along the slice normal (the cross product of the
ImageOrientationPatient row and column cosines, dotted with ImagePositionPatient), never by file
name or InstanceNumber. The checks here refuse, with :class:`GeometryError`, a stack that is not
one regular volume: mixed orientations (:func:`orientation_groups`), slices that do not step
along the normal (gantry tilt, :func:`check_stacking`), missing slices or non-uniform spacing
(:func:`check_slice_spacing`). :func:`direction_matrix` gives ITK's direction matrix and
:func:`output_dtype` the voxel type of the rescaled volume.

They take plain arrays so they can be tested by hand;
:class:`recur.preprocess.dicom_series.SeriesReader` applies them to a folder's headers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from recur.errors import RecurError

#: Slices closer than this along the normal (mm) are at the same position.
SAME_POSITION_MM = 0.01


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
