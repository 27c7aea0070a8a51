# Portable model bundle for `recur predict`: models, their recalibration, settings, cutoffs,
# manifest.
# No patient data: no ids, no predictions tables.
import json

from recur.deploy.bundle import MANIFEST, MODELS_FILE, base_files
from recur.deploy.registry import workflow_sources

BUNDLE_DIR = f"{RESULTS}/bundle"
# Every model the study evaluates (EVAL_MODELS, the radiomics models included when enabled)
# and their Cox models (COX_MODELS): one entry each of recur.deploy.registry; {path in the
# bundle: workflow file} (with radiomics models, the pyradiomics parameter file too).
BUNDLE_MODELS = list(EVAL_MODELS)
BUNDLE_SOURCES = workflow_sources(
    BUNDLE_MODELS,
    COX_MODELS,
    RESULTS,
    SIGNATURE_DIR,
    RADIOMICS_PARAMS if config["radiomics"]["enabled"] else None,
)
BUNDLE_FILES = [
    f"{BUNDLE_DIR}/{name}"
    for name in sorted({MANIFEST, *base_files(), *BUNDLE_SOURCES})
]
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
        # the regions and phases of the radiomics features (not the parameter file's path:
        # the file itself is in the bundle)
        "radiomics": json.loads(settings_json(FeatureSettings, config["radiomics"])),
    },
    sort_keys=True,
)


rule bundle:
    input:
        models=list(BUNDLE_SOURCES.values()),
        cutoffs=f"{RESULTS}/tables/cutoffs.csv",
        table2=f"{RESULTS}/tables/table2.csv",
        survival=f"{RESULTS}/tables/survival.csv",
        calibration=f"{RESULTS}/tables/calibration.csv",
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
        files=" ".join(
            f"{rel}={shlex_quote(src)}" for rel, src in BUNDLE_SOURCES.items()
        ),
        models=" ".join(BUNDLE_MODELS),
        cox=" ".join(COX_MODELS),
        settings=BUNDLE_SETTINGS,
        outdir=lambda wc, output: str(Path(output[0]).parent),
    shell:
        "python -m recur --threads {threads} bundle --file {params.files}"
        " --models {params.models} --cox-models {params.cox} --cutoffs {input.cutoffs:q}"
        " --table2 {input.table2:q} --survival {input.survival:q}"
        " --calibration {input.calibration:q} --settings {params.settings:q}"
        " --out {params.outdir:q} > {log:q} 2>&1"


FINAL_TARGETS.extend(BUNDLE_FILES)
