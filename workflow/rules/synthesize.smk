rule synthesize_ehr:
    output:
        multiext(f"{SYNTHETIC_DIR}/ehr/", "events.csv", "subjects.csv", "code_map.csv", "tabular.csv"),
    params:
        settings=settings_file(RESULTS, "synthetic-ehr", CFG["synthetic"]["ehr"]),
    log:
        f"{LOGS}/synthesize_ehr.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=2000,
        runtime=10,
        cpus_per_task=1,
    shell:
        "{AE_BATCH} synthesize ehr --out {SYNTHETIC_DIR}/ehr --settings-file {params.settings:q} --log {log:q}"


rule synthesize_mri:
    output:
        f"{SYNTHETIC_DIR}/mri/subjects.csv",
    params:
        settings=settings_file(RESULTS, "synthetic-mri", CFG["synthetic"]["mri"]),
    log:
        f"{LOGS}/synthesize_mri.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=2000,
        runtime=10,
        cpus_per_task=1,
    shell:
        "{AE_BATCH} synthesize mri --out {SYNTHETIC_DIR}/mri --settings-file {params.settings:q} --log {log:q}"
