"""emit(..., session=): queued once the outermost transaction commits; relayed after an outage.

Real databases (SQLite and PostgreSQL), real Celery apps: one whose broker is down (nothing
listens on its port), one on the in-memory broker with a worker.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from emailevents import EmailEvents, EmitArgumentError, OutboxSender, Status
from emailevents.demo import seed
from emailevents.demo.run import demo_events, seed_database
from emailevents.store import emits
from emailevents.testing import Runs, memory_app, worker
from tests.conftest import unavailable


@dataclass
class App:
    events: EmailEvents
    factory: sessionmaker[Session]
    world: seed.DemoWorld
    outbox: OutboxSender

    def make(self, celery: Celery) -> EmailEvents:
        """Another EmailEvents on the same database and registry, for another Celery app."""
        return demo_events(celery=celery, session_factory=self.factory, sender=self.outbox)

    def rows(self) -> list[tuple[str, str, int]]:
        with self.factory() as session:
            result = session.execute(
                sa.select(emits.c.event_id, emits.c.state, emits.c.attempts).order_by(
                    emits.c.created_at
                )
            )
            return [tuple(r) for r in result]


def finding(app: App) -> dict[str, str]:
    return seed.emits(app.world)[5][1]


def dead_broker() -> Celery:
    """A Celery app whose Redis broker is down: nothing listens on its port."""
    try:
        import redis  # noqa: F401, PLC0415 - kombu's Redis transport needs the client
    except ImportError:
        unavailable("Redis", "the redis client is not installed (pip install -e '.[dev]')")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = Celery("dead", broker=f"redis://127.0.0.1:{port}/0", set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=False, broker_connection_timeout=1)
    return app


@pytest.fixture
def app(db_engine: sa.Engine, celery_app: Celery, outbox: OutboxSender) -> App:
    factory, world = seed_database(db_engine)
    events = demo_events(celery=celery_app, session_factory=factory, sender=outbox)
    return App(events, factory, world, outbox)


def test_nothing_is_queued_before_commit_and_the_emit_runs_after_it(
    app: App, celery_app: Celery, published: list[dict[str, Any]]
) -> None:
    with Runs() as runs, worker(celery_app):
        with app.factory() as session:
            receipt = app.events.emit("model_finding_created", session=session, **finding(app))
            session.flush()
            assert published == []
            session.commit()
        assert [p["headers"]["id"] for p in published] == [receipt.event_id]
        (result,) = runs.wait(receipt)
    assert [o.recipient for o in result.with_status(Status.SENT)] == ["owen@acme.test"]
    assert app.rows() == [(receipt.event_id, "published", 0)]


def test_a_rollback_drops_the_emit(app: App, published: list[dict[str, Any]]) -> None:
    with app.factory() as session:
        app.events.emit("model_finding_created", session=session, **finding(app))
        session.rollback()
    assert published == []
    assert app.rows() == []


def test_a_connection_the_application_commits_itself_keeps_the_emit(
    app: App, db_engine: sa.Engine
) -> None:
    # The session is bound to the application's connection, which it commits without the
    # session's commit (a pattern of tests and some frameworks): the row is in it all the same.
    with db_engine.connect() as connection:
        session = Session(bind=connection)
        receipt = app.events.emit("model_finding_created", session=session, **finding(app))
        session.flush()
        connection.commit()
        session.close()
    # Committed, so published when the session's transaction ended (or else by the relay).
    assert app.rows() == [(receipt.event_id, "published", 0)]


def test_a_session_closed_without_commit_drops_the_emit(
    app: App, published: list[dict[str, Any]]
) -> None:
    session = app.factory()
    app.events.emit("model_finding_created", session=session, **finding(app))
    session.close()
    assert published == []
    assert app.rows() == []


def test_a_rolled_back_savepoint_drops_only_its_own_emits(
    app: App, published: list[dict[str, Any]]
) -> None:
    with app.factory() as session:
        kept = app.events.emit("model_finding_created", session=session, **finding(app))
        savepoint = session.begin_nested()
        app.events.emit("model_finding_created", session=session, **finding(app))
        savepoint.rollback()
        with session.begin_nested():  # released: its emit belongs to the outer transaction
            also = app.events.emit("model_finding_created", session=session, **finding(app))
        assert published == []  # releasing a savepoint is not a commit
        session.commit()
    assert sorted(p["headers"]["id"] for p in published) == sorted([kept.event_id, also.event_id])
    assert {row[1] for row in app.rows()} == {"published"}


def test_savepoints_inside_savepoints_keep_what_was_released_and_drop_what_rolled_back(
    app: App, published: list[dict[str, Any]]
) -> None:
    """The rows wait for the commit: a savepoint rolled back inside a released one drops its
    own emits only, and a released savepoint whose outer one rolls back drops its emits too."""
    emit = app.events.emit
    with app.factory() as session:
        outer = emit("model_finding_created", session=session, **finding(app))
        with session.begin_nested():
            released = emit("model_finding_created", session=session, **finding(app))
            inner = session.begin_nested()
            emit("model_finding_created", session=session, **finding(app))
            inner.rollback()
        dropped = session.begin_nested()
        with session.begin_nested():
            emit("model_finding_created", session=session, **finding(app))
        dropped.rollback()
        session.commit()
    expected = sorted([outer.event_id, released.event_id])
    assert sorted(p["headers"]["id"] for p in published) == expected
    assert sorted(row[0] for row in app.rows()) == expected


def test_an_emit_made_before_a_savepoint_outlives_its_rollback(
    app: App, published: list[dict[str, Any]]
) -> None:
    """An emit of the outer transaction is not caught up in a savepoint begun after it, even
    one whose inner savepoint was released; and a commit with a savepoint still open keeps
    that savepoint's emits."""
    emit = app.events.emit
    with app.factory() as session:
        outer = emit("model_finding_created", session=session, **finding(app))
        rolled_back = session.begin_nested()
        with session.begin_nested():
            emit("model_finding_created", session=session, **finding(app))
        rolled_back.rollback()
        session.begin_nested()
        still_open = emit("model_finding_created", session=session, **finding(app))
        session.commit()  # releases the open savepoint, then commits
    expected = sorted([outer.event_id, still_open.event_id])
    assert sorted(p["headers"]["id"] for p in published) == expected
    assert sorted(row[0] for row in app.rows()) == expected


