"""``ae-batch <subcommand>``: one subcommand per Snakemake rule, each a thin wrapper over a stage function.

Imports stay inside the subcommands so ``ae-batch --help`` and ``snakemake -n`` never pay for torch,
Lightning or MLflow. Settings arrive as JSON (``--settings``) from the rule's params, so Snakemake reruns a
job exactly when a setting it uses changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ae_batch.errors import AeBatchError


def _settings(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--settings is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--settings must be a JSON object")
    return value


def _cmd_synthesize(a: argparse.Namespace) -> None:
    from ae_batch.stages.synthesize import synthesize

    extra = a.settings or {}
    synthesize(a.kind, a.out, **extra)


def _cmd_prepare(a: argparse.Namespace) -> None:
    from ae_batch.config import SplitsConfig
    from ae_batch.stages.prepare import prepare_dataset

    s = a.settings
    prepare_dataset(
        a.dataset, s["entry"], SplitsConfig(**s["splits"]), a.out, max_batch_size=a.max_batch_size
    )


def _cmd_init(a: argparse.Namespace) -> None:
    from ae_batch.config import ModelConfig
    from ae_batch.stages.init import init_model

    digest = init_model(a.prepared, a.out, a.seed, ModelConfig.from_dict(a.settings["model"]))
    print(f"initial state for seed {a.seed}: {a.out} (sha256 {digest[:12]})", file=sys.stderr)


def _cmd_tracking_init(a: argparse.Namespace) -> None:
    from ae_batch.stages.tracking_init import init_tracking

    init_tracking(a.tracking_uri, a.study, a.datasets, a.salt_file)


def _run_settings(a: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    from ae_batch.config import ModelConfig, TrainingConfig

    s = a.settings
    training = TrainingConfig(**{**s["training"], **({"threads": a.threads} if a.threads else {})})
    return training, ModelConfig.from_dict(s["model"]), s


def _cmd_train(a: argparse.Namespace) -> None:
    from ae_batch.stages.train import train_seeds

    training, model, s = _run_settings(a)
    train_seeds(
        a.prepared,
        a.init_dir,
        a.batch_dir,
        dataset=a.dataset,
        batch_size=a.batch_size,
        seeds=a.seeds,
        training=training,
        model=model,
        study=s.get("study", "default"),
        tracking_uri=s.get("tracking_uri"),
    )


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from ae_batch.config import DownstreamConfig
    from ae_batch.stages.evaluate import evaluate_seeds

    training, model, s = _run_settings(a)
    evaluate_seeds(
        a.prepared,
        a.batch_dir,
        a.seeds,
        training=training,
        model=model,
        downstream=DownstreamConfig(**s["downstream"]),
        tracking_uri=s.get("tracking_uri"),
        subject_ids=s.get("subject_ids"),
    )


def _cmd_baselines(a: argparse.Namespace) -> None:
    from ae_batch.config import DownstreamConfig, ModelConfig
    from ae_batch.stages.baselines import compute_baselines

    s = a.settings
    compute_baselines(
        a.prepared, a.out, a.dataset, ModelConfig.from_dict(s["model"]), DownstreamConfig(**s["downstream"])
    )


def _cmd_aggregate(a: argparse.Namespace) -> None:
    from ae_batch.stages.aggregate import aggregate

    s = a.settings or {}
    aggregate(
        a.runs,
        a.baselines,
        a.out,
        study=s.get("study", "default"),
        tracking_uri=s.get("tracking_uri"),
        config=s.get("config"),
    )


def _cmd_figures(a: argparse.Namespace) -> None:
    from ae_batch.stages.figures import make_figures

    s = a.settings or {}
    make_figures(a.study_dir, study=s.get("study", "default"), tracking_uri=s.get("tracking_uri"))


def _cmd_check_config(a: argparse.Namespace) -> None:
    from ae_batch.config import load_config

    config = load_config(a.config)
    print(json.dumps(config, indent=2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ae-batch", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=fn)
        return sp

    sp = add(
        "synthesize", _cmd_synthesize, "write a synthetic cohort (ehr or mri) with documented ground truth"
    )
    sp.add_argument("kind", choices=["ehr", "mri"])
    sp.add_argument("--out", required=True, help="output folder, e.g. data_synthetic/ehr")
    sp.add_argument("--settings", type=_settings, help='JSON: {"n_subjects": 2000, "seed": 7, ...}')

    sp = add("prepare", _cmd_prepare, "raw data → prepared features, subjects, splits")
    sp.add_argument("--dataset", required=True)
    sp.add_argument(
        "--settings", type=_settings, required=True, help='JSON: {"entry": {...}, "splits": {...}}'
    )
    sp.add_argument(
        "--max-batch-size", type=int, help="fail early if a batch size exceeds the training split"
    )
    sp.add_argument("--out", required=True)

    sp = add("init", _cmd_init, "write the initial model state of one dataset × seed")
    sp.add_argument("--prepared", required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--settings", type=_settings, required=True, help='JSON: {"model": {...}}')
    sp.add_argument("--out", required=True)

    sp = add(
        "tracking-init", _cmd_tracking_init, "create the MLflow database, experiment and parent runs once"
    )
    sp.add_argument("--tracking-uri", required=True)
    sp.add_argument("--study", required=True)
    sp.add_argument("--datasets", nargs="+", required=True)
    sp.add_argument("--salt-file", help="created if missing: salt for hashed subject ids sent to MLflow")

    for name, fn, help in (
        ("train", _cmd_train, "train every seed of one batch size (each seed one grid point)"),
        ("evaluate", _cmd_evaluate, "evaluate every seed of one trained batch size"),
    ):
        sp = add(name, fn, help)
        sp.add_argument("--prepared", required=True)
        sp.add_argument("--batch-dir", required=True, help="results/<study>/<dataset>/bs<B>: seed<S>/ inside")
        sp.add_argument("--seeds", type=int, nargs="+", required=True)
        sp.add_argument("--settings", type=_settings, required=True)
        sp.add_argument("--threads", type=int, help="torch threads")
        if name == "train":
            sp.add_argument("--init-dir", required=True, help="folder of seed<S>.pt initial states")
            sp.add_argument("--dataset", required=True)
            sp.add_argument("--batch-size", type=int, required=True)

    sp = add("baselines", _cmd_baselines, "downstream CV on raw features and PCA")
    sp.add_argument("--prepared", required=True)
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--settings", type=_settings, required=True)
    sp.add_argument("--out", required=True)

    sp = add("aggregate", _cmd_aggregate, "grid points → summary.csv, folds.csv, baselines.csv, stats.csv")
    sp.add_argument("--runs", nargs="+", required=True, help="grid-point folders (train.json + eval.json)")
    sp.add_argument("--baselines", nargs="*", default=[])
    sp.add_argument("--settings", type=_settings)
    sp.add_argument("--out", required=True)

    sp = add(
        "figures", _cmd_figures, "figures of a study from summary.csv, baselines.csv and the grid points"
    )
    sp.add_argument("--study-dir", required=True, help="results/<study>")
    sp.add_argument("--settings", type=_settings)

    sp = add("check-config", _cmd_check_config, "validate a config file and print it resolved, with defaults")
    sp.add_argument("config")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AeBatchError as exc:
        print(f"ae-batch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
