"""Stage ``evaluate``: every member of one train group at its best-by-validation checkpoint.

Per member it writes ``eval.json`` (metrics named as the summary columns), ``per_subject.csv``
(reconstruction loss of every val/test subject), ``latents.npz`` (val and test latents with subject ids),
``folds.csv`` (per-fold downstream scores), ``noise_scale.json`` (the gradient noise scale at the
checkpoint) and, for MRI, ``reconstructions.png`` (lowest seed of the group); then the group's manifest
``groups/<id>.eval.json`` (the rule's declared output).

Learning-rate selection (tuned protocols): for each seed, the member with the lowest validation loss
among all of that seed's learning rates in this cell (this group's and the sibling groups' train
records) is selected, never by a test metric. Every member gets test loss and latent metrics; the
downstream probes and the noise scale run on the selected member only (and on every member of an
untuned protocol).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ae_batch.config import DownstreamConfig, ModelConfig, NoiseScaleConfig
from ae_batch.data.prepared import PreparedDataset, load_prepared
from ae_batch.io import atomic_path, read_json, write_csv, write_json


def select_learning_rates(records: list[dict[str, Any]]) -> dict[str, bool | None]:
    """member name → selected? (None for untuned members). Per seed, the lowest finite validation loss
    wins; ties go to the smaller learning rate; a seed whose members all diverged selects none."""
    out: dict[str, bool | None] = {}
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("lr_rule") != "tuned":
            out[r["member"]] = None
        else:
            by_seed.setdefault(int(r["seed"]), []).append(r)
    for rows in by_seed.values():
        finite = [r for r in rows if math.isfinite(float(r["val_recon_loss"]))]
        best = min(
            finite, key=lambda r: (float(r["val_recon_loss"]), float(r["learning_rate"])), default=None
        )
        for r in rows:
            out[r["member"]] = r is best
    return out


def _nan_metrics() -> dict[str, float]:
    return {"val_recon_loss": math.nan, "test_recon_loss": math.nan, "test_recon_loss_std": math.nan}


def evaluate_member(
    data: PreparedDataset,
    member_dir: Path,
    record: dict[str, Any],
    model_cfg: ModelConfig,
    loss: str,
    eval_batch_size: int,
    downstream: DownstreamConfig,
    noise: NoiseScaleConfig,
    selected: bool | None,
    device: str,
    figure: bool,
) -> dict[str, Any]:
    """Evaluate one trained member; write its files; return the ``eval.json`` record."""
    import torch

    from ae_batch.evaluation.diversity import latent_diversity
    from ae_batch.evaluation.downstream import downstream_folds, fold_summary
    from ae_batch.evaluation.reconstruction import encode_and_score
    from ae_batch.models.factory import load_model

    started = time.time()
    where = f"{record['dataset']}/{record['protocol']}/bs{record['batch_size']}/{record['member']}"
    identity = {k: record[k] for k in ("dataset", "protocol", "batch_size", "member")}
    results: dict[str, Any] = {"lr_selected": selected, **identity}
    folds = pd.DataFrame(columns=["repeat", "fold", "metric", "value"])
    if record.get("diverged"):
        results.update(_nan_metrics())
        write_csv(member_dir / "folds.csv", folds)
        write_json(
            member_dir / "eval.json", {**results, "diverged": True, "finished_ms": int(time.time() * 1000)}
        )
        return results
    activation = data.meta.get("activation", "sigmoid")
    net = load_model(member_dir / "model.pt", model_cfg, data.input_shape, activation)
    per_subject, latents, codes = [], {}, None
    for split in ("val", "test"):
        losses, z, split_codes = encode_and_score(
            net, data.split_features(split), loss, eval_batch_size, device
        )
        ids = data.split_subjects(split)["subject_id"]
        per_subject.append(pd.DataFrame({"subject_id": ids, "split": split, "recon_loss": losses}))
        latents[split] = z
        results[f"{split}_recon_loss"] = float(np.mean(losses))
        if split == "test":
            codes = split_codes
            results["test_recon_loss_std"] = float(np.std(losses, ddof=1)) if len(losses) > 1 else math.nan
    results.update(latent_diversity(latents["test"]))
    if codes is not None and hasattr(net, "codebook"):
        from ae_batch.evaluation.codebook import codebook_metrics

        results.update(codebook_metrics(codes, net.codebook.detach().cpu().numpy()))
    if selected is not False:
        folds = downstream_folds(latents["test"], data.split_subjects("test"), downstream, where)
        results.update(fold_summary(folds))
        from ae_batch.evaluation.noise_scale import autoencoder_loss, noise_scale

        ns = noise_scale(
            net.cpu(),
            torch.from_numpy(np.asarray(data.split_features("train"))),
            autoencoder_loss(loss),
            noise.method,
            seed=int(record["seed"]),
            max_exact_cost=noise.max_exact_cost,
            chunk_size=64,
        )
        results["gradient_noise_scale"] = ns.gradient_noise_scale
        write_json(member_dir / "noise_scale.json", {**ns.__dict__, "point": "trained"})
    if figure and data.features.ndim == 5:
        from ae_batch.figures import plot_reconstructions

        test = data.split_features("test")[:4]
        with torch.no_grad():
            recon = net.eval().cpu()(torch.as_tensor(np.asarray(test))).recon.numpy()
        title = f"{where} (best epoch {record['best_epoch']})"
        plot_reconstructions(np.asarray(test), recon, title, member_dir / "reconstructions.png")
    write_csv(member_dir / "per_subject.csv", pd.concat(per_subject, ignore_index=True))
    write_csv(member_dir / "folds.csv", folds)
    with atomic_path(member_dir / "latents.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            val=latents["val"],
            test=latents["test"],
            val_ids=data.split_subjects("val")["subject_id"].to_numpy(str),
            test_ids=data.split_subjects("test")["subject_id"].to_numpy(str),
        )
    results["evaluation_seconds"] = time.time() - started
    results["finished_ms"] = int(time.time() * 1000)
    write_json(member_dir / "eval.json", results)
    return results


def evaluate_group(
    train_manifest: str | Path,
    settings: dict[str, Any],
    sibling_manifests: list[str | Path] = (),
    threads: int = 1,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Evaluate every member of the group whose ``groups/<id>.train.json`` is ``train_manifest``.

    ``settings``: ``{"downstream": {...}, "noise_scale": {...}}``; the model and loss come from the
    group's spec beside the manifest. ``sibling_manifests``: train manifests of the cell's other groups
    (tuned protocols: the learning rate is selected per seed across all of them).
    """
    import torch

    from ae_batch.devices import resolve_device

    torch.set_num_threads(threads)
    train_manifest = Path(train_manifest)
    group_id = train_manifest.name.split(".")[0]
    spec = read_json(train_manifest.with_name(f"{group_id}.spec.json"))
    manifest = read_json(train_manifest)
    records = manifest["records"]
    siblings = [r for p in sibling_manifests for r in read_json(p)["records"]]
    seeds = {int(r["seed"]) for r in records}
    selection = select_learning_rates(records + [r for r in siblings if int(r["seed"]) in seeds])
    data = load_prepared(spec["prepared"])
    model_cfg = ModelConfig.from_dict(spec["model"])
    downstream = DownstreamConfig(**settings["downstream"])
    noise = NoiseScaleConfig(**settings["noise_scale"])
    device = resolve_device(accelerator)
    figure_seed = min(seeds)
    dirs = {m["name"]: Path(m["dir"]) for m in spec["members"]}
    out = {}
    for record in records:
        selected = selection[record["member"]]
        figure = int(record["seed"]) == figure_seed and selected is not False
        results = evaluate_member(
            data,
            dirs[record["member"]],
            record,
            model_cfg,
            spec["training"]["loss"],
            spec["training"]["eval_batch_size"],
            downstream,
            noise,
            selected,
            device,
            figure,
        )
        out[record["member"]] = results
        print(
            f"evaluated {record['dataset']}/{record['protocol']}/bs{record['batch_size']}/{record['member']}: "
            f"test loss {results['test_recon_loss']:.5f}"
            + ("" if selected is None else f", lr {'selected' if selected else 'not selected'}"),
            file=sys.stderr,
            flush=True,
        )
    eval_manifest = {"id": group_id, "members": out}
    write_json(train_manifest.with_name(f"{group_id}.eval.json"), eval_manifest)
    return eval_manifest
