# Datasets that read the same data with the same preprocessing share one prepared folder (PREPARED).
rule prepare:
    input:
        lambda w: dataset_inputs(w.dataset),
    output:
        multiext(f"{RESULTS}/{{dataset}}/prepared/", "features.npy", "subjects.csv", "meta.json"),
    params:
        settings=prepare_settings,
    log:
        f"{LOGS}/prepare/{{dataset}}.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=60,
        cpus_per_task=TRAIN_THREADS,
    shell:
        "{AE_BATCH} prepare --dataset {wildcards.dataset} --settings-file {params.settings:q} "
        "--out {RESULTS}/{wildcards.dataset}/prepared --log {log:q}"


rule init:
    input:
        lambda w: f"{prepared_dir(w.dataset)}/meta.json",
    output:
        f"{RESULTS}/{{dataset}}/init/seed{{seed}}.pt",
    params:
        settings=model_settings,
        prepared=lambda w: prepared_dir(w.dataset),
    log:
        f"{LOGS}/init/{{dataset}}_seed{{seed}}.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=2000,
        runtime=10,
        cpus_per_task=TRAIN_THREADS,
    shell:
        "{AE_BATCH} init --prepared {params.prepared:q} --seed {wildcards.seed} "
        "--settings-file {params.settings:q} --out {output:q} --log {log:q}"
