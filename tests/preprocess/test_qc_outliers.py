"""Registration similarity outliers against the cohort (robust z of NCC after registration)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from recur.cli import main as cli
from recur.preprocess.crop_qc import SIMILARITY_MIN_PATIENTS, similarity_outliers


def cohort(ap_pre, ap_post=None, flags=None, **columns) -> pd.DataFrame:
    """One pre row per AP value (patients P1, P2, ...), then one post row per ``ap_post``."""
    n = len(ap_pre)
    rows = pd.DataFrame(
        {
            "patient_id": [f"P{i + 1}" for i in range(n)],
            "timepoint": "pre",
            "AP_ncc_after": ap_pre,
            "flags": flags if flags is not None else [""] * n,
            **columns,
        }
    )
    if ap_post is not None:
        post = pd.DataFrame(
            {
                "patient_id": [f"P{i + 1}" for i in range(len(ap_post))],
                "timepoint": "post",
                "AP_ncc_after": ap_post,
                "flags": "",
            }
        )
        rows = pd.concat([rows, post], ignore_index=True)
    return rows


def test_outlier_gets_flag_and_exact_robust_z():
    # pre AP ncc_after: 0.80 0.82 0.84 0.86 0.88 0.40 (P6 registered someone else's series)
    # sorted 0.40 0.80 0.82 | 0.84 0.86 0.88 -> median (0.82 + 0.84) / 2 = 0.83
    # |x - 0.83|: 0.03 0.01 0.01 0.03 0.05 0.43 -> sorted 0.01 0.01 0.03 | 0.03 0.05 0.43
    # -> MAD 0.03; scale='normal': 0.03 * 1.4826 = 0.044478
    # z(P6) = (0.40 - 0.83) / 0.044478 = -9.668;  z(P1) = -0.03 / 0.044478 = -0.674
    # post: 0.38 0.39 0.40 0.41 0.42 0.43, all ordinary at their own time point (0.40 would be
    # an outlier only if the time points were pooled).
    t = cohort(
        [0.80, 0.82, 0.84, 0.86, 0.88, 0.40],
        [0.38, 0.39, 0.40, 0.41, 0.42, 0.43],
        flags=["", "", "", "", "", "AP correlation dropped"],
    )
    out = similarity_outliers(t, threshold=3.5)
    z = out["AP_ncc_after_robust_z"]
    assert z[5] == pytest.approx(-0.43 / (0.03 * 1.4826), abs=1e-3)
    assert z[0] == pytest.approx(-0.03 / (0.03 * 1.4826), abs=1e-3)
    assert out["flags"][5] == (
        "AP correlation dropped; AP registration similarity outlier (robust z -9.7)"
    )
    assert list(out["flags"][:5]) == [""] * 5
    # post: median 0.405, |x - 0.405| = 0.025 0.015 0.005 0.005 0.015 0.025 -> MAD 0.015
    # z(0.38) = -0.025 / (0.015 * 1.4826) = -1.124: no flag
    assert out["AP_ncc_after_robust_z"][6] == pytest.approx(-0.025 / (0.015 * 1.4826), abs=1e-3)
    assert list(out["flags"][6:]) == [""] * 6
    assert list(out.columns)[-1] == "flags"
    assert list(t["flags"])[5] == "AP correlation dropped"  # the input is left as it was
    # threshold: -9.7 is not below -10
    assert similarity_outliers(t, threshold=10.0)["flags"][5] == "AP correlation dropped"


def test_roi_similarity_and_missing_values():
    # PVP ncc_roi_after: 0.90 0.91 0.92 0.93 NaN 0.60 -> 5 patients with a value
    # median 0.91; |x - 0.91|: 0.01 0 0.01 0.02 0.31 -> sorted 0 0.01 | 0.01 | 0.02 0.31
    # -> MAD 0.01 -> 0.014826; z(P6) = -0.31 / 0.014826 = -20.909; P5: no value, no z
    t = cohort(
        [0.80, 0.82, 0.84, 0.86, 0.88, 0.85],
        PVP_ncc_roi_after=[0.90, 0.91, 0.92, 0.93, math.nan, 0.60],
    )
    out = similarity_outliers(t, threshold=3.5)
    z = out["PVP_ncc_roi_after_robust_z"]
    assert z[5] == pytest.approx(-0.31 / (0.01 * 1.4826), abs=1e-3)
    assert math.isnan(z[4])
    assert out["flags"][5] == "PVP ROI registration similarity outlier (robust z -20.9)"
    assert (out["flags"][:5] == "").all()
    assert "PS_ncc_after_robust_z" not in out  # only the columns present are scored


def test_mad_zero_gives_no_z_and_no_flag():
    # 0.8 x5 and 0.2: median 0.8, |x - 0.8| = 0 0 0 0 0 0.6 -> MAD 0: nothing to scale by
    t = cohort([0.8, 0.8, 0.8, 0.8, 0.8, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero either
        out = similarity_outliers(t, threshold=3.5)
    assert out["AP_ncc_after_robust_z"].isna().all()
    assert (out["flags"] == "").all()


def test_small_cohort_gives_no_flag():
    # 4 patients (< SIMILARITY_MIN_PATIENTS = 5): too few for a cohort median and MAD
    assert SIMILARITY_MIN_PATIENTS == 5
    t = cohort([0.80, 0.82, 0.84, 0.10])
    out = similarity_outliers(t, threshold=3.5)
    assert out["AP_ncc_after_robust_z"].isna().all()
    assert (out["flags"] == "").all()
    # 5 values but one missing: still 4 patients with a value
    t = cohort([0.80, 0.82, 0.84, np.nan, 0.10])
    assert (similarity_outliers(t)["flags"] == "").all()


def test_threshold_must_be_positive():
    with pytest.raises(ValueError, match="> 0"):
        similarity_outliers(cohort([0.8] * 5), threshold=0)


def test_crop_qc_cli_writes_robust_z_and_flag(tmp_path):
    """crop-qc end to end: six patients' crop files and registration QC tables."""
    crops, reg = [], []
    ap = [0.80, 0.82, 0.84, 0.86, 0.88, 0.40]  # the hand-worked cohort above: z(P6) = -9.668
    for i, ncc in enumerate(ap):
        patient = f"P{i + 1}"
        masks = np.zeros((2, 3, 8, 8), np.uint8)
        masks[:, :, 2:7, 2:7] = 1
        f = tmp_path / "crops" / f"{patient}.npz"
        f.parent.mkdir(exist_ok=True)
        np.savez(
            f,
            timepoints=np.array(["pre", "post"]),
            slices=np.array([[1, 2, 3], [1, 2, 3]]),
            centre=np.array([[4, 4], [4, 4]]),
            roi_area_px=np.array([25, 25]),
            roi_area_mm2=np.array([25.0, 25.0]),
            spacing=np.array([[1.0, 1.0], [1.0, 1.0]]),
            masks=masks,
        )
        crops.append(str(f))
        for t in ("pre", "post"):
            q = tmp_path / "registered" / patient / t / "qc.csv"
            q.parent.mkdir(parents=True)
            pd.DataFrame(
                {
                    "phase": ["PS", "AP", "PVP"],
                    "ncc_before": [0.3, 0.3, 0.3],
                    "ncc_after": [0.9, ncc if t == "pre" else 0.9, 0.80 + 0.01 * i],
                }
            ).to_csv(q, index=False)
            reg.append(str(q))
    out = tmp_path / "qc" / "crops.csv"
    argv = ["crop-qc", "--crops", *crops, "--registration-qc", *reg, "--out", str(out)]
    assert cli.main(argv) == 0
    t = pd.read_csv(out, keep_default_na=False)
    pre6 = (t["patient_id"] == "P6") & (t["timepoint"] == "pre")
    assert float(t.loc[pre6, "AP_ncc_after_robust_z"].item()) == pytest.approx(-9.668, abs=1e-3)
    assert t.loc[pre6, "flags"].item() == "AP registration similarity outlier (robust z -9.7)"
    assert (t.loc[~pre6, "flags"] == "").all()
    # PS: every patient 0.9 -> MAD 0 -> no z
    assert (t["PS_ncc_after_robust_z"] == "").all()
    assert list(t.columns)[-1] == "flags"
