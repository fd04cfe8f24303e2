# MLflow children (per dataset), the study's tables, figures, and the parents' summary in MLflow.
rule track:
    input:
        lambda w: eval_manifests(w.dataset),
    output:
        f"{RESULTS}/{{dataset}}/mlflow_runs.csv",
    params:
        settings=TRACK_SETTINGS,
    log:
        f"{LOGS}/track/{{dataset}}.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=2000,
        runtime=30,
        cpus_per_task=1,
    shell:
        "{AE_BATCH} track --dataset {wildcards.dataset} --manifests {input:q} "
        "--settings-file {params.settings:q} --out {output:q} --log {log:q}"


rule aggregate:
    input:
        manifests=eval_manifests(),
        baselines=expand(f"{RESULTS}/{{dataset}}/baselines/baselines.json", dataset=DATASETS),
        noise=expand(f"{RESULTS}/{{dataset}}/init/noise_scale.csv", dataset=DATASETS),
        runs=expand(f"{RESULTS}/{{dataset}}/mlflow_runs.csv", dataset=DATASETS),
    output:
        summary=report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Tables"),
        verdict=report(f"{RESULTS}/verdict.csv", caption="../report/verdict.rst", category="Tables"),
        survival=report(
            f"{RESULTS}/verdict_vs_paper.csv", caption="../report/verdict_vs_paper.rst", category="Tables"
        ),
        stats=report(f"{RESULTS}/stats.csv", caption="../report/stats.rst", category="Tables"),
        noise=report(f"{RESULTS}/noise_scale.csv", caption="../report/noise_scale.rst", category="Tables"),
        baselines=report(f"{RESULTS}/baselines.csv", caption="../report/baselines.rst", category="Tables"),
        folds=f"{RESULTS}/folds.csv",
        config=report(f"{RESULTS}/config.resolved.yaml", caption="../report/config.rst", category="Tables"),
    params:
        settings=AGGREGATE_SETTINGS,
    log:
        f"{LOGS}/aggregate.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=30,
        cpus_per_task=1,
    shell:
        "{AE_BATCH} aggregate --manifests {input.manifests:q} --baselines {input.baselines:q} "
        "--noise {input.noise:q} --runs {input.runs:q} --settings-file {params.settings:q} "
        "--out {RESULTS} --log {log:q}"


rule figures:
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/baselines.csv",
        f"{RESULTS}/noise_scale.csv",
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
        settings=FIGURE_SETTINGS,
    log:
        f"{LOGS}/figures.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=30,
        cpus_per_task=1,
    shell:
        "{AE_BATCH} figures --study-dir {RESULTS} --settings-file {params.settings:q} --log {log:q}"


rule publish:
    input:
        tables=rules.aggregate.output,
        figures=rules.figures.output,
    output:
        f"{RESULTS}/mlflow.json",
    params:
        settings=PUBLISH_SETTINGS,
    log:
        f"{LOGS}/publish.log",
    threads: CPU_CLAIM
    resources:
        mem_mb=2000,
        runtime=30,
        cpus_per_task=1,
    shell:
        "{AE_BATCH} publish --study-dir {RESULTS} --figures {input.figures:q} "
        "--settings-file {params.settings:q} --out {output:q} --log {log:q}"
