"""Ceilings of the synthetic cohort: the best AUCs its latent variables allow.

:func:`outcome_ceilings` (clinical data, clinical + pre images, everything);
:data:`INFORMATION_SETS`, what each model of the workflow sees;
:func:`information_scores` and :func:`information_ceilings`, ``E[p | the parts a model
sees]`` by Monte Carlo over the rest, and its AUC; :func:`learnable_ceilings`, the AUC of a
logistic regression fitted on the training patients' true latents (:func:`latent_features`).
Measurement only: the benchmarks read them, no rule or model does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recur.synthetic.latent import risk_components, sample_post_image, sample_pre_image


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
    of the workflow must. Both tables as :func:`recur.synthetic.cohort.load_truth` gives them,
    with ``er``.
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
