"""Transient failures retry with backoff, for the failed recipients only; permanent ones never do.

A real Celery worker, the local Postmark-compatible server failing on demand, PostmarkSender over
HTTP, and the delivery log on a real database.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, OutboxSender, Reason, Status
from emailevents.demo import seed
from emailevents.demo.run import demo_events, seed_database
from emailevents.retries import countdown
from emailevents.senders.postmark import PostmarkSender
from emailevents.store import deliveries
from emailevents.testing import Runs, memory_app, worker
from emailevents.testing.fake_postmark import FakePostmark


@dataclass
class App:
    events: EmailEvents
    world: seed.DemoWorld
    factory: sessionmaker[Session]

    def log(self, event_id: str) -> dict[str, tuple[str, str]]:
        with self.factory() as session:
            rows = session.execute(
                sa.select(deliveries.c.recipient, deliveries.c.status, deliveries.c.reason).where(
                    deliveries.c.event_id == event_id
                )
            )
            return {r.recipient: (r.status, r.reason) for r in rows}


@pytest.fixture
def app(db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark) -> App:
    factory, world = seed_database(db_engine)
    events = demo_events(
        celery=celery_app,
        session_factory=factory,
        sender=PostmarkSender("test-token", api_url=fake_postmark.url, timeout=5),
        max_retries=3,
        retry_backoff=0.05,
    )
    return App(events, world, factory)


def emit(app: App, index: int) -> tuple[str, dict[str, str]]:
    return seed.emits(app.world)[index]


def test_transient_failures_are_retried_until_sent_once(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_next(1, status=500)
    fake_postmark.faults.fail_next(1, status=429)
    key, cuids = emit(app, 5)  # the finding: one recipient
    with Runs() as runs, worker(celery_app):
        receipt = app.events.emit(key, **cuids)
        (result,) = runs.wait(receipt)
    assert [(o.status, o.recipient) for o in result.outcomes] == [(Status.SENT, "owen@acme.test")]
    assert [m.to for m in fake_postmark.messages] == ["owen@acme.test"]
    assert len(fake_postmark.requests) == 3
    assert app.log(receipt.event_id) == {"owen@acme.test": ("sent", "sent")}


def test_only_the_recipients_that_failed_are_retried(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    key, cuids = emit(app, 6)  # the comment: owen, priya, sam in one batch
    with Runs() as runs, worker(celery_app):
        # The first batch fails as a whole (HTTP 500): all three are retried together.
        fake_postmark.faults.fail_next(1, status=500)
        first = app.events.emit(key, **cuids)
        runs.wait(first)
    assert sorted(m.to for m in fake_postmark.messages) == [
        "owen@acme.test",
        "priya@acme.test",
        "sam@acme.test",
    ]
    # Now a retry after a partial success: owen was sent, so only the others are claimed again.
    with app.factory() as session:
        session.execute(
            sa.update(deliveries)
            .where(
                deliveries.c.event_id == first.event_id, deliveries.c.recipient != "owen@acme.test"
            )
            .values(status="retry", reason="transient_error")
        )
        session.commit()
    fake_postmark.reset()
    again = app.events.run(key, first.event_id, **cuids)
    assert sorted(o.recipient for o in again.with_status(Status.SENT)) == [
        "priya@acme.test",
        "sam@acme.test",
    ]
    assert [o.reason for o in again.with_status(Status.SKIPPED)] == [Reason.ALREADY_RECORDED]
    assert sorted(m.to for m in fake_postmark.messages) == ["priya@acme.test", "sam@acme.test"]


def test_a_permanent_error_is_recorded_once_and_never_retried(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_recipients({"priya@acme.test": 406})
    key, cuids = emit(app, 6)
    with Runs() as runs, worker(celery_app):
        receipt = app.events.emit(key, **cuids)
        (result,) = runs.wait(receipt)
    failed = result.with_status(Status.FAILED)
    assert [(o.recipient, o.reason) for o in failed] == [("priya@acme.test", Reason.REJECTED)]
    assert failed[0].detail.startswith("ErrorCode 406")
    assert len(fake_postmark.requests) == 1
    assert app.log(receipt.event_id)["priya@acme.test"] == ("failed", "rejected")


@contextmanager
def task_events(app: Celery) -> Iterator[list[dict[str, Any]]]:
    """Celery's task events, as Flower and `celery events` receive them, while the block runs."""
    app.conf.worker_send_task_events = True
    seen: list[dict[str, Any]] = []
    listening = threading.Event()
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        consume_ready = receiver.on_consume_ready

        def on_consume_ready(*args: Any, **kwargs: Any) -> None:
            consume_ready(*args, **kwargs)
            listening.set()

        receiver.on_consume_ready = on_consume_ready
        thread = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "wakeup": False}, daemon=True
        )
        thread.start()
        assert listening.wait(5)
        try:
            yield seen
        finally:
            receiver.should_stop = True
            thread.join(5)


