"""Scheduled sends end to end: ``send_at`` ahead is not sent before and is sent after, on Redis
and on RabbitMQ at once, and a cancelled emit is never sent (docs/timing.md).

Real components, as tests/test_faults.py runs them (its harness, reused): PostgreSQL, a Redis of
the test's own and a virtual host on the machine's RabbitMQ, a Celery worker process and an
``emailevents relay`` process per broker, and the local Postmark server in this process, where
messages are counted. Redis's ``visibility_timeout`` is shorter than the wait, and the broker is
looked at during the wait: it holds no message (none waiting, none unacknowledged), so neither a
visibility timeout nor RabbitMQ's ``consumer_timeout`` (server-side) can touch a schedule.

By default, three seconds ahead on Redis (a visibility timeout of one second, in the quick
subset); ten seconds ahead on RabbitMQ, and a minute ahead on both brokers at once (Redis's
visibility timeout 10 s), are ``thorough`` variants.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from emailevents.store import emits
from tests.brokers import Broker, RabbitBroker, RedisServer
from tests.conftest import POSTGRES_URL, _postgres_engine
from tests.faultapp import TEMPLATE, Config, build, write_registry
from tests.faultapp.models import Base
from tests.test_faults import Emitted, Harness, RecordingPostmark, application_name, seed

pytestmark = [pytest.mark.services]


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    schema = f"s_{uuid.uuid4().hex[:12]}"
    _postgres_engine(schema).dispose()
    try:
        yield schema
    finally:
        admin = sa.create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE :name AND pid <> pg_backend_pid()"
                ),
                {"name": f"{application_name(schema)}%"},
            )
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def running(kind: str, tmp: Path, *, visibility_timeout: float) -> Iterator[Harness]:
    """The fault tests' application on a broker of ``kind``, with a worker process and an
    ``emailevents relay`` process (one pass a second) running, and a local Postmark server of
    its own."""
    tmp.mkdir()
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(RecordingPostmark(templates=[TEMPLATE]))
        broker: Broker
        if kind == "rabbitmq":
            broker = RabbitBroker()
        else:
            broker = RedisServer(tmp / "redis")
            broker.start()
        stack.callback(broker.close)
        schema = stack.enter_context(postgres_schema())
        registry = tmp / "events.yaml"
        keys = write_registry(registry)
        config = Config(
            broker=broker.url,
            database=POSTGRES_URL,
            schema=schema,
            registry=str(registry),
            postmark=fake.url,
            runlog=str(tmp / "runs.jsonl"),
            application_name=application_name(schema),
            visibility_timeout=visibility_timeout,
        )
        celery, events, engine = build(config)
        stack.callback(engine.dispose)
        Base.metadata.create_all(engine)
        events.create_tables(engine)
        factory = sessionmaker(engine)
        world = seed(factory)
        harness = Harness(config, celery, events, engine, factory, world, keys, fake, broker, tmp)
        stack.callback(harness.stop_relays)
        harness.worker(pool="solo", concurrency=1)
        stack.callback(lambda: [w.stop() for w in harness.workers])
        harness.relay_loop()
        yield harness


@dataclass
class Schedule:
    """What one broker's side scheduled: two emits to send (one made with ``session=``, one
    without) and one cancelled."""

    harness: Harness
    send_at: datetime
    sent: list[Emitted]
    cancelled: Emitted


def schedule(harness: Harness, send_at: datetime) -> Schedule:
    def emit(i: int, *, with_session: bool) -> Emitted:
        key, cuids, recipients = harness.emit_args(i)
        if with_session:
            with harness.factory() as session:
                receipt = harness.events.emit(key, session=session, send_at=send_at, **cuids)
                session.commit()
        else:
            receipt = harness.events.emit(key, send_at=send_at, **cuids)
        return Emitted(receipt.event_id, key, recipients)

    sent = [emit(0, with_session=True), emit(1, with_session=False)]
    cancelled = emit(2, with_session=False)
    assert harness.events.cancel(cancelled.event_id) is True
    harness.emitted += sent
    return Schedule(harness, send_at, sent, cancelled)


def arrived(harness: Harness, event_id: str) -> list[datetime]:
    """When the Postmark server received each message of ``event_id``."""
    return [m.received_at for m in harness.fake.messages if m.metadata.get("event_id") == event_id]


def states(harness: Harness) -> dict[str, str]:
    with harness.factory() as session:
        rows = session.execute(sa.select(emits.c.event_id, emits.c.state))
        return {r.event_id: r.state for r in rows}


def run_schedules(
    tmp_path: Path, kinds: tuple[str, ...], *, ahead: float, visibility_timeout: float
) -> None:
    assert visibility_timeout < ahead, "the wait outlasts the visibility timeout"
    with contextlib.ExitStack() as stack:
        sides = [
            stack.enter_context(
                running(kind, tmp_path / kind, visibility_timeout=visibility_timeout)
            )
            for kind in kinds
        ]
        send_at = datetime.now(UTC) + timedelta(seconds=ahead)
        schedules = [schedule(side, send_at) for side in sides]

        # Before send_at: nothing at Postmark, nothing in the broker (waiting or unacknowledged),
        # every emit still scheduled (or cancelled) in the database. A look counts when it ended
        # before send_at (RabbitMQ's counts take a rabbitmqctl call, a second or more).
        looks = 0
        while (left := (send_at - datetime.now(UTC)).total_seconds()) > 0:
            for s in schedules:
                ids = [e.event_id for e in [*s.sent, s.cancelled]]
                seen = (
                    [arrived(s.harness, i) for i in ids],
                    s.harness.broker.pending(s.harness.config.queue),
                    [states(s.harness)[i] for i in ids],
                )
                if datetime.now(UTC) >= send_at:
                    break
                looks += 1
                assert seen == (
                    [[], [], []],
                    (0, 0),
                    ["scheduled", "scheduled", "cancelled"],
                ), f"{s.harness.broker.name}, {left:.1f}s before send_at"
            # A sixth of the wait at most (10 s for a minute): two looks or more, however long a
            # look takes on a loaded machine.
            time.sleep(min(ahead / 6, max(0.2, left - 2.5)))
        assert looks >= 2, "each side looked at before send_at"

        # After: each sent once, none before send_at; the cancelled one never, though the passes
        # that published the others found it due too (the same send_at), and one more went by.
        for s in schedules:
            s.harness.wait(
                s.harness.all_sent, "every recipient sent", timeout=60, progress=s.harness.progress
            )
        time.sleep(1.5)
        for s in schedules:
            figures = s.harness.figures()
            late = [(min(arrived(s.harness, e.event_id)) - send_at).total_seconds() for e in s.sent]
            print(  # noqa: T201 - the figures of the test
                f"\nschedule {s.harness.broker.name}: ahead={ahead}s "
                f"visibility_timeout={visibility_timeout}s looks={looks} "
                f"lateness={[f'{x:.2f}s' for x in late]} {figures}"
            )
            s.harness.assert_each_sent_once(figures, emits=2)
            assert min(late) >= 0, "sent before send_at"
            assert arrived(s.harness, s.cancelled.event_id) == []
            assert states(s.harness)[s.cancelled.event_id] == "cancelled"
            assert {states(s.harness)[e.event_id] for e in s.sent} == {"published"}
            # The last message's acknowledgement follows its outcome (acks_late): on a loaded
            # machine it may still be on its way (the full suite saw (0, 1) once).
            s.harness.wait(
                s.harness.drained, "the broker to drain", timeout=30, progress=s.harness.progress
            )


@pytest.mark.slow
@pytest.mark.thorough
def test_send_at_a_minute_ahead_is_sent_after_and_not_before_on_redis_and_rabbitmq(
    tmp_path: Path,
) -> None:
    run_schedules(tmp_path, ("redis", "rabbitmq"), ahead=60, visibility_timeout=10)


@pytest.mark.slow
@pytest.mark.thorough
def test_send_at_seconds_ahead_is_sent_after_and_not_before_on_rabbitmq(tmp_path: Path) -> None:
    """Ten seconds: RabbitMQ's counts cost a rabbitmqctl call, a second or more, a look."""
    run_schedules(tmp_path, ("rabbitmq",), ahead=10, visibility_timeout=2)


def test_send_at_seconds_ahead_is_sent_after_and_not_before_on_redis(tmp_path: Path) -> None:
    """The quick subset's variant: Redis alone, a visibility timeout of one second under a wait
    of three."""
    run_schedules(tmp_path, ("redis",), ahead=3, visibility_timeout=1)
