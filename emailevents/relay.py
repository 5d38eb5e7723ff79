"""Emits that wait for a commit, and the relay that publishes what a commit left behind.

``emit(..., session=db)`` writes a row to ``emailevents_emits`` inside ``db``'s transaction and
remembers it on the session. When the session's outermost transaction ends, the rows that are
really committed are published to the broker and marked published. Whatever rolled back (the
transaction, a savepoint, a session closed without commit) took its row with it and is not
published. The database decides, not SQLAlchemy's events, which fire for savepoints too and not
at all for a close without commit.

A publish that fails (the broker is down) never escapes ``commit()``: the row stays pending and
:func:`relay` publishes it later, from ``emailevents relay`` or the ``emailevents.relay`` task.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from . import store
from .store import PENDING, PUBLISHED, emits

if TYPE_CHECKING:
    from celery import Task

    from .engine import EmailEvents
    from .registry import Event

__all__ = ["RelayResult", "defer", "keep", "park", "relay"]

logger = logging.getLogger("emailevents")

_SESSION_KEY = "emailevents.pending_emits"

# One quick retry, then leave the row to the relay: a commit must not hang on a dead broker.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}


@dataclass(frozen=True)
class _Pending:
    engine: sa.Engine
    task: Task
    event_id: str
    cuids: Mapping[str, str]


@dataclass(frozen=True)
class RelayResult:
    """What one relay pass did."""

    published: int
    failed: int
    redelivered: int = 0
    """Of ``published``: emits published again because their task left no settled outcome."""


def defer(  # noqa: PLR0917 - the emit, as the engine hands it over
    session: Session,
    task: Task,
    event_key: str,
    event_id: str,
    cuids: Mapping[str, str],
    redeliver_after: timedelta,
) -> None:
    """Write the emit in ``session``'s transaction; publish it once that transaction commits."""
    _listen()
    now = _now()
    session.execute(
        sa.insert(emits).values(
            event_id=event_id,
            event_key=event_key,
            task_name=task.name,
            cuids=dict(cuids),
            state=PENDING,
            attempts=0,
            last_error="",
            created_at=now,
            # Published right after the commit; looked at again by the relay after this.
            check_after=now + redeliver_after,
        )
    )
    engine = session.connection().engine
    session.info.setdefault(_SESSION_KEY, []).append(_Pending(engine, task, event_id, cuids))


_listening = False


def _listen() -> None:
    global _listening  # noqa: PLW0603 - one listener for every session, installed on first use
    if not _listening:
        sa_event.listen(Session, "after_transaction_end", _after_transaction_end)
        _listening = True


def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is not None:  # a savepoint, or a flush's inner transaction
        return
    pending: list[_Pending] | None = session.info.pop(_SESSION_KEY, None)
    if not pending:
        return
    try:
        _publish_committed(pending)
    except Exception:  # never out of commit(): the data is committed already
        logger.exception(
            "could not publish %d committed emit(s); the relay will",
            len(pending),
            extra={"event_ids": [p.event_id for p in pending]},
        )


def _publish_committed(pending: Sequence[_Pending]) -> None:
    # Each statement alone (AUTOCOMMIT): a read, then one update, with no BEGIN, COMMIT or
    # ROLLBACK round trips around them; and no connection held while the broker is slow.
    engine = pending[0].engine.execution_options(isolation_level="AUTOCOMMIT")
    ids = [p.event_id for p in pending]
    with engine.connect() as conn:
        committed = set(
            conn.execute(
                sa.select(emits.c.event_id).where(
                    emits.c.event_id.in_(ids), emits.c.state == PENDING
                )
            ).scalars()
        )
    published: list[str] = []
    failed: dict[str, str] = {}
    for item in pending:
        if item.event_id not in committed:
            continue  # rolled back with its data
        if failed:
            failed[item.event_id] = "not tried: the broker failed just before"
            continue
        try:
            item.task.apply_async(
                kwargs=dict(item.cuids), task_id=item.event_id, retry_policy=PUBLISH_RETRY_POLICY
            )
            published.append(item.event_id)
        except Exception as exc:  # noqa: BLE001 - the broker is down: the relay publishes it later
            failed[item.event_id] = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "event=%s event_id=%s publish failed after commit, left for the relay: %s",
                item.task.name,
                item.event_id,
                failed[item.event_id],
                extra={"event_id": item.event_id, "task": item.task.name},
            )
    with engine.connect() as conn:
        _mark(conn, published, failed)


