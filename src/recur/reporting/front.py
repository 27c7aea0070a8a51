"""The report's front page: the headline, Table 1 and Table 2, Figure 1, the key figures and the
QC-flagged patients, as one self-contained HTML fragment (figures embedded), which
``report/workflow.rst`` includes at the top of the HTML report.

:func:`headline` and :func:`flagged_patients` are pure functions over the study's tables;
:func:`front_page` assembles the fragment from them and the figure files;
:func:`montage_selection` and :func:`report_picture` choose and shrink the per-patient QC
pictures the report shows.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recur.constants import REPORT_PICTURE_WIDTH

if TYPE_CHECKING:
    from PIL import Image

#: The cohort of the headline (every external test patient).
HEADLINE_COHORT = "external"


def _ci(est: float, lo: float, hi: float) -> str:
    if not np.isfinite(est):
        return "undefined"
    return f"{est:.3f} [{lo:.3f}, {hi:.3f}]"


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "undefined"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def headline(table2: pd.DataFrame, delong: pd.DataFrame, cutoffs_model: str | None = None) -> dict:
    """Each model's external AUC with its CI, the best of them, and its DeLong comparison with
    the Clinical model (the comparison the paper makes: does imaging add to the clinical
    variables?). Returns ``{"n", "n_events", "aucs": [(model, text)], "best", "comparison"}``."""
    ext = table2[(table2["cohort"] == HEADLINE_COHORT) & (table2["metric"] == "auc")]
    if ext.empty:
        return {}
    tune = table2[(table2["cohort"] == "tuning") & (table2["metric"] == "auc")]
    below = [
        f"{r.model}: tuning AUC {r.estimate:.2f} < 0.5 (it ranked the tuning patients worse "
        "than chance; its cutoff and external results are not to be used)"
        for r in tune.itertuples()
        if r.estimate < 0.5
    ]
    aucs = [(r.model, _ci(r.estimate, r.ci_low, r.ci_high)) for r in ext.itertuples()]
    best = ext.loc[ext["estimate"].idxmax()]
    out = {
        "n": int(ext["n"].iloc[0]),
        "n_events": int(ext["n_events"].iloc[0]),
        "aucs": aucs,
        "best": str(best["model"]),
        "comparison": "",
        "below_chance": below,
    }
    rows = delong[(delong["cohort"] == HEADLINE_COHORT)]
    pair = rows[
        ((rows["model_a"] == best["model"]) & (rows["model_b"] == "Clinical"))
        | ((rows["model_b"] == best["model"]) & (rows["model_a"] == "Clinical"))
    ]
    if best["model"] != "Clinical" and not pair.empty:
        r = pair.iloc[0]
        sign = 1.0 if r["model_a"] == best["model"] else -1.0
        out["comparison"] = (
            f"{best['model']} vs Clinical: AUC difference {sign * r['diff']:+.3f} "
            f"(DeLong p {_p(r['p'])})"
        )
    return out


def flagged_patients(crops_qc: pd.DataFrame, exclusions: pd.DataFrame | None) -> pd.DataFrame:
    """``patient_id, timepoint, reason`` of every QC flag (crop / registration checks) and every
    QC exclusion."""
    flags = crops_qc[crops_qc["flags"].fillna("") != ""]
    out = flags[["patient_id", "timepoint", "flags"]].rename(columns={"flags": "reason"})
    if exclusions is not None and len(exclusions):
        ex = exclusions.reindex(columns=["patient_id", "stage", "timepoint", "reason"]).fillna("")
        ex = ex.assign(reason="excluded at " + ex["stage"] + ": " + ex["reason"])
        out = pd.concat([ex[["patient_id", "timepoint", "reason"]], out])
    return out.reset_index(drop=True)


#: Table 1's column names as the front page shows them.
_TABLE1_HEADERS = {
    "variable": "Variable",
    "level": "",
    "train_er": "Training: ER",
    "train_non_er": "Training: no ER",
    "train_p": "p",
    "train_test": "test",
    "test_er": "External: ER",
    "test_non_er": "External: no ER",
    "test_p": "p ",
    "test_test": "test ",
}


def _img(path: Path, alt: str, width: int = 640) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" width="{width}" '
        f'src="data:image/png;base64,{data}"/><figcaption>{html.escape(alt)}</figcaption></figure>'
    )


def front_page(
    table1: pd.DataFrame,
    table2_html: str,
    table2: pd.DataFrame,
    delong: pd.DataFrame,
    flagged: pd.DataFrame,
    figures: Mapping[str, Path],
    notes: Sequence[str] = (),
) -> str:
    """The front page's HTML fragment (no ``<html>`` wrapper: it sits inside the report)."""
    h = headline(table2, delong)
    parts = [
        # the report's landing column is narrow (max-w-lg) and vertically centred, which hides
        # the top of a long page: full width, top-aligned
        "<style>.prose.max-w-lg{max-width:none}"
        " .grow.items-center.h-screen{align-items:flex-start}"
        " .recur-front table{font-size:12px} .recur-front td,.recur-front th{padding:2px 6px}"
        "</style>",
        '<div class="recur-front">',
        "<h2>Headline</h2>",
    ]
    if h:
        items = "".join(
            f"<li><b>{html.escape(m)}</b>: AUC {html.escape(t)}</li>" for m, t in h["aucs"]
        )
        parts.append(
            f"<p>External validation on {h['n']} patients ({h['n_events']} with early "
            f"recurrence). Best external AUC: <b>{html.escape(h['best'])}</b>. "
            f"{html.escape(h['comparison'])}</p><ul>{items}</ul>"
        )
        parts += [
            f'<p style="color:#b00"><b>Flag</b>: {html.escape(w)}</p>' for w in h["below_chance"]
        ]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Table 1: patient characteristics</h2>")
    parts.append(table1.fillna("").rename(columns=_TABLE1_HEADERS).to_html(index=False, border=0))
    parts.append("<h2>Table 2: performance</h2>")
    parts.append(table2_html)
    parts.append("<h2>Figures</h2>")
    parts += [_img(p, name) for name, p in figures.items() if Path(p).is_file()]
    parts.append(f"<h2>QC-flagged patients ({flagged['patient_id'].nunique()})</h2>")
    if len(flagged):
        parts.append(flagged.to_html(index=False, border=0))
        parts.append(
            "<p>Their crop montages are in the report under QC; every patient's montage is in "
            "results/qc/crops/.</p>"
        )
    else:
        parts.append("<p>No patient was flagged.</p>")
    parts.append("</div>")
    return "\n".join(parts) + "\n"


def montage_selection(
    flagged: pd.DataFrame,
    patients: Sequence[str],
    sample: int,
    seed: int,
    max_flagged: int | None = None,
):
    """The patients whose montages go into the report: the flagged ones (the first
    ``max_flagged`` by pseudonym, all when None) and ``sample`` others drawn at random (fixed
    seed), sorted."""
    flagged_ids = sorted(set(flagged["patient_id"]) & set(patients))
    chosen = set(flagged_ids[:max_flagged] if max_flagged is not None else flagged_ids)
    rest = sorted(set(patients) - set(flagged_ids))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rest), size=min(sample, len(rest)), replace=False) if rest else []
    return sorted(chosen | {rest[i] for i in pick})


def report_picture(image: Image.Image, width: int = REPORT_PICTURE_WIDTH) -> Image.Image:
    """``image`` as RGB, scaled down (Lanczos, aspect kept) to at most ``width`` pixels wide."""
    from PIL import Image

    rgb = image.convert("RGB")
    if rgb.width <= width:
        return rgb
    height = round(rgb.height * width / rgb.width)
    return rgb.resize((width, height), Image.Resampling.LANCZOS)
