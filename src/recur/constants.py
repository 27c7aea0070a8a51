"""Names shared by the stages of the study: phases, time points, models, the ER horizon and the
columns of the files one stage hands to another.

Every stage reads these names from here: the package's stages, the workflow's rules files
(``rules/common.smk`` imports them) and the synthetic generator, which writes its cohort to the
same contract. The module imports nothing, so a per-patient job pays nothing for it.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- images
#: The contrast phases of one time point, in acquisition order: precontrast (PS), arterial
#: (AP), portal venous (PVP) and delayed (DP) phase.
PHASES: tuple[str, ...] = ("PS", "AP", "PVP", "DP")
#: The time points of a patient: before and after the ablation, in processing order (the pre
#: DP is the reference of both).
TIMEPOINTS: tuple[str, ...] = ("pre", "post")

# --------------------------------------------------------------------------- models
#: The deep-learning models, from less to more information: Pre reads the pre-ablation
#: images, PrePost both time points (ties of tuning AUC in DL_Clinical's choice of signature
#: go to the later one).
DL_MODELS: tuple[str, ...] = ("Pre", "PrePost")
#: The tabular models: the clinical predictors alone, and with the chosen DL signature.
TABULAR_MODELS: tuple[str, ...] = ("Clinical", "DL_Clinical")
#: The four models of the study in the order they are built: the DL models, then the tabular
#: models that take their signature (the models of a format 1 or 2 model bundle, in its order).
MODELS: tuple[str, ...] = (*DL_MODELS, *TABULAR_MODELS)
#: The same four models in the paper's order, the clinical baseline first: the order of the
#: evaluation (the rows of Table 2 and of the cutoffs, calibration and DeLong tables, the
#: curves of the figures).
MODELS_PAPER_ORDER: tuple[str, ...] = ("Clinical", *DL_MODELS, "DL_Clinical")
#: The margin-extended models (Clinical and DL_Clinical plus ablative-margin features),
#: evaluated after :data:`MODELS_PAPER_ORDER` when the margin section is enabled.
MARGIN_MODELS: tuple[str, ...] = ("Clinical_Margin", "DL_Clinical_Margin")
#: The radiomics models (pyradiomics features of the tumour, the ablation zone and rings
#: around them; :mod:`recur.radiomics`), evaluated after the margin models when the
#: radiomics section is enabled: the pre-ablation features, both time points' features, and
#: the clinical predictors with the Radiomics_PrePost signature.
RADIOMICS_MODELS: tuple[str, ...] = ("Radiomics_Pre", "Radiomics_PrePost", "Radiomics_Clinical")
#: The torch devices of training and inference (config key ``device``): ``auto`` takes a CUDA
#: GPU when there is one, else the CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

# --------------------------------------------------------------------------- outcome and tables
#: Early recurrence (``er`` = 1): a recurrence within this many months of the ablation.
ER_HORIZON_MONTHS = 24.0
#: Fewer events than this in a cohort flag its rows of the evaluation tables (Table 2, DeLong,
#: calibration, log-rank, survival): estimates from so few events are unstable, whatever their
#: intervals say (events: ER for the binary tables, RFS events for the log-rank and survival
#: tables).
MIN_EVENTS = 10
#: The five predictors of the paper's Clinical model (columns of ``clinical.csv``).
CLINICAL_FEATURES: tuple[str, ...] = (
    "tumor_size_cm",
    "tumor_number",
    "hbv",
    "tp_g_l",
    "afp_ng_ml",
)
#: Labels of the clinical and margin variables in tables and figures (name and unit).
VARIABLE_LABELS: dict[str, str] = {
    "age": "Age (y)",
    "sex": "Gender",
    "comorbidity": "Comorbidities",
    "hbv": "HBV",
    "albi": "ALBI score",
    "cirrhosis": "Cirrhosis",
    "tumor_size_cm": "Tumor size (cm)",
    "tumor_number": "Number of tumors",
    "tumor_multiple": "No. of tumor",
    "afp_ng_ml": "AFP (ng/mL)",
    "alb_g_l": "ALB (g/L)",
    "tp_g_l": "Total protein (g/L)",
    "ast_u_l": "AST (U/L)",
    "alt_u_l": "ALT (U/L)",
    "tbil_umol_l": "TBIL (μmol/L)",
    "min_margin_mm": "Minimal ablative margin (mm)",
    "pct_lt0": "Tumour surface with margin < 0 mm (%)",
    "pct_lt5": "Tumour surface with margin < 5 mm (%)",
    "pct_ge5": "Tumour surface with margin ≥ 5 mm (%)",
}
#: Suffix of a deep-learning signature's feature name (``PrePost_signature``; a probability,
#: the logistic model takes its log-odds).
SIGNATURE_SUFFIX = "_signature"


def variable_label(name: str) -> str:
    """The label of a variable in figures: :data:`VARIABLE_LABELS`, ``<model> DL signature``
    for a signature feature, else the name itself."""
    if name in VARIABLE_LABELS:
        return VARIABLE_LABELS[name]
    if name.endswith(SIGNATURE_SUFFIX):
        model = name[: -len(SIGNATURE_SUFFIX)]
        if model.startswith("Radiomics_"):
            return f"{model} radiomics signature"
        return f"{model} DL signature"
    return name


#: The values of the ``split`` column, in reporting order.
SPLITS: tuple[str, ...] = ("train", "tune", "test")
#: Columns of ``split.csv``: one row per patient.
SPLIT_COLUMNS: tuple[str, ...] = ("patient_id", "site", "cohort", "split")
#: Columns of the workflow's score table of one model (``predictions/<model>.csv`` of the
#: tabular and margin models, a training job's ``scores.csv``): one row per patient.
#: ``recur predict``'s wide ``predictions.csv`` is another table
#: (:func:`recur.deploy.scoring.predictions_wide`).
SCORE_COLUMNS: tuple[str, ...] = ("patient_id", "cohort", "split", "score")
#: Columns of a deep-learning model's prediction tables (``predictions/<model>.csv`` and the
#: out-of-fold ``predictions/oof/<model>.csv`` of Pre and PrePost): ``score`` is the
#: probability recalibrated on the tuning split (:mod:`recur.evaluate.recalibration`), which
#: the evaluation and ``recur predict`` report; ``raw_score`` the network's output, which the
#: stacking models (DL_Clinical, DL_Clinical_Margin, the Cox models) take as the signature.
DL_SCORE_COLUMNS: tuple[str, ...] = (*SCORE_COLUMNS, "raw_score")

#: The files of one fitted Cox model (``results/models/survival/<model>/``, as the model bundle
#: carries it; :mod:`recur.survival.files`): the design pipeline (skops), its manifest and the
#: coefficients with the baseline cumulative hazard.
COX_MODEL_FILES: tuple[str, ...] = ("design.skops", "design.json", "cox.json")

#: File names of the cohort tables the synthetic generator writes (a user's cohort names its
#: own: config ``cohort.clinical``, ``cohort.series``, ``cohort.rois``).
SYNTHETIC_TABLES: dict[str, str] = {
    "clinical": "clinical.csv",
    "series": "series.csv",
    "rois": "rois.csv",
}

#: gzip level of the NIfTI files the workflow derives after conversion (registered phases):
#: the fastest (ISA-L); the voxels are the same at every level. The converted images follow
#: ``convert.compression_level``.
DERIVED_NIFTI_GZIP_LEVEL = 1

#: Resolution of the PNG figures (dots per inch; a PDF is written beside each).
FIGURE_DPI = 150
#: Resolution of figures that show the 128-pixel crops (Grad-CAM): a panel is still wider
#: than the crop's pixels.
IMAGE_FIGURE_DPI = 100
#: Colours of a palette PNG (the most a PNG palette holds), used for plots.
PALETTE_COLOURS = 256
#: Per-patient QC pictures in the HTML report: the first flagged patients (by pseudonym; the
#: front page lists every flagged patient with the reason) and a random sample of the others,
#: at most this wide (pixels). Every patient's picture stays in results/qc/ and
#: results/margin/.
REPORT_MONTAGE_FLAGGED = 10
REPORT_MONTAGE_SAMPLE = 5
REPORT_PICTURE_WIDTH = 800
#: JPEG quality of those pictures (the PNGs in results/ are lossless).
REPORT_PICTURE_QUALITY = 80