def _mark(
    conn: sa.Connection,
    published: Sequence[str],
    failed: Mapping[str, str],
    *,
    check_after: datetime | None = None,
) -> None:
    now = _now()
    if published:
        values: dict[str, Any] = {
            "state": PUBLISHED,
            "published_at": now,
            "lease": None,
            "lease_until": None,
        }
        if check_after is not None:
            values["check_after"] = check_after
        conn.execute(sa.update(emits).where(emits.c.event_id.in_(published)).values(**values))
    for event_id, error in failed.items():
        # Pending again (a re-publish of a published emit that failed too): the next pass
        # publishes it.
        conn.execute(
            sa.update(emits)
            .where(emits.c.event_id == event_id)
            .values(
                state=PENDING,
                attempts=emits.c.attempts + 1,
                last_error=error[:2000],
                lease=None,
                lease_until=None,
            )
        )


def keep(events: EmailEvents, event: Event, event_id: str, cuids: Mapping[str, str]) -> None:
    """Note that ``event_id``'s task is retrying: the relay looks at it again after
    ``redeliver_after`` from now, and publishes it again should no outcome be settled by then
    (the retry's message was lost in the broker). Writes the row of an emit made without
    ``session=``."""
    now = _now()
    check_after = now + timedelta(seconds=events.redeliver_after)
    _update_or_insert(
        events,
        event_id,
        update={"check_after": check_after},
        insert={
            "event_key": event.key,
            "task_name": event.task_name,
            "cuids": dict(cuids),
            "state": PUBLISHED,
            "attempts": 0,
            "last_error": "",
            "created_at": now,
            "published_at": now,
            "check_after": check_after,
        },
    )


def park(
    events: EmailEvents,
    event: Event,
    event_id: str,
    cuids: Mapping[str, str],
    *,
    error: object,
) -> None:
    """Keep an emit whose task could not be published again (its retry), for the relay.

    The emit's row in ``emailevents_emits`` goes back to pending (or is written, for an emit
    made without ``session=``), with the error, so the next relay pass publishes it. The task
    then runs with the same event id: what was sent stays sent, and the rest is claimed again.
    """
    last_error = f"retry not published: {type(error).__name__}: {error}"[:2000]
    _update_or_insert(
        events,
        event_id,
        update={
            "state": PENDING,
            "attempts": emits.c.attempts + 1,
            "last_error": last_error,
            "lease": None,
            "lease_until": None,
            "published_at": None,
        },
        insert={
            "event_key": event.key,
            "task_name": event.task_name,
            "cuids": dict(cuids),
            "state": PENDING,
            "attempts": 1,
            "last_error": last_error,
            "created_at": _now(),
        },
    )


def _update_or_insert(
    events: EmailEvents, event_id: str, *, update: Mapping[str, Any], insert: Mapping[str, Any]
) -> None:
    """Update the emit's row, or write it when the emit was made without ``session=``."""
    with events.session_factory() as session:
        updated = session.execute(
            sa.update(emits).where(emits.c.event_id == event_id).values(**update)
        )
        if getattr(updated, "rowcount", 0) == 0:
            try:
                session.execute(sa.insert(emits).values(event_id=event_id, **insert))
            except sa.exc.IntegrityError:
                # Another run of the same emit (a redelivered copy) wrote it first.
                session.rollback()
                return
        session.commit()


