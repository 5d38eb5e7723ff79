"""The suppression list we keep: each message stream's addresses not to send to, and why.

An address is suppressed on a stream by a hard bounce or a spam complaint (Postmark's webhooks),
a ``SubscriptionChange`` with ``SuppressSending: true``, Postmark's ErrorCode 406 to one of our
sends, Postmark's own list (``sync``), or a person (``add``); a ``SubscriptionChange`` with
``SuppressSending: false`` or a ``remove`` lifts it. A run skips a suppressed recipient before
claiming it: outcome ``skipped``, reason ``suppressed``, and the detail says why and since when.

Changes arrive in any order and any number of times (Postmark delivers each webhook at least
once): each carries the time it happened, and the newest wins, whatever the order it came in.
A lifted suppression keeps its row, so that an older change arriving late cannot undo it.

:class:`SuppressionList` (``events.suppressions``) is the list with Postmark's Suppressions API
beside it: ``add`` and ``remove`` ask Postmark first and change here what Postmark did, ``sync``
takes Postmark's list. Postmark's API is reached through a :class:`Remote`
(:class:`~emailevents.senders.postmark_suppressions.PostmarkSuppressions`).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .addresses import AddressError, check_address
from .errors import ConfigurationError
from .tables import current_time, in_chunks, suppressions

__all__ = [
    "DEFAULT_STREAM",
    "Change",
    "Changes",
    "Origin",
    "Remote",
    "Suppression",
    "SuppressionList",
    "Synced",
    "apply",
    "entries",
    "suppressed",
]

DEFAULT_STREAM = "outbound"
"""Postmark's default transactional stream."""

DETAIL_LENGTH = 1000


class Origin(StrEnum):
    """Who told us of a change."""

    WEBHOOK = "webhook"
    """Postmark's webhook: a Bounce, a SpamComplaint or a SubscriptionChange."""
    SEND = "send"
    """Postmark answered ErrorCode 406 (inactive recipient) to one of our sends."""
    SYNC = "sync"
    """Postmark's Suppressions API, read by ``sync``."""
    MANUAL = "manual"
    """A person, with ``add`` or ``remove``."""


@dataclass(frozen=True)
class Change:
    """An address suppressed (``suppress``) or lifted on ``stream`` at time ``at``."""

    stream: str
    address: str
    suppress: bool
    reason: str
    """Postmark's ``SuppressionReason`` (HardBounce, SpamComplaint, ManualSuppression) or
    what else said so (``InactiveRecipient``: ErrorCode 406)."""
    origin: Origin
    at: datetime
    detail: str = ""
    event_id: str | None = None
    """The emit whose message bounced, was complained about or was refused."""

    def row(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "address": self.address.strip().lower(),
            "suppressed": self.suppress,
            "reason": self.reason,
            "origin": self.origin.value,
            "detail": self.detail[:DETAIL_LENGTH],
            "event_id": self.event_id,
            "changed_at": _utc(self.at),
            "recorded_at": current_time(),
        }


_TOLD = {
    Origin.WEBHOOK.value: "Postmark's webhook",
    Origin.SEND.value: "Postmark's answer to a send",
    Origin.SYNC.value: "Postmark's suppression list",
    Origin.MANUAL.value: "set by hand",
}


@dataclass(frozen=True)
class Suppression:
    """One address suppressed on one stream."""

    stream: str
    address: str
    reason: str
    origin: str
    since: datetime
    detail: str = ""
    event_id: str | None = None

    def describe(self) -> str:
        """Why and since when, in a sentence (the detail of a ``suppressed`` outcome)."""
        told = _TOLD.get(self.origin, self.origin)
        since = self.since.strftime("%Y-%m-%d %H:%M:%S UTC")
        found = f"suppressed on stream {self.stream!r} since {since}: {self.reason} ({told}"
        if self.event_id:
            found += f", emit {self.event_id}"
        return found + ")" + (f"; {self.detail}" if self.detail else "")

    def document(self) -> dict[str, Any]:
        """The suppression as JSON (``emailevents suppressions list --format json``)."""
        return {
            "stream": self.stream,
            "address": self.address,
            "reason": self.reason,
            "origin": self.origin,
            "since": self.since.isoformat(),
            "detail": self.detail,
            "event_id": self.event_id,
        }


