# Setup done once: validate the config (ae_batch.config: schema, defaults, paths), pick the datasets,
# and define the input functions the rules use. Nothing here imports torch, Lightning or MLflow.
import json
import os
import shlex
import shutil
import sys

import yaml

from ae_batch.config import resolve_config, check_dataset_paths


# A --configfile that defines `datasets` runs exactly those datasets (Snakemake would otherwise merge
# them into the default synthetic ones).
for _path in workflow.overwrite_configfiles:
    with open(_path) as _fh:
        _user = yaml.safe_load(_fh) or {}
    if "datasets" in _user:
        config["datasets"] = _user["datasets"]

SYNTHETIC_DIR = os.path.abspath("data_synthetic")
CFG = resolve_config(config, base_dir=os.getcwd())
check_dataset_paths(CFG, SYNTHETIC_DIR)

STUDY = CFG["study"]
RESULTS = f"results/{STUDY}"
LOGS = f"{RESULTS}/logs"
DATASETS = sorted(CFG["datasets"])
BATCH_SIZES = CFG["batch_sizes"]
SEEDS = CFG["seeds"]
TRACKING_URI = CFG["mlflow"]["tracking_uri"]
TRAIN_THREADS = CFG["training"]["threads"]
# Each job runs torch with `training.threads` threads. When --cores exceeds this machine's CPUs (the
# README's `--cores 8` on a 2-core laptop), every job claims a proportional share of the cores so that
# no more jobs run at once than the CPUs can serve; on a cluster (non-local execution) a job claims what
# it uses.
LOCAL_CPUS = os.cpu_count() or 1
_CORES = workflow.global_resources.get("_cores")
_CORES = _CORES.value if hasattr(_CORES, "value") else _CORES
if workflow.local_exec and isinstance(_CORES, int) and _CORES > LOCAL_CPUS:
    CPU_CLAIM = max(TRAIN_THREADS, -(-_CORES * TRAIN_THREADS // LOCAL_CPUS))
else:
    CPU_CLAIM = TRAIN_THREADS
# Train/evaluate jobs hold a `gpu` resource where they will use one, so that `--resources gpu=N` (the
# default profile says 1) keeps several jobs from sharing one GPU. `auto` uses CUDA where a driver is
# present; looking for it here costs nothing (no torch import at DAG-build time).
_NVIDIA = os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None
_ACCELERATOR = CFG["training"]["accelerator"]
GPU_PER_JOB = 1 if _ACCELERATOR in ("gpu", "cuda") or (_ACCELERATOR == "auto" and _NVIDIA) else 0
MAX_BATCH_SIZE = max(BATCH_SIZES)

# The package's CLI run by the same interpreter as Snakemake: works without an activated environment.
AE_BATCH = f"{shlex.quote(sys.executable)} -m ae_batch"
# A random salt, made once per study (by tracking-init, before any job), for the hashed subject ids of
# per-subject tables sent to MLflow; raw ids go there only with mlflow.log_subject_ids: true.
SALT_FILE = f"{RESULTS}/.subject_id_salt"
TRACKING_INIT_CMD = (
    f"{AE_BATCH} tracking-init --tracking-uri {shlex.quote(TRACKING_URI)} --study {shlex.quote(STUDY)} "
    f"--datasets {' '.join(shlex.quote(d) for d in DATASETS)} --salt-file {shlex.quote(SALT_FILE)}"
)


wildcard_constraints:
    dataset="|".join(DATASETS),
    batch_size=r"\d+",
    seed=r"\d+",


def _entry(wildcards):
    return CFG["datasets"][wildcards.dataset]


def dataset_inputs(wildcards):
    """The files a dataset is prepared from (synthetic ones are made by the synthesize rules)."""
    entry = _entry(wildcards)
    keys = {"events": ["events", "subjects", "code_map"], "tabular": ["path"], "mri": ["path", "subjects"]}
    paths = [entry[k] for k in keys[entry["kind"]] if entry.get(k)]
    if entry["kind"] == "mri" and paths[0] == os.path.join(SYNTHETIC_DIR, "mri"):
        paths[0] = os.path.join(SYNTHETIC_DIR, "mri", "subjects.csv")
    return paths


def prepare_settings(wildcards):
    return json.dumps({"entry": _entry(wildcards), "splits": CFG["splits"]}, sort_keys=True)


def model_settings(wildcards):
    from ae_batch.config import study_config

    model = study_config(CFG).model_for(wildcards.dataset)
    return json.dumps({"model": model.__dict__}, sort_keys=True)


def run_settings(wildcards):
    """Everything a train/evaluate job uses; a change here reruns exactly the affected jobs."""
    settings = json.loads(model_settings(wildcards))
    settings.update(
        training=CFG["training"],
        downstream=CFG["downstream"],
        study=STUDY,
        tracking_uri=TRACKING_URI,
    )
    return json.dumps(settings, sort_keys=True)


def evaluate_settings(wildcards):
    settings = json.loads(run_settings(wildcards))
    settings["subject_ids"] = {"log_raw": CFG["mlflow"]["log_subject_ids"], "salt_file": SALT_FILE}
    return json.dumps(settings, sort_keys=True)


def baseline_settings(wildcards):
    settings = json.loads(model_settings(wildcards))
    settings["downstream"] = CFG["downstream"]
    return json.dumps(settings, sort_keys=True)


def grid_dirs():
    return [
        f"{RESULTS}/{d}/bs{b}/seed{s}" for d in DATASETS for b in BATCH_SIZES for s in SEEDS
    ]
