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

from .store import PENDING, PUBLISHED, emits

if TYPE_CHECKING:
    from celery import Task

    from .engine import EmailEvents

__all__ = ["RelayResult", "defer", "relay"]

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


def defer(
    session: Session, task: Task, event_key: str, event_id: str, cuids: Mapping[str, str]
) -> None:
    """Write the emit in ``session``'s transaction; publish it once that transaction commits."""
    _listen()
    session.execute(
        sa.insert(emits).values(
            event_id=event_id,
            event_key=event_key,
            task_name=task.name,
            cuids=dict(cuids),
            state=PENDING,
            attempts=0,
            last_error="",
            created_at=_now(),
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
    engine = pending[0].engine
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
    with engine.begin() as conn:
        _mark(conn, published, failed)


def _mark(conn: sa.Connection, published: Sequence[str], failed: Mapping[str, str]) -> None:
    now = _now()
    if published:
        conn.execute(
            sa.update(emits)
            .where(emits.c.event_id.in_(published))
            .values(state=PUBLISHED, published_at=now, lease=None, lease_until=None)
        )
    for event_id, error in failed.items():
        conn.execute(
            sa.update(emits)
            .where(emits.c.event_id == event_id)
            .values(
                attempts=emits.c.attempts + 1, last_error=error[:2000], lease=None, lease_until=None
            )
        )


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
        _mark(session.connection(), published, failed)
        session.commit()
    if rows:
        logger.info(
            "relay published %d emit(s), %d failed",
            len(published),
            len(failed),
            extra={"published": len(published), "failed": len(failed)},
        )
    return RelayResult(len(published), len(failed))


def _now() -> datetime:
    return datetime.now(UTC)
