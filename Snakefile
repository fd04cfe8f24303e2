# ae-batch: how does batch size change what an autoencoder learns from medical data?
# raw → prepare → init → train (each batch size × seed) → evaluate → baselines → aggregate
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synthesize.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"


onstart:
    shell(TRACKING_INIT_CMD)


rule all:
    input:
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/stats.csv",
        f"{RESULTS}/baselines.csv",
        f"{RESULTS}/config.resolved.yaml",
        f"{RESULTS}/figures/metric_vs_batch_size",
