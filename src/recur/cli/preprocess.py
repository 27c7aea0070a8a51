"""Preprocessing commands after conversion: ``check-mask``, ``register``, ``register-patient``
(the workflow's job), ``crop`` and ``crop-qc`` (``recur.preprocess``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from recur.cli.common import (
    _optional_float,
    add_on_failure,
    add_registration_settings,
    excludable,
    exclusion_guard,
    redactor,
    registration_settings,
)
from recur.constants import TIMEPOINTS
from recur.errors import RecurError

log = logging.getLogger("recur")


def _cmd_check_mask(a: argparse.Namespace) -> None:
    from recur.cohort import contract
    from recur.preprocess import masks

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


def _cmd_register(a: argparse.Namespace) -> None:
    from recur.preprocess import register

    settings = registration_settings(a)
    qc = register.register_timepoint_dir(
        a.indir, a.outdir, settings, mask=a.mask, threads=a.threads or 1
    )
    log.info("registered onto DP:\n%s", qc.drop(columns=["parameters", "fixed_parameters"]))


def _mask_checker(a: argparse.Namespace):  # -> Callable[[str, Path, Path], None]
    """``check(tp, dp_path, out_path)``: the cohort's ROI mask of ``tp`` checked against DP
    (as ``check-mask``), messages also in ``--check-log``; refusals named as check-mask's."""
    from recur.cohort import contract
    from recur.preprocess import masks

    cohort_dir = Path(a.cohort_dir)
    series = None
    if a.series_table and (cohort_dir / a.series_table).is_file():
        series = contract.read_table(cohort_dir / a.series_table)
    rois: list = []
    redact = redactor(a)

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
    succeeded (``recur.preprocess.register.register_patient``)."""
    from recur.preprocess import register

    if a.check_log:  # one check log per patient, written afresh by each run
        Path(a.check_log).parent.mkdir(parents=True, exist_ok=True)
        Path(a.check_log).write_text("", encoding="utf-8")
    if a.check_roi and not a.cohort_dir:
        raise RecurError("register-patient --check-roi needs --cohort-dir")
    qc = register.register_patient(
        a.nifti_dir,
        a.outdir,
        registration_settings(a),
        masks_dir=a.mask_dir,
        check_mask=_mask_checker(a) if a.check_roi else None,
        timepoints=a.timepoints,
        threads=a.threads or 1,
        guard=exclusion_guard(a),
    )
    for tp in a.timepoints:
        if tp in qc:
            table = qc[tp].drop(columns=["parameters", "fixed_parameters"])
            log.info("patient %s %s registered onto DP:\n%s", a.patient, tp, table)
        else:
            log.info("patient %s %s: EXCLUDED (placeholders)", a.patient, tp)


def _cmd_crop(a: argparse.Namespace) -> None:
    from recur.preprocess import crop_files, crops

    settings = crops.CropSettings(
        size=a.size,
        spacing_mm=a.spacing_mm,
        normalisation=a.normalisation,
        region=a.region,
        post_frame=a.post_frame,
    )
    res = crop_files.crop_patient_files(
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
    from recur.io import atomic_path
    from recur.preprocess import crop_qc

    table = crop_qc.crop_qc_table(a.crops, a.registration_qc or [])
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``check-mask``, ``register``, ``register-patient``, ``crop`` and ``crop-qc``."""
    p = sub.add_parser("check-mask", help="check an ROI mask against its DP image, copy it")
    p.add_argument("--cohort-dir", required=True)
    p.add_argument("--rois-table", default="rois.csv")
    p.add_argument("--series-table", default=None, help="to name the DP series in messages")
    p.add_argument("--patient", required=True)
    p.add_argument("--timepoint", required=True, choices=TIMEPOINTS)
    p.add_argument("--dp", required=True, help="the DP NIfTI of this patient and time point")
    p.add_argument("--out", required=True, help="binary uint8 mask to write (.nii.gz)")
    add_on_failure(p)
    p.set_defaults(func=excludable(_cmd_check_mask, "check_mask"))

    p = sub.add_parser("register", help="register PS, AP and PVP onto DP (one time point)")
    p.add_argument("--indir", required=True, help="folder with {PS,AP,PVP,DP}.nii.gz")
    p.add_argument("--mask", default=None, help="checked ROI mask (QC region, optional)")
    p.add_argument("--outdir", required=True)
    p.add_argument("--transform", choices=["rigid", "affine"], default="rigid")
    add_registration_settings(p)
    add_on_failure(p)
    p.set_defaults(func=excludable(_cmd_register, "register"))

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
    p.add_argument("--timepoints", nargs="+", choices=TIMEPOINTS, default=list(TIMEPOINTS))
    p.add_argument("--transform", choices=["rigid", "affine"], default="rigid")
    add_registration_settings(p)
    add_on_failure(p)
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
    add_on_failure(p)
    p.set_defaults(func=excludable(_cmd_crop, "crop"))

    p = sub.add_parser("crop-qc", help="cohort QC table of the crops and registrations")
    p.add_argument("--crops", nargs="+", required=True)
    p.add_argument("--registration-qc", nargs="*", default=[])
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_crop_qc)