def test_many_emits_in_one_transaction_take_as_many_statements_as_one(
    app: App, db_engine: sa.Engine, published: list[dict[str, Any]]
) -> None:
    """One INSERT for the transaction's emits, one check and one mark after the commit,
    whether it made one emit or a hundred."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def commit_emits(n: int) -> int:
        statements.clear()
        sa.event.listen(db_engine, "before_cursor_execute", count)
        with app.factory() as session:
            for _ in range(n):
                app.events.emit("model_finding_created", session=session, **finding(app))
            session.commit()
        sa.event.remove(db_engine, "before_cursor_execute", count)
        return len(statements)

    commit_emits(1)  # the first emit checks the schema, once per process
    one = commit_emits(1)
    hundred = commit_emits(100)
    assert one == hundred == 3, statements
    assert len(published) == 102
    assert {row[1] for row in app.rows()} == {"published"}


def test_a_broker_outage_at_commit_loses_nothing_and_the_relay_delivers_once(
    app: App, celery_app: Celery, published: list[dict[str, Any]]
) -> None:
    down = app.make(dead_broker())
    with app.factory() as session:
        receipts = [
            down.emit("model_finding_created", session=session, **finding(app)) for _ in range(3)
        ]
        session.commit()  # must not raise: the data is committed, the emits wait
    rows = app.rows()
    assert [r[1] for r in rows] == ["pending"] * 3
    assert rows[0][2] == 1  # the first publish failed; the others were not tried
    with app.factory() as session:
        (error,) = session.execute(
            sa.select(emits.c.last_error).where(emits.c.event_id == receipts[0].event_id)
        ).scalars()
    assert "OperationalError" in error

    with Runs() as runs, worker(celery_app):
        result = app.events.relay(grace=timedelta(minutes=10))
        assert (result.published, result.failed) == (3, 0)
        results = runs.wait(*receipts)
    assert [len(r.with_status(Status.SENT)) for r in results] == [1, 1, 1]
    assert app.events.relay(grace=timedelta(0)).published == 0
    assert {r[1] for r in app.rows()} == {"published"}
    assert len(app.outbox) == 3


def test_the_relay_waits_a_grace_period_for_the_committing_process(app: App) -> None:
    with app.factory() as session:
        session.execute(
            sa.insert(emits).values(
                event_id="ev-young",
                event_key="model_finding_created",
                task_name="x",
                cuids=finding(app),
                state="pending",
                attempts=0,
            )
        )
        session.commit()
    assert app.events.relay().published == 0
    assert app.events.relay(grace=timedelta(0)).published == 1


def test_concurrent_relays_publish_each_emit_once(
    app: App, published: list[dict[str, Any]]
) -> None:
    other = app.make(memory_app())
    with app.factory() as session:
        session.execute(
            sa.insert(emits),
            [
                {
                    "event_id": f"ev-{i:03d}",
                    "event_key": "model_finding_created",
                    "task_name": "x",
                    "cuids": finding(app),
                    "state": "pending",
                    "attempts": 0,
                }
                for i in range(120)
            ],
        )
        session.commit()
    results: list[int] = []

    def run(events: EmailEvents) -> None:
        while (done := events.relay(limit=7, grace=timedelta(0)).published) > 0:
            results.append(done)

    threads = [threading.Thread(target=run, args=(e,)) for e in (app.events, other, app.events)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ids = [p["headers"]["id"] for p in published]
    assert len(ids) == 120
    assert len(set(ids)) == 120
    assert sum(results) == 120


def test_a_scoped_session_stands_for_the_session_of_its_scope(
    app: App, published: list[dict[str, Any]]
) -> None:
    """Flask-SQLAlchemy's ``db.session`` is a ``scoped_session``: the emit is in its session."""
    scoped = scoped_session(app.factory)
    receipt = app.events.emit("model_finding_created", session=scoped, **finding(app))
    assert published == []
    scoped.rollback()
    app.events.emit("model_finding_created", session=scoped, **finding(app))
    scoped.commit()
    scoped.remove()
    assert [message["headers"]["id"] for message in published] != [receipt.event_id]
    assert len(published) == 1
    assert [row[1:] for row in app.rows()] == [("published", 0)]


