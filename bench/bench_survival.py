"""Survival benchmark: each model's C-index beside the C-index of the synthetic truth's risk.

For a finished synthetic study (``--study``, a working directory after ``snakemake``, with its
``results/tables/survival.csv``) and, optionally, fresh external cohorts already scored by that
study's bundle (``--external DIR``: a cohort folder of ``bench/bench_external.py`` with its
``truth.csv`` and the cached ``scores-<bundle digest>.csv``):

1. the study's external cohort: every model's Harrell's C and Uno's C (Cox and binary, from
   survival.csv) beside the C-index that the generator's true 24-month risk ``p`` reaches on
   the same patients, and the 24-month time-dependent AUC beside the binary AUC of Table 2;
2. the pooled fresh external patients: the study's Cox models (refitted here on its training
   patients exactly as the survival rule fits them) and the binary scores, with the same
   metrics and the truth's, with 95% bootstrap CIs.

Usage::

    .venv/bin/python bench/bench_survival.py --study /tmp/studyA \\
        [--external /tmp/ext7 /tmp/ext11 ...] [--bootstrap 200] [--csv out.csv]

The truth is read here only (never by a rule): ``p`` orders the hazard of early recurrence,
and later recurrences are independent of it (docs/methods/survival.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

PAPER_MODELS = ("Clinical", "Pre", "PrePost", "DL_Clinical")


def _truth(path: Path) -> pd.Series:
    truth = pd.read_csv(path, usecols=["patient_id", "p"]).drop_duplicates("patient_id")
    return truth.set_index("patient_id")["p"]


def _study_models(study: Path):
    """The study's frame and Cox models, built as the survival rule builds them."""
    from recur.cohort.split import read_split
    from recur.config import load_config
    from recur.evaluate import readers
    from recur.models import tabular
    from recur.survival import data, stage

    res = study / "results"
    config = load_config(None)
    clinical = readers.read_clinical(res / "synthetic/cohort/clinical.csv")
    split = read_split(res / "splits/split.csv")
    preds = {m: readers.read_predictions(res / f"predictions/{m}.csv", m) for m in PAPER_MODELS}
    stacking = config["dl_clinical"]["stacking"]
    sig = {}
    for m in ("Pre", "PrePost"):
        oof = readers.read_predictions(res / f"predictions/oof/{m}.csv", m)
        sig[m] = tabular.signature_values(preds[m], oof, split, stacking)
    chosen, _ = tabular.choose_signature({m: preds[m] for m in ("Pre", "PrePost")}, clinical)
    frame = data.survival_frame(clinical, split, sig)
    sets = data.predictor_sets(chosen)
    settings = tabular.TabularSettings.from_config(config["clinical"])
    penalizer = config["survival"]["penalizer"]
    models = stage.fit_cox_models(frame, sets, settings, penalizer)
    return frame, models


def _metrics(train, t, e, risks, truth_p, n_boot, seed):
    """Point estimates and bootstrap CIs of Harrell's C, Uno's C and td-AUC at 24 months."""
    from recur.evaluate.metrics import percentile_ci, stratified_indices
    from recur.survival import metrics

    common = dict(tau=24.0, auc_times=(24.0,))
    scores = {**risks, "truth p": truth_p}
    y = ((t <= 24) & (e == 1)).astype(int)
    idx = stratified_indices(y, n_boot, seed)
    boot = metrics.bootstrap_metrics(*train, t, e, scores, dict.fromkeys(scores), idx, **common)
    rows = []
    for name, risk in scores.items():
        point = metrics.metric_values(*train, t, e, risk, **common)
        for metric in ("harrell_c", "uno_c", "td_auc_24"):
            est = point[metric].value
            lo, hi, _ = percentile_ci(boot[name][metric], est, 0.95)
            rows.append(
                {"model": name, "metric": metric, "estimate": est, "ci_low": lo, "ci_high": hi}
            )
    return rows


