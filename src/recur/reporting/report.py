"""Study reporting: Figure 1 (enrolment flow) and Table S1 (MRI acquisition); the TRIPOD+AI
checklist is :mod:`recur.reporting.tripod`.

Pure functions over DataFrames build each item; ``write_*`` functions are the file edges.
See docs/guide/reporting.md.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recur.constants import PHASES, SPLITS
from recur.errors import RecurError
from recur.io import atomic_path

#: Columns of the Figure 1 flow table (``results/tables/figure1_flow.csv``).
FLOW_COLUMNS = ("box", "site", "split", "reason", "n", "patient_ids")
#: Figure 1 boxes, top to bottom.
FLOW_BOXES = ("cohort", "excluded_config", "excluded_qc", "analysed")
SPLIT_LABELS = {"train": "training", "tune": "tuning", "test": "external test"}


# --------------------------------------------------------------------------- Figure 1
def flow_table(
    patients: pd.DataFrame,
    config_excluded: pd.DataFrame,
    qc_excluded: pd.DataFrame,
    split: pd.DataFrame,
) -> pd.DataFrame:
    """The enrolment flow as a long table (:data:`FLOW_COLUMNS`).

    Args:
        patients: every patient of the cohort files (patient_id, site, cohort).
        config_excluded: patient_id, reason (``exclude:`` in the config).
        qc_excluded: patient_id, stage, timepoint, reason (one or more rows per patient; the
            first row of a patient is its reason).
        split: the final split (patient_id, site, cohort, split).

    Rows: ``cohort`` per site and ``all``; ``excluded_config`` and ``excluded_qc`` per reason
    (``all`` = total); ``analysed`` per split and site. Raises :class:`RecurError` when the
    counts do not add up (a patient lost or counted twice).
    """
    ids = lambda df: ";".join(sorted(df["patient_id"].astype(str)))  # noqa: E731
    rows: list[dict] = []

    def add(box, site, split_, reason, df):
        rows.append(
            {
                "box": box,
                "site": site,
                "split": split_,
                "reason": reason,
                "n": len(df),
                "patient_ids": ids(df),
            }
        )

    for site, g in patients.groupby("site", sort=True):
        add("cohort", site, "", "", g)
    add("cohort", "all", "", "", patients)

    cfg = config_excluded.merge(patients[["patient_id", "site"]], on="patient_id", how="left")
    for reason, g in cfg.groupby("reason", sort=True):
        add("excluded_config", "all", "", reason, g)
    add("excluded_config", "all", "", "", cfg)

    qc = qc_excluded.drop_duplicates("patient_id", keep="first").copy()
    if len(qc):
        qc["reason"] = (
            qc["stage"].astype(str)
            + " "
            + qc["timepoint"].astype(str)
            + ": "
            + qc["reason"].astype(str)
        )
    for reason, g in qc.groupby("reason", sort=True):
        add("excluded_qc", "all", "", reason, g)
    add("excluded_qc", "all", "", "", qc)

    for split_ in SPLITS:
        s = split[split["split"] == split_]
        for site, g in s.groupby("site", sort=True):
            add("analysed", site, split_, "", g)
        add("analysed", "all", split_, "", s)

    n_all = len(patients)
    n_out = len(cfg) + len(qc) + len(split)
    counted = list(cfg["patient_id"]) + list(qc["patient_id"]) + list(split["patient_id"])
    if n_out != n_all or len(set(counted)) != len(counted):
        raise RecurError(
            f"Figure 1: counts do not add up: {n_all} patients in the cohort files, "
            f"{len(cfg)} excluded by config + {len(qc)} by QC + {len(split)} analysed"
        )
    return pd.DataFrame(rows, columns=list(FLOW_COLUMNS))


def _total(flow: pd.DataFrame, box: str, split_: str = "") -> int:
    r = flow[(flow["box"] == box) & (flow["site"] == "all") & (flow["split"] == split_)]
    r = r[r["reason"] == ""]
    return int(r["n"].iloc[0]) if len(r) else 0


def flow_lines(flow: pd.DataFrame, width: int = 80) -> dict[str, list[str]]:
    """The text of each Figure 1 box (``cohort``, ``excluded``, ``train``, ``tune``, ``test``)."""
    f = flow
    out: dict[str, list[str]] = {}
    sites = f[(f["box"] == "cohort") & (f["site"] != "all")]
    out["cohort"] = [f"Patients in the cohort files: n = {_total(f, 'cohort')}"] + [
        f"{r.site}: n = {r.n}" for r in sites.itertuples()
    ]
    ex = [f"Excluded: n = {_total(f, 'excluded_config') + _total(f, 'excluded_qc')}"]
    for box, label in (("excluded_config", "by configuration"), ("excluded_qc", "by QC")):
        ex.append(f"{label}: n = {_total(f, box)}")
        for r in f[(f["box"] == box) & (f["reason"] != "")].itertuples():
            text = f"- {r.reason} (n = {r.n}: {r.patient_ids.replace(';', ', ')})"
            ex.extend(textwrap.wrap(text, width, subsequent_indent="  ")[:4])
    out["excluded"] = ex
    for split_, label in SPLIT_LABELS.items():
        rows = f[(f["box"] == "analysed") & (f["split"] == split_) & (f["site"] != "all")]
        out[split_] = [f"{label.capitalize()}: n = {_total(f, 'analysed', split_)}"] + [
            f"{r.site}: n = {r.n}" for r in rows.itertuples()
        ]
    return out


def draw_flow(flow: pd.DataFrame):
    """Figure 1 as a matplotlib figure: boxes and arrows drawn from :func:`flow_table`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = flow_lines(flow)
    line = {9: 0.16, 7.5: 0.135}  # line height (inches) per font size
    pad = 0.12
    h_cohort = len(text["cohort"]) * line[9] + pad
    h_ex = len(text["excluded"]) * line[7.5] + pad
    h_split = max(len(text[s]) for s in SPLIT_LABELS) * line[9] + pad
    fig_h = 0.3 + h_cohort + 0.3 + h_ex + 0.3 + 0.3 + 0.5 + h_split + 0.3
    fig, ax = plt.subplots(figsize=(10, fig_h))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, fig_h)  # one data unit = one inch
    ax.axis("off")
    box = dict(boxstyle="round,pad=0.4", fc="white", ec="black", lw=1)
    arrow = dict(arrowstyle="-|>", color="black", lw=1, shrinkA=0, shrinkB=0)

    y = fig_h - 0.3
    ax.text(3.0, y, "\n".join(text["cohort"]), ha="center", va="top", bbox=box, fontsize=9)
    y_cohort_bottom = y - h_cohort
    y_ex_top = y_cohort_bottom - 0.3
    ax.text(
        4.6,
        y_ex_top,
        "\n".join(text["excluded"]),
        ha="left",
        va="top",
        fontsize=7.5,
        bbox=dict(box, fc="#f4f4f4"),
    )
    y_arrow = y_ex_top - min(h_ex / 2, 0.4)
    ax.annotate("", xy=(4.5, y_arrow), xytext=(3.0, y_arrow), arrowprops=arrow)
    y_an = y_ex_top - h_ex - 0.3
    ax.annotate("", xy=(3.0, y_an + 0.05), xytext=(3.0, y_cohort_bottom - 0.05), arrowprops=arrow)
    n_an = sum(_total(flow, "analysed", s) for s in SPLIT_LABELS)
    ax.text(3.0, y_an, f"Analysed: n = {n_an}", ha="center", va="top", bbox=box, fontsize=9)
    y_split = y_an - 0.3 - 0.5
    for x, split_ in zip((1.5, 5.0, 8.5), SPLIT_LABELS, strict=True):
        ax.annotate("", xy=(x, y_split + 0.05), xytext=(3.0, y_an - 0.3), arrowprops=arrow)
        ax.text(x, y_split, "\n".join(text[split_]), ha="center", va="top", bbox=box, fontsize=9)
    return fig


