"""``ae-batch status``: where a study's grid stands, read from the files its jobs write.

Only the shared filesystem is read (member ``train.json``, ``groups/<id>.eval.json`` and
``groups/<id>.progress.json``), so it works the same on a laptop and on a cluster. :func:`collect` builds a
plain model of the grid, :func:`render` turns it into lines (100 columns), :func:`show_status` prints
it once or redraws it (``--watch``). No torch, pandas or MLflow here: it starts in a fraction of a second.

A group whose progress file says ``training`` counts as interrupted when its process is gone (same host)
or it has written nothing for a long time (at least ``STALE_S``, and four times its mean epoch time).
Time left = max(longest running ETA, (running ETAs + waiting work) / groups training now (≥ 1)): a
running group's ETA comes from its progress file; waiting work (samples still to train, from each
cell's budget; interrupted groups count what they have left) takes as long as finished groups of the
same dataset (same batch size if any) took per sample in their training loop, plus their mean job
overhead; with none finished, the pace running groups report. Otherwise it says "ETA unknown".
"""

from __future__ import annotations

import json
import math
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ae_batch.config import StudyConfig, load_study_config, study_config
from ae_batch.errors import ConfigError
from ae_batch.grid import cell_dir, cells, group_file, member_dir, plan_groups, prepared_key
from ae_batch.lock import pid_alive
from ae_batch.status_model import CellStatus, GroupStatus, StudyStatus
from ae_batch.status_render import duration, render
from ae_batch.training.protocols import budget_for

STALE_S = 1800.0  # a training group silent for this long (and 4 mean epochs) is taken as interrupted
STALE_FIRST_EPOCH_S = 4 * 3600.0  # ... before its first epoch has finished (no epoch time known yet)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def samples_per_member(study: StudyConfig, cell: tuple[str, str, int], n_train: int) -> int:
    """Training samples one member of ``cell`` sees over its whole budget (raises ValueError if B > N)."""
    budget = budget_for(study.protocol_for(cell[0], cell[1]), cell[2], n_train)
    full, rest = divmod(budget.total_steps, budget.steps_per_epoch)
    return full * n_train + min(rest * budget.batch_size, n_train)


def _n_train(study: StudyConfig, results: Path, dataset: str) -> int | None:
    meta = _read(results / prepared_key(study, dataset) / "prepared" / "meta.json") or {}
    return _finite(meta.get("input_contract", {}).get("n_subjects", {}).get("train"))


def _progress_state(p: dict[str, Any], now: float, host: str, alive: Any) -> tuple[str, str]:
    """``training`` or ``interrupted`` (with the reason) for a progress file's status ``training``."""
    if p.get("host") == host and p.get("pid") is not None and not alive(p["pid"]):
        return "interrupted", f"process {p['pid']} on {host} is gone"
    updated, started, epoch = _finite(p.get("updated_at")), _finite(p.get("started_at")), p.get("epoch") or 0
    if updated is None:
        return "training", ""
    per_epoch = (updated - started) / epoch if started is not None and epoch else None
    limit = max(STALE_S, 4 * per_epoch) if per_epoch else STALE_FIRST_EPOCH_S
    if now - updated > limit:
        return "interrupted", f"no update for {duration(now - updated)}"
    return "training", ""


def _find_progress(cdir: Path, group: GroupStatus, live: Any) -> dict[str, Any] | None:
    """The group's progress file; else a live one naming its members (a group planned from another
    config or stack size), the newest."""
    exact = _read(cdir / "groups" / f"{group.id}.progress.json")
    if exact is not None:
        return exact
    found = [_read(p) or {} for p in sorted((cdir / "groups").glob("*.progress.json"))]
    found = [p for p in found if set(group.members) <= set(p.get("members", [])) and live(p)]
    return max(found, key=lambda p: _finite(p.get("updated_at")) or 0.0, default=None)


