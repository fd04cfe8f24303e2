rule prepare:
    input:
        dataset_inputs,
    output:
        multiext(f"{RESULTS}/{{dataset}}/prepared/", "features.npy", "subjects.csv", "meta.json"),
    params:
        settings=prepare_settings,
        out=f"{RESULTS}/{{dataset}}/prepared",
    log:
        f"{LOGS}/prepare/{{dataset}}.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{AE_BATCH} prepare --dataset {wildcards.dataset} --settings {params.settings:q} "
        "--max-batch-size {MAX_BATCH_SIZE} --out {params.out:q} 2> {log:q}"


rule init:
    input:
        f"{RESULTS}/{{dataset}}/prepared/meta.json",
    output:
        f"{RESULTS}/{{dataset}}/init/seed{{seed}}.pt",
    params:
        settings=model_settings,
        prepared=f"{RESULTS}/{{dataset}}/prepared",
    log:
        f"{LOGS}/init/{{dataset}}_seed{{seed}}.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{AE_BATCH} init --prepared {params.prepared:q} --seed {wildcards.seed} "
        "--settings {params.settings:q} --out {output:q} 2> {log:q}"