def write_flow(flow: pd.DataFrame, csv: str | Path, png: str | Path, pdf: str | Path) -> None:
    """Write Figure 1 (PNG, PDF) and its table (CSV), all or none."""
    import matplotlib.pyplot as plt

    fig = draw_flow(flow)
    with atomic_path(png) as tpng, atomic_path(pdf) as tpdf, atomic_path(csv) as tcsv:
        fig.savefig(tpng, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(  # without creation date or software: the same bytes in every run
            tpdf,
            format="pdf",
            bbox_inches="tight",
            metadata={"Creator": None, "Producer": None, "CreationDate": None},
        )
        flow.to_csv(tcsv, index=False)
    plt.close(fig)


# --------------------------------------------------------------------------- Table S1
#: Numeric acquisition parameters summarised by median and range (key -> label).
S1_NUMERIC = {
    "field_strength_t": "Field strength (T)",
    "repetition_time_ms": "TR (ms)",
    "echo_time_ms": "TE (ms)",
    "flip_angle_deg": "Flip angle (°)",
    "slice_thickness_mm": "Slice thickness (mm)",
    "pixel_spacing_mm": "Pixel spacing (mm)",
}
#: Keys of ``acquisition.json`` Table S1 reads; nothing else is carried (no identifying field).
S1_KEYS = ("manufacturer", "model", *S1_NUMERIC, "rows", "columns")


def acquisition_rows(
    acquisitions: Mapping[tuple[str, str], Mapping[str, Mapping]], sites: Mapping[str, str]
) -> pd.DataFrame:
    """One row per series: patient_id, site, timepoint, phase and the :data:`S1_KEYS`.

    ``acquisitions[(patient, timepoint)]`` is an ``acquisition.json`` ({phase: {key: value}}).
    Pixel spacing becomes the mean of its two in-plane values.
    """
    rows = []
    for (pid, tp), phases in acquisitions.items():
        for phase, acq in phases.items():
            r = {"patient_id": pid, "site": sites[pid], "timepoint": tp, "phase": phase}
            for k in S1_KEYS:
                v = acq.get(k)
                if k == "pixel_spacing_mm" and isinstance(v, list | tuple):
                    v = float(np.mean([float(x) for x in v])) if len(v) else None
                r[k] = v
            rows.append(r)
    return pd.DataFrame(rows, columns=["patient_id", "site", "timepoint", "phase", *S1_KEYS])


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def median_range(values: pd.Series) -> str:
    """'median (min–max)', or the one value when all agree; '' when none is known."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "not recorded"
    lo, med, hi = float(v.min()), float(v.median()), float(v.max())
    if math.isclose(lo, hi):
        return _fmt(med)
    return f"{_fmt(med)} ({_fmt(lo)}–{_fmt(hi)})"


def distinct_counts(values: pd.Series) -> str:
    """Distinct values with their counts, most frequent first: 'A (3); B (1)'."""
    v = values.fillna("not recorded").astype(str)
    counts = v.value_counts(sort=False)
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    return "; ".join(f"{k} ({n})" for k, n in counts.items())


def table_s1(rows: pd.DataFrame, phases: Sequence[str] = PHASES) -> pd.DataFrame:
    """Table S1: per site and phase, the number of series and each parameter summarised.

    Numeric parameters as 'median (min–max)'; manufacturer/model and matrix (columns × rows)
    as distinct values with series counts.
    """
    rows = rows.copy()
    rows["scanner"] = (
        rows["manufacturer"].fillna("?").astype(str) + " " + rows["model"].fillna("?").astype(str)
    )
    rows["matrix"] = (
        rows["columns"].astype("Int64").astype(str) + "×" + rows["rows"].astype("Int64").astype(str)
    )
    order = {p: i for i, p in enumerate(phases)}
    out = []
    for (site, phase), g in sorted(
        rows.groupby(["site", "phase"]), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        r = {
            "Site": site,
            "Phase": phase,
            "Series (n)": len(g),
            "Scanner (n series)": distinct_counts(g["scanner"]),
        }
        for k, label in S1_NUMERIC.items():
            r[label] = median_range(g[k])
        r["Matrix (n series)"] = distinct_counts(g["matrix"])
        out.append(r)
    return pd.DataFrame(out)


def to_markdown(df: pd.DataFrame) -> str:
    """A pipe table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame, title: str, note: str = "") -> str:
    """A small stand-alone HTML page holding ``df``."""
    body = df.to_html(index=False, escape=True, border=0)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 6px;"
        "text-align:left;vertical-align:top}</style></head><body>"
        f"<h2>{html.escape(title)}</h2>{body}<p>{html.escape(note)}</p></body></html>\n"
    )


