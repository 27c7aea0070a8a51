"""The radiomics models of a finished study measured on fresh external synthetic cohorts.

For a study run by the workflow (its ``results/``: registered phases, masks, split, clinical
table, bundle) and fresh cohorts scored before by ``bench/bench_external.py`` (their Pre,
PrePost, Clinical and DL_Clinical scores under ``bench_external_work/``):

1. every study patient's features with the workflow's function
   (:func:`recur.radiomics.features.features_files`, the ``radiomics-features`` rule's) from
   the study's registered volumes and masks, in a process pool (cached in ``--work``);
2. Radiomics_Pre, Radiomics_PrePost and Radiomics_Clinical fitted on the study's training
   patients with the ``radiomics-models`` rule's functions and the schema's defaults (a study
   run before the radiomics rules existed has no fitted radiomics models);
3. every external patient prepared from DICOM with the workflow's functions and the study
   bundle's settings (conversion, mask check, registration: the path of ``recur predict``),
   then its features (cached per cohort and image settings in ``--work``; the time of the
   preparation and of the extraction alone kept per patient in ``timing.csv`` there);
4. each model's AUC (DeLong 95% CI) on the pooled external patients, beside Pre, PrePost,
   Clinical and DL_Clinical on the same patients and the ceilings of each model's information
   (:func:`recur.synthetic.ceilings.information_ceilings`; Radiomics_Pre sees the Pre
   information, Radiomics_PrePost the PrePost, Radiomics_Clinical the clinical variables and
   the PrePost information), and the paired DeLong tests against the DL models.

    .venv/bin/python bench/bench_radiomics.py --study /tmp/studyA [--scores scoresA] \\
        --cohort /tmp/ext7/cohort --cohort /tmp/ext11/cohort [--limit 50] \\
        --work /tmp/radiomics_work --workers 2 --csv bench/results/<file>.csv

``--limit N`` takes the first N scored patients of each cohort (all when left out).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

PARAMS = REPO / "radiomics_params.yaml"
_STATE: dict = {}
#: the information set of recur.synthetic.ceilings each model sees
SEEN = {
    "Pre": "Pre",
    "PrePost": "PrePost",
    "Clinical": "Clinical",
    "Radiomics_Pre": "Pre",
    "Radiomics_PrePost": "PrePost",
    "Radiomics_Clinical": "Clinical+PrePost",
}
PAIRS = (
    ("Radiomics_Pre", "Pre"),
    ("Radiomics_PrePost", "PrePost"),
    ("Radiomics_PrePost", "Radiomics_Pre"),
    ("Radiomics_Clinical", "DL_Clinical"),
)


def _settings():
    from recur.radiomics.settings import FeatureSettings

    return FeatureSettings.defaults()


def _study_job(args: tuple[str, str, str]) -> tuple[str, float, str]:
    """Features of one study patient from the study's registered volumes (cached)."""
    from recur.radiomics.features import features_files

    study, patient, out = args
    if Path(out).is_file():
        return patient, float("nan"), ""
    res = Path(study) / "results"
    try:
        _, secs = features_files(
            {t: res / "registered" / patient / t for t in ("pre", "post")},
            {t: res / "masks" / patient / f"{t}.nii.gz" for t in ("pre", "post")},
            PARAMS,
            out,
            _settings(),
            patient,
        )
    except Exception as exc:  # reported per patient
        return patient, float("nan"), f"{type(exc).__name__}: {exc}"
    return patient, secs, ""


def _init_external(bundle_dir: str, cohort: str) -> None:
    from recur.deploy import predict
    from recur.deploy.bundle import load_bundle

    logging.basicConfig(level=logging.WARNING)
    c = Path(cohort)
    _STATE["bundle"] = load_bundle(bundle_dir)
    _STATE["inputs"] = predict.read_inputs(
        c / "series.csv", c / "rois.csv", c / "clinical.csv", cohort_dir=c
    )


