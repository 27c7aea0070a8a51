# Shared set-up: config validation, the patient list and input functions.
import gc
import os
import sys
from os import environ as _environ
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# DAG-build speed (docs/methods/scale.md): building the DAG allocates millions of small,
# long-lived objects (jobs, files, wildcards), and CPython's cyclic garbage collector rescans
# them again and again; freezing what exists now and collecting rarely cuts the dry run of
# 2,000 patients by ~30% (CPU time). The interpreter's defaults come back before any job
# runs (onstart below).
_GC_DEFAULTS = gc.get_threshold()
gc.freeze()
gc.set_threshold(200_000, 50, 1000)


def refuse(message):
    """Stop before any job with ``message`` (one line per problem) and no traceback; nothing
    goes to Snakemake's log file (a message may name a file of the cohort)."""
    print(message, file=sys.stderr)
    sys.exit(1)


onstart:
    gc.set_threshold(*_GC_DEFAULTS)
    # the cohort record: written by the process that holds the working-directory lock, once
    # it executes jobs (never by a dry run)
    if workflow.is_main_process and cohort_record.hold_lock():
        cohort_record.write_record(COHORT_IDENTITY)


# The package lives in src/: make `python -m recur` work in every job (local or cluster)
# even when the package is not installed into the running interpreter.
_SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, _SRC)
_environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_SRC, _environ.get("PYTHONPATH")) if p
)

from recur._snakemake.scheduling import coalesce_reevaluations  # noqa: E402
from recur.cohort import contract, split  # noqa: E402
from recur.cohort import links as input_links  # noqa: E402
from recur.cohort import record as cohort_record  # noqa: E402
from recur.config import check_config  # noqa: E402
from recur.constants import (  # noqa: E402
    DL_MODELS,
    MARGIN_MODELS,
    MODELS_PAPER_ORDER,
    PHASES,
    RADIOMICS_MODELS,
    TIMEPOINTS,
)
from recur.errors import RecurError  # noqa: E402
from recur.evaluate.settings import (  # noqa: E402
    BootstrapSettings,
    CalibrationSettings,
    DecisionCurveSettings,
    Table1Settings,
)
from recur.settings import section_json, settings_json  # noqa: E402
from recur.synthetic import sites as synthetic_sites  # noqa: E402

# Snakemake's scheduler starts a re-evaluation timer in every round and never coalesces them:
# with hundreds of ready per-patient jobs they pile up to ~100+ rounds a second and Snakemake's
# own process took ~40 % of a core (recur._snakemake.scheduling, docs/methods/scale.md). Keep
# one pending.
from snakemake.scheduling import job_scheduler as _job_scheduler  # noqa: E402

coalesce_reevaluations(_job_scheduler.JobScheduler)

# Unknown keys, wrong types and out-of-range values stop here, before any job runs (one line
# per problem); then snakemake's validate fills every key a user's config leaves out.
try:
    check_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")
except RecurError as exc:
    refuse(str(exc))
validate(config, "../schemas/config.schema.yaml", set_default=True)

RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
RECUR = "python -m recur"

# Targets the default `all` rule collects; each rules file appends what it delivers.
FINAL_TARGETS = []

try:
    COHORT_SETTINGS = contract.CohortSettings.from_config(config["cohort"])
except RecurError as exc:
    refuse(str(exc))
# File names of the cohort tables inside COHORT_DIR: the generator's or the configured ones.
COHORT_TABLES = COHORT_SETTINGS.table_names()
if COHORT_SETTINGS.source == "synthetic":
    COHORT_DIR = f"{RESULTS}/synthetic/cohort"
    TRUTH_CSV = f"{RESULTS}/synthetic/truth.csv"
    PATIENT_TABLE = synthetic_sites.planned_patients(
        config["synthetic"]["n_train"], config["synthetic"]["n_test"]
    )
    COHORT = None
    COHORT_IDENTITY = cohort_record.synthetic_identity(
        config["synthetic"], len(PATIENT_TABLE)
    )
else:
    COHORT_DIR = str(Path(COHORT_SETTINGS.dir).expanduser())
    try:
        COHORT = contract.load_cohort(
            COHORT_DIR,
            COHORT_TABLES["clinical"],
            COHORT_TABLES["series"],
            COHORT_TABLES["rois"],
        )
    except RecurError as exc:
        # no path: the cohort dir may be named after a patient or a site (the user knows
        # which cohort.dir they set)
        refuse(f"cohort (cohort.dir): {exc}")
    PATIENT_TABLE = contract.cohort_summary(COHORT)
    COHORT_IDENTITY = cohort_record.directory_identity(
        {
            COHORT_TABLES["clinical"]: COHORT.clinical,
            COHORT_TABLES["series"]: COHORT.series,
            COHORT_TABLES["rois"]: COHORT.rois,
        },
        len(PATIENT_TABLE),
    )

