"""Emits that wait for a commit, and the relay that publishes what a commit left behind.

``emit(..., session=db)`` keeps a row for ``emailevents_emits`` on the session, and the rows of
a transaction are written in it, together, just before it commits (or before a savepoint
begins inside it). When the session's outermost transaction ends, the rows that are really
committed are published to the broker and marked published. Whatever rolled back (the
transaction, a savepoint, a session closed without commit) took its row with it and is not
published. The database decides, not SQLAlchemy's events, which fire for savepoints too and not
at all for a close without commit.

A publish that fails (the broker is down) never escapes ``commit()``: the row stays pending and
:func:`publish_pending` publishes it later, from ``emailevents relay`` or the
``emailevents.relay`` task.

A scheduled emit (``emit(..., send_at=)``) is written the same way, and never published by the
commit: :func:`publish_pending` publishes it once its ``send_at`` has come (docs/timing.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from . import digestsend, emitstore, schema, store

if TYPE_CHECKING:
    from celery import Task

__all__ = ["Publisher", "RelayResult", "defer", "publish_pending"]

logger = logging.getLogger("emailevents")

_SESSION_KEY = "emailevents.pending_emits"
_UNWRITTEN_KEY = "emailevents.unwritten_emits"

# One quick retry, then leave the row to the relay: a commit must not hang on a dead broker.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}


@dataclass(frozen=True)
class Publisher:
    """What the relay needs of an :class:`~emailevents.EmailEvents`: its session factory, tasks
    and setting, as they are at each use."""

    session_factory: Callable[[], Session]
    tasks: Mapping[str, Task]
    """Per event key: its task."""
    redeliver_after: timedelta
    """How long after its publish the relay looks whether an emit's task settled it."""
    digest_tasks: Mapping[str, Task] = field(default_factory=dict)
    """Per digest key: the task that sends one of its digests (:mod:`.digestsend`)."""


@dataclass(frozen=True)
class RelayResult:
    """What one relay pass did."""

    published: int
    failed: int
    redelivered: int = 0
    """Of ``published``: emits published again because their task left no settled outcome."""
    scheduled: int = 0
    """Of ``published``: scheduled emits published because their ``send_at`` had come."""
    digests: int = 0
    """Digest messages whose task was published (closed now, or not settled since)."""


@dataclass(frozen=True)
class _Outgoing:
    """An emit to publish."""

    event_id: str
    event_key: str
    cuids: Mapping[str, str]
    task: Task | None
    """``None`` when the registry has no such event any more."""


@dataclass(frozen=True)
class _Unwritten:
    """An emit's row waiting for its transaction's commit; ``made_in`` is the transaction, or
    the innermost savepoint, it was made in."""

    made_in: Any
    connection: sa.Connection
    """The session's connection for it: written on it, not through the session, so that a
    savepoint just begun does not start first."""
    row: Mapping[str, Any]


@dataclass(frozen=True)
class _Pending:
    engine: sa.Engine
    outgoing: _Outgoing


def defer(
    publisher: Publisher,
    session: Session,
    event_key: str,
    event_id: str,
    cuids: Mapping[str, str],
    *,
    send_at: datetime | None = None,
) -> None:
    """Write the emit in ``session``'s transaction; publish it once that transaction commits,
    or, with ``send_at``, leave it to the relay, which publishes it once due.

    The row is written with the others of that transaction when the session commits (or before
    a savepoint begins inside it): one ``INSERT`` for up to :data:`emitstore.BATCH` emits, rather
    than one each. A savepoint rolled back drops the emits made inside it, written or not. A
    session bound to a connection (not an engine) gets each row at once: the application may
    commit that connection without the session.
    """
    _listen()
    task = publisher.tasks[event_key]
    emit = emitstore.Emit(event_id, event_key, task.name, cuids)
    if send_at is None:
        row = emitstore.pending_row(emit, redeliver_after=publisher.redeliver_after)
    else:
        row = emitstore.scheduled_row(emit, send_at=send_at)
    connection = session.connection()  # begins the transaction the row belongs to
    if isinstance(session.get_bind(), sa.Engine):
        made_in = session.get_nested_transaction() or session.get_transaction()
        session.info.setdefault(_UNWRITTEN_KEY, []).append(_Unwritten(made_in, connection, row))
    else:
        # Bound to a connection the application holds, which it may commit itself, without the
        # session's commit: the row is written now, as any statement of its transaction is.
        emitstore.add(connection, [row])
    if send_at is not None:
        return  # the relay publishes it when due, not the commit
    pending = _Pending(connection.engine, _Outgoing(event_id, event_key, cuids, task))
    session.info.setdefault(_SESSION_KEY, []).append(pending)


_listening = False


