"""Scheduled sends: ``emit(..., send_at=)``, ``events.cancel()`` and ``emailevents cancel``, the
relay's pass that publishes what is due, and ``explain`` of a scheduled emit (docs/timing.md).

Real databases (SQLite and PostgreSQL), a real Celery app on the in-memory broker with a worker
thread. "Due" is reached by moving a stored ``send_at`` back (the relay compares it with the
clock), never by waiting; tests/test_schedules_e2e.py waits for real, with real brokers.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from celery import Celery
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, EmitArgumentError, EmitValueError, OutboxSender, Status
from emailevents.cli import main
from emailevents.demo import seed
from emailevents.demo.run import demo_events, seed_database
from emailevents.schedules import send_time
from emailevents.store import emits
from emailevents.testing import Runs, memory_app, worker
from tests.appmodule import app_module, demo_app
from tests.conftest import examples
from tests.test_relay import dead_broker

KEY = "model_finding_created"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@dataclass
class App:
    events: EmailEvents
    factory: sessionmaker[Session]
    world: seed.DemoWorld
    outbox: OutboxSender

    def cuids(self) -> dict[str, str]:
        return seed.emits(self.world)[5][1]

    def row(self, event_id: str) -> Any:
        with self.factory() as session:
            return session.execute(sa.select(emits).where(emits.c.event_id == event_id)).one()

    def states(self) -> dict[str, str]:
        with self.factory() as session:
            rows = session.execute(sa.select(emits.c.event_id, emits.c.state))
            return {r.event_id: r.state for r in rows}

    def make_due(self, *event_ids: str) -> None:
        """Move the emits' ``send_at`` a second into the past: the relay's next pass finds them
        due, as it would once their time had come."""
        with self.factory() as session:
            session.execute(
                sa.update(emits)
                .where(emits.c.event_id.in_(event_ids))
                .values(send_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            session.commit()


@pytest.fixture
def app(db_engine: sa.Engine, celery_app: Celery, outbox: OutboxSender) -> App:
    factory, world = seed_database(db_engine)
    events = demo_events(celery=celery_app, session_factory=factory, sender=outbox)
    return App(events, factory, world, outbox)


def later(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)


# -- send_at is checked, and brought to UTC --------------------------------------------------------


def test_a_naive_send_at_is_refused_naming_the_event_and_the_fix(app: App) -> None:
    naive = datetime(2026, 12, 24, 9, 0)  # noqa: DTZ001 - the mistake under test
    with pytest.raises(EmitValueError) as raised:
        app.events.emit(KEY, send_at=naive, **app.cuids())
    assert str(raised.value) == (
        "event 'model_finding_created': send_at=2026-12-24T09:00:00 has no timezone, so the "
        "moment it names is not known; pass an aware datetime: send_at=datetime.now(UTC) + "
        "timedelta(hours=1), or naive.replace(tzinfo=ZoneInfo('Europe/Paris')) for a local time"
    )
    assert isinstance(raised.value, ValueError)
    assert app.states() == {}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-12-24T09:00:00Z", "str '2026-12-24T09:00:00Z'"),
        (date(2026, 12, 24), "date datetime.date(2026, 12, 24)"),
        (1798102800, "int 1798102800"),
    ],
)
def test_a_send_at_that_is_not_a_datetime_is_refused(app: App, value: Any, shown: str) -> None:
    with pytest.raises(EmitArgumentError) as raised:
        app.events.emit(KEY, send_at=value, **app.cuids())
    assert str(raised.value) == (
        f"event 'model_finding_created': send_at must be a timezone-aware datetime, got {shown} "
        "(pass, for example, send_at=datetime.now(UTC) + timedelta(hours=1))"
    )
    assert isinstance(raised.value, TypeError)
    assert app.states() == {}


OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 2),  # noqa: DTZ001 - hypothesis draws naive, then zones them
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
)


@settings(max_examples=examples(600), deadline=None)
@given(moment=MOMENTS, zone=OFFSETS | st.sampled_from([ZoneInfo("Europe/Paris"), UTC]))
def test_an_aware_send_at_names_the_same_moment_in_utc(moment: datetime, zone: Any) -> None:
    aware = moment.replace(tzinfo=zone)
    due = send_time("k", aware, now=NOW)
    if aware > NOW:
        assert due == aware
        assert due is not None
        assert due.utcoffset() == timedelta(0)
    else:
        assert due is None, "a time not after now sends now"


@settings(max_examples=examples(300), deadline=None)
@given(moment=MOMENTS)
def test_a_naive_send_at_is_always_refused(moment: datetime) -> None:
    with pytest.raises(EmitValueError, match=r"^event 'k': send_at=.* has no timezone"):
        send_time("k", moment, now=NOW)


def test_send_at_none_is_now() -> None:
    assert send_time("k", None, now=NOW) is None


# -- stored, not published; the relay publishes it when due ----------------------------------------


@pytest.mark.parametrize("with_session", [True, False], ids=["session", "alone"])
def test_a_scheduled_emit_is_stored_and_published_by_the_relay_once_due(
    app: App, celery_app: Celery, published: list[dict[str, Any]], with_session: bool
) -> None:
    send_at = later(hours=1)
    if with_session:
        with app.factory() as session:
            receipt = app.events.emit(KEY, session=session, send_at=send_at, **app.cuids())
            session.commit()
    else:
        receipt = app.events.emit(KEY, send_at=send_at, **app.cuids())
    row = app.row(receipt.event_id)
    assert (row.state, row.cuids) == ("scheduled", app.cuids())
    stored = row.send_at if row.send_at.tzinfo else row.send_at.replace(tzinfo=UTC)
    assert stored == send_at
    assert app.events.relay().published == 0, "not due: the relay leaves it"
    assert published == []

    app.make_due(receipt.event_id)
    with Runs() as runs, worker(celery_app):
        result = app.events.relay()
        assert (result.published, result.scheduled, result.failed) == (1, 1, 0)
        (run,) = runs.wait(receipt)
    assert [p["headers"]["id"] for p in published] == [receipt.event_id]
    assert [o.recipient for o in run.with_status(Status.SENT)] == ["owen@acme.test"]
    assert app.row(receipt.event_id).state == "published"
    assert app.events.relay().published == 0, "published once"


def test_due_emits_run_in_a_batching_worker_each_sent_once(app: App) -> None:
    """The relay publishes due emits as any: a worker batching them (``batch_window``) runs
    them together, each once."""
    celery = memory_app()
    celery.conf.worker_prefetch_multiplier = 50  # a batch is made of the messages it holds
    batched = demo_events(
        celery=celery, session_factory=app.factory, sender=app.outbox, batch_window=0.05
    )
    receipts = [batched.emit(KEY, send_at=later(hours=1), **app.cuids()) for _ in range(10)]
    app.make_due(*(r.event_id for r in receipts))
    with Runs() as runs, worker(celery, concurrency=2):
        assert batched.relay().scheduled == 10
        results = runs.wait(*receipts)
    assert [[o.status for o in r.outcomes] for r in results] == [[Status.SENT]] * 10
    sent = Counter(m.message.metadata["event_id"] for m in app.outbox.messages)
    assert sent == dict.fromkeys((r.event_id for r in receipts), 1)


def test_a_scheduled_emit_of_a_rolled_back_transaction_is_gone(app: App) -> None:
    with app.factory() as session:
        app.events.emit(KEY, session=session, send_at=later(minutes=5), **app.cuids())
        session.rollback()
    assert app.states() == {}


@pytest.mark.parametrize("with_session", [True, False], ids=["session", "alone"])
def test_a_send_at_in_the_past_sends_now(
    app: App, published: list[dict[str, Any]], with_session: bool
) -> None:
    past = datetime(2020, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    if with_session:
        with app.factory() as session:
            receipt = app.events.emit(KEY, session=session, send_at=past, **app.cuids())
            session.commit()
        assert app.row(receipt.event_id).send_at is None
    else:
        receipt = app.events.emit(KEY, send_at=past, **app.cuids())
        assert app.states() == {}, "published at once, as an emit without send_at"
    assert [p["headers"]["id"] for p in published] == [receipt.event_id]
    assert app.events.cancel(receipt.event_id) is False


def test_a_due_emit_whose_publish_fails_stays_for_the_next_pass(
    app: App, published: list[dict[str, Any]]
) -> None:
    receipt = app.events.emit(KEY, send_at=later(hours=1), **app.cuids())
    app.make_due(receipt.event_id)
    broker_down = demo_events(celery=dead_broker(), session_factory=app.factory, sender=app.outbox)
    result = broker_down.relay()
    assert (result.published, result.failed) == (0, 1)
    row = app.row(receipt.event_id)
    assert (row.state, row.attempts) == ("pending", 1)
    assert app.events.cancel(receipt.event_id) is False, "its publish was tried: too late"
    assert app.events.relay().published == 1, "the next pass, with the broker back, publishes it"
    assert app.row(receipt.event_id).state == "published"
    # Two publishes tried: the one the dead broker refused, and the one that went out.
    assert [p["headers"]["id"] for p in published] == [receipt.event_id] * 2


# -- cancel ------------------------------------------------------------------------------------


def test_a_cancelled_emit_is_never_published(app: App, published: list[dict[str, Any]]) -> None:
    receipt = app.events.emit(KEY, send_at=later(hours=1), **app.cuids())
    assert app.events.cancel(receipt.event_id) is True
    assert app.events.cancel(receipt.event_id) is False, "cancelled once"
    app.make_due(receipt.event_id)
    assert app.events.relay().published == 0
    assert published == []
    row = app.row(receipt.event_id)
    assert row.state == "cancelled"
    assert row.cancelled_at is not None


def test_cancel_is_false_once_published_for_an_unscheduled_emit_and_an_unknown_id(
    app: App,
) -> None:
    scheduled = app.events.emit(KEY, send_at=later(hours=1), **app.cuids())
    app.make_due(scheduled.event_id)
    assert app.events.relay().published == 1
    assert app.events.cancel(scheduled.event_id) is False, "too late: published"
    with app.factory() as session:
        plain = app.events.emit(KEY, session=session, **app.cuids())
        session.commit()
    assert app.events.cancel(plain.event_id) is False
    assert app.events.cancel("no-such-id") is False
    assert app.row(plain.event_id).state == "published"


def test_cancel_racing_the_relay_never_both_cancels_and_publishes(
    app: App, published: list[dict[str, Any]]
) -> None:
    """A relay pass and cancels of the same due emits at the same moment: each emit is either
    cancelled (``True``) or published, never both, never neither."""

    def cancel_all(start: threading.Barrier, order: list[str], cancelled: dict[str, bool]) -> None:
        start.wait()
        for event_id in order:
            cancelled[event_id] = app.events.cancel(event_id)

    def relay_passes(start: threading.Barrier) -> None:
        start.wait()
        app.events.relay(limit=10)  # passes of several statements: cancels come between them
        app.events.relay()

    for round_ in range(4):
        ids = [
            app.events.emit(KEY, send_at=later(hours=1), **app.cuids()).event_id for _ in range(25)
        ]
        app.make_due(*ids)
        start = threading.Barrier(2)
        cancelled: dict[str, bool] = {}
        order = random.Random(round_).sample(ids, len(ids))
        threads = [
            threading.Thread(target=cancel_all, args=(start, order, cancelled)),
            threading.Thread(target=relay_passes, args=(start,)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        sent = {p["headers"]["id"] for p in published} & set(ids)
        yes = {event_id for event_id, ok in cancelled.items() if ok}
        assert sent.isdisjoint(yes), f"round {round_}: cancelled and published"
        assert sent | yes == set(ids), f"round {round_}: neither cancelled nor published"
        states = app.states()
        assert {states[i] for i in yes} <= {"cancelled"}
        assert {states[i] for i in sent} <= {"published"}


# -- the commands: cancel, explain, relay ----------------------------------------------------------


@pytest.fixture
def cli_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    with app_module(
        tmp_path, demo_app(tmp_path / "app.sqlite3"), monkeypatch, prefix="schedapp"
    ) as module:
        with module.events.session_factory() as session:
            module.world = seed.seed(session)
            session.commit()
        yield module


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_emailevents_cancel_says_what_it_did_and_exits_accordingly(cli_app: Any) -> None:
    cuids = seed.emits(cli_app.world)[5][1]
    send_at = datetime(2099, 12, 24, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    receipt = cli_app.events.emit(KEY, send_at=send_at, **cuids)
    event_id = receipt.event_id

    explained = invoke("explain", event_id, "--app", cli_app.ref)
    assert explained.exit_code == 0, explained.output
    assert explained.output.splitlines()[1:] == [
        "nothing sent yet: the relay publishes it when it is due"
    ]
    assert explained.output.splitlines()[0].endswith(
        "; scheduled for 2099-12-24 08:00:00 UTC (not published yet; `emailevents cancel` takes "
        "it back until then)"
    )

    done = invoke("cancel", event_id, "--app", cli_app.ref)
    assert (done.exit_code, done.output) == (0, f"{event_id}: cancelled: it will never be sent\n")
    again = invoke("cancel", event_id, "--app", cli_app.ref, "--format", "json")
    assert again.exit_code == 1
    document = json.loads(again.output)
    assert document["cancelled"] is False
    assert document["state"] == "cancelled"
    assert document["why"].startswith("not cancelled: it was cancelled before, at ")

    explained = invoke("explain", event_id, "--app", cli_app.ref)
    first, second = explained.output.splitlines()
    assert " cancelled at " in first
    assert first.endswith("(scheduled for 2099-12-24 08:00:00 UTC; never published)")
    assert second == "nothing sent: it was cancelled before the relay published it"
    as_json = json.loads(
        invoke("explain", event_id, "--app", cli_app.ref, "--format", "json").output
    )
    assert as_json["emit"]["state"] == "cancelled"
    assert as_json["emit"]["send_at"] == "2099-12-24T08:00:00+00:00"
    assert as_json["emit"]["cancelled_at"] is not None
    assert as_json["emit"]["published_at"] is None

    unknown = invoke("cancel", "nope", "--app", cli_app.ref)
    assert unknown.exit_code == 1
    assert unknown.output.startswith("nope: not cancelled: no emit with this id was scheduled")


def test_emailevents_cancel_of_a_published_emit_is_too_late(cli_app: Any) -> None:
    cuids = seed.emits(cli_app.world)[5][1]
    receipt = cli_app.events.emit(KEY, send_at=later(hours=2), **cuids)
    with cli_app.events.session_factory() as session:
        session.execute(sa.update(emits).values(send_at=datetime.now(UTC) - timedelta(minutes=1)))
        session.commit()
    relayed = invoke("relay", "--app", cli_app.ref, "--once")
    assert relayed.output == "published 1 (1 scheduled, now due), failed 0\n"
    late = invoke("cancel", receipt.event_id, "--app", cli_app.ref, "--format", "json")
    assert late.exit_code == 1
    document = json.loads(late.output)
    assert (document["cancelled"], document["state"]) == (False, "published")
    assert document["why"].startswith("not cancelled: too late, its time came (")
    explained = invoke("explain", receipt.event_id, "--app", cli_app.ref)
    assert "; published (scheduled for " in explained.output.splitlines()[0]
