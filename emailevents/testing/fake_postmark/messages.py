"""The messages a FakePostmark accepted: :class:`ReceivedMessage`, kept in a :class:`Mailbox`."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .validation import address_list, recipient_addresses

__all__ = ["Mailbox", "ReceivedMessage"]


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the server accepted: rendered content, everything received, and its ids."""

    message_id: str
    received_at: datetime
    to: str
    from_: str
    subject: str
    html_body: str | None
    text_body: str | None
    tag: str | None
    metadata: dict[str, str]
    message_stream: str
    template_id: int | None
    template_alias: str | None
    template_model: dict[str, Any] | None
    cc: str | None = None
    bcc: str | None = None
    reply_to: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    """The message exactly as received (one item of a batch)."""

    @property
    def recipients(self) -> list[str]:
        """Every address the message went to (To, Cc, Bcc), read as the server read them."""
        return recipient_addresses(self.to, self.cc, self.bcc)

    def addresses(self, field_name: str) -> list[tuple[str, str]]:
        """``(name, address)`` pairs of ``From``, ``To``, ``Cc``, ``Bcc`` or ``ReplyTo``.

        Read as the server read them when it accepted the message; ``name`` is ``""`` when
        there is none.

        Raises:
            KeyError: another field name.
        """
        fields = {
            "From": self.from_,
            "To": self.to,
            "Cc": self.cc,
            "Bcc": self.bcc,
            "ReplyTo": self.reply_to,
        }
        return list(address_list(fields[field_name] or ""))

    def summary(self) -> dict[str, Any]:
        """The item of ``GET /messages/outbound``, in Postmark's shape."""
        return {
            "Tag": self.tag,
            "MessageID": self.message_id,
            "MessageStream": self.message_stream,
            "To": _people(self.to),
            "Cc": _people(self.cc),
            "Bcc": _people(self.bcc),
            "Recipients": self.recipients,
            "ReceivedAt": self.received_at.isoformat(),
            "From": self.from_,
            "Subject": self.subject,
            "Attachments": [],
            "Status": "Sent",
            "TrackOpens": bool(self.request.get("TrackOpens")),
            "TrackLinks": self.request.get("TrackLinks") or "None",
            "Metadata": dict(self.metadata),
            "Sandboxed": False,
        }

    def details(self) -> dict[str, Any]:
        """The answer of ``GET /messages/outbound/{id}/details``."""
        return {
            **self.summary(),
            "TextBody": self.text_body or "",
            "HtmlBody": self.html_body or "",
            "Body": "",
            "MessageEvents": [],
        }


def _people(field_value: str | None) -> list[dict[str, Any]]:
    if not field_value:
        return []
    return [{"Email": a, "Name": n or None} for n, a in address_list(field_value)]


class Mailbox:
    """The messages a server accepted, oldest first, the oldest dropped past ``max_messages``.

    Args:
        lock: the server's lock, held while the mailbox changes or is read.
        max_messages: how many messages are kept.
    """

    def __init__(self, lock: threading.RLock, max_messages: int) -> None:
        self._lock = lock
        self._messages: deque[ReceivedMessage] = deque(maxlen=max_messages)
        self._version = 0  # counts changes to the messages, for the inbox's live list

    def add(self, message: ReceivedMessage) -> None:
        """Keep an accepted message."""
        with self._lock:
            self._messages.append(message)
            self._version += 1

    def snapshot(self) -> tuple[list[ReceivedMessage], int]:
        """Every message kept, oldest first, and the version of that list."""
        with self._lock:
            return list(self._messages), self._version

    def find(self, message_id: str) -> ReceivedMessage:
        """One message by its MessageID.

        Raises:
            KeyError: no such message.
        """
        with self._lock:
            for received in self._messages:
                if received.message_id == message_id:
                    return received
        raise KeyError(message_id)

    def clear(self) -> None:
        """Forget every message."""
        with self._lock:
            self._messages.clear()
            self._version += 1
