"""The report's front page and its QC picture selection: ``report-front`` and
``report-montages`` (``recur.reporting.front``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _read_flagged(crops_qc: str, exclusions: str | None):
    import pandas as pd

    from recur.reporting import front

    qc = pd.read_csv(crops_qc, dtype={"patient_id": str}, keep_default_na=False)
    ex = None
    if exclusions and Path(exclusions).is_file():
        ex = pd.read_csv(exclusions, dtype=str, keep_default_na=False)
    return front.flagged_patients(qc, ex)


def _cmd_report_front(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.io import write_text_atomic
    from recur.reporting import front

    figures = dict(pair.split("=", 1) for pair in a.figure)
    page = front.front_page(
        pd.read_csv(a.table1, keep_default_na=False),
        Path(a.table2_html).read_text(encoding="utf-8"),
        pd.read_csv(a.table2),
        pd.read_csv(a.delong),
        _read_flagged(a.crops_qc, a.exclusions),
        {name: Path(path) for name, path in figures.items()},
    )
    write_text_atomic(a.out, page)


def _cmd_report_montages(a: argparse.Namespace) -> None:
    import shutil

    from PIL import Image

    from recur.constants import (
        REPORT_MONTAGE_FLAGGED,
        REPORT_MONTAGE_SAMPLE,
        REPORT_PICTURE_QUALITY,
    )
    from recur.reporting import front

    flagged = _read_flagged(a.crops_qc, a.exclusions)
    pictures = {Path(p).parent.name if a.by_folder else Path(p).stem: Path(p) for p in a.pictures}
    chosen = front.montage_selection(
        flagged, sorted(pictures), REPORT_MONTAGE_SAMPLE, 0, REPORT_MONTAGE_FLAGGED
    )
    out = Path(a.outdir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for patient in chosen:
        if patient in pictures and pictures[patient].is_file():
            # JPEG: half a PNG's size for these noisy MR montages, and the report is only
            # for looking (the PNGs stay in results/)
            with Image.open(pictures[patient]) as im:
                picture = front.report_picture(im)
            picture.save(tmp / f"{patient}.jpg", quality=REPORT_PICTURE_QUALITY, optimize=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``report-front`` and ``report-montages``."""
    p = sub.add_parser("report-front", help="the HTML report's front page (headline, tables)")
    p.add_argument("--table1", required=True, help="table1.csv")
    p.add_argument("--table2", required=True, help="table2.csv (long)")
    p.add_argument("--table2-html", required=True, help="table2.html")
    p.add_argument("--delong", required=True, help="delong.csv")
    p.add_argument("--crops-qc", required=True, help="qc/crops.csv")
    p.add_argument("--exclusions", default=None, help="qc/exclusions.csv")
    p.add_argument("--figure", nargs="*", default=[], metavar="TITLE=PNG", help="figures shown")
    p.add_argument("--out", required=True, help="HTML fragment to write")
    p.set_defaults(func=_cmd_report_front)

    p = sub.add_parser(
        "report-montages",
        help="copy the QC pictures of flagged patients and a sample into a report folder",
    )
    p.add_argument("--crops-qc", required=True, help="qc/crops.csv")
    p.add_argument("--exclusions", default=None, help="qc/exclusions.csv")
    p.add_argument("--pictures", nargs="*", default=[], help="one PNG per patient")
    p.add_argument(
        "--by-folder", action="store_true", help="the patient is the picture's folder name"
    )
    p.add_argument("--outdir", required=True, help="folder to write (replaced)")
    p.set_defaults(func=_cmd_report_montages)
