"""The emailevents pytest plugin (entry point ``pytest11``): ``outbox`` and ``fake_postmark``.

``outbox`` is a fresh :class:`~emailevents.senders.OutboxSender`; give it to ``EmailEvents`` as
its sender and assert on ``outbox.messages``. ``fake_postmark`` is a started local
Postmark-compatible server (:class:`~emailevents.testing.fake_postmark.FakePostmark`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..demo import DEMO_TEMPLATES
from ..senders.outbox import OutboxSender
from .fake_postmark import FakePostmark


@pytest.fixture
def outbox() -> Iterator[OutboxSender]:
    """An in-memory sender that keeps every message; emptied after the test."""
    sender = OutboxSender()
    yield sender
    sender.clear()


@pytest.fixture
def fake_postmark() -> Iterator[FakePostmark]:
    """A started local Postmark-compatible server holding the demo templates; stopped after.

    Its token is ``"test-token"``; give ``fake_postmark.url`` to postmarker as ``root_api_url``.
    """
    with FakePostmark(templates=DEMO_TEMPLATES) as server:
        yield server