def fresh_cohorts(study: Path, externals: list[Path], n_boot: int) -> pd.DataFrame:
    from recur.evaluate.metrics import auc
    from recur.evaluate.readers import read_clinical
    from recur.survival import stage

    frame, models = _study_models(study)
    bundle = study / "results/bundle/manifest.json"
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()[:12]
    parts = []
    for ext in externals:
        scores = next(ext.glob(f"bench_external_work/*/scores-{digest}.csv"))
        s = pd.read_csv(scores, dtype={"patient_id": str})
        clinical = read_clinical(ext / "cohort/clinical.csv")
        part = clinical.merge(s.drop(columns=["er"]), on="patient_id", how="inner")
        part["p"] = part["patient_id"].map(_truth(ext / "truth.csv"))
        part["patient_id"] = ext.name + "/" + part["patient_id"]
        parts.append(part)
    fresh = pd.concat(parts, ignore_index=True)
    fresh["split"] = "test"
    fresh["Pre_signature"] = fresh["Pre"]
    fresh["PrePost_signature"] = fresh["PrePost"]
    train = frame[frame["split"] == "train"]
    train_tt = (train["rfs_months"].to_numpy(float), train["rfs_event"].to_numpy(int))
    t, e = fresh["rfs_months"].to_numpy(float), fresh["rfs_event"].to_numpy(int)
    risks = {}
    for name, model in models.items():
        risks[f"{name} (cox)"] = np.asarray(
            stage.cox.predict_risk(model.fit, model.matrix(fresh)), dtype=float
        )
        risks[f"{name} (binary)"] = fresh[name].to_numpy(float)
    rows = _metrics(train_tt, t, e, risks, fresh["p"].to_numpy(float), n_boot, 1)
    out = pd.DataFrame(rows)
    out.insert(0, "cohort", f"fresh external ({len(fresh)} patients, {int(e.sum())} events)")
    aucs = {f"{m} (binary)": auc(fresh["er"], fresh[m]) for m in PAPER_MODELS}
    aucs["truth p"] = auc(fresh["er"], fresh["p"])
    out["binary_auc"] = out["model"].map(aucs)
    return out


def study_external(study: Path, n_boot: int) -> pd.DataFrame:
    from recur.cohort.split import read_split
    from recur.evaluate.readers import read_clinical

    res = study / "results"
    surv = pd.read_csv(res / "tables/survival.csv")
    ext = surv[
        (surv["cohort"] == "external") & surv["metric"].isin(["harrell_c", "uno_c", "td_auc_24"])
    ]
    ext = ext.assign(model=ext["model"] + " (" + ext["kind"] + ")")
    rows = ext[["model", "metric", "estimate", "ci_low", "ci_high"]].to_dict("records")
    split = read_split(res / "splits/split.csv")
    clinical = read_clinical(res / "synthetic/cohort/clinical.csv").merge(
        split[["patient_id", "split"]]
    )
    p = _truth(res / "synthetic/truth.csv")
    test = clinical[clinical["split"] == "test"]
    train = clinical[clinical["split"] == "train"]
    truth_rows = _metrics(
        (train["rfs_months"].to_numpy(float), train["rfs_event"].to_numpy(int)),
        test["rfs_months"].to_numpy(float),
        test["rfs_event"].to_numpy(int),
        {},
        test["patient_id"].map(p).to_numpy(float),
        n_boot,
        1,
    )
    out = pd.DataFrame(rows + truth_rows)
    n, ev = len(test), int(test["rfs_event"].sum())
    out.insert(0, "cohort", f"study external ({n} patients, {ev} events)")
    t2 = pd.read_csv(res / "tables/table2.csv")
    aucs = t2[(t2["cohort"] == "external") & (t2["metric"] == "auc")]
    auc_map = {f"{m} (binary)": v for m, v in zip(aucs["model"], aucs["estimate"], strict=True)}
    out["binary_auc"] = out["model"].map(auc_map)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, required=True)
    ap.add_argument("--external", type=Path, nargs="*", default=[])
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--csv", default=None)
    a = ap.parse_args()
    tables = [study_external(a.study, a.bootstrap)]
    if a.external:
        tables.append(fresh_cohorts(a.study, a.external, a.bootstrap))
    table = pd.concat(tables, ignore_index=True)
    wide = table.assign(
        cell=[
            f"{r.estimate:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
            if np.isfinite(r.estimate)
            else "undefined"
            for r in table.itertuples()
        ]
    ).pivot_table(
        index=["cohort", "model"], columns="metric", values="cell", aggfunc="first", sort=False
    )
    auc = table.groupby(["cohort", "model"], sort=False)["binary_auc"].first()
    wide["binary AUC (24 m label)"] = auc.map(lambda v: f"{v:.3f}" if np.isfinite(v) else "")
    print(wide.to_string())
    if a.csv:
        table.to_csv(a.csv, index=False, float_format="%.6g")
    print(json.dumps({"rows": len(table)}))


if __name__ == "__main__":
    main()
