"""The emailevents pytest plugin (entry point ``pytest11``): an ``outbox`` fixture.

``outbox`` is a fresh :class:`~emailevents.senders.OutboxSender`; give it to ``EmailEvents`` as
its sender and assert on ``outbox.messages``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..senders.outbox import OutboxSender


@pytest.fixture
def outbox() -> Iterator[OutboxSender]:
    """An in-memory sender that keeps every message; emptied after the test."""
    sender = OutboxSender()
    yield sender
    sender.clear()
