"""Margins of the tumour surface to the ablation-zone boundary, and the cohort margin table.

:class:`MarginMetrics` computes, for every element of the tumour surface
(:func:`surface_faces`), the signed distance to the ablation-zone boundary
(:func:`recur.margin.masks.signed_distance`, inside the zone positive) and summarises it
(:class:`SurfaceMargins`): minimal margin and the surface fractions with margin < 0, < 5 mm
and >= 5 mm. 3-D on full masks, a weaker per-slice 2-D mode when either ROI was drawn on a
single slice. :func:`margin_table` turns the per-patient summaries into the cohort table.
See ``docs/methods/margin.md`` for the definitions and their biases; the file edges are in
:mod:`recur.margin.files`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:  # pandas is imported where used: per-patient jobs do not need it
    import pandas as pd

from recur.errors import RecurError
from recur.margin.masks import (
    binary_mask,
    bounding_box,
    iso_reference,
    shape_resample,
    signed_distance,
    zone_on_pre,
)
from recur.margin.settings import MarginMetricSettings

#: Margin thresholds (mm) of the summary: < 0 (tumour outside the zone), < 5, >= 5.
SAFE_MARGIN_MM = 5.0
#: Columns of ``results/margin/margin.csv``.
TABLE_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "min_margin_mm",
    "pct_lt0",
    "pct_lt5",
    "pct_ge5",
    "mode",
)
#: Largest isotropic working grid of the 3-D metrics (voxels); coarser spacing beyond.
MAX_ISO_VOXELS = 16_000_000


def surface_faces(
    tumour: np.ndarray, field_mm: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``field_mm`` on the tumour surface faces and the faces' areas.

    The surface of the voxelised tumour is the set of faces shared by a tumour voxel and a
    non-tumour voxel (face neighbours; beyond the array border counts as non-tumour). The
    value at a face centre is the mean of ``field_mm`` at the two voxel centres on either side
    (linear interpolation); the weight is the face area in mm² (3-D) or edge length in mm
    (2-D). ``spacing`` is per array axis (numpy order).
    """
    t = np.asarray(tumour) > 0
    nd = t.ndim
    if len(spacing) != nd or field_mm.shape != t.shape:
        raise ValueError("tumour, field and spacing disagree in shape")
    tp = np.pad(t, 1, constant_values=False)
    fp = np.pad(np.asarray(field_mm, dtype=np.float64), 1, mode="edge")
    inner = tuple(slice(1, -1) for _ in range(nd))
    vals, wts = [], []
    for ax in range(nd):
        face = float(np.prod([spacing[i] for i in range(nd) if i != ax]))
        for step in (-1, 1):
            nb_t = np.roll(tp, step, axis=ax)[inner]
            exposed = t & ~nb_t
            nb_f = np.roll(fp, step, axis=ax)[inner]
            vals.append(0.5 * (field_mm[exposed] + nb_f[exposed]))
            wts.append(np.full(int(exposed.sum()), face))
    return np.concatenate(vals), np.concatenate(wts)


@dataclass
class SurfaceMargins:
    """Per-surface-element margins of one patient and their summary."""

    margins_mm: np.ndarray
    weights: np.ndarray
    mode: str
    slices: tuple[int, ...] = ()

    def summary(self) -> dict[str, float | str | int]:
        """min margin (mm) and weighted percentages of surface with margin <0, <5, >=5 mm.

        ``pct_lt5`` includes ``pct_lt0``; ``pct_lt5 + pct_ge5 = 100``.
        """
        m, w = self.margins_mm, self.weights
        total = float(w.sum())
        lt0 = 100.0 * float(w[m < 0].sum()) / total
        lt5 = 100.0 * float(w[m < SAFE_MARGIN_MM].sum()) / total
        return {
            "min_margin_mm": float(m.min()),
            "median_margin_mm": float(np.median(m)),
            "pct_lt0": lt0,
            "pct_lt5": lt5,
            "pct_ge5": 100.0 - lt5,
            "mode": self.mode,
            "n_surface": int(m.size),
        }


