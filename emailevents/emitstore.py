"""The statements on ``emailevents_emits``: an emit's row from the application's transaction to
its publish, the relay's leases on it, and a retrying task's notes for the relay.

The table itself is :data:`emailevents.store.emits`; :mod:`emailevents.store` holds the delivery
log's statements. Nothing else runs SQL on either.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .store import PENDING, PUBLISHED
from .tables import current_time, emits

__all__ = [
    "BATCH",
    "CANCELLED",
    "SCHEDULED",
    "Emit",
    "Leased",
    "add",
    "cancel",
    "connect_alone",
    "lease_due",
    "lease_overdue",
    "lease_pending",
    "mark_published",
    "pending_row",
    "requeue_unpublished",
    "scheduled_row",
    "still_pending",
    "stop_watching",
    "watch_retry",
]

SCHEDULED = "scheduled"
"""An emit made with ``send_at=`` in the future: the relay publishes it once due."""
CANCELLED = "cancelled"
"""A scheduled emit ``cancel()`` took back before the relay published it: never published."""

ERROR_LENGTH = 2000
"""The most of a failed publish's error an emit's row keeps."""

Leased: TypeAlias = "sa.Row[Any, Any, Any]"
"""An emit a relay leased: its ``event_id``, ``event_key`` and ``cuids``."""


@dataclass(frozen=True)
class Emit:
    """An emit as its row names it: enough to publish its task again."""

    event_id: str
    event_key: str
    task_name: str
    cuids: Mapping[str, str]

    def row(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_key": self.event_key,
            "task_name": self.task_name,
            "cuids": dict(self.cuids),
        }


BATCH = 500
"""The most emit rows one ``INSERT`` writes."""


def pending_row(emit: Emit, *, redeliver_after: timedelta) -> dict[str, Any]:
    """The row of an emit made now, pending, for :func:`add`."""
    now = current_time()
    return {
        **emit.row(),
        "state": PENDING,
        "attempts": 0,
        "last_error": "",
        "created_at": now,
        # Published right after the commit; looked at again by the relay after this.
        "check_after": now + redeliver_after,
    }


def scheduled_row(emit: Emit, *, send_at: datetime) -> dict[str, Any]:
    """The row of an emit made now, to be published at ``send_at`` (aware), for :func:`add`.

    Its state is :data:`SCHEDULED`, not pending: neither the commit that writes it nor the
    relay's pass for pending emits publishes it; :func:`lease_due` does, once ``send_at`` has
    come."""
    return {
        **emit.row(),
        "state": SCHEDULED,
        "attempts": 0,
        "last_error": "",
        "created_at": current_time(),
        "send_at": send_at,
    }


def add(db: Session | sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write emits' :func:`pending_row` dicts in ``db``'s transaction (not committed): one
    statement per :data:`BATCH` rows (an executemany)."""
    for start in range(0, len(rows), BATCH):
        db.execute(sa.insert(emits), list(rows[start : start + BATCH]))


_autocommitting: weakref.WeakKeyDictionary[sa.Engine, sa.Engine] = weakref.WeakKeyDictionary()


