"""External validation of a finished study's models on a large fresh synthetic cohort.

The trained models of a workflow run (its verified bundle, ``results/bundle``) score a large
external cohort made by the same generator with another seed (fresh patients, the test sites
siteB/siteC), every patient going through the workflow's own functions from DICOM
(:func:`recur.deploy.predict.prepare_patient`: conversion, mask check, registration, margin,
crops) in a process pool, then :func:`recur.deploy.scoring.network_outputs` and
:func:`recur.deploy.scoring.score_all` (the four models Pre, PrePost, Clinical, DL_Clinical).
Each model's AUC (DeLong 95% CI) is printed beside the ceiling the generator's truth allows
for the information that model sees (:func:`recur.synthetic.ceilings.information_ceilings`:
Pre = tumour size + pre-image latents, PrePost = + margin, Clinical = the clinical variables,
DL_Clinical = clinical + the chosen signature's information), the same without the satellite
nodule (Pre and PrePost: a latent the crops barely show), and, for a synthetic study, the
"learnable" ceilings (:func:`recur.synthetic.ceilings.learnable_ceilings`: a logistic
regression on the true latents fitted on the study's training patients).

    .venv/bin/python bench/bench_external.py --study /work/main --cohort /tmp/ext/cohort \\
        [--n-test 500 500 --seed 7] [--workers 2] [--csv out.csv]

The cohort is generated first when ``--cohort`` does not exist (``recur synth``; ~0.6 CPU s
per patient); crops are cached in ``--work``/<digest of the image settings> so an interrupted
run resumes and a bundle made with other crop settings never reuses them.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

log = logging.getLogger("bench_external")
_STATE: dict = {}


def image_settings_key(settings: dict) -> str:
    """A short digest of the settings that make the crops (convert ... crop, margin)."""
    import hashlib
    import json

    parts = {k: settings.get(k) for k in ("convert", "registration", "crop", "margin")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def scores_name(bundle_dir: Path) -> str:
    """The file, beside the cached crops, that keeps one bundle's scores of the cohort: the
    crops depend on the image settings only, the scores on the trained models."""
    import hashlib

    digest = hashlib.sha256((Path(bundle_dir) / "manifest.json").read_bytes()).hexdigest()
    return f"scores-{digest[:12]}.csv"


def _init(bundle_dir: str, cohort: str, work: str) -> None:
    from recur.deploy import predict
    from recur.deploy.bundle import load_bundle

    logging.basicConfig(level=logging.WARNING)
    c = Path(cohort)
    _STATE["bundle"] = load_bundle(bundle_dir)
    _STATE["inputs"] = predict.read_inputs(
        c / "series.csv", c / "rois.csv", c / "clinical.csv", cohort_dir=c
    )
    _STATE["work"] = Path(work)


def _prepare(patient: str) -> tuple[str, float, str]:
    """Crops of one patient (cached); returns (id, seconds, error or '')."""
    import shutil

    from recur.deploy import predict

    work = _STATE["work"]
    out = work / "crops" / f"{patient}.npz"
    if out.is_file():
        return patient, 0.0, ""
    t0 = time.perf_counter()
    tmp = work / "tmp" / patient
    try:
        predict.prepare_patient(
            patient, _STATE["inputs"], _STATE["bundle"], tmp, out, work / "qc" / patient
        )
    except Exception as exc:  # reported per patient, the run goes on
        return patient, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return patient, time.perf_counter() - t0, ""


def delong_ci(y: np.ndarray, score: np.ndarray) -> tuple[float, float, float]:
    """AUC and its DeLong 95% CI (:func:`recur.evaluate.metrics.delong_auc_cov`)."""
    from scipy import stats

    from recur.evaluate.metrics import delong_auc_cov

    aucs, cov = delong_auc_cov(y, np.asarray(score, dtype=float)[None, :])
    half = stats.norm.ppf(0.975) * float(np.sqrt(cov[0, 0]))
    return float(aucs[0]), float(aucs[0] - half), float(aucs[0] + half)


def seen_information(signature: str) -> dict[str, str]:
    """Model -> the information set of :data:`recur.synthetic.ceilings.INFORMATION_SETS` it sees
    (DL_Clinical: the clinical variables + the information of the chosen signature)."""
    return {
        "Pre": "Pre",
        "PrePost": "PrePost",
        "Clinical": "Clinical",
        "DL_Clinical": "Clinical+" + signature,
    }


def learnable_for(study: Path, truth: pd.DataFrame) -> dict[str, float]:
    """What a perfect reader of each information set's true latents reaches on ``truth``'s
    patients when it learns their weights from the study's training patients (logistic
    regression, :func:`recur.synthetic.ceilings.learnable_ceilings`); empty unless ``study`` is a
    synthetic study (its truth.csv is there)."""
    from recur.synthetic import cohort as synth
    from recur.synthetic.ceilings import learnable_ceilings

    study_truth = study / "results" / "synthetic" / "truth.csv"
    if not study_truth.is_file():
        return {}
    st, _ = synth.load_truth(study_truth)
    split = pd.read_csv(study / "results" / "splits" / "split.csv", dtype=str)
    st = st[st["patient_id"].isin(split.loc[split["split"] == "train", "patient_id"])]
    return learnable_ceilings(st, truth)


def summary_table(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    seen: dict[str, str],
    ceil: dict[str, float],
    learn: dict[str, float],
) -> pd.DataFrame:
    """One row per scored model: AUC (DeLong 95% CI) beside the ceilings of its information
    (``ceil``: :func:`recur.synthetic.ceilings.information_ceilings` of the scored patients) and the
    learnable ceilings (``learn``: :func:`learnable_for`)."""
    rows = []
    for name, score in scores.items():
        info = seen[name]
        auc, lo, hi = delong_ci(y, np.asarray(score))
        no_sat = f"{info}_without_satellite"
        rows.append(
            {
                "model": name,
                "n": len(y),
                "n_er": int(y.sum()),
                "auc": round(auc, 3),
                "ci_low": round(lo, 3),
                "ci_high": round(hi, 3),
                "information": info,
                "ceiling": round(ceil[info], 3),
                "gap": round(ceil[info] - auc, 3),
                "ceiling_without_satellite": round(ceil.get(no_sat, np.nan), 3),
                "learnable": round(learn.get(info, np.nan), 3),
                "learnable_without_satellite": round(learn.get(no_sat, np.nan), 3),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, required=True, help="workdir with results/bundle")
    ap.add_argument("--cohort", type=Path, required=True, help="external synthetic cohort dir")
    ap.add_argument("--n-test", type=int, nargs="+", default=[500, 500])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=None, help="crop cache (default: beside)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="score only the first N patients")
    ap.add_argument("--stride", type=int, default=1, help="score every k-th patient only")
    ap.add_argument("--n-mc", type=int, default=200)
    ap.add_argument("--csv", type=Path, default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from recur.deploy import predict
    from recur.deploy.bundle import load_bundle
    from recur.synthetic import cohort as synth
    from recur.synthetic.ceilings import information_ceilings

    cohort = a.cohort.resolve()
    truth_csv = cohort.parent / "truth.csv"
    if not cohort.is_dir():
        cmd = [sys.executable, "-m", "recur", "synth", str(cohort), "--n-train", "2"]
        cmd += ["--independent-outcomes"]
        cmd += ["--n-test", *map(str, a.n_test), "--seed", str(a.seed)]
        subprocess.run(cmd, check=True)
    bundle_dir = (a.study / "results" / "bundle").resolve()
    bundle = load_bundle(bundle_dir)
    # the crop cache is only valid for the image settings it was made with
    work = (a.work or cohort.parent / "bench_external_work").resolve() / image_settings_key(
        bundle.settings
    )
    (work / "crops").mkdir(parents=True, exist_ok=True)
    clinical = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str})
    ext = clinical[clinical["cohort"] == "test"].iloc[:: a.stride].reset_index(drop=True)
    if a.limit:
        ext = ext.head(a.limit)
    ids = list(ext["patient_id"])
    log.info("%d external patients; bundle %s", len(ids), bundle_dir)

    t0 = time.perf_counter()
    secs, failed = [], {}
    with mp.get_context("spawn").Pool(
        a.workers, initializer=_init, initargs=(str(bundle_dir), str(cohort), str(work))
    ) as pool:
        for i, (pid, s, err) in enumerate(pool.imap_unordered(_prepare, ids), 1):
            if err:
                failed[pid] = err
            elif s:
                secs.append(s)
            if i % 50 == 0:
                log.info("prepared %d/%d", i, len(ids))
    prep_wall = time.perf_counter() - t0
    ok = [p for p in ids if p not in failed]
    for pid, err in failed.items():
        log.warning("%s failed: %s", pid, err)

    inputs = predict.read_inputs(
        cohort / "series.csv", cohort / "rois.csv", cohort / "clinical.csv", cohort_dir=cohort
    )
    table = inputs.clinical.set_index("patient_id").loc[ok].reset_index()
    from recur.constants import MODELS
    from recur.deploy import scoring

    models = scoring.load_models(bundle)
    pts = scoring.Patients(ok, table, dict.fromkeys(ok, True), work / "crops")
    pts.network = scoring.network_outputs(bundle, pts, models)
    wide = scoring.score_all(bundle, pts, models).pivot(
        index="patient_id", columns="model", values="probability"
    )
    scores = {m: wide.loc[ok, m].to_numpy(float) for m in MODELS}
    # the same networks scored on the plain view only (train.tta off), for comparison
    dl = [e for e in bundle.entries if e.kind == "dl"]
    plain_models = {
        **models,
        **{e.key: (models[e.key][0], replace(models[e.key][1], tta=False)) for e in dl},
    }
    plain_net = scoring.network_outputs(bundle, pts, plain_models)
    plain = {
        e.name: bundle.recalibrations[e.name].apply([plain_net[e.name][p] for p in ok]) for e in dl
    }
    tta_on = {e.name: models[e.key][1].tta for e in dl}

    truth, _ = synth.load_truth(truth_csv)
    truth = truth.set_index("patient_id").loc[ok].reset_index()
    ceil = information_ceilings(truth, n_mc=a.n_mc)
    learn = learnable_for(a.study, truth)
    y = truth["er"].to_numpy()
    seen = seen_information(bundle.signature)
    out = summary_table(y, scores, seen, ceil, learn)
    out = pd.concat(
        [
            out,
            summary_table(
                y,
                {f"{m} (plain view, no TTA)": plain[m] for m in ("Pre", "PrePost") if tta_on[m]},
                {f"{m} (plain view, no TTA)": seen[m] for m in ("Pre", "PrePost")},
                ceil,
                learn,
            ),
        ],
        ignore_index=True,
    )
    print(out.to_string(index=False))
    from recur.evaluate.metrics import delong_test

    for a_, b_ in (("PrePost", "Pre"), ("DL_Clinical", "Clinical")):
        t = delong_test(y, scores[a_], scores[b_])
        print(f"DeLong {a_} vs {b_}: diff {t['diff']:+.3f}, p = {t['p']:.3g}")
    for m in ("Pre", "PrePost"):
        if tta_on[m]:
            t = delong_test(y, scores[m], plain[m])
            print(f"DeLong {m} TTA vs plain view: diff {t['diff']:+.3f}, p = {t['p']:.3g}")
    print(
        f"ceiling with everything: {ceil['all']:.3f}; prevalence {ceil['prevalence']:.3f}; "
        f"{len(failed)} patients failed; preprocessing {prep_wall:.0f} s wall "
        f"({np.median(secs) if secs else float('nan'):.1f} s median per patient, "
        f"{a.workers} workers)"
    )
    if a.csv:
        out.to_csv(a.csv, index=False)
    # the DL models' recalibrated scores, their networks' outputs ({m}_raw: the signature the
    # fusion models take) and the truth's ER
    raw = {f"{m}_raw": [pts.network[m][p] for p in ok] for m in ("Pre", "PrePost")}
    pd.DataFrame({"patient_id": ok, **{m: scores[m] for m in seen}, **raw, "er": y}).to_csv(
        work / scores_name(bundle_dir), index=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
