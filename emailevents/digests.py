"""Every statement on the digests and their items (``emailevents_digests``,
``emailevents_digest_items``), and what an emit of a digest event does instead of sending:
:func:`add_items` puts its TemplateModel into each recipient's open digest.

A recipient's item lands in exactly one digest, and never twice: an item is unique per
(event id, recipient), so a redelivered or retried emit adds nothing; and adding is one
transaction that begins by locking the recipient's open digest (an ``UPDATE`` of its row, which
waits for and re-reads a close made at the same moment), so an item goes into a digest that is
then sent, or opens a new one. At most one digest per (digest key, recipient) is open: a partial
unique index decides between two runs opening one at once (the loser adds to the winner's).
The delivery log records each recipient's outcome in the same transaction: ``skipped``, reason
``digested``, naming the digest. Closing and sending: :mod:`.digestsend`.
"""

from __future__ import annotations

import logging
import uuid
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import store
from .expressions import RenderError
from .outcomes import Outcome, Reason, Status
from .registry import Digest, Event
from .tables import DIGEST_OPEN, current_time, deliveries, digest_items, digests

__all__ = [
    "CLOSED",
    "OPEN",
    "SENT",
    "Addressed",
    "Found",
    "add_items",
    "close_due",
    "closes_at",
    "fates",
    "items_of",
    "load",
    "settle",
    "to_publish",
]

logger = logging.getLogger("emailevents")

OPEN = DIGEST_OPEN
CLOSED = "closed"
"""Due: no item is added any more; its task sends it (and the relay publishes that task)."""
SENT = "sent"
"""Its task settled it: the delivery log says how (sent, failed, unknown) under its id."""
ATTEMPTS = 8
"""Tries to add one item when other runs open the same digest at the same moment."""


def closes_at(digest: Digest, values: Mapping[str, Any], now: datetime) -> tuple[datetime, str]:
    """When a digest opened ``now`` by an emit with ``values`` closes, and a note on the time
    zone used (empty, or why the default one was)."""
    if digest.window is not None:
        return now + digest.window, ""
    assert digest.at is not None  # noqa: S101 - the registry gives one of the two
    zone, note = _zone(digest, values)
    local = now.astimezone(zone)
    due = datetime.combine(local.date(), digest.at, tzinfo=zone)
    if due <= local:
        due = datetime.combine(local.date() + timedelta(days=1), digest.at, tzinfo=zone)
    return due.astimezone(now.tzinfo), note


def _zone(digest: Digest, values: Mapping[str, Any]) -> tuple[zoneinfo.ZoneInfo, str]:
    default = zoneinfo.ZoneInfo(digest.default_timezone)
    if digest.timezone is None:
        return default, ""
    try:
        name = digest.timezone.template.render_text(values, single_line=True).strip()
    except RenderError as exc:
        return default, f"; time zone {digest.default_timezone} ({exc})"
    if not name:
        return default, f"; time zone {digest.default_timezone} (none given)"
    try:
        return zoneinfo.ZoneInfo(name), ""
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return default, f"; time zone {digest.default_timezone} ({name[:60]!r} is not one)"


class Addressed(Protocol):
    """A recipient (``pipeline.Recipient``): its key in the delivery log, and its address."""

    @property
    def key(self) -> str: ...
    @property
    def address(self) -> str: ...


def add_items(  # noqa: PLR0917 - the run's state, passed along explicitly
    session: Session,
    event: Event,
    event_id: str,
    recipients: Sequence[Addressed],
    template_model: Mapping[str, Any],
    values: Mapping[str, Any],
) -> list[Outcome]:
    """Add this emit's ``template_model`` to the open digest of each of ``recipients``, opening
    one where there is none, and record each in the delivery log (committed, each alone).

    The one entry point for whatever diverts an emit into its digests (the pipeline for a
    digest event; a throttle past its limit)."""
    digest = event.digest
    assert digest is not None  # noqa: S101 - called for digest events only
    session.commit()  # ends what statements_commit_alone began: each item is one transaction
    outcomes = []
    for r in recipients:
        key = r.key
        digest_id, due, note = _add_one(
            session, event, event_id, key, r.address, template_model, values
        )
        detail = f"in digest {digest_id} ({digest.key}), sent when it closes at {due.isoformat()}"
        outcomes.append(Outcome(Status.SKIPPED, Reason.DIGESTED, key, detail=detail + note))
    return outcomes


