"""The tables emailevents owns, in one ``metadata``: what the migrations in
``emailevents/migrations`` create (``emailevents db upgrade``) and ``tests/test_schema.py`` holds
them to. Statements on them: :mod:`.store` (the delivery log, the toggles), :mod:`.emitstore`
(the emits), :mod:`.timeline` (what Postmark's webhooks said), :mod:`.suppressions` (the
addresses not to send to), :mod:`.preferences` (what recipients chose), :mod:`.digests` (the
digests and their items).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa

__all__ = [
    "ADDRESS_LENGTH",
    "DIGEST_OPEN",
    "ID_LENGTH",
    "IN_LIST",
    "REASON_LENGTH",
    "SCOPE_LENGTH",
    "STREAM_LENGTH",
    "current_time",
    "deliveries",
    "digest_items",
    "digests",
    "emits",
    "foreign_records",
    "in_chunks",
    "message_events",
    "metadata",
    "org_settings",
    "preferences",
    "suppressions",
    "throttle_slots",
]

metadata = sa.MetaData()

ID_LENGTH = 64
"""The longest event id or Postmark MessageID the tables keep (ours are UUIDs: 36)."""
ADDRESS_LENGTH = 320
"""The longest address the tables keep (RFC 3696's limit for a mailbox)."""
STREAM_LENGTH = 255
"""The longest message stream ID the tables keep."""
REASON_LENGTH = 64
"""The longest reason the tables keep (ours, or Postmark's bounce type or suppression reason)."""
SCOPE_LENGTH = 320
"""The longest throttle scope the tables keep: an event key, or ``group:`` and a group name."""


def current_time() -> datetime:
    """The time written on rows: aware, in UTC."""
    return datetime.now(UTC)


IN_LIST = 500
"""Values per ``IN (...)`` list of a statement that reads for a batch: SQLite refuses more than
32,766 variables in one statement (999 before 3.32)."""


def in_chunks(values: Iterable[str]) -> Iterator[list[str]]:
    """``values``, distinct and sorted, in lists of at most :data:`IN_LIST`."""
    distinct = sorted(set(values))
    return (distinct[i : i + IN_LIST] for i in range(0, len(distinct), IN_LIST))


org_settings = sa.Table(
    "emailevents_org_settings",
    metadata,
    sa.Column("org_key", sa.String(255), primary_key=True),
    sa.Column("toggle_key", sa.String(255), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, default=current_time),
)

deliveries = sa.Table(
    "emailevents_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("event_key", sa.String(255), nullable=False),
    sa.Column("recipient", sa.String(ADDRESS_LENGTH), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("message_id", sa.String(ID_LENGTH)),
    sa.Column("claim", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=current_time),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, default=current_time),
    sa.UniqueConstraint("event_id", "recipient", name="uq_emailevents_delivery"),
    sa.Index("ix_emailevents_deliveries_key_created", "event_key", "created_at"),
)


emits = sa.Table(
    "emailevents_emits",
    metadata,
    sa.Column("event_id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("event_key", sa.String(255), nullable=False),
    sa.Column("task_name", sa.String(255), nullable=False),
    sa.Column("cuids", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("lease", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=current_time),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.Column("check_after", sa.DateTime(timezone=True)),
    sa.Column("send_at", sa.DateTime(timezone=True)),
    sa.Column("cancelled_at", sa.DateTime(timezone=True)),
    sa.Index("ix_emailevents_emits_state_created", "state", "created_at"),
    sa.Index("ix_emailevents_emits_state_check", "state", "check_after"),
    sa.Index("ix_emailevents_emits_state_send", "state", "send_at"),
)
"""Emits made with ``session=``: written in the application's transaction, published after it
commits, and by the relay when that publish did not happen (broker down, process gone).

``check_after`` is when the relay looks whether a published emit's task left a settled outcome;
if not (its message was lost in the broker), the relay publishes it again. A task that retries
pushes it back, and writes the row for an emit made without ``session=``.

``send_at`` is when a scheduled emit (``emit(..., send_at=)``, state ``scheduled``) is due: the
relay publishes it then. ``cancelled_at`` is when ``events.cancel()`` cancelled one (state
``cancelled``, never published)."""

# What Postmark's webhooks said of each message we sent, a row per record, stored once per
# ``identity`` (a hash of what identifies the record); and, counted per day and type, the records
# of messages we did not send (no event id in their Metadata). Statements: emailevents.timeline.
message_events = sa.Table(
    "emailevents_message_events",
    metadata,
    sa.Column("identity", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("recipient", sa.String(ADDRESS_LENGTH), nullable=False),
    sa.Column("message_id", sa.String(ID_LENGTH)),
    sa.Column("record_type", sa.String(32), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True)),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, default=current_time),
    sa.Index("ix_emailevents_message_events_event", "event_id", "recipient"),
)
foreign_records = sa.Table(
    "emailevents_foreign_records",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("record_type", sa.String(32), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

# Each message stream's addresses not to send to, as Postmark's webhooks, its answers and its
# Suppressions API told us (or a person, by hand). A lifted suppression keeps its row, with
# ``suppressed`` false: ``changed_at`` (the time of the change, as Postmark dates it) decides
# between two changes arriving out of order. Statements: emailevents.suppressions.
suppressions = sa.Table(
    "emailevents_suppressions",
    metadata,
    sa.Column("stream", sa.String(STREAM_LENGTH), primary_key=True),
    sa.Column("address", sa.String(ADDRESS_LENGTH), primary_key=True),
    sa.Column("suppressed", sa.Boolean, nullable=False),
    sa.Column("reason", sa.String(REASON_LENGTH), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("event_id", sa.String(ID_LENGTH)),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, default=current_time),
)

# Each recipient's choice per category (docs/preferences.md): a row only where the recipient (or
# support staff) chose; without one, the category's default applies. ``recipient`` is the
# recipient's key: its address, lowercased. Statements: emailevents.preferences.
preferences = sa.Table(
    "emailevents_preferences",
    metadata,
    sa.Column("recipient", sa.String(ADDRESS_LENGTH), primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("how", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
)

# Each recipient's throttle budget (docs/timing.md, "Throttles"): ``limit`` slots per scope (an
# event's key, or ``group:NAME``) and recipient, each held by the emit (``event_id``) that took it
# at ``taken_at``; a slot is free again once ``taken_at`` is older than the throttle's ``per``.
# An emit holds at most one slot per scope and recipient (its retries and redeliveries reuse it).
# Statements: emailevents.throttles.
throttle_slots = sa.Table(
    "emailevents_throttle_slots",
    metadata,
    sa.Column("scope", sa.String(SCOPE_LENGTH), primary_key=True),
    sa.Column("recipient", sa.String(ADDRESS_LENGTH), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("scope", "recipient", "event_id", name="uq_emailevents_throttle_event"),
)

# Each recipient's digests (docs/timing.md, "Digests"): ``open`` while emits add items to it,
# ``closed`` once due (``closes_at``), then ``sent`` (or failed: ``state`` holds how it ended).
# At most one open digest per (digest_key, recipient): the partial unique index decides between
# two runs opening one at once. ``check_after``: when the relay publishes a closed digest's task
# (again, should its message be lost). Statements: emailevents.digests.
DIGEST_OPEN = "open"
digests = sa.Table(
    "emailevents_digests",
    metadata,
    sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("digest_key", sa.String(255), nullable=False),
    sa.Column("event_key", sa.String(255), nullable=False),
    sa.Column("recipient", sa.String(ADDRESS_LENGTH), nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("item_count", sa.Integer, nullable=False, default=0),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False, default=current_time),
    sa.Column("closes_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("check_after", sa.DateTime(timezone=True)),
    sa.Index(
        "uq_emailevents_digests_open",
        "digest_key",
        "recipient",
        unique=True,
        sqlite_where=sa.text(f"state = '{DIGEST_OPEN}'"),
        postgresql_where=sa.text(f"state = '{DIGEST_OPEN}'"),
    ),
    sa.Index("ix_emailevents_digests_state_closes", "state", "closes_at"),
)
digest_items = sa.Table(
    "emailevents_digest_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("event_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("event_key", sa.String(255), nullable=False),
    sa.Column("recipient", sa.String(ADDRESS_LENGTH), nullable=False),
    sa.Column("template_model", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=current_time),
    sa.UniqueConstraint("event_id", "recipient", name="uq_emailevents_digest_item"),
    sa.Index("ix_emailevents_digest_items_digest", "digest_id", "id"),
)
