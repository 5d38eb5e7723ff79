"""The sender interface and the outboxes: one result per message, in order, chunked."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from emailevents.senders import (
    DirectoryOutbox,
    Message,
    OutboxSender,
    Sender,
    SenderError,
    SendResult,
    SendStatus,
)


def message(to: str, template: int | str = "welcome") -> Message:
    return Message(
        event_key="welcome",
        event_id="ev-1",
        to=to,
        from_="A <a@acme.test>",
        template=template,
        template_model={"subject": "Hi", "n": 1},
        tag="welcome",
        metadata={"event_id": "ev-1"},
    )


class ChunkRecorder(Sender):
    max_batch: ClassVar[int] = 3

    def __init__(self) -> None:
        self.chunks: list[list[str]] = []

    def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
        self.chunks.append([m.to for m in messages])
        return [
            SendResult(SendStatus.PERMANENT if "bad" in m.to else SendStatus.SENT) for m in messages
        ]


def test_send_chunks_by_max_batch_and_keeps_every_result_in_order() -> None:
    sender = ChunkRecorder()
    addresses = [f"u{i}@x.test" for i in range(7)] + ["bad@x.test"]
    results = sender.send([message(a) for a in addresses])
    assert sender.chunks == [addresses[0:3], addresses[3:6], addresses[6:8]]
    assert [r.status for r in results] == [SendStatus.SENT] * 7 + [SendStatus.PERMANENT]


def test_a_sender_answering_the_wrong_number_of_results_is_caught() -> None:
    class Broken(Sender):
        def send_batch(self, messages: Sequence[Message]) -> list[SendResult]:
            return []

    with pytest.raises(SenderError, match=r"answered 0 results for 2 messages"):
        Broken().send([message("a@x.test"), message("b@x.test")])


def test_outbox_keeps_messages_with_ids_and_clears() -> None:
    outbox = OutboxSender()
    results = outbox.send([message("a@x.test"), message("b@x.test")])
    assert [r.ok for r in results] == [True, True]
    assert [m.to for m in outbox.messages] == ["a@x.test", "b@x.test"]
    assert [m.message_id for m in outbox.messages] == [r.message_id for r in results]
    assert outbox.for_event("welcome")[0].subject == "Hi"
    outbox.clear()
    assert len(outbox) == 0


def test_the_outbox_fixture_is_provided_by_the_plugin(outbox: OutboxSender) -> None:
    assert isinstance(outbox, OutboxSender)
    assert len(outbox) == 0


def test_directory_outbox_writes_one_postmark_shaped_file_per_message(tmp_path: Path) -> None:
    outbox = DirectoryOutbox(tmp_path / "out")
    results = outbox.send([message("a@x.test", template=42), message("b@x.test")])
    files = sorted((tmp_path / "out").glob("*.json"))
    assert len(files) == 2
    written = {json.loads(f.read_text())["To"]: json.loads(f.read_text()) for f in files}
    assert written["a@x.test"]["TemplateId"] == 42
    assert "TemplateAlias" not in written["a@x.test"]
    assert written["b@x.test"]["TemplateAlias"] == "welcome"
    assert written["b@x.test"]["TemplateModel"] == {"subject": "Hi", "n": 1}
    assert written["b@x.test"]["Metadata"] == {"event_id": "ev-1"}
    assert {w["MessageID"] for w in written.values()} == {r.message_id for r in results}
