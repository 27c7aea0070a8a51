"""The anatomy of one synthetic patient in continuous coordinates, and its rasterisation.

Tissue labels with their T1 signal per contrast phase (:data:`SIGNAL`) and texture amplitude
(:data:`TEXTURE`); :class:`Grid`, an axis-aligned image grid; :class:`PatientAnatomy`, an
abdomen (body wall, spine, organs, vessels, liver, the index tumour with its latent image
features, further tumours, the ablation zone) built once in physical coordinates (mm) from a
patient's latent row and drawn as a label volume or an ROI mask on any grid, for the pre- or
the post-ablation time point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Tissue labels of the rasterised anatomy.
AIR, FAT, MUSCLE, VISCERA, BONE, LIVER, SPLEEN, KIDNEY, AORTA, HVEIN, PORTAL, GALL = range(12)
TUMOUR, TUMOUR_CENTRE, NECROSIS, CAPSULE, PERITUMORAL, SATELLITE = range(12, 18)
ZONE, ZONE_CORE, ZONE_RIM, OTHER_TUMOUR = range(18, 22)
N_LABELS = 22

#: T1 signal (relative to liver on PS) of each label in PS, AP, PVP, DP (extracellular agent,
#: fat-suppressed 3-D gradient echo).
SIGNAL = np.zeros((4, N_LABELS), np.float32)
for _lab, _vals in {
    FAT: (0.30, 0.30, 0.32, 0.32),
    MUSCLE: (0.70, 0.80, 0.95, 0.95),
    VISCERA: (0.55, 0.65, 0.80, 0.80),
    BONE: (0.85, 0.95, 1.05, 1.05),
    LIVER: (1.00, 1.15, 1.60, 1.50),
    SPLEEN: (0.85, 1.70, 1.55, 1.35),
    KIDNEY: (0.90, 2.30, 1.90, 1.60),
    AORTA: (0.35, 3.00, 1.80, 1.40),
    HVEIN: (0.35, 0.50, 1.90, 1.55),
    PORTAL: (0.35, 1.10, 2.20, 1.60),
    GALL: (0.20, 0.20, 0.20, 0.20),
    TUMOUR: (0.75, 2.00, 1.15, 1.00),  # APHE then washout
    TUMOUR_CENTRE: (0.75, 2.00, 1.15, 1.00),  # AP set per patient (rim APHE: 0.95)
    NECROSIS: (0.45, 0.45, 0.50, 0.55),
    CAPSULE: (0.70, 0.90, 1.90, 2.00),  # enhancing capsule on PVP/DP
    PERITUMORAL: (1.00, 1.75, 1.60, 1.50),  # arterial peritumoral enhancement
    SATELLITE: (0.75, 2.00, 1.15, 1.00),
    ZONE: (1.25, 1.20, 1.20, 1.20),  # coagulation necrosis: T1-bright, non-enhancing
    ZONE_CORE: (0.80, 0.80, 0.85, 0.85),
    ZONE_RIM: (0.95, 1.40, 2.00, 2.00),  # thin enhancing rim (reactive hyperaemia)
    OTHER_TUMOUR: (0.75, 1.90, 1.15, 1.00),
}.items():
    SIGNAL[:, _lab] = _vals

#: Amplitude of the smooth texture field per label (liver amplitude grows with cirrhosis).
TEXTURE = np.full(N_LABELS, 0.02, np.float32)
TEXTURE[[LIVER, SPLEEN, ZONE, ZONE_CORE]] = (0.04, 0.06, 0.15, 0.2)


@dataclass(frozen=True)
class Grid:
    """An axis-aligned image grid (identity direction): ``size`` is (nx, ny, nz)."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    size: tuple[int, int, int]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Physical x, y, z coordinates of the voxel centres along each axis."""
        return tuple(  # type: ignore[return-value]
            self.origin[i] + self.spacing[i] * np.arange(self.size[i]) for i in range(3)
        )

    def reference(self):
        """An empty SimpleITK image with this geometry (for ``sitk.Resample``)."""
        import SimpleITK as sitk

        img = sitk.Image([int(s) for s in self.size], sitk.sitkUInt8)
        img.SetOrigin([float(v) for v in self.origin])
        img.SetSpacing([float(v) for v in self.spacing])
        return img

    @property
    def center(self) -> np.ndarray:
        return np.array(self.origin) + np.array(self.spacing) * (np.array(self.size) - 1) / 2


def axis_slice(axis: np.ndarray, lo: float, hi: float) -> slice:
    """The index slice of the sorted coordinates ``axis`` that lie within ``[lo, hi]``."""
    i0 = int(np.searchsorted(axis, lo, side="left"))
    i1 = int(np.searchsorted(axis, hi, side="right"))
    return slice(max(i0, 0), max(min(i1, len(axis)), 0))


