"""Every message's timeline: what Postmark's webhooks said happened to each message we sent
(delivered, bounced, complained, opened, clicked, unsubscribed), and every statement on
``emailevents_message_events`` and ``emailevents_foreign_records``.

A record is stored once per identity (Postmark posts a record again when our answer was not
200), whatever the number of posts at once: the database's unique key decides, as it does
for the delivery log's claims. The state shown for a recipient is derived from all its
records by precedence, never from the order they arrived in: a Bounce posted before its
Delivery still ends "bounced".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .tables import current_time, deliveries, foreign_records, message_events

__all__ = [
    "BOUNCE_RATE_LIMIT",
    "COMPLAINT_RATE_LIMIT",
    "Engagement",
    "Life",
    "MessageEvent",
    "Recorded",
    "Step",
    "count_foreign",
    "engagement",
    "explain",
    "record",
]

# What each Postmark RecordType means for the message.
HAPPENED = {
    "Delivery": "delivered",
    "Bounce": "bounced",
    "SpamComplaint": "complained",
    "Open": "opened",
    "Click": "clicked",
    "SubscriptionChange": "unsubscribed",
}
RESUBSCRIBED = "resubscribed"
"""A SubscriptionChange that lifts a suppression (``SuppressSending`` false)."""

# The state a recipient is shown in: the first of these that any of its records reached.
PRECEDENCE = (
    "complained",
    "bounced",
    "unsubscribed",
    "clicked",
    "opened",
    "delivered",
    "sent",
    "failed",
    "skipped",
    "retry",
    "unknown",
    "claimed",
    "queued",
)


@dataclass(frozen=True)
class MessageEvent:
    """One webhook record about a message, as the timeline keeps it.

    ``identifies`` are the record's values that tell it from any other record of its type
    (a bounce's ID; a delivery's message, recipient and time...): posted twice, a record has
    the same identity, and is stored once.
    """

    record_type: str
    event_id: str | None
    """``Metadata["event_id"]``, which our sends carry; ``None``: a message we did not send."""
    recipient: str
    message_id: str | None
    occurred_at: datetime | None
    detail: Mapping[str, Any]
    identifies: tuple[str, ...]
    event_key: str | None = None
    """The record's ``Tag``: our sends tag each message with its event key."""

    @property
    def identity(self) -> str:
        """A hash of the record type and what identifies the record."""
        text = json.dumps([self.record_type, *self.identifies], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Recorded(StrEnum):
    """What became of a webhook record."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    """Stored already (Postmark posted it again)."""
    FOREIGN = "foreign"
    """About a message we did not send: counted in ``emailevents_foreign_records``."""


def record(session: Session, event: MessageEvent) -> Recorded:
    """Store ``event`` once per identity, or count it when it is not about our message; commit."""
    if event.event_id is None:
        count_foreign(session, event.record_type, current_time().date())
        session.commit()
        return Recorded.FOREIGN
    row = {
        "identity": event.identity,
        "event_id": event.event_id,
        "recipient": event.recipient.lower(),
        "message_id": event.message_id,
        "record_type": event.record_type,
        "occurred_at": None if event.occurred_at is None else event.occurred_at.astimezone(UTC),
        "detail": dict(event.detail),
        "received_at": current_time(),
    }
    stored = _insert_once(session, row)
    session.commit()
    return Recorded.STORED if stored else Recorded.DUPLICATE


def _insert_once(session: Session, row: dict[str, Any]) -> bool:
    """Insert ``row`` unless its identity is stored; whether it was inserted. Under concurrent
    posts of one record, the primary key lets one in and the others do nothing."""
    dialect = session.get_bind().dialect.name
    if dialect in {"postgresql", "sqlite"}:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # RETURNING, not the rowcount: psycopg reports -1 for an INSERT that did nothing.
        statement = (
            insert(message_events)
            .values(**row)
            .on_conflict_do_nothing()
            .returning(message_events.c.identity)
        )
        return session.execute(statement).first() is not None
    try:
        with session.begin_nested():
            session.execute(sa.insert(message_events).values(**row))
    except sa.exc.IntegrityError:
        return False
    return True


def count_foreign(session: Session, record_type: str, day: date) -> None:
    """Count one record of ``record_type`` about a message we did not send (not committed)."""
    key = {"day": day, "record_type": record_type}
    dialect = session.get_bind().dialect.name
    if dialect in {"postgresql", "sqlite"}:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(foreign_records).values(**key, count=1)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[foreign_records.c.day, foreign_records.c.record_type],
                set_={"count": foreign_records.c.count + 1},
            )
        )
        return
    increment = (
        sa.update(foreign_records)
        .where(foreign_records.c.day == day, foreign_records.c.record_type == record_type)
        .values(count=foreign_records.c.count + 1)
    )
    if getattr(session.execute(increment), "rowcount", 0):
        return
    try:
        with session.begin_nested():
            session.execute(sa.insert(foreign_records).values(**key, count=1))
    except sa.exc.IntegrityError:  # another post counted the first one meanwhile
        session.execute(increment)


def foreign_counts(session: Session, *, since: date) -> dict[tuple[date, str], int]:
    """(day, record type) -> records about messages we did not send, from ``since`` on."""
    rows = session.execute(
        sa.select(foreign_records).where(foreign_records.c.day >= since)
    ).mappings()
    return {(row["day"], row["record_type"]): row["count"] for row in rows}


@dataclass(frozen=True)
class Step:
    """One thing that happened to a recipient's message, and when."""

    what: str
    at: datetime | None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Life:
    """A recipient's whole life in one emit: its steps in time order, and its state."""

    recipient: str
    steps: tuple[Step, ...]

    @property
    def state(self) -> str:
        """The state its steps reached, by precedence (see :data:`PRECEDENCE`), not by order."""
        reached = {step.what for step in self.steps}
        if _suppression_lifted(self.steps):
            reached.discard("unsubscribed")
        return next((state for state in PRECEDENCE if state in reached), "queued")


def explain(session: Session, event_id: str) -> dict[str, Life]:
    """Recipient -> its life in the emit ``event_id``: queued and sent (the delivery log),
    then what Postmark's webhooks said. ``store.explain``'s counterpart."""
    steps: dict[str, list[Step]] = {}
    for row in session.execute(
        sa.select(deliveries).where(deliveries.c.event_id == event_id)
    ).mappings():
        steps.setdefault(row["recipient"].lower(), []).extend(_logged(row))
    events = session.execute(
        sa.select(message_events)
        .where(message_events.c.event_id == event_id)
        .order_by(message_events.c.occurred_at, message_events.c.received_at)
    ).mappings()
    happened: dict[str, list[Step]] = {}
    for row in events:
        happened.setdefault(row["recipient"], []).append(_happened(row))
    # The delivery log's steps first (a record comes after its send, whatever the clocks say),
    # then the records in the time Postmark gives them.
    for recipient, found in happened.items():
        steps.setdefault(recipient, []).extend(_in_order(found))
    return {recipient: Life(recipient, tuple(found)) for recipient, found in sorted(steps.items())}


def _logged(row: sa.RowMapping) -> list[Step]:
    """The delivery log's steps: queued, then sent (with the MessageID) or what else it says."""
    found = [Step("queued", _aware(row["created_at"]))]
    status = row["status"]
    if status == "sent":
        found.append(Step("sent", _aware(row["updated_at"]), {"message_id": row["message_id"]}))
    elif status != "claimed":
        detail = {"reason": row["reason"], "detail": row["detail"]}
        found.append(Step(status, _aware(row["updated_at"]), detail))
    return found


def _happened(row: sa.RowMapping) -> Step:
    what = HAPPENED.get(row["record_type"], row["record_type"])
    detail = dict(row["detail"] or {})
    if row["record_type"] == "SubscriptionChange" and detail.get("suppress_sending") is False:
        what = RESUBSCRIBED
    return Step(what, _aware(row["occurred_at"] or row["received_at"]), detail)


def _in_order(found: Sequence[Step]) -> list[Step]:
    """Time order (stable: records of the same time stay in the order found)."""
    never = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda step: step.at or never)


