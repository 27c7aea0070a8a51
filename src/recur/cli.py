"""The command line: ``recur <command> ...`` (also ``python -m recur``).

This module only parses arguments and calls package functions. Every command turns a
:class:`recur.errors.RecurError` into one clear message on stderr and exit status 2, with no
traceback; set ``RECUR_DEBUG=1`` to see the traceback as well.

Each stage adds its commands in its own ``_add_<stage>`` function below.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recur.errors import RecurError

log = logging.getLogger("recur")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _threads(n: int | None) -> None:
    """Respect the rule's ``threads`` in every numeric library before any heavy import."""
    if n is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ["RECUR_THREADS"] = str(n)


# --------------------------------------------------------------------------- foundation
def _cmd_synth(a: argparse.Namespace) -> None:
    from recur import synth

    synth.write_cohort(
        Path(a.outdir),
        n_train=a.n_train,
        n_test=a.n_test,
        seed=a.seed,
        truth_path=Path(a.truth) if a.truth else None,
        workers=a.threads or 1,
        er_share=dict(zip(("train", "test"), a.er_share, strict=True)) if a.er_share else None,
    )


def _cmd_scan(a: argparse.Namespace) -> None:
    from recur import scan

    patterns = scan.load_patterns(Path(a.config) if a.config else None)
    table = scan.scan_tree(Path(a.dicom_root), patterns)
    scan.write_draft(table, Path(a.out))
    n_unsure = int(table["review"].astype(bool).sum()) if len(table) else 0
    log.info("wrote %d series to %s (%d marked for review)", len(table), a.out, n_unsure)


def _cmd_validate_cohort(a: argparse.Namespace) -> None:
    from recur import contract

    cohort = contract.load_cohort(
        Path(a.cohort_dir), a.clinical, a.series, a.rois, require_outcome=not a.no_outcome
    )
    summary = contract.cohort_summary(cohort)
    from recur.io import atomic_path

    with atomic_path(a.out) as tmp:
        summary.to_csv(tmp, index=False)
    # no path here: the cohort folder name may identify a patient or a site
    log.info("cohort: %d patients valid -> %s", len(summary), a.out)


def _cmd_config_doc(a: argparse.Namespace) -> None:
    from recur import config

    sys.stdout.write(config.reference_markdown())


def _add_foundation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config-doc", help="print the configuration reference (Markdown)")
    p.set_defaults(func=_cmd_config_doc)

    p = sub.add_parser("synth", help="write the synthetic cohort (DICOM, masks, tables)")
    p.add_argument("outdir", help="cohort directory to create")
    p.add_argument("--n-train", type=int, default=254, help="patients of the training site")
    p.add_argument(
        "--n-test", type=int, nargs="+", default=[20, 15], help="patients per external site"
    )
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument(
        "--er-share",
        type=float,
        nargs=2,
        metavar=("TRAIN", "TEST"),
        help="fix the share of ER patients of the training and the external test cohort "
        "(the workflow's default: the paper's 0.2323 0.2); without it every outcome is an "
        "independent draw",
    )
    p.add_argument("--truth", help="where to write truth.csv (default: beside OUTDIR)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("scan", help="draft series.csv from a raw DICOM export tree")
    p.add_argument("dicom_root")
    p.add_argument("--out", default="series_draft.csv")
    p.add_argument("--config", help="config YAML whose scan.phase_patterns to use")
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("validate-cohort", help="check a cohort directory against the contract")
    p.add_argument("cohort_dir")
    p.add_argument("--clinical", default="clinical.csv")
    p.add_argument("--series", default="series.csv")
    p.add_argument("--rois", default="rois.csv")
    p.add_argument("--no-outcome", action="store_true", help="outcome columns not required")
    p.add_argument("--out", required=True, help="patients table to write (id, site, cohort)")
    p.set_defaults(func=_cmd_validate_cohort)


# --------------------------------------------------------------------------- conversion
_CONVERT_SETTINGS = (
    "spacing_tolerance",
    "orientation_tolerance",
    "stack_tolerance_mm",
    "min_slices",
    "allow_single_slice",
    "compression_level",
)


def _convert_settings(a: argparse.Namespace):  # -> recur.convert.ConvertSettings
    """Settings from the options given; the others keep ConvertSettings' defaults."""
    from recur.convert import ConvertSettings

    given = {k: getattr(a, k) for k in _CONVERT_SETTINGS if getattr(a, k) is not None}
    return ConvertSettings(**given)


def _cmd_convert(a: argparse.Namespace) -> None:
    from recur import convert

    res = convert.convert_series(
        Path(a.dicom_dir),
        Path(a.out),
        series_uid=a.series_uid,
        echo=a.echo,
        settings=_convert_settings(a),
        context=f"folder '{a.dicom_dir}'",
    )
    size = "x".join(str(v) for v in res.image.GetSize())
    notes = ("; " + "; ".join(res.notes)) if res.notes else ""
    log.info("wrote %s (%s voxels, %d slices)%s", a.out, size, res.n_slices, notes)


def _cmd_convert_timepoint(a: argparse.Namespace) -> None:
    from recur import convert

    convert.convert_timepoint(
        Path(a.cohort_dir),
        a.series_table,
        a.patient,
        a.timepoint,
        Path(a.outdir),
        settings=_convert_settings(a),
    )
    log.info("patient %s %s: wrote 4 phases and acquisition.json", a.patient, a.timepoint)


def _cmd_convert_patient(a: argparse.Namespace) -> None:
    import dataclasses

    from recur import convert

    settings = _convert_settings(a)
    if a.min_interval_days is not None:
        settings = dataclasses.replace(settings, min_interval_days=a.min_interval_days)
    done = convert.convert_patient(
        Path(a.cohort_dir),
        a.series_table,
        a.patient,
        Path(a.outdir),
        settings=settings,
        timepoints=a.timepoints,
        guard=_exclusion_guard(a),
    )
    for tp in a.timepoints:
        state = "4 phases and acquisition.json" if tp in done else "EXCLUDED (placeholders)"
        log.info("patient %s %s: %s", a.patient, tp, state)


def _add_convert_settings(p: argparse.ArgumentParser) -> None:
    """Options of the geometry checks (defaults: recur.convert.ConvertSettings, which the
    schema's ``convert:`` section mirrors); no heavy import at parser-build time."""
    p.add_argument(
        "--spacing-tolerance",
        type=float,
        help="largest distance of a slice from the regular grid, as a fraction of the step "
        "(default 0.05)",
    )
    p.add_argument(
        "--orientation-tolerance",
        type=float,
        help="largest difference of direction cosines between slices (default 0.001)",
    )
    p.add_argument(
        "--stack-tolerance-mm",
        type=float,
        help="largest in-plane offset (mm) of a slice from the normal through the first "
        "(default 0.1)",
    )
    p.add_argument("--min-slices", type=int, help="fewest slices of a volume (default 3)")
    p.add_argument(
        "--allow-single-slice",
        action="store_true",
        default=None,
        help="accept a series of exactly one slice",
    )
    p.add_argument(
        "--compression-level",
        type=int,
        choices=range(1, 10),
        metavar="1..9",
        help="gzip level of .nii.gz output (default 1: fastest)",
    )


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert one DICOM series to a de-identified NIfTI")
    p.add_argument("dicom_dir", help="folder holding the series' files")
    p.add_argument("out", help="NIfTI file to write (.nii.gz or .nii)")
    p.add_argument("--series-uid", help="SeriesInstanceUID to take when the folder holds several")
    p.add_argument("--echo", type=int, help="EchoNumbers to take from a multi-echo series")
    _add_convert_settings(p)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "convert-timepoint", help="convert the 4 phases of one patient and time point"
    )
    _add_cohort_series(p)
    p.add_argument("--timepoint", required=True, choices=("pre", "post"))
    p.add_argument(
        "--outdir", required=True, help="where {PS,AP,PVP,DP}.nii.gz and acquisition.json go"
    )
    _add_convert_settings(p)
    _add_on_failure(p)
    p.set_defaults(func=_excludable(_cmd_convert_timepoint, "convert"))

    p = sub.add_parser(
        "convert-patient",
        help="convert both time points of one patient (8 series; the workflow's job)",
    )
    _add_cohort_series(p)
    p.add_argument(
        "--outdir",
        required=True,
        help="the patient's folder: {pre,post}/{PS,AP,PVP,DP}.nii.gz and acquisition.json go here",
    )
    p.add_argument("--timepoints", nargs="+", choices=("pre", "post"), default=["pre", "post"])
    _add_convert_settings(p)
    p.add_argument(
        "--min-interval-days",
        type=_non_negative_int,
        help="fewest days from the pre DP to the post series; fewer (or post before pre: "
        "swapped time points?) are refused (default 1)",
    )
    _add_on_failure(p)
    p.set_defaults(func=_cmd_convert_patient)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _add_cohort_series(p: argparse.ArgumentParser) -> None:
    """The cohort folder, its series table and the patient of a per-patient conversion."""
    p.add_argument("--cohort-dir", required=True)
    p.add_argument(
        "--series-table",
        default="series.csv",
        help="series table (relative to the cohort dir unless absolute)",
    )
    p.add_argument("--patient", required=True)


