rule evaluate:
    input:
        prepared=f"{RESULTS}/{{dataset}}/prepared/meta.json",
        train=expand(f"{RESULTS}/{{{{dataset}}}}/bs{{{{batch_size}}}}/seed{{seed}}/train.json", seed=SEEDS),
    output:
        expand(
            f"{RESULTS}/{{{{dataset}}}}/bs{{{{batch_size}}}}/seed{{seed}}/{{name}}",
            seed=SEEDS,
            name=["eval.json", "per_subject.csv", "latents.npz", "folds.csv"],
        ),
    params:
        settings=evaluate_settings,
        seeds=" ".join(map(str, SEEDS)),
        prepared=f"{RESULTS}/{{dataset}}/prepared",
        batch_dir=f"{RESULTS}/{{dataset}}/bs{{batch_size}}",
    log:
        f"{LOGS}/evaluate/{{dataset}}_bs{{batch_size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}_bs{{batch_size}}.tsv"
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU_PER_JOB,
    shell:
        "{AE_BATCH} evaluate --prepared {params.prepared:q} --batch-dir {params.batch_dir:q} "
        "--seeds {params.seeds} --threads {TRAIN_THREADS} --settings {params.settings:q} 2> {log:q}"


rule baselines:
    input:
        f"{RESULTS}/{{dataset}}/prepared/meta.json",
    output:
        multiext(f"{RESULTS}/{{dataset}}/baselines/", "baselines.json", "baseline_folds.csv"),
    params:
        settings=baseline_settings,
        prepared=f"{RESULTS}/{{dataset}}/prepared",
        out=f"{RESULTS}/{{dataset}}/baselines",
    log:
        f"{LOGS}/baselines/{{dataset}}.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{AE_BATCH} baselines --prepared {params.prepared:q} --dataset {wildcards.dataset} "
        "--settings {params.settings:q} --out {params.out:q} 2> {log:q}"
