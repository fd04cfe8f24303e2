"""One study at a time per working folder, with a lock whose owner can be proven gone.

Snakemake's own lock survives a SIGKILL and then demands ``snakemake --unlock`` by hand, because it
records no owner. This lock records the owner (host, pid and the pid's start time, so a recycled pid is
not mistaken for it): a rerun after a kill finds the owner gone and takes the lock over, while a second
study started in the same folder next to a running one is refused. The profiles switch Snakemake's own
lock off (``nolock: true``) in favour of this one; a lock taken on another host cannot be proven stale
and is refused with instructions.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ae_batch.errors import AeBatchError

LOCK_NAME = ".ae-batch.lock"


class StudyLocked(AeBatchError):
    """Another study is running in this folder."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: Any) -> bool:
    """False only when no process ``pid`` exists on this host; someone else's process, or a value that
    cannot be checked, counts as alive (never declare a live owner gone)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError):
        return True
    return True


def _alive(owner: dict[str, Any]) -> bool:
    pid = int(owner.get("pid", -1))
    if pid <= 0 or not pid_alive(pid):
        return False
    started = _start_time(pid)
    return started is None or started == owner.get("start_ticks")


class StudyLock:
    def __init__(self, path: str | Path = LOCK_NAME) -> None:
        self.path = Path(path)
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start_ticks": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _mine(self, owner: dict[str, Any] | None) -> bool:
        return bool(owner) and all(owner.get(k) == self.me[k] for k in ("host", "pid", "start_ticks"))

    def acquire(self) -> None:
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read()
                if owner is None:  # being written right now, or empty: look again
                    time.sleep(0.1)
                    if self._read() is None:
                        self.path.unlink(missing_ok=True)
                    continue
                if self._mine(owner):
                    return
                if owner.get("host") != self.me["host"]:
                    raise StudyLocked(
                        f"{self.path} says a study runs in this folder on host {owner.get('host')} (pid "
                        f"{owner.get('pid')}, since {owner.get('since')}); it cannot be checked from here. "
                        f"If it is not running, delete {self.path} and start again."
                    ) from None
                if _alive(owner):
                    raise StudyLocked(
                        f"another study is running in this folder: pid {owner.get('pid')} since "
                        f"{owner.get('since')} ({owner.get('command')}). Wait for it, or stop it first."
                    ) from None
                print(
                    f"ae-batch: taking over the lock of an interrupted run (pid {owner.get('pid')}, since "
                    f"{owner.get('since')}: no longer running)",
                    file=sys.stderr,
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(self.me, fh)
            return
        raise StudyLocked(f"could not take {self.path}")

    def release(self) -> None:
        if self._mine(self._read()):
            self.path.unlink(missing_ok=True)
