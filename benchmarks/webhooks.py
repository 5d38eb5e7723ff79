"""8. Postmark's webhook records per second through ``events.wsgi_app()``, one process.

Two ways, each against the least any hand-written webhook handler does (``json.loads`` the body,
one single-row ``INSERT`` and its commit with SQLAlchemy Core, on the same database in the same
process):

- **in-process**: the harness calls the WSGI app itself with each record: the app's own cost
  (HTTP Basic, parsing and checking the record, storing it once).
- **over HTTP**: ``emailevents serve`` (waitress) in a process of its own, posted to by client
  connections from the harness at once, as Postmark posts: what Postmark sees.

The records are those the local Postmark server makes for messages it accepted (a Delivery for
each, Opens and Clicks, some Bounces, the SubscriptionChanges their suppressions make, some
SpamComplaints), and one post in five is a record posted already: Postmark delivers at least once.
On SQLite the database is a file of its own in SQLite's default mode (a rollback journal, synced
at every commit), as an application that did not choose otherwise has it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from emailevents import EmailEvents, OutboxSender
from emailevents import metadata as engine_tables
from emailevents.testing import memory_app
from emailevents.testing.fake_postmark import FakePostmark
from emailevents.web import WEBHOOK_PATH

from . import models
from .app import REGISTRY, TOKEN, application_name
from .sections import Context
from .services import REPO, free_port, stop
from .stats import figure, ratio

__all__ = [
    "DATABASE_VARIABLE",
    "INSERT",
    "IN_PROCESS",
    "OVER_HTTP",
    "application",
    "postmark_records",
    "posts",
    "receiver",
    "throughput",
]

DATABASE_VARIABLE = "EMAILEVENTS_BENCH_WEBHOOK_DB"
AUTH = ("postmark", "bench-webhook-pass")
AUTHORIZATION = "Basic " + base64.b64encode(":".join(AUTH).encode()).decode("ascii")
REPEATED = 5  # one post in five is a record posted already
SERVER_THREADS = 4

IN_PROCESS = "wsgi_app() in-process"
OVER_HTTP = "emailevents serve over HTTP"
INSERT = "INSERT + commit"

_baseline = sa.MetaData()
_records = sa.Table(
    "bench_webhook_records",
    _baseline,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("record_type", sa.String(32), nullable=False),
    sa.Column("message_id", sa.String(100)),
    sa.Column("recipient", sa.String(320)),
    sa.Column("body", sa.Text, nullable=False),
)


def webhook_engine(url: str, schema: str | None = None) -> sa.Engine:
    """The database as any application would open it: SQLite's defaults, or PostgreSQL's."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 60})
    options = {"options": f"-csearch_path={schema}"} if schema else {}
    return sa.create_engine(
        url, connect_args={"application_name": application_name(schema), **options}
    )


def application(engine: sa.Engine) -> EmailEvents:
    """The benchmark's application with its webhook route on, on ``engine``."""
    return EmailEvents(
        REGISTRY,
        celery=memory_app("emailevents-bench-webhooks"),
        session_factory=sessionmaker(engine),
        sender=OutboxSender(),
        context={"site_url": models.site_url},
        webhook_auth=AUTH,
        set_default=False,
    )


def receiver(url: str, schema: str | None = None) -> EmailEvents:
    """:func:`application` on the database at ``url``, for ``emailevents serve``."""
    return application(webhook_engine(url, schema))


# -- the records -----------------------------------------------------------------------------------


def postmark_records(messages: int) -> list[dict[str, Any]]:
    """The records the local Postmark server makes for ``messages`` messages it accepted."""
    bouncing = {i for i in range(messages) if i % 10 == 3}  # noqa: PLR2004
    with FakePostmark(tokens=(TOKEN,)) as fake:
        # To a path the server itself answers 404: each post is dropped at once, never retried.
        # What is kept is what the server made: the records, in Postmark's shapes.
        fake.webhooks.configure(f"{fake.url}/__records")
        fake.activity.bounce_addresses([f"user{i}@bounce.acme.test" for i in bouncing])
        batch: list[dict[str, Any]] = [
            {
                "From": "Acme <notifications@acme.test>",
                "To": f"user{i}@{'bounce.' if i in bouncing else ''}acme.test",
                "Subject": "A new finding",
                "TextBody": "A new finding was created.",
                "Tag": "model_finding_created",
                "Metadata": {"event_id": str(uuid.uuid4())},
                "MessageStream": "outbound",
            }
            for i in range(messages)
        ]
        answered = requests.post(
            f"{fake.url}/email/batch",
            json=batch,
            headers={"X-Postmark-Server-Token": TOKEN, "Accept": "application/json"},
            timeout=60,
        )
        answered.raise_for_status()
        for i, sent in enumerate(answered.json()):
            if i in bouncing:
                continue
            fake.activity.open(sent["MessageID"])
            if i % 3 != 2:  # noqa: PLR2004
                fake.activity.click(sent["MessageID"], f"https://app.acme.test/findings/{i}")
            if i % 25 == 7:  # noqa: PLR2004
                fake.activity.spam_complaint(sent["MessageID"])
        records = [d.body for d in fake.webhooks.deliveries]
        fake.webhooks.disable()
    return records


