"""The sender interface and the outboxes: one result per message, in order, chunked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


# A test suite of the application's: it names `outbox` and imports nothing from the plugin.
_SUITE_USING_THE_PLUGIN = """
from emailevents.senders import Message

KEPT = []


def test_a_message_sent_to_the_outbox_is_kept(outbox):
    KEPT.append(outbox)
    outbox.send([Message("welcome", "ev-1", "a@x.test", "A <a@acme.test>", "welcome", {})])
    assert [m.to for m in outbox.messages] == ["a@x.test"]


def test_the_next_test_gets_a_fresh_outbox_and_the_last_one_was_emptied(outbox):
    (last,) = KEPT
    assert outbox is not last
    assert len(outbox) == 0
    assert len(last) == 0
"""


def run_pytest(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """pytest in a fresh process in ``directory``, with the plugins this environment installs."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    # postmarker's and celery's plugins are switched off here as in this project's pytest settings.
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:postmark"]
    command += ["-p", "no:celery", "-q", *options]
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        command, cwd=directory, env=environment, capture_output=True, text=True, check=False
    )


def test_the_plugin_gives_every_test_a_fresh_outbox_emptied_when_the_test_ends(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_emails.py").write_text(_SUITE_USING_THE_PLUGIN)
    run = run_pytest(tmp_path, "test_emails.py")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout


def test_the_plugin_is_switched_off_with_p_no_emailevents(tmp_path: Path) -> None:
    (tmp_path / "test_emails.py").write_text(_SUITE_USING_THE_PLUGIN)
    run = run_pytest(tmp_path, "-p", "no:emailevents", "test_emails.py")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "fixture 'outbox' not found" in run.stdout


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
