rule synthesize_ehr:
    output:
        multiext(f"{SYNTHETIC_DIR}/ehr/", "events.csv", "subjects.csv", "code_map.csv", "tabular.csv"),
    params:
        settings=json.dumps(CFG["synthetic"]["ehr"], sort_keys=True),
    log:
        f"{LOGS}/synthesize_ehr.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{AE_BATCH} synthesize ehr --out {SYNTHETIC_DIR}/ehr --settings {params.settings:q} 2> {log:q}"


rule synthesize_mri:
    output:
        f"{SYNTHETIC_DIR}/mri/subjects.csv",
    params:
        settings=json.dumps(CFG["synthetic"]["mri"], sort_keys=True),
    log:
        f"{LOGS}/synthesize_mri.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{AE_BATCH} synthesize mri --out {SYNTHETIC_DIR}/mri --settings {params.settings:q} 2> {log:q}"
