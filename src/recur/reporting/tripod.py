"""The TRIPOD+AI checklist (Collins et al., BMJ 2024) filled with what the run knows.

:func:`tripod_items` is a pure function of the study's tables and its
:class:`~recur.reporting.design.StudyDesign`; :func:`write_tripod` writes it as Markdown and HTML.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from recur.constants import MIN_EVENTS, SPLITS
from recur.io import atomic_path
from recur.reporting.design import StudyDesign
from recur.reporting.report import SPLIT_LABELS, _total, to_html, to_markdown

AUTHORS = "AUTHORS: to write"


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.1f}%)" if n else f"{k}/{n}"


def estimator_text(estimator: str | None) -> str:
    """How the methods text names a tabular model's estimator (recur.models.tabular.ESTIMATORS)."""
    if estimator == "logistic":
        return (
            "L2-penalised logistic regression (penalty chosen by cross-validation on the "
            "training patients; AFP as log(1 + AFP), a DL signature as its log-odds)"
        )
    return "ExtraTrees"


def _dl_scoring_text(design: StudyDesign) -> str:
    """How a Pre / PrePost signature is computed (ensemble, test-time augmentation) and what
    else the networks learn (the margin target)."""
    parts = []
    if design.signature == "ensemble":
        parts.append(
            f" A DL signature is the mean logit of the full model and its {design.crossfit_folds} "
            "cross-fitting fold models (an ensemble)"
        )
    else:
        parts.append(" A DL signature is the full model's output")
    parts.append(
        ", averaged over the 8 dihedral views of the crops (test-time augmentation)."
        if design.tta
        else " on the plain view of the crops."
    )
    if design.margin_target:
        parts.append(
            f" {', '.join(design.margin_target)} also learns the measured minimal ablative "
            f"margin as a second output (multi-task, weight {design.aux_weight:g}); scoring "
            "does not use it."
        )
    return "".join(parts)


def _margin_text(design: StudyDesign) -> str:
    """The margin models, when the run fits them."""
    if not design.margin_models:
        return ""
    feats = ", ".join(design.margin_features)
    return (
        " Clinical_Margin and DL_Clinical_Margin: the Clinical and DL_Clinical predictors plus "
        f"the ablative margin ({feats}) measured on the registered pre and post ROI masks."
    )


