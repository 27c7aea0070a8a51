# The cohort: the embedded synthetic one (generated) or the user's (validated in place).


if COHORT_SETTINGS.source == "synthetic":

    rule synth_cohort:
        output:
            cohort=directory(COHORT_DIR),
            truth=TRUTH_CSV,
        log:
            f"{LOGS}/synth_cohort/synth_cohort.log",
        benchmark:
            f"{BENCH}/synth_cohort/synth_cohort.tsv"
        conda:
            "../envs/imaging.yaml"
        threads: 2
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            settings=section_json(config["synthetic"]),
        shell:
            "python -m recur --threads {threads} synth {output.cohort:q}"
            " --settings {params.settings:q} --truth {output.truth:q} > {log:q} 2>&1"


rule validate_cohort:
    input:
        cohort_input("clinical", "series", "rois"),
    output:
        f"{RESULTS}/cohort/patients.csv",
    log:
        f"{LOGS}/validate_cohort/validate_cohort.log",
    benchmark:
        f"{BENCH}/validate_cohort/validate_cohort.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cohort_dir=lambda w, input: cohort_dir_of(input),
        clinical=COHORT_TABLES["clinical"],
        series=COHORT_TABLES["series"],
        rois=COHORT_TABLES["rois"],
    shell:
        "python -m recur validate-cohort {params.cohort_dir:q} --clinical {params.clinical:q}"
        " --series {params.series:q} --rois {params.rois:q} --out {output:q} > {log:q} 2>&1"


FINAL_TARGETS.append(rules.validate_cohort.output[0])
