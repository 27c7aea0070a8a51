"""The one-page HTML summary of one patient scored by ``recur predict`` (images embedded)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from recur.deploy.bundle import Bundle
from recur.deploy.registry import INPUTS, NO_POST

NOT_FOR_CLINICAL_USE = (
    "Research software, not a medical device: NOT FOR CLINICAL USE. The scores come from "
    "models trained on the cohort the bundle was built from and have not been validated for "
    "decisions about individual patients."
)


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def below_chance_flag(model: str, tune_auc: float | None) -> str:
    """The flag of a model whose AUC on the study's tuning split is below 0.5 (empty
    otherwise): it ranked those patients worse than chance, so its score is not to be used."""
    if tune_auc is None or not tune_auc < 0.5:
        return ""
    return f"tuning AUC {tune_auc:.2f} < 0.5: {model} ranked the tuning patients worse than chance"


def _f(value: object, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if not math.isfinite(v) else f"{v:.{digits}f}"


def estimate_text(est: Mapping | None) -> str:
    """``0.712 [0.601, 0.815]`` of a performance estimate (``undefined`` / ``not recorded``)."""
    if not est:
        return "not recorded"
    if est.get("estimate") is None:
        return "undefined"
    lo, hi = est.get("ci_low"), est.get("ci_high")
    ci = f" [{_f(lo)}, {_f(hi)}]" if lo is not None and hi is not None else ""
    return f"{_f(est['estimate'])}{ci}"


def primary_line(bundle: Bundle) -> str:
    """The sentence naming the primary model and every model's external AUC."""
    if not bundle.primary:
        return "This bundle names no primary model (written before the study recorded one)."
    aucs = ", ".join(
        f"{e.name} {estimate_text(bundle.performance.get(e.key, {}).get('auc'))}"
        for e in bundle.binary
    )
    tune = bundle.performance.get(bundle.primary, {}).get("tune_auc")
    return (
        f"Primary model: {bundle.primary} (the highest AUC on the study's tuning split"
        f"{', ' + _f(tune) if tune is not None else ''}; chosen before the external test). "
        f"External AUC [95% CI] of each model: {aucs}."
    )


def summary_html(
    pid: str,
    rows: pd.DataFrame,
    bundle: Bundle,
    margin: Mapping | None,
    images: Mapping[str, Path | None],
) -> str:
    """One-page HTML summary of one patient: ``rows`` are the patient's rows of
    :func:`recur.deploy.scoring.score_all`; ``margin`` its margin.csv row (None without a
    post-ablation series); ``images`` the PNGs to embed by caption (None: not made)."""
    e = html.escape
    rfs = [c for c in rows.columns if c.startswith("rfs_")]
    head = "".join(
        f"<th>{e(h)}</th>"
        for h in (
            "model",
            "inputs",
            "probability (calibrated)",
            "raw score",
            "cutoff",
            "risk group",
            *(f"Cox RFS {c[4:-1]} months" for c in rfs),
            "external AUC [95% CI]",
            "external C-index (Cox)",
            "flag",
        )
    )
    body = []
    for r in rows.itertuples(index=False):
        entry = next(x for x in bundle.binary if x.name == r.model)
        perf = bundle.performance.get(entry.key, {})
        cox = bundle.cox(entry.name)
        cperf = bundle.performance.get(cox.key, {}) if cox is not None else {}
        mark = " (primary)" if r.model == bundle.primary else ""
        flag = below_chance_flag(r.model, bundle.tune_aucs.get(r.model))
        if r.available:
            cells = [_f(r.probability), _f(r.raw_score)]
            risk = f"<td class='{e(r.risk)}'>{e(r.risk)} risk</td>"
            surv = [_f(getattr(r, c)) for c in rfs]
        else:
            cells = [e(NO_POST), ""]
            risk = f"<td>{e(NO_POST)}</td>"
            surv = ["" for _ in rfs]
        body.append(
            f"<tr><td>{e(r.model + mark)}</td><td>{e(', '.join(entry.inputs))}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + f"<td>{_f(r.cutoff)}</td>{risk}"
            + "".join(f"<td>{c}</td>" for c in surv)
            + f"<td>{e(estimate_text(perf.get('auc')))}</td>"
            + f"<td>{e(estimate_text(cperf.get('c_index')))}</td><td>{e(flag)}</td></tr>"
        )
    if margin:
        mtext = (
            f"<p>Minimal ablative margin <b>{_f(margin.get('min_margin_mm'), 1)} mm</b>; "
            f"tumour surface with a margin &lt; 0 mm: <b>{_f(margin.get('pct_lt0'), 1)} %</b>, "
            f"&lt; 5 mm: <b>{_f(margin.get('pct_lt5'), 1)} %</b> (post DP registered onto pre "
            "DP, signed distance of the tumour surface to the ablation-zone boundary, as the "
            "workflow's margin stage computes it).</p>"
        )
    else:
        mtext = f"<p>Ablative margin: {e(NO_POST)}.</p>"
    imgs = "\n".join(
        f"<figure><img alt='{e(cap)}' src='{_png_data_uri(p)}'><figcaption>{e(cap)}"
        "</figcaption></figure>"
        for cap, p in images.items()
        if p is not None and Path(p).is_file()
    )
    inputs = "; ".join(f"{k}: {v}" for k, v in INPUTS.items() if k != "radiomics")
    about = (
        f"recur {bundle.manifest.get('recur_version')}, bundle format "
        f"{bundle.manifest.get('bundle_format')}, DL signature of the fusion models "
        f"{bundle.signature}"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>recur: {e(pid)}</title>
<style>
body {{font-family: sans-serif; max-width: 72em; margin: 1em auto; font-size: 14px}}
table {{border-collapse: collapse}} td, th {{border: 1px solid #bbb; padding: 2px 6px}}
.high {{color: #b00; font-weight: bold}} .low {{color: #060}}
.warn {{border: 2px solid #b00; padding: 6px; background: #fee}}
figure {{display: inline-block; max-width: 48%; margin: 4px; vertical-align: top}}
figure img {{max-width: 100%}}
</style></head><body>
<h2>Early recurrence (ER within 2 years) after thermal ablation: patient {e(pid)}</h2>
<p class="warn">{e(NOT_FOR_CLINICAL_USE)}</p>
<p><b>{e(primary_line(bundle))}</b></p>
<table><tr>{head}</tr>
{chr(10).join(body)}
</table>
<p>Risk group: high when the calibrated probability is at least the model's cutoff (Youden,
tuning split). Raw score: the network's output (DL models; the recalibration on the tuning
split maps it to the probability) or the model's probability (tabular models, not
recalibrated). Cox RFS: the predicted recurrence-free probability of the Cox model on the same
predictors. External AUC and C-index: the study's external test patients. Inputs: {e(inputs)}.
</p>
<h3>Ablative margin</h3>
{mtext}
<h3>Figures</h3>
{imgs}
<p style="color:#666">Model bundle: {e(about)}.</p>
</body></html>
"""
