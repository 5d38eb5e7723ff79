"""The services a profile runs on, and the worker processes; each stopped in ``finally``.

``postgres``: PostgreSQL (a fresh schema, dropped at the end) and a ``redis-server`` of the
harness's own on a free port. ``embedded``: a SQLite file and kombu's ``filesystem://`` transport
(folders in a temporary directory), which lets workers run in processes of their own with no
server at all. Both use the local Postmark-compatible server in the harness process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa

from emailevents.testing.fake_postmark import FakePostmark

from .app import CONFIG_VARIABLE, Config, application_name

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "RunLog",
    "ServiceError",
    "TimedPostmark",
    "Workers",
    "embedded",
    "free_port",
    "postgres",
    "stop",
]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = os.environ.get(
    "EMAILEVENTS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class TimedPostmark(FakePostmark):
    """The local Postmark-compatible server, adding up the time it spends answering the API.

    The time counted is that during which at least one request was being answered: requests
    answered at once (a sender with ``concurrency``) share one Python process, and count once.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._busy = 0.0
        self._active = 0
        self._busy_since = 0.0
        self._busy_lock = threading.Lock()

    @property
    def busy_seconds(self) -> float:
        """Seconds spent checking, rendering and recording requests since the server started."""
        with self._busy_lock:
            running = time.perf_counter() - self._busy_since if self._active else 0.0
            return self._busy + running

    def _respond(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], body: bytes
    ) -> Any:
        with self._busy_lock:
            if not self._active:
                self._busy_since = time.perf_counter()
            self._active += 1
        try:
            return super()._respond(method, path, query, headers, body)
        finally:
            with self._busy_lock:
                self._active -= 1
                if not self._active:
                    self._busy += time.perf_counter() - self._busy_since


class ServiceError(RuntimeError):
    """Raised when a service the profile needs cannot be started or reached."""


def die_with_parent() -> None:
    """In a child about to exec: get SIGTERM when the harness dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminate ``process``, and kill it if it is still there 10 s later."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _redis(directory: Path, url: str | None) -> Iterator[str]:
    """A Redis URL: ``url`` when given, else a ``redis-server`` of our own on a free port."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError("no redis-server on PATH: install it, or pass --redis-url")
    import redis  # noqa: PLC0415 - only this profile needs the client

    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = (directory / "redis.log").open("ab")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(Exception):
                if client.ping():
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop(process)
        log.close()


@contextlib.contextmanager
def _postgres_schema(url: str) -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.SQLAlchemyError as exc:
        admin.dispose()
        first = str(exc).splitlines()[0]
        raise ServiceError(f"PostgreSQL at {url} is not available: {first}") from exc
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": application_name(schema)},
            )
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def postgres(
    postmark: str, *, postgres_url: str = DEFAULT_POSTGRES_URL, redis_url: str | None = None
) -> Iterator[Config]:
    """PostgreSQL + Redis: the configuration of a profile that runs on them."""
    with (
        tempfile.TemporaryDirectory(prefix="emailevents-bench-") as tmp,
        _postgres_schema(postgres_url) as schema,
        _redis(Path(tmp) / "redis", redis_url) as broker,
    ):
        yield Config(
            broker=broker,
            database=postgres_url,
            schema=schema,
            postmark=postmark,
            runlog=str(Path(tmp) / "runs.jsonl"),
            transport={"socket_timeout": 10, "socket_connect_timeout": 5},
        )


@contextlib.contextmanager
def embedded(postmark: str) -> Iterator[Config]:
    """A SQLite file and the ``filesystem://`` transport: no server to install or start."""
    with tempfile.TemporaryDirectory(prefix="emailevents-bench-") as tmp:
        folder = Path(tmp) / "broker"
        (folder / "processed").mkdir(parents=True)
        (folder / "control").mkdir()
        yield Config(
            broker="benchfs://",  # filesystem://, written atomically: see fstransport
            database=f"sqlite:///{Path(tmp) / 'bench.sqlite3'}",
            postmark=postmark,
            runlog=str(Path(tmp) / "runs.jsonl"),
            transport={
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                "processed_folder": str(folder / "processed"),
                "control_folder": str(folder / "control"),
                "store_processed": False,
                "polling_interval": 0.005,
            },
        )


