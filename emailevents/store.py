"""Every statement on the delivery log and the toggles (the tables are in :mod:`.tables`).

The delivery log (``emailevents_deliveries``): a run claims its recipients, records their
outcomes, and finds what other runs of the same emit did. The org settings
(``emailevents_org_settings``): the toggles. The statements on the emits
(``emailevents_emits``) are :mod:`emailevents.emitstore`'s, the webhooks' :mod:`.timeline`'s.
Nothing else runs SQL on them.

The tables are re-exported here, where they were defined before ``tables`` held them.
"""

from __future__ import annotations

import contextlib
import json
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .outcomes import Outcome
from .tables import (
    current_time,
    deliveries,
    emits,
    foreign_records,
    in_chunks,
    message_events,
    metadata,
    org_settings,
)

__all__ = [
    "EVENT_LEVEL",
    "current_time",
    "deliveries",
    "emits",
    "foreign_records",
    "message_events",
    "metadata",
    "org_settings",
]

CLAIMED = "claimed"
RETRY = "retry"

EVENT_LEVEL = ""
"""The recipient of a delivery row about the whole emit (an entity missing, the toggle off)."""

DETAIL_LENGTH = 4000
"""The most of an outcome's detail the delivery log keeps."""


PENDING = "pending"
PUBLISHED = "published"


# Statements every task run executes are built once: building one, and its cache key, costs
# about as much as running it against a local database.
_TOGGLE = sa.select(org_settings.c.enabled).where(
    org_settings.c.org_key == sa.bindparam("b_org_key"),
    org_settings.c.toggle_key == sa.bindparam("b_toggle_key"),
)


def toggle_enabled(session: Session, org_key: str, toggle_key: str) -> bool:
    """An org's setting for ``toggle_key``; enabled unless a row switches it off."""
    enabled = session.execute(
        _TOGGLE, {"b_org_key": org_key, "b_toggle_key": toggle_key}
    ).scalar_one_or_none()
    return enabled is not False


def set_toggle(session: Session, org_key: str, toggle_key: str, enabled: bool) -> None:
    """Switch ``toggle_key`` on or off for one organization (flushed, not committed)."""
    key = {"org_key": org_key, "toggle_key": toggle_key}
    values = {"enabled": enabled, "updated_at": current_time()}
    updated = session.execute(
        sa.update(org_settings)
        .where(org_settings.c.org_key == org_key, org_settings.c.toggle_key == toggle_key)
        .values(**values)
    )
    if getattr(updated, "rowcount", 0) == 0:
        session.execute(sa.insert(org_settings).values(**key, **values))


def insert_ignoring_duplicates(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert delivery rows; a row whose (event_id, recipient) exists already is left alone.

    Several workers may run the same emit at once (a redelivered message): the unique constraint
    decides who claims a recipient, and the loser must not abort its whole transaction.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(deliveries).on_conflict_do_nothing(), rows)
    elif dialect == "sqlite":
        session.execute(sqlite.insert(deliveries).on_conflict_do_nothing(), rows)
    else:
        for row in rows:
            try:
                with session.begin_nested():
                    session.execute(sa.insert(deliveries).values(**row))
            except sa.exc.IntegrityError:
                continue


def _json_items(dialect: str, parameter: str, *, strings: bool) -> sa.ColumnElement[Any]:
    """Each item of the JSON array bound as ``parameter``, a row each: as text for an array of
    ``strings``, else as JSON (objects, read with :func:`_json_field`)."""
    array = sa.bindparam(parameter, type_=sa.String)
    if dialect == "postgresql":
        items = sa.func.json_array_elements_text if strings else sa.func.json_array_elements
        elements = items(sa.cast(array, postgresql.JSON))
    else:
        elements = sa.func.json_each(array)
    return elements.table_valued("value").c.value


