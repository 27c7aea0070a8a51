# Tuning split, Pre and PrePost deep-learning models, signatures, Grad-CAM
#
# One train_dl job per (model, fold): fold "full" trains on the whole train split and scores
# every patient; folds 0..K-1 train without their fold and score it (cross-fitting), so the
# DL_Clinical stacking model can be fitted on out-of-fold signatures. All jobs select their
# epoch on the same tuning split.
from recur.settings import RULE_KEYS

CROSSFIT_K = config["train"]["crossfit_folds"]
DL_FOLDS = ["full"] + [str(k) for k in range(CROSSFIT_K)]
CROPS_DIR = f"{RESULTS}/crops"
MODELS_DIR = f"{RESULTS}/models"
# train.signature: the folder whose network scores patients (signature, OOF table's tune and
# test rows, bundle): the full model alone, or the ensemble of the full and fold models
SIGNATURE_DIR = "ensemble" if config["train"]["signature"] == "ensemble" else "full"

# Training and Grad-CAM read the crops of the included patients from CROPS_DIR; as input they
# name the crop QC table, which every included patient's crop feeds (a changed crop reruns
# crop_qc and so these). Listing every crop file here instead made each of the 12 waiting
# train_dl jobs carry ~300 inputs, which Snakemake re-stats in every scheduling round
# (docs/methods/scale.md).
CROPS_TABLE = f"{RESULTS}/qc/crops.csv"
# The train section as train-dl reads it (recur.models.train.TrainConfig), without the keys
# only the rules read (threads, signature), so that changing those reruns no training job.
TRAIN_SETTINGS = section_json(config["train"], omit=RULE_KEYS["train"])


rule split:
    input:
        patients=f"{RESULTS}/cohort/patients.csv",
        cohort=cohort_input("clinical"),
        # qc.on_failure 'exclude': the patients refused by a per-patient step
        qc_exclusions=QC_EXCLUSIONS if ON_FAILURE == "exclude" else [],
    output:
        f"{RESULTS}/splits/split.csv",
    log:
        f"{LOGS}/split/split.log",
    benchmark:
        f"{BENCH}/split/split.tsv"
    conda:
        "../envs/dl.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        clinical=clinical_csv,
        settings=section_json(config["split"]),
        exclude=" ".join(shlex_quote(p) for p in CONFIG_EXCLUDED["patient_id"]),
        qc=f"--qc-exclusions {QC_EXCLUSIONS}" if ON_FAILURE == "exclude" else "",
    shell:
        "python -m recur --threads {threads} split --patients {input.patients:q}"
        " --clinical {params.clinical:q} --settings {params.settings:q}"
        " --exclude {params.exclude} {params.qc} --out {output:q} > {log:q} 2>&1"


rule train_dl:
    input:
        split=rules.split.output[0],
        cohort=cohort_input("clinical"),
        crops=CROPS_TABLE,
        # train.margin_target: the measured minimal ablative margin as a second output
        margin=lambda wc: (
            f"{RESULTS}/margin/margin.csv"
            if wc.model in config["train"]["margin_target"]
            else []
        ),
    output:
        weights=f"{MODELS_DIR}/{{model}}/{{fold}}/weights.pt",
        meta=f"{MODELS_DIR}/{{model}}/{{fold}}/model.json",
        training_log=f"{MODELS_DIR}/{{model}}/{{fold}}/training_log.csv",
        scores=f"{MODELS_DIR}/{{model}}/{{fold}}/scores.csv",
    log:
        f"{LOGS}/train_dl/{{model}}/{{fold}}.log",
    benchmark:
        f"{BENCH}/train_dl/{{model}}/{{fold}}.tsv"
    wildcard_constraints:
        model="|".join(DL_MODELS),
        fold=r"full|\d+",
    conda:
        "../envs/dl.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        clinical=clinical_csv,
        crops_dir=CROPS_DIR,
        outdir=lambda wc: f"{MODELS_DIR}/{wc.model}/{wc.fold}",
        device=config["device"],
        # the measured margin of the models train.margin_target lists (input margin)
        aux=lambda wc, input: (
            f"--aux-table {shlex_quote(input.margin)}" if input.margin else ""
        ),
        settings=TRAIN_SETTINGS,
    shell:
        "python -m recur --threads {threads} train-dl --model {wildcards.model}"
        " --fold {wildcards.fold} --split {input.split:q} --clinical {params.clinical:q}"
        " --crops-dir {params.crops_dir:q} --outdir {params.outdir:q}"
        " --device {params.device} {params.aux} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule ensemble_dl:
    input:
        split=rules.split.output[0],
        crops=CROPS_TABLE,
        members=expand(
            f"{MODELS_DIR}/{{model}}/{{fold}}/{{name}}",
            fold=DL_FOLDS,
            name=["weights.pt", "model.json"],
            allow_missing=True,
        ),
    output:
        weights=f"{MODELS_DIR}/{{model}}/ensemble/weights.pt",
        meta=f"{MODELS_DIR}/{{model}}/ensemble/model.json",
        scores=f"{MODELS_DIR}/{{model}}/ensemble/scores.csv",
    log:
        f"{LOGS}/ensemble_dl/{{model}}.log",
    benchmark:
        f"{BENCH}/ensemble_dl/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(DL_MODELS),
    conda:
        "../envs/dl.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        members=lambda wc: " ".join(
            shlex_quote(f"{MODELS_DIR}/{wc.model}/{k}") for k in DL_FOLDS
        ),
        crops_dir=CROPS_DIR,
        outdir=lambda wc: f"{MODELS_DIR}/{wc.model}/ensemble",
        device=config["device"],
    shell:
        "python -m recur --threads {threads} ensemble-dl {params.members}"
        " --split {input.split:q} --crops-dir {params.crops_dir:q}"
        " --outdir {params.outdir:q} --device {params.device} > {log:q} 2>&1"


