"""Argument helpers shared by the stage modules of the command line: tabular-model options,
``--on-failure`` and the exclusion of a refused patient, the evaluation inputs, CSV output."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path

from recur.cli.sections import schema_default
from recur.errors import RecurError


def add_tabular_args(p: argparse.ArgumentParser) -> None:
    """The estimator settings of a tabular model: one config section as JSON."""
    p.add_argument(
        "--settings",
        required=True,
        help="the config section (clinical or dl_clinical) as JSON, as the rules pass it",
    )


def tree_settings(a: argparse.Namespace):  # -> recur.models.tabular.TabularSettings
    """The ``TabularSettings`` of the section given by :func:`add_tabular_args`."""
    from recur.models.tabular import TabularSettings
    from recur.settings import from_json

    return from_json(TabularSettings, a.settings)


def write_csv(df, path: str) -> None:
    """Write a table atomically (no index, 6 significant digits, LF line ends)."""
    from recur.io import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")


def add_evaluation_inputs(p: argparse.ArgumentParser, preds: bool = True) -> None:
    """``--clinical`` and ``--split`` of a model or evaluation command, and its
    ``--predictions`` unless ``preds`` is false."""
    p.add_argument("--clinical", required=True, help="clinical.csv of the cohort")
    p.add_argument("--split", required=True, help="results/splits/split.csv")
    if preds:
        p.add_argument(
            "--predictions",
            nargs="+",
            required=True,
            metavar="MODEL=PATH",
            help="prediction tables, one per model, in display order",
        )


def add_table_outputs(p: argparse.ArgumentParser, table: str) -> None:
    """``--out``, ``--md`` and ``--html``: one table written as CSV, Markdown and HTML."""
    p.add_argument("--out", required=True, help=f"{table} as CSV")
    p.add_argument("--md", required=True, help=f"{table} as Markdown")
    p.add_argument("--html", required=True, help=f"{table} as HTML (for the report)")


def add_on_failure(p: argparse.ArgumentParser) -> None:
    """``--on-failure stop|exclude`` (config ``qc.on_failure``) for a per-patient step."""
    p.add_argument(
        "--on-failure",
        choices=("stop", "exclude"),
        default=schema_default("qc", "on_failure"),
        help="on a refused input: stop with the message (qc.on_failure) or record the patient as "
        "excluded (placeholder outputs holding the reason; see docs/guide/reporting.md)",
    )


def _step_files(a: argparse.Namespace, stage: str) -> tuple[str, list[str], list[str]]:
    """(time point, input files, output files) of one per-patient step, from its arguments;
    the file names inside a folder are the writing stage's (recur.preprocess)."""
    from recur.preprocess import register

    if stage == "convert":
        from recur.preprocess import convert  # pydicom: only the conversion imports it

        return a.timepoint, [], [str(p) for p in convert.timepoint_outputs(a.outdir)]
    if stage == "check_mask":
        return a.timepoint, [a.dp], [a.out]
    if stage == "register":
        ins = [str(p) for p in register.phase_images(a.indir)] + ([a.mask] if a.mask else [])
        outs = [str(p) for p in register.registration_outputs(a.outdir)]
        return Path(a.indir).name, ins, outs
    if stage == "crop":
        ins = [
            str(p) for d in (a.registered_pre, a.registered_post) for p in register.phase_images(d)
        ]
        ins += [a.mask_pre, a.mask_post] + ([a.post_to_pre] if a.post_to_pre else [])
        return "pre+post", ins, [a.out]
    if stage == "margin_register":
        ins = [a.pre_dp, a.post_dp, a.pre_mask, a.post_mask]
        outs = [a.out_tfm, a.out_mask] + [f for f in (a.qc, a.qc_json) if f]
        return "pre+post", ins, outs
    raise ValueError(stage)


def redactor(a: argparse.Namespace) -> Callable[[str], str]:
    """Takes the cohort's paths out of a per-patient step's messages (recur.cohort.links.redact):
    what a job says is stored under results/logs, and a cohort folder may be named after a
    patient, so a file is named by its table row instead."""
    cohort_dir = getattr(a, "cohort_dir", None)
    if not cohort_dir:
        return lambda message: message
    from recur.cohort import contract  # pandas: only the steps that read the cohort's tables
    from recur.cohort import links as input_links

    root = Path(cohort_dir)
    tables = {}
    for attr in ("series_table", "rois_table"):
        name = getattr(a, attr, None)
        if name and (root / name).is_file():
            with contextlib.suppress(RecurError):
                tables[attr] = (name, contract.read_table(root / name))
    series_name, series = tables.get("series_table", ("series.csv", None))
    rois_name, rois = tables.get("rois_table", ("rois.csv", None))
    pairs = input_links.path_replacements(series, rois, root, series_name, rois_name)
    return lambda message: input_links.redact(message, pairs)


def excludable(
    cmd: Callable[[argparse.Namespace], None], stage: str
) -> Callable[[argparse.Namespace], None]:
    """Run ``cmd`` under ``--on-failure`` (recur.cohort.exclusions.run_or_exclude)."""

    def handler(a: argparse.Namespace) -> None:
        from recur.cohort import exclusions

        timepoint, inputs, outputs = _step_files(a, stage)
        patient = getattr(a, "patient", None) or Path(a.indir).parent.name
        write_excluded = None
        if stage in ("crop", "margin_register") and a.qc:
            write_excluded = lambda recs: exclusions.excluded_png(a.qc, patient, recs)  # noqa: E731
        exclusions.run_or_exclude(
            lambda: cmd(a),
            on_failure=a.on_failure,
            patient=patient,
            stage=stage,
            timepoint=timepoint,
            inputs=inputs,
            outputs=outputs,
            write_excluded=write_excluded,
            redact=redactor(a),
        )

    return handler


def exclusion_guard(a: argparse.Namespace):  # -> recur.preprocess.steps.Guard
    """The ``guard`` of a per-patient package function under ``--on-failure``: runs one step of
    one time point through recur.cohort.exclusions.run_or_exclude; False when it was excluded."""

    redact = redactor(a)

    def guard(stage, timepoint, step, inputs, outputs) -> bool:
        from recur.cohort import exclusions

        records = exclusions.run_or_exclude(
            step,
            on_failure=a.on_failure,
            patient=a.patient,
            stage=stage,
            timepoint=timepoint,
            inputs=inputs,
            outputs=outputs,
            redact=redact,
        )
        return not records

    return guard