def apply(session: Session, changes: Iterable[Change]) -> None:
    """Apply ``changes`` (not committed): for each address, the newest change wins over what is
    kept, whatever order they come in; of two at the same time, a suppression wins."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for change in changes:
        row = change.row()
        key = (row["stream"], row["address"])
        kept = newest.get(key)
        if kept is None or _newer(row, kept):
            newest[key] = row
    if not newest:
        return
    rows = list(newest.values())
    dialect = session.get_bind().dialect.name
    if dialect in {"postgresql", "sqlite"}:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(suppressions)
        excluded = statement.excluded
        wins = (excluded.changed_at > suppressions.c.changed_at) | (
            (excluded.changed_at == suppressions.c.changed_at) & excluded.suppressed
        )
        columns = ("suppressed", "reason", "origin", "detail", "event_id", "changed_at")
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[suppressions.c.stream, suppressions.c.address],
                set_={name: excluded[name] for name in columns} | {"recorded_at": current_time()},
                where=wins,
            ),
            rows,
        )
        return
    for row in rows:  # other databases: row by row, the unique key deciding between writers
        _apply_one(session, row)


def _newer(row: Mapping[str, Any], kept: Mapping[str, Any]) -> bool:
    if row["changed_at"] != kept["changed_at"]:
        return bool(row["changed_at"] > kept["changed_at"])
    return bool(row["suppressed"]) and not kept["suppressed"]


def _apply_one(session: Session, row: dict[str, Any]) -> None:
    where = (suppressions.c.stream == row["stream"]) & (suppressions.c.address == row["address"])
    kept = session.execute(
        sa.select(suppressions.c.changed_at, suppressions.c.suppressed).where(where)
    ).first()
    if kept is None:
        try:
            with session.begin_nested():
                session.execute(sa.insert(suppressions).values(**row))
        except sa.exc.IntegrityError:  # written meanwhile: compare with it
            kept = session.execute(
                sa.select(suppressions.c.changed_at, suppressions.c.suppressed).where(where)
            ).one()
        else:
            return
    if _newer(row, {"changed_at": _utc(kept.changed_at), "suppressed": kept.suppressed}):
        session.execute(sa.update(suppressions).where(where).values(**row))


def suppressed(session: Session, stream: str, addresses: Sequence[str]) -> dict[str, Suppression]:
    """Those of ``addresses`` (lowercased) suppressed on ``stream`` now, each with why: one
    statement per ``tables.IN_LIST`` addresses (a batch reads its recipients together)."""
    found: dict[str, Suppression] = {}
    for chunk in in_chunks(a.lower() for a in addresses):
        rows = session.execute(
            sa.select(suppressions).where(
                suppressions.c.stream == stream,
                suppressions.c.address.in_(chunk),
                suppressions.c.suppressed,
            )
        ).mappings()
        found.update((row["address"], _suppression(row)) for row in rows)
    return found


def entries(session: Session, stream: str | None = None) -> list[Suppression]:
    """The addresses suppressed now (on ``stream``, or on every stream), oldest first."""
    query = sa.select(suppressions).where(suppressions.c.suppressed)
    if stream is not None:
        query = query.where(suppressions.c.stream == stream)
    rows = session.execute(
        query.order_by(suppressions.c.changed_at, suppressions.c.stream, suppressions.c.address)
    ).mappings()
    return [_suppression(row) for row in rows]


def _suppression(row: sa.RowMapping) -> Suppression:
    return Suppression(
        stream=row["stream"],
        address=row["address"],
        reason=row["reason"],
        origin=row["origin"],
        since=_utc(row["changed_at"]),
        detail=row["detail"],
        event_id=row["event_id"],
    )


def _utc(moment: datetime) -> datetime:
    """Aware and in UTC (SQLite gives back the UTC we wrote without its zone)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# -- the list with Postmark's API beside it --


class Remote(Protocol):
    """Postmark's Suppressions API, one stream at a time. Each answer item is Postmark's:
    ``{"EmailAddress": ..., "Status": "Suppressed" | "Deleted" | "Failed", "Message": ...}``."""

    def dump(self, stream: str) -> list[dict[str, Any]]: ...

    def create(self, stream: str, addresses: Sequence[str]) -> list[dict[str, Any]]: ...

    def delete(self, stream: str, addresses: Sequence[str]) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Changes:
    """What ``add`` or ``remove`` did on one stream: the addresses changed, and those Postmark
    refused, with its reason (left as they were here)."""

    stream: str
    changed: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Synced:
    """What ``sync`` found on one stream: Postmark's suppressions new here, those we had
    already, and those we hold that Postmark does not (kept; ``remove`` lifts one)."""

    stream: str
    added: tuple[str, ...] = ()
    known: tuple[str, ...] = ()
    only_here: tuple[str, ...] = ()


