# ae-batch: how does batch size change what an autoencoder learns from medical data?
# raw → prepare → init → train (stacked groups of members) → evaluate → track → aggregate → figures → publish
# The config is read in workflow/rules/common.smk: config/config.yaml, with your --configfile on top.
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synthesize.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"


# Light steps run where Snakemake runs (on a cluster: the login node), sparing them a queue wait.
localrules:
    all,
    track,
    aggregate,
    figures,
    publish,


onstart:
    check_executor(workflow, TRACKING_URI)  # the executor is known only now (not at parse time)
    study_lock.acquire()
    shell(f"{AE_BATCH} tracking-init --settings-file {TRACKING_INIT_SETTINGS}")


onsuccess:
    shell(f"{AE_BATCH} tracking-finish --settings-file {TRACKING_INIT_SETTINGS} --status FINISHED")
    study_lock.release()


onerror:
    shell(f"{AE_BATCH} tracking-finish --settings-file {TRACKING_INIT_SETTINGS} --status FAILED || true")
    study_lock.release()


rule all:
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/verdict.csv",
        f"{RESULTS}/noise_scale.csv",
        f"{RESULTS}/figures/metric_vs_batch_size",
        f"{RESULTS}/mlflow.json",