def _suppression_lifted(steps: Iterable[Step]) -> bool:
    """The latest subscription change lifted the suppression: the address is not unsubscribed.
    The one place where order counts, as Postmark dates each change (``ChangedAt``)."""
    changes = [s for s in steps if s.what in {"unsubscribed", RESUBSCRIBED}]
    return bool(changes) and _in_order(changes)[-1].what == RESUBSCRIBED


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite gives back the UTC we wrote without its zone."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


# What the sending world holds against a sender, as rates of the messages sent. Postmark says it
# monitors every account's bounces and spam complaints ("there are a few more things we look at
# as we monitor accounts", BOUNCE_RATE_SOURCE) and deactivates each address that hard bounced or
# complained; the numbers below are the ones its senders are held to in practice, with where
# they come from (docs/operations.md, "Bounce and complaint rates").
BOUNCE_RATE_LIMIT = 0.10
"""A hard bounce rate above 10% of the messages sent gets a Postmark server reviewed or paused
(reported by Postmark's senders, e.g.
https://emailverifiers.com/blog/postmark-account-deactivated-bounce-rate/)."""
BOUNCE_RATE_SOURCE = "https://postmarkapp.com/support/article/1082-what-types-of-messages-are-a-good-fit-for-postmark"
COMPLAINT_RATE_LIMIT = 0.001
"""0.1%: Gmail's sender guidelines ask senders to keep their spam rate below it, and block mail
from 0.3% (COMPLAINT_RATE_SOURCE); one complaint in a thousand messages is the industry's line."""
COMPLAINT_RATE_SOURCE = "https://support.google.com/a/answer/81126"
HARD_BOUNCE_TYPES = ("HardBounce", "BadEmailAddress")
"""Postmark's bounce Types that mean the address is not there: the bounces the rate counts (a
full mailbox, a DNS error or an auto-reply is a soft bounce; Postmark tries again)."""


