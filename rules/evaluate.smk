# Clinical and DL_Clinical models, cutoffs, Table 1, Table 2, figures
# Thin rules: every statistic lives in recur.evaluate (metrics, tables, readers, table1,
# figures) and recur.models.tabular.

# The models in the paper's order; the margin-extended models (rules/margin.smk) and the
# radiomics models (rules/radiomics.smk) are evaluated like every other model.
EVAL_MODELS = list(MODELS_PAPER_ORDER)
if config["margin"]["enabled"] and config["margin"]["models"]:
    EVAL_MODELS += MARGIN_MODELS
if config["radiomics"]["enabled"]:
    EVAL_MODELS += RADIOMICS_MODELS
SPLIT_CSV = f"{RESULTS}/splits/split.csv"
PRED_DIR = f"{RESULTS}/predictions"
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
# Table 2 cohorts: the splits, then every external site by name (known before any job runs).
# The report shows the splits' figures; each site's figure stays in results/figures/<kind>/.
SPLIT_COHORTS = ["training", "tuning", "external"]
EVAL_COHORTS = SPLIT_COHORTS + sorted(
    PATIENT_TABLE.loc[PATIENT_TABLE["cohort"] == "test", "site"].unique()
)
EVAL_CAT = "2 Evaluation"
_report = report  # the name `report` at the start of a line is a Snakemake keyword


# Helpers as lambdas (Snakemake's linter asks for no `def` beside rules).
# `--predictions MODEL=PATH ...` in the order of EVAL_MODELS:
prediction_args = lambda wildcards, input: " ".join(
    f"{m}={shlex_quote(p)}" for m, p in zip(EVAL_MODELS, input.predictions)
)
# The per-cohort PNGs of a figure kind, the splits' wrapped for the report:
cohort_reports = lambda pattern, caption, subcategory: [
    (
        _report(
            pattern.format(cohort=c),
            caption=caption,
            category=EVAL_CAT,
            subcategory=subcategory,
            labels={"figure": subcategory, "cohort": c},
        )
        if c in SPLIT_COHORTS
        else pattern.format(cohort=c)
    )
    for c in EVAL_COHORTS
]


EVAL_INPUT = dict(
    cohort=cohort_input("clinical"),
    split=SPLIT_CSV,
    predictions=expand(f"{PRED_DIR}/{{model}}.csv", model=EVAL_MODELS),
)


rule clinical_model:
    input:
        cohort=cohort_input("clinical"),
        split=SPLIT_CSV,
    output:
        predictions=f"{PRED_DIR}/Clinical.csv",
        model=f"{RESULTS}/models/Clinical/model.skops",
        manifest=f"{RESULTS}/models/Clinical/manifest.json",
    log:
        f"{LOGS}/clinical_model/clinical_model.log",
    benchmark:
        f"{BENCH}/clinical_model/clinical_model.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        clinical=clinical_csv,
        trees=tree_args(config["clinical"]),
    shell:
        "python -m recur --threads {threads} clinical-model --clinical {params.clinical:q}"
        " --split {input.split:q} {params.trees} --out {output.predictions:q}"
        " --model {output.model:q} --manifest {output.manifest:q} > {log:q} 2>&1"


rule dl_clinical_model:
    input:
        cohort=cohort_input("clinical"),
        split=SPLIT_CSV,
        pre=f"{PRED_DIR}/Pre.csv",
        prepost=f"{PRED_DIR}/PrePost.csv",
        pre_oof=f"{PRED_DIR}/oof/Pre.csv",
        prepost_oof=f"{PRED_DIR}/oof/PrePost.csv",
    output:
        predictions=f"{PRED_DIR}/DL_Clinical.csv",
        model=f"{RESULTS}/models/DL_Clinical/model.skops",
        manifest=f"{RESULTS}/models/DL_Clinical/manifest.json",
        choice=report(
            f"{RESULTS}/models/DL_Clinical/choice.json",
            caption="../report/evaluate_choice.rst",
            category=EVAL_CAT,
            subcategory="6 DL_Clinical model",
        ),
        importance=report(
            f"{RESULTS}/models/DL_Clinical/importance.csv",
            caption="../report/evaluate_importance.rst",
            category=EVAL_CAT,
            subcategory="6 DL_Clinical model",
        ),
    log:
        f"{LOGS}/dl_clinical_model/dl_clinical_model.log",
    benchmark:
        f"{BENCH}/dl_clinical_model/dl_clinical_model.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        clinical=clinical_csv,
        trees=tree_args(config["dl_clinical"]),
        stacking=config["dl_clinical"]["stacking"],
    shell:
        "python -m recur --threads {threads} dl-clinical-model --clinical {params.clinical:q}"
        " --split {input.split:q} {params.trees} --stacking {params.stacking}"
        " --pre {input.pre:q} --prepost {input.prepost:q} --pre-oof {input.pre_oof:q}"
        " --prepost-oof {input.prepost_oof:q} --out {output.predictions:q}"
        " --model {output.model:q} --manifest {output.manifest:q}"
        " --choice {output.choice:q} --importance {output.importance:q} > {log:q} 2>&1"