# One cohort per working directory (recur.cohort.record, docs/guide/reliability.md): a results/ made
# from another cohort is refused, and only the process holding the working-directory lock writes
# the input links (a second invocation, dry runs included, never changes what a running study
# reads). Cluster jobs parse this file again: the main process did all of this for them.
if workflow.is_main_process:
    try:
        _problem = cohort_record.record_problem(
            cohort_record.read_record(),
            COHORT_IDENTITY,
            tables_edited=COHORT_SETTINGS.tables_edited,
        )
    except RecurError as exc:
        refuse(f"working directory: {exc}")
    if _problem:
        refuse(f"working directory: {_problem}")
    _HOLDS_WORKDIR = cohort_record.hold_lock()
else:
    _HOLDS_WORKDIR = False

if COHORT is not None:
    # Every job reads the cohort through links named by pseudonym (input_links/, see
    # recur.cohort.links), so snakemake's records (.snakemake/) and results/ never hold the
    # cohort's folder names; rewritten only when a target changes (that job then reruns).
    _LINK_PLAN = input_links.link_plan(COHORT.series, COHORT.rois, COHORT_DIR)
    if _HOLDS_WORKDIR:
        try:
            input_links.sync_links(_LINK_PLAN)
        except (RecurError, OSError) as exc:
            refuse(f"{input_links.INPUT_LINKS}: {exc}")
    elif workflow.is_main_process and input_links.existing_links() != _LINK_PLAN:
        refuse(
            "working directory: another snakemake run is working here with other cohort "
            "tables (or another cohort.dir); nothing was changed: wait for it to finish, "
            "or run this cohort in another working directory (snakemake -d DIR)"
        )
    COHORT_DIR = f"{input_links.INPUT_LINKS}/{input_links.COHORT_LINK}"

# Exclusions (docs/guide/reporting.md): config-excluded patients leave the DAG here (Figure 1
# still counts them); with qc.on_failure 'exclude' a refused patient is recorded by the
# per-patient steps and dropped by the split (QC_EXCLUSIONS lists them).
from recur.cohort import exclusions  # noqa: E402

try:
    CONFIG_EXCLUDED = exclusions.config_exclusions(
        config["exclude"], PATIENT_TABLE["patient_id"]
    )
except RecurError as exc:
    refuse(str(exc))
ON_FAILURE = exclusions.QcSettings.from_config(config["qc"]).on_failure
QC_EXCLUSIONS = f"{RESULTS}/qc/exclusions.csv"
PATIENTS = exclusions.remaining_patients(
    list(PATIENT_TABLE["patient_id"]), CONFIG_EXCLUDED["patient_id"]
)

# The training cohort can be split and cross-fitted (enough patients of each class), checked
# now rather than by the split job after the preprocessing (QC exclusions may still remove
# patients later; the split job then says so).
if COHORT is not None:
    try:
        split.check_trainable(
            COHORT.clinical[COHORT.clinical["patient_id"].isin(set(PATIENTS))],
            split.SplitSettings.from_config(config["split"]),
            folds=config["train"]["crossfit_folds"],
        )
    except RecurError as exc:
        refuse(f"cohort (cohort.dir): {config['cohort']['clinical']}: {exc}")


def included_patients(wildcards=None):
    """The patients that reach the models: PATIENTS, less the QC-excluded ones when
    qc.on_failure is 'exclude' (then known only after the qc_exclusions checkpoint)."""
    if ON_FAILURE != "exclude":
        return PATIENTS
    import pandas as pd

    table = pd.read_csv(checkpoints.qc_exclusions.get().output[0], dtype=str)
    return exclusions.remaining_patients(PATIENTS, set(table["patient_id"]))


wildcard_constraints:
    patient="[^/]+",
    timepoint="|".join(TIMEPOINTS),
    phase="|".join(PHASES),


def cohort_input(*names):
    """The cohort tables as inputs: generated files (synthetic) or the user's (directory)."""
    if COHORT_SETTINGS.source == "synthetic":
        return [COHORT_DIR]
    return [str(Path(COHORT_DIR) / COHORT_TABLES[n]) for n in names]


