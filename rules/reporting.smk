# Study reporting: QC exclusions, Figure 1 (enrolment flow), Table S1 (MRI acquisition),
# TRIPOD+AI checklist (docs/guide/reporting.md).

REPORTING_CAT = "1 Cohort and reporting"


# Every patient's crops file is real data or an exclusion placeholder (qc.on_failure
# 'exclude'); this checkpoint lists the placeholders so that the split and every cohort-level
# rule leave those patients out.
checkpoint qc_exclusions:
    input:
        expand(f"{RESULTS}/crops/{{patient}}.npz", patient=PATIENTS),
    output:
        report(
            QC_EXCLUSIONS,
            caption="../report/reporting_exclusions.rst",
            category="6 QC",
            subcategory="Exclusions",
            labels={"table": "patients excluded by QC"},
        ),
    log:
        f"{LOGS}/qc_exclusions/qc_exclusions.log",
    benchmark:
        f"{BENCH}/qc_exclusions/qc_exclusions.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python -m recur --threads {threads} qc-exclusions --crops {input:q}"
        " --out {output:q} > {log:q} 2>&1"


rule figure1:
    input:
        patients=f"{RESULTS}/cohort/patients.csv",
        split=f"{RESULTS}/splits/split.csv",
        qc=QC_EXCLUSIONS,
    output:
        csv=f"{RESULTS}/tables/figure1_flow.csv",
        png=report(
            f"{RESULTS}/figures/figure1.png",
            caption="../report/reporting_figure1.rst",
            category=REPORTING_CAT,
            labels={"figure": "Figure 1: enrolment flow"},
        ),
        pdf=f"{RESULTS}/figures/figure1.pdf",
    log:
        f"{LOGS}/figure1/figure1.log",
    benchmark:
        f"{BENCH}/figure1/figure1.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        excluded=" ".join(
            shlex_quote(f"{r.patient_id}={r.reason}")
            for r in CONFIG_EXCLUDED.itertuples()
        ),
    shell:
        "python -m recur --threads {threads} figure1 --patients {input.patients:q}"
        " --config-exclusion {params.excluded} --qc-exclusions {input.qc:q}"
        " --split {input.split:q} --csv {output.csv:q} --png {output.png:q}"
        " --pdf {output.pdf:q} > {log:q} 2>&1"


rule table_s1:
    input:
        patients=f"{RESULTS}/cohort/patients.csv",
        acquisition=expand(
            f"{RESULTS}/nifti/{{patient}}/{{timepoint}}/acquisition.json",
            patient=PATIENTS,
            timepoint=TIMEPOINTS,
        ),
    output:
        csv=f"{RESULTS}/tables/table_s1.csv",
        md=f"{RESULTS}/tables/table_s1.md",
        html=report(
            f"{RESULTS}/tables/table_s1.html",
            caption="../report/reporting_table_s1.rst",
            category=REPORTING_CAT,
            labels={"table": "Table S1: MRI acquisition parameters"},
        ),
    log:
        f"{LOGS}/table_s1/table_s1.log",
    benchmark:
        f"{BENCH}/table_s1/table_s1.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m recur --threads {threads} table-s1 --patients {input.patients:q}"
        " --acquisition {input.acquisition:q} --csv {output.csv:q} --md {output.md:q}"
        " --html {output.html:q} > {log:q} 2>&1"


rule tripod:
    input:
        cohort=cohort_input("clinical"),
        split=f"{RESULTS}/splits/split.csv",
        flow=rules.figure1.output.csv,
        table2=f"{RESULTS}/tables/table2.csv",
        calibration=f"{RESULTS}/tables/calibration.csv",
    output:
        md=f"{RESULTS}/tables/tripod_ai.md",
        html=report(
            f"{RESULTS}/tables/tripod_ai.html",
            caption="../report/reporting_tripod.rst",
            category=REPORTING_CAT,
            labels={"table": "TRIPOD+AI checklist"},
        ),
    log:
        f"{LOGS}/tripod/tripod.log",
    benchmark:
        f"{BENCH}/tripod/tripod.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        clinical=clinical_csv,
        # the study design the checklist describes: the sections it reads, as one JSON
        settings=section_json(
            {
                name: config[name]
                for name in (
                    "split",
                    "clinical",
                    "dl_clinical",
                    "qc",
                    "train",
                    "margin",
                )
            }
        ),
    shell:
        "python -m recur --threads {threads} tripod --clinical {params.clinical:q}"
        " --split {input.split:q} --flow {input.flow:q} --table2 {input.table2:q}"
        " --calibration {input.calibration:q} --settings {params.settings:q}"
        " --md {output.md:q} --html {output.html:q} > {log:q} 2>&1"


