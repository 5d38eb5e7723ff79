"""The records Postmark's webhooks post, one pydantic model per ``RecordType``, and what the
timeline keeps of each.

Shapes as Postmark documents them:

- Delivery: https://postmarkapp.com/developer/webhooks/delivery-webhook
- Bounce: https://postmarkapp.com/developer/webhooks/bounce-webhook
- SpamComplaint: https://postmarkapp.com/developer/webhooks/spam-complaint-webhook
- Open: https://postmarkapp.com/developer/webhooks/open-tracking-webhook
- Click: https://postmarkapp.com/developer/webhooks/click-webhook
- SubscriptionChange: https://postmarkapp.com/developer/webhooks/subscription-change-webhook

Fields we do not keep are ignored (Postmark adds fields over time); those we keep must be
there, with their type, or the record is refused.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from ..suppressions import DEFAULT_STREAM, Change, Origin
from ..tables import ADDRESS_LENGTH, ID_LENGTH, REASON_LENGTH, STREAM_LENGTH
from ..timeline import MessageEvent

__all__ = ["RECORD_TYPES", "message_event", "parse", "suppression_change"]

EVENT_ID = "event_id"
"""The Metadata key our sends carry the event id in (``PostmarkSender``)."""

# NUL and lone surrogates: no database text keeps them (PostgreSQL refuses NUL outright).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(value: object) -> bool:
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(item) for item in value)
    return False


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    message_id: str | None = Field(None, alias="MessageID", max_length=ID_LENGTH)
    metadata: dict[str, Any] | None = Field(None, alias="Metadata")
    tag: str | None = Field(None, alias="Tag")
    message_stream: str | None = Field(None, alias="MessageStream", max_length=STREAM_LENGTH)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, document: Any) -> Any:
        """Refused whole when any value holds what no database keeps (400: Postmark would
        retry a 500 for ever)."""
        if _unstorable(document):
            raise ValueError("a value holds a NUL character or a lone surrogate")
        return document

    @property
    def event_id(self) -> str | None:
        """Our event id, from the Metadata we sent; None for a message we did not send (an
        event id longer than ours is not ours)."""
        value = (self.metadata or {}).get(EVENT_ID)
        return value if isinstance(value, str) and 0 < len(value) <= ID_LENGTH else None


class Delivery(_Record):
    record_type: Literal["Delivery"] = Field(alias="RecordType")
    recipient: str = Field(alias="Recipient", max_length=ADDRESS_LENGTH)
    delivered_at: datetime = Field(alias="DeliveredAt")
    details: str = Field("", alias="Details")


class Bounce(_Record):
    # "Bounce webhooks are triggered for bounces that resulted from outgoing email": ID is the
    # bounce's own, unique in the account.
    record_type: Literal["Bounce"] = Field(alias="RecordType")
    id: int = Field(alias="ID")
    type: str = Field(alias="Type", max_length=REASON_LENGTH)
    type_code: int = Field(alias="TypeCode")
    email: str = Field(alias="Email", max_length=ADDRESS_LENGTH)
    bounced_at: datetime = Field(alias="BouncedAt")
    description: str = Field("", alias="Description")
    details: str = Field("", alias="Details")
    inactive: bool = Field(default=False, alias="Inactive")


class SpamComplaint(Bounce):
    # The same document as a bounce, of Type "SpamComplaint" (TypeCode 512).
    record_type: Literal["SpamComplaint"] = Field(alias="RecordType")  # type: ignore[assignment]


class Open(_Record):
    record_type: Literal["Open"] = Field(alias="RecordType")
    recipient: str = Field(alias="Recipient", max_length=ADDRESS_LENGTH)
    received_at: datetime = Field(alias="ReceivedAt")
    first_open: bool = Field(default=False, alias="FirstOpen")
    platform: str = Field("", alias="Platform")


class Click(_Record):
    record_type: Literal["Click"] = Field(alias="RecordType")
    recipient: str = Field(alias="Recipient", max_length=ADDRESS_LENGTH)
    received_at: datetime = Field(alias="ReceivedAt")
    original_link: str = Field(alias="OriginalLink")
    click_location: str = Field("", alias="ClickLocation")
    platform: str = Field("", alias="Platform")


class SubscriptionChange(_Record):
    # "The SuppressSending field will inform whether that was a deactivation or reactivation."
    record_type: Literal["SubscriptionChange"] = Field(alias="RecordType")
    recipient: str = Field(alias="Recipient", max_length=ADDRESS_LENGTH)
    changed_at: datetime = Field(alias="ChangedAt")
    suppress_sending: bool = Field(alias="SuppressSending")
    suppression_reason: str | None = Field(
        None, alias="SuppressionReason", max_length=REASON_LENGTH
    )
    origin: str | None = Field(None, alias="Origin")


Record = Delivery | Bounce | SpamComplaint | Open | Click | SubscriptionChange
_RECORD: TypeAdapter[Record] = TypeAdapter(Annotated[Record, Field(discriminator="record_type")])
RECORD_TYPES = ("Delivery", "Bounce", "SpamComplaint", "Open", "Click", "SubscriptionChange")


def parse(document: object) -> Record:
    """The record in a webhook's JSON ``document``.

    Raises:
        pydantic.ValidationError: not one of the record types, or a field it needs is missing
            or of the wrong type.
    """
    return _RECORD.validate_python(document)


def message_event(record: Record) -> MessageEvent:
    """What the timeline keeps of ``record``."""
    common: dict[str, Any] = {
        "record_type": record.record_type,
        "event_id": record.event_id,
        "message_id": record.message_id,
        "event_key": record.tag,
    }
    message = record.message_id or ""
    match record:
        case Bounce():  # and SpamComplaint
            return MessageEvent(
                **common,
                recipient=record.email,
                occurred_at=record.bounced_at,
                detail={
                    "type": record.type,
                    "type_code": record.type_code,
                    "description": record.description,
                    "details": record.details,
                    "inactive": record.inactive,
                },
                identifies=(str(record.id),),
            )
        case Delivery():
            at = record.delivered_at
            detail: dict[str, Any] = {"details": record.details}
            identifies: tuple[str, ...] = (message, record.recipient.lower(), at.isoformat())
        case Open():
            at = record.received_at
            detail = {"first_open": record.first_open, "platform": record.platform}
            identifies = (message, record.recipient.lower(), at.isoformat(), str(record.first_open))
        case Click():
            at = record.received_at
            detail = {
                "link": record.original_link,
                "click_location": record.click_location,
                "platform": record.platform,
            }
            identifies = (message, record.recipient.lower(), at.isoformat(), record.original_link)
        case SubscriptionChange():
            at = record.changed_at
            detail = {
                "suppress_sending": record.suppress_sending,
                "reason": record.suppression_reason,
                "origin": record.origin,
            }
            identifies = (
                message,
                record.recipient.lower(),
                at.isoformat(),
                str(record.suppress_sending),
            )
    return MessageEvent(
        **common, recipient=record.recipient, occurred_at=at, detail=detail, identifies=identifies
    )


def suppression_change(record: Record) -> Change | None:
    """The change ``record`` makes to its stream's suppression list: a hard bounce (or one that
    made the address inactive at Postmark), a spam complaint or ``SuppressSending: true``
    suppress the address, ``SuppressSending: false`` lifts it; deliveries, opens, clicks and
    soft bounces change nothing."""
    stream = record.message_stream or DEFAULT_STREAM
    event_id = record.event_id
    match record:
        case SpamComplaint():
            return Change(
                stream,
                record.email,
                suppress=True,
                reason="SpamComplaint",
                origin=Origin.WEBHOOK,
                at=record.bounced_at,
                detail="the recipient marked a message as spam",
                event_id=event_id,
            )
        case Bounce() if record.inactive or record.type == "HardBounce":
            # "Inactive": the bounce deactivated the address at Postmark; a hard bounce is
            # permanent, whatever the record says of it. Soft bounces change nothing.
            return Change(
                stream,
                record.email,
                suppress=True,
                reason=record.type,
                origin=Origin.WEBHOOK,
                at=record.bounced_at,
                detail=record.description[:300],
                event_id=event_id,
            )
        case SubscriptionChange():
            suppress = record.suppress_sending
            lifted = "ManualSuppression" if suppress else "Reactivated"
            return Change(
                stream,
                record.recipient,
                suppress=suppress,
                reason=record.suppression_reason or lifted,
                origin=Origin.WEBHOOK,
                at=record.changed_at,
                detail=f"SubscriptionChange, Origin: {record.origin or 'unknown'}",
                event_id=event_id,
            )
    return None
