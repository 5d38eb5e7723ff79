"""The sender interface: messages in, one result per message out, in order.

Shaped after Postmark's batch API: a sender takes a batch and answers each message on its own,
because one bad address must not fail its neighbours. The base class owns chunking and the
checks every sender needs; a provider fills in :meth:`Sender.send_batch`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from ..errors import SenderError

__all__ = ["Message", "SendResult", "SendStatus", "Sender", "SenderError"]


class SendStatus(StrEnum):
    """What became of one message."""

    SENT = "sent"
    """Accepted by the provider."""
    PERMANENT = "permanent"
    """Rejected for good (bad address, inactive recipient, missing template): do not retry."""
    TRANSIENT = "transient"
    """Not accepted this time (rate limit, server error, connection refused): retry later."""
    CONFIGURATION = "configuration"
    """The account or token is wrong: no message can go out until someone fixes the settings."""
    UNKNOWN = "unknown"
    """The request may have been accepted (a timeout after it left): never resend blindly."""


@dataclass(frozen=True)
class Message:
    """One email to one recipient, as the engine hands it to a sender."""

    event_key: str
    event_id: str
    to: str
    from_: str
    template: int | str
    template_model: Mapping[str, Any]
    message_stream: str = "outbound"
    tag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers of our own (``List-Unsubscribe``...): names and values the engine wrote, never
    entity data."""


@dataclass(frozen=True)
class SendResult:
    """The provider's answer for one message."""

    status: SendStatus
    message_id: str | None = None
    error_code: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is SendStatus.SENT


class Sender(abc.ABC):
    """Sends messages; subclasses implement :meth:`send_batch`."""

    max_batch: ClassVar[int] = 500
    searchable: ClassVar[bool] = False
    """Whether :meth:`find_sent` can answer. From a searchable sender, ``None`` means "not this
    time" (the search failed), and the engine asks again later instead of giving up."""
    concurrency: int = 1
    """How many chunks of one :meth:`send` may be in flight at once, each in a thread of its own
    (:meth:`send_batch` must then be thread-safe). Only a send of more than ``max_batch``
    messages has several chunks."""

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send in chunks of at most ``max_batch``; one result per message, in order."""
        chunks = [
            messages[start : start + self.max_batch]
            for start in range(0, len(messages), self.max_batch)
        ]
        if len(chunks) > 1 and self.concurrency > 1:
            workers = min(self.concurrency, len(chunks))
            with ThreadPoolExecutor(workers, thread_name_prefix="emailevents-send") as pool:
                answers = list(pool.map(self._send_chunk, chunks))
        else:
            answers = [self._send_chunk(chunk) for chunk in chunks]
        return [result for answered in answers for result in answered]

    def _send_chunk(self, chunk: Sequence[Message]) -> list[SendResult]:
        answered = self.send_batch(chunk)
        if len(answered) != len(chunk):
            raise SenderError(
                f"{type(self).__name__}.send_batch answered {len(answered)} results for "
                f"{len(chunk)} messages"
            )
        return answered

    def find_sent(
        self,
        event_id: str,  # noqa: ARG002
        recipients: Sequence[str],  # noqa: ARG002
    ) -> dict[str, str] | None:
        """Which of ``recipients`` the provider already accepted a message for, for ``event_id``.

        Used after a run was interrupted between claiming recipients and recording what the
        provider answered. Answers recipient (lower-case address) -> MessageID, or ``None`` when
        this sender cannot tell; it never raises.
        """
        return None

    @abc.abstractmethod
    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        """Send at most ``max_batch`` messages; answer one :class:`SendResult` per message.

        A failure that concerns the whole request (an HTTP 500, a timeout) is answered as that
        status for every message of the chunk, not raised.
        """