def _json_field(dialect: str, value: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[Any]:
    """The field ``name`` of a JSON object, as text (NULL for null)."""
    if dialect == "postgresql":
        return value.op("->>")(sa.literal_column(f"'{name}'"))
    return sa.func.json_extract(value, sa.literal_column(f"'$.{name}'"))


# Statements over JSON arrays need INSERT/UPDATE ... RETURNING and UPDATE ... FROM: PostgreSQL,
# and SQLite from 3.35 (json_each is built in). Elsewhere, one statement per row.
_JSON_DIALECTS = ("postgresql", "sqlite")


# SQLite lets one writer in at a time, and a connection that finds the database locked sleeps
# (1 ms, 2 ms, 5 ms, ...) before it tries again, while a write here takes a tenth of that: with
# many threads, most of their time went to those sleeps. Threads of one process queue on a lock
# instead, and take turns at once; other processes still meet SQLite's own lock.
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_SQLITE_WRITERS_LOCK = threading.Lock()


@contextlib.contextmanager
def one_writer(session: Session) -> Iterator[None]:
    """Around a statement that commits alone: on SQLite, one such writer per process at once."""
    bind = session.get_bind()
    if bind.dialect.name != "sqlite" or not isinstance(bind, sa.Engine):
        yield
        return
    with _SQLITE_WRITERS_LOCK:
        lock = _SQLITE_WRITERS.setdefault(bind.pool, threading.Lock())
    with lock:
        yield


def _speaks_json(session: Session) -> str | None:
    """The session's dialect name, if it runs the statements over JSON arrays."""
    dialect = session.get_bind().dialect
    if dialect.name in _JSON_DIALECTS and dialect.insert_returning:
        return dialect.name
    return None


def _claim_statement(dialect: str, *, together: bool = False) -> sa.Insert:
    """``INSERT ... SELECT`` a claim row per recipient of a JSON array, skipping those logged
    already, ``RETURNING`` the recipients inserted: one statement with a handful of parameters
    whatever the number of recipients (5,000 rows as VALUES are 45,000 parameters to send).
    ``together``: an array of ``{"e": event id, "r": recipient}``, the emits of a batch."""
    event_id: sa.ColumnElement[Any] = sa.bindparam("b_event_id", type_=sa.String)
    recipient = _json_items(dialect, "b_recipients", strings=not together)
    if together:
        event_id = _json_field(dialect, recipient, "e").label("event_id")
        recipient = _json_field(dialect, recipient, "r").label("recipient")
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    timestamp = sa.bindparam("b_now", type_=sa.DateTime(timezone=True))
    source = sa.select(
        event_id,
        sa.bindparam("b_event_key", type_=sa.String),
        recipient,
        sa.literal(CLAIMED),
        sa.literal(CLAIMED),
        sa.literal(""),
        sa.bindparam("b_token", type_=sa.String),
        timestamp,
        timestamp,
    ).where(sa.true())  # SQLite: without a WHERE, ON CONFLICT would be read as a join's ON
    columns = [
        deliveries.c.event_id,
        deliveries.c.event_key,
        deliveries.c.recipient,
        deliveries.c.status,
        deliveries.c.reason,
        deliveries.c.detail,
        deliveries.c.claim,
        deliveries.c.created_at,
        deliveries.c.updated_at,
    ]
    return (
        insert(deliveries)
        .from_select(columns, source)
        .on_conflict_do_nothing()
        .returning(deliveries.c.event_id, deliveries.c.recipient)
    )


_CLAIM = {dialect: _claim_statement(dialect) for dialect in _JSON_DIALECTS}
_CLAIM_TOGETHER = {d: _claim_statement(d, together=True) for d in _JSON_DIALECTS}


def claim_together(
    session: Session, event_key: str, pairs: Sequence[tuple[str, str]], token: str
) -> set[tuple[str, str]]:
    """Claim the new ``(event id, recipient)`` pairs of many emits of ``event_key`` in one
    statement, and commit; returns the pairs inserted (none on a database without the JSON
    functions: there each emit claims alone)."""
    dialect = _speaks_json(session)
    if dialect is None:
        return set()
    with one_writer(session):
        rows = session.execute(
            _CLAIM_TOGETHER[dialect],
            {
                "b_recipients": json.dumps([{"e": e, "r": r} for e, r in pairs]),
                "b_event_key": event_key,
                "b_token": token,
                "b_now": current_time(),
            },
        )
        inserted = {(r.event_id, r.recipient) for r in rows}
    session.commit()
    return inserted


def _insert_claims(
    session: Session,
    event_id: str,
    event_key: str,
    recipients: list[str],
    *,
    token: str,
    now: datetime,
) -> set[str] | None:
    """Insert claim rows, skipping those that exist; the recipients inserted, where the database
    can say (PostgreSQL, SQLite 3.35+), else None."""
    dialect = _speaks_json(session)
    if dialect is None:
        common: dict[str, Any] = {"event_id": event_id, "event_key": event_key, "detail": ""}
        common |= {"status": CLAIMED}
        common |= {"reason": CLAIMED, "claim": token, "created_at": now, "updated_at": now}
        insert_ignoring_duplicates(session, [common | {"recipient": r} for r in recipients])
        return None
    with one_writer(session):
        inserted = session.execute(
            _CLAIM[dialect],
            {
                "b_recipients": json.dumps(recipients),
                "b_event_id": event_id,
                "b_event_key": event_key,
                "b_token": token,
                "b_now": now,
            },
        )
        return {row.recipient for row in inserted}


def claim(
    session: Session, event_id: str, event_key: str, recipients: Iterable[str], token: str
) -> set[str]:
    """Claim recipients for this run and commit; returns those this run may send to.

    New recipients are inserted as claimed; a recipient whose last try failed transiently
    (status ``retry``) is claimed again. Anything else already in the log (sent, failed,
    unknown, claimed by another run) is not claimed: the unique constraint and the conditional
    update decide between two runs of the same emit.
    """
    recipients = list(recipients)
    now = current_time()
    inserted = _insert_claims(session, event_id, event_key, recipients, token=token, now=now)
    if inserted is not None and inserted >= set(recipients):
        # Every recipient was new to the log (an emit's first try): this run holds them all, and
        # there is no `retry` row to claim again nor anything to read back.
        session.commit()
        return inserted
    return _claim_again(session, event_id, recipients, token, deliveries.c.status == RETRY, now=now)


def take_over(
    session: Session, event_id: str, recipients: Sequence[str], token: str, *, claim_timeout: float
) -> set[str]:
    """Claim recipients whose claim went stale, and commit; returns those this run now holds."""
    if not recipients:
        return set()
    stale = _stale(claim_timeout)
    held = _claim_again(session, event_id, recipients, token, stale, now=current_time())
    return held & set(recipients)


def _claim_again(
    session: Session,
    event_id: str,
    recipients: Sequence[str],
    token: str,
    claimable: sa.ColumnElement[bool],
    *,
    now: datetime,
) -> set[str]:
    """Claim for ``token`` the rows of ``recipients`` that are ``claimable``, and commit; returns
    every recipient of the emit that ``token`` holds."""
    session.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.event_id == event_id,
            deliveries.c.recipient.in_(recipients),
            claimable,
        )
        .values(status=CLAIMED, reason=CLAIMED, claim=token, updated_at=now)
    )
    session.commit()
    mine = session.execute(
        sa.select(deliveries.c.recipient).where(
            deliveries.c.event_id == event_id, deliveries.c.claim == token
        )
    ).scalars()
    return set(mine)


