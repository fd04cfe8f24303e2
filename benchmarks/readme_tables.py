"""Render the README's performance figures from the benchmark result files (never typed by hand).

Each block of the README between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` is replaced by the
table rendered from ``benchmarks/results/``:

* ``throughput``: ``train_throughput.py`` (the stacked-training targets);
* ``startup``: ``startup.py`` (job start-up, ``snakemake -n``);
* ``study``: ``study_time.py`` (the default study from scratch, where the time goes);
* ``memory``: ``train_memory.py`` (peak memory of a train job against K);
* ``paper_scale``: ``paper_scale.py`` (one run at Kerley et al.'s EHR scale);
* ``resume``: ``resume_saved.py`` (what resuming a killed train job saves);
* ``verdict``: ``study_time.py`` (the default study's answer).

    python benchmarks/readme_tables.py            # print the blocks
    python benchmarks/readme_tables.py --write    # and rewrite them in README.md
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _source(d: dict[str, Any]) -> str:
    return f"_{d['machine']}, torch {d['torch']}, {d['date']}; `{d['command']}` → `benchmarks/results/`._"


def throughput(d: dict[str, Any]) -> str:
    lines = [
        "| model | batch | members | stacked (samples/s) | loop | fused loop | ÷ loop (target) | ÷ fused loop (target) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"ehr_mlp": "EHR MLP 290-256-128-32", "mri_conv": f"MRI conv AE {d.get('mri_size', 32)}³"}
    for c in d["cases"]:
        mark = "" if c["met"] else " **(missed)**"
        lines.append(
            f"| {names[c['model']]} | {c['batch_size']} | {c['members']} | {c['stacked']:,.0f} | {c['loop']:,.0f} "
            f"| {c['fused_loop']:,.0f} | {c['ratio_loop']:.3f} (≥ {c['target_loop']}) "
            f"| {c['ratio_fused_loop']:.3f} (≥ {c['target_fused_loop']}){mark} |"
        )
    return "\n".join(lines) + "\n\n" + _source(d)


def startup(d: dict[str, Any]) -> str:
    lines = ["| command | seconds |", "|---|---|"]
    lines += [f"| `{name}` | {t:.2f} |" for name, t in d["times"].items()]
    return "\n".join(lines) + "\n\n" + _source(d)


def study(d: dict[str, Any]) -> str:
    lines = [
        f"**{d['wall_seconds'] / 60:.1f} min** from scratch ({d['members']} grid points, {d['train_jobs']} train "
        f"jobs), where the job time goes (sum over jobs, CPU-seconds of the {d['cores_used']}-core machine):",
        "",
        "| rule | jobs | seconds (sum) |",
        "|---|---|---|",
    ]
    lines += [f"| {rule} | {v['jobs']} | {v['seconds']:,.0f} |" for rule, v in d["rules"].items()]
    return "\n".join(lines) + "\n\n" + _source(d)


def memory(d: dict[str, Any]) -> str:
    lines = ["| model | members K | peak RSS (MB) | per extra member (MB) |", "|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(
            f"| {r['model']} | {r['members']} | {r['peak_rss_mb']:,.0f} | "
            + (f"{r['per_member_mb']:,.1f} |" if r["members"] > 1 else "— |")
        )
    return "\n".join(lines) + "\n\n" + _source(d)


def paper_scale(d: dict[str, Any]) -> str:
    return (
        f"{d['summary']}\n\n| batch | timed steps | seconds | samples/s (all members) | estimated full run |\n"
        "|---|---|---|---|---|\n"
        + "\n".join(
            f"| {r['batch_size']} | {r['steps']:,} | {r['seconds']:.1f} | {r['samples_per_second']:,.0f} | {r['full_minutes']:.0f} min |"
            for r in d["rows"]
        )
        + "\n\n"
        + _source(d)
    )


def verdict(d: dict[str, Any]) -> str:
    """The default study's answer: does the paper protocol's effect survive, and B_simple at init."""
    import pandas as pd

    folder = RESULTS / "default_study"
    comparison = pd.read_csv(folder / "verdict_vs_paper.csv")
    verdicts = pd.read_csv(folder / "verdict.csv")
    lines = ["| dataset | metric | paper | " + " | ".join(sorted(set(comparison["protocol"]))) + " |",
             "|---|---|---|" + "---|" * comparison["protocol"].nunique()]  # fmt: skip
    for (dataset, metric), part in comparison.groupby(["dataset", "metric"], sort=False):
        cells = {r.protocol: f"{r.direction} → **{r.reading}**" for r in part.itertuples()}
        row = verdicts[
            (verdicts["dataset"] == dataset)
            & (verdicts["metric"] == metric)
            & (verdicts["protocol"] == "paper")
        ]
        rho = f" (ρ {row['spearman_rho'].iloc[0]:+.2f})" if len(row) else ""
        lines.append(f"| {dataset} | {metric} | {part['reference_direction'].iloc[0]}{rho} | "
                     + " | ".join(cells[p] for p in sorted(cells)) + " |")  # fmt: skip
    noise = pd.read_csv(folder / "noise_scale.csv")
    init = noise[noise["point"] == "init"].groupby("dataset")["gradient_noise_scale"]
    scales = ", ".join(f"{ds} {m:.3g} (sd {sd:.2g}, {n} seeds)" for ds, m, sd, n in
                       zip(init.mean().index, init.mean(), init.std(), init.count(), strict=True))  # fmt: skip
    return (
        "\n".join(lines)
        + f"\n\nGradient noise scale B_simple at init (mean over seeds): {scales}.\n\n"
        + _source(d)
    )


def resume(d: dict[str, Any]) -> str:
    return (
        f"A train job of {d['epochs']} epochs (6 EHR members stacked) took {d['full_seconds']:.1f} s in full. "
        f"SIGKILLed after epoch {d['killed_after_epoch']} and run again, it {d['resume_line'].split('] ')[-1]} and "
        f"finished in {d['resumed_seconds']:.1f} s: **{d['saved_seconds']:.1f} s saved** against a full retrain, "
        f"weights {'bitwise identical' if d['bitwise_identical'] else 'NOT identical'} to the uninterrupted run's.\n\n"
        + _source(d)
    )


BLOCKS: dict[str, Callable[[dict[str, Any]], str]] = {
    "verdict": verdict,
    "throughput": throughput,
    "startup": startup,
    "study": study,
    "memory": memory,
    "paper_scale": paper_scale,
    "resume": resume,
}
FILES = {
    "verdict": "study_time",
    "throughput": "cpu2",
    "startup": "startup",
    "study": "study_time",
    "memory": "train_memory",
    "paper_scale": "paper_scale",
    "resume": "resume",
}


def render() -> dict[str, str]:
    out = {}
    for block, render_fn in BLOCKS.items():
        data = _load(FILES[block])
        out[block] = render_fn(data) if data else f"_(no `benchmarks/results/{FILES[block]}.json` yet)_"
    return out


def updated_readme(text: str) -> str:
    """``text`` (the README) with every bench block re-rendered from the result files."""
    for name, body in render().items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        text, found = pattern.subn(
            lambda m, body=body: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text
        )
        if found != 1:
            raise SystemExit(f"README.md has {found} `<!-- bench:{name} -->` blocks, expected 1")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="rewrite the blocks in README.md")
    a = p.parse_args()
    for name, body in render().items():
        print(f"--- {name}\n{body}\n")
    if a.write:
        README.write_text(updated_readme(README.read_text()))


if __name__ == "__main__":
    main()