# --------------------------------------------------------------------------- preprocessing


def _optional_float(v: str) -> float | None:
    """A float, or None for 'none'/'null'/'' (config nulls on the command line)."""
    return None if v.strip().lower() in ("", "none", "null") else float(v)


def _cmd_check_mask(a: argparse.Namespace) -> None:
    from recur import contract, masks

    cohort_dir = Path(a.cohort_dir)
    rois = contract.read_table(cohort_dir / a.rois_table)
    mask_path = contract.roi_path(rois, cohort_dir, a.patient, a.timepoint)
    try:
        mask_name = str(mask_path.relative_to(cohort_dir))
    except ValueError:
        mask_name = str(mask_path)
    dp_name = a.dp
    if a.series_table and (cohort_dir / a.series_table).is_file():
        series = contract.read_table(cohort_dir / a.series_table)
        try:
            row = contract.series_row(series, a.patient, a.timepoint, "DP")
            dp_name = f"{a.dp} (from {row['dicom_dir']})"
        except RecurError:
            pass
    summary = masks.check_mask_file(
        mask_path,
        a.dp,
        a.out,
        patient=a.patient,
        timepoint=a.timepoint,
        mask_name=mask_name,
        dp_name=dp_name,
    )
    log.info("mask accepted: %s", summary)


#: Defaults of the registration options (recur.register.RegistrationSettings's).
_REGISTRATION_DEFAULTS: dict[str, object] = {
    "shrink_factors": [4, 2, 1],
    "smoothing_sigmas_mm": [2.0, 1.0, 0.0],
    "histogram_bins": 32,
    "sampling_fraction": 0.005,
    "min_samples": 5000,
    "iterations": 100,
    "learning_rate": 2.0,
    "min_step": 0.005,
    "seed": 2025,
    "mask_margin_mm": None,
}


def _add_registration_settings(
    p: argparse.ArgumentParser,
    region_flag: str = "--mask-margin-mm",
    region_help: str = "metric only in the ROI box grown by this margin (default: whole image)",
    **defaults: object,
) -> None:
    """Options of a ``recur.register.RegistrationSettings`` (``register``, ``margin-register``).

    ``defaults`` override :data:`_REGISTRATION_DEFAULTS`; ``region_flag`` names the option of
    ``mask_margin_mm`` (the metric's region around the ROI).
    """
    d = {**_REGISTRATION_DEFAULTS, **defaults}
    p.add_argument("--shrink-factors", type=int, nargs="+", default=d["shrink_factors"])
    p.add_argument("--smoothing-sigmas-mm", type=float, nargs="+", default=d["smoothing_sigmas_mm"])
    for name, kind in (
        ("histogram_bins", int),
        ("sampling_fraction", float),
        ("min_samples", int),
        ("iterations", int),
        ("learning_rate", float),
        ("min_step", float),
        ("seed", int),
    ):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=d[name])
    p.add_argument(
        region_flag,
        dest="mask_margin_mm",
        metavar="MM",
        type=_optional_float,
        default=d["mask_margin_mm"],
        help=region_help,
    )


def _registration_settings(a: argparse.Namespace):  # -> recur.register.RegistrationSettings
    """The ``RegistrationSettings`` of the options added by :func:`_add_registration_settings`."""
    from recur import register

    return register.settings_from_args(
        getattr(a, "transform", "rigid"),
        a.shrink_factors,
        a.smoothing_sigmas_mm,
        histogram_bins=a.histogram_bins,
        sampling_fraction=a.sampling_fraction,
        min_samples=a.min_samples,
        iterations=a.iterations,
        learning_rate=a.learning_rate,
        min_step=a.min_step,
        seed=a.seed,
        mask_margin_mm=a.mask_margin_mm,
    )


def _cmd_register(a: argparse.Namespace) -> None:
    from recur import register

    settings = _registration_settings(a)
    qc = register.register_timepoint_dir(
        a.indir, a.outdir, settings, mask=a.mask, threads=a.threads or 1
    )
    log.info("registered onto DP:\n%s", qc.drop(columns=["parameters", "fixed_parameters"]))


def _mask_checker(a: argparse.Namespace):  # -> Callable[[str, Path, Path], None]
    """``check(tp, dp_path, out_path)``: the cohort's ROI mask of ``tp`` checked against DP
    (as ``check-mask``), messages also in ``--check-log``; refusals named as check-mask's."""
    from recur import contract, masks

    cohort_dir = Path(a.cohort_dir)
    series = None
    if a.series_table and (cohort_dir / a.series_table).is_file():
        series = contract.read_table(cohort_dir / a.series_table)
    rois: list = []
    redact = _redactor(a)

    def check(tp: str, dp: Path, out: Path) -> None:
        handler = logging.FileHandler(a.check_log, mode="a") if a.check_log else None
        if handler is not None:
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            log.addHandler(handler)
        try:
            if not rois:
                rois.append(contract.read_table(cohort_dir / a.rois_table))
            mask_path = contract.roi_path(rois[0], cohort_dir, a.patient, tp)
            try:
                mask_name = str(mask_path.relative_to(cohort_dir))
            except ValueError:
                mask_name = str(mask_path)
            dp_name = str(Path(a.nifti_dir) / tp / dp.name)
            if series is not None:
                try:
                    row = contract.series_row(series, a.patient, tp, "DP")
                    dp_name = f"{dp_name} (from {row['dicom_dir']})"
                except RecurError:
                    pass
            summary = masks.check_mask_file(
                mask_path,
                dp,
                out,
                patient=a.patient,
                timepoint=tp,
                mask_name=mask_name,
                dp_name=dp_name,
            )
            log.info("mask accepted: %s", summary)
        except RecurError as exc:
            log.error("recur check-mask: error: %s", redact(str(exc)))
            raise
        finally:
            if handler is not None:
                log.removeHandler(handler)
                handler.close()

    return check