class SuppressionList:
    """``events.suppressions``: the suppression list in the application's database, and
    Postmark's beside it (``remote``; ``None``: no Postmark sender, the local list only).

    Args:
        session_factory: opens a session on the application's database.
        remote: Postmark's Suppressions API.
        streams: the streams the registry's events send on (the default of each method).
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        remote: Remote | None,
        streams: Sequence[str],
    ) -> None:
        self._sessions = session_factory
        self._remote = remote
        self.streams = tuple(streams)

    def list(self, stream: str | None = None) -> builtins.list[Suppression]:
        """The addresses suppressed now, on ``stream`` or on every stream."""
        with self._sessions() as session:
            return entries(session, stream)

    def get(self, address: str, stream: str | None = None) -> builtins.list[Suppression]:
        """``address``'s suppressions now, on ``stream`` or on each of :attr:`streams`."""
        with self._sessions() as session:
            return [
                found
                for name in self._streams(stream)
                for found in suppressed(session, name, [address]).values()
            ]

    def add(
        self, addresses: Sequence[str], *, stream: str | None = None, reason: str = ""
    ) -> builtins.list[Changes]:
        """Suppress ``addresses`` (on ``stream``, or on each of :attr:`streams`): Postmark first
        (a ManualSuppression), then here, for the addresses Postmark suppressed."""
        return [
            self._change(name, addresses, suppress=True, note=reason)
            for name in self._streams(stream)
        ]

    def remove(
        self, addresses: Sequence[str], *, stream: str | None = None
    ) -> builtins.list[Changes]:
        """Reactivate ``addresses``: Postmark first, then here, for those Postmark reactivated.
        Postmark never reactivates a spam complaint: reported in ``refused``, kept here."""
        return [
            self._change(name, addresses, suppress=False, note="") for name in self._streams(stream)
        ]

    def sync(self, stream: str | None = None) -> builtins.list[Synced]:
        """Take Postmark's suppressions into the list (each at its ``CreatedAt``)."""
        remote = self._needs_remote("sync")
        found: list[Synced] = []
        for name in self._streams(stream):
            dump = remote.dump(name)
            with self._sessions() as session:
                held = {s.address: s for s in entries(session, name)}
                theirs = {str(item["EmailAddress"]).lower(): item for item in dump}
                changes = [
                    Change(
                        name,
                        address,
                        suppress=True,
                        reason=str(item.get("SuppressionReason") or "ManualSuppression"),
                        origin=Origin.SYNC,
                        at=_parse_time(item.get("CreatedAt")),
                        detail=f"Origin: {item.get('Origin') or 'unknown'}",
                    )
                    for address, item in theirs.items()
                    if address not in held
                ]
                apply(session, changes)
                session.commit()
            found.append(
                Synced(
                    name,
                    added=tuple(sorted(c.address for c in changes)),
                    known=tuple(sorted(a for a in theirs if a in held)),
                    only_here=tuple(sorted(a for a in held if a not in theirs)),
                )
            )
        return found

    def _change(
        self, stream: str, addresses: Sequence[str], *, suppress: bool, note: str
    ) -> Changes:
        wanted: list[str] = []
        refused: dict[str, str] = {}
        for address in addresses:
            try:
                wanted.append(check_address(address))
            except AddressError as exc:
                refused[address] = str(exc)
        if self._remote is None:
            done = wanted
        elif wanted:
            answers = (self._remote.create if suppress else self._remote.delete)(stream, wanted)
            expected = "Suppressed" if suppress else "Deleted"
            done = [str(a["EmailAddress"]) for a in answers if a.get("Status") == expected]
            refused |= {
                str(a["EmailAddress"]): str(a.get("Message") or a.get("Status"))
                for a in answers
                if a.get("Status") != expected
            }
        else:
            done = []
        now = current_time()
        with self._sessions() as session:
            apply(
                session,
                [
                    Change(
                        stream,
                        address,
                        suppress,
                        "ManualSuppression" if suppress else "Reactivated",
                        Origin.MANUAL,
                        now,
                        detail=note,
                    )
                    for address in done
                ],
            )
            session.commit()
        return Changes(stream, tuple(a.lower() for a in done), refused)

    def _streams(self, stream: str | None) -> tuple[str, ...]:
        return (stream,) if stream is not None else self.streams

    def _needs_remote(self, what: str) -> Remote:
        if self._remote is None:
            raise ConfigurationError(
                f"suppressions {what} reads Postmark's Suppressions API: the application's "
                "sender is not a PostmarkSender (set POSTMARK_SERVER_TOKEN, or pass "
                "sender=PostmarkSender(...) to EmailEvents)"
            )
        return self._remote


def _parse_time(value: Any) -> datetime:
    """Postmark's ``CreatedAt`` (ISO 8601); now, when it is missing or unreadable."""
    if isinstance(value, str):
        try:
            return _utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    return current_time()
