rule train:
    input:
        prepared=f"{RESULTS}/{{dataset}}/prepared/meta.json",
        init=f"{RESULTS}/{{dataset}}/init/seed{{seed}}.pt",
    output:
        multiext(f"{RESULTS}/{{dataset}}/bs{{batch_size}}/seed{{seed}}/", "model.pt", "history.csv", "train.json"),
    params:
        settings=run_settings,
        prepared=f"{RESULTS}/{{dataset}}/prepared",
        out=f"{RESULTS}/{{dataset}}/bs{{batch_size}}/seed{{seed}}",
    log:
        f"{LOGS}/train/{{dataset}}_bs{{batch_size}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}_bs{{batch_size}}_seed{{seed}}.tsv"
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=GPU_PER_JOB,
    shell:
        "{AE_BATCH} train --prepared {params.prepared:q} --init {input.init:q} --dataset {wildcards.dataset} "
        "--batch-size {wildcards.batch_size} --seed {wildcards.seed} --threads {TRAIN_THREADS} "
        "--settings {params.settings:q} --out {params.out:q} 2> {log:q}"
