# Registration of PS/AP/PVP onto DP, mask checks, 3-slice 128x128 crops, QC
#
# One `register` job per patient checks the ROI masks of both time points against their DP
# (as `check-mask` does; its messages also in logs/check_mask/) and registers both time
# points, in one process: the registration reads the checked mask, so any change that reruns
# a check reruns the registration anyway. One job per patient instead of two checks and two
# registrations saves Snakemake 3 jobs per patient (DAG building, scheduling) and the
# interpreter start-ups (~0.5 CPU s each) (docs/methods/scale.md).

from recur.preprocess.settings import CropSettings, RegistrationSettings


rule register:
    input:
        nifti=expand(
            f"{RESULTS}/nifti/{{patient}}/{{timepoint}}/{{phase}}.nii.gz",
            timepoint=TIMEPOINTS,
            phase=PHASES,
            allow_missing=True,
        ),
        roi=roi_mask,
    output:
        # the checked, de-identified ROI masks (check-mask) and the registrations
        mask=expand(
            f"{RESULTS}/masks/{{patient}}/{{timepoint}}.nii.gz",
            timepoint=TIMEPOINTS,
            allow_missing=True,
        ),
        images=expand(
            f"{RESULTS}/registered/{{patient}}/{{timepoint}}/{{phase}}.nii.gz",
            timepoint=TIMEPOINTS,
            phase=PHASES,
            allow_missing=True,
        ),
        transforms=expand(
            f"{RESULTS}/registered/{{patient}}/{{timepoint}}/{{phase}}.tfm",
            timepoint=TIMEPOINTS,
            phase=[p for p in PHASES if p != "DP"],
            allow_missing=True,
        ),
        qc=expand(
            f"{RESULTS}/registered/{{patient}}/{{timepoint}}/qc.csv",
            timepoint=TIMEPOINTS,
            allow_missing=True,
        ),
    log:
        check_mask=f"{LOGS}/check_mask/{{patient}}.log",
        register=f"{LOGS}/register/{{patient}}.log",
    benchmark:
        f"{BENCH}/register/{{patient}}.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: config["registration"]["threads"]
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        nifti=lambda wc: f"{RESULTS}/nifti/{wc.patient}",
        outdir=lambda wc: f"{RESULTS}/registered/{wc.patient}",
        masks=lambda wc: f"{RESULTS}/masks/{wc.patient}",
        cohort=cohort_args(),
        # the section less threads (the rule's threads, above)
        settings=settings_json(RegistrationSettings, config["registration"]),
        # placing SEG / RTSTRUCT masks on the DP grid; a changed roi column of rois.csv
        # reruns this patient (its digest: the names never reach snakemake's records)
        roi_settings=section_json(config["roi"]),
        roi_names=roi_name_digest,
        on_failure=ON_FAILURE,
    shell:
        "python -m recur --threads {threads} register-patient --check-roi {params.cohort}"
        " --patient {wildcards.patient:q} --check-log {log.check_mask:q}"
        " --nifti-dir {params.nifti:q} --mask-dir {params.masks:q}"
        " --outdir {params.outdir:q} --settings {params.settings:q}"
        " --roi-settings {params.roi_settings:q}"
        " --on-failure {params.on_failure} > {log.register:q} 2>&1"


rule crop:
    input:
        pre=expand(
            f"{RESULTS}/registered/{{patient}}/pre/{{phase}}.nii.gz",
            phase=PHASES,
            allow_missing=True,
        ),
        post=expand(
            f"{RESULTS}/registered/{{patient}}/post/{{phase}}.nii.gz",
            phase=PHASES,
            allow_missing=True,
        ),
        mask_pre=f"{RESULTS}/masks/{{patient}}/pre.nii.gz",
        mask_post=f"{RESULTS}/masks/{{patient}}/post.nii.gz",
        # crop.post_frame 'pre': the post phases are carried onto the pre crop's grid
        post_to_pre=post_to_pre_input,
    output:
        npz=f"{RESULTS}/crops/{{patient}}.npz",
        # every patient's montage; the report shows the QC-flagged ones and a sample
        # (rule report_montages)
        qc=f"{RESULTS}/qc/crops/{{patient}}.png",
    log:
        f"{LOGS}/crop/{{patient}}.log",
    benchmark:
        f"{BENCH}/crop/{{patient}}.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        pre=lambda wc: f"{RESULTS}/registered/{wc.patient}/pre",
        post=lambda wc: f"{RESULTS}/registered/{wc.patient}/post",
        settings=settings_json(CropSettings, config["crop"]),
        post_to_pre=lambda wc, input: (
            f"--post-to-pre {input.post_to_pre[0]}" if input.post_to_pre else ""
        ),
        on_failure=ON_FAILURE,
    shell:
        "python -m recur --threads {threads} crop --patient {wildcards.patient:q}"
        " --registered-pre {params.pre:q} --registered-post {params.post:q}"
        " --mask-pre {input.mask_pre:q} --mask-post {input.mask_post:q}"
        " --out {output.npz:q} --qc {output.qc:q} --settings {params.settings:q}"
        " {params.post_to_pre} --on-failure {params.on_failure} > {log:q} 2>&1"


rule crop_qc:
    input:
        # patients excluded by QC (qc.on_failure: exclude) are left out
        crops=lambda wc: expand(
            f"{RESULTS}/crops/{{patient}}.npz", patient=included_patients(wc)
        ),
        registration=lambda wc: expand(
            f"{RESULTS}/registered/{{patient}}/{{timepoint}}/qc.csv",
            patient=included_patients(wc),
            timepoint=TIMEPOINTS,
        ),
    output:
        report(
            f"{RESULTS}/qc/crops.csv",
            caption="../report/preprocess_crop_qc.rst",
            category="6 QC",
            subcategory="Crops",
            labels={"table": "crop and registration QC"},
        ),
    log:
        f"{LOGS}/crop_qc/crop_qc.log",
    benchmark:
        f"{BENCH}/crop_qc/crop_qc.tsv"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m recur --threads {threads} crop-qc --crops {input.crops:q}"
        " --registration-qc {input.registration:q} --out {output:q} > {log:q} 2>&1"


FINAL_TARGETS.extend(expand(f"{RESULTS}/crops/{{patient}}.npz", patient=PATIENTS))
FINAL_TARGETS.append(f"{RESULTS}/qc/crops.csv")