def _cmd_register_patient(a: argparse.Namespace) -> None:
    """``register-patient``: for each time point, check the ROI mask (``--check-roi``, as
    ``check-mask``) and register, in one process; every file is written only after all
    succeeded (``recur.register.register_patient``)."""
    from recur import register

    if a.check_log:  # one check log per patient, written afresh by each run
        Path(a.check_log).parent.mkdir(parents=True, exist_ok=True)
        Path(a.check_log).write_text("", encoding="utf-8")
    if a.check_roi and not a.cohort_dir:
        raise RecurError("register-patient --check-roi needs --cohort-dir")
    qc = register.register_patient(
        a.nifti_dir,
        a.outdir,
        _registration_settings(a),
        masks_dir=a.mask_dir,
        check_mask=_mask_checker(a) if a.check_roi else None,
        timepoints=a.timepoints,
        threads=a.threads or 1,
        guard=_exclusion_guard(a),
    )
    for tp in a.timepoints:
        if tp in qc:
            table = qc[tp].drop(columns=["parameters", "fixed_parameters"])
            log.info("patient %s %s registered onto DP:\n%s", a.patient, tp, table)
        else:
            log.info("patient %s %s: EXCLUDED (placeholders)", a.patient, tp)


def _cmd_crop(a: argparse.Namespace) -> None:
    from recur import crops

    settings = crops.CropSettings(
        size=a.size,
        spacing_mm=a.spacing_mm,
        normalisation=a.normalisation,
        region=a.region,
        post_frame=a.post_frame,
    )
    res = crops.crop_patient_files(
        a.patient,
        {"pre": a.registered_pre, "post": a.registered_post},
        {"pre": a.mask_pre, "post": a.mask_post},
        a.out,
        a.qc,
        settings,
        a.post_to_pre,
    )
    for t, r in res.items():
        log.info(
            "%s %s: slices %s centre %s ROI %d px", a.patient, t, r.slices, r.centre, r.roi_area_px
        )


def _cmd_crop_qc(a: argparse.Namespace) -> None:
    from recur import crops
    from recur.io import atomic_path

    table = crops.crop_qc_table(a.crops, a.registration_qc or [])
    with atomic_path(a.out) as tmp:
        table.to_csv(tmp, index=False)
    n_flag = int((table["flags"] != "").sum()) if len(table) else 0
    n_sim = int(table["flags"].str.contains("similarity outlier").sum()) if len(table) else 0
    log.info(
        "crop QC: %d rows, %d flagged (%d registration similarity outliers) -> %s",
        len(table),
        n_flag,
        n_sim,
        a.out,
    )


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-mask", help="check an ROI mask against its DP image, copy it")
    p.add_argument("--cohort-dir", required=True)
    p.add_argument("--rois-table", default="rois.csv")
    p.add_argument("--series-table", default=None, help="to name the DP series in messages")
    p.add_argument("--patient", required=True)
    p.add_argument("--timepoint", required=True, choices=["pre", "post"])
    p.add_argument("--dp", required=True, help="the DP NIfTI of this patient and time point")
    p.add_argument("--out", required=True, help="binary uint8 mask to write (.nii.gz)")
    _add_on_failure(p)
    p.set_defaults(func=_excludable(_cmd_check_mask, "check_mask"))

    p = sub.add_parser("register", help="register PS, AP and PVP onto DP (one time point)")
    p.add_argument("--indir", required=True, help="folder with {PS,AP,PVP,DP}.nii.gz")
    p.add_argument("--mask", default=None, help="checked ROI mask (QC region, optional)")
    p.add_argument("--outdir", required=True)
    p.add_argument("--transform", choices=["rigid", "affine"], default="rigid")
    _add_registration_settings(p)
    _add_on_failure(p)
    p.set_defaults(func=_excludable(_cmd_register, "register"))

    p = sub.add_parser(
        "register-patient",
        help="check the ROI masks and register both time points of one patient (the "
        "workflow's job)",
    )
    p.add_argument("--patient", required=True)
    p.add_argument(
        "--nifti-dir", required=True, help="the patient's converted folder ({pre,post}/*.nii.gz)"
    )
    p.add_argument("--outdir", required=True, help="the patient's registered folder")
    p.add_argument(
        "--mask-dir",
        default=None,
        help="the patient's checked masks ({pre,post}.nii.gz): written by --check-roi, else "
        "read as the QC region when present",
    )
    p.add_argument("--timepoints", nargs="+", choices=("pre", "post"), default=["pre", "post"])
    p.add_argument("--transform", choices=["rigid", "affine"], default="rigid")
    _add_registration_settings(p)
    _add_on_failure(p)
    g = p.add_argument_group(
        "mask check first (as check-mask; the checked copies go to --mask-dir)"
    )
    g.add_argument("--check-roi", action="store_true", help="check the cohort's ROI masks first")
    g.add_argument("--cohort-dir", default=None)
    g.add_argument("--rois-table", default="rois.csv")
    g.add_argument("--series-table", default=None, help="to name the DP series in messages")
    g.add_argument("--check-log", default=None, help="also log the checks (and refusals) here")
    p.set_defaults(func=_cmd_register_patient)

    p = sub.add_parser("crop", help="3-slice crops of both time points of one patient")
    p.add_argument("--patient", required=True)
    p.add_argument("--registered-pre", required=True)
    p.add_argument("--registered-post", required=True)
    p.add_argument("--mask-pre", required=True)
    p.add_argument("--mask-post", required=True)
    p.add_argument("--out", required=True, help=".npz to write")
    p.add_argument("--qc", default=None, help="QC montage PNG to write")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--spacing-mm", type=_optional_float, default=None)
    p.add_argument(
        "--normalisation",
        default="robust_zscore",
        choices=["robust_zscore", "zscore", "minmax", "none"],
    )
    p.add_argument("--region", default="crop", choices=["crop", "volume"])
    p.add_argument(
        "--post-frame",
        default="own",
        choices=["pre", "own"],
        help="crop post on the pre crop's grid (needs --post-to-pre) or around its own ROI",
    )
    p.add_argument("--post-to-pre", default=None, help="post-to-pre transform (.tfm)")
    _add_on_failure(p)
    p.set_defaults(func=_excludable(_cmd_crop, "crop"))

    p = sub.add_parser("crop-qc", help="cohort QC table of the crops and registrations")
    p.add_argument("--crops", nargs="+", required=True)
    p.add_argument("--registration-qc", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_crop_qc)


# --------------------------------------------------------------------------- models


