"""Who a run leaves out before claiming, and why: the suppressed (``suppressed``), then those whose
preferences keep the event's category out (``opted_out``); and who Postmark's answers say to
leave out next time (ErrorCode 406). Each skip is recorded before anything is sent, and nothing
about a left-out recipient is asked of Postmark.

The org toggle, the first layer, stops the whole emit earlier (``pipeline.check_toggle``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.orm import Session

from . import preferences, store, suppressions
from .outcomes import Outcome, Reason, Status
from .registry import Event
from .senders.base import SendResult

__all__ = ["INACTIVE_RECIPIENT", "opted_out", "suppress_inactive", "suppressed"]

INACTIVE_RECIPIENT = 406
"""Postmark's ErrorCode for a send to an address it holds inactive on the stream."""


def suppressed(session: Session, event: Event, event_id: str, keys: Sequence[str]) -> list[Outcome]:
    """A recorded skip for each of ``keys`` suppressed on the event's stream."""
    held = suppressions.suppressed(session, event.message_stream, keys)
    why = {key: held[key].describe() for key in keys if key in held}
    return _skip(session, event, event_id, Reason.SUPPRESSED, why)


def opted_out(
    session: Session,
    event: Event,
    event_id: str,
    keys: Sequence[str],
    *,
    defaults: Mapping[str, bool],
    application: Callable[[Session, str, str], bool | None] | None,
) -> list[Outcome]:
    """A recorded skip for each of ``keys`` whose preferences keep the event's category out
    (none for an event without a category, or a critical one)."""
    if event.category is None or not keys:
        return []
    out = preferences.opted_out(
        session,
        keys,
        event.category,
        default=defaults.get(event.category, True),
        application=application,
    )
    why = {key: out[key].describe() for key in keys if key in out}
    return _skip(session, event, event_id, Reason.OPTED_OUT, why)


def _skip(
    session: Session, event: Event, event_id: str, reason: Reason, why: Mapping[str, str]
) -> list[Outcome]:
    """A skip for each recipient in ``why`` (in its order), recorded."""
    skipped = [Outcome(Status.SKIPPED, reason, key, detail=detail) for key, detail in why.items()]
    store.record_skips(session, event_id, event.key, skipped, over_retry=True)
    return skipped


def suppress_inactive(
    session: Session,
    event: Event,
    event_id: str,
    keys: Sequence[str],
    results: Sequence[SendResult],
) -> None:
    """Suppress on the event's stream the recipients Postmark refused as inactive (406): the
    next emit skips them without asking Postmark (``suppressions sync`` tells why Postmark
    holds them)."""
    now = store.current_time()
    suppressions.apply(
        session,
        [
            suppressions.Change(
                event.message_stream,
                key,
                suppress=True,
                reason="InactiveRecipient",
                origin=suppressions.Origin.SEND,
                at=now,
                detail=f"Postmark refused the send with ErrorCode {INACTIVE_RECIPIENT}",
                event_id=event_id,
            )
            for key, result in zip(keys, results, strict=True)
            if result.error_code == INACTIVE_RECIPIENT
        ],
    )