def collect(
    study: StudyConfig,
    results: str | Path,
    now: float | None = None,
    host: str | None = None,
    alive: Any = pid_alive,
) -> StudyStatus:
    """The grid's state from the files on disk (``now``, ``host`` and ``alive`` can be injected for tests)."""
    results, now, host = Path(results), time.time() if now is None else now, host or socket.gethostname()
    planned: dict[tuple[str, str, int], list[Any]] = {}
    for g in plan_groups(study, results):
        planned.setdefault(g.cell, []).append(g)
    n_train = {d: _n_train(study, results, d) for d in study.datasets}

    def live(p: dict[str, Any]) -> bool:
        return p.get("status") == "training" and _progress_state(p, now, host, alive)[0] == "training"

    rates: dict[Any, list[float]] = {}  # dataset or (dataset, batch size) -> [samples, seconds, groups]
    out = []
    for cell in cells(study):
        dataset, protocol, batch_size = cell
        cdir, spec = cell_dir(results, *cell), study.protocol_for(dataset, protocol)
        budget = f"{spec.epochs} epochs" if spec.budget == "epochs" else f"{spec.steps} steps"
        cstat = CellStatus(cell, f"{dataset} · {protocol} ({budget}, {spec.lr} lr)", [])
        per_member = None
        if n_train[dataset]:
            try:
                per_member = samples_per_member(study, cell, int(n_train[dataset]))
            except ValueError as exc:
                cstat.note = str(exc)
        for g in planned.get(cell, []):
            gs = GroupStatus(g.id, cell, [m.name for m in g.members], "waiting")
            records = [_read(member_dir(results, m) / "train.json") or {} for m in g.members]
            if all(
                (r.get("fingerprint"), r.get("train_group_id")) == (m.fingerprint, g.id)
                for r, m in zip(records, g.members, strict=True)
            ) and (group_file(results, cell, g.id, "train").exists()):
                gs.state = "done" if group_file(results, cell, g.id, "eval").exists() else "trained"
                gs.diverged = [r.get("member", "?") for r in records if r.get("diverged")]
                _add_rate(rates, cell, records, _read(group_file(results, cell, g.id, "progress")))
                cstat.groups.append(gs)
                continue
            gs.work = per_member * len(g.members) if per_member else None
            p = _find_progress(cdir, gs, live)
            if p is not None and p.get("status") in ("training", "interrupted"):
                gs.state, gs.reason = (
                    _progress_state(p, now, host, alive) if p["status"] == "training" else ("interrupted", "")
                )
                gs.epoch, gs.epochs = p.get("epoch"), p.get("epochs")
                vals = p.get("val_loss") or []
                finite = [v for v in map(_finite, vals) if v is not None]
                gs.train_loss, gs.val_loss = (
                    _finite(p.get("train_loss")),
                    (sum(finite) / len(finite) if finite else None),
                )
                names = p.get("members", gs.members)
                gs.diverged = [n for n, v in zip(names, vals, strict=False) if _finite(v) is None]
                step, total = _finite(p.get("step")), _finite(p.get("total_steps"))
                if gs.work is not None and step and total:
                    gs.work *= max(0.0, 1.0 - step / total)
                eta = _finite(p.get("eta_seconds"))
                if gs.state == "training" and eta is not None and p.get("epoch"):
                    gs.eta = max(0.0, eta - (now - (_finite(p.get("updated_at")) or now)))
                    if step and total and total > step and eta > 0:  # wall-clock rate, validation included
                        _add(rates, "running", cell, len(gs.members) * batch_size * (total - step), eta)
            cstat.groups.append(gs)
        out.append(cstat)
    status = StudyStatus(study.study, results, out, now, exists=results.is_dir())
    status.eta, status.basis = estimate(status, rates, n_train)
    return status


