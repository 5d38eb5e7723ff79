"""Cross-emit batching: emits of one event in flight together share one claim statement, one
Postmark batch request and one outcome statement; a recipient failing transiently is retried
alone, in its own task.

A real Celery worker consuming real broker messages, the local Postmark-compatible server over
HTTP (it counts requests), and the delivery log on a real database.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.signals import task_received, task_revoked
from celery.worker import state as worker_state
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, Receipt, RunResult, Status, batchrun
from emailevents.demo import seed
from emailevents.demo.run import demo_events, seed_database
from emailevents.engine import BatchedEventTask, EventTask
from emailevents.senders.postmark import PostmarkSender
from emailevents.store import deliveries
from emailevents.testing import Runs, memory_app, worker
from emailevents.testing.fake_postmark import FakePostmark
from tests.brokers import RedisServer, celery_on_redis
from tests.conftest import leave_claim

SENDS = ("POST", "/email/batchWithTemplates"), ("POST", "/email/withTemplate")


@dataclass
class App:
    events: EmailEvents
    world: seed.DemoWorld
    factory: sessionmaker[Session]

    def log(self, event_ids: list[str]) -> list[sa.Row[tuple[str, str, str, str, datetime]]]:
        with self.factory() as session:
            return list(
                session.execute(
                    sa.select(
                        deliveries.c.event_id,
                        deliveries.c.recipient,
                        deliveries.c.status,
                        deliveries.c.reason,
                        deliveries.c.created_at,
                    ).where(deliveries.c.event_id.in_(event_ids))
                )
            )


def make_app(
    db_engine: sa.Engine,
    celery_app: Celery,
    fake_postmark: FakePostmark,
    *,
    timeout: float = 5,
    **batching: float,
) -> App:
    # The worker must hold more messages than it has pool slots: a batch is made of them.
    celery_app.conf.worker_prefetch_multiplier = 50
    sender = PostmarkSender("test-token", api_url=fake_postmark.url, timeout=timeout)
    factory, world = seed_database(db_engine)
    retrying = {"max_retries": 3, "retry_backoff": 0.05}
    events = demo_events(
        celery=celery_app, session_factory=factory, sender=sender, **batching, **retrying
    )
    return App(events, world, factory)


@pytest.fixture
def app(db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark) -> App:
    # A window long enough for a test's emits to meet in one batch on a loaded machine.
    return make_app(db_engine, celery_app, fake_postmark, batch_window=0.3, batch_max=500)


class Held:
    """Every slot of the worker's pool held by a task of its own until :meth:`release`, so
    that the messages arriving meanwhile wait in the buffer: a batch forms only while the pool
    is busy. Files say when to start and go on, so that it works across prefork's processes.
    Also the ids of the messages the worker received (``task_received``)."""

    def __init__(self, celery_app: Celery, slots: int) -> None:
        self.slots = slots
        self.folder = Path(tempfile.mkdtemp(prefix="emailevents-held-"))
        self.received: list[str] = []
        self.changed = threading.Condition()
        folder = self.folder

        def hold() -> None:
            (folder / f"started-{uuid.uuid4().hex}").touch()
            deadline = time.monotonic() + 30
            while not (folder / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.005)

        # Registered before the worker starts: its consumer reads the tasks it knows then.
        self.hold = celery_app.task(hold, name=f"hold-{uuid.uuid4().hex[:6]}", shared=False)

    def __enter__(self) -> Self:
        task_received.connect(self._on_received, weak=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        task_received.disconnect(self._on_received)

    def _on_received(self, *, request: object, **_: object) -> None:
        with self.changed:
            self.received.append(getattr(request, "id", ""))
            self.changed.notify_all()

    def fill(self) -> None:
        """Hold every slot: returns once each holds one."""
        for _ in range(self.slots):
            self.hold.delay()
        deadline = time.monotonic() + 30
        while len(list(self.folder.glob("started-*"))) < self.slots:
            assert time.monotonic() < deadline, "the pool did not start the holders"
            time.sleep(0.005)

    def wait_received(self, *receipts: Receipt) -> None:
        ids = {r.event_id for r in receipts}
        with self.changed:
            assert self.changed.wait_for(lambda: ids <= set(self.received), timeout=30), ids

    def release(self) -> None:
        (self.folder / "go").touch()


def sends(fake_postmark: FakePostmark) -> int:
    return sum(1 for request in fake_postmark.requests if request in SENDS)


def test_batching_is_on_by_default_and_batch_window_0_turns_it_off(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    factory, _ = seed_database(db_engine)
    sender = PostmarkSender("test-token", api_url=fake_postmark.url)
    events = demo_events(celery=celery_app, session_factory=factory, sender=sender)
    task = next(iter(events.tasks.values()))
    assert isinstance(task, BatchedEventTask)
    assert (task.batch_window, task.batch_max) == (0.05, 500)
    off = demo_events(celery=memory_app(), session_factory=factory, sender=sender, batch_window=0)
    task = next(iter(off.tasks.values()))
    assert isinstance(task, EventTask)
    assert not isinstance(task, BatchedEventTask)


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_emits_in_flight_together_share_requests_and_each_is_recorded_once(
    app: App, celery_app: Celery, fake_postmark: FakePostmark, pool: str
) -> None:
    key, cuids = seed.emits(app.world)[5]  # the finding: one recipient, owen
    with Runs() as runs, worker(celery_app, concurrency=2, pool=pool):
        receipts = [app.events.emit(key, **cuids) for _ in range(20)]
        results = runs.wait(*receipts)
    ids = [r.event_id for r in receipts]
    assert [[o.status for o in r.outcomes] for r in results] == [[Status.SENT]] * 20
    # 20 emits, fewer requests: they went out in Postmark batches.
    assert 1 <= sends(fake_postmark) < 20
    received = Counter(m.metadata["event_id"] for m in fake_postmark.messages)
    assert received == dict.fromkeys(ids, 1)
    rows = app.log(ids)
    assert sorted((r.event_id, r.recipient, r.status) for r in rows) == sorted(
        (i, "owen@acme.test", "sent") for i in ids
    )
    # Each recipient was claimed (its row inserted) before the request that carried it arrived.
    received_at = {m.metadata["event_id"]: m.received_at for m in fake_postmark.messages}
    for row in rows:
        claimed = row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC)
        assert claimed <= received_at[row.event_id]


def test_a_recipient_failing_transiently_in_a_batch_is_retried_alone(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    key, cuids = seed.emits(app.world)[6]  # the comment: owen, priya, sam
    finding_key, finding_cuids = seed.emits(app.world)[5]  # owen
    # ErrorCode 100 (maintenance) for priya's messages: transient, retried.
    fake_postmark.faults.fail_recipients({"priya@acme.test": 100})
    with Runs() as runs, worker(celery_app, concurrency=2):
        comment = app.events.emit(key, **cuids)
        findings = [app.events.emit(finding_key, **finding_cuids) for _ in range(5)]
        runs.wait(*findings)
        # The comment's first run (owen and sam sent) meets the fault before it is lifted: on a
        # loaded machine that run may come after the findings'.
        deadline = time.monotonic() + 30
        while {"owen@acme.test", "sam@acme.test"} - {
            r.recipient for r in app.log([comment.event_id]) if r.status == "sent"
        }:
            assert time.monotonic() < deadline, app.log([comment.event_id])
            time.sleep(0.02)
        fake_postmark.faults.clear()
        (result,) = runs.wait(comment, timeout=30)
    assert sorted(o.recipient for o in result.with_status(Status.SENT)) == ["priya@acme.test"]
    by_recipient = Counter(
        m.to for m in fake_postmark.messages if m.metadata["event_id"] == comment.event_id
    )
    # owen and sam went out once, in the first batch; priya only once accepted, by her retry.
    assert by_recipient == {"owen@acme.test": 1, "sam@acme.test": 1, "priya@acme.test": 1}
    rows = app.log([comment.event_id, *(f.event_id for f in findings)])
    assert {r.status for r in rows} == {"sent"}
    assert len(rows) == 3 + 5


def test_an_emit_whose_entity_is_missing_stops_alone_in_its_batch(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    key, cuids = seed.emits(app.world)[5]
    missing = {**cuids, "finding": "no-such-finding"}
    held = Held(celery_app, 2)
    with Runs() as runs, worker(celery_app, concurrency=2), held:
        held.fill()
        receipts = [app.events.emit(key, **c) for c in (cuids, missing, cuids)]
        held.wait_received(*receipts)
        held.release()
        results = runs.wait(*receipts)
    assert [[o.reason.value for o in r.outcomes] for r in results] == [
        ["sent"],
        ["entity_missing"],
        ["sent"],
    ]
    assert fake_postmark.requests.count(("POST", "/email/batchWithTemplates")) == 1
    assert sends(fake_postmark) == 1
    assert len(fake_postmark.messages) == 2


def test_an_org_toggle_switched_off_skips_every_emit_of_the_batch(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    key, cuids = seed.emits(app.world)[9]  # the breach, for globex
    with app.factory() as session:
        app.events.set_toggle(session, app.world.globex_org, key, enabled=False)
        session.commit()
    with Runs() as runs, worker(celery_app, concurrency=2):
        results = runs.wait(*[app.events.emit(key, **cuids) for _ in range(3)])
    assert [[o.reason.value for o in r.outcomes] for r in results] == [["toggle_off"]] * 3
    assert sends(fake_postmark) == 0


def test_two_copies_of_one_message_in_a_batch_send_once(
    app: App, fake_postmark: FakePostmark
) -> None:
    # A message delivered twice (a redelivery) can bring both copies into one batch.
    key, cuids = seed.emits(app.world)[6]  # the comment: owen, priya, sam
    copy = batchrun.Emit("ev-twice", cuids)
    results = batchrun.run_together(app.events.runtime, app.events.event(key), [copy, copy])
    result = results["ev-twice"]
    assert isinstance(result, RunResult)
    assert [o.status for o in result.outcomes] == [Status.SENT] * 3
    assert Counter(m.to for m in fake_postmark.messages) == {
        "owen@acme.test": 1,
        "priya@acme.test": 1,
        "sam@acme.test": 1,
    }


def test_a_recipient_suppressed_after_a_batch_claimed_it_is_settled_skipped(
    app: App, fake_postmark: FakePostmark
) -> None:
    """A batch claimed owen for ev-dead and died before sending; owen was then suppressed (a
    406 to another emit). The next batch must settle that claim, not leave it ``claimed``."""
    key, cuids = seed.emits(app.world)[6]  # the comment: owen, priya, sam
    leave_claim(app.factory, "ev-dead", key, "owen@acme.test", age=30)
    app.events.suppressions.add(["owen@acme.test"], stream="outbound")
    runtime = dataclasses.replace(app.events.runtime, claim_timeout=1.0)
    emits = [batchrun.Emit("ev-new", cuids), batchrun.Emit("ev-dead", cuids)]
    results = batchrun.run_together(runtime, app.events.event(key), emits)
    for event_id in ("ev-new", "ev-dead"):
        result = results[event_id]
        assert isinstance(result, RunResult)
        assert sorted((o.recipient, o.status.value) for o in result.outcomes) == [
            ("owen@acme.test", "skipped"),
            ("priya@acme.test", "sent"),
            ("sam@acme.test", "sent"),
        ]
    assert sorted(
        (r.event_id, r.recipient, r.status, r.reason) for r in app.log(["ev-new", "ev-dead"])
    ) == [
        ("ev-dead", "owen@acme.test", "skipped", "suppressed"),
        ("ev-dead", "priya@acme.test", "sent", "sent"),
        ("ev-dead", "sam@acme.test", "sent", "sent"),
        ("ev-new", "owen@acme.test", "skipped", "suppressed"),
        ("ev-new", "priya@acme.test", "sent", "sent"),
        ("ev-new", "sam@acme.test", "sent", "sent"),
    ]
    assert "owen@acme.test" not in {m.to for m in fake_postmark.messages}


def unacked(controller: Any, expected: int) -> int:
    """The messages the worker holds unacknowledged, once they are ``expected`` (or after 30
    s). kombu's in-memory transport does not put them back in the queue when the worker stops:
    they are read from the consumer's channel while it runs."""
    qos = controller.consumer.task_consumer.channel.qos
    deadline = time.monotonic() + 30
    while (held := len(qos._delivered) - len(qos._dirty)) != expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return held