def test_the_mark_after_commit_does_not_wait_for_the_wal_flush_on_postgresql(
    app: App, db_engine: sa.Engine, published: list[dict[str, Any]]
) -> None:
    """A lost mark only makes the relay publish the emit again, which its delivery log
    settles: the commit that carries the emit is the one that waits for the disk."""
    statements: list[str] = []
    sa.event.listen(db_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with app.factory() as session:
        app.events.emit("model_finding_created", session=session, **finding(app))
        session.commit()
    (mark,) = [s for s in statements if s.lstrip().upper().startswith("UPDATE EMAILEVENTS_EMITS")]
    assert ("set_config" in mark) is (db_engine.dialect.name == "postgresql")
    assert len(published) == 1
    assert [row[1:] for row in app.rows()] == [("published", 0)]


def test_session_must_be_a_sqlalchemy_session(app: App) -> None:
    with pytest.raises(EmitArgumentError, match="session= must be a SQLAlchemy Session"):
        app.events.emit("model_finding_created", session="db", **finding(app))


def test_the_relay_task_runs_a_pass_on_a_worker_for_celery_beat(
    app: App, celery_app: Celery, published: list[dict[str, Any]]
) -> None:
    with app.factory() as session:
        session.execute(
            sa.insert(emits).values(
                event_id="ev-beat",
                event_key="model_finding_created",
                task_name="x",
                cuids=finding(app),
                state="pending",
                attempts=1,
            )
        )
        session.commit()
    assert app.events.relay_task.name == "emailevents.relay"
    with Runs() as runs, worker(celery_app):
        app.events.relay_task.delay()
        (result,) = runs.wait("ev-beat")
    assert [o.recipient for o in result.with_status(Status.SENT)] == ["owen@acme.test"]
    assert app.rows() == [("ev-beat", "published", 1)]
