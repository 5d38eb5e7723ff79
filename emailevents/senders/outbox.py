"""Senders that keep messages: in memory for tests, as JSON files for development."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses
from pathlib import Path
from typing import Any, ClassVar

from .base import Message, Sender, SendResult, SendStatus

__all__ = ["DirectoryOutbox", "OutboxSender", "SentMessage"]


@dataclass(frozen=True)
class SentMessage:
    """A message an outbox accepted, with the id it answered."""

    message: Message
    message_id: str

    @property
    def to(self) -> str:
        return self.message.to

    @property
    def subject(self) -> Any:
        return self.message.template_model.get("subject")

    def as_dict(self) -> dict[str, Any]:
        """The message as Postmark would receive it (template send), plus our ids."""
        m = self.message
        template_ref = "TemplateId" if isinstance(m.template, int) else "TemplateAlias"
        sent: dict[str, Any] = {
            "MessageID": self.message_id,
            template_ref: m.template,
            "TemplateModel": dict(m.template_model),
            "From": m.from_,
            "To": m.to,
            "MessageStream": m.message_stream,
            "Tag": m.tag,
            "Metadata": dict(m.metadata),
        }
        if m.headers:
            sent["Headers"] = [{"Name": name, "Value": value} for name, value in m.headers.items()]
        return sent


class OutboxSender(Sender):
    """Keeps every message in memory; thread-safe. The ``outbox`` pytest fixture gives one."""

    searchable: ClassVar[bool] = True  # find_sent looks through what it keeps

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: list[SentMessage] = []

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        accepted = [SentMessage(m, str(uuid.uuid4())) for m in messages]
        with self._lock:
            self._sent.extend(accepted)
        return [SendResult(SendStatus.SENT, message_id=a.message_id) for a in accepted]

    def find_sent(self, event_id: str, recipients: Sequence[str]) -> dict[str, str] | None:
        wanted = {r.lower() for r in recipients}
        found: dict[str, str] = {}
        for sent in self.messages:
            if sent.message.event_id != event_id:
                continue
            for _, address in getaddresses([sent.message.to]):
                if address.lower() in wanted:
                    found[address.lower()] = sent.message_id
        return found

    @property
    def messages(self) -> list[SentMessage]:
        """Every message accepted so far, oldest first."""
        with self._lock:
            return list(self._sent)

    def for_event(self, event_key: str) -> list[SentMessage]:
        return [s for s in self.messages if s.message.event_key == event_key]

    def clear(self) -> None:
        with self._lock:
            self._sent.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sent)


class DirectoryOutbox(Sender):
    """Writes one JSON file per message into ``directory``, for looking at during development."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        self.directory.mkdir(parents=True, exist_ok=True)
        results = []
        for message in messages:
            sent = SentMessage(message, str(uuid.uuid4()))
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            safe_to = re.sub(r"[^A-Za-z0-9@._-]+", "_", message.to)[:80]
            path = self.directory / f"{stamp}-{message.event_key}-{safe_to}.json"
            record = {**sent.as_dict(), "EventId": message.event_id}
            path.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
            results.append(SendResult(SendStatus.SENT, message_id=sent.message_id))
        return results

    def __repr__(self) -> str:
        return f"DirectoryOutbox({str(self.directory)!r})"