def _listen() -> None:
    global _listening  # noqa: PLW0603 - one listener for every session, installed on first use
    if not _listening:
        sa_event.listen(Session, "after_transaction_create", _before_savepoint)
        sa_event.listen(Session, "before_commit", _write_rows)
        sa_event.listen(Session, "after_transaction_end", _after_transaction_end)
        _listening = True


def _before_savepoint(session: Session, transaction: Any) -> None:
    """Write the emits made so far before a savepoint begins (its ``SAVEPOINT`` is sent with its
    first statement, later): they belong to the transaction around it, and must not roll back
    with it. So the emits still unwritten are always those of the innermost savepoint."""
    if transaction.nested:
        _write_rows(session)


def _write_rows(session: Session) -> None:
    """Before a commit (of the transaction, or the release of a savepoint), write the emits
    waiting for it, in the transaction: the database then commits them with the rest."""
    unwritten: list[_Unwritten] | None = session.info.pop(_UNWRITTEN_KEY, None)
    if not unwritten:
        return
    by_connection: dict[sa.Connection, list[Mapping[str, Any]]] = {}
    for u in unwritten:
        by_connection.setdefault(u.connection, []).append(u.row)
    for connection, rows in by_connection.items():
        emitstore.add(connection, rows)


def _after_transaction_end(session: Session, transaction: Any) -> None:
    unwritten: list[_Unwritten] = session.info.get(_UNWRITTEN_KEY, [])
    if unwritten:
        # Ended without a commit (a commit wrote them): the rows made in it go with it.
        kept = [u for u in unwritten if not _inside(u.made_in, transaction)]
        session.info[_UNWRITTEN_KEY] = kept
    if transaction.parent is not None:  # a savepoint, or a flush's inner transaction
        return
    session.info.pop(_UNWRITTEN_KEY, None)
    pending: list[_Pending] | None = session.info.pop(_SESSION_KEY, None)
    if not pending:
        return
    try:
        _publish_committed(pending)
    except Exception:  # never out of commit(): the data is committed already
        logger.exception(
            "could not publish %d committed emit(s); the relay will",
            len(pending),
            extra={"event_ids": [p.outgoing.event_id for p in pending]},
        )


def _inside(made_in: Any, transaction: Any) -> bool:
    """Whether ``made_in`` is ``transaction`` or one of the transactions begun inside it."""
    while made_in is not None:
        if made_in is transaction:
            return True
        made_in = made_in.parent
    return False


def _publish_committed(pending: Sequence[_Pending]) -> None:
    # Each statement alone (AUTOCOMMIT): a read, then one update, with no BEGIN, COMMIT or
    # ROLLBACK round trips around them; and no connection held while the broker is slow.
    engine = pending[0].engine
    with emitstore.connect_alone(engine) as conn:
        committed = emitstore.still_pending(conn, [p.outgoing.event_id for p in pending])
    # What is not committed rolled back with its data.
    outgoing = [p.outgoing for p in pending if p.outgoing.event_id in committed]
    published, failed = _publish(outgoing, after_commit=True)
    with emitstore.connect_alone(engine) as conn:
        emitstore.mark_published(conn, published, failed, flush_wait=False)


def _publish(
    outgoing: Sequence[_Outgoing], *, after_commit: bool = False
) -> tuple[list[str], dict[str, str]]:
    """Publish each emit's task, with the event id as task id; returns the event ids published,
    and why each of the others was not.

    Right ``after_commit``, a failure is logged, and the emits after it are not tried: the
    broker is down, and the commit must not wait for it once per emit. The relay tries each.
    """
    published: list[str] = []
    failed: dict[str, str] = {}
    # One producer (one broker connection from the app's pool) for them all, not one each.
    with _producer(outgoing) as producer:
        for emit in outgoing:
            if emit.task is None:
                failed[emit.event_id] = f"no event '{emit.event_key}' in the registry any more"
                continue
            if failed and after_commit:
                failed[emit.event_id] = "not tried: the broker failed just before"
                continue
            try:
                emit.task.apply_async(
                    kwargs=dict(emit.cuids),
                    task_id=emit.event_id,
                    retry_policy=PUBLISH_RETRY_POLICY,
                    producer=producer,
                )
                published.append(emit.event_id)
            except Exception as exc:  # noqa: BLE001 - left pending: the relay publishes it later
                failed[emit.event_id] = f"{type(exc).__name__}: {exc}"
                if after_commit:
                    logger.warning(
                        "event=%s event_id=%s publish failed after commit, left for the relay: %s",
                        emit.task.name,
                        emit.event_id,
                        failed[emit.event_id],
                        extra={"event_id": emit.event_id, "task": emit.task.name},
                    )
    return published, failed


@contextmanager
def _producer(outgoing: Sequence[_Outgoing]) -> Iterator[Any]:
    """A producer of the tasks' Celery app from its pool, or ``None`` (each task its own) when
    the tasks are on more than one app."""
    apps = {id(e.task.app): e.task.app for e in outgoing if e.task is not None}
    if len(apps) != 1:
        yield None
        return
    (app,) = apps.values()
    with app.producer_or_acquire() as producer:
        yield producer