def _stale(claim_timeout: float) -> sa.ColumnElement[bool]:
    """A claim older than ``claim_timeout`` seconds: its run stopped before recording an answer,
    or its request got none."""
    stale_before = current_time() - timedelta(seconds=claim_timeout)
    return sa.and_(deliveries.c.status == CLAIMED, deliveries.c.updated_at < stale_before)


def statements_commit_alone(session: Session) -> None:
    """Let each statement the session runs commit by itself, until its next ``commit()``.

    A write of one statement then costs one round trip, not three (``BEGIN``, it, ``COMMIT``).
    Only when nothing has begun yet, and on the databases whose writes here are one statement
    each (the JSON-array statements): a session in a transaction, bound to a connection (an
    outer transaction, as in tests) rather than to an engine, or on another database (whose
    row-by-row writes use savepoints) is left as it is.
    """
    if (
        not session.in_transaction()
        and isinstance(session.get_bind(), sa.Engine)
        and _speaks_json(session) is not None
    ):
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def unsettled(session: Session, event_ids: Sequence[str]) -> set[str]:
    """Those of ``event_ids`` whose task left no outcome yet, or left one still in progress
    (a recipient claimed, or waiting for a retry)."""
    if not event_ids:
        return set()
    in_progress = sa.func.sum(
        sa.case((deliveries.c.status.in_([CLAIMED, RETRY]), 1), else_=0)
    ).label("in_progress")
    rows = session.execute(
        sa.select(deliveries.c.event_id, in_progress)
        .where(deliveries.c.event_id.in_(event_ids))
        .group_by(deliveries.c.event_id)
    )
    settled = {r.event_id for r in rows if not r.in_progress}
    return set(event_ids) - settled


