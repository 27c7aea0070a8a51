"""The simulated MR acquisition of a synthetic patient: grids, phase motion and images.

:func:`dp_grid` is the acquisition grid of a study (all four phases share it);
:class:`Motion` and :func:`sample_motion` the rigid misalignment of a phase to DP;
:func:`render_study` the four phases of a study as arrays: the anatomy is rasterised once on a
fine grid, each contrast phase maps labels to phase-specific T1 intensities, is moved by its
motion and sampled on the DICOM grid with a slice profile, bias field and Rician noise;
:func:`simulate_patient` both studies of one patient with their ROI masks. Numpy arrays only,
nothing is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recur.constants import PHASES, TIMEPOINTS
from recur.errors import RecurError
from recur.synthetic.anatomy import (
    SATELLITE,
    TUMOUR,
    TUMOUR_CENTRE,
    Grid,
    PatientAnatomy,
    axis_slice,
)
from recur.synthetic.latent import random_stream
from recur.synthetic.sites import SITE_PROFILES, SiteProfile


@dataclass(frozen=True)
class Motion:
    """Rigid misalignment of one phase to DP.

    ``T(x) = R (x - center) + center + translation`` maps a physical point ``x`` of the DP
    image to the corresponding point of the moved phase: ``sitk.Euler3DTransform(center,
    angle_x, angle_y, angle_z, translation)`` (angles in radians, ZXY order, SimpleITK's
    default), the transform a registration with fixed = DP and moving = phase should recover.
    """

    center: tuple[float, float, float]
    angles: tuple[float, float, float]
    translation: tuple[float, float, float]

    def transform(self):
        import SimpleITK as sitk

        t = sitk.Euler3DTransform()
        t.SetCenter(self.center)
        t.SetRotation(*self.angles)
        t.SetTranslation(self.translation)
        return t


def sample_motion(rng: np.random.Generator, center: Sequence[float]) -> Motion:
    """Breathing-like misalignment: mostly cranio-caudal translation, a few degrees."""
    deg = math.pi / 180.0
    ang = (
        float(np.clip(rng.normal(0, 1.5), -4, 4) * deg),
        float(np.clip(rng.normal(0, 1.0), -3, 3) * deg),
        float(np.clip(rng.normal(0, 1.0), -3, 3) * deg),
    )
    tr = (
        float(np.clip(rng.normal(0, 1.2), -4, 4)),
        float(np.clip(rng.normal(0, 2.0), -6, 6)),
        float(np.clip(rng.normal(0, 4.5), -12, 12)),
    )
    c = tuple(float(v) for v in center)
    return Motion(c, tuple(round(a, 6) for a in ang), tuple(round(t, 4) for t in tr))  # type: ignore[arg-type]


IDENTITY = Motion((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))


def dp_grid(rng: np.random.Generator, site: SiteProfile, z_center: float) -> Grid:
    """The acquisition grid of one study (all four phases share it)."""
    rows, cols = site.matrix
    fov = float(rng.choice(site.fov_mm))
    px = round(fov / cols, 5)  # as written to PixelSpacing
    nz = int(rng.integers(site.n_slices[0], site.n_slices[1] + 1))
    dz = site.thickness + site.gap
    x0 = round(-px * (cols - 1) / 2 + float(rng.uniform(-3, 3)), 3)
    y0 = round(-px * (rows - 1) / 2 + float(rng.uniform(-3, 8)), 3)
    z0 = round(z_center - dz * (nz - 1) / 2, 3)
    return Grid((x0, y0, z0), (px, px, dz), (cols, rows, nz))


def _fine_grid(grid: Grid, thickness: float, pad_xy: float = 14.0, pad_z: float = 24.0) -> Grid:
    """The rasterisation grid around ``grid``: same in-plane spacing, thickness/3 in z."""
    sx, sy, sz = grid.spacing
    fz = thickness / 3.0
    nx = grid.size[0] + 2 * math.ceil(pad_xy / sx)
    ny = grid.size[1] + 2 * math.ceil(pad_xy / sy)
    ext_z = sz * (grid.size[2] - 1) + 2 * pad_z
    nz = math.ceil(ext_z / fz) + 1
    origin = (
        grid.origin[0] - sx * ((nx - grid.size[0]) // 2),
        grid.origin[1] - sy * ((ny - grid.size[1]) // 2),
        grid.origin[2] - pad_z,
    )
    return Grid(origin, (sx, sy, fz), (nx, ny, nz))


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], cell: tuple[float, float, float]
) -> np.ndarray:
    """A smooth zero-mean, unit-variance random field of ``shape`` (z, y, x).

    White noise on a coarse lattice (one node per ``cell`` voxels) interpolated with Gaussian
    weights, separably (three small matrix products, no full-size convolution).
    """
    coarse_shape = [max(2, math.ceil(n / c) + 2) for n, c in zip(shape, cell, strict=True)]
    weights = []
    for n, c, m in zip(shape, cell, coarse_shape, strict=True):
        pos = np.arange(n, dtype=np.float32)[:, None]
        nodes = (np.arange(m, dtype=np.float32) - 1.0)[None, :] * c
        w = np.exp(-0.5 * ((pos - nodes) / (0.6 * c)) ** 2)
        weights.append((w / w.sum(axis=1, keepdims=True)).astype(np.float32))
    wz, wy, wx = weights
    coarse = rng.standard_normal(coarse_shape, dtype=np.float32)
    out = np.einsum("yc,zcx->zyx", wy, coarse @ wx.T, optimize=True)  # (cz, ny, nx)
    out = (wz @ out.reshape(coarse_shape[0], -1)).reshape(shape)
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


def render_study(
    anatomy: PatientAnatomy,
    grid: Grid,
    timepoint: str,
    motions: dict[str, Motion],
    site: SiteProfile,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The four phases of one study as float32 arrays (z, y, x) in scanner signal units.

    The anatomy is rasterised once on a fine grid; each phase maps labels to its signal,
    is moved by ``motions[phase]`` (sampled at ``T^-1(y)`` for each voxel ``y``), integrated
    over the slice thickness (3 sub-slices), multiplied by a smooth coil bias field and
    corrupted with Rician noise.
    """
    import SimpleITK as sitk

    fine = _fine_grid(grid, site.thickness)
    lab = anatomy.rasterise(fine, timepoint)
    sig = anatomy.signal_table()
    tex_amp = anatomy.texture_table()
    texture = _smooth_field(rng, lab.shape, (3, 5, 5))
    modul = 1.0 + tex_amp[lab] * texture
    # fine heterogeneity inside the index tumour
    c, r = anatomy.shapes["tumour"]
    c = c + anatomy.offset(timepoint)
    fx, fy, fz = fine.axes()
    sl = (
        axis_slice(fz, c[2] - r - 2, c[2] + r + 2),
        axis_slice(fy, c[1] - r - 2, c[1] + r + 2),
        axis_slice(fx, c[0] - r - 2, c[0] + r + 2),
    )
    from scipy.ndimage import gaussian_filter

    sub = lab[sl]
    tum = np.isin(sub, (TUMOUR, TUMOUR_CENTRE, SATELLITE))
    if sub.size:
        het = gaussian_filter(rng.standard_normal(sub.shape).astype(np.float32), (0.8, 1.2, 1.2))
        het /= het.std() + 1e-6
        amp = 0.04 + 0.30 * anatomy.shapes["het"]
        modul[sl] = np.where(tum, 1.0 + amp * het, modul[sl])
    # scanner: gain, bias field, noise
    gain = site.scale * float(rng.uniform(0.85, 1.15))
    x, y, z = grid.axes()
    gc = grid.center
    bx = float(rng.uniform(-0.15, 0.15)) * (x - gc[0]) / 150.0
    by = float(rng.uniform(-0.15, 0.15)) * (y - gc[1]) / 150.0
    bz = float(rng.uniform(-0.08, 0.08)) * (z - gc[2]) / 80.0
    br = float(rng.uniform(0.0, 0.15)) * (
        ((x - gc[0]) / 160.0)[None, :] ** 2 + ((y - gc[1]) / 160.0)[:, None] ** 2
    )
    bias = (1.0 + bz[:, None, None] + by[None, :, None] + bx[None, None, :] + br[None]).astype(
        np.float32
    )
    sigma = site.noise * site.scale

    ref = grid.reference()
    out: dict[str, np.ndarray] = {}
    for k, phase in enumerate(PHASES):
        vol = sig[k][lab] * modul
        # slice profile: box average over the thickness (3 fine slices), then point sampling
        vol[1:-1] = (vol[:-2] + vol[1:-1] + vol[2:]) * np.float32(1.0 / 3.0)
        img = sitk.GetImageFromArray(vol)
        img.SetOrigin(fine.origin)
        img.SetSpacing(fine.spacing)
        tinv = motions[phase].transform().GetInverse()
        res = sitk.GetArrayFromImage(
            sitk.Resample(img, ref, tinv, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        )
        clean = res * np.float32(gain) * bias
        n1 = rng.standard_normal(clean.shape, dtype=np.float32) * sigma
        n2 = rng.standard_normal(clean.shape, dtype=np.float32) * sigma
        out[phase] = np.sqrt((clean + n1) ** 2 + n2**2)
    return out


def simulate_patient(row: dict, seed: int, number: int) -> dict:
    """Images, masks, grids and motions of one patient (nothing written).

    ``number`` is the 1-based position in the cohort; every random stream is seeded with
    ``(seed, stream, number)``, so results do not depend on the order or process.
    """
    site = SITE_PROFILES[row["site"]]
    anatomy = PatientAnatomy(row, random_stream(seed, 100, number))
    studies = {}
    for ti, tp in enumerate(TIMEPOINTS):
        rng = random_stream(seed, 200 + ti, number)
        off = anatomy.offset(tp)
        c, r = anatomy.shapes["tumour"]
        tz = c[2] + off[2]
        nz_min = site.n_slices[0]
        half = 0.5 * (site.thickness + site.gap) * (nz_min - 1)
        zc = off[2] + float(rng.uniform(-8, 8))
        room = half - r - 15.0
        zc = float(np.clip(zc, tz - room, tz + room))
        grid = dp_grid(rng, site, zc)
        center = tuple(round(float(v), 3) for v in grid.center)
        motions = {ph: sample_motion(rng, center) for ph in PHASES[:3]}
        motions["DP"] = Motion(center, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))  # type: ignore[arg-type]
        volumes = render_study(anatomy, grid, tp, motions, site, rng)
        mask = anatomy.roi_mask(grid, tp)
        if not mask.any():
            raise RecurError(f"synthetic patient {row['patient_id']}: empty {tp} ROI (bug)")
        zi, yi, xi = np.nonzero(mask)
        x, y, z = grid.axes()
        centroid = (float(x[xi].mean()), float(y[yi].mean()), float(z[zi].mean()))
        studies[tp] = {
            "grid": grid,
            "motions": motions,
            "volumes": volumes,
            "mask": mask,
            "centroid": centroid,
        }
    return {"anatomy": anatomy, "studies": studies, "site": site}
