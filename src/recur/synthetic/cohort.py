"""The embedded synthetic cohort: real DICOM files, ROI masks and a clinical table.

The generator has three layers, each usable alone:

1. **Latent model** (:func:`sample_latent`): clinical variables resembling the paper's
   Table 1, latent image features of the index tumour (pre-ablation), the geometry of the
   ablation zone and its true minimal ablative margin (post-ablation), the risk model
   ``logit(p) = b0 + clinical + pre_image + post_image`` and the outcome (ER, RFS). This is
   pure numpy/pandas and fast, so the achievable AUC ceilings can be computed on thousands of
   patients without writing any image (:func:`outcome_ceilings`).
2. **Images** (:class:`PatientAnatomy`, :func:`render_study`): per patient, an abdominal
   anatomy built once in continuous (physical, mm) coordinates and rasterised to a fine label
   volume per time point; each contrast phase maps labels to phase-specific T1 intensities, is
   moved by a random rigid motion (the phase is misaligned to DP) and sampled on the DICOM grid
   with a slice profile, bias field and Rician noise.
3. **Files** (:func:`write_cohort`): real MR DICOM series (one file per slice, shuffled names,
   fake identifying values), NIfTI ROI masks in the DP geometry, the contract tables and
   ``truth.csv``.

See ``docs/methods/synthetic.md`` for the equations, coefficients and ``truth.csv`` columns. Nothing
outside this module and the benchmarks may read the generator's truth.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recur.cohort import contract
from recur.errors import RecurError

log = logging.getLogger(__name__)

#: Site names of the synthetic cohort: one training site and external test sites.
TRAIN_SITE = "siteA"
TEST_SITES: tuple[str, ...] = ("siteB", "siteC", "siteD", "siteE", "siteF")

PHASES: tuple[str, ...] = ("PS", "AP", "PVP", "DP")
TIMEPOINTS: tuple[str, ...] = ("pre", "post")
ER_HORIZON_MONTHS = 24.0


def planned_patients(n_train: int, n_test: list[int] | tuple[int, ...]) -> pd.DataFrame:
    """The patients the generator will write, known before it runs (for the DAG).

    Returns a DataFrame with ``patient_id, site, cohort`` in generation order.
    """
    if n_train < 1 or any(n < 1 for n in n_test):
        raise ValueError("every site needs at least one patient")
    if len(n_test) > len(TEST_SITES):
        raise ValueError(f"at most {len(TEST_SITES)} external test sites")
    rows = [(TRAIN_SITE, "train")] * n_train
    for site, n in zip(TEST_SITES, n_test, strict=False):
        rows += [(site, "test")] * n
    return pd.DataFrame(
        {
            "patient_id": [f"P{i + 1:04d}" for i in range(len(rows))],
            "site": [r[0] for r in rows],
            "cohort": [r[1] for r in rows],
        }
    )


# =========================================================================== sites
@dataclass(frozen=True)
class SiteProfile:
    """Scanner, protocol, naming style and patient mix of one synthetic hospital."""

    name: str
    manufacturer: str
    model: str
    field_strength: float
    sequence: str
    repetition_time: float
    echo_time: float
    flip_angle: float
    fov_mm: tuple[float, ...]  # in-plane FOV choices (square pixels: spacing = fov / columns)
    matrix: tuple[int, int]  # (rows, columns)
    thickness: float
    gap: float
    n_slices: tuple[int, int]  # inclusive range
    scale: float  # signal of liver on PS before rescale
    noise: float  # Rician sigma as a fraction of ``scale``
    rescale: tuple[float, float]  # (slope, intercept)
    styles: tuple[tuple[str, str, str, str], ...]  # SeriesDescription per phase (PS..DP)
    name_style: str  # "hex.dcm" | "IM_hex" | "hex"
    compress_fraction: float  # fraction of series written RLE Lossless
    institution: str
    # patient mix (Table 1-like)
    age: tuple[float, float] = (52.7, 10.7)
    p_male: float = 0.87
    p_hbv: float = 0.96
    p_comorbidity: float = 0.24
    p_cirrhosis: float = 0.57
    size_median_cm: float = 2.0
    afp_median: float = 21.0
    tp: tuple[float, float] = (68.0, 7.0)
    alt_median: float = 31.0
    ast_median: float = 31.0


SITE_PROFILES: dict[str, SiteProfile] = {
    "siteA": SiteProfile(
        "siteA",
        "SIEMENS",
        "MAGNETOM Skyra",
        3.0,
        "t1_vibe_fs_tra",
        3.92,
        1.29,
        9.0,
        fov_mm=(280.0, 288.0, 300.0),
        matrix=(160, 160),
        thickness=5.0,
        gap=0.0,
        n_slices=(22, 26),
        scale=420.0,
        noise=0.035,
        rescale=(1.0, 0.0),
        styles=(
            ("T1 VIBE pre", "ART", "PV 70s", "DELAY 3min"),
            (
                "t1_vibe_fs_tra_pre",
                "t1_vibe_fs_tra_art",
                "t1_vibe_fs_tra_pv",
                "t1_vibe_fs_tra_3min",
            ),
        ),
        name_style="hex.dcm",
        compress_fraction=0.0,
        institution="FAKE Tumour Hospital Alpha (synthetic)",
    ),
    "siteB": SiteProfile(
        "siteB",
        "GE MEDICAL SYSTEMS",
        "Signa HDxt",
        1.5,
        "LAVA",
        4.18,
        2.01,
        12.0,
        fov_mm=(300.0, 320.0),
        matrix=(176, 192),
        thickness=4.0,
        gap=0.0,
        n_slices=(28, 32),
        scale=260.0,
        noise=0.05,
        rescale=(1.0, -100.0),
        styles=(
            ("LAVA Phase 1", "LAVA Phase 2", "LAVA Phase 3", "LAVA Phase 4"),
            (
                "Ax LAVA-Flex pre",
                "Ax LAVA-Flex arterial",
                "Ax LAVA-Flex portal",
                "Ax LAVA-Flex late",
            ),
        ),
        name_style="IM_hex",
        compress_fraction=0.0,
        institution="FAKE Cancer Centre Beta (synthetic)",
        age=(54.1, 11.2),
        p_male=0.80,
        p_hbv=0.72,
        size_median_cm=2.1,
        afp_median=14.0,
        tp=(72.0, 8.0),
        alt_median=36.0,
        ast_median=33.0,
    ),
    "siteC": SiteProfile(
        "siteC",
        "Philips",
        "Ingenia",
        3.0,
        "eTHRIVE",
        3.1,
        1.48,
        10.0,
        fov_mm=(300.0, 314.0),
        matrix=(192, 208),
        thickness=4.5,
        gap=0.5,
        n_slices=(26, 30),
        scale=1500.0,
        noise=0.03,
        rescale=(2.1465, 0.0),
        styles=(
            ("eTHRIVE plain", "eTHRIVE dyn art", "eTHRIVE dyn portal", "eTHRIVE delay"),
            (
                "WIP T1 dyn native",
                "WIP T1 dyn early arterial",
                "WIP T1 dyn venous",
                "WIP T1 dyn 3 min",
            ),
        ),
        name_style="hex",
        compress_fraction=0.5,
        institution="FAKE People's Hospital Gamma (synthetic)",
        age=(58.4, 10.0),
        p_male=0.73,
        p_hbv=0.65,
        size_median_cm=2.2,
        afp_median=15.0,
        tp=(74.0, 8.0),
        alt_median=38.0,
        ast_median=34.0,
    ),
    "siteD": SiteProfile(
        "siteD",
        "TOSHIBA",
        "Vantage Titan",
        1.5,
        "T1 FFE3D",
        4.5,
        2.2,
        15.0,
        fov_mm=(300.0,),
        matrix=(160, 192),
        thickness=6.0,
        gap=0.0,
        n_slices=(24, 26),
        scale=700.0,
        noise=0.045,
        rescale=(1.0, 0.0),
        styles=(("Plain T1", "Arterial phase", "Portal venous phase", "Equilibrium phase"),),
        name_style="IM_hex",
        compress_fraction=0.0,
        institution="FAKE Municipal Hospital Delta (synthetic)",
        age=(55.0, 11.0),
        p_hbv=0.8,
    ),
    "siteE": SiteProfile(
        "siteE",
        "SIEMENS",
        "MAGNETOM Aera",
        1.5,
        "t1_vibe_dixon",
        6.8,
        2.39,
        10.0,
        fov_mm=(320.0,),
        matrix=(168, 192),
        thickness=4.0,
        gap=0.0,
        n_slices=(32, 36),
        scale=350.0,
        noise=0.05,
        rescale=(1.0, 0.0),
        styles=(
            (
                "VIBE Dixon W native",
                "VIBE Dixon W art",
                "VIBE Dixon W pv",
                "VIBE Dixon W equilibrium",
            ),
        ),
        name_style="hex.dcm",
        compress_fraction=1.0,
        institution="FAKE Regional Hospital Epsilon (synthetic)",
    ),
    "siteF": SiteProfile(
        "siteF",
        "UIH",
        "uMR 780",
        3.0,
        "T1 quick3D",
        3.5,
        1.6,
        10.0,
        fov_mm=(300.0,),
        matrix=(176, 176),
        thickness=5.0,
        gap=1.0,
        n_slices=(24, 26),
        scale=900.0,
        noise=0.04,
        rescale=(1.0, 0.0),
        styles=(("q3D pre", "q3D ap", "q3D pvp", "q3D dp"),),
        name_style="hex",
        compress_fraction=0.0,
        institution="FAKE Provincial Hospital Zeta (synthetic)",
    ),
}


# =========================================================================== latent model
#: Coefficients of the latent risk model (see docs/methods/synthetic.md).
RISK: dict[str, float] = {
    "b0": -4.07,
    # clinical component (standardised predictors)
    "size": 0.55,  # per SD of log tumour size (SD 0.41 around log 2 cm)
    "multiple": 0.9,  # tumour_number > 1
    "afp": 0.5,  # per SD of log AFP (SD 2.4 around log 20 ng/mL)
    "hbv": 0.7,
    "tp": 0.25,  # per 7 g/L above 68 g/L
    # pre-image component (latent features visible on the pre-ablation images)
    "rim_aphe": 1.15,
    "no_capsule": 0.9,
    "heterogeneity": 2.1,  # per unit of the 0..1 score, centred at 0.5
    "satellite": 1.55,
    "peritumoral": 1.05,
    # post-image component: minimal ablative margin (mm), clipped to [-4, 10]
    "margin": -0.36,
    "margin_ref": 4.0,
}

_SIZE_LOG_SD = 0.41
_AFP_LOG_SD = 2.4


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent random stream for ``seed`` and integer ``keys``."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def sample_clinical(rng: np.random.Generator, n: int, site: SiteProfile) -> pd.DataFrame:
    """Clinical variables of ``n`` patients of one site (Table 1-like distributions).

    Returns the true values (no missing cells); :func:`blank_cells` removes ~2% later.
    """
    age = np.clip(rng.normal(site.age[0], site.age[1], n), 22, 88).round()
    sex = np.where(rng.random(n) < site.p_male, "M", "F")
    size = np.exp(rng.normal(math.log(site.size_median_cm), _SIZE_LOG_SD, n)).clip(0.8, 5.0)
    multiple = rng.random(n) < 0.20
    number = np.where(multiple, np.where(rng.random(n) < 0.25, 3, 2), 1)
    hbv = (rng.random(n) < site.p_hbv).astype(int)
    afp = np.exp(rng.normal(math.log(site.afp_median), _AFP_LOG_SD, n)).clip(0.6, 60000.0)
    tp = rng.normal(site.tp[0], site.tp[1], n).clip(45.0, 100.0)
    alb = rng.normal(41.0, 4.5, n).clip(25.0, 55.0)
    tbil = np.exp(rng.normal(math.log(12.8), 0.45, n)).clip(3.0, 60.0)
    albi = 0.66 * np.log10(tbil) - 0.085 * alb
    ast = np.exp(rng.normal(math.log(site.ast_median), 0.45, n)).clip(8.0, 400.0)
    alt = np.exp(rng.normal(math.log(site.alt_median), 0.55, n)).clip(6.0, 500.0)
    comorb = (rng.random(n) < site.p_comorbidity).astype(int)
    cirr = (rng.random(n) < site.p_cirrhosis).astype(int)
    return pd.DataFrame(
        {
            "tumor_size_cm": size.round(1),
            "tumor_number": number,
            "hbv": hbv,
            "tp_g_l": tp.round(1),
            "afp_ng_ml": afp.round(1),
            "age": age.astype(int),
            "sex": sex,
            "comorbidity": comorb,
            "albi": albi.round(2),
            "cirrhosis": cirr,
            "alb_g_l": alb.round(1),
            "ast_u_l": ast.round(0),
            "alt_u_l": alt.round(0),
            "tbil_umol_l": tbil.round(1),
        }
    )


def sample_pre_image(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Latent image features of the index tumour, visible on the pre-ablation images only.

    ``rim_aphe`` rim-like (peripheral) arterial enhancement instead of solid; ``capsule``
    enhancing capsule on PVP/DP; ``heterogeneity`` 0..1 (texture amplitude and necrotic core);
    ``satellite`` a 5-8 mm nodule beside the tumour in the same slices; ``peritumoral`` a
    wedge of arterial peritumoral enhancement.
    """
    return pd.DataFrame(
        {
            "rim_aphe": (rng.random(n) < 0.30).astype(int),
            "capsule": (rng.random(n) < 0.60).astype(int),
            "heterogeneity": rng.beta(1.6, 1.6, n).round(3),
            "satellite": (rng.random(n) < 0.15).astype(int),
            "peritumoral": (rng.random(n) < 0.25).astype(int),
        }
    )


