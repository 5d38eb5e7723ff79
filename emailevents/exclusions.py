"""Who a run leaves out before claiming, and why (:func:`left_out`, in this order): the suppressed
(``suppressed``), then those whose preferences keep the event's category out (``opted_out``),
then those past the event's throttle (``throttled``; for an event that also has a digest, they
go into their digests instead: :func:`past_throttle`); and who Postmark's answers say to leave out
next time (ErrorCode 406). Each skip is recorded before anything is sent, and nothing about a
left-out recipient is asked of Postmark. A recipient left out for a reason before the throttle
takes no slot of its budget.

The org toggle, the first layer, stops the whole emit earlier (``pipeline.check_toggle``).

What the layers read (suppressions, choices, throttle slots, delivery rows) is read once for
every recipient of every emit of a batch (:class:`Known`), not per emit: at send time, as for a
run alone, and never kept from one batch to the next.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.orm import Session

from . import preferences, store, suppressions, throttles
from .outcomes import Outcome, Reason, Status
from .registry import Event
from .registry.durations import format_duration
from .registry.model import Throttle
from .senders.base import SendResult

__all__ = [
    "INACTIVE_RECIPIENT",
    "Known",
    "held",
    "left_out",
    "opted_out",
    "past_throttle",
    "suppress_inactive",
    "suppressed",
    "throttled",
]

INACTIVE_RECIPIENT = 406
"""Postmark's ErrorCode for a send to an address it holds inactive on the stream."""


class Known:
    """What the layers read for the recipients of some emits of ``event``, each read when first
    needed and then for all of them: one statement per ``tables.IN_LIST`` recipients (or emits)
    for a batch, where there was one per emit. Built per batch (or per run alone), never kept
    for another: a suppression or a choice is read at send time."""

    def __init__(
        self, session: Session, event: Event, recipients: Mapping[str, Sequence[str]]
    ) -> None:
        """``recipients``: event id -> the keys of the emit's recipients."""
        self._session = session
        self._event = event
        self._event_ids = list(recipients)
        self._keys = sorted({key for keys in recipients.values() for key in keys})

    @functools.cached_property
    def suppressed(self) -> dict[str, suppressions.Suppression]:
        """Those suppressed on the event's stream."""
        return suppressions.suppressed(self._session, self._event.message_stream, self._keys)

    @functools.cached_property
    def chosen(self) -> dict[str, preferences.Preference]:
        """Their choices in our table for the event's category."""
        return preferences.chosen_for(self._session, self._keys, self._event.category or "")

    @functools.cached_property
    def slots(self) -> dict[str, list[throttles.Held]]:
        """The slots of their budgets under the event's throttle (none without one)."""
        if self._event.throttle is None:
            return {}
        return throttles.slots(self._session, self._event.throttle.scope, self._keys)

    @functools.cached_property
    def _logged(self) -> dict[str, dict[str, store.Logged]]:
        return store.existing_together(self._session, self._event_ids, claim_timeout=0.0)

    def logged(self, event_id: str) -> dict[str, store.Logged]:
        """What the delivery log holds for ``event_id`` (one of the emits) already."""
        return self._logged.get(event_id, {})


def left_out(  # noqa: PLR0917 - the run's state, passed along explicitly
    session: Session,
    event: Event,
    event_id: str,
    keys: Sequence[str],
    defaults: Mapping[str, bool],
    application: Callable[[Session, str, str], bool | None] | None,
    known: Known,
) -> list[Outcome]:
    """A recorded skip for each of ``keys`` this run leaves out, in the order the layers are
    checked: suppressed, opted out, throttled. ``known``: what the run (or its batch) read."""
    skipped = suppressed(session, event, event_id, keys, known=known)
    keys = _without(keys, skipped)
    skipped += opted_out(
        session,
        event,
        event_id,
        keys,
        defaults=defaults,
        application=application,
        known=known,
    )
    return skipped + throttled(session, event, event_id, _without(keys, skipped), known=known)


def held(
    event_id: str, skipped: list[Outcome], known: Known
) -> tuple[list[Outcome], dict[str, Outcome]]:
    """Split what :func:`left_out` returned: the skips recorded, and those of recipients a run
    of this emit had claimed before they were left out (suppressed after a claim whose run died
    or whose request got no answer, or that sends right now), whose skip was not recorded
    (``record_skips`` leaves a claimed row as it is).

    Those stay the claim's to settle (``pipeline.deliver(..., excluded=)``): a claim held by a
    live run is left to it; a stale one is settled through the provider's search (found: sent,
    the request had gone out before); only a claim this run then holds records the skip, and
    nothing is sent. Skipped here, their rows would stay ``claimed`` for ever.
    """
    if not skipped:
        return [], {}
    logged = known.logged(event_id)
    claimed = {
        o.recipient: o
        for o in skipped
        if o.recipient in logged and logged[o.recipient].status == store.CLAIMED
    }
    return [o for o in skipped if o.recipient not in claimed], claimed


def past_throttle(
    session: Session, event: Event, event_id: str, keys: Sequence[str], known: Known
) -> list[str]:
    """Those of ``keys`` past the event's throttle, not recorded: for an event with both a
    throttle and a digest, they go into their digests rather than being skipped. Each of the
    others holds a slot of its budget when this returns."""
    if event.throttle is None or not keys:
        return []
    return _past(session, event.throttle, event_id, keys, known)


def _past(
    session: Session, throttle: Throttle, event_id: str, keys: Sequence[str], known: Known
) -> list[str]:
    return throttles.throttled(
        session, throttle, event_id, keys, known=known.slots, logged=known.logged(event_id)
    )


def _without(keys: Sequence[str], skipped: list[Outcome]) -> list[str]:
    out = {o.recipient for o in skipped}
    return [key for key in keys if key not in out]


def suppressed(
    session: Session, event: Event, event_id: str, keys: Sequence[str], *, known: Known
) -> list[Outcome]:
    """A recorded skip for each of ``keys`` suppressed on the event's stream."""
    held = known.suppressed
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
    known: Known,
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
        # The application's callable is asked per recipient, those not left out already.
        chosen=known.chosen if application is None else None,
    )
    why = {key: out[key].describe() for key in keys if key in out}
    return _skip(session, event, event_id, Reason.OPTED_OUT, why)


def throttled(
    session: Session,
    event: Event,
    event_id: str,
    keys: Sequence[str],
    *,
    known: Known,
) -> list[Outcome]:
    """A recorded skip for each of ``keys`` past the event's throttle (none without one); each
    of the others holds a slot of its budget when this returns."""
    throttle = event.throttle
    if throttle is None or event.digest is not None or not keys:
        return []  # an event with a digest folds those past it into the digest (pipeline.prepare)
    past = _past(session, throttle, event_id, keys, known)
    budget = f"group '{throttle.group}'" if throttle.group else f"event '{event.key}'"
    detail = (
        f"{throttle.limit} email{'s' if throttle.limit > 1 else ''} of {budget} went to this "
        "recipient in the last "
        f"{format_duration(throttle.per)} (throttle: {throttle.limit} per "
        f"{format_duration(throttle.per)})"
    )
    return _skip(session, event, event_id, Reason.THROTTLED, dict.fromkeys(past, detail))


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