def _add_one(  # noqa: PLR0917 - the run's state, passed along explicitly
    session: Session,
    event: Event,
    event_id: str,
    key: str,
    address: str,
    template_model: Mapping[str, Any],
    values: Mapping[str, Any],
) -> tuple[str, datetime, str]:
    """The digest the item is in (added now, or by an earlier run of this emit), when it closes,
    and the time-zone note; committed."""
    for attempt in range(ATTEMPTS):
        found = _item_digest(session, event_id, key)
        if found is not None:
            return found[0], found[1], ""
        try:
            added = _add(session, event, event_id, key, address, template_model, values)
        except sa.exc.IntegrityError:
            # Another run opened this recipient's digest, or added this very item, meanwhile.
            session.rollback()
            logger.debug("event=%s event_id=%s digest add raced (%d)", event.key, event_id, attempt)
            continue
        session.commit()
        return added
    raise RuntimeError(f"event '{event.key}' ({event_id}): no digest took the item for {key}")


def _item_digest(session: Session, event_id: str, key: str) -> tuple[str, datetime] | None:
    row = session.execute(
        sa.select(digest_items.c.digest_id, digests.c.closes_at)
        .join(digests, digests.c.id == digest_items.c.digest_id)
        .where(digest_items.c.event_id == event_id, digest_items.c.recipient == key)
    ).first()
    session.commit()
    return None if row is None else (row.digest_id, row.closes_at)


