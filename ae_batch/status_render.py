"""How ``ae-batch status`` draws the grid (see :mod:`ae_batch.status`): one line per cell, wrapped at
100 columns, and the totals; ANSI colours only when asked (a terminal)."""

from __future__ import annotations

import time

from ae_batch.status_model import CellStatus, StudyStatus

WIDTH = 100


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


COLORS = {"done": "32", "training": "33", "interrupted": "31", "diverged": "31", "waiting": "2"}


def _paint(text: str, key: str, color: bool) -> str:
    return f"\x1b[{COLORS[key]}m{text}\x1b[0m" if color and key in COLORS else text


def _loss(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def cell_parts(c: CellStatus, color: bool = False) -> list[str]:
    """What a cell's line says, piece by piece."""
    parts = [_paint(f"{c.count('done')}/{c.total} done", "done", color and c.count("done") == c.total)]
    for g in c.groups:
        n = f"{len(g.members)} " if len(g.members) != c.total else ""
        at = f" at epoch {g.epoch}/{g.epochs}" if g.epoch is not None and g.epochs else ""
        if g.state == "training":
            eta = f", ETA {duration(g.eta)}" if g.eta is not None else ", ETA unknown"
            text = f"{n}training: epoch {g.epoch or 0}/{g.epochs or '?'}, train {_loss(g.train_loss)}, val {_loss(g.val_loss)}{eta}"
            parts.append(_paint(text, "training", color))
        elif g.state == "interrupted":
            why = f" ({g.reason})" if g.reason else ""
            parts.append(_paint(f"{n}interrupted{at} — rerun to resume{why}", "interrupted", color))
    for state, text in (("trained", "trained, not evaluated"), ("waiting", "waiting")):
        if c.count(state):
            parts.append(_paint(f"{c.count(state)} {text}", state, color))
    diverged = [name for g in c.groups for name in g.diverged]
    if diverged:
        parts.append(_paint(f"diverged: {', '.join(diverged)}", "diverged", color))
    if c.note:
        parts.append(c.note)
    return parts


def _wrap(head: str, parts: list[str], indent: int) -> list[str]:
    lines, line = [], head + parts[0]
    for part in parts[1:]:
        if len(line) + 3 + len(part) > WIDTH:  # (ANSI codes count too: a colour only wraps sooner)
            lines.append(line)
            line = " " * indent + part
        else:
            line += " · " + part
    return [*lines, line]


def render(status: StudyStatus, color: bool = False) -> list[str]:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.now))
    lines = [f"study {status.study} · {status.results} · {stamp}"]
    if not status.exists:
        lines.append(f"(no {status.results} here yet: run status from the folder the workflow runs in)")
    label = None
    for c in status.cells:
        if c.label != label:
            label = c.label
            lines.append(label)
        lines += _wrap(f"  bs{c.cell[2]:<6} ", cell_parts(c, color), 11)
    counts = [f"{status.count('done')}/{sum(c.total for c in status.cells)} members done"]
    counts += [f"{status.count(s)} {s}" for s in ("training", "interrupted") if status.count(s)]
    counts += [f"{status.count('trained')} trained, not evaluated"] if status.count("trained") else []
    counts.append(f"{status.count('waiting')} waiting")
    states = ("done", "trained", "training", "interrupted", "waiting")
    groups = ", ".join(f"{status.count(s, groups=True)} {s}" for s in states if status.count(s, groups=True))
    lines += _wrap("Total: ", [*counts, f"{len(status.groups)} groups ({groups})"], 7)
    if status.complete:
        lines.append("Time left: none, every member is trained and evaluated")
    elif status.eta is None:
        lines.append(f"Time left: ETA unknown ({status.basis})")
    else:
        lines += _wrap("Time left: ", [f"~{duration(status.eta)} ({status.basis})"], 11)
    return lines