def series_dirs(wildcards):
    """The links to the 8 DICOM folders of one patient, both time points (directory source),
    else the cohort."""
    if COHORT is None:
        return [COHORT_DIR]
    return [
        input_links.series_link(wildcards.patient, t, p)
        for t in TIMEPOINTS
        for p in PHASES
    ]


def roi_mask(wildcards):
    """The links to the ROI masks of one patient, both time points (directory source), else
    the cohort."""
    if COHORT is None:
        return [COHORT_DIR]
    return [input_links.roi_link(wildcards.patient, t) for t in TIMEPOINTS]


def post_to_pre_input(wildcards):
    """The cross-time transform the crop job carries the post phases with (crop.post_frame
    'pre'; none for 'own')."""
    if config["crop"]["post_frame"] != "pre":
        return []
    return [f"{RESULTS}/margin/{wildcards.patient}/post_to_pre.tfm"]


def series_uid_digest(wildcards):
    """A digest of the series_uid column of one patient (a changed UID reruns that patient's
    conversion; the UIDs themselves never reach snakemake's records)."""
    if COHORT is None or "series_uid" not in COHORT.series:
        return "none"
    import hashlib

    # the rows as pandas' to_csv wrote them (same digest), from an index built once: a
    # per-job pandas lookup costs ~1 ms, i.e. minutes of DAG building for 10,000 patients
    rows = [r for t in TIMEPOINTS for r in _SERIES_UIDS.get((wildcards.patient, t), [])]
    text = "".join(
        ",".join(_csv_cell(v) for v in r) + "\n"
        for r in [("timepoint", "phase", "series_uid"), *sorted(rows)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def roi_name_digest(wildcards):
    """A digest of the roi column of one patient's rows of rois.csv (a changed segment or
    ROI name reruns that patient's mask check; the names never reach snakemake's records).
    """
    if COHORT is None or "roi" not in COHORT.rois:
        return "none"
    import hashlib

    names = [_ROI_NAMES.get((wildcards.patient, t), "") for t in TIMEPOINTS]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


# {(patient, timepoint): roi name} (directory source with a roi column)
_ROI_NAMES = {}
if COHORT is not None and "roi" in COHORT.rois:
    for _r in COHORT.rois[["patient_id", "timepoint", "roi"]].itertuples(index=False):
        _ROI_NAMES[(_r.patient_id, _r.timepoint)] = (
            "" if not isinstance(_r.roi, str) else _r.roi
        )


def _csv_cell(value):
    """One cell as pandas' to_csv writes a string (quoted only when it must be)."""
    if any(c in value for c in ',"\n\r'):
        quoted = value.replace('"', '""')
        return f'"{quoted}"'
    return value


# {(patient, timepoint): [(timepoint, phase, series_uid or "")]} (directory source)
_SERIES_UIDS = {}
if COHORT is not None and "series_uid" in COHORT.series:
    for _r in COHORT.series[
        ["patient_id", "timepoint", "phase", "series_uid"]
    ].itertuples(index=False):
        _uid = _r.series_uid
        _uid = "" if _uid is None or _uid != _uid else str(_uid)  # NaN != NaN
        _SERIES_UIDS.setdefault((_r.patient_id, _r.timepoint), []).append(
            (_r.timepoint, _r.phase, _uid)
        )


def cohort_dir_of(input):
    """The cohort directory given a rule's `cohort_input(...)` files."""
    first = Path(str(input[0]))
    return str(first if COHORT is None else first.parent)


# File name of the clinical table inside the cohort directory.
CLINICAL_NAME = COHORT_TABLES["clinical"]


def clinical_csv(wildcards, input):
    """clinical.csv given a rule whose `cohort` input is `cohort_input("clinical")`."""
    return str(Path(cohort_dir_of(input.cohort)) / CLINICAL_NAME)


def tree_args(c):
    """A tabular model's config section (clinical or dl_clinical) as the one --settings option."""
    return f"--settings {shlex_quote(section_json(c))}"


def cohort_args():
    """Command-line arguments that tell a job where the cohort tables are."""
    return (
        f"--cohort-dir {shlex_quote(COHORT_DIR)}"
        f" --series-table {shlex_quote(COHORT_TABLES['series'])}"
        f" --rois-table {shlex_quote(COHORT_TABLES['rois'])}"
    )


def shlex_quote(s):
    import shlex

    return shlex.quote(str(s))
