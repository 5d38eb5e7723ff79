"""Cross-emit batching: emits of one event in flight together share one claim statement, one
Postmark batch request and one outcome statement; a recipient failing transiently is retried
alone, in its own task.

A real Celery worker consuming real broker messages, the local Postmark-compatible server over
HTTP (it counts requests), and the delivery log on a real database.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, RunResult, Status, batchrun
from emailevents.demo import seed
from emailevents.demo.run import demo_events, seed_database
from emailevents.engine import BatchedEventTask, EventTask
from emailevents.senders.postmark import PostmarkSender
from emailevents.store import deliveries
from emailevents.testing import Runs, worker
from emailevents.testing.fake_postmark import FakePostmark

SENDS = ("POST", "/email/batchWithTemplates"), ("POST", "/email/withTemplate")


@dataclass
class App:
    events: EmailEvents
    world: seed.DemoWorld
    factory: sessionmaker[Session]

    def log(self, event_ids: list[str]) -> list[sa.Row[tuple[str, str, str, datetime]]]:
        with self.factory() as session:
            return list(
                session.execute(
                    sa.select(
                        deliveries.c.event_id,
                        deliveries.c.recipient,
                        deliveries.c.status,
                        deliveries.c.created_at,
                    ).where(deliveries.c.event_id.in_(event_ids))
                )
            )


@pytest.fixture
def app(db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark) -> App:
    # The worker must hold more messages than it has pool slots: a batch is made of them.
    celery_app.conf.worker_prefetch_multiplier = 50
    sender = PostmarkSender("test-token", api_url=fake_postmark.url, timeout=5)
    factory, world = seed_database(db_engine)
    # A window long enough for a test's emits to meet in one batch on a loaded machine.
    batching = {"batch_window": 0.3, "batch_max": 500}
    retrying = {"max_retries": 3, "retry_backoff": 0.05}
    events = demo_events(
        celery=celery_app, session_factory=factory, sender=sender, **batching, **retrying
    )
    return App(events, world, factory)


def sends(fake_postmark: FakePostmark) -> int:
    return sum(1 for request in fake_postmark.requests if request in SENDS)


def test_batching_is_off_unless_asked_for(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    factory, _ = seed_database(db_engine)
    sender = PostmarkSender("test-token", api_url=fake_postmark.url)
    events = demo_events(celery=celery_app, session_factory=factory, sender=sender)
    task = next(iter(events.tasks.values()))
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
    with Runs() as runs, worker(celery_app, concurrency=2):
        receipts = [app.events.emit(key, **c) for c in (cuids, missing, cuids)]
        results = runs.wait(*receipts)
    assert [[o.reason.value for o in r.outcomes] for r in results] == [
        ["sent"],
        ["entity_missing"],
        ["sent"],
    ]
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