@dataclass(frozen=True)
class Engagement:
    """What Postmark's webhooks said about one event's messages sent in a window: each count is
    of recipients (an emit's recipient counts once, however many records it got)."""

    event_key: str
    sent: int
    """Recipients the delivery log records ``sent`` in the window."""
    recorded: int
    """Those with any webhook record: 0 means the webhook said nothing (yet, or is not set up)."""
    delivered: int
    bounced: int
    """Any bounce: hard or soft."""
    hard_bounced: int
    complained: int

    def rate(self, count: int) -> float:
        """``count`` as a share of the recipients sent to."""
        return count / self.sent if self.sent else 0.0

    @property
    def bounce_rate(self) -> float:
        """Hard bounces per message sent: the rate a sender is judged by."""
        return self.rate(self.hard_bounced)

    @property
    def complaint_rate(self) -> float:
        """Spam complaints per message sent."""
        return self.rate(self.complained)

    @property
    def warnings(self) -> list[str]:
        """In plain words, each rate above what Postmark and the inbox providers accept."""
        found = []
        if self.bounce_rate > BOUNCE_RATE_LIMIT:
            found.append(
                f"hard bounce rate {self.bounce_rate:.1%} is above {BOUNCE_RATE_LIMIT:.0%}, "
                f"where Postmark reviews a sender ({BOUNCE_RATE_SOURCE})"
            )
        if self.complaint_rate > COMPLAINT_RATE_LIMIT:
            found.append(
                f"spam complaint rate {self.complaint_rate:.2%} is above "
                f"{COMPLAINT_RATE_LIMIT:.1%}, the inbox providers' limit ({COMPLAINT_RATE_SOURCE})"
            )
        return found


def engagement(
    session: Session, *, since: datetime, event_key: str | None = None
) -> list[Engagement]:
    """Per event, its recipients sent to since ``since`` and what the webhooks said of them:
    delivered, bounced (hard bounces apart) and complained, by event key."""
    sent = deliveries.alias("sent")
    records = message_events.alias("records")

    def recipients(*condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        # A delivery row is one (event_id, recipient): counting its ids counts recipients.
        return sa.func.count(sa.distinct(sa.case((sa.and_(*condition), sent.c.id))))

    bounce = records.c.record_type == "Bounce"
    query = (
        sa.select(
            sent.c.event_key,
            sa.func.count(sa.distinct(sent.c.id)).label("sent"),
            recipients(records.c.identity.is_not(None)).label("recorded"),
            recipients(records.c.record_type == "Delivery").label("delivered"),
            recipients(bounce).label("bounced"),
            recipients(bounce, records.c.detail["type"].as_string().in_(HARD_BOUNCE_TYPES)).label(
                "hard_bounced"
            ),
            recipients(records.c.record_type == "SpamComplaint").label("complained"),
        )
        # Both tables keep the address lowercased (the delivery log's key, and record()).
        .select_from(
            sent.outerjoin(
                records,
                sa.and_(
                    records.c.event_id == sent.c.event_id,
                    records.c.recipient == sent.c.recipient,
                ),
            )
        )
        .where(sent.c.status == "sent", sent.c.updated_at >= since)
        .group_by(sent.c.event_key)
        .order_by(sent.c.event_key)
    )
    if event_key is not None:
        query = query.where(sent.c.event_key == event_key)
    return [
        Engagement(
            row.event_key,
            sent=row.sent,
            recorded=row.recorded,
            delivered=row.delivered,
            bounced=row.bounced,
            hard_bounced=row.hard_bounced,
            complained=row.complained,
        )
        for row in session.execute(query)
    ]
