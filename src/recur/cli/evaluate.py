"""Evaluation commands: ``cutoffs``, ``table2``, ``delong``, ``calibration``, ``table1``,
``figures`` and ``importance-figure`` (``recur.evaluate``)."""

from __future__ import annotations

import argparse

from recur.cli.common import add_evaluation_inputs, add_table_outputs, write_csv
from recur.cli.sections import add_settings
from recur.errors import RecurError


def _model_paths(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise RecurError(f"--predictions expects MODEL=PATH, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def _eval_frame(a: argparse.Namespace):
    """The evaluation frame (ids, outcomes, one score column per model) and the models."""
    from recur.cohort.split import read_split
    from recur.evaluate import readers

    paths = _model_paths(a.predictions)
    preds = {m: readers.read_predictions(p, m) for m, p in paths.items()}
    frame = readers.evaluation_frame(preds, read_split(a.split), readers.read_clinical(a.clinical))
    return frame, list(paths)


def _read_cutoffs(path: str) -> dict[str, float]:
    import pandas as pd

    t = pd.read_csv(path)
    return dict(zip(t["model"], t["cutoff"].astype(float), strict=True))


def _cmd_cutoffs(a: argparse.Namespace) -> None:
    from recur.evaluate import tables

    frame, models = _eval_frame(a)
    write_csv(tables.cutoffs_table(frame, models), a.out)


def _cmd_table2(a: argparse.Namespace) -> None:
    from recur.evaluate import tables
    from recur.evaluate.settings import BootstrapSettings
    from recur.io import write_text_atomic

    st = BootstrapSettings.from_json(a.settings)
    frame, models = _eval_frame(a)
    long = tables.table2(
        frame,
        models,
        _read_cutoffs(a.cutoffs),
        n_boot=st.bootstrap,
        seed=st.seed,
        level=st.ci_level,
    )
    wide = tables.table2_wide(long)
    note = tables.table2_footnote(st.ci_level, st.bootstrap, st.seed)
    write_csv(long, a.out)
    write_text_atomic(a.md, tables.markdown_table(wide) + f"\n{note}\n")
    write_text_atomic(a.html, tables.html_table(wide, note))


def _write_documents(table, note: str, md: str | None, html: str | None) -> None:
    """The Markdown and HTML renderings of ``table`` (rounded, p-values formatted)."""
    from recur.evaluate import tables
    from recur.io import write_text_atomic

    md_text, html_text = tables.table_documents(table, note)
    if md:
        write_text_atomic(md, md_text)
    if html:
        write_text_atomic(html, html_text)


def _few_events_note() -> str:
    from recur.constants import MIN_EVENTS

    return f"flag: a cohort with fewer than {MIN_EVENTS} events, whose estimates are unstable."


def _cmd_delong(a: argparse.Namespace) -> None:
    from recur.evaluate import tables

    frame, models = _eval_frame(a)
    table = tables.delong_table(frame, models)
    write_csv(table, a.out)
    note = (
        "Paired two-sided DeLong tests of AUC(a) = AUC(b) (diff = a - b); no correction for "
        "multiple comparisons. NA = undefined, the reason in note. " + _few_events_note()
    )
    _write_documents(table, note, a.md, a.html)


def _cmd_calibration(a: argparse.Namespace) -> None:
    from recur.evaluate import figures, tables
    from recur.evaluate.settings import CalibrationSettings

    st = CalibrationSettings.from_json(a.settings)
    frame, models = _eval_frame(a)
    table = tables.calibration_table(frame, models)
    figures.cohort_figures(frame, models, "calibration", a.figdir, frac=st.lowess_frac)
    write_csv(table, a.out)
    note = (
        "Calibration intercept (in the large; 0 is ideal) and slope (1 is ideal) from logistic "
        "regression of the outcome on logit(predicted probability). NA = undefined, the "
        "reason in note. " + _few_events_note()
    )
    _write_documents(table, note, a.md, a.html)


def _cmd_table1(a: argparse.Namespace) -> None:
    from recur.evaluate import readers, table1
    from recur.evaluate.settings import Table1Settings
    from recur.io import write_text_atomic

    st = Table1Settings.from_json(a.settings)
    t = table1.table1(readers.read_clinical(a.clinical), alpha=st.normality_alpha)
    write_csv(t, a.out)
    write_text_atomic(a.md, table1.to_markdown(t))


def _cmd_figures(a: argparse.Namespace) -> None:
    from recur.evaluate import figures, tables
    from recur.evaluate.settings import DecisionCurveSettings

    frame, models = _eval_frame(a)
    thresholds = None
    if a.kind == "dca":
        if not a.settings:
            raise RecurError("figures --kind dca needs --settings (evaluate's dca keys)")
        thresholds = DecisionCurveSettings.from_json(a.settings).thresholds()
    cutoffs = _read_cutoffs(a.cutoffs) if a.cutoffs else None
    if a.kind == "km" and cutoffs is None:
        raise RecurError("figures --kind km needs --cutoffs")
    table = figures.cohort_figures(
        frame, models, a.kind, a.outdir, cutoffs=cutoffs, thresholds=thresholds
    )
    if a.table or a.md or a.html:
        if table is None:
            raise RecurError(f"figures --kind {a.kind} writes no table")
        if a.kind == "km":
            table = tables.km_logrank_table(table)
        if a.table:
            write_csv(table, a.table)
        note = (
            "Log-rank tests of recurrence-free survival, high risk (score >= the tuning "
            "cutoff) against low risk; NA when a group is empty; n_events = RFS events. "
            + _few_events_note()
        )
        _write_documents(table, note, a.md, a.html)


def _cmd_importance_figure(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur.evaluate import figures

    imp = pd.read_csv(a.importance)
    figures.save_figure(figures.importance_figure(imp, a.title), a.png, a.pdf)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cutoffs``, ``table2``, ``delong``, ``calibration``, ``table1``, ``figures`` and
    ``importance-figure``."""
    p = sub.add_parser("cutoffs", help="Youden cutoffs of every model on the tuning split")
    add_evaluation_inputs(p)
    p.add_argument("--out", required=True, help="cutoffs.csv to write (model, cutoff)")
    p.set_defaults(func=_cmd_cutoffs)

    p = sub.add_parser("table2", help="Table 2 with stratified bootstrap CIs")
    add_evaluation_inputs(p)
    p.add_argument("--cutoffs", required=True, help="cutoffs.csv (written by cutoffs)")
    add_settings(p, "evaluate (bootstrap, ci_level, seed)")
    add_table_outputs(p, "Table 2")
    p.set_defaults(func=_cmd_table2)

    p = sub.add_parser("delong", help="paired DeLong tests of every pair of models")
    add_evaluation_inputs(p)
    p.add_argument("--out", required=True, help="delong.csv to write")
    p.add_argument("--md", help="the table as Markdown (rounded)")
    p.add_argument("--html", help="the table as HTML (rounded)")
    p.set_defaults(func=_cmd_delong)

    p = sub.add_parser("calibration", help="Brier, calibration intercept/slope and plots")
    add_evaluation_inputs(p)
    add_settings(p, "evaluate (lowess_frac)")
    p.add_argument("--out", required=True, help="calibration.csv to write")
    p.add_argument(
        "--figdir", required=True, help="folder of the calibration plots ({cohort}.png, .pdf)"
    )
    p.add_argument("--md", help="the table as Markdown (rounded)")
    p.add_argument("--html", help="the table as HTML (rounded)")
    p.set_defaults(func=_cmd_calibration)

    p = sub.add_parser("table1", help="baseline characteristics, ER vs non-ER")
    p.add_argument("--clinical", required=True, help="clinical.csv of the cohort")
    add_settings(p, "evaluate (normality_alpha)")
    p.add_argument("--out", required=True, help="Table 1 as CSV")
    p.add_argument("--md", required=True, help="Table 1 as Markdown")
    p.set_defaults(func=_cmd_table1)

    p = sub.add_parser("figures", help="ROC, decision-curve or Kaplan-Meier figures per cohort")
    add_evaluation_inputs(p)
    p.add_argument(
        "--kind",
        required=True,
        choices=["roc", "dca", "km"],
        help="ROC curves, decision curves or Kaplan-Meier curves of the risk groups",
    )
    p.add_argument("--outdir", required=True, help="folder of the figures ({cohort}.png, .pdf)")
    p.add_argument("--cutoffs", help="cutoffs.csv (km)")
    p.add_argument("--settings", metavar="JSON", help="dca: evaluate's dca_min/max/step as JSON")
    p.add_argument("--table", help="km: log-rank table to write")
    p.add_argument("--md", help="km: the log-rank table as Markdown (rounded)")
    p.add_argument("--html", help="km: the log-rank table as HTML (rounded)")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("importance-figure", help="bar chart of MDI feature importance")
    p.add_argument(
        "--importance", required=True, help="importance.csv (written by dl-clinical-model)"
    )
    p.add_argument("--title", default="DL_Clinical", help="figure title (default: DL_Clinical)")
    p.add_argument("--png", required=True, help="the figure as PNG")
    p.add_argument("--pdf", required=True, help="the figure as PDF")
    p.set_defaults(func=_cmd_importance_figure)
