"""Benchmark of the synthetic cohort generator (``recur synth``).

Prints three tables:

1. **Ceilings**: the best AUCs achievable on a 2,000-patient training site from the clinical
   variables alone (E[p | clinical]), clinical + pre-ablation images (E[p | clinical, pre]) and
   everything (p), by Monte Carlo over the unobserved latent components; median over seeds.
2. **Generation**: wall seconds, CPU seconds and MB of DICOM per patient for a small cohort
   written with ``workers`` processes, extrapolated to the default 289-patient cohort (or
   measured on it with ``--full``).
3. **Slice writer**: the fast series encoder against pydicom's ``Dataset.save_as`` (the
   reference), median of repeats, with the ratio.

Usage: ``python bench/bench_synth.py [--n-patients 20] [--workers 2] [--full] [--csv out.csv]``
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recur.synthetic.anatomy import Grid
from recur.synthetic.ceilings import outcome_ceilings
from recur.synthetic.cohort import SyntheticSettings, write_cohort
from recur.synthetic.dicom_writer import write_series
from recur.synthetic.latent import sample_latent
from recur.synthetic.sites import SITE_PROFILES


def ceilings(seeds: list[int], n: int, n_mc: int) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        lat = sample_latent(n, (20, 15), seed, er_share=None)
        t_lat = time.perf_counter() - t0
        tr = lat[lat["cohort"] == "train"]
        c = outcome_ceilings(tr, n_mc=n_mc, seed=seed)
        rows.append(
            {
                "seed": seed,
                **c,
                "sample_latent_s": t_lat,
                "margin_p02": tr["margin_mm"].quantile(0.02),
                "margin_p98": tr["margin_mm"].quantile(0.98),
            }
        )
    return pd.DataFrame(rows)


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def generation(n_train: int, n_test: tuple[int, ...], workers: int, keep: Path | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    out = (keep or tmp) / "cohort"
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    settings = SyntheticSettings.defaults(
        n_train=n_train, n_test=tuple(n_test), seed=2025, er_share=None
    )
    write_cohort(out, settings, workers=workers)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    n = n_train + sum(n_test)
    clin = pd.read_csv(out / "clinical.csv")
    sizes = {
        site: sum(
            p.stat().st_size
            for pid in grp["patient_id"]
            for p in (out / "dicom" / pid).rglob("*")
            if p.is_file()
        )
        / len(grp)
        / 1e6
        for site, grp in clin.groupby("site")
    }
    if keep is None:
        shutil.rmtree(tmp)
    per_site = dict(zip(*np.unique(clin["site"], return_counts=True), strict=True))
    default = {"siteA": 254, "siteB": 20, "siteC": 15}
    mb_289 = sum(sizes.get(s, size / n / 1e6) * k for s, k in default.items())
    return {
        "patients": n,
        "workers": workers,
        "wall_s": wall,
        "cpu_s": cpu,
        "wall_s_per_patient": wall / n,
        "cpu_s_per_patient": cpu / n,
        "mb_per_patient": size / n / 1e6,
        **{f"mb_per_patient_{s}": v for s, v in sizes.items()},
        "extrapolated_289_wall_s": wall / n * 289,
        "extrapolated_289_gb": mb_289 / 1e3,
        "sites": per_site,
    }


def slice_writer(repeats: int) -> dict:
    """CPU seconds per slice: the fast encoder vs pydicom ``save_as`` (reference), same data.

    CPU time, not wall time: file creation dominates wall time on a shared disk.
    """
    site = SITE_PROFILES["siteA"]
    grid = Grid((-140.0, -140.0, -60.0), (1.75, 1.75, 5.0), (160, 160, 24))
    vol = np.random.default_rng(0).integers(0, 4000, (24, 160, 160)).astype(np.uint16)
    header = {
        "PatientName": "FAKEMAN^ALPHA",
        "PatientID": "FKMRN1",
        "StudyInstanceUID": "1.2.3",
        "SeriesDescription": "ART",
        "_private": "FAKEPRIV-0",
    }
    times: dict[str, list[float]] = {"fast": [], "save_as": []}
    for rep in range(repeats + 1):  # the first round warms up (imports, caches)
        for mode in ("fast", "save_as"):
            tmp = Path(tempfile.mkdtemp(prefix="bench_synth_w_"))
            t0 = time.process_time()
            if mode == "fast":
                write_series(
                    tmp,
                    vol,
                    grid,
                    header=header,
                    site=site,
                    name_rng=np.random.default_rng(1),
                    uid_key=(0, "P", "pre", "AP"),
                    compress=False,
                )
            else:
                import pydicom

                fast_dir = Path(tempfile.mkdtemp(prefix="bench_synth_r_"))
                one = Grid(grid.origin, grid.spacing, (160, 160, 1))
                write_series(
                    fast_dir,
                    vol[:1],
                    one,
                    header=header,
                    site=site,
                    name_rng=np.random.default_rng(1),
                    uid_key=(0, "P", "pre", "AP"),
                    compress=False,
                )
                ds = pydicom.dcmread(next(fast_dir.iterdir()))
                shutil.rmtree(fast_dir)
                t0 = time.process_time()
                for k in range(vol.shape[0]):
                    ds.InstanceNumber = k + 1
                    ds.PixelData = vol[k].tobytes()
                    ds.save_as(tmp / f"{k:04d}", enforce_file_format=True)
            if rep:
                times[mode].append((time.process_time() - t0) / vol.shape[0])
            shutil.rmtree(tmp)
    fast, ref = statistics.median(times["fast"]), statistics.median(times["save_as"])
    return {
        "fast_cpu_ms_per_slice": fast * 1e3,
        "save_as_cpu_ms_per_slice": ref * 1e3,
        "ratio_fast_to_save_as": fast / ref,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-patients", type=int, default=20, help="size of the timed cohort")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="time the default 289-patient cohort")
    ap.add_argument("--n", type=int, default=2000, help="training patients for the ceilings")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--n-mc", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the timed cohort here (kept)")
    ap.add_argument("--csv", type=Path, help="write all figures as CSV (metric, value)")
    a = ap.parse_args()

    rows: list[tuple[str, float]] = []
    ceil = ceilings(a.seeds, a.n, a.n_mc)
    print(f"== AUC ceilings, n = {a.n} training patients, {a.n_mc} MC draws")
    print(ceil.round(3).to_string(index=False))
    for k in ("clinical", "clinical_pre", "all", "prevalence"):
        med = float(ceil[k].median())
        rows.append((f"ceiling_{k}_median", med))
        print(f"median {k:>13}: {med:.3f}")

    if a.full:
        n_train, n_test = 254, (20, 15)
    else:
        n_test = (max(1, round(a.n_patients * 20 / 289)), max(1, round(a.n_patients * 15 / 289)))
        n_train = max(4, a.n_patients - sum(n_test))
    gen = generation(n_train, n_test, a.workers, a.keep)
    print(f"\n== generation ({gen['patients']} patients {gen['sites']}, workers = {a.workers})")
    for k, v in gen.items():
        if isinstance(v, float):
            print(f"{k:>28}: {v:.3f}")
            rows.append((f"generation_{k}", v))
    if not a.full:
        print("(289-patient figures are extrapolated from this cohort)")

    sw = slice_writer(a.repeats)
    print(f"\n== slice writer (median of {a.repeats}; reference = pydicom save_as)")
    for k, v in sw.items():
        print(f"{k:>28}: {v:.3f}")
        rows.append((f"writer_{k}", v))
    if a.csv:
        pd.DataFrame(rows, columns=["metric", "value"]).to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
