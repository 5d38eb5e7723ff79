"""The application the fault tests run in Celery worker processes of their own.

A test writes a registry and a configuration, then starts
``python -m celery -A tests.faultapp worker ...`` with ``FAULTAPP_CONFIG`` holding that
configuration as JSON. Importing this module then builds what a real application would: a Celery
app on the test's broker (Redis or RabbitMQ) with the settings ``docs/operations.md`` gives, a
sessionmaker on the test's PostgreSQL schema, and an ``EmailEvents`` whose ``PostmarkSender``
talks to the local Postmark-compatible server of the test process over HTTP. The test process
builds the same thing with :func:`build` to emit, and
``emailevents relay --app tests.faultapp:events`` finds it here.

Every task run is logged to the configuration's ``runlog`` (one JSON line per start and end), so a
test can tell which worker ran what, and when.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery
from celery.signals import celeryd_init, task_postrun, task_prerun, worker_process_init
from sqlalchemy.orm import sessionmaker

from emailevents import EmailEvents
from emailevents.senders.postmark import PostmarkSender

CONFIG_VARIABLE = "FAULTAPP_CONFIG"
TEMPLATE = {
    "Name": "Fault note",
    "Alias": "fault-note",
    "Subject": "{{subject}}",
    "TextBody": "{{org_name}}: note {{n}} for {{name}}",
}
NOTE_EVENTS = 15
TEAM_EVENTS = 5


@dataclass(frozen=True)
class Config:
    """Everything a worker process needs to know, passed as JSON in ``FAULTAPP_CONFIG``."""

    broker: str
    database: str
    schema: str
    registry: str
    postmark: str
    runlog: str
    queue: str = "faults"
    sender_timeout: float = 2.0
    claim_timeout: float = 6.0
    visibility_timeout: float = 10.0
    max_retries: int = 10
    retry_backoff: float = 0.2
    retry_backoff_max: float = 2.0
    redeliver_after: float = 20.0
    application_name: str = "emailevents-faultapp"
    # Cross-emit batching (docs/performance.md#cross-emit-batching-design): off (0) unless a test
    # asks; on, the worker must hold more messages than it has pool slots.
    batch_window: float = 0.0
    batch_max: int = 500
    prefetch_multiplier: int = 1
    transport: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # Celery settings, applied last

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Config:
        return cls(**json.loads(os.environ[CONFIG_VARIABLE]))


def write_registry(path: Path) -> list[str]:
    """Write the fault tests' registry (20 events) to ``path``; return the event keys."""
    lines = [
        "version: 1",
        "defaults:",
        '  from: "Fault Tests <faults@acme.test>"',
        "entities:",
        "  Org: tests.faultapp.models:Org",
        "  Person: tests.faultapp.models:Person",
        "  Team: tests.faultapp.models:Team",
        "events:",
    ]
    keys = []
    for n in range(NOTE_EVENTS + TEAM_EVENTS):
        team = n >= NOTE_EVENTS
        key = f"fault_{'team' if team else 'note'}_{n:02d}"
        keys.append(key)
        lines += [
            f"  {key}:",
            "    toggle: always",
            "    template: fault-note",
        ]
        if team:
            lines += [
                "    entities: {org: Org, team: Team}",
                f'    subject: "Team note {n} for {{team.name}}"',
                "    recipients: tests.faultapp.models:team_members",
                "    data:",
                '      org_name: "{org.name}"',
                f'      n: "{n}"',
                '      name: "{team.name}"',
            ]
        else:
            lines += [
                "    entities: {org: Org, person: Person}",
                f'    subject: "Note {n} for {{person.name}}"',
                '    to: "{person.name} <{person.email}>"',
                "    data:",
                '      org_name: "{org.name}"',
                f'      n: "{n}"',
                '      name: "{person.name}"',
            ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return keys


def make_engine(config: Config) -> sa.Engine:
    return sa.create_engine(
        config.database,
        connect_args={
            "options": f"-csearch_path={config.schema}",
            "application_name": config.application_name,
        },
        pool_size=5,
        pool_pre_ping=True,
    )


def build(config: Config) -> tuple[Celery, EmailEvents, sa.Engine]:
    """The Celery app and EmailEvents of the fault tests' application."""
    celery = Celery("faultapp", broker=config.broker, set_as_current=False)
    celery.conf.update(
        task_default_queue=config.queue,
        # docs/operations.md: late acks, requeue when a pool process dies, one message reserved
        # per process (more with batching: a batch is made of the messages the worker holds), no
        # result backend for email tasks.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=config.prefetch_multiplier,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    if config.broker.startswith("amqp"):
        celery.conf.update(
            # docs/operations.md, RabbitMQ: quorum queues (replicated, and a delivery count);
            # a topic exchange, so that countdowns (retries) wait in RabbitMQ's delayed-delivery
            # queues instead of unacknowledged in the worker.
            task_default_queue_type="quorum",
            task_default_exchange_type="topic",
            # A publish returns once RabbitMQ has the message (publisher confirms): one sent
            # into a connection that just died raises, and the emit stays pending for the relay.
            broker_transport_options={"confirm_publish": True, **config.transport},
        )
    else:
        celery.conf.update(
            broker_transport_options={
                "visibility_timeout": config.visibility_timeout,
                "socket_timeout": 5,
                "socket_connect_timeout": 2,
                # Look for unacknowledged messages to restore every second, not every hundred
                # (a sweep every 10 s that scans on every 10th sweep, by default); and let go
                # of the restore lock soon should a worker be killed while holding it.
                "unacked_restore_interval": 1,
                "unacked_restore_throttle": 1,
                "unacked_mutex_expire": 10,
                **config.transport,
            },
        )
    celery.conf.update(config.settings)
    engine = make_engine(config)
    events = EmailEvents(
        config.registry,
        celery=celery,
        session_factory=sessionmaker(engine),
        sender=PostmarkSender("test-token", api_url=config.postmark, timeout=config.sender_timeout),
        max_retries=config.max_retries,
        retry_backoff=config.retry_backoff,
        retry_backoff_max=config.retry_backoff_max,
        claim_timeout=config.claim_timeout,
        redeliver_after=config.redeliver_after,
        batch_window=config.batch_window,
        batch_max=config.batch_max,
        set_default=False,
    )
    return celery, events, engine


_nodename: str | None = None


def _named(sender: str, **_: Any) -> None:
    # The worker's node name (``w1@host``), before the pool forks: an emit of a batched job has
    # no request of its own to carry it.
    global _nodename  # noqa: PLW0603 - one per worker process, inherited by its pool
    _nodename = sender


def _log_run(what: str, task_id: str, task: Any) -> None:
    request = getattr(task, "request", None)
    line = {
        "what": what,
        "task_id": task_id,
        "retries": getattr(request, "retries", 0) or 0,
        "host": getattr(request, "hostname", None) or _nodename or socket.gethostname(),
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "t": time.time(),
    }
    with Path(_config.runlog).open("a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


def _fresh_connections(**_: Any) -> None:
    # A forked pool process must not share the parent's database connections.
    _engine.dispose(close=False)


def _started(task_id: str, task: Any, **_: Any) -> None:
    if task.name != "emailevents.relay":
        _log_run("start", task_id, task)


def _ended(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    if task.name != "emailevents.relay":
        _log_run(f"end:{state}", task_id, task)


if CONFIG_VARIABLE in os.environ:
    _config = Config.from_env()
    app, events, _engine = build(_config)
    celeryd_init.connect(_named, weak=False)
    worker_process_init.connect(_fresh_connections, weak=False)
    task_prerun.connect(_started, weak=False)
    task_postrun.connect(_ended, weak=False)
