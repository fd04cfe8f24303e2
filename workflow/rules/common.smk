# Setup done once: the config (default study + your --configfile, validated), a fast check of every
# dataset, the grid plan (which members train together), and the input functions the rules use.
# Nothing here imports torch, Lightning or MLflow.
import json
import os
import shlex
import shutil
import sys

from ae_batch.config import check_dataset_paths, load_study_config, study_config
from ae_batch.grid import (
    cells,
    group_file,
    plan_groups,
    prepared_key,
    sibling_groups,
    write_group_spec,
)
from ae_batch.lock import StudyLock
from ae_batch.training.protocols import protocol_label
from ae_batch.workflow_support import (
    check_datasets,
    check_executor,
    cpu_claim,
    settings_file,
)


# No `configfile:` directive: `config` holds only what you passed (--configfile/--config), and the
# default study is merged under it here, so that a config defining `datasets` or `protocols` runs
# exactly those (Snakemake's own merge would add them to the defaults).
CFG = load_study_config(user=config)
config.update(CFG)  # the report's templates read the resolved config
STUDY = study_config(CFG)
RESULTS = f"results/{STUDY.study}"
LOGS = f"{RESULTS}/logs"
SYNTHETIC_DIR = "data_synthetic"
DATASETS = sorted(STUDY.datasets)
PROTOCOLS = list(STUDY.protocols)
TRACKING_URI = CFG["mlflow"]["tracking_uri"]
EXPERIMENT = STUDY.experiment_name
TRAIN_THREADS = CFG["training"]["threads"]
ACCELERATOR = CFG["training"]["accelerator"]

check_dataset_paths(CFG, SYNTHETIC_DIR)
check_datasets(STUDY, RESULTS, SYNTHETIC_DIR)

# --cores above this machine's CPUs (the README's `--cores 8` on a 2-core laptop): each job claims a
# proportional share so no more jobs run at once than the CPUs serve. `cpus_per_task` (what a cluster
# job asks for) is always what a job uses.
CPU_CLAIM = cpu_claim(workflow, TRAIN_THREADS)
_NVIDIA = os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None
GPU_PER_JOB = 1 if ACCELERATOR in ("gpu", "cuda") or (ACCELERATOR == "auto" and _NVIDIA) else 0

# The package's CLI run by the same interpreter as Snakemake: works without an activated environment.
AE_BATCH = f"{shlex.quote(sys.executable)} -m ae_batch"
SALT_FILE = f"{RESULTS}/.subject_id_salt"
study_lock = StudyLock()  # taken in onstart, released in onsuccess/onerror (see ae_batch/lock.py)

# --- the grid ---------------------------------------------------------------------------------------
PREPARED = {d: prepared_key(STUDY, d) for d in DATASETS}
PREPARED_KEYS = sorted(set(PREPARED.values()))
GROUPS = plan_groups(STUDY, RESULTS)
GROUP_BY_ID = {(g.dataset, g.protocol, g.batch_size, g.id): g for g in GROUPS}
for _g in GROUPS:
    write_group_spec(STUDY, RESULTS, _g)


wildcard_constraints:
    dataset="|".join(DATASETS),
    protocol="|".join(PROTOCOLS),
    batch_size=r"\d+",
    seed=r"\d+",
    group=r"g[0-9a-f]{10}",


def prepared_dir(dataset):
    return f"{RESULTS}/{PREPARED[dataset]}/prepared"


def dataset_inputs(dataset):
    """The files a dataset is prepared from (synthetic ones are made by the synthesize rules)."""
    entry = STUDY.datasets[dataset]
    keys = {"events": ["events", "subjects", "code_map"], "tabular": ["path"], "mri": ["path", "subjects"]}
    paths = [os.path.normpath(entry[k]) for k in keys[entry["kind"]] if entry.get(k)]
    if entry["kind"] == "mri" and paths[0] == os.path.join(SYNTHETIC_DIR, "mri"):
        paths[0] = os.path.join(SYNTHETIC_DIR, "mri", "subjects.csv")
    return paths


def train_mem_mb(wildcards):
    """A train job's memory: the data (features.npy, twice: file and tensors) plus ~200 MB per member."""
    group = group_of(wildcards)
    features = f"{prepared_dir(group.dataset)}/features.npy"
    data_mb = os.path.getsize(features) / 2**20 if os.path.exists(features) else 500
    return int(1500 + 2 * data_mb + 200 * len(group.members))


def group_of(wildcards):
    return GROUP_BY_ID[(wildcards.dataset, wildcards.protocol, int(wildcards.batch_size), wildcards.group)]


def group_path(group, suffix):
    return str(group_file(RESULTS, group.cell, group.id, suffix))


def train_inputs(wildcards):
    group = group_of(wildcards)
    return {
        "prepared": f"{prepared_dir(group.dataset)}/meta.json",
        "init": [f"{RESULTS}/{group.dataset}/init/seed{s}.pt" for s in group.seeds],
    }


def sibling_manifests(wildcards):
    group = group_of(wildcards)
    return [group_path(g, "train") for g in sibling_groups(GROUPS, group)]


def eval_manifests(dataset=None):
    return [group_path(g, "eval") for g in GROUPS if dataset is None or g.dataset == dataset]


# --- settings files: small JSON files named by their content's hash (a job's params) -----------------
def prepare_settings(wildcards):
    entry = STUDY.datasets[wildcards.dataset]
    entry = {k: v for k, v in entry.items() if k not in ("model", "protocols")}
    return settings_file(RESULTS, "prepare", {"entry": entry, "splits": CFG["splits"]})


def model_settings(wildcards):
    return settings_file(RESULTS, "model", {"model": STUDY.model_for(wildcards.dataset).__dict__})


EVALUATE_SETTINGS = settings_file(RESULTS, "evaluate", {"downstream": CFG["downstream"], "noise_scale": CFG["noise_scale"]})


def noise_settings(wildcards):
    model = STUDY.model_for(wildcards.dataset).__dict__
    return settings_file(RESULTS, "noise", {"model": model, "loss": CFG["training"]["loss"], "noise_scale": CFG["noise_scale"]})


def baseline_settings(wildcards):
    model = STUDY.model_for(wildcards.dataset).__dict__
    return settings_file(RESULTS, "baselines", {"model": model, "downstream": CFG["downstream"]})


TRACKING = {"tracking_uri": TRACKING_URI, "experiment": EXPERIMENT, "study": STUDY.study}
TRACK_SETTINGS = settings_file(
    RESULTS,
    "track",
    {**TRACKING, "subject_ids": {"log_raw": CFG["mlflow"]["log_subject_ids"], "salt_file": SALT_FILE}},
)
AGGREGATE_SETTINGS = settings_file(RESULTS, "aggregate", {"config": CFG})
FIGURE_SETTINGS = settings_file(
    RESULTS,
    "figures",
    {
        "prepared": {d: prepared_dir(d) for d in DATASETS},
        "protocol_labels": {p: protocol_label(p, STUDY.protocols[p], STUDY.training.max_epochs) for p in PROTOCOLS},
    },
)
PUBLISH_SETTINGS = settings_file(
    RESULTS,
    "publish",
    {
        **TRACKING,
        "prepared": {d: prepared_dir(d) for d in DATASETS},
        "grid": {"batch_sizes": STUDY.batch_sizes, "seeds": STUDY.seeds, "protocols": STUDY.protocols},
    },
)
TRACKING_INIT_SETTINGS = settings_file(
    RESULTS, "tracking", {**TRACKING, "datasets": DATASETS, "results": RESULTS, "salt_file": SALT_FILE}
)
