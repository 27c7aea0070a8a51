"""One study's external validation pooled over several fresh synthetic cohorts.

``bench/bench_external.py`` scores one fresh cohort and keeps every patient's scores in
``<cohort>/../bench_external_work/<image-settings digest>/scores-<bundle digest>.csv``. This
script pools
those of several cohorts (each made with another generator seed), recomputes the ceilings on
the pooled patients (:func:`recur.synthetic.ceilings.information_ceilings`, the learnable ones from
the study's training patients) and prints, for each model, the AUC (DeLong 95% CI) beside them,
then the paired DeLong tests PrePost vs Pre, DL_Clinical vs Clinical and DL_Clinical vs
PrePost.

    .venv/bin/python bench/pool_external.py --study . --cohort /tmp/ext/cohort \\
        --cohort /tmp/ext11/cohort [--cohort ...] [--csv pooled.csv]

Every cohort must have been scored by ``bench_external.py`` with the same study's bundle
first (the scores are read, not recomputed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_external import (  # noqa: E402
    image_settings_key,
    learnable_for,
    scores_name,
    seen_information,
    summary_table,
)

#: the paired comparisons printed (and written with --csv)
PAIRS: tuple[tuple[str, str], ...] = (
    ("PrePost", "Pre"),
    ("DL_Clinical", "Clinical"),
    ("DL_Clinical", "PrePost"),
)


def pooled_scores(cohorts: list[Path], key: str, name: str) -> pd.DataFrame:
    """The scores of every cohort's patients joined with their truth, one row per patient
    (``patient_id`` prefixed with the cohort's position, as each cohort numbers from P0001)."""
    from recur.synthetic import cohort as synth

    parts = []
    for i, cohort in enumerate(cohorts):
        path = cohort.parent / "bench_external_work" / key / name
        if not path.is_file():
            raise SystemExit(f"{path}: not found (run bench_external.py on {cohort} first)")
        scores = pd.read_csv(path, dtype={"patient_id": str})
        truth, _ = synth.load_truth(cohort.parent / "truth.csv")
        both = scores.merge(truth, on="patient_id", suffixes=("", "_truth"), validate="1:1")
        if len(both) != len(scores) or (both["er"] != both["er_truth"]).any():
            raise SystemExit(f"{path}: scores and {cohort.parent / 'truth.csv'} disagree")
        both["patient_id"] = f"c{i}:" + both["patient_id"]
        parts.append(both.drop(columns="er_truth"))
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, required=True, help="workdir with results/bundle")
    ap.add_argument("--cohort", type=Path, action="append", required=True)
    ap.add_argument("--n-mc", type=int, default=200)
    ap.add_argument("--csv", type=Path, default=None)
    a = ap.parse_args(argv)

    from recur.deploy.bundle import load_bundle
    from recur.evaluate.metrics import delong_test
    from recur.synthetic.ceilings import information_ceilings

    bundle_dir = (a.study / "results" / "bundle").resolve()
    bundle = load_bundle(bundle_dir)
    data = pooled_scores(
        [c.resolve() for c in a.cohort],
        image_settings_key(bundle.settings),
        scores_name(bundle_dir),
    )
    y = data["er"].to_numpy()
    seen = seen_information(bundle.signature)
    ceil = information_ceilings(data, n_mc=a.n_mc)
    table = summary_table(
        y, {m: data[m].to_numpy() for m in seen}, seen, ceil, learnable_for(a.study, data)
    )
    print(f"{len(a.cohort)} cohorts pooled: {len(y)} patients, {int(y.sum())} with ER")
    print(table.to_string(index=False))
    tests = []
    for m_a, m_b in PAIRS:
        t = delong_test(y, data[m_a].to_numpy(), data[m_b].to_numpy())
        tests.append({"model": f"{m_a} - {m_b}", "auc": round(t["diff"], 3), "p": t["p"]})
        print(f"DeLong {m_a} vs {m_b}: diff {t['diff']:+.3f}, p = {t['p']:.2g}")
    if a.csv:
        pd.concat([table, pd.DataFrame(tests)], ignore_index=True).to_csv(a.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
