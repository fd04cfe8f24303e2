"""Real services for the cluster tests: a single-node SLURM, a throwaway PostgreSQL, an MLflow server.

Each ``start_*`` function either returns a running service or raises ``Unavailable`` with the exact
reason (a missing package, a daemon that did not come up, with the tail of its log), which the fixtures
turn into ``pytest.skip(reason)``: a test that needs a service is never silently passed.

Processes are started by these functions and stopped by their ``stop()`` methods, by pid, and only
those this module started: a SLURM or munge daemon that was already running is reused and left running.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class Unavailable(RuntimeError):
    """A service cannot run here; the message says why and how to get it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-n:])


def _wait(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_pid(pid: int, timeout: float = 15) -> None:
    """SIGTERM one process we started, SIGKILL if it outlives ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        if not _wait(lambda: not _alive(pid), timeout, 0.2):
            os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 30, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


def _binary(name: str) -> str | None:
    """A program on PATH or in the sbin folders (not on a non-root user's PATH on Debian)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    return None


# --- SLURM --------------------------------------------------------------------------------------------

SLURM_PROGRAMS = (
    "munged",
    "munge",
    "unmunge",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scontrol",
    "sinfo",
    "srun",
)
SLURM_INSTALL = "apt-get install -y slurm-wlm munge"
# The configuration lives where every SLURM tool looks without SLURM_CONF: the plugin's job step
# (snakemake-executor-plugin-slurm-jobstep 0.6) drops SLURM_* variables, SLURM_CONF included, before its
# nested `srun`, which then finds no configuration. State and logs go to SLURM_ROOT.
SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURM_ROOT = Path(tempfile.gettempdir()) / "ae-batch-slurm"
OURS = "# written by ae-batch's tests/services.py (start_slurm); removed when its daemons stop\n"


@dataclass
class SlurmCluster:
    """A SLURM that answers ``sinfo`` with a usable node; ``started`` lists the pids we started."""

    node: str
    cpus: int
    ours: bool  # started (or restarted) by start_slurm, with its slurm.conf
    log_dir: Path | None
    started: list[int] = field(default_factory=list)
    wrote_conf: bool = False

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: os.environ) with the sbin folders on PATH and no SLURM_CONF."""
        env = dict(base if base is not None else os.environ)
        env.pop("SLURM_CONF", None)
        env["PATH"] = f"{env.get('PATH', '')}:/usr/sbin:/sbin"
        return env

    def stop(self) -> None:
        for pid in reversed(self.started):
            _stop_pid(pid)
        self.started.clear()
        if self.wrote_conf:
            SLURM_CONF.unlink(missing_ok=True)
            self.wrote_conf = False


def _munge_works() -> bool:
    try:
        cred = _run([_binary("munge") or "munge", "-n"], timeout=10)
        if cred.returncode != 0:
            return False
        return _run([_binary("unmunge") or "unmunge"], input=cred.stdout, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munge() -> int | None:
    """munged as the ``munge`` user (as Debian's service does); returns its pid if we started it."""
    if _munge_works():
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        raise Unavailable(f"munge has no key at {key}: reinstall munge ({SLURM_INSTALL}) or run `mungekey`")
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyError):
        munge_user = pwd.getpwnam("munge")
        os.chown(run_dir, munge_user.pw_uid, munge_user.pw_gid)
    result = _run(["runuser", "-u", "munge", "--", _binary("munged") or "munged"], timeout=30)
    if result.returncode != 0:
        raise Unavailable(f"munged failed to start (exit {result.returncode}): {result.stderr.strip()}")
    if not _wait(_munge_works, 10):
        raise Unavailable(
            "munged started but `munge -n | unmunge` still fails (see /var/log/munge/munged.log)"
        )
    return _read_pid(run_dir / "munged.pid")


def _usable_node(env: dict[str, str]) -> tuple[str, int] | None:
    """(name, CPUs) of a node that can run jobs if slurmctld answers, else None."""
    try:
        ping = _run(["scontrol", "ping"], env=env, timeout=10)
        if ping.returncode != 0 or "UP" not in ping.stdout:
            return None
        rows = _run(["sinfo", "-h", "-N", "-o", "%N %c %T"], env=env, timeout=10).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    for row in rows:
        name, cpus, state = row.split()
        if state.rstrip("*~#$@+") in ("idle", "mixed", "allocated", "completing"):
            return name, int(cpus)
    return None


def _node_name() -> str:
    return socket.gethostname().split(".")[0]


def slurm_conf(node: str, cpus: int, memory_mb: int, root: Path, ctld_port: int, slurmd_port: int) -> str:
    """A single-node slurm.conf: root as SlurmUser, no accounting (FIELD_NOTES' recipe), state under root.

    MinJobAge keeps finished jobs in ``squeue`` for 10 minutes: without accounting, the Snakemake
    plugin's status checks (``slurm-status-command: squeue``) only see jobs slurmctld still holds."""
    return f"""{OURS}\
ClusterName=aebatch
SlurmctldHost={node}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={root}/state/slurmctld
SlurmdSpoolDir={root}/state/slurmd
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName={node} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(int(line.split()[1]) / 1024 * 0.9)
    return 4000


def start_slurm(root: Path = SLURM_ROOT) -> SlurmCluster:
    """A running single-node SLURM configured in /etc/slurm/slurm.conf: one that already answers
    (anyone's, or ours from an earlier session) is reused as it is; otherwise munged, slurmctld and
    slurmd are started here with our slurm.conf (only if none is there, or it is ours)."""
    missing = [p for p in SLURM_PROGRAMS if _binary(p) is None]
    if missing:
        raise Unavailable(f"SLURM is not installed (missing {', '.join(missing)}): {SLURM_INSTALL}")
    probe = SlurmCluster("", 0, False, None)
    env = probe.client_env()
    ours = SLURM_CONF.exists() and SLURM_CONF.read_text(errors="replace").startswith(OURS)
    if SLURM_CONF.exists():
        node = _usable_node(env)
        if node:
            return SlurmCluster(*node, ours, root / "log" if ours else None)
        if not ours:
            raise Unavailable(
                f"{SLURM_CONF} exists (not written by these tests) but its cluster does not answer "
                "`scontrol ping` with a usable node: start its daemons, or move the file away"
            )
    if os.geteuid() != 0:
        raise Unavailable("starting a SLURM needs root (slurmd launches jobs as their user; SlurmUser=root)")

    cluster = SlurmCluster(_node_name(), os.cpu_count() or 1, True, root / "log")
    munged = _start_munge()
    if munged:
        cluster.started.append(munged)
    for pid_file in ("slurmd.pid", "slurmctld.pid"):  # leftovers of ours that no longer answer
        pid = _read_pid(root / pid_file)
        if pid and _alive(pid):
            _stop_pid(pid)
        (root / pid_file).unlink(missing_ok=True)
    shutil.rmtree(root / "state", ignore_errors=True)
    for sub in ("state/slurmctld", "state/slurmd", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(
        slurm_conf(cluster.node, cluster.cpus, _memory_mb(), root, free_port(), free_port())
    )
    cluster.wrote_conf = True
    for daemon in ("slurmctld", "slurmd"):
        result = _run([_binary(daemon) or daemon], env=env)
        pid = None
        if result.returncode == 0:
            _wait(lambda d=daemon: _read_pid(root / f"{d}.pid") is not None, 10, 0.1)
            pid = _read_pid(root / f"{daemon}.pid")
        if pid:
            cluster.started.append(pid)
        if result.returncode != 0 or pid is None:
            cluster.stop()
            raise Unavailable(
                f"{daemon} failed to start (exit {result.returncode}): {result.stderr.strip()}\n"
                + _tail(root / "log" / f"{daemon}.log")
            )
    if not _wait(lambda: _usable_node(env) is not None, 30):
        sinfo = _run(["sinfo", "-N", "-l"], env=env).stdout
        cluster.stop()
        raise Unavailable(
            "SLURM daemons started but no node became idle within 30 s:\n"
            + sinfo
            + "\n--- slurmctld.log\n"
            + _tail(root / "log" / "slurmctld.log")
            + "\n--- slurmd.log\n"
            + _tail(root / "log" / "slurmd.log")
        )
    return cluster


# --- PostgreSQL ---------------------------------------------------------------------------------------

POSTGRES_INSTALL = "apt-get install -y postgresql"


def _pg_bindir() -> Path | None:
    """The folder of initdb/pg_ctl: Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:``port`` with its data and socket in ``root``."""

    root: Path
    port: int
    bindir: Path
    user: str | None  # the OS user it runs as (postgres refuses root); None: the current user
    superuser: str  # the database superuser (the OS user initdb ran as)
    running: bool = True

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def run(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A client program (psql, pg_dump, ...) as the superuser over the cluster's unix socket."""
        exe = self.bindir / program
        cmd = [
            str(exe if exe.exists() else program),
            "-h",
            str(self.root),
            "-p",
            str(self.port),
            "-U",
            self.superuser,
            *args,
        ]
        return _run(self._as_owner(cmd), timeout=timeout)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = self.run("psql", "-v", "ON_ERROR_STOP=1", "-d", database, "-Atc", sql)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, user: str, password: str, database: str) -> str:
        """A login role owning a new database; returns the SQLAlchemy URI MLflow takes, without the
        password (give it to the server as PGPASSWORD, which libpq reads, so it is on no command line)."""
        self.psql(f"CREATE USER \"{user}\" WITH PASSWORD '{password}'")
        self.psql(f'CREATE DATABASE "{database}" OWNER "{user}"')
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def dump(self, database: str) -> str:
        result = self.run("pg_dump", "-d", database, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        if self.running:
            _run(
                self._as_owner(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop"]
                ),
                timeout=60,
            )
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> Postgres:
    """initdb + pg_ctl in a new folder under the system temp dir (not pytest's, which is private to
    root), as the ``postgres`` user when we are root (postgres refuses to run as root), on a free port
    bound to 127.0.0.1 only, trust auth on the unix socket for the superuser, passwords over TCP."""
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        raise Unavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {POSTGRES_INSTALL}")
    user: str | None = None
    if os.geteuid() == 0:
        for candidate in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(candidate)
                user = candidate
                break
        if user is None:
            raise Unavailable("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
    superuser = user or pwd.getpwuid(os.geteuid()).pw_name
    root = Path(tempfile.mkdtemp(prefix="ae-batch-pg-"))
    root.chmod(0o755)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port()
    pg = Postgres(root, port, bindir, user, superuser, running=False)
    init = _run(
        pg._as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                superuser,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ]  # fmt: skip
        ),
        timeout=120,
    )
    if init.returncode != 0:
        pg.stop()
        raise Unavailable(f"initdb failed (exit {init.returncode}): {init.stderr.strip()[-2000:]}")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    start = _run(
        pg._as_owner(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(root / "data"),
                "-l",
                str(root / "server.log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        ),
        timeout=60,
    )
    if start.returncode != 0:
        pg.stop()
        raise Unavailable(f"PostgreSQL failed to start: {start.stdout.strip()}\n{_tail(root / 'server.log')}")
    pg.running = True
    return pg


# --- MLflow server ------------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Stop the server and its workers (it runs in its own process group, which we created)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_mlflow_server(
    mlflow_exe: str,
    backend_store_uri: str,
    artifacts_destination: Path,
    log: Path,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> MlflowServer:
    """``mlflow server`` on 127.0.0.1:<free port> with proxied artifacts; waits for ``/health``.

    Its job runner (GenAI evaluation jobs, 8 processes) is switched off: ae-batch never uses it."""
    port = free_port()
    env = {**(env if env is not None else os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        mlflow_exe, "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", str(artifacts_destination),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "2",
        *extra_args,
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", process, log)
    if not _wait(lambda: process.poll() is not None or _answers(server.url), timeout):
        server.stop()
        raise Unavailable(f"mlflow server did not answer within {timeout:.0f} s:\n{_tail(log)}")
    if process.poll() is not None:
        raise Unavailable(f"mlflow server exited ({process.returncode}):\n{_tail(log)}")
    return server
