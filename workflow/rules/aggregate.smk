rule aggregate:
    input:
        evals=expand("{run}/eval.json", run=grid_dirs()),
        baselines=expand(f"{RESULTS}/{{dataset}}/baselines/baselines.json", dataset=DATASETS),
    output:
        summary=report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Tables"),
        stats=report(f"{RESULTS}/stats.csv", caption="../report/stats.rst", category="Tables"),
        baselines=report(f"{RESULTS}/baselines.csv", caption="../report/baselines.rst", category="Tables"),
        folds=f"{RESULTS}/folds.csv",
        config=report(f"{RESULTS}/config.resolved.yaml", caption="../report/config.rst", category="Tables"),
    params:
        runs=grid_dirs(),
        settings=json.dumps({"study": STUDY, "tracking_uri": TRACKING_URI, "config": CFG}, sort_keys=True),
    log:
        f"{LOGS}/aggregate.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{AE_BATCH} aggregate --runs {params.runs:q} --baselines {input.baselines:q} "
        "--settings {params.settings:q} --out {RESULTS} 2> {log:q}"


rule figures:
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/baselines.csv",
    output:
        report(
            directory(f"{RESULTS}/figures/metric_vs_batch_size"),
            patterns=["{name}.png"],
            caption="../report/metric_vs_batch_size.rst",
            category="Metrics vs batch size",
        ),
        report(
            directory(f"{RESULTS}/figures/learning_curves"),
            patterns=["{name}.png"],
            caption="../report/learning_curves.rst",
            category="Learning curves",
        ),
        report(
            directory(f"{RESULTS}/figures/latent_projections"),
            patterns=["{name}.png"],
            caption="../report/latent_projections.rst",
            category="Latent projections",
        ),
        report(
            directory(f"{RESULTS}/figures/recon_loss_distributions"),
            patterns=["{name}.png"],
            caption="../report/recon_loss_distributions.rst",
            category="Reconstruction loss per subject",
        ),
    params:
        settings=json.dumps({"study": STUDY, "tracking_uri": TRACKING_URI}, sort_keys=True),
    log:
        f"{LOGS}/figures.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{AE_BATCH} figures --study-dir {RESULTS} --settings {params.settings:q} 2> {log:q}"
