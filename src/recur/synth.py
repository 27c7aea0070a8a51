"""The embedded synthetic cohort: real DICOM files, ROI masks and a clinical table.

See docs in README.md ("Synthetic cohort") for the ground-truth risk model. Nothing outside
this module and the benchmarks may read the generator's truth.
"""

from __future__ import annotations

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