rule importance_figure:
    input:
        f"{RESULTS}/models/DL_Clinical/importance.csv",
    output:
        png=report(
            f"{FIGURES}/importance/DL_Clinical.png",
            caption="../report/evaluate_importance_figure.rst",
            category=EVAL_CAT,
            subcategory="6 DL_Clinical model",
        ),
        pdf=f"{FIGURES}/importance/DL_Clinical.pdf",
    log:
        f"{LOGS}/importance_figure/importance_figure.log",
    benchmark:
        f"{BENCH}/importance_figure/importance_figure.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m recur --threads {threads} importance-figure --importance {input:q}"
        " --png {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"


rule cutoffs:
    input:
        **EVAL_INPUT,
    output:
        report(
            f"{TABLES}/cutoffs.csv",
            caption="../report/evaluate_cutoffs.rst",
            category=EVAL_CAT,
            subcategory="1 Tables",
        ),
    log:
        f"{LOGS}/cutoffs/cutoffs.log",
    benchmark:
        f"{BENCH}/cutoffs/cutoffs.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        clinical=clinical_csv,
        predictions=prediction_args,
    shell:
        "python -m recur --threads {threads} cutoffs --clinical {params.clinical:q}"
        " --split {input.split:q} --predictions {params.predictions} --out {output:q}"
        " > {log:q} 2>&1"


rule table2:
    input:
        **EVAL_INPUT,
        cutoffs=f"{TABLES}/cutoffs.csv",
    output:
        csv=f"{TABLES}/table2.csv",
        md=f"{TABLES}/table2.md",
        html=report(
            f"{TABLES}/table2.html",
            caption="../report/evaluate_table2.rst",
            category=EVAL_CAT,
            subcategory="1 Tables",
        ),
    log:
        f"{LOGS}/table2/table2.log",
    benchmark:
        f"{BENCH}/table2/table2.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        clinical=clinical_csv,
        predictions=prediction_args,
        settings=BootstrapSettings.json(config["evaluate"]),
    shell:
        "python -m recur --threads {threads} table2 --clinical {params.clinical:q}"
        " --split {input.split:q} --predictions {params.predictions}"
        " --cutoffs {input.cutoffs:q} --settings {params.settings:q}"
        " --out {output.csv:q} --md {output.md:q}"
        " --html {output.html:q} > {log:q} 2>&1"


rule delong:
    input:
        **EVAL_INPUT,
    output:
        csv=f"{TABLES}/delong.csv",
        md=f"{TABLES}/delong.md",
        html=report(
            f"{TABLES}/delong.html",
            caption="../report/evaluate_delong.rst",
            category=EVAL_CAT,
            subcategory="1 Tables",
        ),
    log:
        f"{LOGS}/delong/delong.log",
    benchmark:
        f"{BENCH}/delong/delong.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        clinical=clinical_csv,
        predictions=prediction_args,
    shell:
        "python -m recur --threads {threads} delong --clinical {params.clinical:q}"
        " --split {input.split:q} --predictions {params.predictions}"
        " --out {output.csv:q} --md {output.md:q} --html {output.html:q} > {log:q} 2>&1"


rule calibration:
    input:
        **EVAL_INPUT,
    output:
        table=f"{TABLES}/calibration.csv",
        md=f"{TABLES}/calibration.md",
        html=report(
            f"{TABLES}/calibration.html",
            caption="../report/evaluate_calibration_table.rst",
            category=EVAL_CAT,
            subcategory="1 Tables",
        ),
        png=cohort_reports(
            f"{FIGURES}/calibration/{{cohort}}.png",
            "../report/evaluate_calibration.rst",
            "4 Calibration",
        ),
        pdf=expand(f"{FIGURES}/calibration/{{cohort}}.pdf", cohort=EVAL_COHORTS),
    log:
        f"{LOGS}/calibration/calibration.log",
    benchmark:
        f"{BENCH}/calibration/calibration.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        clinical=clinical_csv,
        predictions=prediction_args,
        settings=CalibrationSettings.json(config["evaluate"]),
        figdir=lambda w, output: str(Path(output.png[0]).parent),
    shell:
        "python -m recur --threads {threads} calibration --clinical {params.clinical:q}"
        " --split {input.split:q} --predictions {params.predictions}"
        " --settings {params.settings:q} --out {output.table:q} --figdir {params.figdir:q}"
        " --md {output.md:q} --html {output.html:q} > {log:q} 2>&1"


