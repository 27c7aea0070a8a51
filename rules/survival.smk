# Recurrence-free survival: Cox models of the binary models' predictor sets and the
# censoring-aware metrics of every model (recur.survival; docs/methods/survival.md).

from recur.constants import COX_MODEL_FILES
from recur.evaluate.settings import BootstrapSettings
from recur.survival.settings import SurvivalSettings

SURV_MARGIN = bool(MARGIN["enabled"] and MARGIN["models"])
SURV_CAT = "3 Survival"
# The Cox models, one per binary model of the study (the margin models' with margin models);
# their fits go to results/models/survival/<model>/ for the model bundle.
COX_MODELS = [*MODELS_PAPER_ORDER, *(MARGIN_MODELS if SURV_MARGIN else [])]
COX_DIR = f"{RESULTS}/models/survival"


rule survival:
    input:
        **EVAL_INPUT,
        oof=expand(f"{PRED_DIR}/oof/{{model}}.csv", model=DL_MODELS),
        margin=[f"{MARGIN_DIR}/margin.csv"] if SURV_MARGIN else [],
    output:
        table=f"{TABLES}/survival.csv",
        md=f"{TABLES}/survival.md",
        html=report(
            f"{TABLES}/survival.html",
            caption="../report/survival_table.rst",
            category=SURV_CAT,
            subcategory="1 Tables",
        ),
        compare=report(
            f"{TABLES}/survival_compare.csv",
            caption="../report/survival_compare.rst",
            category=SURV_CAT,
            subcategory="1 Tables",
        ),
        cox=report(
            f"{TABLES}/survival_cox.csv",
            caption="../report/survival_cox.rst",
            category=SURV_CAT,
            subcategory="1 Tables",
        ),
        cutoffs=f"{TABLES}/survival_cutoffs.csv",
        risk=f"{PRED_DIR}/survival.csv",
        models=expand(
            f"{COX_DIR}/{{model}}/{{name}}", model=COX_MODELS, name=COX_MODEL_FILES
        ),
        td_auc=report(
            f"{FIGURES}/survival/td_auc_external.png",
            caption="../report/survival_td_auc.rst",
            category=SURV_CAT,
            subcategory="2 Figures",
        ),
        calibration=report(
            f"{FIGURES}/survival/calibration_external.png",
            caption="../report/survival_calibration.rst",
            category=SURV_CAT,
            subcategory="2 Figures",
        ),
        km=report(
            f"{FIGURES}/survival/km_external.png",
            caption="../report/survival_km.rst",
            category=SURV_CAT,
            subcategory="2 Figures",
        ),
        extra=expand(
            f"{FIGURES}/survival/{{name}}",
            name=[
                "td_auc_external.pdf",
                "td_auc_external.csv",
                "calibration_external.pdf",
                "calibration_external.csv",
                "km_external.pdf",
                "km_external.csv",
            ],
        ),
    log:
        f"{LOGS}/survival/survival.log",
    benchmark:
        f"{BENCH}/survival/survival.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        clinical=clinical_csv,
        predictions=prediction_args,
        oof=lambda wildcards, input: " ".join(
            f"{m}={shlex_quote(p)}" for m, p in zip(DL_MODELS, input.oof)
        ),
        margin=lambda wildcards, input: (
            f"--margin {shlex_quote(input.margin[0])} --margin-features "
            + " ".join(MARGIN["features"])
            if input.margin
            else ""
        ),
        stacking=config["dl_clinical"]["stacking"],
        settings=SurvivalSettings.json(config["survival"]),
        bootstrap=BootstrapSettings.json(config["evaluate"]),
        tabular=section_json(config["clinical"]),
        figdir=lambda wildcards, output: str(Path(output.td_auc).parent),
        # results/models/survival: the folder above each model's folder
        models_dir=lambda wildcards, output: str(Path(output.models[0]).parent.parent),
    shell:
        "python -m recur --threads {threads} survival --clinical {params.clinical:q}"
        " --split {input.split:q} --predictions {params.predictions}"
        " --oof {params.oof} {params.margin} --stacking {params.stacking}"
        " --settings {params.settings:q} --bootstrap {params.bootstrap:q}"
        " --tabular {params.tabular:q} --out {output.table:q} --md {output.md:q}"
        " --html {output.html:q} --compare {output.compare:q} --cox {output.cox:q}"
        " --cutoffs {output.cutoffs:q} --risk {output.risk:q}"
        " --models-dir {params.models_dir:q}"
        " --figdir {params.figdir:q} > {log:q} 2>&1"


FINAL_TARGETS.extend(rules.survival.output)