def _external_job(args: tuple[str, str, str]) -> tuple[str, float, float, str]:
    """One external patient: DICOM -> NIfTI -> checked masks -> registration (the
    workflow's functions, the bundle's settings), then its features. Returns (id,
    preparation s, extraction s, error)."""
    from recur.preprocess import convert, masks, register
    from recur.radiomics.features import features_files

    patient, out, tmp = args
    if Path(out).is_file():
        return patient, float("nan"), float("nan"), ""
    bundle, inputs = _STATE["bundle"], _STATE["inputs"]
    work = Path(tmp)
    t0 = time.perf_counter()
    try:
        convert.convert_patient(
            inputs.series_root,
            inputs.series_csv,
            patient,
            work / "nifti",
            settings=bundle.convert_settings(),
        )
        cohort_masks = masks.CohortMasks.from_tables(
            inputs.rois, inputs.rois_root, inputs.series, inputs.series_root, bundle.roi_settings()
        )
        register.register_patient(
            work / "nifti",
            work / "registered",
            bundle.registration_settings(),
            masks_dir=work / "masks",
            check_mask=lambda tp, dp, o: cohort_masks.check(patient, tp, dp, o),
            threads=1,
        )
        prep = time.perf_counter() - t0
        _, secs = features_files(
            {t: work / "registered" / t for t in ("pre", "post")},
            {t: work / "masks" / f"{t}.nii.gz" for t in ("pre", "post")},
            PARAMS,
            out,
            _settings(),
            patient,
        )
    except Exception as exc:
        return patient, time.perf_counter() - t0, float("nan"), f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return patient, prep, secs, ""


def _run(pool_args, fn, jobs, workers, what):
    rows = []
    with mp.get_context("fork").Pool(workers, *pool_args) as pool:
        for i, r in enumerate(pool.imap_unordered(fn, jobs), 1):
            rows.append(r)
            if r[-1]:
                print(f"  {what} {r[0]}: {r[-1]}", flush=True)
            if i % 25 == 0 or i == len(jobs):
                print(f"  {what}: {i}/{len(jobs)}", flush=True)
    return rows


def read_tables(folder: Path, patients) -> dict[str, pd.DataFrame]:
    return {
        p: pd.read_csv(folder / f"{p}.csv") for p in patients if (folder / f"{p}.csv").is_file()
    }