rule table1:
    input:
        cohort=cohort_input("clinical"),
    output:
        csv=report(
            f"{TABLES}/table1.csv",
            caption="../report/evaluate_table1.rst",
            category=EVAL_CAT,
            subcategory="1 Tables",
        ),
        md=f"{TABLES}/table1.md",
    log:
        f"{LOGS}/table1/table1.log",
    benchmark:
        f"{BENCH}/table1/table1.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        clinical=clinical_csv,
        settings=Table1Settings.json(config["evaluate"]),
    shell:
        "python -m recur --threads {threads} table1 --clinical {params.clinical:q}"
        " --settings {params.settings:q} --out {output.csv:q} --md {output.md:q}"
        " > {log:q} 2>&1"


rule roc_figures:
    input:
        **EVAL_INPUT,
    output:
        png=cohort_reports(
            f"{FIGURES}/roc/{{cohort}}.png", "../report/evaluate_roc.rst", "2 ROC"
        ),
        pdf=expand(f"{FIGURES}/roc/{{cohort}}.pdf", cohort=EVAL_COHORTS),
    log:
        f"{LOGS}/roc_figures/roc_figures.log",
    benchmark:
        f"{BENCH}/roc_figures/roc_figures.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        clinical=clinical_csv,
        predictions=prediction_args,
        outdir=lambda w, output: str(Path(output.png[0]).parent),
    shell:
        "python -m recur --threads {threads} figures --kind roc --clinical {params.clinical:q}"
        " --split {input.split:q} --predictions {params.predictions}"
        " --outdir {params.outdir:q} > {log:q} 2>&1"


rule dca_figures:
    input:
        **EVAL_INPUT,
    output:
        png=cohort_reports(
            f"{FIGURES}/dca/{{cohort}}.png",
            "../report/evaluate_dca.rst",
            "3 Decision curves",
        ),
        pdf=expand(f"{FIGURES}/dca/{{cohort}}.pdf", cohort=EVAL_COHORTS),
    log:
        f"{LOGS}/dca_figures/dca_figures.log",
    benchmark:
        f"{BENCH}/dca_figures/dca_figures.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        clinical=clinical_csv,
        predictions=prediction_args,
        outdir=lambda w, output: str(Path(output.png[0]).parent),
        settings=DecisionCurveSettings.json(config["evaluate"]),
    shell:
        "python -m recur --threads {threads} figures --kind dca --clinical {params.clinical:q}"
        " --split {input.split:q} --predictions {params.predictions}"
        " --settings {params.settings:q}"
        " --outdir {params.outdir:q} > {log:q} 2>&1"


rule km_figures:
    input:
        **EVAL_INPUT,
        cutoffs=f"{TABLES}/cutoffs.csv",
    output:
        table=f"{TABLES}/km_logrank.csv",
        md=f"{TABLES}/km_logrank.md",
        html=report(
            f"{TABLES}/km_logrank.html",
            caption="../report/evaluate_km_table.rst",
            category=EVAL_CAT,
            subcategory="1 Tables",
        ),
        png=cohort_reports(
            f"{FIGURES}/km/{{cohort}}.png",
            "../report/evaluate_km.rst",
            "5 Kaplan-Meier",
        ),
        pdf=expand(f"{FIGURES}/km/{{cohort}}.pdf", cohort=EVAL_COHORTS),
    log:
        f"{LOGS}/km_figures/km_figures.log",
    benchmark:
        f"{BENCH}/km_figures/km_figures.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        clinical=clinical_csv,
        predictions=prediction_args,
        outdir=lambda w, output: str(Path(output.png[0]).parent),
    shell:
        "python -m recur --threads {threads} figures --kind km --clinical {params.clinical:q}"
        " --split {input.split:q} --predictions {params.predictions}"
        " --cutoffs {input.cutoffs:q} --table {output.table:q} --md {output.md:q}"
        " --html {output.html:q} --outdir {params.outdir:q} > {log:q} 2>&1"


FINAL_TARGETS.extend(
    [
        *rules.clinical_model.output,
        *rules.dl_clinical_model.output,
        *rules.importance_figure.output,
        *rules.cutoffs.output,
        *rules.table2.output,
        *rules.delong.output,
        *rules.calibration.output,
        *rules.table1.output,
        *rules.roc_figures.output,
        *rules.dca_figures.output,
        *rules.km_figures.output,
    ]
)