def _renumbered(record: dict[str, Any], batch: int) -> dict[str, Any]:
    """The same record about another message: a record new to the database, for each batch."""
    copy = dict(record)
    if copy.get("MessageID"):
        copy["MessageID"] = str(uuid.uuid5(uuid.UUID(copy["MessageID"]), str(batch)))
    if isinstance(copy.get("ID"), int):
        copy["ID"] += batch * 10_000_000
    return copy


def posts(records: list[dict[str, Any]], batch: int, count: int) -> list[bytes]:
    """``count`` bodies to post: the records (renumbered for ``batch``), and one post in five a
    record posted earlier in the batch, as Postmark posts a record again it got no 200 for."""
    pick = random.Random(batch)  # noqa: S311 - not cryptography
    fresh = iter(records)
    bodies: list[bytes] = []
    for i in range(count):
        if i % REPEATED == REPEATED - 1:
            bodies.append(bodies[pick.randrange(len(bodies))])
        else:
            record = next(fresh, None)
            if record is None:
                raise ValueError(f"{count} posts need {_unique_per_batch(count)} records")
            bodies.append(json.dumps(_renumbered(record, batch)).encode())
    return bodies


def _unique_per_batch(count: int) -> int:
    return count - count // REPEATED


# -- the three ways --------------------------------------------------------------------------------


def _environ(body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": WEBHOOK_PATH,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": AUTHORIZATION,
        "wsgi.input": io.BytesIO(body),
    }


Answers = list[tuple[int, bytes]]


def _in_process(app: Callable[..., Any], bodies: list[bytes]) -> tuple[float, Answers]:
    answers: Answers = []
    status: list[int] = []

    def start_response(line: str, _headers: list[tuple[str, str]]) -> None:
        status.append(int(line[:3]))

    started = time.perf_counter()
    for body in bodies:
        answer = b"".join(app(_environ(body), start_response))
        answers.append((status.pop(), answer))
    return len(bodies) / (time.perf_counter() - started), answers


def _over_http(port: int, bodies: list[bytes], clients: int) -> tuple[float, Answers]:
    shares = [bodies[k::clients] for k in range(clients)]
    headers = {"Content-Type": "application/json", "Authorization": AUTHORIZATION}

    def post_all(share: list[bytes]) -> Answers:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        answers: Answers = []
        try:
            for body in share:
                connection.request("POST", WEBHOOK_PATH, body=body, headers=headers)
                response = connection.getresponse()
                answers.append((response.status, response.read()))
        finally:
            connection.close()
        return answers

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answered = list(pool.map(post_all, shares))
    seconds = time.perf_counter() - started
    return len(bodies) / seconds, [a for answers in answered for a in answers]


def _inserts(engine: sa.Engine, bodies: list[bytes]) -> float:
    """The least a hand-written handler does: read the JSON, insert one row, commit."""
    statement = _records.insert()
    started = time.perf_counter()
    for body in bodies:
        record = json.loads(body)
        with engine.begin() as connection:
            connection.execute(
                statement,
                {
                    "record_type": record["RecordType"],
                    "message_id": record.get("MessageID"),
                    "recipient": record.get("Recipient") or record.get("Email"),
                    "body": body.decode("utf-8"),
                },
            )
    return len(bodies) / (time.perf_counter() - started)


