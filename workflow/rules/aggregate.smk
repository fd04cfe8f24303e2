rule aggregate:
    input:
        evals=expand("{run}/eval.json", run=grid_dirs()),
        baselines=expand(f"{RESULTS}/{{dataset}}/baselines/baselines.json", dataset=DATASETS),
    output:
        multiext(f"{RESULTS}/", "summary.csv", "stats.csv", "baselines.csv", "folds.csv"),
    params:
        runs=grid_dirs(),
        settings=json.dumps({"study": STUDY, "tracking_uri": TRACKING_URI}, sort_keys=True),
    log:
        f"{LOGS}/aggregate.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{AE_BATCH} aggregate --runs {params.runs:q} --baselines {input.baselines:q} "
        "--settings {params.settings:q} --out {RESULTS} 2> {log:q}"
