"""Every message's timeline: webhook records posted over real HTTP to ``events.wsgi_app()``,
then read back by ``emailevents explain`` (text and JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.orm import Session

from emailevents import timeline
from emailevents.cli import main
from emailevents.demo import seed
from emailevents.tables import deliveries, metadata
from tests.appmodule import app_module, demo_app
from tests.wsgiserver import AUTH, post, serve, webhook_record

ADA = "owen@acme.test"


def later(minutes: int) -> str:
    """A time after the send, as Postmark writes it (with its own offset)."""
    moment = datetime.now(UTC) + timedelta(minutes=minutes)
    return moment.astimezone(timezone(timedelta(hours=-4))).isoformat()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    source = demo_app(tmp_path / "app.sqlite3", options=f" webhook_auth={AUTH!r},")
    with app_module(tmp_path, source, monkeypatch, prefix="timelineapp") as module:
        yield module


@pytest.fixture
def sent(app: Any) -> dict[str, str]:
    """An emit of three recipients, run: recipient -> its MessageID."""
    with app.events.session_factory() as session:
        world = seed.seed(session)
        session.commit()
    key, cuids = seed.emits(world)[6]  # the comment: three recipients
    result = app.events.run(key, "ev-comment", **cuids)
    return {o.recipient: o.message_id for o in result.outcomes}


@pytest.fixture
def port(app: Any) -> Iterator[int]:
    yield from serve(app.events.wsgi_app())


def explain(app: Any, *args: str) -> Any:
    result = CliRunner().invoke(main, ["explain", "ev-comment", "--app", app.ref, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_bounce_before_its_delivery_still_ends_bounced(
    app: Any, sent: dict[str, str], port: int
) -> None:
    message = sent[ADA]
    bounce = webhook_record(
        "Bounce",
        ADA,
        message,
        ID=4242,
        Type="HardBounce",
        BouncedAt=later(2),
        Description="The server was unable to deliver your message",
    )
    delivered = webhook_record("Delivery", ADA, message, DeliveredAt=later(1))
    assert post(port, bounce)[0] == 200
    assert post(port, delivered)[0] == 200
    document = json.loads(explain(app, "--format", "json"))
    (owen,) = [d for d in document["deliveries"] if d["recipient"] == ADA]
    assert owen["status"] == "sent"  # the existing keys stay
    assert owen["state"] == "bounced"
    assert [step["what"] for step in owen["timeline"]] == ["queued", "sent", "delivered", "bounced"]
    assert owen["timeline"][1]["detail"] == {"message_id": message}
    assert owen["timeline"][3]["detail"]["type"] == "HardBounce"


def test_explain_shows_each_recipients_whole_life(
    app: Any, sent: dict[str, str], port: int
) -> None:
    priya = "priya@acme.test"
    message = sent[priya]
    for body in (
        webhook_record("Delivery", priya, message, DeliveredAt=later(1)),
        webhook_record("Open", priya, message, ReceivedAt=later(3), FirstOpen=True),
        webhook_record(
            "Click",
            priya,
            message,
            ReceivedAt=later(4),
            OriginalLink="https://app.acme.test/findings/1",
        ),
    ):
        assert post(port, body)[0] == 200
    lines = explain(app).splitlines()
    start = lines.index(f"{priya}: clicked")
    steps = [line.split(maxsplit=2)[2] for line in lines[start + 1 : start + 6]]
    assert steps == [
        "queued",
        f"sent ({message})",
        "delivered",
        "opened",
        "clicked (https://app.acme.test/findings/1)",
    ]
    assert "sam@acme.test: sent" in lines


def test_an_unsubscribe_lifted_later_is_not_the_state(
    app: Any, sent: dict[str, str], port: int
) -> None:
    sam = "sam@acme.test"
    for suppress, at in ((True, later(5)), (False, later(6))):
        body = webhook_record(
            "SubscriptionChange",
            sam,
            sent[sam],
            ChangedAt=at,
            SuppressSending=suppress,
            SuppressionReason="ManualSuppression",
        )
        assert post(port, body)[0] == 200
    assert f"{sam}: sent" in explain(app).splitlines()


# Engagement: what the webhooks said of the messages sent, per event, on a real database.


@pytest.fixture
def session(db_engine: sa.Engine) -> Iterator[Session]:
    metadata.create_all(db_engine)
    with Session(db_engine) as session:
        yield session


def sent_to(session: Session, key: str, count: int, *, hours_ago: float = 0) -> list[str]:
    """``count`` recipients of one emit of ``key`` logged ``sent``; their addresses."""
    at = datetime.now(UTC) - timedelta(hours=hours_ago)
    addresses = [f"r{n}@{key}.test" for n in range(count)]
    session.execute(
        sa.insert(deliveries),
        [
            {
                "event_id": f"ev-{key}",
                "event_key": key,
                "recipient": address,
                "status": "sent",
                "reason": "sent",
                "message_id": f"m-{key}-{n}",
                "created_at": at,
                "updated_at": at,
            }
            for n, address in enumerate(addresses)
        ],
    )
    session.commit()
    return addresses


def webhook(
    session: Session, kind: str, key: str, address: str, *, bounce: str = "HardBounce", n: int = 0
) -> None:
    """A webhook record of ``kind`` about ``address``'s message of ``key`` (``n`` tells apart
    records of one kind about one message)."""
    detail = {"type": bounce} if kind == "Bounce" else {}
    event = timeline.MessageEvent(
        record_type=kind,
        event_id=f"ev-{key}",
        recipient=address.upper(),  # Postmark's spelling; the timeline keeps it lowercased
        message_id=None,
        occurred_at=datetime.now(UTC),
        detail=detail,
        identifies=(address, str(n)),
        event_key=key,
    )
    assert timeline.record(session, event) is timeline.Recorded.STORED


def by_event(session: Session, **options: Any) -> dict[str, timeline.Engagement]:
    since = datetime.now(UTC) - timedelta(hours=1)
    return {e.event_key: e for e in timeline.engagement(session, since=since, **options)}


def test_engagement_counts_each_recipient_once_per_kind_and_hard_bounces_apart(
    session: Session,
) -> None:
    sent = sent_to(session, "welcome", 20)
    for address in sent[:17]:
        webhook(session, "Delivery", "welcome", address)
    webhook(session, "Bounce", "welcome", sent[17], n=1)
    webhook(session, "Bounce", "welcome", sent[17], n=2)  # bounced twice: one recipient
    webhook(session, "Bounce", "welcome", sent[18], bounce="BadEmailAddress")
    webhook(session, "Bounce", "welcome", sent[19], bounce="SoftBounce")
    webhook(session, "SpamComplaint", "welcome", sent[0])
    webhook(session, "Open", "welcome", sent[1])
    welcome = by_event(session)["welcome"]
    assert (welcome.sent, welcome.recorded, welcome.delivered) == (20, 20, 17)
    assert (welcome.bounced, welcome.hard_bounced, welcome.complained) == (3, 2, 1)
    assert welcome.rate(welcome.delivered) == pytest.approx(0.85)
    assert welcome.bounce_rate == pytest.approx(0.10)  # hard bounces only
    assert welcome.complaint_rate == pytest.approx(0.05)


def test_engagement_counts_only_what_was_sent_in_the_window(session: Session) -> None:
    (recent,) = sent_to(session, "recent", 1)
    (old,) = sent_to(session, "old", 1, hours_ago=3)
    webhook(session, "Delivery", "recent", recent)
    webhook(session, "Delivery", "old", old)
    session.execute(
        sa.insert(deliveries).values(
            event_id="ev-recent",
            event_key="recent",
            recipient="skipped@recent.test",
            status="skipped",
            reason="toggle_off",
        )
    )
    session.commit()
    webhook(session, "Bounce", "recent", "skipped@recent.test")  # not a message we sent
    found = by_event(session)
    assert list(found) == ["recent"]
    assert (found["recent"].sent, found["recent"].delivered, found["recent"].bounced) == (1, 1, 0)
    assert list(by_event(session, event_key="old")) == []


def test_engagement_of_messages_no_webhook_spoke_of_is_recorded_zero(session: Session) -> None:
    sent_to(session, "quiet", 3)
    quiet = by_event(session)["quiet"]
    assert (quiet.sent, quiet.recorded, quiet.delivered, quiet.bounce_rate) == (3, 0, 0, 0.0)
    assert quiet.warnings == []


@pytest.mark.parametrize(
    ("kind", "above", "limit", "warning"),
    [
        (
            "Bounce",
            9,  # 1 in 9: 11.1%
            10,  # 1 in 10: 10%, not above
            (
                "hard bounce rate 11.1% is above 10%, where Postmark reviews a sender "
                f"({timeline.BOUNCE_RATE_SOURCE})"
            ),
        ),
        (
            "SpamComplaint",
            999,
            1000,
            (
                "spam complaint rate 0.10% is above 0.1%, the inbox providers' limit "
                f"({timeline.COMPLAINT_RATE_SOURCE})"
            ),
        ),
    ],
)
def test_a_rate_above_its_limit_warns_and_one_at_the_limit_does_not(
    session: Session, kind: str, above: int, limit: int, warning: str
) -> None:
    for key, count in (("above", above), ("at", limit)):
        sent = sent_to(session, key, count)
        webhook(session, kind, key, sent[0])
        webhook(session, "Bounce", key, sent[1], bounce="SoftBounce")  # not held against it
    found = by_event(session)
    assert found["above"].warnings == [warning]
    assert found["at"].warnings == []
    assert found["at"].rate(1) == pytest.approx(
        timeline.BOUNCE_RATE_LIMIT if kind == "Bounce" else timeline.COMPLAINT_RATE_LIMIT
    )
