"""Scheduled sends: the ``send_at`` an ``emit()`` takes, checked and brought to UTC.

A scheduled emit is stored in ``emailevents_emits`` (state ``scheduled``) and published by the
relay once its ``send_at`` has come (:func:`emailevents.relay.publish_pending`), never held by
the broker as a countdown: on Redis a countdown longer than the ``visibility_timeout`` is
delivered again, and RabbitMQ cancels a consumer that holds a message past ``consumer_timeout``.
``events.cancel(event_id)`` takes one back until the relay takes it (docs/timing.md).
"""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import EmitArgumentError, EmitValueError
from .tables import current_time

__all__ = ["send_time"]

EXAMPLE = "datetime.now(UTC) + timedelta(hours=1)"


def send_time(event_key: str, send_at: object, *, now: datetime | None = None) -> datetime | None:
    """When the emit of ``event_key`` is to be sent, in UTC; ``None`` for now (``send_at`` is
    ``None``, or not after ``now``: a time already past sends at once).

    Raises:
        EmitArgumentError: ``send_at`` is not a ``datetime`` (a ``date``, a string, a number).
        EmitValueError: ``send_at`` has no timezone (a naive ``datetime``), or is out of range.
    """
    if send_at is None:
        return None
    where = f"event '{event_key}'"
    if not isinstance(send_at, datetime):
        raise EmitArgumentError(
            f"{where}: send_at must be a timezone-aware datetime, got {type(send_at).__name__} "
            f"{_shown(send_at)} (pass, for example, send_at={EXAMPLE})"
        )
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        raise EmitValueError(
            f"{where}: send_at={send_at.isoformat()} has no timezone, so the moment it names is "
            f"not known; pass an aware datetime: send_at={EXAMPLE}, or "
            "naive.replace(tzinfo=ZoneInfo('Europe/Paris')) for a local time"
        )
    try:
        due = send_at.astimezone(UTC)
    except OverflowError:
        raise EmitValueError(
            f"{where}: send_at={send_at.isoformat()} is out of range in UTC"
        ) from None
    return due if due > (now or current_time()) else None


SHOWN = 40
"""The most of a wrong ``send_at``'s repr an error shows (it may be anything)."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[: SHOWN - 3]}..."