def _cmd_split(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import split

    patients = pd.read_csv(a.patients, dtype={"patient_id": str})
    patients = _drop_excluded(patients, a)
    table = split.make_split(patients, split.read_outcome(a.clinical), a.fraction, a.seed)
    split.write_split(table, a.out)
    log.info("split: %s", table["split"].value_counts().to_dict())


def _dl_arch(a: argparse.Namespace):
    from recur.train import Architecture

    return Architecture(
        model=a.model,
        widths=tuple(a.widths),
        blocks=tuple(a.blocks),
        hidden=a.hidden,
        dropout=a.dropout,
        max_pool=not a.no_max_pool,
        roi_channel=a.roi_channel,
        tta=a.tta,
        aux_targets=tuple(a.aux_columns),
    )


def _cmd_train_dl(a: argparse.Namespace) -> None:
    from recur import train
    from recur.dl_data import Augmentation

    settings = train.TrainSettings(
        epochs=a.epochs,
        patience=a.patience,
        batch_size=a.batch_size,
        learning_rate=a.learning_rate,
        weight_decay=a.weight_decay,
        seed=a.seed,
        augment=Augmentation(
            rotate_deg=a.rotate_deg,
            flip=not a.no_flip,
            flip_vertical=not a.no_flip_vertical,
            intensity_scale=a.intensity_scale,
            intensity_shift=a.intensity_shift,
            prob=a.augment_prob,
        ),
        min_epochs=a.min_epochs,
        smooth_epochs=a.smooth_epochs,
        scheduler=a.scheduler,
        average_window=a.average_window,
        aux_weight=a.aux_weight,
    )
    train.configure_torch(a.seed, a.threads)
    train.run_training(
        _dl_arch(a),
        settings,
        fold=a.fold,
        crossfit_k=a.folds,
        split_csv=a.split,
        clinical_csv=a.clinical,
        crops_dir=a.crops_dir,
        outdir=a.outdir,
        device=a.device,
        aux_csv=a.aux_table,
        offset_variables=tuple(a.offset_variables),
        offset_c=a.offset_c,
    )


def _cmd_signature_dl(a: argparse.Namespace) -> None:
    import json

    import pandas as pd

    from recur import train
    from recur.io import atomic_path

    model_dir = Path(a.model_dir)
    scores = Path(a.scores) if a.scores else model_dir / "scores.csv"
    table = train.signature_table(pd.read_csv(scores, dtype={"patient_id": str}))
    meta = json.loads((model_dir / "model.json").read_text())
    train_log = pd.read_csv(model_dir / "training_log.csv")
    train.plot_training(train_log, meta["model"], a.figure, meta.get("selected_epoch"))
    with atomic_path(a.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")


def _cmd_ensemble_dl(a: argparse.Namespace) -> None:
    from recur import train

    train.configure_torch(0, a.threads)
    train.run_ensemble(
        a.members, split_csv=a.split, crops_dir=a.crops_dir, outdir=a.outdir, device=a.device
    )


def _cmd_crossfit_dl(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import train
    from recur.io import atomic_path

    def read(d: str) -> pd.DataFrame:
        return pd.read_csv(Path(d) / "scores.csv", dtype={"patient_id": str})

    table = train.crossfit_table(read(a.full), [read(d) for d in a.folds])
    with atomic_path(a.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.8g")


def _cmd_gradcam(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import gradcam, train
    from recur.split import read_outcome

    train.configure_torch(0, a.threads)
    device = train.resolve_device(a.device)
    model, arch = train.load_model(a.model_dir, device)
    if arch.model != "PrePost":
        raise RecurError(f"{a.model_dir}: Grad-CAM needs the PrePost model, not {arch.model}")
    gradcam.run_gradcam(
        model,
        train.signature_table(pd.read_csv(a.predictions, dtype={"patient_id": str})),
        read_outcome(a.clinical),
        a.crops_dir,
        a.outdir,
        cutoff=a.cutoff,
        n_per_group=a.n_per_group,
        patients=a.patients,
        device=device,
    )


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="tuning split of the training cohort (split.csv)")
    p.add_argument("--patients", required=True, help="patients.csv (patient_id, site, cohort)")
    p.add_argument("--clinical", required=True, help="clinical.csv (patient_id, er)")
    p.add_argument("--fraction", type=float, default=0.2, help="share of train put in tune")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True)
    _add_exclusion_args(p)
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("train-dl", help="train one deep-learning model (full or one fold)")
    p.add_argument("--model", required=True, choices=["Pre", "PrePost"])
    p.add_argument("--fold", default="full", help="'full' or a cross-fitting fold 0..K-1")
    p.add_argument("--folds", type=int, default=4, help="K cross-fitting folds")
    p.add_argument("--split", required=True, help="split.csv")
    p.add_argument("--clinical", required=True, help="clinical.csv (er)")
    p.add_argument("--crops-dir", required=True, help="folder of {patient}.npz crops")
    p.add_argument("--outdir", required=True, help="where weights.pt etc. go")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    # defaults = recur.train.TrainSettings / recur.dl_data.Augmentation (= the schema's)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=15)
    p.add_argument("--min-epochs", type=int, default=10, help="no epoch kept before this one")
    p.add_argument("--smooth-epochs", type=int, default=3, help="tuning-AUC window (epochs)")
    p.add_argument("--scheduler", default="onecycle", choices=["onecycle", "constant"])
    p.add_argument(
        "--average-window",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the mean weights of the selection window's epochs (weight averaging)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 64])
    p.add_argument("--blocks", type=int, nargs=4, default=[1, 1, 1, 1])
    p.add_argument("--hidden", type=int, default=32, help="GRU hidden size (PrePost)")
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--no-max-pool", action="store_true", help="no max-pool in the stem")
    p.add_argument(
        "--roi-channel",
        action="store_true",
        help="the tumour ROI as 3 more input channels per time point",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="score with the mean logit over the 8 dihedral views (test-time augmentation)",
    )
    p.add_argument("--rotate-deg", type=float, default=180.0)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--no-flip-vertical", action="store_true")
    p.add_argument("--intensity-scale", type=float, default=0.1)
    p.add_argument("--intensity-shift", type=float, default=0.1)
    p.add_argument("--augment-prob", type=float, default=0.8)
    p.add_argument(
        "--aux-table", default=None, help="CSV with patient_id and the auxiliary targets"
    )
    p.add_argument(
        "--aux-columns",
        nargs="*",
        default=[],
        help="columns of --aux-table learnt as auxiliary regression targets (multi-task)",
    )
    p.add_argument("--aux-weight", type=float, default=3.0, help="weight of the auxiliary loss")
    p.add_argument(
        "--offset-variables",
        nargs="*",
        default=[],
        help="clinical-table columns whose fitted log-odds offsets the training loss",
    )
    p.add_argument(
        "--offset-c", type=float, default=1.0, help="inverse L2 strength of the offset's fit"
    )
    p.set_defaults(func=_cmd_train_dl)

    p = sub.add_parser("signature-dl", help="signature CSV + training curve of a full model")
    p.add_argument("model_dir", help="output folder of train-dl --fold full")
    p.add_argument("--out", required=True, help="predictions/{model}.csv")
    p.add_argument("--figure", required=True, help="training-curve PNG")
    p.add_argument(
        "--scores", default=None, help="scores.csv to publish (default: the model folder's)"
    )
    p.set_defaults(func=_cmd_signature_dl)

    p = sub.add_parser(
        "ensemble-dl", help="join the full and fold models into one mean-logit ensemble"
    )
    p.add_argument("members", nargs="+", help="train-dl output folders (full, 0, 1, ...)")
    p.add_argument("--split", required=True, help="split.csv (every patient is scored)")
    p.add_argument("--crops-dir", required=True, help="folder of {patient}.npz crops")
    p.add_argument("--outdir", required=True, help="where weights.pt, model.json, scores.csv go")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_ensemble_dl)

    p = sub.add_parser("crossfit-dl", help="out-of-fold signature from the fold models")
    p.add_argument("--full", required=True, help="output folder of the full model")
    p.add_argument("--folds", required=True, nargs="+", help="output folders of the folds")
    p.add_argument("--out", required=True, help="predictions/oof/{model}.csv")
    p.set_defaults(func=_cmd_crossfit_dl)

    p = sub.add_parser("gradcam", help="Grad-CAM heat maps of the PrePost model")
    p.add_argument("--model-dir", required=True, help="output folder of the full PrePost model")
    p.add_argument("--predictions", required=True, help="predictions/PrePost.csv")
    p.add_argument("--clinical", required=True, help="clinical.csv (er)")
    p.add_argument("--crops-dir", required=True)
    p.add_argument("--outdir", required=True, help="folder of {patient}.png and index.csv")
    p.add_argument("--patients", nargs="*", default=[], help="ids (default: chosen by group)")
    p.add_argument("--n-per-group", type=int, default=1)
    p.add_argument("--cutoff", type=float, default=None, help="default: tune-split Youden")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_gradcam)


# --------------------------------------------------------------------------- evaluation


def _add_tabular_args(p: argparse.ArgumentParser) -> None:
    """The estimator options of a tabular model (recur.tabular.TabularSettings)."""
    p.add_argument("--estimator", default="extra_trees", choices=["extra_trees", "logistic"])
    p.add_argument("--n-estimators", type=int, default=500)
    p.add_argument(
        "--max-depth", type=lambda s: None if s in ("None", "null") else int(s), default=None
    )
    p.add_argument("--min-samples-leaf", type=int, default=3)
    p.add_argument("--max-features", default="sqrt")
    p.add_argument("--class-weight", default=None)
    p.add_argument("--impute", default="median", choices=["mean", "median", "most_frequent"])
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--cs", type=int, default=20, help="logistic: penalty values tried")
    p.add_argument("--cv-folds", type=int, default=5, help="logistic: folds choosing it")
    p.add_argument("--spline-knots", type=int, default=0, help="logistic: 0 = linear")


def _tree_settings(a: argparse.Namespace):
    from recur.tabular import TabularSettings

    mf = a.max_features
    if mf not in ("sqrt", "log2"):
        try:
            mf = float(mf)
        except ValueError:
            raise RecurError(f"max_features = {mf!r}: expected sqrt, log2 or a fraction") from None
    return TabularSettings(
        estimator=a.estimator,
        n_estimators=a.n_estimators,
        max_depth=a.max_depth,
        min_samples_leaf=a.min_samples_leaf,
        max_features=mf,
        class_weight=None if a.class_weight in (None, "none", "None") else a.class_weight,
        impute=a.impute,
        seed=a.seed,
        cs=a.cs,
        cv_folds=a.cv_folds,
        spline_knots=a.spline_knots,
    )


def _write_csv(df, path: str) -> None:
    from recur.io import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")


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
    from recur import evaluate as ev

    paths = _model_paths(a.predictions)
    preds = {m: ev.read_predictions(p, m) for m, p in paths.items()}
    frame = ev.evaluation_frame(preds, ev.read_split(a.split), ev.read_clinical(a.clinical))
    return frame, list(paths)


def _read_cutoffs(path: str) -> dict[str, float]:
    import pandas as pd

    t = pd.read_csv(path)
    return dict(zip(t["model"], t["cutoff"].astype(float), strict=True))


def _cmd_clinical_model(a: argparse.Namespace) -> None:
    from recur import evaluate as ev
    from recur import tabular

    st = _tree_settings(a)
    model, pred = tabular.clinical_model(
        ev.read_clinical(a.clinical), ev.read_split(a.split), st, n_jobs=a.threads or 1
    )
    tabular.save_model(
        model, a.model, a.manifest, features=list(tabular.CLINICAL_FEATURES), settings=st
    )
    _write_csv(pred, a.out)
    log.info("Clinical model fitted; %d patients scored", len(pred))


def _cmd_dl_clinical_model(a: argparse.Namespace) -> None:
    import json

    from recur import evaluate as ev
    from recur import tabular
    from recur.io import write_text_atomic

    st = _tree_settings(a)
    clinical = ev.read_clinical(a.clinical)
    split = ev.read_split(a.split)
    full = {
        "Pre": ev.read_predictions(a.pre, "Pre"),
        "PrePost": ev.read_predictions(a.prepost, "PrePost"),
    }
    choice, aucs = tabular.choose_signature(full, clinical)
    oof_path = {"Pre": a.pre_oof, "PrePost": a.prepost_oof}[choice]
    oof = (
        ev.read_predictions(oof_path, f"{choice} (out-of-fold)")
        if a.stacking == "crossfit"
        else None
    )
    sig = tabular.signature_values(full[choice], oof, split, a.stacking)
    name = f"{choice}_signature"
    model, pred, feats = tabular.dl_clinical_model(
        clinical, split, sig, name, st, n_jobs=a.threads or 1
    )
    imp = tabular.feature_importance(model, feats)
    choice_info = {
        "signature": choice,
        "tune_auc": aucs,
        "stacking": a.stacking,
        "rule": "higher tuning AUC; ties go to PrePost",
    }
    tabular.save_model(
        model,
        a.model,
        a.manifest,
        features=feats,
        settings=st,
        extra={"signature": choice, "stacking": a.stacking},
    )
    write_text_atomic(a.choice, json.dumps(choice_info, indent=2, sort_keys=True) + "\n")
    _write_csv(imp, a.importance)
    _write_csv(pred, a.out)
    log.info(
        "DL_Clinical: signature %s (tune AUC %s), stacking %s",
        choice,
        {k: round(v, 3) for k, v in aucs.items()},
        a.stacking,
    )


def _cmd_cutoffs(a: argparse.Namespace) -> None:
    from recur import evaluate as ev

    frame, models = _eval_frame(a)
    _write_csv(ev.cutoffs_table(frame, models), a.out)


def _cmd_table2(a: argparse.Namespace) -> None:
    from recur import evaluate as ev
    from recur.io import write_text_atomic

    frame, models = _eval_frame(a)
    long = ev.table2(
        frame, models, _read_cutoffs(a.cutoffs), n_boot=a.bootstrap, seed=a.seed, level=a.ci_level
    )
    wide = ev.table2_wide(long)
    note = (
        f"\nEstimate [{a.ci_level:.0%} CI]; stratified percentile bootstrap, "
        f"{a.bootstrap} resamples, seed {a.seed}; cutoffs = Youden index on the tuning "
        "split. NA = undefined (0/0).\n"
    )
    _write_csv(long, a.out)
    write_text_atomic(a.md, ev.markdown_table(wide) + note)
    write_text_atomic(a.html, wide.to_html(index=False, border=0) + f"<p>{note}</p>\n")


def _cmd_delong(a: argparse.Namespace) -> None:
    from recur import evaluate as ev

    frame, models = _eval_frame(a)
    _write_csv(ev.delong_table(frame, models), a.out)


def _cmd_calibration(a: argparse.Namespace) -> None:
    from recur import evaluate as ev
    from recur import figures

    frame, models = _eval_frame(a)
    table = ev.calibration_table(frame, models)
    figures.cohort_figures(frame, models, "calibration", a.figdir, frac=a.lowess_frac)
    _write_csv(table, a.out)


def _cmd_table1(a: argparse.Namespace) -> None:
    from recur import evaluate as ev
    from recur import table1
    from recur.io import write_text_atomic

    t = table1.table1(ev.read_clinical(a.clinical), alpha=a.alpha)
    _write_csv(t, a.out)
    write_text_atomic(a.md, table1.to_markdown(t))


def _cmd_figures(a: argparse.Namespace) -> None:
    import numpy as np

    from recur import figures

    frame, models = _eval_frame(a)
    thresholds = None
    if a.kind == "dca":
        thresholds = np.round(np.arange(a.dca_min, a.dca_max + a.dca_step / 2, a.dca_step), 6)
        thresholds = thresholds[thresholds < 1]
    cutoffs = _read_cutoffs(a.cutoffs) if a.cutoffs else None
    if a.kind == "km" and cutoffs is None:
        raise RecurError("figures --kind km needs --cutoffs")
    table = figures.cohort_figures(
        frame, models, a.kind, a.outdir, cutoffs=cutoffs, thresholds=thresholds
    )
    if a.table:
        if table is None:
            raise RecurError(f"figures --kind {a.kind} writes no table")
        _write_csv(table, a.table)


def _cmd_importance_figure(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import figures

    imp = pd.read_csv(a.importance)
    figures.save_figure(figures.importance_figure(imp, a.title), a.png, a.pdf)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    def base(p: argparse.ArgumentParser, preds: bool = True) -> None:
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

    p = sub.add_parser("clinical-model", help="fit the Clinical model; score all")
    base(p, preds=False)
    _add_tabular_args(p)
    p.add_argument("--out", required=True, help="predictions/Clinical.csv")
    p.add_argument("--model", required=True, help="fitted model (.skops)")
    p.add_argument("--manifest", required=True, help="JSON manifest with the sha256")
    p.set_defaults(func=_cmd_clinical_model)

    p = sub.add_parser("dl-clinical-model", help="fit DL_Clinical (clinical + DL signature)")
    base(p, preds=False)
    _add_tabular_args(p)
    for opt in ("--pre", "--prepost", "--pre-oof", "--prepost-oof"):
        p.add_argument(opt, required=True)
    p.add_argument("--stacking", choices=["crossfit", "in_sample"], default="in_sample")
    for opt in ("--out", "--model", "--manifest", "--choice", "--importance"):
        p.add_argument(opt, required=True)
    p.set_defaults(func=_cmd_dl_clinical_model)

    p = sub.add_parser("cutoffs", help="Youden cutoffs of every model on the tuning split")
    base(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_cutoffs)

    p = sub.add_parser("table2", help="Table 2 with stratified bootstrap CIs")
    base(p)
    p.add_argument("--cutoffs", required=True)
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--ci-level", type=float, default=0.95)
    for opt in ("--out", "--md", "--html"):
        p.add_argument(opt, required=True)
    p.set_defaults(func=_cmd_table2)

    p = sub.add_parser("delong", help="paired DeLong tests of every pair of models")
    base(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_delong)

    p = sub.add_parser("calibration", help="Brier, calibration intercept/slope and plots")
    base(p)
    p.add_argument("--lowess-frac", type=float, default=2.0 / 3.0)
    p.add_argument("--out", required=True)
    p.add_argument("--figdir", required=True)
    p.set_defaults(func=_cmd_calibration)

    p = sub.add_parser("table1", help="baseline characteristics, ER vs non-ER")
    p.add_argument("--clinical", required=True)
    p.add_argument("--alpha", type=float, default=0.05, help="Shapiro-Wilk level")
    p.add_argument("--out", required=True)
    p.add_argument("--md", required=True)
    p.set_defaults(func=_cmd_table1)

    p = sub.add_parser("figures", help="ROC, decision-curve or Kaplan-Meier figures per cohort")
    base(p)
    p.add_argument("--kind", required=True, choices=["roc", "dca", "km"])
    p.add_argument("--outdir", required=True)
    p.add_argument("--cutoffs", help="cutoffs.csv (km)")
    p.add_argument("--dca-min", type=float, default=0.01)
    p.add_argument("--dca-max", type=float, default=0.8)
    p.add_argument("--dca-step", type=float, default=0.01)
    p.add_argument("--table", help="km: log-rank table to write")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("importance-figure", help="bar chart of MDI feature importance")
    p.add_argument("--importance", required=True)
    p.add_argument("--title", default="DL_Clinical")
    p.add_argument("--png", required=True)
    p.add_argument("--pdf", required=True)
    p.set_defaults(func=_cmd_importance_figure)


# --------------------------------------------------------------------------- margin
def _sitk_threads(n: int | None) -> None:
    import SimpleITK as sitk

    if n:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)


def _cmd_margin_register(a: argparse.Namespace) -> None:
    from recur import margin

    _sitk_threads(a.threads)
    settings = margin.CrossTimeSettings(
        rigid=_registration_settings(a),
        deformable=a.deformable,
        region_mm=a.region_mm,
        bspline_spacing_mm=a.bspline_spacing_mm,
        bspline_iterations=a.bspline_iterations,
        max_displacement_mm=a.max_displacement_mm,
        exclude_mm=a.exclude_mm,
        zone_interpolation=a.zone_interpolation,
    )
    qc = margin.register_files(
        a.pre_dp,
        a.post_dp,
        a.pre_mask,
        a.post_mask,
        a.out_tfm,
        a.out_mask,
        qc_png=a.qc,
        qc_json=a.qc_json,
        settings=settings,
        patient=a.patient,
    )
    log.info(
        "%s: post->pre %.2f mm, NCC %.3f -> %.3f, %.1f s",
        a.patient,
        qc["translation_mm"],
        qc["ncc_region_before"],
        qc["ncc_region_after"],
        qc["seconds"],
    )


def _cmd_margin_metrics(a: argparse.Namespace) -> None:
    from recur import margin

    _sitk_threads(a.threads)
    rec = margin.metrics_files(
        a.tumour,
        a.zone,
        a.out,
        a.surface,
        mode=a.mode,
        iso_spacing_mm=None if a.iso_spacing_mm <= 0 else a.iso_spacing_mm,
        smooth_voxels=a.smooth_voxels,
        transform=a.transform,
        patient=a.patient,
    )
    log.info("%s: min margin %.2f mm (%s)", a.patient, rec["min_margin_mm"], rec["mode"])


def _cmd_margin_figure(a: argparse.Namespace) -> None:
    from recur import margin

    margin.plot_patient_margins(margin.load_surface(a.surface), a.patient, a.out)


def _cmd_margin_table(a: argparse.Namespace) -> None:
    from recur import margin

    table = margin.table_files(a.metrics, a.out, a.figure)
    log.info("wrote %d patients to %s", len(table), a.out)


def _cmd_margin_model(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import evaluate as ev
    from recur import margin, tabular

    st = _tree_settings(a)
    clinical = ev.read_clinical(a.clinical)
    split = ev.read_split(a.split)
    margins = pd.read_csv(a.margin)
    sig, name, extra = None, "signature", {}
    if a.model == "DL_Clinical_Margin":
        if not (a.pre and a.prepost):
            raise RecurError("DL_Clinical_Margin needs --pre and --prepost predictions")
        full = {
            "Pre": ev.read_predictions(a.pre, "Pre"),
            "PrePost": ev.read_predictions(a.prepost, "PrePost"),
        }
        choice, _ = tabular.choose_signature(full, clinical)
        oof = None
        if a.stacking == "crossfit":
            path = {"Pre": a.pre_oof, "PrePost": a.prepost_oof}[choice]
            if not path:
                raise RecurError("crossfit stacking needs --pre-oof and --prepost-oof")
            oof = ev.read_predictions(path, f"{choice} (out-of-fold)")
        sig = tabular.signature_values(full[choice], oof, split, a.stacking)
        name = f"{choice}_signature"
        extra = {"signature": choice, "stacking": a.stacking}
    model, pred, feats = margin.fit_margin_model(
        a.model, clinical, split, margins, a.features, st, sig, name, n_jobs=a.threads or 1
    )
    if a.model_out and a.manifest:
        tabular.save_model(
            model,
            a.model_out,
            a.manifest,
            features=feats,
            settings=st,
            extra={"model": a.model, **extra},
        )
    _write_csv(pred, a.out)
    log.info("%s fitted on %s; %d patients scored", a.model, ", ".join(feats), len(pred))


def _add_margin(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("margin-register", help="register post DP onto pre DP; zone onto pre")
    p.add_argument("--pre-dp", required=True)
    p.add_argument("--post-dp", required=True)
    p.add_argument("--pre-mask", required=True, help="tumour mask on the pre DP grid")
    p.add_argument("--post-mask", required=True, help="ablation-zone mask on the post DP grid")
    p.add_argument("--out-tfm", required=True, help="post-to-pre transform (.tfm)")
    p.add_argument("--out-mask", required=True, help="ablation zone on the pre grid (.nii.gz)")
    p.add_argument("--qc", help="QC overlay PNG")
    p.add_argument("--qc-json", help="registration QC values (JSON)")
    p.add_argument("--patient", default="?", help="pseudonym for messages and QC")
    _add_registration_settings(
        p,
        "--rigid-region-mm",
        "rigid metric only in the tumour's bounding box grown by this (mm); null: whole image",
        smoothing_sigmas_mm=[4.0, 2.0, 0.0],
        sampling_fraction=0.05,
        mask_margin_mm=60.0,
    )
    p.add_argument("--deformable", action="store_true", help="add the B-spline stage")
    p.add_argument("--region-mm", type=float, default=30.0)
    p.add_argument("--bspline-spacing-mm", type=float, default=25.0)
    p.add_argument("--bspline-iterations", type=int, default=50)
    p.add_argument("--max-displacement-mm", type=float, default=10.0)
    p.add_argument("--exclude-mm", type=float, default=3.0)
    p.add_argument("--zone-interpolation", default="sdm", choices=["sdm", "nearest", "linear"])
    _add_on_failure(p)
    p.set_defaults(func=_excludable(_cmd_margin_register, "margin_register"))

    p = sub.add_parser("margin-metrics", help="ablative margin of one patient (JSON)")
    p.add_argument("--tumour", required=True, help="tumour mask (pre grid)")
    p.add_argument(
        "--zone", required=True, help="ablation-zone mask (pre grid, or post grid + --transform)"
    )
    p.add_argument("--transform", help="post-to-pre .tfm when --zone is on the post grid")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--surface", help="per-surface-element margins (.npz) for the figures")
    p.add_argument("--mode", default="auto", choices=["auto", "3d", "2d"])
    p.add_argument(
        "--iso-spacing-mm", type=float, default=0.5, help="isotropic working grid; 0 = native"
    )
    p.add_argument(
        "--smooth-voxels", type=float, default=0.5, help="Gaussian sigma of the SDMs (voxels)"
    )
    p.add_argument("--patient", default="?")
    p.set_defaults(func=_cmd_margin_metrics)

    p = sub.add_parser("margin-figure", help="histogram of one patient's surface margins")
    p.add_argument("--surface", required=True, help=".npz written by margin-metrics")
    p.add_argument("--out", required=True, help="PNG")
    p.add_argument("--patient", default="?")
    p.set_defaults(func=_cmd_margin_figure)

    p = sub.add_parser("margin-model", help="Clinical or DL_Clinical + margin features")
    p.add_argument("--model", required=True, choices=["Clinical_Margin", "DL_Clinical_Margin"])
    p.add_argument("--clinical", required=True, help="clinical.csv of the cohort")
    p.add_argument("--split", required=True, help="results/splits/split.csv")
    p.add_argument("--margin", required=True, help="results/margin/margin.csv")
    p.add_argument(
        "--features",
        nargs="+",
        default=["min_margin_mm", "pct_lt0", "pct_lt5"],
        choices=["min_margin_mm", "pct_lt0", "pct_lt5", "pct_ge5"],
    )
    _add_tabular_args(p)
    for opt in ("--pre", "--prepost", "--pre-oof", "--prepost-oof"):
        p.add_argument(opt, help="DL predictions (DL_Clinical_Margin)")
    p.add_argument("--stacking", choices=["crossfit", "in_sample"], default="in_sample")
    p.add_argument("--out", required=True, help="predictions CSV")
    p.add_argument("--model-out", help="fitted pipeline (.skops)")
    p.add_argument("--manifest", help="sha256 manifest (.json)")
    p.set_defaults(func=_cmd_margin_model)

    p = sub.add_parser("margin-table", help="gather margin metrics into margin.csv")
    p.add_argument("--metrics", nargs="+", required=True, help="per-patient metric JSONs")
    p.add_argument("--out", required=True)
    p.add_argument("--figure", help="cohort histogram PNG")
    p.set_defaults(func=_cmd_margin_table)


# --------------------------------------------------------------------------- reporting


def _add_on_failure(p: argparse.ArgumentParser) -> None:
    """``--on-failure stop|exclude`` (config ``qc.on_failure``) for a per-patient step."""
    p.add_argument(
        "--on-failure",
        choices=("stop", "exclude"),
        default="stop",
        help="on a refused input: stop with the message (default) or record the patient as "
        "excluded (placeholder outputs holding the reason; see docs/guide/reporting.md)",
    )


def _step_files(a: argparse.Namespace, stage: str) -> tuple[str, list[str], list[str]]:
    """(time point, input files, output files) of one per-patient step, from its arguments."""
    phases = ("PS", "AP", "PVP", "DP")
    if stage == "convert":
        out = [str(Path(a.outdir) / f"{ph}.nii.gz") for ph in phases]
        return a.timepoint, [], [*out, str(Path(a.outdir) / "acquisition.json")]
    if stage == "check_mask":
        return a.timepoint, [a.dp], [a.out]
    if stage == "register":
        tp = Path(a.indir).name
        ins = [str(Path(a.indir) / f"{ph}.nii.gz") for ph in phases]
        ins += [a.mask] if a.mask else []
        outs = [str(Path(a.outdir) / f"{ph}.nii.gz") for ph in phases]
        outs += [str(Path(a.outdir) / f"{ph}.tfm") for ph in phases[:3]]
        return tp, ins, [*outs, str(Path(a.outdir) / "qc.csv")]
    if stage == "crop":
        ins = [
            str(Path(d) / f"{ph}.nii.gz")
            for d in (a.registered_pre, a.registered_post)
            for ph in phases
        ]
        ins += [a.mask_pre, a.mask_post] + ([a.post_to_pre] if a.post_to_pre else [])
        return "pre+post", ins, [a.out]
    if stage == "margin_register":
        ins = [a.pre_dp, a.post_dp, a.pre_mask, a.post_mask]
        outs = [a.out_tfm, a.out_mask] + [f for f in (a.qc, a.qc_json) if f]
        return "pre+post", ins, outs
    raise ValueError(stage)


def _redactor(a: argparse.Namespace) -> Callable[[str], str]:
    """Takes the cohort's paths out of a per-patient step's messages (recur.input_links.redact):
    what a job says is stored under results/logs, and a cohort folder may be named after a
    patient, so a file is named by its table row instead."""
    from recur import contract, input_links

    cohort_dir = getattr(a, "cohort_dir", None)
    if not cohort_dir:
        return lambda message: message
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


def _excludable(
    cmd: Callable[[argparse.Namespace], None], stage: str
) -> Callable[[argparse.Namespace], None]:
    """Run ``cmd`` under ``--on-failure`` (recur.exclusions.run_or_exclude)."""

    def handler(a: argparse.Namespace) -> None:
        from recur import exclusions

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
            redact=_redactor(a),
        )

    return handler


def _exclusion_guard(a: argparse.Namespace):  # -> recur.steps.Guard
    """The ``guard`` of a per-patient package function under ``--on-failure``: runs one step of
    one time point through recur.exclusions.run_or_exclude; False when it was excluded."""

    redact = _redactor(a)

    def guard(stage, timepoint, step, inputs, outputs) -> bool:
        from recur import exclusions

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


def _add_exclusion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude", nargs="*", default=[], help="patient ids excluded by config")
    p.add_argument("--qc-exclusions", default=None, help="exclusions.csv (qc-exclusions)")


def _drop_excluded(patients, a: argparse.Namespace):
    """``patients`` without the config- and QC-excluded ids (split)."""
    from recur import exclusions

    qc = exclusions.read_exclusions(a.qc_exclusions)
    drop = set(a.exclude) | set(qc["patient_id"])
    if drop:
        log.info("split: %d patient(s) excluded: %s", len(drop), ", ".join(sorted(drop)))
    return patients[~patients["patient_id"].isin(drop)].reset_index(drop=True)


def _cmd_qc_exclusions(a: argparse.Namespace) -> None:
    from recur import exclusions
    from recur.io import atomic_path

    files = {Path(p).stem: p for p in a.crops}
    table = exclusions.exclusion_table(files)
    with atomic_path(a.out) as tmp:
        table.to_csv(tmp, index=False)
    log.info("QC exclusions: %d patient(s)", table["patient_id"].nunique())


def _cmd_figure1(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import exclusions, reporting, split

    patients = pd.read_csv(a.patients, dtype={"patient_id": str})
    cfg = pd.DataFrame(
        [x.split("=", 1) for x in a.config_exclusion], columns=["patient_id", "reason"]
    )
    flow = reporting.flow_table(
        patients, cfg, exclusions.read_exclusions(a.qc_exclusions), split.read_split(a.split)
    )
    reporting.write_flow(flow, a.csv, a.png, a.pdf)
    log.info("Figure 1 -> %s", a.png)


def _cmd_table_s1(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import reporting

    sites = pd.read_csv(a.patients, dtype={"patient_id": str}).set_index("patient_id")["site"]
    acq = reporting.read_acquisitions(a.acquisition)
    table = reporting.table_s1(reporting.acquisition_rows(acq, sites.to_dict()))
    reporting.write_table(
        table, a.csv, a.md, a.html, "Table S1. MRI acquisition parameters", reporting.S1_NOTE
    )
    log.info("Table S1: %d rows from %d time points", len(table), len(acq))


def _cmd_tripod(a: argparse.Namespace) -> None:
    import pandas as pd

    from recur import reporting, split
    from recur.contract import CLINICAL_FEATURES

    items = reporting.tripod_items(
        pd.read_csv(a.clinical, dtype={"patient_id": str}),
        split.read_split(a.split),
        pd.read_csv(a.flow, dtype={"patient_id": str, "patient_ids": str}, keep_default_na=False),
        pd.read_csv(a.table2),
        pd.read_csv(a.calibration),
        {
            "clinical_features": list(CLINICAL_FEATURES),
            "tune_fraction": a.tune_fraction,
            "impute": a.impute,
            "on_failure": a.on_failure,
            "stacking": a.stacking,
            "clinical_estimator": a.clinical_estimator,
            "dl_clinical_estimator": a.dl_clinical_estimator,
            "offset_models": a.offset_models,
            "offset_variables": a.offset_variables,
        },
    )
    reporting.write_tripod(items, a.md, a.html)
    log.info(
        "TRIPOD+AI: %d items, %d for the authors",
        len(items),
        int((items["status"] == reporting.AUTHORS).sum()),
    )


def _add_reporting(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qc-exclusions", help="list the patients excluded by QC (exclusions.csv)")
    p.add_argument("--crops", nargs="*", default=[], help="every patient's crops .npz")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_qc_exclusions)

    p = sub.add_parser("figure1", help="Figure 1: enrolment flow (PNG, PDF, CSV)")
    p.add_argument("--patients", required=True, help="patients.csv (all cohort patients)")
    p.add_argument("--config-exclusion", nargs="*", default=[], metavar="ID=REASON")
    p.add_argument("--qc-exclusions", default=None)
    p.add_argument("--split", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--png", required=True)
    p.add_argument("--pdf", required=True)
    p.set_defaults(func=_cmd_figure1)

    p = sub.add_parser("table-s1", help="Table S1: MRI acquisition parameters per site/phase")
    p.add_argument("--patients", required=True, help="patients.csv (patient_id, site)")
    p.add_argument("--acquisition", nargs="+", required=True, help="acquisition.json files")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--html", required=True)
    p.set_defaults(func=_cmd_table_s1)

    p = sub.add_parser("tripod", help="TRIPOD+AI checklist filled from the run")
    for opt in ("--clinical", "--split", "--flow", "--table2", "--calibration", "--md", "--html"):
        p.add_argument(opt, required=True)
    p.add_argument("--tune-fraction", type=float, default=0.2)
    p.add_argument("--impute", default="median")
    p.add_argument("--on-failure", default="stop")
    p.add_argument("--stacking", default="in_sample", choices=["in_sample", "crossfit"])
    for opt in ("--clinical-estimator", "--dl-clinical-estimator"):
        p.add_argument(opt, default="extra_trees", choices=["extra_trees", "logistic"])
    p.add_argument("--offset-models", nargs="*", default=[], help="models with a training offset")
    p.add_argument("--offset-variables", nargs="*", default=[], help="the offset's columns")
    p.set_defaults(func=_cmd_tripod)


# --------------------------------------------------------------------------- predict
def _cmd_bundle(a: argparse.Namespace) -> None:
    import json

    from recur import bundle

    manifest = bundle.write_bundle(
        a.out,
        dl_models={"Pre": a.pre, "PrePost": a.prepost},
        tabular_models={
            "Clinical": (a.clinical_model, a.clinical_manifest),
            "DL_Clinical": (a.dl_clinical_model, a.dl_clinical_manifest),
        },
        choice=a.choice,
        cutoffs=a.cutoffs,
        settings=json.loads(a.settings),
    )
    log.info("bundle %s: %d files + manifest.json", a.out, len(manifest["files"]))


def _cmd_predict(a: argparse.Namespace) -> None:
    from recur import predict

    table = predict.predict(
        a.bundle,
        a.series,
        a.rois,
        a.clinical,
        a.out,
        cohort_dir=a.cohort_dir,
        patients=a.patients,
        device=a.device,
        keep_work=a.keep_work,
        threads=a.threads,
    )
    log.info("scored %d patient(s): %s", len(table), Path(a.out) / "predictions.csv")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="assemble the portable model bundle (results/bundle)")
    p.add_argument("--pre", required=True, help="folder of the full Pre model")
    p.add_argument("--prepost", required=True, help="folder of the full PrePost model")
    p.add_argument("--clinical-model", required=True, help="Clinical model.skops")
    p.add_argument("--clinical-manifest", required=True, help="Clinical manifest.json")
    p.add_argument("--dl-clinical-model", required=True, help="DL_Clinical model.skops")
    p.add_argument("--dl-clinical-manifest", required=True, help="DL_Clinical manifest.json")
    p.add_argument("--choice", required=True, help="DL_Clinical choice.json")
    p.add_argument("--cutoffs", required=True, help="results/tables/cutoffs.csv")
    p.add_argument("--settings", required=True, help="JSON: the settings sections used")
    p.add_argument("--out", required=True, help="bundle folder to write (replaced)")
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser(
        "predict", help="score new patients from DICOM with a model bundle (not for clinical use)"
    )
    p.add_argument("--bundle", required=True, help="model bundle folder (results/bundle)")
    p.add_argument("--series", required=True, help="series.csv of the new patients")
    p.add_argument("--rois", required=True, help="rois.csv of the new patients")
    p.add_argument(
        "--clinical",
        required=True,
        help="clinical.csv (the five predictors; outcome, site and cohort not needed)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--cohort-dir",
        default=None,
        help="folder the paths in series.csv/rois.csv are relative to (default: each "
        "table's own folder)",
    )
    p.add_argument("--patients", nargs="*", default=[], help="score only these ids")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--keep-work", action="store_true", help="keep the intermediate NIfTI files (out/work)"
    )
    p.set_defaults(func=_cmd_predict)


ADDERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_foundation,
    _add_convert,
    _add_preprocess,
    _add_models,
    _add_evaluate,
    _add_margin,
    _add_reporting,
    _add_predict,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recur", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (a rule passes its `threads`)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in ADDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    _threads(args.threads)
    try:
        args.func(args)
    except RecurError as exc:
        if os.environ.get("RECUR_DEBUG"):
            raise
        print(f"recur {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