def wait_for(events: list[dict[str, Any]], kind: str) -> None:
    deadline = time.monotonic() + 10
    while not any(e["type"] == kind for e in events) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_run_whose_every_recipient_failed_is_a_failed_task_and_an_error_line(
    app: App, celery_app: Celery, fake_postmark: FakePostmark, caplog: pytest.LogCaptureFixture
) -> None:
    everyone = {"owen@acme.test": 406, "priya@acme.test": 406, "sam@acme.test": 300}
    fake_postmark.faults.fail_recipients(everyone)
    key, cuids = emit(app, 6)  # the comment: owen, priya, sam
    with task_events(celery_app) as events, Runs() as runs, worker(celery_app):
        receipt = app.events.emit(key, **cuids)
        (result,) = runs.wait(receipt)
        wait_for(events, "task-failed")
        # The message was acknowledged, not left to be redelivered.
        assert (
            celery_app.connection_for_read()
            .default_channel.queue_declare(celery_app.conf.task_default_queue, passive=True)
            .message_count
            == 0
        )
    assert {o.status for o in result.outcomes} == {Status.FAILED}
    (failed,) = [e for e in events if e["type"] == "task-failed"]
    assert failed["uuid"] == receipt.event_id
    assert "DeliveryError" in failed["exception"]
    assert f"'{key}' ({receipt.event_id}) sent nothing" in failed["exception"]
    assert "priya@acme.test: rejected (ErrorCode 406" in failed["exception"]
    assert not any(e["type"] in ("task-succeeded", "task-retried") for e in events)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "emailevents"]
    assert sorted(r.recipient for r in errors) == sorted(everyone)  # type: ignore[attr-defined]
    assert {(r.event_key, r.event_id, r.reason) for r in errors} == {  # type: ignore[attr-defined]
        (key, receipt.event_id, "rejected")
    }
    # Celery records it as expected: no traceback of ours among its errors.
    assert not [
        r for r in caplog.records if r.name.startswith("celery") and r.levelno >= logging.ERROR
    ]
    assert len(fake_postmark.requests) == 1  # a failed task is not retried


def test_a_run_that_sent_to_someone_is_a_successful_task(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_recipients({"priya@acme.test": 406})
    key, cuids = emit(app, 6)
    with task_events(celery_app) as events, Runs() as runs, worker(celery_app):
        receipt = app.events.emit(key, **cuids)
        runs.wait(receipt)
        wait_for(events, "task-succeeded")
    ends = [e["type"] for e in events if e["type"] in ("task-succeeded", "task-failed")]
    assert ends == ["task-succeeded"]


def test_retries_run_out_and_the_recipient_is_recorded_failed(
    app: App, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_next(10, status=503)
    key, cuids = emit(app, 5)
    with Runs() as runs, worker(celery_app):
        receipt = app.events.emit(key, **cuids)
        (result,) = runs.wait(receipt)
    assert [(o.status, o.reason) for o in result.outcomes] == [
        (Status.FAILED, Reason.TRANSIENT_ERROR)
    ]
    assert len(fake_postmark.requests) == 1 + 3  # the first try and max_retries=3
    assert fake_postmark.messages == []
    assert app.log(receipt.event_id) == {"owen@acme.test": ("failed", "transient_error")}


@pytest.fixture
def seeded_random() -> Iterator[None]:
    """The jitter's random numbers, the same on every run; the process's own restored after."""
    state = random.getstate()
    random.seed(20261202)
    yield
    random.setstate(state)


@pytest.mark.usefixtures("seeded_random")
def test_the_backoff_doubles_with_full_jitter_up_to_its_maximum() -> None:
    events = demo_events(
        celery=memory_app(),
        session_factory=sessionmaker(),
        sender=OutboxSender(),
        retry_backoff=1.0,
        retry_backoff_max=10.0,
    )
    # Full jitter: each delay is uniform in [0, ceiling]; 400 draws come within 10% of either end.
    ceilings = {0: 1.0, 1: 2.0, 2: 4.0, 3: 8.0, 4: 10.0, 5: 10.0, 30: 10.0}
    for tries, ceiling in ceilings.items():
        delays = [events.retry_delay(tries) for _ in range(400)]
        assert 0 <= min(delays) < 0.1 * ceiling, tries
        assert 0.9 * ceiling < max(delays) <= ceiling, tries


def test_a_countdown_under_a_second_is_published_as_none_where_rabbitmq_counts_seconds() -> None:
    """RabbitMQ's native delayed delivery (quorum queues) counts whole seconds and refuses 0 of
    them; elsewhere the worker waits out a countdown to the fraction. No connection is made."""
    redis = Celery("redis", broker="redis://127.0.0.1:1/0", set_as_current=False)
    classic = Celery("classic", broker="amqp://guest@127.0.0.1:1//", set_as_current=False)
    quorum = Celery("quorum", broker="amqp://guest@127.0.0.1:1//", set_as_current=False)
    quorum.conf.task_default_queue_type = "quorum"
    assert [countdown(app, 0.3) for app in (redis, classic, quorum)] == [0.3, 0.3, 0]
    assert [countdown(app, 1.5) for app in (redis, classic, quorum)] == [1.5, 1.5, 1.5]