def connect_alone(engine: sa.Engine) -> sa.Connection:
    """A connection on which each statement commits alone (AUTOCOMMIT): no BEGIN, COMMIT or
    ROLLBACK round trips around it. The AUTOCOMMIT engine is made once per engine."""
    alone = _autocommitting.get(engine)
    if alone is None:
        alone = _autocommitting[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return alone.connect()


def still_pending(db: Session | sa.Connection, event_ids: Sequence[str]) -> set[str]:
    """Those of ``event_ids`` whose emit is committed and not published yet."""
    pending = sa.select(emits.c.event_id).where(
        emits.c.event_id.in_(event_ids), emits.c.state == PENDING
    )
    return set(db.execute(pending).scalars())


def mark_published(
    db: Session | sa.Connection,
    published: Sequence[str],
    failed: Mapping[str, str],
    *,
    redeliver_after: timedelta | None = None,
    flush_wait: bool = True,
) -> None:
    """Mark emits ``published`` (with ``redeliver_after``, looked at again by the relay that
    long from now), and those whose publish ``failed`` pending again, with why (not committed).

    Without ``flush_wait``, on PostgreSQL, the mark of what was published commits without
    waiting for its WAL to reach the disk (``synchronous_commit`` off for its transaction
    alone): a crash of the database server in that moment loses the mark, and the relay
    publishes those emits again, which their delivery log settles (nothing is sent twice).
    """
    now = current_time()
    if published:
        values: dict[str, Any] = {
            "state": PUBLISHED,
            "published_at": now,
            "lease": None,
            "lease_until": None,
        }
        if redeliver_after is not None:
            values["check_after"] = now + redeliver_after
        mark = sa.update(emits).where(emits.c.event_id.in_(published)).values(**values)
        bind = db if isinstance(db, sa.Connection) else db.get_bind()
        if not flush_wait and bind.dialect.name == "postgresql":
            # `SET LOCAL`, inside the statement: the whole transaction when it runs alone.
            mark = mark.returning(sa.func.set_config("synchronous_commit", "off", sa.true()))
        db.execute(mark)
    if failed:
        # Pending again (a re-publish of a published emit that failed too): the next pass
        # publishes it. One executemany, however many failed.
        again = (
            sa.update(emits)
            .where(emits.c.event_id == sa.bindparam("failed_id"))
            .values(
                state=PENDING,
                attempts=emits.c.attempts + 1,
                last_error=sa.bindparam("error"),
                lease=None,
                lease_until=None,
            )
        )
        db.execute(
            again,
            [
                {"failed_id": event_id, "error": error[:ERROR_LENGTH]}
                for event_id, error in failed.items()
            ],
        )


def watch_retry(session: Session, emit: Emit, *, redeliver_after: timedelta) -> None:
    """Note that the emit's task retries, and commit: the relay looks at it again
    ``redeliver_after`` from now, and publishes it again should no outcome be settled by then
    (the retry's message was lost in the broker). Writes the row of an emit made without
    ``session=``."""
    now = current_time()
    check_after = now + redeliver_after
    _update_or_insert(
        session,
        emit,
        update={"check_after": check_after},
        insert={
            "state": PUBLISHED,
            "attempts": 0,
            "last_error": "",
            "created_at": now,
            "published_at": now,
            "check_after": check_after,
        },
    )


def requeue_unpublished(session: Session, emit: Emit, *, error: str) -> None:
    """Put an emit whose task could not be published again (its retry) back to pending, with
    ``error``, and commit: the next relay pass publishes it. Writes the row of an emit made
    without ``session=``."""
    last_error = error[:ERROR_LENGTH]
    _update_or_insert(
        session,
        emit,
        update={
            "state": PENDING,
            "attempts": emits.c.attempts + 1,
            "last_error": last_error,
            "lease": None,
            "lease_until": None,
            "published_at": None,
        },
        insert={
            "state": PENDING,
            "attempts": 1,
            "last_error": last_error,
            "created_at": current_time(),
        },
    )


def _update_or_insert(
    session: Session, emit: Emit, *, update: Mapping[str, Any], insert: Mapping[str, Any]
) -> None:
    """Update the emit's row, or write it (with ``insert``) when the emit was made without
    ``session=``; and commit."""
    updated = session.execute(
        sa.update(emits).where(emits.c.event_id == emit.event_id).values(**update)
    )
    if getattr(updated, "rowcount", 0) == 0:
        try:
            session.execute(sa.insert(emits).values(**emit.row(), **insert))
        except sa.exc.IntegrityError:
            # Another run of the same emit (a redelivered copy) wrote it first.
            session.rollback()
            return
    session.commit()


def lease_pending(
    session: Session, token: str, *, limit: int, grace: timedelta, lease: timedelta
) -> Sequence[Leased]:
    """Lease to ``token`` up to ``limit`` pending emits, those whose publish failed or older than
    ``grace``, and commit; returns them (``event_id``, ``event_key``, ``cuids``), oldest first.

    Several relays may run at once: each leases its rows for ``lease`` (``FOR UPDATE SKIP
    LOCKED`` on PostgreSQL; SQLite, which ignores it, serialises the leasing update).
    """
    now = current_time()
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
    return _leased(session, token, order_by=emits.c.created_at)


def lease_due(
    session: Session, token: str, *, limit: int, lease: timedelta, redeliver_after: timedelta
) -> Sequence[Leased]:
    """Take up to ``limit`` scheduled emits whose ``send_at`` has come, and commit; returns them
    (``event_id``, ``event_key``, ``cuids``), the earliest due first.

    Each is marked published before its publish, by one conditional ``UPDATE`` (``state =
    'scheduled'``): :func:`cancel` updates the same rows under the same condition, so the
    database lets exactly one of them have each emit, whatever the timing. The relay then
    publishes them and marks them published again (its publish failed: pending, for the relay's
    next pass). A relay that dies between the two leaves them published, looked at again
    ``lease`` from now: the pass for overdue emits publishes them then, unless a run settled
    them.
    """
    now = current_time()
    due = (emits.c.state == SCHEDULED, emits.c.send_at <= now)
    taken = (
        sa.select(emits.c.event_id)
        .where(*due)
        .order_by(emits.c.send_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        sa.update(emits)
        .where(emits.c.event_id.in_(taken), *due)
        .values(
            state=PUBLISHED,
            lease=token,
            published_at=now,
            check_after=now + min(lease, redeliver_after),
        )
    )
    session.commit()
    return _leased(session, token, emits.c.state == PUBLISHED, order_by=emits.c.send_at)


def cancel(session: Session, event_id: str) -> bool:
    """Cancel the scheduled emit ``event_id`` if the relay has not taken it yet, and commit:
    ``True`` when this call cancelled it (it will never be published), ``False`` otherwise
    (published or taken for publishing already, cancelled before, not a scheduled emit, or no
    such emit).

    One conditional ``UPDATE`` (``state = 'scheduled'``), the same condition under which
    :func:`lease_due` takes it: of the two, the database lets one change the row.
    """
    cancelled = session.execute(
        sa.update(emits)
        .where(emits.c.event_id == event_id, emits.c.state == SCHEDULED)
        .values(state=CANCELLED, cancelled_at=current_time(), lease=None, lease_until=None)
    )
    session.commit()
    return bool(getattr(cancelled, "rowcount", 0) == 1)


def lease_overdue(
    session: Session, token: str, *, limit: int, redeliver_after: timedelta
) -> Sequence[Leased]:
    """Lease to ``token`` up to ``limit`` published emits past their ``check_after``, and commit;
    returns them (``event_id``, ``event_key``, ``cuids``).

    Their next check is pushed back ``redeliver_after`` at once, so that concurrent relays
    never both take one emit.
    """
    now = current_time()
    overdue = (emits.c.state == PUBLISHED, emits.c.check_after < now)
    due = (
        sa.select(emits.c.event_id)
        .where(*overdue)
        .order_by(emits.c.check_after)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        sa.update(emits)
        .where(emits.c.event_id.in_(due), *overdue)
        .values(check_after=now + redeliver_after, lease=token)
    )
    session.commit()
    return _leased(session, token, emits.c.state == PUBLISHED)


def _leased(
    session: Session,
    token: str,
    *where: sa.ColumnElement[bool],
    order_by: sa.ColumnElement[Any] | None = None,
) -> Sequence[Leased]:
    """The emits leased to ``token``."""
    leased = sa.select(emits.c.event_id, emits.c.event_key, emits.c.cuids).where(
        emits.c.lease == token, *where
    )
    return session.execute(leased.order_by(order_by)).all()


def stop_watching(session: Session, event_ids: Sequence[str]) -> None:
    """Let the relay stop looking at these emits: their task left a settled outcome (not
    committed)."""
    if event_ids:
        session.execute(
            sa.update(emits)
            .where(emits.c.event_id.in_(event_ids))
            .values(check_after=None, lease=None)
        )