def surface_margins_3d(
    tumour: np.ndarray, zone: np.ndarray, spacing: Sequence[float]
) -> SurfaceMargins:
    """3-D margins on the tumour surface faces (arrays and spacing in numpy axis order)."""
    t = np.asarray(tumour) > 0
    z = np.asarray(zone) > 0
    if t.shape != z.shape:
        raise ValueError(f"tumour {t.shape} and zone {z.shape} masks differ in shape")
    if not t.any():
        raise ValueError("the tumour mask is empty")
    if not z.any():
        raise ValueError("the ablation-zone mask is empty")
    box = bounding_box(t | z, 1)
    t, z = t[box], z[box]
    m, w = surface_faces(t, signed_distance(z, spacing), spacing)
    return SurfaceMargins(m, w, "3d")


def surface_margins_2d(
    tumour: np.ndarray, zone: np.ndarray, spacing: Sequence[float]
) -> SurfaceMargins:
    """In-plane margins on every slice (axis 0) holding both tumour and zone.

    Each slice is treated as a 2-D image with the in-plane spacing; through-plane distances
    are ignored. Surface elements are the in-plane contour edges, weighted by length (mm).
    """
    t = np.asarray(tumour) > 0
    z = np.asarray(zone) > 0
    if t.shape != z.shape:
        raise ValueError(f"tumour {t.shape} and zone {z.shape} masks differ in shape")
    both = np.flatnonzero(t.any(axis=(1, 2)) & z.any(axis=(1, 2)))
    if both.size == 0:
        raise ValueError("no slice holds both the tumour and the ablation zone")
    ms, ws = [], []
    for k in both:
        box = bounding_box(t[k] | z[k], 1)
        tk, zk = t[k][box], z[k][box]
        m, w = surface_faces(tk, signed_distance(zk, spacing[1:]), spacing[1:])
        ms.append(m)
        ws.append(w)
    return SurfaceMargins(np.concatenate(ms), np.concatenate(ws), "2d", tuple(int(k) for k in both))


