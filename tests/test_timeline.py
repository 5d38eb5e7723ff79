"""Every message's timeline: webhook records posted over real HTTP to ``events.wsgi_app()``,
then read back by ``emailevents explain`` (text and JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from emailevents.cli import main
from emailevents.demo import seed
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
