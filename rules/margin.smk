# Ablative margin: post DP registered onto pre DP, signed-distance margins, margin.csv,
# figures and the optional margin-extended models (docs/methods/margin.md).

from recur.margin.settings import CrossTimeSettings, MarginMetricSettings

MARGIN = config["margin"]
MARGIN_DIR = f"{RESULTS}/margin"
MARGIN_CAT = "4 Ablative margin"
MARGIN_FIG_PATIENTS = (
    PATIENTS
    if MARGIN["figure_patients"] is None
    else PATIENTS[: MARGIN["figure_patients"]]
)


rule margin_register:
    input:
        pre_dp=f"{RESULTS}/nifti/{{patient}}/pre/DP.nii.gz",
        post_dp=f"{RESULTS}/nifti/{{patient}}/post/DP.nii.gz",
        pre_mask=f"{RESULTS}/masks/{{patient}}/pre.nii.gz",
        post_mask=f"{RESULTS}/masks/{{patient}}/post.nii.gz",
    output:
        tfm=f"{MARGIN_DIR}/{{patient}}/post_to_pre.tfm",
        zone=f"{MARGIN_DIR}/{{patient}}/zone_on_pre.nii.gz",
        # every patient's picture; the report shows the QC-flagged ones and a sample
        # (rule report_margin_qc)
        qc=f"{MARGIN_DIR}/{{patient}}/qc.png",
        qc_json=f"{MARGIN_DIR}/{{patient}}/registration.json",
    log:
        f"{LOGS}/margin_register/{{patient}}.log",
    benchmark:
        f"{BENCH}/margin_register/{{patient}}.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        # the registration keys of the margin section
        settings=settings_json(CrossTimeSettings, MARGIN),
        on_failure=ON_FAILURE,
    shell:
        "python -m recur --threads {threads} margin-register --patient {wildcards.patient}"
        " --pre-dp {input.pre_dp:q} --post-dp {input.post_dp:q}"
        " --pre-mask {input.pre_mask:q} --post-mask {input.post_mask:q}"
        " --out-tfm {output.tfm:q} --out-mask {output.zone:q} --qc {output.qc:q}"
        " --qc-json {output.qc_json:q} --settings {params.settings:q}"
        " --on-failure {params.on_failure} > {log:q} 2>&1"


rule margin_metrics:
    input:
        tumour=f"{RESULTS}/masks/{{patient}}/pre.nii.gz",
        zone=f"{RESULTS}/masks/{{patient}}/post.nii.gz",
        tfm=f"{MARGIN_DIR}/{{patient}}/post_to_pre.tfm",
    output:
        json=f"{MARGIN_DIR}/{{patient}}/margin.json",
        surface=f"{MARGIN_DIR}/{{patient}}/surface.npz",
    log:
        f"{LOGS}/margin_metrics/{{patient}}.log",
    benchmark:
        f"{BENCH}/margin_metrics/{{patient}}.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        # the metric keys of the margin section
        settings=settings_json(MarginMetricSettings, MARGIN),
    shell:
        "python -m recur --threads {threads} margin-metrics --patient {wildcards.patient}"
        " --tumour {input.tumour:q} --zone {input.zone:q} --transform {input.tfm:q}"
        " --out {output.json:q} --surface {output.surface:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule margin_figure:
    input:
        f"{MARGIN_DIR}/{{patient}}/surface.npz",
    output:
        png=report(
            f"{RESULTS}/figures/margin/{{patient}}.png",
            caption="../report/margin_patient.rst",
            category=MARGIN_CAT,
            subcategory="Per-patient margins",
            labels={"patient": "{patient}", "figure": "surface margins"},
        ),
        pdf=f"{RESULTS}/figures/margin/{{patient}}.pdf",
    log:
        f"{LOGS}/margin_figure/{{patient}}.log",
    benchmark:
        f"{BENCH}/margin_figure/{{patient}}.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m recur --threads {threads} margin-figure --patient {wildcards.patient}"
        " --surface {input:q} --out {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"


