# DICOM -> de-identified NIfTI, one job per patient: both time points, 8 series.
#
# One job per patient rather than per time point (docs/methods/scale.md): Snakemake's own
# cost is per job (DAG building, scheduling, a cluster job step), and each job pays a Python +
# pydicom + SimpleITK start-up; the post time point also needs the pre DP examination date
# for its day offsets, which a per-patient job has at hand. A changed DICOM folder or
# series.csv row of a patient reruns that patient's conversion. The job also checks, from the
# headers, that the 8 series are consistent (recur.cohort.series_checks: one patient, no series
# twice, one study and the phase order per time point, post at least convert.min_interval_days after
# pre) and refuses the patient otherwise.


rule convert:
    input:
        series_dirs,
    output:
        # intermediate files (one set per patient): not in the HTML report
        nifti=expand(
            f"{RESULTS}/nifti/{{patient}}/{{timepoint}}/{{phase}}.nii.gz",
            timepoint=TIMEPOINTS,
            phase=PHASES,
            allow_missing=True,
        ),
        acquisition=expand(
            f"{RESULTS}/nifti/{{patient}}/{{timepoint}}/acquisition.json",
            timepoint=TIMEPOINTS,
            allow_missing=True,
        ),
    log:
        f"{LOGS}/convert/{{patient}}.log",
    benchmark:
        f"{BENCH}/convert/{{patient}}.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cohort_dir=COHORT_DIR,
        series_table=COHORT_TABLES["series"],
        outdir=lambda wc: f"{RESULTS}/nifti/{wc.patient}",
        # editing this patient's rows of series.csv reruns this job only: a changed
        # dicom_dir replaces its input link (newer than the outputs), a changed series_uid
        # this digest
        series_uids=series_uid_digest,
        settings=section_json(config["convert"]),
        on_failure=ON_FAILURE,
    shell:
        "python -m recur --threads {threads} convert-patient --cohort-dir {params.cohort_dir:q}"
        " --series-table {params.series_table:q} --patient {wildcards.patient:q}"
        " --outdir {params.outdir:q}"
        " --settings {params.settings:q}"
        " --on-failure {params.on_failure} > {log:q} 2>&1"


# No per-file targets here: every NIfTI is an input of a registration (and every
# acquisition.json of Table S1), which the final targets need anyway; listing 10 files per
# patient again in `all` costs DAG-building time for nothing (docs/methods/scale.md).