def record_together(
    session: Session, outcomes: Sequence[tuple[str, Outcome]], *, token: str, flush_wait: bool
) -> None:
    """Write the outcomes of many emits' claimed ``(event id, outcome)`` in one statement, and
    commit (PostgreSQL and SQLite 3.35+ only); see :func:`record`."""
    if outcomes:
        dialect = _speaks_json(session) or "postgresql"
        rows = [_row(o) | {"event_id": event_id} for event_id, o in outcomes]
        params = {"b_updated_at": current_time(), "b_token": token, "b_rows": json.dumps(rows)}
        with one_writer(session):
            session.execute(_RECORD_TOGETHER[dialect, flush_wait], params)
    session.commit()


def _row(o: Outcome) -> dict[str, Any]:
    return {
        "recipient": o.recipient,
        "status": o.status.value,
        "reason": o.reason.value,
        "detail": o.detail[:DETAIL_LENGTH],
        "message_id": o.message_id,
    }


def record(
    session: Session,
    event_id: str,
    outcomes: Sequence[Outcome],
    *,
    token: str | None = None,
    flush_wait: bool = True,
) -> None:
    """Write the outcomes of claimed recipients in one statement (not committed).

    Only rows still claimed are written, and with ``token`` only those this run's claim holds:
    a run that lost its claim to another (it was slow, and taken for dead) cannot overwrite
    what that other run recorded.

    Without ``flush_wait``, on PostgreSQL, the transaction that writes them commits without
    waiting for its WAL to reach the disk (``synchronous_commit`` off for it alone): a crash of
    the database server in the next few hundred milliseconds can lose it, whole, never
    corrupt it. The claims then stay, go stale, and are settled like those of a run that died.
    """
    if not outcomes:
        return
    common = _common(event_id, token)
    rows = [_row(o) for o in outcomes]
    dialect = _speaks_json(session)
    if dialect is not None:
        with one_writer(session):
            session.execute(
                _RECORD_ROWS[dialect, token is not None, flush_wait],
                {**common, "b_rows": json.dumps(rows)},
            )
        return
    session.execute(
        _RECORD_EACH[token is not None],
        [common | {f"b_{key}": value for key, value in row.items()} for row in rows],
    )


def _common(event_id: str, token: str | None) -> dict[str, Any]:
    """The parameters every row of an outcome's update shares."""
    common: dict[str, Any] = {"b_event_id": event_id, "b_updated_at": current_time()}
    if token is not None:
        common["b_token"] = token
    return common


def _record_conditions(
    recipient: sa.ColumnElement[Any], *, by_token: bool, event_id: Any = None
) -> list[Any]:
    conditions = [
        deliveries.c.event_id == (sa.bindparam("b_event_id") if event_id is None else event_id),
        deliveries.c.recipient == recipient,
        deliveries.c.status == CLAIMED,
    ]
    if by_token:
        conditions.append(deliveries.c.claim == sa.bindparam("b_token"))
    return conditions


