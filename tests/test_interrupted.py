"""A run that died between claiming recipients and recording the answer is settled, not repeated.

The delivery log on real databases, PostmarkSender over HTTP to the local server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from emailevents import DirectoryOutbox, EmailEvents, Reason, Sender, Status
from emailevents.demo import seed
from emailevents.demo.run import demo_events, seed_database
from emailevents.senders import Message, PostmarkSender
from emailevents.senders.base import SendResult
from emailevents.store import deliveries
from emailevents.testing import Runs, memory_app, worker
from emailevents.testing.fake_postmark import FakePostmark
from tests.conftest import leave_claim


@dataclass
class App:
    factory: sessionmaker[Session]
    world: seed.DemoWorld

    def events(self, sender: Sender, celery: Celery | None = None) -> EmailEvents:
        return demo_events(
            celery=celery or memory_app(),
            session_factory=self.factory,
            sender=sender,
            claim_timeout=1.0,
            max_retries=5,
            retry_backoff=0.05,
        )

    def claim(self, event_id: str, recipient: str, *, age: float) -> None:
        """Leave a claimed row as a run that died ``age`` seconds ago would have."""
        leave_claim(self.factory, event_id, "model_finding_created", recipient, age=age)

    def log(self, event_id: str) -> list[tuple[str, str, str, str | None]]:
        with self.factory() as session:
            rows = session.execute(
                sa.select(
                    deliveries.c.recipient,
                    deliveries.c.status,
                    deliveries.c.reason,
                    deliveries.c.message_id,
                ).where(deliveries.c.event_id == event_id)
            )
            return [tuple(r) for r in rows]


@pytest.fixture
def app(db_engine: sa.Engine) -> App:
    factory, world = seed_database(db_engine)
    return App(factory, world)


def finding(app: App) -> dict[str, str]:
    return seed.emits(app.world)[5][1]


def sender(server: FakePostmark) -> PostmarkSender:
    return PostmarkSender("test-token", api_url=server.url, timeout=5)


def sent_before(server: FakePostmark, event_id: str) -> SendResult:
    """The dead run's request for ``event_id`` to owen, as it reached Postmark."""
    (accepted,) = sender(server).send(
        [
            Message(
                event_key="model_finding_created",
                event_id=event_id,
                to="owen@acme.test",
                from_="a@acme.test",
                template="model-finding-created",
                template_model={"subject": "x"},
                metadata={"event_id": event_id},
            )
        ]
    )
    return accepted


def test_a_message_the_provider_has_is_recorded_sent_and_not_sent_again(
    app: App, fake_postmark: FakePostmark
) -> None:
    events = app.events(sender(fake_postmark))
    app.claim("ev-1", "owen@acme.test", age=30)
    # The dead run's request had reached Postmark before the worker died.
    accepted = sent_before(fake_postmark, "ev-1")
    result = events.run("model_finding_created", "ev-1", **finding(app))
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.message_id) == (Status.SENT, accepted.message_id)
    assert outcome.detail == "found at the provider after its run was interrupted"
    assert len(fake_postmark.messages) == 1
    assert app.log("ev-1") == [("owen@acme.test", "sent", "sent", accepted.message_id)]


def test_a_message_the_provider_lacks_is_sent_once_by_the_next_run(
    app: App, fake_postmark: FakePostmark
) -> None:
    events = app.events(sender(fake_postmark))
    app.claim("ev-2", "owen@acme.test", age=30)  # died before its request left
    result = events.run("model_finding_created", "ev-2", **finding(app))
    assert [o.status for o in result.outcomes] == [Status.SENT]
    assert [m.to for m in fake_postmark.messages] == ["owen@acme.test"]
    again = events.run("model_finding_created", "ev-2", **finding(app))
    assert [o.reason for o in again.outcomes] == [Reason.ALREADY_RECORDED]
    assert len(fake_postmark.messages) == 1


