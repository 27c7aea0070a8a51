"""DL_Clinical's estimators and stacking on pooled fresh external cohorts, beside PrePost.

For each finished study (a workflow run on a synthetic training cohort), DL_Clinical is fitted
again offline exactly as the workflow's ``dl-clinical-model`` does
(:func:`recur.models.tabular.choose_signature`, :func:`recur.models.tabular.signature_values`,
:func:`recur.models.tabular.dl_clinical_model` on the study's own signatures, clinical table and
split), for every estimator x stacking, and scores the pooled fresh external patients whose
DL signatures ``bench/bench_external.py`` kept with that study's bundle
(``<cohort>/../bench_external_work/<image settings digest>/scores-<bundle digest>.csv``), and a
variant that fits no weight for the signature (:func:`log_odds_sum`). Printed per variant: AUC
(DeLong 95% CI) on the pooled patients and per cohort, the paired DeLong test against the
chosen DL signature alone (PrePost or Pre) and against the paper's ExtraTrees in-sample
stacking, and the learnable ceiling of the clinical variables + that signature's information.

    .venv/bin/python bench/bench_fusion.py --study /tmp/studyA --study /tmp/studyB \\
        --cohort /tmp/ext7/cohort --cohort /tmp/ext11/cohort ... [--csv out.csv]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_external import delong_ci  # noqa: E402

VARIANTS: tuple[tuple[str, str], ...] = (
    ("extra_trees", "in_sample"),
    ("extra_trees", "crossfit"),
    ("logistic", "in_sample"),
    ("logistic", "crossfit"),
)


def study_tables(study: Path):
    """The study's clinical table, split, full and out-of-fold DL predictions."""
    from recur.cohort.split import read_split
    from recur.constants import DL_MODELS
    from recur.evaluate import readers

    res = study / "results"
    clinical = readers.read_clinical(res / "synthetic" / "cohort" / "clinical.csv")
    split = read_split(res / "splits" / "split.csv")
    full = {m: readers.read_predictions(res / "predictions" / f"{m}.csv", m) for m in DL_MODELS}
    oof = {
        m: readers.read_predictions(res / "predictions" / "oof" / f"{m}.csv", m) for m in DL_MODELS
    }
    return clinical, split, full, oof


def fresh_table(cohorts: list[Path], key: str, name: str) -> pd.DataFrame:
    """Every fresh external patient: the kept DL scores, the clinical table as written (blank
    cells included) and the truth's ER; ids prefixed with the cohort's position."""
    from recur.cohort import contract
    from recur.constants import CLINICAL_FEATURES

    parts = []
    for i, cohort in enumerate(cohorts):
        scores = pd.read_csv(
            cohort.parent / "bench_external_work" / key / name, dtype={"patient_id": str}
        )
        clinical = contract.check_clinical(contract.read_table(cohort / "clinical.csv"))
        both = scores.merge(
            clinical[["patient_id", *CLINICAL_FEATURES, "er"]],
            on="patient_id",
            suffixes=("", "_clinical"),
            validate="1:1",
        )
        if (both["er"] != both["er_clinical"]).any():
            raise SystemExit(f"{cohort}: scores and clinical.csv disagree on ER")
        both["cohort_index"] = i
        both["patient_id"] = f"c{i}:" + both["patient_id"]
        parts.append(both.drop(columns="er_clinical"))
    return pd.concat(parts, ignore_index=True)


def measure(study: Path, cohorts: list[Path]) -> list[dict]:
    from bench_external import image_settings_key, scores_name
    from recur.deploy.bundle import load_bundle
    from recur.evaluate import metrics
    from recur.models import tabular
    from recur.synthetic import cohort as synth
    from recur.synthetic.ceilings import learnable_ceilings

    bundle = load_bundle(study / "results" / "bundle")
    ext = fresh_table(
        cohorts, image_settings_key(bundle.settings), scores_name(study / "results" / "bundle")
    )
    y = ext["er"].to_numpy(int)
    clinical, split, full, oof = study_tables(study)
    choice, _ = tabular.choose_signature(full, clinical)
    name = f"{choice}_signature"
    # the signature is the network's output (a scores file of a bundle before recalibration
    # has the score alone, which is that output)
    ext[name] = ext[f"{choice}_raw" if f"{choice}_raw" in ext.columns else choice].astype(float)
    truth, _ = synth.load_truth(study / "results" / "synthetic" / "truth.csv")
    fit_ids = set(split.loc[split["split"] == "train", "patient_id"])
    pooled_truth = (
        pd.concat(
            [
                synth.load_truth(c.parent / "truth.csv")[0].assign(
                    patient_id=lambda t, i=i: f"c{i}:" + t["patient_id"]
                )
                for i, c in enumerate(cohorts)
            ],
            ignore_index=True,
        )
        .set_index("patient_id")
        .loc[ext["patient_id"]]
        .reset_index()
    )
    learn = learnable_ceilings(truth[truth["patient_id"].isin(fit_ids)], pooled_truth)
    settings = {e: tabular.TabularSettings.defaults(estimator=e) for e in tabular.ESTIMATORS}
    scores: dict[tuple[str, str], np.ndarray] = {}
    rows = []
    alone = ext[choice].to_numpy(float)
    for estimator, stacking in (*VARIANTS, ("log_odds_sum", "none")):
        if estimator == "log_odds_sum":
            s = log_odds_sum(clinical, split, ext, alone)
        else:
            sig = tabular.signature_values(full[choice], oof[choice], split, stacking)
            model, _, feats = tabular.dl_clinical_model(
                clinical, split, sig, name, settings[estimator]
            )
            s = tabular.predict_scores(model, ext, feats)
        scores[(estimator, stacking)] = s
        a, lo, hi = delong_ci(y, s)
        vs_sig = metrics.delong_test(y, s, alone)
        vs_paper = metrics.delong_test(y, s, scores[("extra_trees", "in_sample")])
        row = {
            "study": study.name,
            "signature": choice,
            "estimator": estimator,
            "stacking": stacking,
            "n": len(y),
            "n_er": int(y.sum()),
            "auc": round(a, 4),
            "ci_low": round(lo, 4),
            "ci_high": round(hi, 4),
            "signature_auc": round(metrics.auc(y, alone), 4),
            "diff_vs_signature": round(vs_sig["diff"], 4),
            "p_vs_signature": round(vs_sig["p"], 4),
            "diff_vs_paper": round(vs_paper["diff"], 4),
            "p_vs_paper": round(vs_paper["p"], 4),
            "learnable_ceiling": round(learn[f"Clinical+{choice}"], 4),
        }
        for i in sorted(ext["cohort_index"].unique()):
            m = (ext["cohort_index"] == i).to_numpy()
            t = metrics.delong_test(y[m], s[m], alone[m])
            half = 1.959964 * t["se"]
            row[f"c{i}_diff_vs_signature"] = round(t["diff"], 4)
            row[f"c{i}_diff_ci"] = f"{t['diff'] - half:.3f}..{t['diff'] + half:.3f}"
        rows.append(row)
    return rows


