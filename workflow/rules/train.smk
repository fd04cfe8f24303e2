# One job per train group: the members of one dataset × protocol × batch size that need training,
# trained as one stacked model (see ae_batch/grid.py for how groups are formed, and why adding a seed,
# a batch size or a protocol trains only what is new).
rule train:
    input:
        unpack(train_inputs),
    output:
        f"{RESULTS}/{{dataset}}/{{protocol}}/bs{{batch_size}}/groups/{{group}}.train.json",
    params:
        spec=lambda w: group_path(group_of(w), "spec"),
    log:
        f"{LOGS}/train/{{dataset}}_{{protocol}}_bs{{batch_size}}_{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}_{{protocol}}_bs{{batch_size}}_{{group}}.tsv"
    threads: CPU_CLAIM
    resources:
        mem_mb=train_mem_mb,
        runtime=240,
        cpus_per_task=TRAIN_THREADS,
        gpu=GPU_PER_JOB,
    shell:
        "{AE_BATCH} train --spec {params.spec:q} --threads {TRAIN_THREADS} --accelerator {ACCELERATOR} "
        "--log {log:q}"


rule evaluate:
    input:
        manifest=f"{RESULTS}/{{dataset}}/{{protocol}}/bs{{batch_size}}/groups/{{group}}.train.json",
        siblings=sibling_manifests,
    output:
        f"{RESULTS}/{{dataset}}/{{protocol}}/bs{{batch_size}}/groups/{{group}}.eval.json",
    params:
        settings=EVALUATE_SETTINGS,
    log:
        f"{LOGS}/evaluate/{{dataset}}_{{protocol}}_bs{{batch_size}}_{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}_{{protocol}}_bs{{batch_size}}_{{group}}.tsv"
    threads: CPU_CLAIM
    resources:
        mem_mb=4000,
        runtime=120,
        cpus_per_task=TRAIN_THREADS,
        gpu=GPU_PER_JOB,
    shell:
        "{AE_BATCH} evaluate --manifest {input.manifest:q} --siblings {input.siblings:q} "
        "--settings-file {params.settings:q} --threads {TRAIN_THREADS} --accelerator {ACCELERATOR} "
        "--log {log:q}"