# The signature network's scores, recalibrated on the tuning split (logistic recalibration,
# recur.evaluate.recalibration): predictions/{model}.csv has the recalibrated probability
# (score) and the network's output (raw_score); the fit goes to recalibration.json, which the
# out-of-fold table and the bundle reuse.
rule signature_dl:
    input:
        weights=f"{MODELS_DIR}/{{model}}/full/weights.pt",
        meta=f"{MODELS_DIR}/{{model}}/full/model.json",
        training_log=f"{MODELS_DIR}/{{model}}/full/training_log.csv",
        scores=f"{MODELS_DIR}/{{model}}/{SIGNATURE_DIR}/scores.csv",
        cohort=cohort_input("clinical"),
    output:
        predictions=f"{RESULTS}/predictions/{{model}}.csv",
        recalibration=f"{MODELS_DIR}/{{model}}/recalibration.json",
        figure=report(
            f"{RESULTS}/figures/training/{{model}}.png",
            caption="../report/models_training.rst",
            category="5 Deep-learning models",
            subcategory="Training curves",
        ),
        figure_pdf=f"{RESULTS}/figures/training/{{model}}.pdf",
    log:
        f"{LOGS}/signature_dl/{{model}}.log",
    benchmark:
        f"{BENCH}/signature_dl/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(DL_MODELS),
    conda:
        "../envs/dl.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        model_dir=lambda wc: f"{MODELS_DIR}/{wc.model}/full",
        clinical=clinical_csv,
    shell:
        "python -m recur --threads {threads} signature-dl {params.model_dir:q}"
        " --scores {input.scores:q} --clinical {params.clinical:q}"
        " --recalibration {output.recalibration:q} --out {output.predictions:q}"
        " --figure {output.figure:q} --figure-pdf {output.figure_pdf:q} > {log:q} 2>&1"


rule crossfit_dl:
    input:
        full=f"{MODELS_DIR}/{{model}}/{SIGNATURE_DIR}/scores.csv",
        folds=expand(
            f"{MODELS_DIR}/{{model}}/{{fold}}/scores.csv",
            fold=DL_FOLDS[1:],
            allow_missing=True,
        ),
        recalibration=rules.signature_dl.output.recalibration,
    output:
        f"{RESULTS}/predictions/oof/{{model}}.csv",
    log:
        f"{LOGS}/crossfit_dl/{{model}}.log",
    benchmark:
        f"{BENCH}/crossfit_dl/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(DL_MODELS),
    conda:
        "../envs/dl.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        full=lambda wc: f"{MODELS_DIR}/{wc.model}/{SIGNATURE_DIR}",
        folds=lambda wc: " ".join(
            shlex_quote(f"{MODELS_DIR}/{wc.model}/{k}") for k in DL_FOLDS[1:]
        ),
    shell:
        "python -m recur --threads {threads} crossfit-dl --full {params.full:q}"
        " --folds {params.folds} --recalibration {input.recalibration:q}"
        " --out {output:q} > {log:q} 2>&1"


rule gradcam:
    input:
        weights=f"{MODELS_DIR}/PrePost/full/weights.pt",
        meta=f"{MODELS_DIR}/PrePost/full/model.json",
        predictions=f"{RESULTS}/predictions/PrePost.csv",
        cohort=cohort_input("clinical"),
        crops=CROPS_TABLE,
    output:
        report(
            directory(f"{RESULTS}/figures/gradcam"),
            patterns=["{name}.png"],
            caption="../report/models_gradcam.rst",
            category="5 Deep-learning models",
            subcategory="Grad-CAM",
        ),
    log:
        f"{LOGS}/gradcam/gradcam.log",
    benchmark:
        f"{BENCH}/gradcam/gradcam.tsv"
    conda:
        "../envs/dl.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model_dir=lambda wc, input: str(Path(input.weights).parent),
        clinical=clinical_csv,
        crops_dir=CROPS_DIR,
        device=config["device"],
        settings=section_json(config["gradcam"]),
    shell:
        "python -m recur --threads {threads} gradcam --model-dir {params.model_dir:q}"
        " --predictions {input.predictions:q} --clinical {params.clinical:q}"
        " --crops-dir {params.crops_dir:q} --outdir {output:q} --device {params.device}"
        " --settings {params.settings:q} > {log:q} 2>&1"


FINAL_TARGETS += expand(f"{RESULTS}/predictions/{{model}}.csv", model=DL_MODELS)
FINAL_TARGETS += expand(f"{RESULTS}/predictions/oof/{{model}}.csv", model=DL_MODELS)
FINAL_TARGETS += expand(
    f"{RESULTS}/figures/training/{{model}}.{{ext}}", model=DL_MODELS, ext=("png", "pdf")
)
FINAL_TARGETS.append(rules.gradcam.output[0])