def _record_rows_statement(
    dialect: str, *, by_token: bool, flush_wait: bool, together: bool = False
) -> sa.Update:
    """``UPDATE ... FROM`` the outcomes of a JSON array of objects: one statement for all
    (``together``: each object names its event id, the emits of a batch)."""
    value = _json_items(dialect, "b_rows", strings=False)
    fields = ("recipient", "status", "reason", "detail", "message_id", "event_id")[: 5 + together]
    columns = [_json_field(dialect, value, f).label(f) for f in fields]
    if dialect == "postgresql" and not flush_wait:
        # `SET LOCAL`, inside the statement: it is the whole transaction when it runs alone
        # (see statements_commit_alone), and a volatile function is evaluated for every row.
        no_wait = sa.func.set_config("synchronous_commit", "off", sa.true())
        columns.append(no_wait.label("no_flush_wait"))
    outcome: sa.Subquery | sa.CTE
    if dialect == "postgresql":
        outcome = sa.select(*columns).subquery("outcome")
    else:
        # SQLite would loop over the JSON array once per delivery row of the emit (quadratic:
        # 17 s for 5,000); materialized, the array is read once and each row found by index.
        outcome = sa.select(*columns).cte("outcome").prefix_with("MATERIALIZED")
    return (
        sa.update(deliveries)
        .where(
            *_record_conditions(
                outcome.c.recipient,
                by_token=by_token,
                event_id=outcome.c.event_id if together else None,
            )
        )
        .values(
            status=outcome.c.status,
            reason=outcome.c.reason,
            detail=outcome.c.detail,
            message_id=outcome.c.message_id,
            updated_at=sa.bindparam("b_updated_at", type_=sa.DateTime(timezone=True)),
        )
        .execution_options(synchronize_session=False)
    )


def _record_each_statement(*, by_token: bool) -> sa.Update:
    """The same for one outcome, run once per row (databases without the JSON functions)."""
    return (
        sa.update(deliveries)
        .where(*_record_conditions(sa.bindparam("b_recipient"), by_token=by_token))
        .values(
            status=sa.bindparam("b_status"),
            reason=sa.bindparam("b_reason"),
            detail=sa.bindparam("b_detail"),
            message_id=sa.bindparam("b_message_id"),
            updated_at=sa.bindparam("b_updated_at"),
        )
        .execution_options(synchronize_session=False)
    )


_RECORD_ROWS = {
    (d, by_token, wait): _record_rows_statement(d, by_token=by_token, flush_wait=wait)
    for d in _JSON_DIALECTS
    for by_token in (False, True)
    for wait in (False, True)
}
_RECORD_TOGETHER = {
    (d, wait): _record_rows_statement(d, by_token=True, flush_wait=wait, together=True)
    for d in _JSON_DIALECTS
    for wait in (False, True)
}
_RECORD_EACH = {by_token: _record_each_statement(by_token=by_token) for by_token in (False, True)}


def keep_unanswered(
    session: Session, event_id: str, outcomes: Sequence[Outcome], *, token: str | None = None
) -> None:
    """Keep the claims on recipients whose request got no answer (not committed); with
    ``token``, only those this run's claim holds.

    The rows stay claimed, with reason ``no_answer`` and the time of the failure, so that a
    later try takes them for stale after the claim timeout and asks the provider's message
    search before sending again.
    """
    if not outcomes:
        return
    common = _common(event_id, token)
    session.execute(
        _KEEP_UNANSWERED[token is not None],
        [
            common
            | {
                "b_recipient": o.recipient,
                "b_reason": o.reason.value,
                "b_detail": o.detail[:DETAIL_LENGTH],
            }
            for o in outcomes
        ],
    )


_KEEP_UNANSWERED = {
    by_token: sa.update(deliveries)
    .where(*_record_conditions(sa.bindparam("b_recipient"), by_token=by_token))
    .values(
        reason=sa.bindparam("b_reason"),
        detail=sa.bindparam("b_detail"),
        updated_at=sa.bindparam("b_updated_at"),
    )
    .execution_options(synchronize_session=False)
    for by_token in (False, True)
}


