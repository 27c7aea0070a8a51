"""The Clinical model's estimators on fresh synthetic external patients, beside the ceilings.

The Clinical model needs no image, so this measures it on the generator's tables alone (the
same rows ``recur synth`` writes into clinical.csv, missing cells included): for each
training cohort (``synthetic.seed`` of the default study: 254 training patients with the
paper's event count, the workflow's tuning split), each estimator of
:class:`recur.models.tabular.TabularSettings` is fitted on the train split exactly as the workflow's
``clinical-model`` does (:func:`recur.models.tabular.clinical_model`) and scores the pooled fresh
external patients (the cohorts bench/pool_external.py pools: seeds 7, 11, 13, 17; 1,000
patients). Printed per estimator: AUC (DeLong 95% CI), the paired DeLong test against the
paper's ExtraTrees, and the ceilings the generator's truth allows for the clinical variables
(:func:`recur.synthetic.ceilings.information_ceilings`; learnable: a logistic regression on the
true variables fitted on the same training patients,
:func:`recur.synthetic.ceilings.learnable_ceilings`).

    .venv/bin/python bench/bench_clinical.py [--train-seed 2025 --train-seed 1] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_external import delong_ci  # noqa: E402

#: The fresh external cohorts: (generator seed, patients per test site).
FRESH: tuple[tuple[int, tuple[int, int]], ...] = (
    (7, (150, 150)),
    (11, (100, 100)),
    (13, (150, 150)),
    (17, (100, 100)),
)
#: The estimators compared: name -> TabularSettings fields.
ESTIMATORS: dict[str, dict] = {
    "extra_trees": {"estimator": "extra_trees"},
    "logistic": {"estimator": "logistic"},
    "logistic_splines4": {"estimator": "logistic", "spline_knots": 4},
}


def clinical_rows(seed: int, n_train: int, n_test: tuple[int, ...], er_share) -> pd.DataFrame:
    """The latent table with the clinical columns as ``recur synth`` writes them (blanks)."""
    from recur.synthetic.latent import CLINICAL_COLUMNS, blank_cells, random_stream, sample_latent

    latent = sample_latent(n_train, list(n_test), seed, er_share=er_share)
    shown = blank_cells(random_stream(seed, 99), latent.loc[:, list(CLINICAL_COLUMNS)])
    out = latent.copy()
    for col in shown.columns:
        out[col + "_shown"] = shown[col]
    return out


def shown_clinical(latent: pd.DataFrame) -> pd.DataFrame:
    """The clinical table a model sees (blank cells as NaN), typed like the contract's."""
    from recur.constants import CLINICAL_FEATURES

    cols = ["patient_id", "site", "cohort", "er", *CLINICAL_FEATURES]
    out = latent[["patient_id", "site", "cohort", "er"]].copy()
    for c in CLINICAL_FEATURES:
        out[c] = pd.to_numeric(latent[c + "_shown"], errors="coerce")
    return out[cols]


def measure(train_seed: int) -> list[dict]:
    from recur.cohort import split
    from recur.evaluate import metrics
    from recur.models import tabular
    from recur.synthetic.ceilings import information_ceilings, learnable_ceilings
    from recur.synthetic.latent import PAPER_ER_SHARE

    study = clinical_rows(train_seed, 254, (20, 15), PAPER_ER_SHARE)
    train = study[study["cohort"] == "train"].reset_index(drop=True)
    er = pd.Series(train["er"].to_numpy(), index=train["patient_id"])
    sp = split.make_split(train[["patient_id", "site", "cohort"]], er, 0.2, 42)
    fit_ids = set(sp.loc[sp["split"] == "train", "patient_id"])

    fresh = []
    for seed, n_test in FRESH:
        lat = clinical_rows(seed, 2, n_test, None)
        lat = lat[lat["cohort"] == "test"].copy()
        lat["patient_id"] = f"s{seed}:" + lat["patient_id"]
        fresh.append(lat)
    ext = pd.concat(fresh, ignore_index=True)
    y = ext["er"].to_numpy(int)
    ceiling = information_ceilings(ext)["Clinical"]
    learnable = learnable_ceilings(train[train["patient_id"].isin(fit_ids)], ext)["Clinical"]

    # one table: the study's training patients (split as the workflow does) + the fresh ones
    both = pd.concat([shown_clinical(train), shown_clinical(ext)], ignore_index=True)
    both["cohort"] = ["train"] * len(train) + ["test"] * len(ext)
    splits = pd.concat(
        [
            sp,
            pd.DataFrame({"patient_id": ext["patient_id"], "site": ext["site"]}).assign(
                cohort="test", split="test"
            ),
        ],
        ignore_index=True,
    )
    scores: dict[str, np.ndarray] = {}
    rows = []
    for name, fields in ESTIMATORS.items():
        t0 = time.perf_counter()
        _, pred = tabular.clinical_model(both, splits, tabular.TabularSettings.defaults(**fields))
        seconds = time.perf_counter() - t0
        s = pred.set_index("patient_id").loc[ext["patient_id"], "score"].to_numpy(float)
        scores[name] = s
        a, lo, hi = delong_ci(y, s)
        tune = pred[pred["split"] == "tune"].merge(both[["patient_id", "er"]], on="patient_id")
        test = metrics.delong_test(y, s, scores["extra_trees"]) if name != "extra_trees" else {}
        rows.append(
            {
                "train_seed": train_seed,
                "estimator": name,
                "n": len(y),
                "n_er": int(y.sum()),
                "auc": round(a, 4),
                "ci_low": round(lo, 4),
                "ci_high": round(hi, 4),
                "tune_auc": round(metrics.auc(tune["er"], tune["score"]), 4),
                "delta_vs_extra_trees": round(a - metrics.auc(y, scores["extra_trees"]), 4),
                "p_vs_extra_trees": round(test.get("p", float("nan")), 4),
                "ceiling": round(ceiling, 4),
                "learnable_ceiling": round(learnable, 4),
                "gap_to_learnable": round(learnable - a, 4),
                "fit_seconds": round(seconds, 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-seed", type=int, action="append", default=None)
    ap.add_argument("--csv", type=Path, default=None)
    a = ap.parse_args(argv)
    rows = [r for seed in a.train_seed or [2025, 1] for r in measure(seed)]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if a.csv:
        table.to_csv(a.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