def schedule(
    publisher: Publisher,
    event_key: str,
    event_id: str,
    cuids: Mapping[str, str],
    *,
    send_at: datetime,
) -> None:
    """Write a scheduled emit made without ``session=``, in a transaction of its own, committed
    before this returns; the relay publishes it once ``send_at`` has come."""
    task = publisher.tasks[event_key]
    row = emitstore.scheduled_row(
        emitstore.Emit(event_id, event_key, task.name, cuids), send_at=send_at
    )
    with publisher.session_factory() as session:
        schema.verify(session.connection())
        emitstore.add(session, [row])
        session.commit()


def publish_pending(
    publisher: Publisher,
    *,
    limit: int = 500,
    grace: timedelta = timedelta(seconds=30),
    lease: timedelta = timedelta(minutes=5),
) -> RelayResult:
    """Publish the scheduled emits whose ``send_at`` has come; the emits still pending: those
    whose publish failed, or older than ``grace``; then publish again those whose task left no
    settled outcome ``redeliver_after`` after their publish; then close the digests due and
    publish their tasks (:mod:`.digestsend`).

    Several relays may run at once: each leases the rows it publishes, for ``lease``. ``grace``
    does not apply to scheduled emits: no committing process publishes them.
    """
    token = uuid.uuid4().hex
    with publisher.session_factory() as session:
        rows = emitstore.lease_pending(session, token, limit=limit, grace=grace, lease=lease)
        published, failed = _publish_rows(
            publisher, session, rows, redeliver_after=publisher.redeliver_after
        )
    if rows:
        logger.info(
            "relay published %d emit(s), %d failed",
            len(published),
            len(failed),
            extra={"published": len(published), "failed": len(failed)},
        )
    # After the pending ones: a due emit whose publish fails now is pending for the next pass.
    due, due_failed = _publish_due(publisher, limit=limit, lease=lease)
    again, again_failed = _publish_overdue(publisher, limit=limit)
    sent = digestsend.publish_due(
        publisher.session_factory,
        publisher.digest_tasks,
        redeliver_after=publisher.redeliver_after,
        limit=limit,
    )
    return RelayResult(
        due + len(published) + again, due_failed + len(failed) + again_failed, again, due, sent
    )


def _publish_due(publisher: Publisher, *, limit: int, lease: timedelta) -> tuple[int, int]:
    """Publish the scheduled emits whose ``send_at`` has come (the earliest first)."""
    token = uuid.uuid4().hex
    with publisher.session_factory() as session:
        rows = emitstore.lease_due(
            session, token, limit=limit, lease=lease, redeliver_after=publisher.redeliver_after
        )
        if not rows:
            return 0, 0
        published, failed = _publish_rows(
            publisher, session, rows, redeliver_after=publisher.redeliver_after
        )
    logger.info(
        "relay published %d scheduled emit(s) now due, %d failed",
        len(published),
        len(failed),
        extra={"published": len(published), "failed": len(failed)},
    )
    return len(published), len(failed)


def _publish_overdue(publisher: Publisher, *, limit: int) -> tuple[int, int]:
    """Publish again the published emits past their ``check_after`` whose task left no settled
    outcome: a message the broker lost (kombu's Redis transport loses one fetched by a worker
    killed before it noted the message as unacknowledged) or a retry that never came back.

    A run of an emit that is only slow, not lost, does no harm: the delivery log's claims let
    one run send each message, and the others find it recorded.
    """
    token = uuid.uuid4().hex
    with publisher.session_factory() as session:
        rows = emitstore.lease_overdue(
            session, token, limit=limit, redeliver_after=publisher.redeliver_after
        )
        if not rows:
            return 0, 0
        open_ = store.unsettled(session, [r.event_id for r in rows])
        emitstore.stop_watching(session, [r.event_id for r in rows if r.event_id not in open_])
        published, failed = _publish_rows(
            publisher, session, [r for r in rows if r.event_id in open_]
        )
    if published or failed:
        logger.warning(
            "relay published again %d emit(s) whose task left no settled outcome, %d failed",
            len(published),
            len(failed),
            extra={"event_ids": published, "failed": len(failed)},
        )
    return len(published), len(failed)


def _publish_rows(
    publisher: Publisher,
    session: Session,
    rows: Sequence[emitstore.Leased],
    *,
    redeliver_after: timedelta | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Publish the emits of leased ``rows``, mark them, and commit."""
    outgoing = [
        _Outgoing(r.event_id, r.event_key, r.cuids, publisher.tasks.get(r.event_key)) for r in rows
    ]
    published, failed = _publish(outgoing)
    emitstore.mark_published(session, published, failed, redeliver_after=redeliver_after)
    session.commit()
    return published, failed