rule margin_table:
    input:
        lambda wc: expand(
            f"{MARGIN_DIR}/{{patient}}/margin.json", patient=included_patients(wc)
        ),
    output:
        table=report(
            f"{MARGIN_DIR}/margin.csv",
            caption="../report/margin_table.rst",
            category=MARGIN_CAT,
            subcategory="Cohort",
        ),
        figure=report(
            f"{RESULTS}/figures/margin/cohort.png",
            caption="../report/margin_cohort.rst",
            category=MARGIN_CAT,
            subcategory="Cohort",
        ),
        figure_pdf=f"{RESULTS}/figures/margin/cohort.pdf",
    log:
        f"{LOGS}/margin_table/margin_table.log",
    benchmark:
        f"{BENCH}/margin_table/margin_table.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m recur --threads {threads} margin-table --metrics {input:q}"
        " --out {output.table:q} --figure {output.figure:q}"
        " --figure-pdf {output.figure_pdf:q} > {log:q} 2>&1"


rule margin_clinical_model:
    input:
        cohort=cohort_input("clinical"),
        split=f"{RESULTS}/splits/split.csv",
        margin=f"{MARGIN_DIR}/margin.csv",
    output:
        predictions=f"{RESULTS}/predictions/Clinical_Margin.csv",
        model=f"{RESULTS}/models/Clinical_Margin/model.skops",
        manifest=f"{RESULTS}/models/Clinical_Margin/manifest.json",
    log:
        f"{LOGS}/margin_clinical_model/margin_clinical_model.log",
    benchmark:
        f"{BENCH}/margin_clinical_model/margin_clinical_model.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        clinical=clinical_csv,
        features=" ".join(MARGIN["features"]),
        trees=tree_args(config["clinical"]),
    shell:
        "python -m recur --threads {threads} margin-model --model Clinical_Margin"
        " --clinical {params.clinical:q} --split {input.split:q} --margin {input.margin:q}"
        " --features {params.features} {params.trees} --out {output.predictions:q}"
        " --model-out {output.model:q} --manifest {output.manifest:q} > {log:q} 2>&1"


rule margin_dl_clinical_model:
    input:
        cohort=cohort_input("clinical"),
        split=f"{RESULTS}/splits/split.csv",
        margin=f"{MARGIN_DIR}/margin.csv",
        pre=f"{RESULTS}/predictions/Pre.csv",
        prepost=f"{RESULTS}/predictions/PrePost.csv",
        pre_oof=f"{RESULTS}/predictions/oof/Pre.csv",
        prepost_oof=f"{RESULTS}/predictions/oof/PrePost.csv",
    output:
        predictions=f"{RESULTS}/predictions/DL_Clinical_Margin.csv",
        model=f"{RESULTS}/models/DL_Clinical_Margin/model.skops",
        manifest=f"{RESULTS}/models/DL_Clinical_Margin/manifest.json",
    log:
        f"{LOGS}/margin_dl_clinical_model/margin_dl_clinical_model.log",
    benchmark:
        f"{BENCH}/margin_dl_clinical_model/margin_dl_clinical_model.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        clinical=clinical_csv,
        features=" ".join(MARGIN["features"]),
        trees=tree_args(config["dl_clinical"]),
        stacking=config["dl_clinical"]["stacking"],
    shell:
        "python -m recur --threads {threads} margin-model --model DL_Clinical_Margin"
        " --clinical {params.clinical:q} --split {input.split:q} --margin {input.margin:q}"
        " --features {params.features} {params.trees} --stacking {params.stacking}"
        " --pre {input.pre:q} --prepost {input.prepost:q} --pre-oof {input.pre_oof:q}"
        " --prepost-oof {input.prepost_oof:q} --out {output.predictions:q}"
        " --model-out {output.model:q} --manifest {output.manifest:q} > {log:q} 2>&1"


if MARGIN["enabled"]:
    FINAL_TARGETS.extend(
        [
            *rules.margin_table.output,
            *expand(rules.margin_figure.output, patient=MARGIN_FIG_PATIENTS),
        ]
        if ON_FAILURE != "exclude"
        else [
            *rules.margin_table.output,
            # QC-excluded patients are known only after the qc_exclusions checkpoint
            lambda wc: expand(
                rules.margin_figure.output,
                patient=[p for p in included_patients(wc) if p in MARGIN_FIG_PATIENTS],
            ),
        ]
    )
    if MARGIN["models"]:
        FINAL_TARGETS.extend(
            [
                rules.margin_clinical_model.output.predictions,
                rules.margin_dl_clinical_model.output.predictions,
            ]
        )
