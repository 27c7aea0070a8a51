# The cohort: the embedded synthetic one (generated) or the user's (validated in place).


if config["cohort"]["source"] == "synthetic":

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
            n_train=config["synthetic"]["n_train"],
            n_test=" ".join(str(n) for n in config["synthetic"]["n_test"]),
            seed=config["synthetic"]["seed"],
            er_share=synth_er_share_args(),
        shell:
            "python -m recur --threads {threads} synth {output.cohort:q} --n-train {params.n_train}"
            " --n-test {params.n_test} --seed {params.seed} {params.er_share}"
            " --truth {output.truth:q} > {log:q} 2>&1"


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
        clinical=config["cohort"]["clinical"] if COHORT is not None else "clinical.csv",
        series=config["cohort"]["series"] if COHORT is not None else "series.csv",
        rois=config["cohort"]["rois"] if COHORT is not None else "rois.csv",
    shell:
        "python -m recur validate-cohort {params.cohort_dir:q} --clinical {params.clinical:q}"
        " --series {params.series:q} --rois {params.rois:q} --out {output:q} > {log:q} 2>&1"


FINAL_TARGETS.append(rules.validate_cohort.output[0])
