"""Benchmark of Pre and PrePost training on the CPU: seconds per epoch, peak RSS, total time.

Writes a toy cohort of random crops (default 250 patients, 128x128, about 1.6 MB each) to a
temporary folder, then trains each model once per repeat in a fresh subprocess (so the peak
RSS is that model's own) with the default network and optimiser settings, and prints a table:
median wall seconds per epoch (training + tuning evaluation), median wall and CPU time of
the whole job (data loading, training, scoring every patient; CPU time is the better guide on
a shared machine), peak RSS, and the per-epoch ratio to Pre (the reference, measured in the
same run).

    .venv/bin/python bench/bench_train.py [--patients 250] [--epochs 3] [--threads 2]
                                          [--repeats 1] [--device cpu] [--csv bench_train.csv]

``--device cuda`` times the same jobs on a GPU (``peak_gpu_mb``: torch's peak allocation).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(args: argparse.Namespace) -> None:
    """Child process: train one model once and print a JSON line of measurements."""
    from recur.models.jobs import run_training
    from recur.models.train import TrainConfig, configure_torch

    configure_torch(0, args.threads)
    root = Path(args.data)
    t0, c0 = time.perf_counter(), time.process_time()
    outdir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    # the default config's network and input (ROI channels for the models train.roi_channel
    # lists, the toy measured margin as a second target for those train.margin_target lists);
    # scores of the plain view (no test-time augmentation) and no covariate offset (the toy
    # clinical table has no covariates), as the recorded results were measured
    config = TrainConfig.defaults(
        epochs=args.epochs, patience=args.epochs, tta=False, offset={"models": []}
    )
    margin = args.one in config.margin_target
    run_training(
        config,
        args.one,
        fold="full",
        split_csv=root / "split.csv",
        clinical_csv=root / "clinical.csv",
        crops_dir=root / "crops",
        outdir=outdir,
        device=args.device,
        aux_csv=root / "margin.csv" if margin else None,
    )
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    import pandas as pd

    log = pd.read_csv(outdir / "training_log.csv")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import torch

    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    print(
        json.dumps(
            {
                "epoch_s": float(log["seconds"].median()),
                "total_s": total,
                "cpu_s": cpu,
                "rss_mb": rss_mb,
                "gpu_mb": gpu_mb,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=250)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument(
        "--device", default="cpu", help="cpu (the CI reference), cuda or auto (the config's)"
    )
    p.add_argument("--csv", help="also write the table here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        _one(args)
        return

    import numpy as np
    import pandas as pd

    from recur.cohort.split import SplitSettings, read_outcome, split_cohort, write_split

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
    from tests.fixtures import write_toy_cohort  # the tests' toy cohort (random crops)

    with tempfile.TemporaryDirectory(prefix="bench_train_data_") as tmp:
        n_test = max(4, args.patients // 8)
        paths = write_toy_cohort(
            tmp, args.patients - n_test, n_test, args.size, seed=0, signal=0.0, er_rate=0.3
        )
        patients, er = pd.read_csv(paths["patients"]), read_outcome(paths["clinical"])
        split = split_cohort(patients, er, SplitSettings.defaults())
        write_split(split, Path(tmp) / "split.csv")
        # a toy "measured margin" per patient (PrePost's auxiliary target by default)
        rng = np.random.default_rng(0)
        pd.DataFrame(
            {"patient_id": split["patient_id"], "min_margin_mm": rng.normal(3, 3, len(split))}
        ).to_csv(Path(tmp) / "margin.csv", index=False)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        rows = []
        for model in ("Pre", "PrePost"):
            runs = []
            for _ in range(args.repeats):
                cmd = [sys.executable, __file__, "--one", model, "--data", tmp]
                cmd += ["--epochs", str(args.epochs), "--threads", str(args.threads)]
                cmd += ["--device", args.device]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            rows.append(
                {
                    "model": model,
                    "patients": args.patients,
                    "train_patients": int((split["split"] == "train").sum()),
                    "threads": args.threads,
                    "device": args.device,
                    "epochs": args.epochs,
                    "epoch_s": statistics.median(r["epoch_s"] for r in runs),
                    "total_s": statistics.median(r["total_s"] for r in runs),
                    "total_cpu_s": statistics.median(r["cpu_s"] for r in runs),
                    "peak_rss_mb": max(r["rss_mb"] for r in runs),
                    "peak_gpu_mb": max(r["gpu_mb"] for r in runs),
                }
            )
    table = pd.DataFrame(rows)
    ref = table.loc[table["model"] == "Pre"].iloc[0]
    table["epoch_ratio_to_Pre"] = table["epoch_s"] / ref["epoch_s"]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