class MarginMetrics:
    """Margins of the tumour surface to the ablation-zone boundary (settings, then call).

    ``mode``: ``auto`` uses 3-D unless either mask holds ROI on a single slice, then 2-D;
    ``3d`` / ``2d`` force one. ``iso_spacing_mm``: in 3-D, both masks are shape-resampled
    (:func:`recur.margin.masks.shape_resample`, SDM smoothed by ``smooth_voxels`` voxels) onto
    an isotropic grid of spacing ``min(iso_spacing_mm, smallest voxel size)`` around the ROIs,
    which interpolates the boundaries between thick slices and removes the voxel staircase;
    ``None`` works on the native grid with no smoothing. The three come from a
    :class:`recur.margin.settings.MarginMetricSettings` (config section ``margin``).
    """

    def __init__(self, settings: MarginMetricSettings):
        self.settings = settings
        self.mode = settings.mode
        self.iso_spacing_mm = settings.iso_spacing_mm
        self.smooth_voxels = settings.smooth_voxels

    def resolve_mode(self, tumour: np.ndarray, zone: np.ndarray) -> str:
        """The mode used for these masks (numpy arrays, axis 0 = slices)."""
        if self.mode != "auto":
            return self.mode
        n_t = int((np.asarray(tumour) > 0).any(axis=(1, 2)).sum())
        n_z = int((np.asarray(zone) > 0).any(axis=(1, 2)).sum())
        return "2d" if min(n_t, n_z) <= 1 else "3d"

    def _iso_2d(self, t: np.ndarray, z: np.ndarray, spacing_xyz: Sequence[float]) -> SurfaceMargins:
        """2-D mode on an isotropic in-plane grid per slice (as the 3-D iso path, in-plane)."""
        sx, sy = float(spacing_xyz[0]), float(spacing_xyz[1])
        h = min(self.iso_spacing_mm or sx, sx, sy)
        both = np.flatnonzero((t > 0).any(axis=(1, 2)) & (z > 0).any(axis=(1, 2)))
        if both.size == 0:
            raise ValueError("no slice holds both the tumour and the ablation zone")
        ms, ws = [], []
        for k in both:
            imgs = []
            for a in (t[k], z[k]):
                im = sitk.GetImageFromArray((a > 0).astype(np.uint8))
                im.SetSpacing((sx, sy))
                imgs.append(im)
            ref = iso_reference(imgs, h, pad_mm=2.0 * max(sx, sy))
            ti = sitk.GetArrayFromImage(shape_resample(imgs[0], ref, None, self.smooth_voxels))
            zi = sitk.GetArrayFromImage(shape_resample(imgs[1], ref, None, self.smooth_voxels))
            if not (ti > 0).any() or not (zi > 0).any():
                raise ValueError(f"an ROI vanishes on the isotropic grid of slice {k}")
            m, w = surface_faces(ti, signed_distance(zi, (h, h)), (h, h))
            ms.append(m)
            ws.append(w)
        return SurfaceMargins(
            np.concatenate(ms), np.concatenate(ws), "2d", tuple(int(k) for k in both)
        )

    def __call__(
        self, tumour: sitk.Image, zone: sitk.Image, transform: sitk.Transform | None = None
    ) -> SurfaceMargins:
        """Margins of ``tumour`` (pre grid) to ``zone``.

        Without ``transform`` the zone lies on the tumour's grid; with it, the zone lies on
        its own (post) grid and ``transform`` maps pre points to post points: the zone is then
        carried straight onto the working grid (one interpolation, not two).
        """
        tumour = binary_mask(tumour)
        zone = binary_mask(zone)
        if transform is None and (
            tumour.GetSize() != zone.GetSize()
            or not np.allclose(tumour.GetSpacing(), zone.GetSpacing(), rtol=1e-4)
        ):
            raise ValueError(
                f"tumour (size {tumour.GetSize()}) and zone (size {zone.GetSize()}) masks are "
                "not on the same grid"
            )
        t = sitk.GetArrayViewFromImage(tumour)
        if not (t > 0).any():
            raise ValueError("the tumour mask is empty")
        if not (sitk.GetArrayViewFromImage(zone) > 0).any():
            raise ValueError("the ablation-zone mask is empty")
        zone_pre = zone if transform is None else zone_on_pre(zone, tumour, transform, "sdm")
        z = sitk.GetArrayViewFromImage(zone_pre)
        mode = self.resolve_mode(t, z)
        if mode == "2d":
            if self.iso_spacing_mm is None:
                return surface_margins_2d(t, z, tumour.GetSpacing()[::-1])
            return self._iso_2d(t, z, tumour.GetSpacing())
        if not (z > 0).any():
            raise ValueError("the ablation zone lies outside the tumour's image")
        if self.iso_spacing_mm is None:
            return surface_margins_3d(t, z, tumour.GetSpacing()[::-1])
        h = min(self.iso_spacing_mm, *tumour.GetSpacing())
        pad = 2.0 * max(tumour.GetSpacing())
        ref = iso_reference([tumour, zone_pre], h, pad_mm=pad)
        n = float(np.prod(ref.GetSize()))
        if n > MAX_ISO_VOXELS:  # very large ROIs: coarsen the working grid to bound memory
            h *= (n / MAX_ISO_VOXELS) ** (1.0 / 3.0)
            ref = iso_reference([tumour, zone_pre], h, pad_mm=pad)
        ti = shape_resample(tumour, ref, None, self.smooth_voxels)
        zi = shape_resample(zone, ref, transform, self.smooth_voxels)
        ta = sitk.GetArrayViewFromImage(ti)
        if not (ta > 0).any():
            raise ValueError("the tumour vanishes on the isotropic grid (too small)")
        za = sitk.GetArrayViewFromImage(zi)
        if not (za > 0).any():
            raise ValueError("the ablation zone vanishes on the isotropic grid (too small)")
        return surface_margins_3d(ta, za, (h, h, h))


def margin_table(records: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """The cohort table (:data:`TABLE_COLUMNS`) from per-patient metric records, sorted."""
    import pandas as pd

    rows = list(records)
    df = pd.DataFrame(rows)
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if rows and missing:
        raise RecurError(f"margin metrics lack column(s) {missing}")
    if not rows:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    dup = df["patient_id"][df["patient_id"].duplicated()]
    if len(dup):
        raise RecurError(f"patient {dup.iloc[0]} has more than one margin record")
    return df[list(TABLE_COLUMNS)].sort_values("patient_id", kind="stable").reset_index(drop=True)