@dataclass
class _Raster:
    """A label volume (z, y, x) with its physical axes, and painting helpers."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    lab: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lab = np.zeros((len(self.z), len(self.y), len(self.x)), np.uint8)

    def block(self, center: np.ndarray, half: float):
        """Index slices and broadcastable coordinates (relative to ``center``) of a box."""
        sl = (
            axis_slice(self.z, center[2] - half, center[2] + half),
            axis_slice(self.y, center[1] - half, center[1] + half),
            axis_slice(self.x, center[0] - half, center[0] + half),
        )
        zz = (self.z[sl[0]] - center[2])[:, None, None]
        yy = (self.y[sl[1]] - center[1])[None, :, None]
        xx = (self.x[sl[2]] - center[0])[None, None, :]
        return sl, xx, yy, zz

    def paint(self, sl, inside: np.ndarray, value: int, where: Sequence[int] | None = None):
        sub = self.lab[sl]
        if sub.size == 0:
            return
        m = np.broadcast_to(inside, sub.shape)
        if where is not None:
            m = m & np.isin(sub, where)
        sub[m] = value

    def ellipsoid(self, c, axes, value, angle=0.0, where=None):
        c = np.asarray(c, float)
        sl, xx, yy, zz = self.block(c, float(max(axes)))
        ca, sa = math.cos(angle), math.sin(angle)
        u, v = ca * xx + sa * yy, -sa * xx + ca * yy
        q = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (zz / axes[2]) ** 2
        self.paint(sl, q <= 1.0, value, where)

    def cylinder(self, cx, cy, ax, ay, value, where=None):
        """An elliptic cylinder along z (through the whole volume)."""
        inside = ((self.x[None, :] - cx) / ax) ** 2 + ((self.y[:, None] - cy) / ay) ** 2 <= 1
        m = np.broadcast_to(inside[None], self.lab.shape)
        if where is not None:
            m = m & np.isin(self.lab, where)
        self.lab[m] = value

    def tube(self, p0, p1, radius, value, where=None):
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        c = 0.5 * (p0 + p1)
        half = 0.5 * float(np.max(np.abs(p1 - p0))) + radius
        sl, xx, yy, zz = self.block(c, half)
        d = p1 - p0
        rx, ry, rz = xx - (p0[0] - c[0]), yy - (p0[1] - c[1]), zz - (p0[2] - c[2])
        t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / float(d @ d), 0.0, 1.0)
        dist2 = (rx - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rz - t * d[2]) ** 2
        self.paint(sl, dist2 <= radius**2, value, where)


@dataclass
class PatientAnatomy:
    """One patient's abdomen in continuous physical coordinates (mm, LPS, body frame).

    Built from the patient's latent row (tumour size and number, image features, zone
    geometry) and a per-patient random stream; :meth:`rasterise` draws it on any axis-aligned
    grid for the pre- or post-ablation time point.
    """

    row: dict
    rng: np.random.Generator
    shapes: dict = field(init=False)

    def __post_init__(self) -> None:
        rng, row = self.rng, self.row
        u = rng.uniform
        s: dict = {}
        s["body"] = (u(128, 140), u(92, 104), u(-4, 6))  # semi-axes x, y and centre y
        bx, by, bcy = s["body"]
        s["fat"] = u(10, 22)
        s["spine"] = (u(-3, 3), bcy + by - s["fat"] - u(38, 46), u(15, 18))
        sx_, sy_, _ = s["spine"]
        s["aorta"] = (sx_ + u(14, 20), sy_ - u(24, 28), u(9, 12))
        s["ivc"] = (sx_ - u(20, 26), sy_ - u(28, 34), u(9, 12))
        s["liver_r"] = (
            np.array([u(-62, -52), u(-10, 0), u(-4, 4)]),
            (u(72, 80), u(68, 76), u(66, 74)),
        )
        s["liver_l"] = (
            np.array([u(20, 35), u(-45, -35), u(8, 18)]),
            (u(50, 62), u(28, 36), u(35, 45)),
        )
        s["spleen"] = (
            np.array([u(88, 98), sy_ - u(20, 30), u(0, 15)]),
            (u(30, 36), u(45, 55), u(50, 60)),
        )
        s["kidneys"] = [
            (
                np.array([side * u(58, 66), sy_ - u(5, 10), u(-75, -60)]),
                (u(26, 30), u(28, 32), u(48, 54)),
            )
            for side in (-1, 1)
        ]
        s["gall"] = (
            np.array([u(-45, -30), u(-50, -40), u(-40, -25)]),
            (u(12, 16), u(12, 16), u(25, 32)),
        )
        ivc_top = np.array([s["ivc"][0], s["ivc"][1], 60.0])
        s["hveins"] = [
            (ivc_top, ivc_top + np.array([dx, dy, -u(25, 40)]), u(3.5, 5.0))
            for dx, dy in (
                (-u(70, 85), -u(10, 25)),
                (-u(25, 40), -u(45, 60)),
                (u(15, 30), -u(40, 55)),
            )
        ]
        hilum = np.array([u(-25, -15), u(-5, 5), u(-25, -15)])
        s["portal"] = [
            (hilum + np.array([u(15, 25), u(10, 20), -u(35, 45)]), hilum, u(6, 7.5)),
            (hilum, hilum + np.array([-u(45, 55), u(-5, 5), u(15, 25)]), u(5, 6.5)),
            (hilum, hilum + np.array([u(30, 40), -u(25, 35), u(10, 20)]), u(4, 5.5)),
        ]
        # index tumour: inside the right lobe, away from its edge
        lc, la = s["liver_r"]
        r = float(row["tumor_size_cm"]) * 5.0
        bx, by, bcy = s["body"]
        inner_x, inner_y = bx - s["fat"] - 9 - r - 12, by - s["fat"] - 12 - r - 12
        for _try in range(1000):  # inside the right lobe, away from the abdominal wall
            p = rng.uniform(-1, 1, 3)
            c = lc + p * np.array([la[0] - r - 22, la[1] - r - 22, min(la[2] - r - 22, 28.0)])
            wall = (c[0] / inner_x) ** 2 + ((c[1] - bcy + 4) / inner_y) ** 2
            if p @ p <= 1 and wall <= 1:
                break
        s["tumour"] = (c, r)
        # further tumours (tumour_number - 1), smaller, elsewhere in the liver
        others = []
        for _ in range(int(row["tumor_number"]) - 1):
            ro = u(0.35, 0.9) * r
            for _try in range(200):
                lobe_c, lobe_a = s["liver_r"] if rng.random() < 0.7 else s["liver_l"]
                p = rng.uniform(-0.55, 0.55, 3)
                co = lobe_c + p * np.array(lobe_a)
                ok = np.linalg.norm(co - c) > r + ro + 25 and all(
                    np.linalg.norm(co - o) > ro + orr + 10 for o, orr in others
                )
                if ok:
                    break
            others.append((co, ro))
        s["others"] = others
        # latent pre-image features
        s["rim"] = bool(row["rim_aphe"])
        s["capsule"] = bool(row["capsule"])
        s["het"] = float(row["heterogeneity"])
        ang = u(0, 2 * np.pi)
        s["satellite"] = (
            (
                c
                + np.array(
                    [(r + u(6, 11)) * math.cos(ang), (r + u(6, 11)) * math.sin(ang), u(-2, 2)]
                ),
                u(2.5, 4.0),
            )
            if row["satellite"]
            else None
        )
        w = rng.normal(size=3)
        w[2] *= 0.3
        s["peri"] = w / np.linalg.norm(w) if row["peritumoral"] else None
        s["necrosis"] = (
            (c + rng.normal(0, 0.15 * r, 3), r * (0.25 + 0.45 * (s["het"] - 0.35)))
            if s["het"] > 0.35
            else None
        )
        # ablation zone (post): geometry from the latent row
        s["zone"] = (
            c + np.array([float(row["zone_dx"]), float(row["zone_dy"]), 0.0]),
            (float(row["zone_a"]), float(row["zone_b"]), float(row["zone_c"])),
            float(row["zone_angle"]),
        )
        s["post_shift"] = np.array([u(-4, 4), u(-4, 4), u(-12, 12)])  # table position
        s["tumour_ap"] = u(1.75, 2.3)
        self.shapes = s

    def offset(self, timepoint: str) -> np.ndarray:
        """Where the body frame origin lies in scanner coordinates at a time point."""
        return self.shapes["post_shift"] if timepoint == "post" else np.zeros(3)

    def rasterise(self, grid: Grid, timepoint: str) -> np.ndarray:
        """Label volume (z, y, x) of the anatomy on ``grid`` (scanner coordinates)."""
        s = self.shapes
        off = self.offset(timepoint)
        x, y, z = grid.axes()
        R = _Raster(x - off[0], y - off[1], z - off[2])
        bx, by, bcy = s["body"]
        R.cylinder(0.0, bcy, bx, by, FAT)
        f = s["fat"]
        R.cylinder(0.0, bcy, bx - f, by - f, MUSCLE)
        R.cylinder(0.0, bcy - 4, bx - f - 9, by - f - 12, VISCERA)
        sx_, sy_, sr = s["spine"]
        for side in (-1, 1):
            R.cylinder(sx_ + side * 30, sy_ + 8, 22, 18, MUSCLE)
        R.cylinder(sx_, sy_, sr, sr * 0.9, BONE)
        for kc, ka in s["kidneys"]:
            R.ellipsoid(kc, ka, KIDNEY)
        R.ellipsoid(*s["spleen"], SPLEEN)
        R.ellipsoid(*s["liver_r"], LIVER, where=(VISCERA, KIDNEY))
        R.ellipsoid(*s["liver_l"], LIVER, where=(VISCERA,))
        R.ellipsoid(*s["gall"], GALL)
        R.cylinder(*s["aorta"][:2], s["aorta"][2], s["aorta"][2], AORTA)
        R.cylinder(*s["ivc"][:2], s["ivc"][2], s["ivc"][2] * 1.2, HVEIN)
        for p0, p1, rad in s["hveins"]:
            R.tube(p0, p1, rad, HVEIN, where=(LIVER,))
        for p0, p1, rad in s["portal"]:
            R.tube(p0, p1, rad, PORTAL, where=(LIVER, VISCERA))
        # tumours
        c, r = s["tumour"]
        sl, xx, yy, zz = R.block(c, r + 8.0)
        d = np.sqrt(xx**2 + yy**2 + zz**2)
        if s["peri"] is not None:
            w = s["peri"]
            cosang = (xx * w[0] + yy * w[1] + zz * w[2]) / np.maximum(d, 1e-6)
            R.paint(sl, (d <= r + 6.0) & (cosang > 0.35), PERITUMORAL, where=(LIVER,))
        R.paint(sl, d <= r, TUMOUR)
        if s["rim"]:
            R.paint(sl, d <= r - 3.0, TUMOUR_CENTRE)
        if s["capsule"]:
            R.paint(sl, (d <= r) & (d > r - 1.6), CAPSULE)
        if s["necrosis"] is not None:
            nc, nr = s["necrosis"]
            R.ellipsoid(nc, (nr, nr * 0.8, nr * 0.9), NECROSIS, where=(TUMOUR, TUMOUR_CENTRE))
        if s["satellite"] is not None:
            R.ellipsoid(s["satellite"][0], (s["satellite"][1],) * 3, SATELLITE)
        for co, ro in s["others"]:
            R.ellipsoid(co, (ro, ro, ro), OTHER_TUMOUR)
        if timepoint == "post":
            # other tumours: treated with an adequate (5 mm) margin
            for co, ro in s["others"]:
                R.ellipsoid(co, (ro + 7.5,) * 3, ZONE_RIM, where=(LIVER, PERITUMORAL))
                R.ellipsoid(co, (ro + 5.0,) * 3, ZONE)
            zc, za, zang = s["zone"]
            R.ellipsoid(
                zc,
                tuple(a + 2.5 for a in za),
                ZONE_RIM,
                angle=zang,
                where=(LIVER, PERITUMORAL, HVEIN, PORTAL),
            )
            R.ellipsoid(zc, za, ZONE, angle=zang)
            R.ellipsoid(zc, tuple(0.4 * a for a in za), ZONE_CORE, angle=zang)
        return R.lab

    def roi_mask(self, grid: Grid, timepoint: str) -> np.ndarray:
        """The ROI on ``grid`` (z, y, x) uint8: index tumour (pre) or ablation zone (post)."""
        s = self.shapes
        off = self.offset(timepoint)
        x, y, z = grid.axes()
        R = _Raster(x - off[0], y - off[1], z - off[2])
        if timepoint == "pre":
            c, r = s["tumour"]
            R.ellipsoid(c, (r, r, r), 1)
        else:
            zc, za, zang = s["zone"]
            R.ellipsoid(zc, za, 1, angle=zang)
        return R.lab

    def signal_table(self) -> np.ndarray:
        """Per-patient copy of :data:`SIGNAL` (tumour arterial enhancement, rim pattern)."""
        sig = SIGNAL.copy()
        ap = self.shapes["tumour_ap"]
        sig[1, TUMOUR] = ap
        sig[1, SATELLITE] = ap
        sig[1, TUMOUR_CENTRE] = 0.95 if self.shapes["rim"] else ap
        return sig

    def texture_table(self) -> np.ndarray:
        tex = TEXTURE.copy()
        tex[LIVER] += 0.03 * float(self.row.get("cirrhosis", 0))
        return tex
