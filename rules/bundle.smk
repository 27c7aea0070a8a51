# Portable model bundle for `recur predict`: models, their recalibration, settings, cutoffs,
# manifest.
# No patient data: no ids, no predictions tables.
import json

from recur.deploy.bundle import MANIFEST, required_files

BUNDLE_DIR = f"{RESULTS}/bundle"
BUNDLE_FILES = [f"{BUNDLE_DIR}/{name}" for name in [MANIFEST, *required_files()]]
# The settings `recur predict` must reuse, exactly as this run used them (JSON).
BUNDLE_SETTINGS = json.dumps(
    {
        "convert": config["convert"],
        "roi": config["roi"],
        "registration": config["registration"],
        "crop": config["crop"],
        # the post-to-pre registration (crop.post_frame: pre)
        "margin": config["margin"],
        "architecture": {
            k: config["train"][k]
            for k in (
                "widths",
                "blocks",
                "gru_hidden",
                "dropout",
                "max_pool",
                "roi_channel",
                "tta",
            )
        },
        "clinical": config["clinical"],
        "dl_clinical": config["dl_clinical"],
    },
    sort_keys=True,
)


rule bundle:
    input:
        pre=expand(
            f"{RESULTS}/models/Pre/{SIGNATURE_DIR}/{{name}}",
            name=["weights.pt", "model.json"],
        ),
        prepost=expand(
            f"{RESULTS}/models/PrePost/{SIGNATURE_DIR}/{{name}}",
            name=["weights.pt", "model.json"],
        ),
        pre_recalibration=f"{RESULTS}/models/Pre/recalibration.json",
        prepost_recalibration=f"{RESULTS}/models/PrePost/recalibration.json",
        clinical_model=f"{RESULTS}/models/Clinical/model.skops",
        clinical_manifest=f"{RESULTS}/models/Clinical/manifest.json",
        dl_clinical_model=f"{RESULTS}/models/DL_Clinical/model.skops",
        dl_clinical_manifest=f"{RESULTS}/models/DL_Clinical/manifest.json",
        choice=f"{RESULTS}/models/DL_Clinical/choice.json",
        cutoffs=f"{RESULTS}/tables/cutoffs.csv",
    output:
        BUNDLE_FILES,
    log:
        f"{LOGS}/bundle/bundle.log",
    benchmark:
        f"{BENCH}/bundle/bundle.tsv"
    conda:
        "../envs/dl.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        pre=lambda wc, input: str(Path(input.pre[0]).parent),
        prepost=lambda wc, input: str(Path(input.prepost[0]).parent),
        settings=BUNDLE_SETTINGS,
        outdir=lambda wc, output: str(Path(output[0]).parent),
    shell:
        "python -m recur --threads {threads} bundle --pre {params.pre:q}"
        " --prepost {params.prepost:q} --pre-recalibration {input.pre_recalibration:q}"
        " --prepost-recalibration {input.prepost_recalibration:q}"
        " --clinical-model {input.clinical_model:q}"
        " --clinical-manifest {input.clinical_manifest:q}"
        " --dl-clinical-model {input.dl_clinical_model:q}"
        " --dl-clinical-manifest {input.dl_clinical_manifest:q} --choice {input.choice:q}"
        " --cutoffs {input.cutoffs:q} --settings {params.settings:q} --out {params.outdir:q}"
        " > {log:q} 2>&1"


FINAL_TARGETS.extend(BUNDLE_FILES)
