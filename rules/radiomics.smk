# Radiomics baseline: pyradiomics features of the tumour, the ablation zone and rings around
# them (one job per patient), and the Radiomics_Pre / Radiomics_PrePost / Radiomics_Clinical
# models, evaluated like every other model (docs/methods/radiomics.md).

from recur.radiomics.settings import FeatureSettings, ModelSettings

RADIOMICS = config["radiomics"]
RADIOMICS_DIR = f"{RESULTS}/radiomics"
# the pyradiomics parameter file: the workflow's own unless the config names one
RADIOMICS_PARAMS = (
    f"{workflow.basedir}/radiomics_params.yaml"
    if RADIOMICS["params"] is None
    else RADIOMICS["params"]
)


rule radiomics_features:
    input:
        pre=expand(
            f"{RESULTS}/registered/{{patient}}/pre/{{phase}}.nii.gz",
            phase=RADIOMICS["phases"],
            allow_missing=True,
        ),
        post=expand(
            f"{RESULTS}/registered/{{patient}}/post/{{phase}}.nii.gz",
            phase=RADIOMICS["phases"],
            allow_missing=True,
        ),
        mask_pre=f"{RESULTS}/masks/{{patient}}/pre.nii.gz",
        mask_post=f"{RESULTS}/masks/{{patient}}/post.nii.gz",
        params=RADIOMICS_PARAMS,
    output:
        f"{RADIOMICS_DIR}/{{patient}}.csv",
    log:
        f"{LOGS}/radiomics_features/{{patient}}.log",
    benchmark:
        f"{BENCH}/radiomics_features/{{patient}}.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=5,
    params:
        pre=lambda wc: f"{RESULTS}/registered/{wc.patient}/pre",
        post=lambda wc: f"{RESULTS}/registered/{wc.patient}/post",
        settings=settings_json(FeatureSettings, RADIOMICS),
    shell:
        "python -m recur --threads {threads} radiomics-features --patient {wildcards.patient:q}"
        " --registered-pre {params.pre:q} --registered-post {params.post:q}"
        " --mask-pre {input.mask_pre:q} --mask-post {input.mask_post:q}"
        " --params {input.params:q} --settings {params.settings:q} --out {output:q}"
        " > {log:q} 2>&1"


rule radiomics_models:
    input:
        cohort=cohort_input("clinical"),
        split=f"{RESULTS}/splits/split.csv",
        features=lambda wc: expand(
            f"{RADIOMICS_DIR}/{{patient}}.csv", patient=included_patients(wc)
        ),
    output:
        predictions=expand(
            f"{RESULTS}/predictions/{{model}}.csv", model=RADIOMICS_MODELS
        ),
        models=expand(
            f"{RESULTS}/models/{{model}}/{{name}}",
            model=RADIOMICS_MODELS,
            name=["model.skops", "manifest.json"],
        ),
        selected=report(
            f"{RESULTS}/models/radiomics_selected.csv",
            caption="../report/radiomics_selected.rst",
            category="2 Evaluation",
            subcategory="7 Radiomics models",
        ),
    log:
        f"{LOGS}/radiomics_models/radiomics_models.log",
    benchmark:
        f"{BENCH}/radiomics_models/radiomics_models.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        clinical=clinical_csv,
        model_dirs=" ".join(f"{RESULTS}/models/{m}" for m in RADIOMICS_MODELS),
        settings=settings_json(ModelSettings, RADIOMICS),
        fusion=tree_args(config["dl_clinical"]),
    shell:
        "python -m recur --threads {threads} radiomics-models --clinical {params.clinical:q}"
        " --split {input.split:q} --features {input.features:q}"
        " --radiomics-settings {params.settings:q} {params.fusion}"
        " --out {output.predictions:q} --model-dir {params.model_dirs}"
        " --selected {output.selected:q} > {log:q} 2>&1"


if RADIOMICS["enabled"]:
    FINAL_TARGETS.extend(
        [
            *rules.radiomics_models.output.predictions,
            rules.radiomics_models.output.selected,
        ]
    )
