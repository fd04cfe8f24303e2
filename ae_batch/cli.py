"""``ae-batch <subcommand>``: one subcommand per Snakemake rule, plus tools for the researcher.

Each subcommand parses arguments and calls one typed function; imports stay inside the subcommands so
``ae-batch --help``, ``status`` and ``snakemake -n`` never pay for torch, Lightning or MLflow. Rules pass
their settings as a small JSON file whose name is a hash of its content (written by the workflow), so a
job's command line stays short and readable in Snakemake's error report.

``--log FILE`` sends the job's own output to FILE; an error is printed there *and* on the terminal, as
one line naming the file, column, subject or key at fault.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ae_batch.errors import AeBatchError


def _settings(path: str) -> dict[str, Any]:
    from ae_batch.io import read_json

    return read_json(path)


def _cmd_synthesize(a: argparse.Namespace) -> None:
    from ae_batch.stages.synthesize import synthesize

    synthesize(a.kind, a.out, **_settings(a.settings_file))


def _cmd_prepare(a: argparse.Namespace) -> None:
    from ae_batch.config import SplitsConfig
    from ae_batch.stages.prepare import prepare_dataset

    s = _settings(a.settings_file)
    prepare_dataset(a.dataset, s["entry"], SplitsConfig(**s["splits"]), a.out)


def _cmd_init(a: argparse.Namespace) -> None:
    from ae_batch.config import ModelConfig
    from ae_batch.stages.init import init_model

    digest = init_model(a.prepared, a.out, a.seed, ModelConfig.from_dict(_settings(a.settings_file)["model"]))
    print(f"initial state for seed {a.seed}: {a.out} (sha256 {digest[:12]})", file=sys.stderr)


def _cmd_train(a: argparse.Namespace) -> None:
    from ae_batch.stages.train import train_group

    train_group(a.spec, threads=a.threads, accelerator=a.accelerator)


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from ae_batch.stages.evaluate import evaluate_group

    evaluate_group(
        a.manifest, _settings(a.settings_file), a.siblings, threads=a.threads, accelerator=a.accelerator
    )


def _cmd_noise_init(a: argparse.Namespace) -> None:
    from ae_batch.config import ModelConfig, NoiseScaleConfig
    from ae_batch.stages.noise_init import noise_at_init

    s = _settings(a.settings_file)
    noise_at_init(
        a.prepared, a.inits, a.seeds, a.out, a.dataset, ModelConfig.from_dict(s["model"]), s["loss"],
        NoiseScaleConfig(**s["noise_scale"]), threads=a.threads,
    )  # fmt: skip


def _cmd_baselines(a: argparse.Namespace) -> None:
    from ae_batch.config import DownstreamConfig, ModelConfig
    from ae_batch.stages.baselines import compute_baselines

    s = _settings(a.settings_file)
    compute_baselines(
        a.prepared, a.out, a.dataset, ModelConfig.from_dict(s["model"]), DownstreamConfig(**s["downstream"])
    )


def _tracking_uri(s: dict[str, Any]) -> str:
    from ae_batch.config import resolve_tracking_uri

    return resolve_tracking_uri(s["tracking_uri"], os.getcwd())


def _cmd_track(a: argparse.Namespace) -> None:
    from ae_batch.stages.track import track_dataset

    s = _settings(a.settings_file)
    track_dataset(
        a.manifests, a.out, _tracking_uri(s), s["experiment"], s["study"], a.dataset, s["subject_ids"]
    )


def _cmd_aggregate(a: argparse.Namespace) -> None:
    from ae_batch.stages.aggregate import aggregate

    aggregate(a.manifests, a.baselines, a.noise, a.out, a.runs, config=_settings(a.settings_file)["config"])


def _cmd_figures(a: argparse.Namespace) -> None:
    from ae_batch.stages.figures import make_figures

    s = _settings(a.settings_file)
    make_figures(a.study_dir, s["prepared"], s.get("protocol_labels"))


def _cmd_publish(a: argparse.Namespace) -> None:
    from ae_batch.stages.publish import publish

    s = _settings(a.settings_file)
    publish(
        a.study_dir, _tracking_uri(s), s["experiment"], s["study"], s["prepared"], s["grid"], a.figures, a.out
    )


def _cmd_tracking_init(a: argparse.Namespace) -> None:
    from ae_batch.stages.tracking_init import init_tracking

    s = _settings(a.settings_file)
    init_tracking(_tracking_uri(s), s["experiment"], s["study"], s["datasets"], s["results"], s["salt_file"])


def _cmd_tracking_finish(a: argparse.Namespace) -> None:
    from ae_batch.stages.tracking_init import finish_tracking

    s = _settings(a.settings_file)
    finish_tracking(_tracking_uri(s), s["experiment"], s["study"], s["datasets"], a.status)


def _cmd_check_config(a: argparse.Namespace) -> None:
    import json

    from ae_batch.config import load_study_config

    print(json.dumps(load_study_config(a.configfile), indent=2))


def _cmd_check_data(a: argparse.Namespace) -> None:
    import shutil

    from ae_batch.config import load_study_config, study_config
    from ae_batch.workflow_support import check_datasets

    study = study_config(load_study_config(a.configfile))
    results = f"results/{study.study}"
    if a.no_cache:
        shutil.rmtree(f"{results}/.checks", ignore_errors=True)
    for summary in check_datasets(study, results, "data_synthetic"):
        splits = summary.get("n_per_split") or {}
        print(
            f"{summary['name']}: ok ({summary['kind']}, {summary['n_subjects']} subjects: "
            + ", ".join(f"{splits[s]} {s}" for s in ("train", "val", "test") if s in splits)
            + (f"; {summary['n_features']} features" if summary.get("n_features") else "")
            + (", cached" if summary.get("cached") else "")
            + ")"
        )


def _cmd_status(a: argparse.Namespace) -> None:
    from ae_batch.status import show_status

    show_status(a.configfile, watch=a.watch)


def _cmd_ui(a: argparse.Namespace) -> None:
    from ae_batch.ui import open_ui

    open_ui(a.configfile, port=a.port, serve=not a.print_only)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ae-batch", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(
        name: str, fn: Callable[[argparse.Namespace], None], help: str, job: bool = True
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=fn)
        if job:
            sp.add_argument(
                "--log", help="write the job's output to this file (errors also go to the terminal)"
            )
        return sp

    def torch_job(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
        sp.add_argument("--accelerator", default="auto", help="auto, cpu, gpu/cuda or mps")

    sp = add(
        "synthesize", _cmd_synthesize, "write a synthetic cohort (ehr or mri) with documented ground truth"
    )
    sp.add_argument("kind", choices=["ehr", "mri"])
    sp.add_argument("--out", required=True, help="output folder, e.g. data_synthetic/ehr")
    sp.add_argument("--settings-file", required=True, help='JSON: {"n_subjects": 2000, "seed": 7, ...}')

    sp = add("prepare", _cmd_prepare, "raw data → prepared features, subjects, splits")
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--settings-file", required=True, help='JSON: {"entry": {...}, "splits": {...}}')
    sp.add_argument("--out", required=True)

    sp = add("init", _cmd_init, "write the initial model state of one dataset × seed")
    sp.add_argument("--prepared", required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--settings-file", required=True, help='JSON: {"model": {...}}')
    sp.add_argument("--out", required=True)

    sp = add("train", _cmd_train, "train one group of members (seeds, learning rates) as one stacked model")
    sp.add_argument("--spec", required=True, help="the group's spec, <cell>/groups/<id>.spec.json")
    torch_job(sp)

    sp = add("evaluate", _cmd_evaluate, "evaluate every member of one trained group")
    sp.add_argument("--manifest", required=True, help="<cell>/groups/<id>.train.json")
    sp.add_argument("--siblings", nargs="*", default=[], help="train manifests of the cell's other groups")
    sp.add_argument("--settings-file", required=True)
    torch_job(sp)

    sp = add("noise-init", _cmd_noise_init, "gradient noise scale of every seed's initial state")
    sp.add_argument("--prepared", required=True)
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--seeds", type=int, nargs="+", required=True)
    sp.add_argument("--inits", nargs="+", required=True)
    sp.add_argument("--settings-file", required=True)
    sp.add_argument("--out", required=True)
    torch_job(sp)

    sp = add("baselines", _cmd_baselines, "downstream CV on raw features and PCA")
    sp.add_argument("--prepared", required=True)
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--settings-file", required=True)
    sp.add_argument("--out", required=True)

    sp = add("track", _cmd_track, "MLflow child runs of one dataset's members, from their files")
    sp.add_argument("--dataset", required=True)
    sp.add_argument(
        "--manifests", nargs="+", required=True, help="evaluation manifests of the dataset's groups"
    )
    sp.add_argument("--settings-file", required=True)
    sp.add_argument("--out", required=True)

    sp = add("aggregate", _cmd_aggregate, "members → summary, folds, baselines, noise scale, stats, verdict")
    sp.add_argument("--manifests", nargs="+", required=True, help="evaluation manifests of every group")
    sp.add_argument("--baselines", nargs="*", default=[])
    sp.add_argument("--noise", nargs="*", default=[])
    sp.add_argument("--runs", nargs="*", default=[], help="<dataset>/mlflow_runs.csv files")
    sp.add_argument("--settings-file", required=True)
    sp.add_argument("--out", required=True)

    sp = add("figures", _cmd_figures, "figures of a study from its tables and members")
    sp.add_argument("--study-dir", required=True, help="results/<study>")
    sp.add_argument("--settings-file", required=True)

    sp = add("publish", _cmd_publish, "MLflow parent runs: params, verdict metrics, tables, figures")
    sp.add_argument("--study-dir", required=True)
    sp.add_argument("--figures", nargs="*", default=[])
    sp.add_argument("--settings-file", required=True)
    sp.add_argument("--out", required=True)

    sp = add("tracking-init", _cmd_tracking_init, "create the MLflow experiment and parent runs (RUNNING)")
    sp.add_argument("--settings-file", required=True)
    sp = add("tracking-finish", _cmd_tracking_finish, "mark the study's parent runs FINISHED or FAILED")
    sp.add_argument("--settings-file", required=True)
    sp.add_argument("--status", choices=["FINISHED", "FAILED"], required=True)

    configfile_help = "your config file(s), merged on config/config.yaml as the workflow does"
    sp = add(
        "check-config", _cmd_check_config, "validate a config and print it resolved, with defaults", job=False
    )
    sp.add_argument("configfile", nargs="*", help=configfile_help)
    sp = add(
        "check-data",
        _cmd_check_data,
        "check every dataset of a config (fast; what the workflow does first)",
        job=False,
    )
    sp.add_argument("configfile", nargs="*", help=configfile_help)
    sp.add_argument("--no-cache", action="store_true", help="check again even where nothing changed")
    sp = add(
        "status", _cmd_status, "the study's grid: done, training (epoch, loss, ETA) or waiting", job=False
    )
    sp.add_argument("configfile", nargs="*", help=configfile_help)
    sp.add_argument("--watch", type=float, nargs="?", const=5.0, help="refresh every N seconds (default 5)")
    sp = add("ui", _cmd_ui, "open MLflow on the study's runs (starts `mlflow ui` on 127.0.0.1)", job=False)
    sp.add_argument("configfile", nargs="*", help=configfile_help)
    sp.add_argument("--port", type=int, default=5000)
    sp.add_argument("--print-only", action="store_true", help="print the link, start nothing")
    return p


@contextlib.contextmanager
def _output_to(log: str | None) -> Iterator[Any]:
    """Redirect this process's stderr (fd 2, so library output too) to ``log``; yield the terminal's."""
    if not log:
        yield sys.stderr
        return
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "a", buffering=1) as fh:
        os.dup2(fh.fileno(), 2)
        terminal = os.fdopen(os.dup(saved), "w", buffering=1)
        try:
            yield terminal
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            terminal.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = getattr(args, "log", None)
    with _output_to(log) as terminal:
        try:
            args.func(args)
        except AeBatchError as exc:
            message = f"ae-batch {args.command}: error: {exc}"
            print(message, file=sys.stderr, flush=True)
            if log:
                print(message + f"\n  (log: {log})", file=terminal, flush=True)
            return getattr(exc, "exit_code", 2)
        except Exception as exc:  # noqa: BLE001 - the traceback goes to the log, one line to the terminal
            traceback.print_exc()
            if log:
                print(
                    f"ae-batch {args.command}: unexpected {type(exc).__name__}: {exc} (traceback in {log})",
                    file=terminal,
                    flush=True,
                )
                return 1
            raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
