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
        # this job's rows of series.csv: editing one row reruns this job only
        rows=lambda wc: (
            "synthetic"
            if COHORT is None
            else COHORT.series.loc[
                (COHORT.series["patient_id"] == wc.patient)
                & (COHORT.series["timepoint"] == wc.timepoint),
                ["phase", "dicom_dir", "series_uid"],
            ]
            .sort_values("phase")
            .to_csv(index=False)
        ),
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


FINAL_TARGETS.extend(
    expand(
        f"{RESULTS}/nifti/{{patient}}/{{timepoint}}/{{name}}",
        patient=PATIENTS,
        timepoint=TIMEPOINTS,
        name=[f"{phase}.nii.gz" for phase in PHASES] + ["acquisition.json"],
    )
)
