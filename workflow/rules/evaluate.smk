rule noise_init:
    input:
        prepared=lambda w: f"{prepared_dir(w.dataset)}/meta.json",
        inits=expand(f"{RESULTS}/{{{{dataset}}}}/init/seed{{seed}}.pt", seed=STUDY.seeds),
    output:
        f"{RESULTS}/{{dataset}}/init/noise_scale.csv",
    params:
        settings=noise_settings,
        prepared=lambda w: prepared_dir(w.dataset),
        seeds=" ".join(map(str, STUDY.seeds)),
    log:
        f"{LOGS}/noise_init/{{dataset}}.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=60,
        cpus_per_task=TRAIN_THREADS,
    shell:
        "{AE_BATCH} noise-init --prepared {params.prepared:q} --dataset {wildcards.dataset} "
        "--seeds {params.seeds} --inits {input.inits:q} --settings-file {params.settings:q} "
        "--threads {TRAIN_THREADS} --out {output:q} --log {log:q}"


rule baselines:
    input:
        lambda w: f"{prepared_dir(w.dataset)}/meta.json",
    output:
        multiext(f"{RESULTS}/{{dataset}}/baselines/", "baselines.json", "baseline_folds.csv"),
    params:
        settings=baseline_settings,
        prepared=lambda w: prepared_dir(w.dataset),
    log:
        f"{LOGS}/baselines/{{dataset}}.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=30,
        cpus_per_task=TRAIN_THREADS,
    shell:
        "{AE_BATCH} baselines --prepared {params.prepared:q} --dataset {wildcards.dataset} "
        "--settings-file {params.settings:q} --out {RESULTS}/{wildcards.dataset}/baselines --log {log:q}"
