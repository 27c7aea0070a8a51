# DICOM -> de-identified NIfTI, one job per patient and time point (issue 3)


rule convert:
    input:
        series_dirs,
    output:
        # intermediate files (one set per patient and time point): not in the HTML report
        nifti=expand(
            f"{RESULTS}/nifti/{{patient}}/{{timepoint}}/{{phase}}.nii.gz",
            phase=PHASES,
            allow_missing=True,
        ),
        acquisition=f"{RESULTS}/nifti/{{patient}}/{{timepoint}}/acquisition.json",
    log:
        f"{LOGS}/convert/{{patient}}/{{timepoint}}.log",
    benchmark:
        f"{BENCH}/convert/{{patient}}/{{timepoint}}.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cohort_dir=COHORT_DIR,
        series_table=config["cohort"]["series"] if COHORT is not None else "series.csv",
        outdir=lambda wc: f"{RESULTS}/nifti/{wc.patient}/{wc.timepoint}",
        # editing this job's rows of series.csv reruns this job only: a changed dicom_dir
        # replaces its input link (newer than the outputs), a changed series_uid this digest
        series_uids=series_uid_digest,
        spacing_tolerance=config["convert"]["spacing_tolerance"],
        orientation_tolerance=config["convert"]["orientation_tolerance"],
        stack_tolerance_mm=config["convert"]["stack_tolerance_mm"],
        min_slices=config["convert"]["min_slices"],
        compression_level=config["convert"]["compression_level"],
        on_failure=ON_FAILURE,
    shell:
        "python -m recur --threads {threads} convert-timepoint --cohort-dir {params.cohort_dir:q}"
        " --series-table {params.series_table:q} --patient {wildcards.patient:q}"
        " --timepoint {wildcards.timepoint} --outdir {params.outdir:q}"
        " --spacing-tolerance {params.spacing_tolerance}"
        " --orientation-tolerance {params.orientation_tolerance}"
        " --stack-tolerance-mm {params.stack_tolerance_mm}"
        " --min-slices {params.min_slices}"
        " --compression-level {params.compression_level}"
        " --on-failure {params.on_failure} > {log:q} 2>&1"


# No per-file targets here: every NIfTI is an input of a registration (and every
# acquisition.json of Table S1), which the final targets need anyway; listing 10 files per
# patient again in `all` costs DAG-building time for nothing (docs/cluster.md, Scale).