@dataclass(frozen=True)
class Run:
    """One task run as a worker logged it."""

    task: str
    id: str
    start: float
    end: float
    state: str | None
    pid: int


class RunLog:
    """Reads the task runs workers append to the configuration's ``runlog``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._offset = 0
        self._runs: dict[str, Run] = {}

    def _read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self._offset += end
        for line in data[:end].splitlines():
            run = Run(**json.loads(line))
            if run.state != "RETRY":
                self._runs[run.id] = run

    def wait(self, ids: list[str], *, timeout: float, workers: Workers | None = None) -> list[Run]:
        """The runs of ``ids``, once every one has ended.

        Raises:
            TimeoutError: some did not end in time (the message has the workers' last lines).
        """
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            missing = [i for i in ids if i not in self._runs]
            if not missing:
                return [self._runs.pop(i) for i in ids]
            if time.monotonic() > deadline:
                tail = workers.tail() if workers else ""
                raise TimeoutError(f"{len(missing)} of {len(ids)} task runs did not end\n{tail}")
            if workers is not None:
                workers.check()
            time.sleep(0.005)


class Workers:
    """``celery -A benchmarks.app worker`` processes, each in a process group of its own."""

    def __init__(
        self,
        config: Config,
        *,
        processes: int = 1,
        pool: str = "solo",
        concurrency: int = 1,
        logs: Path,
    ) -> None:
        self.config = replace(config, pool_size=max(config.pool_size, concurrency + 2))
        self.pool = pool
        self.concurrency = concurrency
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self._wanted = processes
        self._asked: set[int] = set()

    def __enter__(self) -> Self:
        try:
            for _ in range(self._wanted):
                self.add()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self) -> None:
        """Start one more worker process on the same queue."""
        n = len(self.processes) + 1
        env = {
            **os.environ,
            CONFIG_VARIABLE: self.config.to_env(),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"worker-{self.pool}-{n}.log").open("ab") as log:
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "benchmarks.app",
                        "worker",
                        "-P",
                        self.pool,
                        "-c",
                        str(self.concurrency),
                        "-Q",
                        self.config.queue,
                        "-n",
                        f"bench{n}-{uuid.uuid4().hex[:6]}@%h",
                        "--without-heartbeat",
                        "--without-gossip",
                        "--without-mingle",
                        "-l",
                        "warning",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
                )
            )

    def cpu_seconds(self) -> float:
        """User and system CPU the worker processes (and their pool children) have used."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for process in self.processes:
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
                # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name
                total += sum(int(v) for v in fields[11:15]) / tick
        return total

    def check(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise ServiceError(f"a worker exited with {process.returncode}\n{self.tail()}")

    def terminate(self) -> None:
        """Ask every process for a warm shutdown without waiting for it: a warm shutdown takes
        seconds, so workers stopped together should all be asked before any is waited for."""
        for process in self.processes:
            if process.pid not in self._asked:
                self._asked.add(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self.processes.clear()
        self._asked.clear()

    def tail(self, lines: int = 30) -> str:
        out = []
        for log in sorted(self.logs.glob(f"worker-{self.pool}-*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"== {log.name} ==\n" + "\n".join(text))
        return "\n".join(out)


def describe_postgres(url: str) -> dict[str, Any]:
    """The server's version and the commit settings that decide what a commit costs."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "version": conn.execute(sa.text("SHOW server_version")).scalar_one(),
                "synchronous_commit": conn.execute(sa.text("SHOW synchronous_commit")).scalar_one(),
                "fsync": conn.execute(sa.text("SHOW fsync")).scalar_one(),
            }
    finally:
        engine.dispose()