FINAL_TARGETS.extend(
    [
        QC_EXCLUSIONS,
        *rules.figure1.output,
        *rules.table_s1.output,
        *rules.tripod.output,
    ]
)


# The report shows the QC pictures of the flagged patients and a small sample of the others
# (recur.constants.REPORT_MONTAGE_SAMPLE); every patient's picture stays in results/qc/crops/
# and results/margin/<patient>/ (a report with all of them weighs tens of MB).
rule report_montages:
    input:
        crops_qc=f"{RESULTS}/qc/crops.csv",
        exclusions=QC_EXCLUSIONS,
        pictures=expand(f"{RESULTS}/qc/crops/{{patient}}.png", patient=PATIENTS),
    output:
        report(
            directory(f"{RESULTS}/report/crops"),
            patterns=["{patient}.jpg"],
            caption="../report/preprocess_crop_montage.rst",
            category="6 QC",
            subcategory="Crops (flagged patients and a sample)",
            labels={"patient": "{patient}", "figure": "crops"},
        ),
    log:
        f"{LOGS}/report_montages/report_montages.log",
    benchmark:
        f"{BENCH}/report_montages/report_montages.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python -m recur --threads {threads} report-montages --crops-qc {input.crops_qc:q}"
        " --exclusions {input.exclusions:q} --pictures {input.pictures:q}"
        " --outdir {output:q} > {log:q} 2>&1"


if MARGIN["enabled"]:

    rule report_margin_qc:
        input:
            crops_qc=f"{RESULTS}/qc/crops.csv",
            exclusions=QC_EXCLUSIONS,
            pictures=lambda wc: expand(
                f"{MARGIN_DIR}/{{patient}}/qc.png", patient=included_patients(wc)
            ),
        output:
            report(
                directory(f"{RESULTS}/report/margin_qc"),
                patterns=["{patient}.jpg"],
                caption="../report/margin_qc.rst",
                category=MARGIN_CAT,
                subcategory="Registration QC (flagged patients and a sample)",
                labels={"patient": "{patient}", "figure": "post-to-pre registration"},
            ),
        log:
            f"{LOGS}/report_margin_qc/report_margin_qc.log",
        benchmark:
            f"{BENCH}/report_margin_qc/report_margin_qc.tsv"
        conda:
            "../envs/stats.yaml"
        threads: 1
        resources:
            mem_mb=500,
            runtime=5,
        shell:
            "python -m recur --threads {threads} report-montages --by-folder"
            " --crops-qc {input.crops_qc:q} --exclusions {input.exclusions:q}"
            " --pictures {input.pictures:q} --outdir {output:q} > {log:q} 2>&1"

    FINAL_TARGETS.append(rules.report_margin_qc.output[0])


# The front page of the HTML report (report/workflow.rst includes it): the headline, Table 1
# and Table 2 inline, Figure 1 and the key external figures, the QC-flagged patients.
rule report_front:
    input:
        table1=f"{TABLES}/table1.csv",
        table2=f"{TABLES}/table2.csv",
        table2_html=f"{TABLES}/table2.html",
        delong=f"{TABLES}/delong.csv",
        crops_qc=f"{RESULTS}/qc/crops.csv",
        exclusions=QC_EXCLUSIONS,
        figure1=f"{RESULTS}/figures/figure1.png",
        roc=f"{FIGURES}/roc/external.png",
        dca=f"{FIGURES}/dca/external.png",
        km=f"{FIGURES}/km/external.png",
    output:
        f"{RESULTS}/report/front.html",
    log:
        f"{LOGS}/report_front/report_front.log",
    benchmark:
        f"{BENCH}/report_front/report_front.tsv"
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        figures=lambda wildcards, input: " ".join(
            shlex_quote(f"{title}={path}")
            for title, path in (
                ("Figure 1: enrolment flow", input.figure1),
                ("ROC curves, external test patients", input.roc),
                ("Decision curves, external test patients", input.dca),
                ("Kaplan-Meier by risk group, external test patients", input.km),
            )
        ),
    shell:
        "python -m recur --threads {threads} report-front --table1 {input.table1:q}"
        " --table2 {input.table2:q} --table2-html {input.table2_html:q}"
        " --delong {input.delong:q} --crops-qc {input.crops_qc:q}"
        " --exclusions {input.exclusions:q} --figure {params.figures}"
        " --out {output:q} > {log:q} 2>&1"


FINAL_TARGETS.extend([rules.report_montages.output[0], rules.report_front.output[0]])
