"""Latent model of the synthetic patients: clinical variables, image latents, risk, outcome.

Clinical variables resembling the paper's Table 1 (:func:`sample_clinical`), latent image
features of the index tumour visible on the pre-ablation images (:func:`sample_pre_image`),
the geometry of the ablation zone and its true minimal ablative margin (post-ablation,
:func:`sample_post_image`), the risk model ``logit(p) = b0 + clinical + pre_image +
post_image`` (:func:`risk_components`) and the outcome, ER and RFS (:func:`sample_outcome`,
:func:`conditional_bernoulli`). :func:`sample_latent` draws all of them for a cohort, one row
per patient; :func:`blank_cells` blanks cells of the clinical table (:data:`CLINICAL_COLUMNS`)
as a real export would. Pure numpy/pandas and fast: no image is made. Every random stream
comes from :func:`random_stream`. See ``docs/methods/synthetic.md`` for the equations and
coefficients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from recur.cohort import contract
from recur.constants import CLINICAL_FEATURES, ER_HORIZON_MONTHS
from recur.synthetic.sites import SITE_PROFILES, SiteProfile, planned_patients

#: Every column of the contract's clinical table, in the contract's order.
CLINICAL_COLUMNS: tuple[str, ...] = (
    *contract.ID_COLUMNS,
    *contract.OUTCOME_COLUMNS,
    *CLINICAL_FEATURES,
    *contract.OPTIONAL_COLUMNS,
)


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


def random_stream(seed: int, *keys: int) -> np.random.Generator:
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
    n_train: int,
    n_test: Sequence[int],
    seed: int,
    *,
    er_share: Mapping[str, float] | None,
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
        clin = sample_clinical(random_stream(seed, k, 1), n, prof)
        pre = sample_pre_image(random_stream(seed, k, 2), n)
        post = sample_post_image(random_stream(seed, k, 3), clin["tumor_size_cm"].to_numpy() * 5.0)
        risk = risk_components(clin, pre, post)
        sites.append((k, pd.concat([grp.reset_index(drop=True), clin, pre, post, risk], axis=1)))
    fixed: dict[int, np.ndarray] = {}
    if er_share is not None:
        for c, cohort in enumerate(("train", "test")):
            members = [(k, df) for k, df in sites if df["cohort"].iloc[0] == cohort]
            if not members:
                continue
            p = np.concatenate([df["p"].to_numpy() for _, df in members])
            er = conditional_bernoulli(
                random_stream(seed, 98, c), p, er_count(er_share[cohort], len(p))
            )
            for (k, _), part in zip(
                members, np.split(er, np.cumsum([len(df) for _, df in members])[:-1]), strict=True
            ):
                fixed[k] = part
    parts = []
    for k, df in sites:
        out = sample_outcome(random_stream(seed, k, 4), df["p"].to_numpy(), fixed.get(k))
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