def _add_rate(rates: dict[Any, list[float]], cell: tuple, records: list[dict], progress: dict | None) -> None:
    """Add a finished group's samples and seconds in its training loop (training, validation and
    checkpoints), and the job's overhead around it (start-up, data loading) when its progress file
    shows its wall time."""
    r0 = records[0] if records else {}
    samples = sum(_finite(r.get("samples_seen")) or 0.0 for r in records)
    loop = sum(
        _finite(r0.get(k)) or 0.0 for k in ("train_seconds", "validation_seconds", "checkpoint_seconds")
    )
    overhead = 0.0
    if progress and not r0.get("resumed_from") and progress.get("status") == "trained":
        wall = (_finite(progress.get("updated_at")) or 0.0) - (_finite(progress.get("started_at")) or 0.0)
        overhead = max(0.0, wall - loop)
    _add(rates, "finished", cell, samples, loop, overhead)


def _add(
    rates: dict[Any, list[float]], kind: str, cell: tuple, samples: float, seconds: float, overhead=0.0
) -> None:
    """Pool per (kind, dataset) and (kind, dataset, batch size): [samples, seconds, groups, overhead]."""
    if samples > 0 and seconds > 0:
        for key in ((kind, cell[0]), (kind, cell[0], cell[2])):
            acc = rates.setdefault(key, [0.0, 0.0, 0, 0.0])
            acc[0], acc[1], acc[2], acc[3] = acc[0] + samples, acc[1] + seconds, acc[2] + 1, acc[3] + overhead


def estimate(
    status: StudyStatus, rates: dict[Any, list[float]], n_train: dict[str, Any]
) -> tuple[float | None, str]:
    """Seconds left for the study's training, and its basis in a short phrase (None: unknown)."""
    if status.complete:
        return 0.0, "all done"
    parallel = max(1, sum(g.state == "training" for g in status.groups))
    etas, waiting, used = [], 0.0, {}
    for g in status.groups:
        if g.state in ("done", "trained"):
            continue
        if g.state == "training" and g.eta is not None:
            etas.append(g.eta)
            continue
        dataset, batch_size = g.cell[0], g.cell[2]  # waiting, interrupted, or training with no ETA yet
        if not n_train.get(dataset):
            return None, f"dataset {dataset} is not prepared yet"
        if g.work is None:  # the batch size does not fit the data: that job fails, nothing to estimate
            continue
        keys = [(k, dataset, batch_size) for k in ("finished", "running")]
        key = next((k for k in (keys[0], keys[0][:2], keys[1], keys[1][:2]) if k in rates), None)
        if key is None:
            return None, f"no group of {dataset} has finished yet"
        acc = rates[key]
        waiting += g.work * acc[1] / acc[0] + acc[3] / acc[2]
        used[key[:2]] = int(rates[key[:2]][2])
    total = max(max(etas, default=0.0), (sum(etas) + waiting) / parallel)
    parts = ["running groups' ETAs"] if etas else []
    for kind in ("finished", "running"):
        n = sum(v for k, v in used.items() if k[0] == kind)
        parts += [f"throughput of {n} {kind} group{'s' * (n != 1)}"] if n else []
    return total, " + ".join(parts) + f", {parallel} at a time"


def show_status(
    configfile: list[str] | tuple[str, ...] = (), watch: float | None = None, out: Any = None
) -> None:
    """Print the grid of the study ``configfile`` defines (``results/<study>`` under the working directory);
    with ``watch``, redraw it every ``watch`` seconds until every member is done (Ctrl-C stops it)."""
    out = out or sys.stdout
    study = study_config(load_study_config(list(configfile)))
    if watch is not None and not watch > 0:
        raise ConfigError(f"--watch takes a number of seconds > 0, got {watch:g}")
    results, tty = Path("results") / study.study, out.isatty()
    try:
        while True:
            status = collect(study, results)
            if watch is not None and tty:
                out.write("\x1b[H\x1b[2J")
            out.write("\n".join(render(status, color=tty)) + "\n")
            out.flush()
            if watch is None or status.complete:
                return
            time.sleep(watch)
            out.write("" if tty else "\n")
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