def tripod_items(
    clinical: pd.DataFrame,
    split: pd.DataFrame,
    flow: pd.DataFrame,
    table2: pd.DataFrame,
    calibration: pd.DataFrame,
    design: StudyDesign,
) -> pd.DataFrame:
    """The TRIPOD+AI checklist (Collins et al., BMJ 2024) with what this run can answer.

    Returns section, item, topic, status ('filled by the workflow' | AUTHORS) and text. Items
    the workflow cannot know (title, funding, ethics, interpretation, ...) are marked for the
    authors.
    """
    c = clinical.copy()
    c["patient_id"] = c["patient_id"].astype(str)
    d = split.merge(c, on="patient_id", how="left", suffixes=("", "_clinical"))
    lines = []
    for s in SPLITS:
        g = d[d["split"] == s]
        er = pd.to_numeric(g["er"], errors="coerce")
        events = _pct(int((er == 1).sum()), int(er.notna().sum()))
        per_site = ", ".join(f"{k}: {v}" for k, v in g["site"].value_counts().sort_index().items())
        lines.append(f"{SPLIT_LABELS[s]}: n = {len(g)}, ER {events} ({per_site})")
    sizes = "; ".join(lines)
    n_cohort = _total(flow, "cohort")
    n_cfg, n_qc = _total(flow, "excluded_config"), _total(flow, "excluded_qc")
    participants = (
        f"{n_cohort} patients in the cohort files; {n_cfg} excluded by configuration and "
        f"{n_qc} by image QC (reasons in Figure 1); {len(split)} analysed."
    )
    excluding = design.on_failure == "exclude"
    feats = [f for f in design.clinical_features if f in c.columns]
    miss = []
    for f in feats:
        m = int(d[f].isna().sum())
        if m:
            miss.append(f"{f}: {_pct(m, len(d))}")
    missing = (
        "Missing clinical values: "
        + ("; ".join(miss) if miss else "none")
        + f". Handled by {design.impute} imputation (SimpleImputer) inside "
        "the model pipeline, fitted on the training split only; no patient is dropped for a "
        "missing predictor. Unreadable or inconsistent images "
        + (
            "exclude the patient (recorded, Figure 1)."
            if excluding
            else "stop the run (qc.on_failure: stop)."
        )
    )
    perf = []
    for r in table2[table2["metric"] == "auc"].itertuples():
        few = f" [fewer than {MIN_EVENTS} events]" if r.n_events < MIN_EVENTS else ""
        perf.append(
            f"{r.cohort} {r.model}: AUC {r.estimate:.3f} (95% CI {r.ci_low:.3f}–"
            f"{r.ci_high:.3f}; n = {r.n}, events = {r.n_events}){few}"
        )
    performance = (
        "; ".join(perf) + ". All metrics with bootstrap CIs in Table 2; a cohort with fewer "
        f"than {MIN_EVENTS} events gives wide intervals and is not to be read on its own."
    )
    cal = []
    for r in calibration.itertuples():
        slope = f"{r.slope:.2f}" if math.isfinite(r.slope) else "undefined"
        intercept = f"{r.intercept:.2f}" if math.isfinite(r.intercept) else "undefined"
        few = ""
        if "n_events" in calibration.columns and r.n_events < MIN_EVENTS:
            few = f" [fewer than {MIN_EVENTS} events]"
        cal.append(
            f"{r.cohort} {r.model}: Brier {r.brier:.3f}, intercept {intercept}, slope {slope}{few}"
        )
    calib = "; ".join(cal) + ". Calibration plots in the report (Evaluation)."
    stacking = (
        "the training patients' out-of-fold DL signatures (cross-fitting)"
        if design.stacking == "crossfit"
        else "the DL signature (in-sample for the training patients, as in the paper)"
    )
    offset_models = design.offset_models
    offset_vars = design.offset_variables
    offset = (
        f" {' and '.join(offset_models)} trained with a fixed clinical log-odds offset "
        f"(logistic regression on {', '.join(offset_vars)}, training patients) in the loss "
        "only; scoring uses the images alone."
        if offset_models and offset_vars
        else ""
    )
    spec = (
        f"Deep-learning models Pre and PrePost (MONAI 2D ResNet encoder; PrePost: shared "
        "encoder + GRU over pre and post) on "
        "3-slice crops of the 4 T1 phases (PS, AP, PVP, DP), pre and 1-month post ablation; "
        f"Clinical model: {estimator_text(design.clinical_estimator)} on "
        f"{', '.join(feats) if feats else 'the clinical variables'}; DL_Clinical: "
        f"{estimator_text(design.dl_clinical_estimator)} "
        f"on the clinical variables plus {stacking}. Epoch chosen "
        f"on the tuning split ({design.tune_fraction} of training, stratified by "
        f"ER).{offset}{_dl_scoring_text(design)}{_margin_text(design)} The Pre and PrePost "
        "probabilities are recalibrated on the tuning split (logistic recalibration). Fitted "
        "models, weights and settings saved under results/models."
    )
    outcome = (
        "Early recurrence (ER): recurrence within 24 months of ablation (clinical.csv 'er'), "
        "binary; recurrence-free survival (rfs_months, rfs_event) for Kaplan–Meier analysis."
    )
    A = "filled by the workflow"
    items = [
        ("Title and abstract", "1", "Title", AUTHORS, ""),
        ("Title and abstract", "2", "Abstract", AUTHORS, ""),
        ("Introduction", "3a-c", "Background, health-care context, rationale", AUTHORS, ""),
        ("Introduction", "4", "Objectives", AUTHORS, ""),
        (
            "Methods",
            "5a-b",
            "Data: sources, dates of data collection",
            A + " (partly)",
            "Sites: " + ", ".join(sorted(split["site"].unique())) + ". Dates: " + AUTHORS,
        ),
        (
            "Methods",
            "6a-c",
            "Participants: setting, eligibility, treatments",
            A + " (partly)",
            participants + " Eligibility criteria and setting: " + AUTHORS,
        ),
        (
            "Methods",
            "7",
            "Data preparation (pre-processing, quality checks)",
            A,
            "DICOM converted to NIfTI with geometry checks; PS/AP/PVP registered onto DP "
            "(registration.transform); "
            "ROI masks checked against the DP grid; 3 axial slices around the largest ROI "
            "cross-section cropped and normalised per phase. Refused inputs are "
            f"{'recorded as exclusions' if excluding else 'stopping errors'}"
            " (qc.on_failure).",
        ),
        (
            "Methods",
            "8a-c",
            "Outcome: definition, assessment, blinding",
            A + " (partly)",
            outcome + " Assessment and blinding: " + AUTHORS,
        ),
        (
            "Methods",
            "9a-c",
            "Predictors: definition, selection, measurement",
            A + " (partly)",
            "Clinical predictors: " + (", ".join(feats) or "none") + "; imaging predictors: the "
            "MRI crops (acquisition in Table S1). Blinding of predictor assessment: " + AUTHORS,
        ),
        ("Methods", "10", "Sample size", A, sizes + ". Sample-size justification: " + AUTHORS),
        ("Methods", "11", "Missing data", A, missing),
        (
            "Methods",
            "12a-g",
            "Analytical methods: model type, building, internal validation",
            A,
            spec,
        ),
        (
            "Methods",
            "12e",
            "Performance measures and methods",
            A,
            "Discrimination: AUC with bootstrap 95% CIs, accuracy, sensitivity, specificity at the "
            "Youden cut-off of the tuning split; DeLong tests; calibration (Brier, intercept, "
            "slope, plot); decision-curve analysis; Kaplan–Meier by predicted risk group.",
        ),
        (
            "Methods",
            "13",
            "Class imbalance",
            A,
            "No resampling. DL models: positive-class weight n_negative/n_positive in the loss; "
            "tree models: class_weight as configured. Metrics at a cut-off fixed on the tuning "
            "split.",
        ),
        ("Methods", "14", "Fairness", AUTHORS, ""),
        (
            "Methods",
            "15",
            "Model output",
            A,
            "Predicted ER probability per patient (results/predictions/{model}.csv).",
        ),
        (
            "Methods",
            "16",
            "Training versus evaluation data differences",
            A,
            "External test sites differ in scanner and protocol (Table S1) and case mix (Table 1).",
        ),
        ("Methods", "17", "Ethical approval", AUTHORS, ""),
        (
            "Open science",
            "18a-f",
            "Funding, conflicts, protocol, registration, data, code",
            A + " (partly)",
            "Code: this workflow (recur), with its configuration and software "
            "environments. Funding, conflicts, protocol, registration, data sharing: " + AUTHORS,
        ),
        ("Patient and public involvement", "19", "Patient and public involvement", AUTHORS, ""),
        (
            "Results",
            "20a-c",
            "Participants: flow, characteristics",
            A,
            participants + " Flow in Figure 1; characteristics in Table 1.",
        ),
        (
            "Results",
            "21",
            "Model development: numbers of participants and outcome events",
            A,
            sizes,
        ),
        ("Results", "22", "Model specification", A, spec),
        ("Results", "23a", "Model performance (with CIs)", A, performance),
        ("Results", "23b", "Calibration", A, calib),
        (
            "Results",
            "24",
            "Model updating",
            A,
            "No updating: the models are evaluated as trained on the training site.",
        ),
        ("Discussion", "25", "Interpretation", AUTHORS, ""),
        ("Discussion", "26", "Limitations", AUTHORS, ""),
        ("Discussion", "27a-c", "Usability, implications, future research", AUTHORS, ""),
    ]
    return pd.DataFrame(items, columns=["section", "item", "topic", "status", "text"])


TRIPOD_NOTE = (
    "TRIPOD+AI (Collins GS et al., BMJ 2024;385:e078378). Items marked 'AUTHORS: to write' need "
    "information the workflow does not have; '(partly)' items hold what the run knows."
)


def write_tripod(items: pd.DataFrame, md: str | Path, html_path: str | Path) -> None:
    """Write the checklist as Markdown and HTML (both or none)."""
    title = "TRIPOD+AI checklist (generated)"
    with atomic_path(md) as tm, atomic_path(html_path) as th:
        Path(tm).write_text(f"# {title}\n\n{TRIPOD_NOTE}\n\n" + to_markdown(items), "utf-8")
        Path(th).write_text(to_html(items, title, TRIPOD_NOTE), "utf-8")
