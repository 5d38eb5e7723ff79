"""Every statement on ``emailevents_throttle_slots``: each recipient's budget of an event's
``throttle: {limit, per}`` (or of its ``group:``), a sliding window (docs/timing.md, "Throttles").

A budget is ``limit`` slots per scope and recipient. An emit takes one slot per recipient before
its recipients are claimed, in one statement that succeeds only when the slot is free (never
taken, or taken longer than ``per`` ago) and commits alone: two runs cannot both take the same
slot, on PostgreSQL (the conflicting row is locked, and the condition read again on its newest
version) as on SQLite (one writer at a time). A recipient with no slot left is throttled.

The slot keeps the event id that took it: the emit's retries and redeliveries find it and take no
other, and a unique constraint on (scope, recipient, event id) holds that even for two runs of one
emit at the same moment.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from . import store
from .errors import ConfigurationError
from .registry.model import Throttle
from .tables import current_time, in_chunks, throttle_slots

__all__ = ["Held", "held", "slots", "throttled"]

_DIALECTS = ("postgresql", "sqlite")


def throttled(
    session: Session,
    throttle: Throttle,
    event_id: str,
    keys: Sequence[str],
    *,
    known: Mapping[str, list[Held]] | None = None,
    logged: Mapping[str, store.Logged] | None = None,
) -> list[str]:
    """Those of ``keys`` past ``throttle``'s limit, in order. Each of the others holds a slot for
    ``event_id`` when this returns (taken now and committed, or taken by an earlier try), or is
    left to the claim (below).

    The one place that decides who is throttled: the caller skips them (``throttled``), or an
    event with a digest folds them into it instead.

    A recipient whose outcome this emit has recorded already (sent, skipped, failed...) or
    another run of it holds claimed is left to the claim, which reports it: it takes no slot.

    ``known``: the slots of ``throttle.scope`` read already (:func:`slots`, for a batch's
    recipients); ``logged``: this emit's delivery rows read already
    (``store.existing_together``); either is read here when not given. A slot read free may
    have been taken since (by an earlier emit of the batch, or another run): taking it then
    changes nothing, and the next free one is tried.
    """
    if not keys:
        return []
    found = known if known is not None else slots(session, throttle.scope, keys)
    mine = {key for key in keys if any(h.event_id == event_id for h in found.get(key, []))}
    if logged is None:
        logged = store.existing_together(session, [event_id], claim_timeout=0.0)[event_id]
    wanted = [
        key
        for key in keys
        if key not in mine and (key not in logged or logged[key].status == store.RETRY)
    ]
    if not wanted:
        return []
    now = current_time()
    free_before = now - throttle.per
    past: list[str] = []
    for key in wanted:
        taken = {h.slot: h.taken_at for h in found.get(key, [])}
        free = [
            slot for slot in range(throttle.limit) if slot not in taken or taken[slot] < free_before
        ]
        if not any(
            _take(session, throttle.scope, key, slot, event_id, now, free_before) for slot in free
        ):
            past.append(key)
    return past


class Held:
    """A slot as read: its number, the emit holding it, and when that emit took it (aware)."""

    __slots__ = ("event_id", "slot", "taken_at")

    def __init__(self, slot: int, event_id: str, taken_at: datetime) -> None:
        self.slot = slot
        self.event_id = event_id
        self.taken_at = taken_at if taken_at.tzinfo else taken_at.replace(tzinfo=UTC)


def held(session: Session, scope: str, recipient: str) -> list[Held]:
    """The slots of ``recipient``'s budget in ``scope``, by number (taken or free again)."""
    return slots(session, scope, [recipient]).get(recipient, [])


def slots(session: Session, scope: str, keys: Iterable[str]) -> dict[str, list[Held]]:
    """Recipient -> the slots of its budget in ``scope``, by number: one statement per
    ``tables.IN_LIST`` recipients (a batch reads its recipients' together)."""
    found: dict[str, list[Held]] = {}
    for chunk in in_chunks(keys):
        rows = session.execute(
            sa.select(
                throttle_slots.c.recipient,
                throttle_slots.c.slot,
                throttle_slots.c.event_id,
                throttle_slots.c.taken_at,
            )
            .where(throttle_slots.c.scope == scope, throttle_slots.c.recipient.in_(chunk))
            .order_by(throttle_slots.c.recipient, throttle_slots.c.slot)
        )
        for row in rows:
            found.setdefault(row.recipient, []).append(Held(row.slot, row.event_id, row.taken_at))
    return found


def _take(  # noqa: PLR0917 - one slot, named in full
    session: Session,
    scope: str,
    recipient: str,
    slot: int,
    event_id: str,
    now: datetime,
    free_before: datetime,
) -> bool:
    """Take ``slot`` for ``event_id`` if it is free, and commit; whether the emit now holds a
    slot of this budget (this one, or one another run of it took at the same moment)."""
    parameters = {
        "b_scope": scope,
        "b_recipient": recipient,
        "b_slot": slot,
        "b_event_id": event_id,
        "b_now": now,
        "b_free_before": free_before,
    }
    autocommit = _commits_alone(session)
    try:
        with store.one_writer(session):
            taken = session.execute(_statement(_dialect(session)), parameters).first()
            if not autocommit:
                session.commit()
    except sa.exc.IntegrityError:
        # Only the unique (scope, recipient, event id) can refuse it (a slot's own conflict is the
        # upsert's): another run of this emit took a slot of this budget at the same moment.
        session.rollback()
        store.statements_commit_alone(session)
        return True
    return taken is not None


def _commits_alone(session: Session) -> bool:
    """Whether each statement of the session commits by itself (``statements_commit_alone``)."""
    options = session.connection().get_execution_options()
    return bool(options.get("isolation_level") == "AUTOCOMMIT")


def _dialect(session: Session) -> str:
    name = session.get_bind().dialect.name
    if name not in _DIALECTS:
        raise ConfigurationError(
            f"throttles need PostgreSQL or SQLite (their atomic upsert); this database is {name}"
        )
    return name


@functools.cache
def _statement(dialect: str) -> sa.Insert:
    """``INSERT`` the slot, or, when it exists, take it over only if it is free: one statement
    that either takes the slot or changes nothing, ``RETURNING`` the slot when taken."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    moment = sa.DateTime(timezone=True)
    statement = insert(throttle_slots).values(
        scope=sa.bindparam("b_scope", type_=sa.String),
        recipient=sa.bindparam("b_recipient", type_=sa.String),
        slot=sa.bindparam("b_slot", type_=sa.Integer),
        event_id=sa.bindparam("b_event_id", type_=sa.String),
        taken_at=sa.bindparam("b_now", type_=moment),
    )
    return statement.on_conflict_do_update(
        index_elements=[throttle_slots.c.scope, throttle_slots.c.recipient, throttle_slots.c.slot],
        set_={"event_id": statement.excluded.event_id, "taken_at": statement.excluded.taken_at},
        where=throttle_slots.c.taken_at < sa.bindparam("b_free_before", type_=moment),
    ).returning(throttle_slots.c.slot)