def test_an_emit_at_low_load_goes_at_once_as_a_task_alone(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    # A window no test waits for: an emit held for it would time the wait below out.
    app = make_app(db_engine, celery_app, fake_postmark, batch_window=600, batch_max=500)
    key, cuids = seed.emits(app.world)[5]
    with Runs() as runs, worker(celery_app, concurrency=2) as controller:
        for _ in range(3):
            (result,) = runs.wait(app.events.emit(key, **cuids), timeout=30)
            assert [o.status for o in result.outcomes] == [Status.SENT]
            # Its run is over once its message is acknowledged: the pool is idle again.
            assert unacked(controller, 0) == 0
    # The pool was idle each time: each emit went alone, none waited for a batch.
    assert fake_postmark.requests.count(("POST", "/email/withTemplate")) == 3
    assert ("POST", "/email/batchWithTemplates") not in fake_postmark.requests


def test_a_message_revoked_while_it_waits_in_the_buffer_is_skipped_and_acknowledged(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    app = make_app(db_engine, celery_app, fake_postmark, batch_window=600, batch_max=3)
    key, cuids = seed.emits(app.world)[5]
    revoked: list[str] = []

    def on_revoked(*, request: object, **_: object) -> None:
        revoked.append(getattr(request, "id", ""))

    task_revoked.connect(on_revoked, weak=False)
    held = Held(celery_app, 1)
    try:
        with Runs() as runs, worker(celery_app, concurrency=1) as controller, held:
            held.fill()
            first, second = app.events.emit(key, **cuids), app.events.emit(key, **cuids)
            held.wait_received(first, second)
            celery_app.control.revoke(second.event_id)
            deadline = time.monotonic() + 30
            while second.event_id not in worker_state.revoked:
                assert time.monotonic() < deadline, "the worker did not get the revoke"
                time.sleep(0.01)
            third = app.events.emit(key, **cuids)  # the batch is full (batch_max): it goes now
            held.release()
            runs.wait(first, third, timeout=30)
            # Acknowledged, as Celery acknowledges a revoked task's message; the holder's too.
            left = unacked(controller, 0)
    finally:
        task_revoked.disconnect(on_revoked)
    assert revoked == [second.event_id]
    received = Counter(m.metadata["event_id"] for m in fake_postmark.messages)
    assert received == {first.event_id: 1, third.event_id: 1}
    assert fake_postmark.requests.count(("POST", "/email/batchWithTemplates")) == 1
    assert app.log([second.event_id]) == []
    assert left == 0


def test_a_rate_limited_task_takes_a_token_per_message_of_a_batch(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    app = make_app(db_engine, celery_app, fake_postmark, batch_window=0.05, batch_max=500)
    key, cuids = seed.emits(app.world)[5]
    app.events.tasks[key].rate_limit = "1/m"  # one token now, the next in a minute
    held = Held(celery_app, 0)
    with Runs() as runs, worker(celery_app, concurrency=2) as controller, held:
        receipts = [app.events.emit(key, **cuids) for _ in range(3)]
        held.wait_received(*receipts)
        runs.wait(receipts[0], timeout=30)
        # The first took the token and ran; the other two wait for theirs, unacknowledged.
        left = unacked(controller, 2)
    assert [m.metadata["event_id"] for m in fake_postmark.messages] == [receipts[0].event_id]
    assert app.log([r.event_id for r in receipts[1:]]) == []
    assert left == 2


def test_each_message_of_a_batch_sends_celerys_task_received_event(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    celery_app.conf.worker_send_task_events = True
    key, cuids = seed.emits(app.world)[5]
    seen: list[dict[str, object]] = []
    with celery_app.connection_for_read() as conn:
        receiver = celery_app.events.Receiver(conn, handlers={"task-received": seen.append})
        ready = threading.Event()
        receiver.on_consume_ready = lambda *_, **__: ready.set()
        listening = threading.Thread(target=receiver.capture, kwargs={"wakeup": False})
        listening.start()
        try:
            assert ready.wait(30)
            held = Held(celery_app, 2)
            with Runs() as runs, worker(celery_app, concurrency=2), held:
                held.fill()
                receipts = [app.events.emit(key, **cuids) for _ in range(4)]
                held.wait_received(*receipts)
                held.release()
                runs.wait(*receipts)
                deadline = time.monotonic() + 30
                ids = {r.event_id for r in receipts}
                while not ids <= {e["uuid"] for e in seen}:
                    assert time.monotonic() < deadline, seen
                    time.sleep(0.01)
        finally:
            receiver.should_stop = True
            listening.join(30)
    # One batch, and each of its messages announced once, with its task's name.
    assert fake_postmark.requests.count(("POST", "/email/batchWithTemplates")) == 1
    mine = [e for e in seen if e["uuid"] in ids]
    assert sorted(str(e["uuid"]) for e in mine) == sorted(ids)
    assert {e["name"] for e in mine} == {app.events.tasks[key].name}


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["soft", "hard"])
def test_the_tasks_time_limits_apply_to_a_batch_job(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark, limit: str
) -> None:
    # The prefork pool enforces time limits (as for a task alone, the threads and solo pools
    # do not). Postmark answers in 30 s, the sender gives up after 20: the limit (1 s) comes
    # first, even on a loaded machine (with a 5 s timeout, the soft limit once came after it).
    app = make_app(db_engine, celery_app, fake_postmark, timeout=20, batch_window=600, batch_max=2)
    key, cuids = seed.emits(app.world)[5]
    task = app.events.tasks[key]
    if limit == "soft":
        task.soft_time_limit = 1
    else:
        task.time_limit = 1
    fake_postmark.set_latency(30)
    held = Held(celery_app, 1)
    try:
        with worker(celery_app, concurrency=1, pool="prefork") as controller, held:
            held.fill()
            receipts = [app.events.emit(key, **cuids) for _ in range(2)]  # a full batch
            held.wait_received(*receipts)
            held.release()
            left = unacked(controller, 0)
            rows = app.log([r.event_id for r in receipts])
            with app.factory() as session:
                details = set(
                    session.scalars(
                        sa.select(deliveries.c.detail).where(
                            deliveries.c.event_id.in_([r.event_id for r in receipts])
                        )
                    )
                )
    finally:
        fake_postmark.set_latency(0)
    assert left == 0
    assert len(rows) == 2
    if limit == "soft":
        # SoftTimeLimitExceeded raised in the job, mid-request: no answer, as for a timeout,
        # kept for the message search (not the sender's timeout, 20 s: the limit's exception).
        assert {(r.status, r.reason) for r in rows} == {("claimed", "no_answer")}, rows
        assert len(details) == 1
        assert "SoftTimeLimitExceeded" in details.pop()
    else:
        # The job's process killed at 1 s: Celery acknowledges a task killed at its hard time
        # limit (acks_on_timeout), so the claims stay as the job left them, before any answer.
        assert {(r.status, r.reason) for r in rows} == {("claimed", "claimed")}, rows


@pytest.fixture
def redis_celery(tmp_path: Path) -> Iterator[tuple[Celery, RedisServer]]:
    """A Celery app on a Redis of the test's own: its worker runs Celery's event loop."""
    with celery_on_redis(tmp_path / "redis", "redis") as app_and_server:
        yield app_and_server


def test_with_an_event_loop_an_idle_pool_runs_an_emit_at_the_next_tick_a_busy_one_batches(
    db_engine: sa.Engine,
    redis_celery: tuple[Celery, RedisServer],
    fake_postmark: FakePostmark,
) -> None:
    celery_app, redis = redis_celery
    # A window no test waits for: an emit held for it would time the waits below out.
    app = make_app(db_engine, celery_app, fake_postmark, batch_window=600, batch_max=3)
    key, cuids = seed.emits(app.world)[5]
    queue = celery_app.conf.task_default_queue
    held = Held(celery_app, 2)
    with Runs() as runs, worker(celery_app, concurrency=2) as controller, held:
        assert controller.consumer.hub is not None  # Celery's event loop: a flush waits a tick
        # Low load: the pool is idle (the run before acknowledged), each emit goes at once.
        for _ in range(2):
            runs.wait(app.events.emit(key, **cuids), timeout=30)
            deadline = time.monotonic() + 30
            while redis.pending(queue) != (0, 0) and time.monotonic() < deadline:
                time.sleep(0.005)
        # Every slot busy: the emits wait for each other, one batch (full at batch_max).
        held.fill()
        receipts = [app.events.emit(key, **cuids) for _ in range(3)]
        held.wait_received(*receipts)
        held.release()
        runs.wait(*receipts, timeout=30)
        deadline = time.monotonic() + 30
        while (left := redis.pending(queue)) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert left == (0, 0)  # every message acknowledged
    assert fake_postmark.requests.count(("POST", "/email/withTemplate")) == 2
    assert fake_postmark.requests.count(("POST", "/email/batchWithTemplates")) == 1
    assert len(fake_postmark.messages) == 5