def cohort_scores(cohort: Path, name: str) -> pd.DataFrame:
    """The DL and clinical scores of a cohort's patients kept in ``<cohort>/../<name>.csv``
    (``bench_external.py``'s per-patient scores of one study), joined with the truth."""
    from recur.synthetic import cohort as synth

    path = cohort.parent / f"{name}.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found")
    scores = pd.read_csv(path, dtype={"patient_id": str})
    truth, _ = synth.load_truth(cohort.parent / "truth.csv")
    both = scores.merge(truth, on="patient_id", suffixes=("", "_truth"), validate="1:1")
    if len(both) != len(scores) or (both["er"] != both["er_truth"]).any():
        raise SystemExit(f"{path}: scores and truth.csv disagree")
    return both.drop(columns="er_truth")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, required=True)
    ap.add_argument("--cohort", type=Path, action="append", required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument(
        "--scores",
        default=None,
        help="the study's scores kept beside each cohort (scoresA: <cohort>/../scoresA.csv); "
        "default: bench_external.py's file of the study bundle's digest",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-mc", type=int, default=200)
    ap.add_argument("--csv", type=Path, default=None)
    a = ap.parse_args(argv)

    from bench_external import delong_ci, image_settings_key, scores_name
    from pool_external import pooled_scores
    from recur.cohort.split import read_split
    from recur.deploy.bundle import load_bundle
    from recur.evaluate import readers
    from recur.evaluate.metrics import delong_test
    from recur.models import tabular
    from recur.radiomics import model as rm
    from recur.radiomics.settings import ModelSettings
    from recur.synthetic.ceilings import information_ceilings

    study = a.study.resolve()
    res = study / "results"
    name = study.name
    # 1. the study's features
    split = read_split(res / "splits" / "split.csv")
    clinical = readers.read_clinical(res / "synthetic" / "cohort" / "clinical.csv")
    feat_dir = a.work / name / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(study), p, str(feat_dir / f"{p}.csv")) for p in split["patient_id"]]
    t0 = time.perf_counter()
    rows = _run((), _study_job, jobs, a.workers, f"{name} features")
    secs = [r[1] for r in rows if np.isfinite(r[1])]
    if secs:
        print(
            f"{name}: {len(secs)} patients extracted in {time.perf_counter() - t0:.0f} s wall; "
            f"per patient median {np.median(secs):.2f} s (IQR {np.percentile(secs, 25):.2f}-"
            f"{np.percentile(secs, 75):.2f})",
            flush=True,
        )
    wide = rm.feature_matrix(read_tables(feat_dir, split["patient_id"]))
    # 2. the models, fitted on the study's training patients
    st = ModelSettings.defaults()
    fusion_settings = tabular.TabularSettings.defaults("dl_clinical")
    fitted, preds = {}, {}
    for model in rm.MODEL_TIMEPOINTS:
        t1 = time.perf_counter()
        pipe, pred, feats = rm.fit_radiomics_model(model, wide, split, clinical, st)
        fitted[model], preds[model] = (pipe, feats), pred
        print(rm.selection_summary(pipe, feats, model), f"{time.perf_counter() - t1:.0f} s")
    oof = rm.out_of_fold_scores(rm.FUSED, wide, split, clinical, st)
    fused, _, fused_feats = rm.fit_fusion_model(
        preds[rm.FUSED], oof, split, clinical, fusion_settings
    )
    for model, pred in preds.items():
        ext = pred[pred["cohort"] == "test"]
        y = clinical.set_index("patient_id").loc[ext["patient_id"], "er"].to_numpy()
        print(f"{name} own external ({len(y)}): {model} AUC {delong_ci(y, ext['score'])[0]:.3f}")
    # 3. the external patients
    bundle_dir = res / "bundle"
    bundle = load_bundle(bundle_dir)
    key, sname = image_settings_key(bundle.settings), scores_name(bundle_dir)
    parts, timing = [], []
    for i, cohort in enumerate(c.resolve() for c in a.cohort):
        dl = cohort_scores(cohort, a.scores) if a.scores else pooled_scores([cohort], key, sname)
        dl["patient_id"] = dl["patient_id"].str.split(":", n=1).str[-1]
        if a.limit:
            dl = dl.iloc[: a.limit]
        tag = cohort.parent.name
        # the features depend on the image settings only: studies with equal settings share them
        out_dir = a.work / tag / key / "features"
        out_dir.mkdir(parents=True, exist_ok=True)
        jobs = [
            (p, str(out_dir / f"{p}.csv"), str(a.work / tag / "tmp" / p)) for p in dl["patient_id"]
        ]
        rows = _run(
            (_init_external, (str(bundle_dir), str(cohort))),
            _external_job,
            jobs,
            a.workers,
            tag,
        )
        new = [r for r in rows if np.isfinite(r[2])]
        timing += new
        if new:
            log_path = a.work / tag / key / "timing.csv"
            pd.DataFrame(new, columns=["patient_id", "prepare_s", "extract_s", "error"]).to_csv(
                log_path, mode="a", header=not log_path.is_file(), index=False
            )
        ext_wide = rm.feature_matrix(read_tables(out_dir, dl["patient_id"]))
        ext_wide = ext_wide.reindex(dl["patient_id"])
        for model, (pipe, feats) in fitted.items():
            dl[model] = rm.score(pipe, ext_wide, feats)
        ext_clin = readers.read_clinical(cohort / "clinical.csv").set_index("patient_id")
        data = ext_clin.loc[dl["patient_id"]].reset_index()
        data[f"{rm.FUSED}_signature"] = dl[rm.FUSED].to_numpy()
        dl["Radiomics_Clinical"] = tabular.predict_scores(fused, data, fused_feats)
        dl["patient_id"] = f"c{i}:" + dl["patient_id"]
        parts.append(dl)
    if timing:
        prep = np.array([r[1] for r in timing])
        ext = np.array([r[2] for r in timing])
        print(
            f"external: {len(timing)} patients newly prepared; preparation median "
            f"{np.median(prep):.1f} s, feature extraction median {np.median(ext):.2f} s "
            f"(IQR {np.percentile(ext, 25):.2f}-{np.percentile(ext, 75):.2f}) per patient"
        )
    data = pd.concat(parts, ignore_index=True)
    y = data["er"].to_numpy()
    ceil = information_ceilings(data, n_mc=a.n_mc)
    table = []
    for model in (*SEEN, "DL_Clinical"):
        info = SEEN.get(model, "Clinical+" + bundle.signature)
        auc, lo, hi = delong_ci(y, data[model].to_numpy())
        table.append(
            {
                "study": name,
                "model": model,
                "n": len(y),
                "n_er": int(y.sum()),
                "auc": round(auc, 3),
                "ci_low": round(lo, 3),
                "ci_high": round(hi, 3),
                "information": info,
                "ceiling": round(ceil[info], 3),
                "gap": round(ceil[info] - auc, 3),
            }
        )
    for m_a, m_b in PAIRS:
        t = delong_test(y, data[m_a].to_numpy(), data[m_b].to_numpy())
        table.append(
            {"study": name, "model": f"{m_a} - {m_b}", "auc": round(t["diff"], 3), "p": t["p"]}
        )
    table = pd.DataFrame(table).astype({"n": "Int64", "n_er": "Int64"})
    print(f"{len(a.cohort)} cohorts: {len(y)} patients, {int(y.sum())} with ER")
    print(table.to_string(index=False))
    if a.csv:
        table.to_csv(a.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
