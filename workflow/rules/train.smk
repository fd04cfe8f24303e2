# One job trains every seed of one batch size (in one process, one after another): a job's start costs
# more than many grid points take to train. Each seed keeps its own folder, initial state and MLflow run.
rule train:
    input:
        prepared=f"{RESULTS}/{{dataset}}/prepared/meta.json",
        init=expand(f"{RESULTS}/{{{{dataset}}}}/init/seed{{seed}}.pt", seed=SEEDS),
    output:
        expand(
            f"{RESULTS}/{{{{dataset}}}}/bs{{{{batch_size}}}}/seed{{seed}}/{{name}}",
            seed=SEEDS,
            name=["model.pt", "history.csv", "train.json"],
        ),
    params:
        settings=run_settings,
        seeds=" ".join(map(str, SEEDS)),
        prepared=f"{RESULTS}/{{dataset}}/prepared",
        init_dir=f"{RESULTS}/{{dataset}}/init",
        batch_dir=f"{RESULTS}/{{dataset}}/bs{{batch_size}}",
    log:
        f"{LOGS}/train/{{dataset}}_bs{{batch_size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}_bs{{batch_size}}.tsv"
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=GPU_PER_JOB,
    shell:
        "{AE_BATCH} train --prepared {params.prepared:q} --init-dir {params.init_dir:q} "
        "--dataset {wildcards.dataset} --batch-size {wildcards.batch_size} --seeds {params.seeds} "
        "--threads {TRAIN_THREADS} --settings {params.settings:q} --batch-dir {params.batch_dir:q} 2> {log:q}"