def _recorded(answers: Answers, side: str) -> Counter[str]:
    """What the app answered, as ``{"stored": n, "duplicate": m}``; anything but 200 fails."""
    refused = [(status, body[:200]) for status, body in answers if status != 200]  # noqa: PLR2004
    if refused:
        raise RuntimeError(f"webhooks, {side}: {len(refused)} answers not 200: {refused[:3]}")
    return Counter(json.loads(body)["recorded"] for _, body in answers)


@contextlib.contextmanager
def _served(url: str, schema: str | None, logs: Path) -> Iterator[int]:
    """``emailevents serve`` in a process of its own; its port."""
    port = free_port()
    environment = {
        **os.environ,
        DATABASE_VARIABLE: json.dumps({"url": url, "schema": schema}),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    log = (logs / "webhook-serve.log").open("wb")
    command = [sys.executable, "-c", "from emailevents.cli import main; main()", "serve"]
    process = subprocess.Popen(
        [
            *command,
            *("--app", "benchmarks.webapp:events", "--port", str(port)),
            *("--threads", str(SERVER_THREADS)),
        ],
        cwd=REPO,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "emailevents serve did not start:\n"
                    + (logs / "webhook-serve.log").read_text(errors="replace")[-3000:]
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield port
    finally:
        stop(process)
        log.close()


def throughput(ctx: Context) -> dict[str, Any]:
    """8. Records per second through the WSGI app, in-process and over HTTP, against a plain
    single-row insert and commit per record, on the profile's database."""
    count = ctx.sizes.webhook_posts
    clients = ctx.sizes.webhook_clients
    ctx.logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if ctx.config.database.startswith("sqlite"):
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="emailevents-wh-"))
            url, schema = f"sqlite:///{Path(folder) / 'webhooks.sqlite3'}", None
            database = "SQLite file, default journal (rollback, synced at every commit)"
        else:
            url, schema = ctx.config.database, ctx.config.schema
            database = "PostgreSQL"
        engine = webhook_engine(url, schema)
        stack.callback(engine.dispose)
        engine_tables.create_all(engine)
        _baseline.create_all(engine)
        app = application(engine).wsgi_app()
        port = stack.enter_context(_served(url, schema, ctx.logs))

        unique = _unique_per_batch(count)
        records = postmark_records(unique // 2 + 2)[:unique]
        batches = itertools.count(1)
        warm = min(count, 50)
        _in_process(app, posts(records, next(batches), warm))
        _over_http(port, posts(records, next(batches), warm), clients)
        _inserts(engine, posts(records, next(batches), warm))

        measured: dict[str, list[float]] = {IN_PROCESS: [], OVER_HTTP: [], INSERT: []}
        recorded: dict[str, Counter[str]] = {IN_PROCESS: Counter(), OVER_HTTP: Counter()}
        order = [IN_PROCESS, OVER_HTTP, INSERT]
        for rep in range(ctx.sizes.repeats):
            for side in order if rep % 2 == 0 else list(reversed(order)):
                bodies = posts(records, next(batches), count)
                if side == INSERT:
                    measured[side].append(_inserts(engine, bodies))
                    continue
                if side == IN_PROCESS:
                    rate, answers = _in_process(app, bodies)
                else:
                    rate, answers = _over_http(port, bodies, clients)
                measured[side].append(rate)
                recorded[side] += _recorded(answers, side)
    for side, counts in recorded.items():
        expected = {
            "stored": _unique_per_batch(count) * ctx.sizes.repeats,
            "duplicate": count // REPEATED * ctx.sizes.repeats,
        }
        if dict(counts) != expected:
            raise RuntimeError(f"webhooks, {side}: answered {dict(counts)}, not {expected}")
    kinds = Counter(r["RecordType"] for r in records)
    return {
        "database": database,
        "posts_per_batch": count,
        "repeated_share": 1 / REPEATED,
        "record_types": dict(kinds),
        "server": f"emailevents serve: waitress, {SERVER_THREADS} threads, its own process",
        "clients": clients,
        IN_PROCESS: figure(measured[IN_PROCESS], "records/s"),
        OVER_HTTP: figure(measured[OVER_HTTP], "records/s"),
        INSERT: figure(measured[INSERT], "records/s"),
        "recorded": {side: dict(counts) for side, counts in recorded.items()},
        "ratio_in_process": ratio(
            measured[IN_PROCESS], measured[INSERT], target="(reported)", met=None
        ),
        "ratio_over_http": ratio(
            measured[OVER_HTTP], measured[INSERT], target="(reported)", met=None
        ),
    }
