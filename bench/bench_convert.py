"""Seconds per series: recur's DICOM -> NIfTI converter vs dcm2niix on the same series.

Series: the HCC CT (89 x 512 x 512), dcm_qa_pdt2 (two echoes of 35 x 64 x 64 in one folder:
dcm2niix writes both in one run, recur converts echo 1 and echo 2) and a synthetic-like MR
series (30 x 192 x 192, file names shuffled) written to a temporary folder. Both write gzip
level-1 .nii.gz (recur's default ``convert.compression_level``; dcm2niix ``-1 -z y``), dcm2niix
without its BIDS sidecar (``-b n``).

Columns: ``recur_s`` (in-process :func:`recur.preprocess.convert.convert_series`), ``recur_cli_s``
(the ``python -m recur convert`` command, Python start-up included), ``dcm2niix_s`` (its binary, a
subprocess), ``ratio`` = recur_s / dcm2niix_s (< 1: recur faster); the same in CPU seconds
(``recur_cpu_s``, ``dcm2niix_cpu_s``, ``cpu_ratio``: steadier on a shared machine). Median of
``--repeats``. recur converts the two echoes with one reader (one parse of the folder), as one
job would; its gzip is ISA-L's when the ``isal`` package is installed (recur.io.gzip_file).

    .venv/bin/python bench/bench_convert.py [--repeats 5] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.uid import generate_uid

from recur.preprocess import convert, dicom_series

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root: the tests' DICOM slice skeleton
from tests.fixtures import mr_slice_dataset  # noqa: E402

TESTDATA = REPO.parent / "shared" / "testdata"
DCM2NIIX = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which(
    "dcm2niix"
)


def write_mr_series(folder: Path, n: int = 30, size: int = 192, seed: int = 0) -> None:
    """A synthetic-like axial MR series: ``n`` slices of ``size``^2 uint16, shuffled names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    series_uid, study_uid = generate_uid(), generate_uid()
    for j, k in enumerate(order):
        ds = mr_slice_dataset()
        ds.PatientID = "BENCH"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.InstanceNumber = j + 1
        ds.ImagePositionPatient = [-150.0, -140.0, -60.0 + 5.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1.6, 1.6]
        ds.SliceThickness = 5
        ds.RescaleSlope = 1
        ds.RescaleIntercept = 0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 2000, (size, size), dtype=np.uint16).tobytes()
        ds.save_as(folder / f"{generate_uid()[-12:]}.dcm", enforce_file_format=True)


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (dcm2niix runs as one)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _median_times(fns: list[Callable[[], object]], repeats: int) -> tuple[list[float], list[float]]:
    """Median wall and CPU seconds of each function, the runs interleaved (a, b, a, b, ...)
    so that a change of machine load affects all of them alike. CPU time is the steadier
    figure on a shared machine."""
    for fn in fns:
        fn()  # warm-up (file cache, imports)
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ws, cs in zip(fns, walls, cpus, strict=True):
            c, t = _cpu(), time.perf_counter()
            fn()
            ws.append(time.perf_counter() - t)
            cs.append(_cpu() - c)
    return [statistics.median(w) for w in walls], [statistics.median(c) for c in cpus]


def run(repeats: int) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        mr = tmp / "mr_30x192"
        write_mr_series(mr)
        cases = [
            (
                "HCC CT 89x512x512",
                TESTDATA / "hcc048-ct-portal-venous/sample_data/HCC048_portal_venous",
                [None],
            ),
            ("dcm_qa_pdt2 2 echoes 35x64x64", TESTDATA / "dcm_qa_pdt2/In/Siemens/VE11", [1, 2]),
            ("synthetic MR 30x192x192", mr, [None]),
        ]
        rows = []
        settings = dicom_series.ConvertSettings.defaults(compression_level=1)
        for name, folder, echoes in cases:
            out = tmp / "out"
            out.mkdir(exist_ok=True)

            def ours(folder=folder, echoes=echoes, out=out) -> None:
                # one reader, as one job: both echoes from one parse of the folder (dcm2niix
                # also writes both in one run)
                reader = dicom_series.SeriesReader(settings)
                for e in echoes:
                    res = reader(folder, echo=e)
                    convert.write_deidentified_nifti(
                        res.image, out / f"r{e}.nii.gz", settings.compression_level
                    )

            def cli(folder=folder, echoes=echoes, out=out) -> None:
                for e in echoes:
                    cmd = [
                        sys.executable,
                        "-m",
                        "recur",
                        "convert",
                        str(folder),
                        str(out / f"c{e}.nii.gz"),
                        "--compression-level",
                        "1",
                    ]
                    if e is not None:
                        cmd += ["--echo", str(e)]
                    subprocess.run(cmd, check=True, capture_output=True)

            def theirs(folder=folder, out=out) -> None:
                d = out / "d2n"
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir()
                subprocess.run(
                    [
                        DCM2NIIX,
                        "-1",
                        "-z",
                        "y",
                        "-b",
                        "n",
                        "-f",
                        "%s_%e",
                        "-o",
                        str(d),
                        str(folder),
                    ],
                    check=True,
                    capture_output=True,
                )

            if DCM2NIIX:
                (t_ours, t_d2n), (c_ours, c_d2n) = _median_times([ours, theirs], repeats)
            else:
                ((t_ours,), (c_ours,)) = _median_times([ours], repeats)
                t_d2n = c_d2n = float("nan")
            (t_cli,), _ = _median_times([cli], max(1, min(repeats, 3)))
            rows.append(
                {
                    "series": name,
                    "recur_s": round(t_ours, 4),
                    "recur_cli_s": round(t_cli, 4),
                    "dcm2niix_s": round(t_d2n, 4),
                    "ratio": round(t_ours / t_d2n, 3),
                    "recur_cpu_s": round(c_ours, 4),
                    "dcm2niix_cpu_s": round(c_d2n, 4),
                    "cpu_ratio": round(c_ours / c_d2n, 3),
                    "repeats": repeats,
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--csv", help="also write the table as CSV")
    a = ap.parse_args(argv)
    if DCM2NIIX is None:
        print("dcm2niix not found: its column is NaN", file=sys.stderr)
    table = run(a.repeats)
    print(table.to_string(index=False))
    if a.csv:
        table.to_csv(a.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