def test_when_the_sender_cannot_tell_the_outcome_is_recorded_unknown(
    app: App, tmp_path: Path
) -> None:
    outbox = DirectoryOutbox(tmp_path / "out")
    events = app.events(outbox)
    app.claim("ev-3", "owen@acme.test", age=30)
    result = events.run("model_finding_created", "ev-3", **finding(app))
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == (Status.UNKNOWN, Reason.INTERRUPTED)
    assert app.log("ev-3") == [("owen@acme.test", "unknown", "interrupted", None)]
    assert not (tmp_path / "out").exists()


def test_a_claim_held_by_a_live_run_is_left_to_it_and_looked_at_again_later(
    app: App, fake_postmark: FakePostmark
) -> None:
    celery = memory_app()
    events = app.events(sender(fake_postmark), celery)
    app.claim("ev-4", "owen@acme.test", age=0)  # a run that is sending right now...
    with Runs() as runs, worker(celery):
        task = celery.tasks["tasks.notifications.email.on_model_finding_created"]
        task.apply_async(kwargs=finding(app), task_id="ev-4")
        # ...and dies: its claim goes stale after claim_timeout, the retry settles it.
        (result,) = runs.wait("ev-4", timeout=30)
    assert [o.status for o in result.outcomes] == [Status.SENT]
    assert [m.to for m in fake_postmark.messages] == ["owen@acme.test"]
    assert events.runtime.claim_timeout == 1.0


def test_two_runs_of_one_emit_at_the_same_moment_send_each_message_once(
    app: App, fake_postmark: FakePostmark
) -> None:
    events = app.events(sender(fake_postmark))
    key, cuids = seed.emits(app.world)[10]  # the broadcast: 31 recipients
    barrier = threading.Barrier(4)
    results = []

    def run() -> None:
        barrier.wait()
        results.append(events.run(key, "ev-5", **cuids))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    sent = [m.to for m in fake_postmark.messages]
    assert len(sent) == 31
    assert len(set(sent)) == 31
    assert sum(len(r.with_status(Status.SENT)) for r in results) == 31


def test_a_recipient_suppressed_after_its_claim_is_settled_not_left_claimed(
    app: App, fake_postmark: FakePostmark
) -> None:
    """Its run claimed it and died (or its request got no answer); then it was suppressed. The
    next run must settle the claim: left out before it, the row stayed ``claimed`` for ever."""
    events = app.events(sender(fake_postmark))
    app.claim("ev-6", "owen@acme.test", age=30)  # died before its request left
    events.suppressions.add(["owen@acme.test"], stream="outbound")
    result = events.run("model_finding_created", "ev-6", **finding(app))
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == (Status.SKIPPED, Reason.SUPPRESSED)
    assert app.log("ev-6") == [("owen@acme.test", "skipped", "suppressed", None)]
    assert fake_postmark.messages == []


def test_a_recipient_suppressed_after_its_request_went_out_is_recorded_sent(
    app: App, fake_postmark: FakePostmark
) -> None:
    """The dead run's request had reached Postmark: the search finds it, whatever came since."""
    events = app.events(sender(fake_postmark))
    app.claim("ev-7", "owen@acme.test", age=30)
    accepted = sent_before(fake_postmark, "ev-7")
    events.suppressions.add(["owen@acme.test"], stream="outbound")
    result = events.run("model_finding_created", "ev-7", **finding(app))
    assert [(o.status, o.message_id) for o in result.outcomes] == [
        (Status.SENT, accepted.message_id)
    ]
    assert app.log("ev-7") == [("owen@acme.test", "sent", "sent", accepted.message_id)]
    assert len(fake_postmark.messages) == 1


def test_a_recipient_suppressed_while_a_live_run_holds_it_is_left_to_that_run(
    app: App, fake_postmark: FakePostmark
) -> None:
    events = app.events(sender(fake_postmark))
    app.claim("ev-8", "owen@acme.test", age=0)  # a run sending right now
    events.suppressions.add(["owen@acme.test"], stream="outbound")
    result = events.run("model_finding_created", "ev-8", **finding(app))
    assert [(o.status, o.reason) for o in result.outcomes] == [(Status.SKIPPED, Reason.IN_PROGRESS)]
    assert app.log("ev-8") == [("owen@acme.test", "claimed", "claimed", None)]
    assert fake_postmark.messages == []