def _add(  # noqa: PLR0917 - the run's state, passed along explicitly
    session: Session,
    event: Event,
    event_id: str,
    key: str,
    address: str,
    template_model: Mapping[str, Any],
    values: Mapping[str, Any],
) -> tuple[str, datetime, str]:
    """One transaction: the item into the recipient's open digest (locked first), or into a new
    one; and the recipient's outcome into the delivery log. Not committed."""
    digest = event.digest
    assert digest is not None  # noqa: S101 - called for digest events only
    now = current_time()
    mine = sa.and_(digests.c.digest_key == digest.key, digests.c.recipient == key)
    # Writing first takes the row lock (PostgreSQL) or the write lock (SQLite) at once: a close
    # of this digest waits for this transaction, or went first and the row is no longer open.
    locked = session.execute(
        sa.update(digests)
        .where(mine, digests.c.state == OPEN, digests.c.closes_at > now)
        .values(item_count=digests.c.item_count + 1)
    )
    note = ""
    if getattr(locked, "rowcount", 0) == 1:
        row = session.execute(
            sa.select(digests.c.id, digests.c.closes_at).where(mine, digests.c.state == OPEN)
        ).one()
        digest_id, due = row.id, row.closes_at
    else:
        # None open, or one due that the relay has not closed yet: close it, open another. The
        # time is read again: waiting for the lock, a close may have come first. Only a due one
        # is closed: one another run opened and committed since the statement above (PostgreSQL
        # reads each statement's own snapshot) stays open, and the insert below meets the
        # unique index: the caller tries again and adds to it.
        now = current_time()
        session.execute(
            sa.update(digests)
            .where(mine, digests.c.state == OPEN, digests.c.closes_at <= now)
            .values(state=CLOSED, closed_at=now)
        )
        digest_id = str(uuid.uuid4())
        due, note = closes_at(digest, values, now)
        session.execute(
            sa.insert(digests).values(
                id=digest_id,
                digest_key=digest.key,
                event_key=event.key,
                recipient=key,
                address=address,
                state=OPEN,
                item_count=1,
                opened_at=now,
                closes_at=due,
            )
        )
    session.execute(
        sa.insert(digest_items).values(
            digest_id=digest_id,
            event_id=event_id,
            event_key=event.key,
            recipient=key,
            template_model=dict(template_model),
            created_at=current_time(),  # once the digest is locked (opened before this)
        )
    )
    detail = f"in digest {digest_id} ({digest.key}), sent when it closes at {due.isoformat()}"
    store.insert_ignoring_duplicates(
        session,
        [
            {
                "event_id": event_id,
                "event_key": event.key,
                "recipient": key,
                "status": Status.SKIPPED.value,
                "reason": Reason.DIGESTED.value,
                "detail": detail + note,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    return digest_id, due, note


def close_due(session: Session, *, now: datetime | None = None) -> int:
    """Close every open digest whose time has come, and commit; how many were closed."""
    now = now or current_time()
    closed = session.execute(
        sa.update(digests)
        .where(digests.c.state == OPEN, digests.c.closes_at <= now)
        .values(state=CLOSED, closed_at=now)
    )
    session.commit()
    return int(getattr(closed, "rowcount", 0) or 0)


def to_publish(
    session: Session, *, redeliver_after: timedelta, limit: int = 500
) -> list[tuple[str, str]]:
    """The closed digests whose task to publish now: never published, or published longer than
    ``redeliver_after`` ago and still not settled (its message lost, its worker killed).
    Each is marked to be looked at again ``redeliver_after`` from now; committed. Returns
    (digest id, digest key) pairs."""
    now = current_time()
    due = sa.and_(
        digests.c.state == CLOSED,
        sa.or_(digests.c.check_after.is_(None), digests.c.check_after <= now),
    )
    rows = session.execute(
        sa.select(digests.c.id, digests.c.digest_key)
        .where(due)
        .order_by(digests.c.closes_at)
        .limit(limit)
    ).all()
    if not rows:
        session.commit()
        return []
    session.execute(
        sa.update(digests)
        .where(digests.c.id.in_([r.id for r in rows]), due)
        .values(check_after=now + redeliver_after)
    )
    session.commit()
    return [(r.id, r.digest_key) for r in rows]


@dataclass(frozen=True)
class Found:
    """A digest as its task finds it."""

    id: str
    digest_key: str
    event_key: str
    recipient: str
    address: str
    state: str
    closes_at: datetime


def load(session: Session, digest_id: str) -> Found | None:
    """The digest ``digest_id``, or None."""
    row = session.execute(sa.select(digests).where(digests.c.id == digest_id)).first()
    if row is None:
        return None
    return Found(
        row.id, row.digest_key, row.event_key, row.recipient, row.address, row.state, row.closes_at
    )


def items_of(session: Session, digest_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The digest's items in the order they were added: (event key, event id, TemplateModel)."""
    rows = session.execute(
        sa.select(digest_items.c.event_key, digest_items.c.event_id, digest_items.c.template_model)
        .where(digest_items.c.digest_id == digest_id)
        .order_by(digest_items.c.id)
    )
    return [(r.event_key, r.event_id, dict(r.template_model)) for r in rows]


def settle(session: Session, digest_id: str) -> None:
    """Mark a closed digest settled (:data:`SENT`), and commit: the relay publishes its task no
    more."""
    session.execute(
        sa.update(digests)
        .where(digests.c.id == digest_id, digests.c.state == CLOSED)
        .values(state=SENT)
    )
    session.commit()


def fates(session: Session, event_id: str) -> dict[str, str]:
    """Recipient -> what became of the digest ``event_id``'s item went into, in words (for
    ``explain``): open until when, closed, or its message's outcome."""
    sent = deliveries.alias("sent")
    rows = session.execute(
        sa.select(
            digest_items.c.recipient,
            digests.c.id,
            digests.c.state,
            digests.c.closes_at,
            digests.c.item_count,
            sent.c.status,
            sent.c.reason,
            sent.c.message_id,
        )
        .join(digests, digests.c.id == digest_items.c.digest_id)
        .outerjoin(
            sent,
            sa.and_(sent.c.event_id == digests.c.id, sent.c.recipient == digest_items.c.recipient),
        )
        .where(digest_items.c.event_id == event_id)
    )
    found: dict[str, str] = {}
    for r in rows:
        where = f"digest {r.id} ({r.item_count} items)"
        if r.state == OPEN:
            found[r.recipient] = (
                f"{where}: open, sent when it closes at {r.closes_at:%Y-%m-%d %H:%M:%S}"
            )
        elif r.status is None or r.status in {"claimed", "retry"}:
            found[r.recipient] = f"{where}: closed, being sent"
        else:
            message = f", message {r.message_id}" if r.message_id else ""
            found[r.recipient] = f"{where}: {r.status} ({r.reason}){message}"
    return found