def internal_rows(study: Path) -> list[dict]:
    """Every tabular model, the margin variants included, refitted for each estimator x
    stacking on the study's training patients and scored on its own test patients (the
    held-out sites; the fresh cohorts carry no margin measurements)."""
    from recur.deploy.bundle import load_bundle
    from recur.margin.models import fit_margin_model
    from recur.models import tabular

    clinical, split, full, oof = study_tables(study)
    margins = pd.read_csv(study / "results" / "margin" / "margin.csv", dtype={"patient_id": str})
    features = load_bundle(study / "results" / "bundle").settings["margin"]["features"]
    choice, _ = tabular.choose_signature(full, clinical)
    name = f"{choice}_signature"
    rows = []
    for estimator, stacking in VARIANTS:
        st = tabular.TabularSettings.defaults(estimator=estimator)
        sig = tabular.signature_values(full[choice], oof[choice], split, stacking)
        fits = {
            "Clinical": tabular.clinical_model(clinical, split, st)[1],
            "DL_Clinical": tabular.dl_clinical_model(clinical, split, sig, name, st)[1],
            "Clinical_Margin": fit_margin_model(
                "Clinical_Margin", clinical, split, margins, features, st
            )[1],
            "DL_Clinical_Margin": fit_margin_model(
                "DL_Clinical_Margin", clinical, split, margins, features, st, sig, name
            )[1],
        }
        for model, pred in fits.items():
            if model.startswith("Clinical") and stacking == "crossfit":
                continue  # no signature: stacking changes nothing
            test = pred[pred["split"] == "test"].merge(
                clinical[["patient_id", "er"]], on="patient_id", suffixes=("_pred", "")
            )
            a, lo, hi = delong_ci(test["er"].to_numpy(int), test["score"].to_numpy(float))
            rows.append(
                {
                    "study": study.name,
                    "model": model,
                    "estimator": estimator,
                    "stacking": stacking if "DL" in model else "-",
                    "n": len(test),
                    "n_er": int(test["er"].sum()),
                    "auc": round(a, 4),
                    "ci_low": round(lo, 4),
                    "ci_high": round(hi, 4),
                }
            )
    return rows


def log_odds_sum(clinical, split, ext: pd.DataFrame, signature: np.ndarray) -> np.ndarray:
    """A fusion without fitting the signature's weight: the signature's log-odds plus the
    linear predictor of the logistic Clinical model (fitted on the study's train split), i.e.
    the two combined as if independent given the outcome."""
    from recur.constants import CLINICAL_FEATURES
    from recur.models import tabular

    model, _ = tabular.clinical_model(
        clinical, split, tabular.TabularSettings.defaults(estimator="logistic")
    )
    feats = list(CLINICAL_FEATURES)
    design = model[:-1].transform(ext[feats].astype(float).to_numpy())
    lp = design @ model.named_steps["logistic"].coef_[0]
    return tabular.clipped_logit(signature) + lp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, action="append", required=True)
    ap.add_argument("--cohort", type=Path, action="append", required=True)
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument(
        "--internal-csv",
        type=Path,
        default=None,
        help="also refit every tabular model (margin variants included) per estimator x "
        "stacking and score each study's own test patients",
    )
    a = ap.parse_args(argv)
    if a.internal_csv:
        internal = pd.DataFrame([r for s in a.study for r in internal_rows(s.resolve())])
        print(internal.to_string(index=False))
        internal.to_csv(a.internal_csv, index=False)
    rows = [r for s in a.study for r in measure(s.resolve(), [c.resolve() for c in a.cohort])]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string(index=False))
    if a.csv:
        table.to_csv(a.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
