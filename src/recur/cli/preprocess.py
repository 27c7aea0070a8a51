"""Preprocessing commands after conversion: ``check-mask``, ``register``, ``register-patient``
(the workflow's job), ``crop`` and ``crop-qc`` (``recur.preprocess``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from recur.cli.common import add_on_failure, excludable, exclusion_guard, redactor
from recur.cli.sections import add_settings, schema_default
from recur.constants import TIMEPOINTS
from recur.errors import RecurError
from recur.preprocess.settings import CropSettings, RegistrationSettings
from recur.settings import from_json

log = logging.getLogger("recur")

COHORT_DIR_HELP = "the cohort folder (its tables, DICOM files and masks)"
ROIS_HELP = "rois table (relative to the cohort dir unless absolute; config cohort.rois)"
REGISTRATION_HELP = "the config section registration as JSON, as the rules pass it"
ROI_HELP = (
    "the config section roi as JSON, as the rules pass it (placing SEG / RTSTRUCT masks; "
    "default: the schema's)"
)


def _roi_settings(a: argparse.Namespace):
    """``--roi-settings`` as :class:`~recur.preprocess.dicom_rois.RoiSettings` (None: the
    schema's defaults)."""
    from recur.preprocess.dicom_rois import RoiSettings

    return from_json(RoiSettings, a.roi_settings, "roi") if a.roi_settings else None


def _cmd_check_mask(a: argparse.Namespace) -> None:
    from recur.preprocess import masks

    cohort = masks.CohortMasks(a.cohort_dir, a.rois_table, a.series_table, _roi_settings(a))
    log.info("mask accepted: %s", cohort.check(a.patient, a.timepoint, a.dp, a.out))


def _cmd_roi(a: argparse.Namespace) -> None:
    """``roi``: one mask file (NIfTI, SEG, RTSTRUCT) onto the grid of its reference series as
    recur converts it (``recur.preprocess.masks.checked_mask``)."""
    import SimpleITK as sitk

    from recur import config
    from recur.cli.sections import section_of
    from recur.io import atomic_path
    from recur.preprocess import masks
    from recur.preprocess.dicom_rois import RoiSettings
    from recur.preprocess.dicom_series import ConvertSettings, SeriesReader

    settings = RoiSettings.from_config(
        section_of(a, "roi", plane_tolerance_mm=a.plane_tolerance_mm)
    )
    convert = ConvertSettings.from_config(config.load_config(a.config)["convert"])
    source, reference = Path(a.source), Path(a.reference)
    shown, ref_shown = source.name, reference.name
    grid = SeriesReader(convert)(
        reference, series_uid=a.series_uid, context=f"reference series {ref_shown}"
    ).image
    dicom = masks.DicomRoiSource(reference, a.series_uid, a.roi, settings)
    kind, binary = masks.checked_mask(
        source, grid, who="mask check", mask_name=shown, dp_name=ref_shown, dicom=dicom
    )
    with atomic_path(a.out) as tmp:
        sitk.WriteImage(binary, str(tmp), useCompression=True)
    n = int(sitk.GetArrayViewFromImage(binary).sum())
    log.info(
        "%s mask %s: %d voxels on the grid of reference series %s -> %s",
        kind,
        shown,
        n,
        ref_shown,
        a.out,
    )


def _cmd_register(a: argparse.Namespace) -> None:
    from recur.preprocess import register

    settings = from_json(RegistrationSettings, a.settings, "registration")
    qc = register.register_timepoint_dir(
        a.indir, a.outdir, settings, mask=a.mask, threads=a.threads or 1
    )
    log.info("registered onto DP:\n%s", qc.drop(columns=["parameters", "fixed_parameters"]))


@contextlib.contextmanager
def _also_logged_to(path: str | None) -> Iterator[None]:
    """The command's messages also appended to ``path`` (when given) while the block runs."""
    handler = logging.FileHandler(path, mode="a") if path else None
    if handler is not None:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _cmd_register_patient(a: argparse.Namespace) -> None:
    """``register-patient``: for each time point, check the ROI mask (``--check-roi``, as
    ``check-mask``) and register, in one process; every file is written only after all
    succeeded (``recur.preprocess.register.register_patient``)."""
    from recur.preprocess import masks, register

    if a.check_log:  # one check log per patient, written afresh by each run
        Path(a.check_log).parent.mkdir(parents=True, exist_ok=True)
        Path(a.check_log).write_text("", encoding="utf-8")
    if a.check_roi and not a.cohort_dir:
        raise RecurError("register-patient --check-roi needs --cohort-dir")
    check_mask = None
    if a.check_roi:
        cohort = masks.CohortMasks(a.cohort_dir, a.rois_table, a.series_table, _roi_settings(a))
        redact = redactor(a)

        def check_mask(tp: str, dp: Path, out: Path) -> None:  # messages also in --check-log
            with _also_logged_to(a.check_log):
                try:
                    log.info("mask accepted: %s", cohort.check(a.patient, tp, dp, out))
                except RecurError as exc:
                    log.error("recur check-mask: error: %s", redact(str(exc)))
                    raise

    qc = register.register_patient(
        a.nifti_dir,
        a.outdir,
        from_json(RegistrationSettings, a.settings, "registration"),
        masks_dir=a.mask_dir,
        check_mask=check_mask,
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
    from recur.preprocess import crop_files

    res = crop_files.crop_patient_files(
        a.patient,
        {"pre": a.registered_pre, "post": a.registered_post},
        {"pre": a.mask_pre, "post": a.mask_post},
        a.out,
        a.qc,
        from_json(CropSettings, a.settings, "crop"),
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
    p = sub.add_parser(
        "check-mask",
        help="check an ROI mask against its DP image, copy it (the rules run register-patient)",
    )
    p.add_argument("--cohort-dir", required=True, help=COHORT_DIR_HELP)
    p.add_argument("--rois-table", default=schema_default("cohort", "rois"), help=ROIS_HELP)
    p.add_argument("--series-table", default=None, help="to name the DP series in messages")
    p.add_argument("--patient", required=True, help="patient_id of the mask's patient")
    p.add_argument("--timepoint", required=True, choices=TIMEPOINTS, help="the mask's time point")
    p.add_argument("--dp", required=True, help="the DP NIfTI of this patient and time point")
    p.add_argument("--out", required=True, help="binary uint8 mask to write (.nii.gz)")
    p.add_argument("--roi-settings", default=None, metavar="JSON", help=ROI_HELP)
    add_on_failure(p)
    p.set_defaults(func=excludable(_cmd_check_mask, "check_mask"))

    p = sub.add_parser(
        "roi",
        help="one ROI mask (NIfTI, DICOM SEG or RTSTRUCT) onto its reference series' grid",
        description="Write the ROI of SOURCE -- a NIfTI label map, a DICOM SEG or an RTSTRUCT "
        "-- as a binary NIfTI mask on the grid of the reference DICOM series as recur converts "
        "it, with the checks the workflow applies to rois.csv's masks (docs/guide/rois.md).",
    )
    p.add_argument("source", help="the mask file: NIfTI, DICOM SEG or RTSTRUCT")
    p.add_argument("--reference", required=True, metavar="DICOM_DIR", help="its DP series' folder")
    p.add_argument("--series-uid", default=None, help="the series in DICOM_DIR (if several)")
    p.add_argument("--roi", default=None, help="segment label (SEG) or ROI name (RTSTRUCT)")
    p.add_argument("--out", required=True, metavar="MASK.nii.gz", help="binary mask to write")
    p.add_argument("--plane-tolerance-mm", type=float, default=None, help="roi.plane_tolerance_mm")
    add_settings(p, "roi", person=True)
    p.set_defaults(func=_cmd_roi)

    p = sub.add_parser(
        "register",
        help="register PS, AP and PVP onto DP, one time point (the rules run register-patient)",
    )
    p.add_argument("--indir", required=True, help="folder with {PS,AP,PVP,DP}.nii.gz")
    p.add_argument("--mask", default=None, help="checked ROI mask (QC region, optional)")
    p.add_argument(
        "--outdir", required=True, help="where the registered phases, transforms and qc.csv go"
    )
    p.add_argument("--settings", required=True, help=REGISTRATION_HELP)
    add_on_failure(p)
    p.set_defaults(func=excludable(_cmd_register, "register"))

    p = sub.add_parser(
        "register-patient",
        help="check the ROI masks and register both time points of one patient (the "
        "workflow's job)",
    )
    p.add_argument("--patient", required=True, help="patient_id (messages, exclusions)")
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
    p.add_argument(
        "--timepoints",
        nargs="+",
        choices=TIMEPOINTS,
        default=list(TIMEPOINTS),
        help="the time points to register (default: both)",
    )
    p.add_argument("--settings", required=True, help=REGISTRATION_HELP)
    add_on_failure(p)
    g = p.add_argument_group(
        "mask check first (as check-mask; the checked copies go to --mask-dir)"
    )
    g.add_argument("--check-roi", action="store_true", help="check the cohort's ROI masks first")
    g.add_argument(
        "--cohort-dir", default=None, help="the cohort folder of the masks (needed by --check-roi)"
    )
    g.add_argument("--rois-table", default=schema_default("cohort", "rois"), help=ROIS_HELP)
    g.add_argument("--series-table", default=None, help="to name the DP series in messages")
    g.add_argument("--check-log", default=None, help="also log the checks (and refusals) here")
    g.add_argument("--roi-settings", default=None, metavar="JSON", help=ROI_HELP)
    p.set_defaults(func=_cmd_register_patient)

    p = sub.add_parser("crop", help="3-slice crops of both time points of one patient")
    p.add_argument("--patient", required=True, help="patient_id (messages, QC montage)")
    for tp in TIMEPOINTS:
        p.add_argument(
            f"--registered-{tp}",
            required=True,
            help=f"the {tp} folder of registered {{PS,AP,PVP,DP}}.nii.gz",
        )
    for tp in TIMEPOINTS:
        p.add_argument(f"--mask-{tp}", required=True, help=f"the checked {tp} ROI mask (.nii.gz)")
    p.add_argument("--out", required=True, help=".npz to write")
    p.add_argument("--qc", default=None, help="QC montage PNG to write")
    p.add_argument(
        "--settings",
        required=True,
        help="the config section crop as JSON, as the rules pass it (post_frame 'pre' crops "
        "post on the pre crop's grid and needs --post-to-pre)",
    )
    p.add_argument("--post-to-pre", default=None, help="post-to-pre transform (.tfm)")
    add_on_failure(p)
    p.set_defaults(func=excludable(_cmd_crop, "crop"))

    p = sub.add_parser("crop-qc", help="cohort QC table of the crops and registrations")
    p.add_argument(
        "--crops", nargs="+", required=True, help="every patient's crops ({patient}.npz)"
    )
    p.add_argument(
        "--registration-qc",
        nargs="*",
        default=[],
        help="registration qc.csv files (.../{patient}/{timepoint}/qc.csv)",
    )
    p.add_argument("--out", required=True, help="QC table to write (crops.csv)")
    p.set_defaults(func=_cmd_crop_qc)
