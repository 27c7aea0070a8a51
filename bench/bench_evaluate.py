"""Benchmark of the Table 2 bootstrap: 4 models x 5 cohorts at the default resample count.

Prints a table (median seconds over repeats) and the ratio to a reference measured in the
same run: a plain per-resample loop (sklearn ``roc_auc_score`` + confusion matrix per
resample), timed on a subset of resamples and scaled linearly to the same count.

    .venv/bin/python bench/bench_evaluate.py [--boot 2000] [--repeats 5] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from recur.constants import MODELS_PAPER_ORDER
from recur.evaluate import metrics, tables

MODELS = list(MODELS_PAPER_ORDER)


def make_frame(seed: int = 0) -> pd.DataFrame:
    """A cohort shaped like the paper's: 203 train, 51 tune, 20 + 15 external patients."""
    rng = np.random.default_rng(seed)
    sizes = {("train", "A"): 203, ("tune", "A"): 51, ("test", "B"): 20, ("test", "C"): 15}
    rows = [(sp, site) for (sp, site), k in sizes.items() for _ in range(k)]
    n = len(rows)
    y = (np.arange(n) % 4 == 0).astype(int)  # 25% events in every cohort
    df = pd.DataFrame({"split": [r[0] for r in rows], "site": [r[1] for r in rows], "er": y})
    for k, m in enumerate(MODELS):
        df[m] = 1 / (1 + np.exp(-(0.5 + 0.3 * k) * (2 * y - 1) - rng.normal(0, 1, n)))
    return df


def reference_loop(frame: pd.DataFrame, cutoffs: dict, n_boot: int, seed: int) -> None:
    """The naive implementation: one resample at a time."""
    for ci, mask in enumerate(tables.cohort_masks(frame).values()):
        sub = frame[mask]
        y = sub["er"].to_numpy()
        idx = metrics.stratified_indices(y, n_boot, seed + ci)
        for m in MODELS:
            s = sub[m].to_numpy()
            for b in range(n_boot):
                yb, sb = y[idx[b]], s[idx[b]]
                roc_auc_score(yb, sb)
                metrics.classification_metrics(yb, (sb >= cutoffs[m]).astype(int))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boot", type=int, default=2000, help="resamples (workflow default)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref-boot", type=int, default=50, help="resamples timed for the loop")
    ap.add_argument("--csv", help="write the table here")
    a = ap.parse_args()

    frame = make_frame()
    cutoffs = dict(zip(MODELS, tables.cutoffs_table(frame, MODELS)["cutoff"], strict=True))
    tables.table2(frame, MODELS, cutoffs, n_boot=10, seed=0, level=0.95)  # warm-up (imports)

    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        tables.table2(frame, MODELS, cutoffs, n_boot=a.boot, seed=0, level=0.95)
        times.append(time.perf_counter() - t0)
    vec = statistics.median(times)

    t0 = time.perf_counter()
    reference_loop(frame, cutoffs, a.ref_boot, 0)
    ref = (time.perf_counter() - t0) * a.boot / a.ref_boot

    n_cohorts = len(tables.cohort_masks(frame))
    table = pd.DataFrame(
        [
            {
                "implementation": "recur.evaluate.tables.table2 (vectorised)",
                "models": len(MODELS),
                "cohorts": n_cohorts,
                "resamples": a.boot,
                "seconds_median": round(vec, 3),
                "repeats": a.repeats,
                "ratio_to_reference": round(vec / ref, 4),
            },
            {
                "implementation": f"per-resample loop (timed at {a.ref_boot}, scaled)",
                "models": len(MODELS),
                "cohorts": n_cohorts,
                "resamples": a.boot,
                "seconds_median": round(ref, 3),
                "repeats": 1,
                "ratio_to_reference": 1.0,
            },
        ]
    )
    print(table.to_string(index=False))
    if a.csv:
        table.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
