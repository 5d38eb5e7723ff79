"""The benchmark's application, in the harness and in worker processes of their own.

The harness starts ``python -m celery -A benchmarks.app worker ...`` with the configuration as
JSON in ``EMAILEVENTS_BENCH_CONFIG``; importing this module then builds what a real application
would: a Celery app, a sessionmaker, an ``EmailEvents`` whose ``PostmarkSender`` talks to the
local Postmark-compatible server in the harness process, and the hand-written tasks on the same
app, the same database and the same server. The harness builds the same thing with :func:`build`
to publish.

Each task run is timed in the worker (``task_prerun`` to ``task_postrun``) and written as one JSON
line to the configuration's ``runlog``: throughput is measured where the work is done, from the
first task's start to the last one's end, the same way for both sides.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery
from celery.signals import task_postrun, task_prerun
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents
from emailevents.senders.postmark import PostmarkSender

from . import baseline, fstransport, models

__all__ = ["CONFIG_VARIABLE", "REGISTRY", "Bench", "Config", "build"]

_TRANSPORTS = fstransport  # registers benchfs://, the embedded profile's broker

CONFIG_VARIABLE = "EMAILEVENTS_BENCH_CONFIG"
REGISTRY = Path(__file__).with_name("events.yaml")
TOKEN = "bench-token"  # noqa: S105 - the local server's made-up token


@dataclass(frozen=True)
class Config:
    """Everything a worker process needs, passed as JSON in ``EMAILEVENTS_BENCH_CONFIG``."""

    broker: str
    database: str
    postmark: str
    runlog: str
    queue: str = "bench"
    schema: str | None = None
    pool_size: int = 5
    transport: dict[str, Any] = field(default_factory=dict)
    batch_window: float = 0.0
    """``EmailEvents(batch_window=...)``: 0 runs each emit alone (section 9 turns it on)."""
    prefetch: int = 1
    """``worker_prefetch_multiplier``; a batching worker must hold more messages than threads."""
    sqlite_wal: bool = True
    """A SQLite database in WAL mode (the harness's default); False keeps SQLite's own defaults."""

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Config:
        return cls(**json.loads(os.environ[CONFIG_VARIABLE]))


@dataclass(frozen=True)
class Bench:
    """The application: one Celery app carrying both sides' tasks."""

    celery: Celery
    events: EmailEvents
    handwritten: baseline.HandWritten
    engine: sa.Engine
    session_factory: sessionmaker[Session]


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """SQLite as docs/operations.md recommends for an application's database: a write-ahead log
    (readers do not wait for the writer), flushed to disk at checkpoints rather than at every
    commit. The same for both sides; only emailevents writes per email."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def application_name(schema: str | None) -> str:
    """What the harness's PostgreSQL connections call themselves: one run's own name, so that
    its clean-up ends its own connections and no other run's."""
    return f"emailevents-bench-{schema}" if schema else "emailevents-bench"


def make_engine(config: Config) -> sa.Engine:
    if config.database.startswith("sqlite"):
        engine = sa.create_engine(
            config.database,
            connect_args={"timeout": 60},
            pool_size=config.pool_size,
            max_overflow=4,
        )
        if config.sqlite_wal:
            sa.event.listen(engine, "connect", _sqlite_wal)
        return engine
    connect_args: dict[str, Any] = {"application_name": application_name(config.schema)}
    if config.schema:
        connect_args["options"] = f"-csearch_path={config.schema}"
    return sa.create_engine(
        config.database, connect_args=connect_args, pool_size=config.pool_size, max_overflow=4
    )


def build(config: Config, *, queue: str | None = None) -> Bench:
    """The application for ``config``; ``queue`` overrides where its tasks are published."""
    celery = Celery("emailevents-bench", broker=config.broker, set_as_current=False)
    celery.conf.update(
        task_default_queue=queue or config.queue,
        # docs: one message reserved per process with late acks, no result backend for email.
        worker_prefetch_multiplier=config.prefetch,
        task_ignore_result=True,
        broker_transport_options=config.transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
    )
    engine = make_engine(config)
    session_factory = sessionmaker(engine)
    events = EmailEvents(
        REGISTRY,
        celery=celery,
        session_factory=session_factory,
        sender=PostmarkSender(TOKEN, api_url=config.postmark),
        context={"site_url": models.site_url},
        batch_window=config.batch_window,
        set_default=False,
    )
    handwritten = baseline.register(
        celery, session_factory, baseline.PostMarkEmailSender(TOKEN, config.postmark)
    )
    return Bench(celery, events, handwritten, engine, session_factory)


class _RunLog:
    """One JSON line per finished task run: its name, id, start and end (wall clock, seconds)."""

    def __init__(self, path: str) -> None:
        self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - open for the process
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}

    def started(self, task_id: str) -> None:
        self._started[task_id] = time.time()

    def ended(self, task_id: str, name: str, state: str | None) -> None:
        end = time.time()
        line = json.dumps(
            {
                "task": name,
                "id": task_id,
                "start": self._started.pop(task_id, end),
                "end": end,
                "state": state,
                "pid": os.getpid(),
            }
        )
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


if CONFIG_VARIABLE in os.environ:
    _config = Config.from_env()
    _bench = build(_config)
    app = _bench.celery
    _log = _RunLog(_config.runlog)

    @task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
    def _started(task_id: str, **_: Any) -> None:
        _log.started(task_id)

    @task_postrun.connect(weak=False)  # type: ignore[untyped-decorator]
    def _ended(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
        _log.ended(task_id, task.name, state)