def ellipse_distance(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from interior points ``(px, py)`` to the ellipse ``x²/a² + y²/b² = 1``.

    Vectorised robust bisection on the Lagrange parameter (Eberly, "Distance from a point to
    an ellipse"). Points must lie inside the ellipse; coordinates are in the ellipse frame.
    """
    px, py = np.abs(np.asarray(px, float)), np.abs(np.asarray(py, float))
    a = np.broadcast_to(np.asarray(a, float), px.shape)
    b = np.broadcast_to(np.asarray(b, float), px.shape)
    swap = a < b  # work in a frame where e0 >= e1 (e0 along y0)
    e0, e1 = np.where(swap, b, a), np.where(swap, a, b)
    y0, y1 = np.where(swap, py, px), np.where(swap, px, py)
    # general case (y0 > 0, y1 > 0): root of F(t) in (-e1^2 + e1*y1, 0) by bisection
    y0s, y1s = np.maximum(y0, 1e-12), np.maximum(y1, 1e-12)
    lo = -(e1**2) + e1 * y1s  # F(lo) >= 0
    hi = np.zeros_like(lo)  # F(0) < 0 inside
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        f = (e0 * y0s / (mid + e0**2)) ** 2 + (e1 * y1s / (mid + e1**2)) ** 2 - 1.0
        lo, hi = np.where(f > 0, mid, lo), np.where(f > 0, hi, mid)
    t = 0.5 * (lo + hi)
    general = np.hypot(e0**2 * y0s / (t + e0**2) - y0s, e1**2 * y1s / (t + e1**2) - y1s)
    # on the minor axis (y0 = 0): the minor vertex
    on_minor = e1 - y1
    # on the major axis (y1 = 0): off-axis foot point when y0 < (e0^2 - e1^2) / e0
    inner = y0 < (e0**2 - e1**2) / e0
    x0 = np.where(inner, e0**2 * y0 / np.where(inner, e0**2 - e1**2, 1.0), 0.0)
    foot = np.hypot(x0 - y0, e1 * np.sqrt(np.clip(1 - (x0 / e0) ** 2, 0, 1)))
    on_major = np.where(inner, foot, e0 - y0)
    return np.where(y1 == 0, on_major, np.where(y0 == 0, on_minor, general))


def sample_post_image(rng: np.random.Generator, radius_mm: np.ndarray) -> pd.DataFrame:
    """Ablation-zone geometry around an index tumour of radius ``radius_mm`` and its margin.

    The zone is an ellipsoid with its long axis cranio-caudal (needle track), in-plane
    semi-axes ``zone_a <= zone_b`` rotated by ``zone_angle`` about z, centred at an in-plane
    offset ``(zone_dx, zone_dy)`` from the tumour centre (same z). The tumour is a sphere, so the
    true minimal ablative margin is the distance from the tumour centre to the zone boundary
    minus the radius (negative: part of the tumour lies outside the zone), and it lies in the
    tumour's central axial plane.
    """
    r = np.asarray(radius_mm, float)
    n = len(r)
    target = rng.normal(5.5, 3.6, n).clip(-3.5, 12.0)
    zone_a = np.maximum(r + target, 0.7 * r)
    zone_b = zone_a + rng.uniform(0.0, 4.0, n)
    zone_c = zone_b + rng.uniform(3.0, 10.0, n)
    angle = rng.uniform(0.0, np.pi, n)
    off = rng.uniform(0.0, 1.0, n) * np.minimum(4.5, 0.45 * zone_a)
    off_dir = rng.uniform(0.0, 2 * np.pi, n)
    dx, dy = off * np.cos(off_dir), off * np.sin(off_dir)
    # tumour centre in the zone frame: c_t - c_z = -(dx, dy), rotated by -angle
    ca, sa = np.cos(angle), np.sin(angle)
    u = ca * (-dx) + sa * (-dy)
    v = -sa * (-dx) + ca * (-dy)
    margin = ellipse_distance(u, v, zone_a, zone_b) - r
    return pd.DataFrame(
        {
            "zone_a": zone_a.round(3),
            "zone_b": zone_b.round(3),
            "zone_c": zone_c.round(3),
            "zone_angle": angle.round(5),
            "zone_dx": dx.round(3),
            "zone_dy": dy.round(3),
            "margin_mm": margin.round(3),
        }
    )


def risk_components(clinical: pd.DataFrame, pre: pd.DataFrame, post: pd.DataFrame) -> pd.DataFrame:
    """The latent risk model: components, logit and probability of ER (true values)."""
    c = RISK
    z_size = (np.log(clinical["tumor_size_cm"].to_numpy(float)) - math.log(2.0)) / _SIZE_LOG_SD
    z_afp = (np.log(clinical["afp_ng_ml"].to_numpy(float)) - math.log(20.0)) / _AFP_LOG_SD
    z_tp = (clinical["tp_g_l"].to_numpy(float) - 68.0) / 7.0
    clin = (
        c["size"] * z_size
        + c["multiple"] * (clinical["tumor_number"].to_numpy() > 1)
        + c["afp"] * z_afp
        + c["hbv"] * clinical["hbv"].to_numpy()
        + c["tp"] * z_tp
    )
    pre_c = (
        c["rim_aphe"] * pre["rim_aphe"].to_numpy()
        + c["no_capsule"] * (1 - pre["capsule"].to_numpy())
        + c["heterogeneity"] * (pre["heterogeneity"].to_numpy() - 0.5)
        + c["satellite"] * pre["satellite"].to_numpy()
        + c["peritumoral"] * pre["peritumoral"].to_numpy()
    )
    m = np.clip(post["margin_mm"].to_numpy(float), -4.0, 10.0)
    post_c = c["margin"] * (m - c["margin_ref"])
    logit = c["b0"] + clin + pre_c + post_c
    return pd.DataFrame(
        {
            "clinical_component": clin,
            "pre_image_component": pre_c,
            "post_image_component": post_c,
            "logit": logit,
            "p": 1.0 / (1.0 + np.exp(-logit)),
        },
        index=clinical.index,
    )


#: The paper's share of patients with ER per cohort (Table 1): 59 of 254 training patients,
#: 7 of 35 external test patients. The default of ``synthetic.er_share``.
PAPER_ER_SHARE: dict[str, float] = {"train": round(59 / 254, 4), "test": round(7 / 35, 4)}


def conditional_bernoulli(rng: np.random.Generator, p: np.ndarray, k: int) -> np.ndarray:
    """Independent ``X_i ~ Bernoulli(p_i)`` drawn conditionally on ``sum(X) == k`` (exact).

    Sequential sampling: ``P(X_i = 1 | X_<i, sum = k)`` = ``p_i q_{i+1}(r - 1) / q_i(r)``
    with ``q_i(r) = P(sum_{j >= i} X_j = r)`` (Poisson-binomial recursion, each row
    rescaled, which the ratio cancels) and ``r`` the events still to place. Each patient
    keeps the risk ordering of ``p``; only the cohort's event count is fixed. One
    ``rng.random(n)`` draw, so the result is deterministic for the generator's state.
    """
    p = np.asarray(p, dtype=float)
    n = len(p)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError("p must be a 1-D array of probabilities")
    if not 0 <= k <= n:
        raise ValueError(f"cannot place {k} events among {n} patients")
    q = np.zeros((n + 1, k + 1))
    q[n, 0] = 1.0
    for i in range(n - 1, -1, -1):
        q[i] = (1 - p[i]) * q[i + 1]
        q[i, 1:] += p[i] * q[i + 1, :-1]
        top = q[i].max()
        if top > 0:
            q[i] /= top
    if q[0, k] <= 0:
        raise ValueError(f"{k} events are impossible with these probabilities")
    u = rng.random(n)
    x = np.zeros(n, dtype=int)
    r = k
    for i in range(n):
        if r == 0:
            break
        w1 = p[i] * q[i + 1, r - 1]
        w0 = (1 - p[i]) * q[i + 1, r]
        x[i] = int(u[i] * (w0 + w1) < w1)
        r -= x[i]
    return x


def sample_outcome(
    rng: np.random.Generator, p: np.ndarray, er: np.ndarray | None = None
) -> pd.DataFrame:
    """ER ~ Bernoulli(p) (or the given ``er``) and a consistent RFS (months, event).

    ER = 1: recurrence at 1-24 months. ER = 0: follow-up of 28-100 months, with a late
    recurrence (after 24 months) in 30% of them, otherwise censored at the end of follow-up.
    ``er`` (drawn elsewhere, e.g. by :func:`conditional_bernoulli`) replaces the Bernoulli
    draw; the random stream is consumed the same way either way.
    """
    n = len(p)
    u = rng.random(n)
    er = (u < p).astype(int) if er is None else np.asarray(er, dtype=int)
    t_early = (ER_HORIZON_MONTHS * rng.beta(1.4, 1.6, n)).clip(1.0, ER_HORIZON_MONTHS)
    follow = rng.uniform(28.0, 100.0, n)
    late = rng.random(n) < 0.30
    t_late = 24.5 + rng.random(n) * (follow - 24.5)
    t = np.where(er == 1, t_early, np.where(late, t_late, follow))
    event = np.where(er == 1, 1, late.astype(int))
    return pd.DataFrame({"er": er, "rfs_months": np.floor(t * 10) / 10, "rfs_event": event})


def _force_both_classes(er: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Tiny cohorts: flip the most likely patient so that both outcome classes occur."""
    er = er.copy()
    if len(er) >= 2 and er.min() == er.max():
        i = int(np.argmax(p)) if er[0] == 0 else int(np.argmin(p))
        er[i] = 1 - er[i]
    return er


def blank_cells(
    rng: np.random.Generator, clinical: pd.DataFrame, rate: float = 0.02
) -> pd.DataFrame:
    """Blank ~``rate`` of the laboratory/predictor cells (what an export really looks like)."""
    out = clinical.copy()
    cols = ["hbv", "tp_g_l", "afp_ng_ml", "albi", "alb_g_l", "ast_u_l", "alt_u_l", "tbil_umol_l"]
    for col in cols:
        hit = rng.random(len(out)) < rate
        out[col] = out[col].astype(object).where(~hit, None)
    return out


def er_count(share: float, n: int) -> int:
    """Events of a cohort of ``n`` with ER share ``share``: ``round(share n)``, kept within
    ``[1, n - 1]`` so that both outcome classes occur."""
    if not 0 < share < 1:
        raise ValueError(f"an ER share must lie strictly between 0 and 1, not {share}")
    if n < 2:
        raise ValueError("a cohort with a fixed ER share needs at least 2 patients")
    return int(min(max(round(share * n), 1), n - 1))


def sample_latent(
    n_train: int = 254,
    n_test: Sequence[int] = (20, 15),
    seed: int = 2025,
    er_share: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Sample every latent variable of the cohort (no images): one row per patient.

    Columns: ``patient_id, site, cohort``, the true clinical variables, the pre-image
    features, the ablation-zone geometry and ``margin_mm``, the risk components, ``logit``,
    ``p``, ``er, rfs_months, rfs_event`` and ``er_forced`` (1 where a tiny cohort had to be
    given both outcome classes). Deterministic for ``seed``, the site sizes and
    ``er_share``.

    ``er_share`` (``{"train": s, "test": s}``, e.g. :data:`PAPER_ER_SHARE`) fixes each
    cohort's number of ER patients at :func:`er_count`: the outcomes are then drawn from the
    patients' true risks conditionally on that count (:func:`conditional_bernoulli`, one
    draw per cohort over all its sites). ``None``: every outcome is an independent
    Bernoulli draw and the count varies with the seed.
    """
    plan = planned_patients(n_train, list(n_test))
    sites = []
    for k, (site, grp) in enumerate(plan.groupby("site", sort=False)):
        prof = SITE_PROFILES[site]
        n = len(grp)
        clin = sample_clinical(_rng(seed, k, 1), n, prof)
        pre = sample_pre_image(_rng(seed, k, 2), n)
        post = sample_post_image(_rng(seed, k, 3), clin["tumor_size_cm"].to_numpy() * 5.0)
        risk = risk_components(clin, pre, post)
        sites.append((k, pd.concat([grp.reset_index(drop=True), clin, pre, post, risk], axis=1)))
    fixed: dict[int, np.ndarray] = {}
    if er_share is not None:
        for c, cohort in enumerate(("train", "test")):
            members = [(k, df) for k, df in sites if df["cohort"].iloc[0] == cohort]
            if not members:
                continue
            p = np.concatenate([df["p"].to_numpy() for _, df in members])
            er = conditional_bernoulli(_rng(seed, 98, c), p, er_count(er_share[cohort], len(p)))
            for (k, _), part in zip(
                members, np.split(er, np.cumsum([len(df) for _, df in members])[:-1]), strict=True
            ):
                fixed[k] = part
    parts = []
    for k, df in sites:
        out = sample_outcome(_rng(seed, k, 4), df["p"].to_numpy(), fixed.get(k))
        parts.append(pd.concat([df, out], axis=1))
    lat = pd.concat(parts, ignore_index=True)
    lat["er_forced"] = 0
    for idx in lat.groupby("cohort").groups.values():
        er = lat.loc[idx, "er"].to_numpy()
        new = _force_both_classes(er, lat.loc[idx, "p"].to_numpy())
        changed = new != er
        if changed.any():
            lat.loc[idx, "er"] = new
            lat.loc[idx[changed], "er_forced"] = 1
    # keep RFS consistent with a forced ER
    for i in lat.index[lat["er_forced"] == 1]:
        if lat.at[i, "er"] == 1:
            lat.loc[i, ["rfs_months", "rfs_event"]] = [12.0, 1]
        else:
            lat.loc[i, ["rfs_months", "rfs_event"]] = [60.0, 0]
    return lat


def outcome_ceilings(latent: pd.DataFrame, n_mc: int = 200, seed: int = 0) -> dict[str, float]:
    """The best AUCs achievable from clinical data, clinical + pre images, and everything.

    ``E[p | clinical]`` and ``E[p | clinical, pre]`` are computed by Monte Carlo over the
    unobserved components (redrawn from their priors; the image latents are independent of
    the clinical variables given tumour size); the ceilings are the AUCs of these scores and of
    ``p`` itself against the sampled ER.
    """
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = len(latent)
    clin = latent
    radius = latent["tumor_size_cm"].to_numpy(float) * 5.0
    e_clin = np.zeros(n)
    e_pre = np.zeros(n)
    for _ in range(n_mc):
        pre_s = sample_pre_image(rng, n)
        post_s = sample_post_image(rng, radius)
        e_clin += risk_components(clin, pre_s, post_s)["p"].to_numpy()
        post_s2 = sample_post_image(rng, radius)
        e_pre += risk_components(clin, latent, post_s2)["p"].to_numpy()
    y = latent["er"].to_numpy()
    return {
        "clinical": float(roc_auc_score(y, e_clin / n_mc)),
        "clinical_pre": float(roc_auc_score(y, e_pre / n_mc)),
        "all": float(roc_auc_score(y, latent["p"].to_numpy())),
        "prevalence": float(y.mean()),
    }


#: What each model of the workflow sees, as sets of the latent model's parts: "size" = the
#: tumour size (visible on the images too), "clinical_rest" = tumour number, AFP, HBV, TP,
#: "pre" / "post" = the pre-/post-image latents, "pre_no_satellite" = the pre-image latents
#: but the satellite nodule. The ``*_without_satellite`` sets bound a model's ceiling from
#: below where the satellite nodule (a 5-8 mm dot beside the tumour, easily taken for a vessel
#: in the crops) is not read: the same CNN trained on the satellite label itself detects it
#: at an AUC of only ~0.6 (docs/results/2026-12-04-gap-and-stacking.md), against >= 0.98 for
#: capsule, peritumoral enhancement and rim APHE.
INFORMATION_SETS: dict[str, tuple[str, ...]] = {
    "Clinical": ("size", "clinical_rest"),
    "Pre": ("size", "pre"),
    "PrePost": ("size", "pre", "post"),
    "Clinical+Pre": ("size", "clinical_rest", "pre"),
    "Clinical+PrePost": ("size", "clinical_rest", "pre", "post"),
    "Pre_without_satellite": ("size", "pre_no_satellite"),
    "PrePost_without_satellite": ("size", "pre_no_satellite", "post"),
}
_CLINICAL_REST = ["tumor_number", "afp_ng_ml", "hbv", "tp_g_l"]
PRE_LATENTS = ["rim_aphe", "capsule", "heterogeneity", "satellite", "peritumoral"]


def information_scores(latent: pd.DataFrame, n_mc: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per patient, the part of the true risk each information set can show (measurement only).

    One column per set of :data:`INFORMATION_SETS` (rows as ``latent``): ``E[p | the parts in
    the set]``, by Monte Carlo over the parts not in it: the image latents are redrawn from
    their priors (the margin given the tumour radius), the clinical variables other than size
    are redrawn by permuting them across the patients of ``latent`` (they are independent of
    the images and of size). Column ``all`` is the true risk ``p`` itself. ``latent`` has one
    row per patient with the clinical columns, the pre-image latents and ``margin_mm``
    (``load_truth(...)[0]``).
    """
    need = ["tumor_size_cm", *_CLINICAL_REST, *PRE_LATENTS, "margin_mm"]
    missing = [c for c in need if c not in latent.columns]
    if missing:
        raise ValueError(f"latent table lacks {missing}")
    rng = np.random.default_rng(seed)
    lat = latent.reset_index(drop=True)
    n = len(lat)
    radius = lat["tumor_size_cm"].to_numpy(float) * 5.0
    out = {}
    for name, parts in INFORMATION_SETS.items():
        acc = np.zeros(n)
        for _ in range(n_mc):
            clin = lat.copy()
            if "clinical_rest" not in parts:
                perm = rng.permutation(n)
                clin[_CLINICAL_REST] = lat[_CLINICAL_REST].to_numpy()[perm]
            if "pre" in parts:
                pre = lat
            elif "pre_no_satellite" in parts:
                pre = lat.copy()
                pre["satellite"] = sample_pre_image(rng, n)["satellite"].to_numpy()
            else:
                pre = sample_pre_image(rng, n)
            post = lat if "post" in parts else sample_post_image(rng, radius)
            acc += risk_components(clin, pre, post)["p"].to_numpy()
        out[name] = acc / n_mc
    out["all"] = risk_components(lat, lat, lat)["p"].to_numpy()
    return pd.DataFrame(out, index=latent.index)


def information_ceilings(latent: pd.DataFrame, n_mc: int = 200, seed: int = 0) -> dict[str, float]:
    """AUC ceiling of each information set of :data:`INFORMATION_SETS` (measurement only):
    the AUC of :func:`information_scores` against the sampled ER (column ``er`` of
    ``latent``); ``all`` is the AUC of the true risk, ``prevalence`` the share with ER.
    """
    from sklearn.metrics import roc_auc_score

    if "er" not in latent.columns:
        raise ValueError("latent table lacks ['er']")
    if latent["er"].nunique() != 2:
        raise ValueError("information_ceilings needs patients with and without ER")
    y = latent["er"].to_numpy()
    scores = information_scores(latent, n_mc=n_mc, seed=seed)
    out = {name: float(roc_auc_score(y, scores[name])) for name in scores.columns}
    out["prevalence"] = float(y.mean())
    return out


def latent_features(latent: pd.DataFrame, parts: Sequence[str]) -> np.ndarray:
    """The latent variables of the information ``parts`` (of :data:`INFORMATION_SETS`) as a
    numeric matrix, on the scale the risk model uses them (pure function): log tumour size;
    multiple tumours, log AFP, HBV, TP; the pre-image latents; the margin clipped to
    [-4, 10] mm."""
    need = ["tumor_size_cm"] if "size" in parts else []
    need += _CLINICAL_REST if "clinical_rest" in parts else []
    need += [
        c
        for c in PRE_LATENTS
        if "pre" in parts or ("pre_no_satellite" in parts and c != "satellite")
    ]
    need += ["margin_mm"] if "post" in parts else []
    missing = [c for c in need if c not in latent.columns]
    if missing:
        raise ValueError(f"latent table lacks {missing} (information parts {tuple(parts)})")
    cols: list[np.ndarray] = []
    if "size" in parts:
        cols.append(np.log(latent["tumor_size_cm"].to_numpy(float)))
    if "clinical_rest" in parts:
        cols += [
            (latent["tumor_number"].to_numpy() > 1).astype(float),
            np.log(latent["afp_ng_ml"].to_numpy(float)),
            latent["hbv"].to_numpy(float),
            latent["tp_g_l"].to_numpy(float),
        ]
    cols += [latent[c].to_numpy(float) for c in PRE_LATENTS if c in need]
    if "post" in parts:
        cols.append(np.clip(latent["margin_mm"].to_numpy(float), -4.0, 10.0))
    return np.column_stack(cols)


def learnable_ceilings(train: pd.DataFrame, test: pd.DataFrame, c: float = 1.0) -> dict[str, float]:
    """AUC on ``test`` of a logistic regression fitted on ``train``'s *true* latents of each
    information set (measurement only): what a perfect reader of those variables reaches
    when it must learn their weights from the training patients' outcomes, as every model
    of the workflow must. Both tables as :func:`load_truth` gives them, with ``er``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for name, t in (("train", train), ("test", test)):
        if "er" not in t.columns or t["er"].nunique() != 2:
            raise ValueError(f"learnable_ceilings: {name} needs 'er' with both outcomes")
    out = {}
    for name, parts in INFORMATION_SETS.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        model.fit(latent_features(train, parts), train["er"].to_numpy())
        score = model.decision_function(latent_features(test, parts))
        out[name] = float(roc_auc_score(test["er"].to_numpy(), score))
    return out


# =========================================================================== anatomy
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


def _bbox(axis: np.ndarray, lo: float, hi: float) -> slice:
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
            _bbox(self.z, center[2] - half, center[2] + half),
            _bbox(self.y, center[1] - half, center[1] + half),
            _bbox(self.x, center[0] - half, center[0] + half),
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


# =========================================================================== images
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
        _bbox(fz, c[2] - r - 2, c[2] + r + 2),
        _bbox(fy, c[1] - r - 2, c[1] + r + 2),
        _bbox(fx, c[0] - r - 2, c[0] + r + 2),
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


# =========================================================================== DICOM
_LAST = ("FAKEMAN", "TESTWOOD", "DUMMSON", "NOTREAL", "PLACEBO", "MOCKLEY", "SYNTHSON", "FICTO")
_FIRST = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA")
_PRIVATE_CREATOR = "RECUR SYNTH FAKE"


def fake_identity(seed: int, number: int, site: SiteProfile, age: float) -> dict[str, str]:
    """Deterministic, clearly fake identifying values of one patient (for de-id tests)."""
    rng = _rng(seed, number, 7)
    start = np.datetime64("2014-04-01") + int(rng.integers(0, 1150))
    post = start + int(rng.integers(27, 36))
    birth = start - round(age * 365.25) - int(rng.integers(0, 365))
    d = lambda v: str(v).replace("-", "")  # noqa: E731
    return {
        "PatientName": f"{rng.choice(_LAST)}^{rng.choice(_FIRST)}",
        "PatientID": f"FKMRN{int(rng.integers(10**7, 10**8))}",
        "PatientBirthDate": d(birth),
        "pre_date": d(start),
        "post_date": d(post),
        "pre_acc": f"FKACC{int(rng.integers(10**8, 10**9))}",
        "post_acc": f"FKACC{int(rng.integers(10**8, 10**9))}",
        "ReferringPhysicianName": f"FAKEDOC^{rng.choice(_FIRST)}",
        "OperatorsName": f"FAKETECH^{rng.choice(_FIRST)}",
        "StationName": f"FKSTN{site.name[-1]}{int(rng.integers(1, 4)):02d}",
        "DeviceSerialNumber": f"FKSN{int(rng.integers(10**5, 10**6))}",
        "private": f"FAKEPRIV-{int(rng.integers(16**7, 16**8)):08X}",
        "pre_time": int(rng.integers(8 * 3600, 17 * 3600)),
        "post_time": int(rng.integers(8 * 3600, 17 * 3600)),
    }


def _hhmmss(seconds: float) -> str:
    s = int(seconds)
    frac = round((seconds - s) * 1e6)
    return f"{s // 3600:02d}{(s // 60) % 60:02d}{s % 60:02d}.{frac:06d}"


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


class _SliceEncoder:
    """Fast writer of the slices of one uncompressed series.

    The series-level elements are encoded once (Explicit VR Little Endian is a plain
    concatenation of elements in tag order); per slice only the file meta, SOPInstanceUID,
    InstanceNumber, ImagePositionPatient, SliceLocation and PixelData are encoded. The result
    is byte-identical to ``Dataset.save_as(..., enforce_file_format=True)``.
    """

    VARYING = (0x00080018, 0x00200013, 0x00200032, 0x00201041, 0x7FE00010)

    def __init__(self, ds) -> None:
        from pydicom.dataset import Dataset

        self.meta = ds.file_meta
        bounds = (0, *self.VARYING, 0xFFFFFFFF)
        self.segments = []
        for lo, hi in itertools.pairwise(bounds):
            part = Dataset()
            for elem in ds:
                if lo < int(elem.tag) < hi:
                    part.add(elem)
            self.segments.append(self._bytes(part))

    @staticmethod
    def _bytes(ds) -> bytes:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
        return fp.getvalue()

    def encode(self, sop: str, inst: int, ipp: list[str], loc: str, arr: np.ndarray) -> bytes:
        from pydicom.dataset import Dataset
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info

        self.meta.MediaStorageSOPInstanceUID = sop
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, self.meta, enforce_standard=True)
        parts = [fp.getvalue(), self.segments[0]]
        values = (
            ("SOPInstanceUID", sop),
            ("InstanceNumber", inst),
            ("ImagePositionPatient", ipp),
            ("SliceLocation", loc),
        )
        for (name, value), seg in zip(values, self.segments[1:5], strict=True):
            one = Dataset()
            setattr(one, name, value)
            parts += [self._bytes(one), seg]
        data = arr.astype("<u2", copy=False).tobytes()
        parts.append(b"\xe0\x7f\x10\x00OW\x00\x00" + len(data).to_bytes(4, "little") + data)
        parts.append(self.segments[5])
        return b"".join(parts)


def write_series(
    folder: Path,
    volume: np.ndarray,
    grid: Grid,
    *,
    header: dict,
    site: SiteProfile,
    name_rng: np.random.Generator,
    uid_key: tuple,
    compress: bool,
) -> str:
    """Write one MR series (one file per slice, shuffled names); returns its SeriesInstanceUID.

    ``volume`` holds stored pixel values (uint16, z y x) of ``grid``; ``header`` the
    series-level attributes. Slices are numbered head to feet (InstanceNumber 1 = top).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        MRImageStorage,
        RLELossless,
    )

    folder.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    header = dict(header)
    private = header.pop("_private", "FAKEPRIV")
    for key, value in header.items():
        setattr(ds, key, value)
    ds.Modality = "MR"
    ds.Manufacturer = site.manufacturer
    ds.ManufacturerModelName = site.model
    ds.MagneticFieldStrength = f"{site.field_strength:g}"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SP", "SS"]
    ds.ScanOptions = "FS"
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = site.sequence
    ds.RepetitionTime = f"{site.repetition_time:g}"
    ds.EchoTime = f"{site.echo_time:g}"
    ds.FlipAngle = f"{site.flip_angle:g}"
    ds.SliceThickness = f"{site.thickness:g}"
    ds.SpacingBetweenSlices = f"{grid.spacing[2]:g}"
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [f"{grid.spacing[1]:.8g}", f"{grid.spacing[0]:.8g}"]
    ds.Rows, ds.Columns = int(grid.size[1]), int(grid.size[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    slope, intercept = site.rescale
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleType = "US"
    hi = float(np.percentile(volume[:, ::4, ::4], 99.5)) * slope + intercept
    ds.WindowCenter = f"{hi / 2:.0f}"
    ds.WindowWidth = f"{hi:.0f}"
    ds.ImagesInAcquisition = int(grid.size[2])
    block = ds.private_block(0x0029, _PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", private)
    series_uid = _uid(*uid_key, "series")
    ds.SeriesInstanceUID = series_uid
    nz = grid.size[2]
    fast = None if compress else _SliceEncoder(ds)
    for k in range(nz):
        inst = nz - k  # head (largest z) first
        z = grid.origin[2] + grid.spacing[2] * k
        ipp = [f"{grid.origin[0]:.4f}", f"{grid.origin[1]:.4f}", f"{z:.4f}"]
        sop = _uid(*uid_key, "sop", k)
        arr = np.ascontiguousarray(volume[k])
        token = f"{int(name_rng.integers(0, 16**12)):012X}"
        fname = {"hex.dcm": f"{token}.dcm", "IM_hex": f"IM_{token}"}.get(site.name_style, token)
        if fast is not None:
            (folder / fname).write_bytes(fast.encode(sop, inst, ipp, f"{z:.4f}", arr))
            continue
        ds.InstanceNumber = inst
        ds.ImagePositionPatient = ipp
        ds.SliceLocation = f"{z:.4f}"
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = arr.tobytes()
        ds.compress(RLELossless, arr, encoding_plugin=RLE_PLUGIN, generate_instance_uid=False)
        ds.save_as(folder / fname, enforce_file_format=True)
    return series_uid


# =========================================================================== cohort
#: RLE encoder used for the compressed series. Named explicitly: with several plugins installed,
#: pydicom's choice could differ between processes and so break byte-identical output.
RLE_PLUGIN = "pylibjpeg"

#: Every column of the contract's clinical table, in the contract's order.
CLINICAL_COLUMNS: tuple[str, ...] = (
    *contract.ID_COLUMNS,
    *contract.OUTCOME_COLUMNS,
    *contract.CLINICAL_FEATURES,
    *contract.OPTIONAL_COLUMNS,
)
_STUDY_DESCRIPTION = {"pre": "MR LIVER DYNAMIC", "post": "MR LIVER DYNAMIC FOLLOW-UP"}


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def _acquisition_times(rng: np.random.Generator, t0: float) -> dict[str, float]:
    """PS, then contrast injection; AP ~25 s, PVP ~70 s, DP ~3 min after injection."""
    inj = t0 + float(rng.uniform(30, 60))
    return {
        "PS": t0,
        "AP": inj + float(rng.uniform(20, 30)),
        "PVP": inj + float(rng.uniform(65, 75)),
        "DP": inj + float(rng.uniform(175, 190)),
    }


def simulate_patient(row: dict, seed: int, number: int) -> dict:
    """Images, masks, grids and motions of one patient (nothing written).

    ``number`` is the 1-based position in the cohort; every random stream is seeded with
    ``(seed, stream, number)``, so results do not depend on the order or process.
    """
    site = SITE_PROFILES[row["site"]]
    anatomy = PatientAnatomy(row, _rng(seed, 100, number))
    studies = {}
    for ti, tp in enumerate(TIMEPOINTS):
        rng = _rng(seed, 200 + ti, number)
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


def write_patient(job: tuple[dict, int, int, str]) -> dict:
    """Simulate one patient and write its DICOM series and ROI masks under ``root``.

    Returns the rows of ``series.csv``, ``rois.csv`` and the motion part of ``truth.csv``.
    BLAS runs single-threaded here: multi-threaded BLAS may sum in another order, and the last
    bits of a float can move a voxel across a rounding boundary, so the same seed would give
    other bytes on a machine (or in a process) with another thread count.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _write_patient(job)


def _write_patient(job: tuple[dict, int, int, str]) -> dict:
    import SimpleITK as sitk

    row, seed, number, root_s = job
    root = Path(root_s)
    pid = row["patient_id"]
    sim = simulate_patient(row, seed, number)
    site: SiteProfile = sim["site"]
    ident = fake_identity(seed, number, site, float(row["age"]))
    rng = _rng(seed, 300, number)
    style = site.styles[int(rng.integers(0, len(site.styles)))]
    base_number = int(rng.integers(3, 8)) + 100 * (
        TEST_SITES.index(site.name) + 1 if site.name in TEST_SITES else 0
    )
    series_rows, roi_rows, motion_rows = [], [], []
    nbytes = 0
    for tp in TIMEPOINTS:
        st = sim["studies"][tp]
        grid: Grid = st["grid"]
        date = ident[f"{tp}_date"]
        times = _acquisition_times(rng, float(ident[f"{tp}_time"]))
        study = {
            "PatientName": ident["PatientName"],
            "PatientID": ident["PatientID"],
            "PatientBirthDate": ident["PatientBirthDate"],
            "PatientSex": str(row["sex"]),
            "StudyDate": date,
            "SeriesDate": date,
            "AcquisitionDate": date,
            "ContentDate": date,
            "StudyTime": _hhmmss(times["PS"] - 120),
            "AccessionNumber": ident[f"{tp}_acc"],
            "ReferringPhysicianName": ident["ReferringPhysicianName"],
            "OperatorsName": ident["OperatorsName"],
            "InstitutionName": site.institution,
            "StationName": ident["StationName"],
            "DeviceSerialNumber": ident["DeviceSerialNumber"],
            "StudyInstanceUID": _uid(seed, pid, tp, "study"),
            "FrameOfReferenceUID": _uid(seed, pid, tp, "for"),
            "StudyID": str(int(rng.integers(1000, 99999))),
            "StudyDescription": _STUDY_DESCRIPTION[tp],
            "_private": ident["private"],
        }
        slope, intercept = site.rescale
        for k, phase in enumerate(PHASES):
            desc = style[k]
            number_s = base_number + k
            header = dict(study)
            header.update(
                SeriesDescription=desc,
                ProtocolName=f"{site.sequence} dyn",
                SeriesNumber=number_s,
                AcquisitionNumber=1,
                SeriesTime=_hhmmss(times[phase]),
                AcquisitionTime=_hhmmss(times[phase]),
                ContentTime=_hhmmss(times[phase] + 5),
            )
            if phase != "PS":
                header["ContrastBolusAgent"] = "Gd-DTPA"
            stored = np.clip(np.rint((st["volumes"][phase] - intercept) / slope), 0, 4095)
            rel = Path("dicom") / pid / tp / f"S{number_s:03d}_{_safe(desc)}"
            uid = write_series(
                root / rel,
                stored.astype(np.uint16),
                grid,
                header=header,
                site=site,
                name_rng=rng,
                uid_key=(seed, pid, tp, phase),
                compress=bool(rng.random() < site.compress_fraction),
            )
            series_rows.append(
                {
                    "patient_id": pid,
                    "timepoint": tp,
                    "phase": phase,
                    "dicom_dir": rel.as_posix(),
                    "series_uid": uid,
                }
            )
            m: Motion = st["motions"][phase]
            motion_rows.append(
                {
                    "patient_id": pid,
                    "timepoint": tp,
                    "phase": phase,
                    "center_x": m.center[0],
                    "center_y": m.center[1],
                    "center_z": m.center[2],
                    "angle_x": m.angles[0],
                    "angle_y": m.angles[1],
                    "angle_z": m.angles[2],
                    "translation_x": m.translation[0],
                    "translation_y": m.translation[1],
                    "translation_z": m.translation[2],
                    "roi_centroid_x": round(st["centroid"][0], 4),
                    "roi_centroid_y": round(st["centroid"][1], 4),
                    "roi_centroid_z": round(st["centroid"][2], 4),
                    "roi_voxels": int(st["mask"].sum()),
                    "pixel_spacing": grid.spacing[0],
                    "slice_spacing": grid.spacing[2],
                    "n_slices": grid.size[2],
                }
            )
        mask_rel = Path("rois") / f"{pid}_{tp}.nii.gz"
        img = sitk.GetImageFromArray(st["mask"].astype(np.uint8))
        img.SetOrigin(grid.origin)
        img.SetSpacing(grid.spacing)
        (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(root / mask_rel), True)
        roi_rows.append({"patient_id": pid, "timepoint": tp, "mask": mask_rel.as_posix()})
    for dirpath, _, files in os.walk(root / "dicom" / pid):
        nbytes += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return {"series": series_rows, "rois": roi_rows, "motion": motion_rows, "bytes": nbytes}


def _worker_init() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def truth_table(latent: pd.DataFrame, motion: pd.DataFrame) -> pd.DataFrame:
    """``truth.csv``: one row per patient x time point x phase (patient columns repeated)."""
    keep = [c for c in latent.columns if c not in ("sex",)]
    return motion.merge(latent[keep], on="patient_id", how="left", validate="many_to_one")[
        ["patient_id", "site", "cohort", "timepoint", "phase"]
        + [c for c in motion.columns if c not in ("patient_id", "timepoint", "phase")]
        + [c for c in keep if c not in ("patient_id", "site", "cohort")]
    ]


def load_truth(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``truth.csv`` into (per-patient table, per patient x time point x phase motions)."""
    t = pd.read_csv(path)
    motion_cols = ["patient_id", "timepoint", "phase"] + [
        c
        for c in t.columns
        if c.split("_")[0] in ("center", "angle", "translation", "roi")
        or c in ("pixel_spacing", "slice_spacing", "n_slices")
    ]
    patients = (
        t.drop(
            columns=[c for c in motion_cols if c != "patient_id"] + ["timepoint", "phase"],
            errors="ignore",
        )
        .drop_duplicates("patient_id")
        .reset_index(drop=True)
    )
    return patients, t[motion_cols].reset_index(drop=True)


def write_cohort(
    outdir: str | Path,
    n_train: int = 254,
    n_test: Sequence[int] = (20, 15),
    seed: int = 2025,
    truth_path: str | Path | None = None,
    workers: int = 1,
    er_share: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Write the synthetic cohort directory ``outdir`` and its ``truth.csv``.

    ``outdir`` gets ``clinical.csv``, ``series.csv``, ``rois.csv``, ``dicom/`` and ``rois/``;
    it is assembled in a hidden sibling folder and renamed into place only when complete
    (an existing ``outdir`` is replaced). ``truth_path`` defaults to ``outdir.parent /
    "truth.csv"``. ``workers`` processes generate patients in parallel; the result does not
    depend on it. ``er_share`` fixes each cohort's number of ER patients
    (:func:`sample_latent`). Returns the clinical table as written.
    """

    from recur.io import atomic_path

    outdir = Path(outdir)
    truth_path = Path(truth_path) if truth_path else outdir.parent / "truth.csv"
    try:
        latent = sample_latent(n_train, list(n_test), seed, er_share)
    except ValueError as exc:
        raise RecurError(f"synth: {exc}") from None
    clinical = blank_cells(_rng(seed, 99), latent.loc[:, list(CLINICAL_COLUMNS)])
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = outdir.parent / f".{outdir.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    rows = latent.to_dict("records")
    jobs = [(r, int(seed), i + 1, str(tmp)) for i, r in enumerate(rows)]
    results: list[dict] = []
    try:
        if workers > 1:
            import multiprocessing

            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            ) as pool:
                for i, res in enumerate(pool.map(write_patient, jobs, chunksize=1)):
                    results.append(res)
                    if (i + 1) % 25 == 0 or i + 1 == len(jobs):
                        log.info("synth: %d/%d patients written", i + 1, len(jobs))
        else:
            for i, job in enumerate(jobs):
                results.append(write_patient(job))
                if (i + 1) % 25 == 0 or i + 1 == len(jobs):
                    log.info("synth: %d/%d patients written", i + 1, len(jobs))
        series = pd.DataFrame([r for res in results for r in res["series"]])
        rois = pd.DataFrame([r for res in results for r in res["rois"]])
        motion = pd.DataFrame([r for res in results for r in res["motion"]])
        clinical.to_csv(tmp / "clinical.csv", index=False)
        series.to_csv(tmp / "series.csv", index=False)
        rois.to_csv(tmp / "rois.csv", index=False)
        contract.load_cohort(tmp)
        truth = truth_table(latent, motion)
        if outdir.exists():
            shutil.rmtree(outdir)
        os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with atomic_path(truth_path) as t:
        truth.to_csv(t, index=False)
    mb = sum(r["bytes"] for r in results) / 1e6
    log.info("synth: wrote %d patients (%.0f MB of DICOM) to %s", len(rows), mb, outdir)
    return clinical