def settle(
    session: Session,
    event_id: str,
    outcomes: Sequence[Outcome],
    *,
    unanswered: Sequence[Outcome] = (),
    token: str | None = None,
    flush_wait: bool = True,
) -> None:
    """Record ``outcomes`` (see :func:`record`), keep the claims of the ``unanswered`` (see
    :func:`keep_unanswered`), and commit.

    When the session has nothing begun (the claim's commit ended what
    :func:`statements_commit_alone` began), each write commits alone again.
    """
    statements_commit_alone(session)
    record(session, event_id, outcomes, token=token, flush_wait=flush_wait)
    keep_unanswered(session, event_id, unanswered, token=token)
    session.commit()


def record_skips(
    session: Session,
    event_id: str,
    event_key: str,
    outcomes: Sequence[Outcome],
    *,
    over_retry: bool = False,
) -> None:
    """Write outcomes decided before sending, and commit; rows that exist already (a
    redelivery) stay as they are, but, with ``over_retry``, a row whose last try failed
    transiently (``retry``, which nothing holds) takes the outcome."""
    if not outcomes:
        return
    rows = [
        {
            "event_id": event_id,
            "event_key": event_key,
            "recipient": o.recipient,
            "status": o.status.value,
            "reason": o.reason.value,
            "detail": o.detail[:DETAIL_LENGTH],
        }
        for o in outcomes
    ]
    insert_ignoring_duplicates(session, rows)
    if over_retry:
        now = current_time()
        for row in rows:
            session.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.event_id == event_id,
                    deliveries.c.recipient == row["recipient"],
                    deliveries.c.status == RETRY,
                )
                .values(
                    status=row["status"],
                    reason=row["reason"],
                    detail=row["detail"],
                    claim=None,
                    updated_at=now,
                )
            )
    session.commit()


@dataclass(frozen=True)
class Logged:
    """A delivery row as a later run of the same emit finds it."""

    status: str
    reason: str
    stale: bool
    """Claimed longer ago than the claim timeout: its run stopped before recording an answer."""


def existing_together(
    session: Session, event_ids: Iterable[str], *, claim_timeout: float
) -> dict[str, dict[str, Logged]]:
    """Event id -> recipient -> what is logged for it already: one statement per
    ``tables.IN_LIST`` event ids (a batch's), not one per emit."""
    found: dict[str, dict[str, Logged]] = {event_id: {} for event_id in event_ids}
    stale = sa.case((_stale(claim_timeout), True), else_=False).label("stale")
    columns = deliveries.c.event_id, deliveries.c.recipient, deliveries.c.status
    for chunk in in_chunks(found):
        rows = session.execute(
            sa.select(*columns, deliveries.c.reason, stale).where(deliveries.c.event_id.in_(chunk))
        )
        for row in rows:
            found[row.event_id][row.recipient] = Logged(row.status, row.reason, bool(row.stale))
    return found


@dataclass(frozen=True)
class Explanation:
    """What the database knows of one emit: its pending-emit row, and every outcome."""

    emit: Any
    deliveries: list[Any]


def explain(session: Session, event_id: str) -> Explanation:
    """The emit row (when it was made with ``session=``) and the delivery rows of ``event_id``."""
    emit = session.execute(sa.select(emits).where(emits.c.event_id == event_id)).first()
    rows = session.execute(
        sa.select(deliveries)
        .where(deliveries.c.event_id == event_id)
        .order_by(deliveries.c.recipient)
    ).all()
    return Explanation(emit, list(rows))


@dataclass(frozen=True)
class Count:
    """How many outcomes of one kind an event had."""

    event_key: str
    status: str
    reason: str
    count: int


def stats(session: Session, *, since: datetime, event_key: str | None = None) -> list[Count]:
    """Outcomes per event, status and reason, recorded since ``since``."""
    kind = deliveries.c.event_key, deliveries.c.status, deliveries.c.reason
    query = (
        sa.select(*kind, sa.func.count().label("n"))
        .where(deliveries.c.updated_at >= since)
        .group_by(*kind)
        .order_by(deliveries.c.event_key, sa.func.count().desc())
    )
    if event_key is not None:
        query = query.where(deliveries.c.event_key == event_key)
    return [Count(r.event_key, r.status, r.reason, r.n) for r in session.execute(query)]
