"""Loading MLflow pages in Debian's headless Chromium (``apt-get install chromium``), from tests.

No Playwright or WebDriver: the ``chromium`` command line renders a page after its React app has loaded
(``--virtual-time-budget``), prints the DOM (``--dump-dom``) and writes a PNG (``--screenshot``).
Each call gets a fresh profile, so no browser state leaks between loads.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WINDOW = (1600, 1000)


def find_chromium() -> str | None:
    """The Chromium command on PATH (Debian's ``/usr/bin/chromium``), or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium(
    browser: str, url: str, *args: str, budget_ms: int, timeout: float, window: tuple[int, int] = WINDOW
) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                f"--window-size={window[0]},{window[1]}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def render(
    browser: str,
    url: str,
    png: Path,
    budget_ms: int = 15000,
    timeout: float = 120,
    window: tuple[int, int] = WINDOW,
) -> str:
    """Load ``url`` for ``budget_ms`` of virtual time (the React app has fetched and rendered), write a
    PNG of the window (default 1600×1000) to ``png`` and return the DOM."""
    png.parent.mkdir(parents=True, exist_ok=True)
    done = _chromium(
        browser, url, f"--screenshot={png}", "--dump-dom", budget_ms=budget_ms, timeout=timeout, window=window
    )
    if done.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium failed on {url} (status {done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def visible_text(dom: str) -> str:
    """The page's text: scripts, styles and tags dropped, entities decoded, whitespace collapsed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def page_text(
    browser: str,
    url: str,
    png: Path,
    needles: Iterable[str],
    attempts: int = 3,
    window: tuple[int, int] = WINDOW,
) -> str:
    """The visible text of ``url`` (and its screenshot in ``png``) once it contains every needle, with a
    longer budget on each retry (a cold server answers its first requests slowly); the last text if it
    never does: the caller asserts, and the screenshot shows what the page showed."""
    needles = list(needles)
    text = ""
    for attempt in range(attempts):
        text = visible_text(render(browser, url, png, budget_ms=15000 * (attempt + 1), window=window))
        if all(n in text for n in needles):
            break
    return text


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def ae_batch_ui(
    workdir: Path, configfile: str, port: int, log: Path, timeout: float = 180
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``ae-batch ui <configfile> --port <port>`` in ``workdir``; yield (the link it prints, process).

    On exit it is stopped as Ctrl-C would (SIGINT), which must stop its ``mlflow ui`` too."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ae_batch", "ui", configfile, "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            yield _read_link(proc, timeout, log), proc
        finally:
            stop(proc)


def _read_link(proc: subprocess.Popen[str], timeout: float, log: Path) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("http"):
                return line.strip()
            if line == "" and proc.poll() is not None:
                break
    raise AssertionError(
        f"`ae-batch ui` printed no link (exit status {proc.poll()}); its stderr:\n{log.read_text()[-3000:]}"
    )


def stop(proc: subprocess.Popen[str], grace: float = 30) -> int | None:
    """SIGINT (Ctrl-C), then SIGKILL after ``grace`` seconds; return the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            groups = _child_pids(proc.pid)  # `mlflow ui` leads its own process group
            proc.kill()
            proc.wait()
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
    return proc.returncode


def _child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