def read_acquisitions(paths: Sequence[str | Path]) -> dict[tuple[str, str], dict]:
    """``results/nifti/{patient}/{timepoint}/acquisition.json`` files -> {(patient, tp): dict}.

    Exclusion placeholders are skipped (checked by marker).
    """
    from recur.cohort.exclusions import is_placeholder

    out = {}
    for p in paths:
        p = Path(p)
        if is_placeholder(p):
            continue
        try:
            out[(p.parent.parent.name, p.parent.name)] = json.loads(p.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RecurError(f"{p}: cannot read the acquisition parameters ({exc})") from None
    return out


S1_NOTE = (
    "Acquisition parameters read from the DICOM headers during conversion (one series per "
    "patient, time point and phase); numbers are median (range) over series; pixel spacing is "
    "the mean of the two in-plane values; matrix is columns × rows."
)


def write_table(
    df: pd.DataFrame,
    csv: str | Path,
    md: str | Path,
    html_path: str | Path,
    title: str,
    note: str = "",
) -> None:
    """Write a table as CSV, Markdown and HTML (all or none)."""
    with atomic_path(csv) as tc, atomic_path(md) as tm, atomic_path(html_path) as th:
        df.to_csv(tc, index=False)
        Path(tm).write_text(f"## {title}\n\n" + to_markdown(df) + f"\n{note}\n", "utf-8")
        Path(th).write_text(to_html(df, title, note), "utf-8")
