"""``ae-batch ui``: open MLflow on the study's training runs.

For the default sqlite store this starts ``mlflow ui`` (the interpreter's own, next to ``sys.executable``)
on 127.0.0.1, waits until it answers, prints a direct link to the study's runs and keeps it in the
foreground until Ctrl-C. For an http(s) tracking server it prints the link on that server and starts
nothing. The server binds 127.0.0.1 only; from another machine, tunnel the port with ssh::

    ssh -L 5000:127.0.0.1:5000 user@host     # then open the printed link on your own machine

The link is ``<base>/#/experiments/<id>/runs?workflowType=machine_learning``. MLflow 3.17 lands an
experiment on the GenAI "Overview" (traces) page: its UI decides GenAI vs model training from the page's
``workflowType`` query parameter (else the browser's ``mlflow.workflowType`` local-storage value, default
``genai``), and ignores the experiment's ``mlflow.experimentKind`` tag. ``machine_learning`` shows the
"Runs" page with the model-training sidebar (Runs, Models, Traces).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ae_batch.errors import AeBatchError, ConfigError

HOST = "127.0.0.1"
RUNS_QUERY = "workflowType=machine_learning"
SQLITE_PREFIX = "sqlite:///"
START_TIMEOUT_S = 180.0


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's training-runs page (not MLflow's GenAI traces overview)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{RUNS_QUERY}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page (metrics, parameters, tags)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{RUNS_QUERY}"


def study_tracking(configfiles: Sequence[str | Path]) -> tuple[str, str, str]:
    """(study name, tracking URI resolved against the working directory, experiment name)."""
    from ae_batch.config import load_study_config, resolve_tracking_uri, study_config

    cfg = study_config(load_study_config(list(configfiles)))
    uri = resolve_tracking_uri(cfg.mlflow.get("tracking_uri", "sqlite:///mlflow.db"), os.getcwd())
    return cfg.study, uri, cfg.experiment_name


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def find_experiment_id(tracking_uri: str, experiment: str, study: str) -> str:
    """The experiment's id; ``ConfigError`` if the study has not run against this store."""
    from ae_batch.tracking import client

    not_run = f"study {study!r} has not run yet in this folder / against this store (no MLflow experiment {experiment!r} in {tracking_uri}); run the workflow first, from the study folder"
    if tracking_uri.startswith(SQLITE_PREFIX) and not Path(tracking_uri[len(SQLITE_PREFIX) :]).is_file():
        # MlflowClient would create an empty database here: refuse instead.
        raise ConfigError(not_run)
    try:
        exp = client(tracking_uri).get_experiment_by_name(experiment)
    except AeBatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for an unreachable store
        raise ConfigError(f"cannot read the MLflow store {tracking_uri}: {exc}") from exc
    if exp is None:
        raise ConfigError(not_run)
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow experiment {experiment!r} in {tracking_uri} is deleted; rerun the workflow (it restores the "
            "experiment) or restore it with `mlflow experiments restore`"
        )
    return str(exp.experiment_id)


def mlflow_command(tracking_uri: str, port: int, workers: int = 1) -> list[str]:
    """``mlflow ui`` of this interpreter's environment, bound to 127.0.0.1."""
    exe = Path(sys.executable).with_name("mlflow")
    mlflow = str(exe) if exe.exists() else shutil.which("mlflow")
    if mlflow is None:
        raise ConfigError(f"no `mlflow` command next to {sys.executable} or on PATH; install mlflow")
    return [
        mlflow, "ui", "--backend-store-uri", tracking_uri, "--host", HOST, "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {HOST} is in use ({exc.strerror}); pass another, e.g. --port {port + 1}"
            ) from exc


def _answers(base: str) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via $http_proxy
    try:
        with direct.open(f"{base}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(
    tracking_uri: str, port: int, log: Any = None, timeout: float = START_TIMEOUT_S
) -> subprocess.Popen[bytes]:
    """Start ``mlflow ui`` in its own process group; return once ``/health`` answers.

    ``log``: a file object for the server's output (default: this process's stderr). Raise ``ConfigError``
    (after stopping it) if it exits or does not answer within ``timeout`` seconds."""
    check_port_free(port)
    base = f"http://{HOST}:{port}"
    proc = subprocess.Popen(
        mlflow_command(tracking_uri, port),
        cwd=os.getcwd(),
        stdout=log if log is not None else sys.stderr,  # our stdout carries the link only
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us only; we stop the whole group (uvicorn + workers)
    )
    deadline = time.monotonic() + timeout
    try:
        while not _answers(base):
            if proc.poll() is not None:
                raise ConfigError(
                    f"`mlflow ui` exited with status {proc.returncode} before answering on {base}"
                )
            if time.monotonic() > deadline:
                raise ConfigError(f"`mlflow ui` did not answer on {base} within {timeout:.0f} s")
            time.sleep(0.5)
    except BaseException:
        stop_server(proc)
        raise
    return proc


def stop_server(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    # uvicorn and its workers can outlive the `mlflow` process: end what is left of its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def open_ui(configfiles: Sequence[str | Path], port: int = 5000, serve: bool = True) -> None:
    """Print the link to the study's runs; for a local store also serve it until Ctrl-C."""
    study, uri, experiment = study_tracking(configfiles)
    experiment_id = find_experiment_id(uri, experiment, study)
    if _is_server(uri):
        print(runs_url(uri, experiment_id), flush=True)
        return
    base = f"http://{HOST}:{port}"
    link = runs_url(base, experiment_id)
    if not serve:
        print(link, flush=True)
        print(f"(start it with `ae-batch ui`, or: {' '.join(mlflow_command(uri, port))})", file=sys.stderr)
        return
    print(f"starting `mlflow ui` on {base} for {uri} ...", file=sys.stderr, flush=True)
    with _stop_on_signals():
        try:
            proc = start_server(uri, port)
        except KeyboardInterrupt:
            return
        print(link, flush=True)
        print(
            f"MLflow serves study {study!r} on {HOST} only; from another machine: "
            f"ssh -L {port}:{HOST}:{port} <this host>, then open the link. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        try:
            status = proc.wait()
        except KeyboardInterrupt:
            print("stopping mlflow ui ...", file=sys.stderr, flush=True)
            return
        finally:
            stop_server(proc)
    if status != 0:
        raise ConfigError(f"`mlflow ui` exited with status {status}")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """The first Ctrl-C, SIGTERM or SIGHUP (terminal closed) raises ``KeyboardInterrupt``, so the server,
    which runs in its own session, is stopped with us (also where a shell started us with SIGINT ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        if not fired:  # once: a second Ctrl-C must not cut the server's shutdown short
            fired.append(signum)
            raise KeyboardInterrupt

    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
