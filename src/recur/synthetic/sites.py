"""Sites of the synthetic cohort and its patient plan.

:class:`SiteProfile` holds the scanner, protocol, naming style and patient mix of one
synthetic hospital and :data:`SITE_PROFILES` the six of them (one training site, up to five
external test sites); :func:`planned_patients` lists the patients a cohort will hold, known
before anything is generated (the workflow needs them to build its DAG).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: Site names of the synthetic cohort: one training site and external test sites.
TRAIN_SITE = "siteA"
TEST_SITES: tuple[str, ...] = ("siteB", "siteC", "siteD", "siteE", "siteF")


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