def relay(
    events: EmailEvents,
    *,
    limit: int = 500,
    grace: timedelta = timedelta(seconds=30),
    lease: timedelta = timedelta(minutes=5),
) -> RelayResult:
    """Publish emits still pending: those whose publish failed, or older than ``grace``.

    Several relays may run at once: each claims its rows with a lease (``FOR UPDATE SKIP
    LOCKED`` on PostgreSQL; SQLite, which ignores it, serialises the claiming update).
    """
    token = uuid.uuid4().hex
    now = _now()
    with events.session_factory() as session:
        ready = (
            sa.select(emits.c.event_id)
            .where(
                emits.c.state == PENDING,
                sa.or_(emits.c.attempts > 0, emits.c.created_at <= now - grace),
                sa.or_(emits.c.lease_until.is_(None), emits.c.lease_until < now),
            )
            .order_by(emits.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        session.execute(
            sa.update(emits)
            .where(emits.c.event_id.in_(ready), emits.c.state == PENDING)
            .values(lease=token, lease_until=now + lease)
        )
        session.commit()
        rows = session.execute(
            sa.select(emits.c.event_id, emits.c.event_key, emits.c.cuids)
            .where(emits.c.lease == token)
            .order_by(emits.c.created_at)
        ).all()
        published: list[str] = []
        failed: dict[str, str] = {}
        for row in rows:
            task = events.tasks.get(row.event_key)
            if task is None:
                failed[row.event_id] = f"no event '{row.event_key}' in the registry any more"
                continue
            try:
                task.apply_async(
                    kwargs=dict(row.cuids), task_id=row.event_id, retry_policy=PUBLISH_RETRY_POLICY
                )
                published.append(row.event_id)
            except Exception as exc:  # noqa: BLE001 - recorded on the row; the next pass retries
                failed[row.event_id] = f"{type(exc).__name__}: {exc}"
        check_after = _now() + timedelta(seconds=events.redeliver_after)
        _mark(session.connection(), published, failed, check_after=check_after)
        session.commit()
    if rows:
        logger.info(
            "relay published %d emit(s), %d failed",
            len(published),
            len(failed),
            extra={"published": len(published), "failed": len(failed)},
        )
    again, again_failed = _redeliver(events, limit=limit)
    return RelayResult(len(published) + again, len(failed) + again_failed, again)


def _redeliver(events: EmailEvents, *, limit: int) -> tuple[int, int]:
    """Publish again the published emits past their ``check_after`` whose task left no settled
    outcome: a message the broker lost (kombu's Redis transport loses one fetched by a worker
    killed before it noted the message as unacknowledged) or a retry that never came back.

    A run of an emit that is only slow, not lost, does no harm: the delivery log's claims let
    one run send each message, and the others find it recorded.
    """
    token = uuid.uuid4().hex
    now = _now()
    check_after = now + timedelta(seconds=events.redeliver_after)
    with events.session_factory() as session:
        due = (
            sa.select(emits.c.event_id)
            .where(emits.c.state == PUBLISHED, emits.c.check_after < now)
            .order_by(emits.c.check_after)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        # Taken by this pass: the next check is pushed back at once, so concurrent relays
        # never both publish one emit.
        session.execute(
            sa.update(emits)
            .where(
                emits.c.event_id.in_(due),
                emits.c.state == PUBLISHED,
                emits.c.check_after < now,
            )
            .values(check_after=check_after, lease=token)
        )
        session.commit()
        rows = session.execute(
            sa.select(emits.c.event_id, emits.c.event_key, emits.c.cuids).where(
                emits.c.lease == token, emits.c.state == PUBLISHED
            )
        ).all()
        if not rows:
            return 0, 0
        open_ = store.unsettled(session, [r.event_id for r in rows])
        settled = [r.event_id for r in rows if r.event_id not in open_]
        if settled:
            session.execute(
                sa.update(emits)
                .where(emits.c.event_id.in_(settled))
                .values(check_after=None, lease=None)
            )
        published: list[str] = []
        failed: dict[str, str] = {}
        for row in rows:
            if row.event_id not in open_:
                continue
            task = events.tasks.get(row.event_key)
            if task is None:
                failed[row.event_id] = f"no event '{row.event_key}' in the registry any more"
                continue
            try:
                task.apply_async(
                    kwargs=dict(row.cuids), task_id=row.event_id, retry_policy=PUBLISH_RETRY_POLICY
                )
                published.append(row.event_id)
            except Exception as exc:  # noqa: BLE001 - pending again; the next pass retries
                failed[row.event_id] = f"{type(exc).__name__}: {exc}"
        _mark(session.connection(), published, failed)
        session.commit()
    if published or failed:
        logger.warning(
            "relay published again %d emit(s) whose task left no settled outcome, %d failed",
            len(published),
            len(failed),
            extra={"event_ids": published, "failed": len(failed)},
        )
    return len(published), len(failed)


def _now() -> datetime:
    return datetime.now(UTC)
