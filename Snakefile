# recur: early recurrence of HCC after thermal ablation from longitudinal MRI.
# Run:  snakemake --cores all           (the whole study; see README.md)
#       snakemake --cores all --report results/report.html


configfile: f"{workflow.basedir}/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/cohort.smk"
include: "rules/convert.smk"
include: "rules/preprocess.smk"
include: "rules/models.smk"
include: "rules/evaluate.smk"
include: "rules/margin.smk"
include: "rules/radiomics.smk"
include: "rules/survival.smk"
include: "rules/reporting.smk"
include: "rules/bundle.smk"


rule all:
    default_target: True
    input:
        FINAL_TARGETS,
