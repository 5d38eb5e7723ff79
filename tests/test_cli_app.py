"""The commands that need the application: explain, stats and relay, found with --app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from emailevents import timeline
from emailevents.cli import main
from emailevents.demo import seed
from emailevents.store import deliveries, emits
from tests.appmodule import app_module, demo_app


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    with app_module(
        tmp_path, demo_app(tmp_path / "app.sqlite3"), monkeypatch, prefix="cliapp"
    ) as module:
        yield module


@pytest.fixture
def world(app: Any) -> seed.DemoWorld:
    with app.events.session_factory() as session:
        world = seed.seed(session)
        session.commit()
    return world


def invoke(*args: str, color: bool = False) -> Any:
    return CliRunner().invoke(main, list(args), color=color)


def test_explain_prints_every_recipients_outcome(app: Any, world: seed.DemoWorld) -> None:
    key, cuids = seed.emits(world)[6]  # the comment: three recipients
    app.events.run(key, "ev-comment", **cuids)
    result = invoke("explain", "ev-comment", "--app", app.ref)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "event model_comment_added, id ev-comment"
    assert [line.split()[:3] for line in lines[3:6]] == [
        ["owen@acme.test", "sent", "sent"],
        ["priya@acme.test", "sent", "sent"],
        ["sam@acme.test", "sent", "sent"],
    ]


def test_explain_says_why_an_emit_was_skipped(
    app: Any, world: seed.DemoWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cuids = seed.emits(world)[11]  # the missing finding
    app.events.run(key, "ev-missing", **cuids)
    monkeypatch.setenv("EMAILEVENTS_APP", app.ref)
    result = invoke("explain", "ev-missing")
    assert result.exit_code == 0, result.output
    assert "(the whole emit)  skipped  entity_missing  finding: no Finding with cuid=" in (
        result.output
    )


def test_explain_of_a_pending_emit_says_it_was_not_published(
    app: Any, world: seed.DemoWorld
) -> None:
    with app.events.session_factory() as session:
        session.execute(
            sa.text(
                "INSERT INTO emailevents_emits (event_id, event_key, task_name, cuids, state, "
                "attempts, last_error, created_at) VALUES ('ev-p', 'model_finding_created', 't', "
                "'{}', 'pending', 2, 'OperationalError: connection refused', '2026-11-27 10:00:00')"
            )
        )
        session.commit()
    result = invoke("explain", "ev-p", "--app", app.ref)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        (
            "event model_finding_created, id ev-p: emitted 2026-11-27 10:00:00; pending (not "
            "published yet; 2 failed publish(es), last: OperationalError: connection refused)"
        ),
        "no outcome recorded yet: the worker has not run this emit",
    ]


def test_explain_of_an_unknown_id_fails_clearly(app: Any) -> None:
    result = invoke("explain", "nope", "--app", app.ref)
    assert result.exit_code == 1
    assert "nothing is recorded for event id nope" in result.output


def test_stats_counts_outcomes_per_event_and_reason(app: Any, world: seed.DemoWorld) -> None:
    for number, (key, cuids) in enumerate(seed.emits(world)):
        app.events.run(key, f"ev-{number}", **cuids)
    result = invoke("stats", "--app", app.ref, "--since", "1h")
    assert result.exit_code == 0, result.output
    outcomes = result.output.split("\n\n")[0].splitlines()[2:]
    rows = {tuple(line.split()[:3]): int(line.split()[3]) for line in outcomes}
    assert rows[("broadcast_notification", "sent", "sent")] == 31
    assert rows[("model_finding_created", "sent", "sent")] == 1
    assert rows[("model_finding_created", "skipped", "entity_missing")] == 1
    assert rows[("inventory_model_monitoring_breach", "sent", "sent")] == 2
    only = invoke("stats", "--app", app.ref, "--event", "model_finding_created")
    assert len(only.output.split("\n\n")[0].splitlines()) == 2 + 2
    # No webhook record yet: no counts that would look like nothing was delivered.
    assert only.output.split("\n\n")[1] == (
        "delivered, bounced, complained: no webhook record about the 1 message sent in the "
        "last 24h;\nthese counts need Postmark's webhooks (docs/webhooks.md)\n"
    )


def test_stats_rejects_a_malformed_window(app: Any) -> None:
    result = invoke("stats", "--app", app.ref, "--since", "yesterday")
    assert result.exit_code == 2
    assert "'yesterday' is not a duration like 30m, 24h or 7d" in result.output


def write_emit(app: Any, event_id: str, key: str, cuids: dict[str, str], **row: Any) -> None:
    """A row of emailevents_emits, as an earlier emit would have left it."""
    with app.events.session_factory() as session:
        session.execute(
            emits.insert().values(
                event_id=event_id, event_key=key, task_name="t", cuids=cuids, **row
            )
        )
        session.commit()


def test_relay_once_publishes_what_is_pending(
    app: Any, world: seed.DemoWorld, published: list[dict[str, Any]]
) -> None:
    key, cuids = seed.emits(world)[5]
    with app.events.session_factory() as session:
        app.events.emit(key, session=session, **cuids)
        session.commit()  # published at once: nothing is left for the relay
    write_emit(
        app, "ev-left", key, cuids, state="pending", attempts=1, last_error="OperationalError"
    )
    published.clear()
    result = invoke("relay", "--app", app.ref, "--once", "--grace", "0")
    assert result.exit_code == 0, result.output
    assert result.output == "published 1, failed 0\n"
    assert [p["headers"]["id"] for p in published] == ["ev-left"]
    again = invoke("relay", "--app", app.ref, "--once", "--grace", "0")
    assert again.output == "published 0, failed 0\n"


def test_relay_says_how_many_emits_it_published_again(
    app: Any, world: seed.DemoWorld, published: list[dict[str, Any]]
) -> None:
    key, cuids = seed.emits(world)[5]
    long_ago = datetime.now(UTC) - timedelta(days=1)
    # Published a day ago; its task never left an outcome.
    write_emit(
        app,
        "ev-lost",
        key,
        cuids,
        state="published",
        created_at=long_ago,
        published_at=long_ago,
        check_after=long_ago,
    )
    published.clear()
    result = invoke("relay", "--app", app.ref, "--once", "--grace", "0")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "published 1 (1 again: their task left no settled outcome), failed 0\n"
    )
    assert [p["headers"]["id"] for p in published] == ["ev-lost"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nosuchmodule_xyz:events", "cannot import module 'nosuchmodule_xyz'"),
        ("emailevents.demo.hooks", "holds 0 EmailEvents instances"),
        ("emailevents.demo.hooks:site_url", "is a function, not an EmailEvents"),
    ],
)
def test_a_wrong_app_is_a_usage_error_naming_the_setting(ref: str, message: str) -> None:
    result = invoke("explain", "x", "--app", ref)
    assert result.exit_code == 2
    assert "--app / EMAILEVENTS_APP" in result.output
    assert message in result.output


def test_the_app_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMAILEVENTS_APP", raising=False)
    result = invoke("stats")
    assert result.exit_code == 2
    assert "Missing option '--app'" in result.output


def test_explain_prints_one_json_document(app: Any, world: seed.DemoWorld) -> None:
    key, cuids = seed.emits(world)[6]
    app.events.run(key, "ev-comment", **cuids)
    key, cuids = seed.emits(world)[11]
    app.events.run(key, "ev-missing", **cuids)
    result = invoke("explain", "ev-comment", "--app", app.ref, "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert (document["event_id"], document["event"], document["emit"]) == (
        "ev-comment",
        "model_comment_added",
        None,
    )
    first = document["deliveries"][0]
    assert set(first) == {
        "recipient", "status", "reason", "detail", "message_id", "created_at", "updated_at",
        "state", "timeline",
    }  # fmt: skip
    assert [(d["recipient"], d["status"]) for d in document["deliveries"]] == [
        ("owen@acme.test", "sent"),
        ("priya@acme.test", "sent"),
        ("sam@acme.test", "sent"),
    ]
    assert first["message_id"]
    assert datetime.fromisoformat(first["updated_at"]).utcoffset() == timedelta(0)
    skipped = json.loads(invoke("explain", "ev-missing", "-A", app.ref, "--format", "json").output)
    (whole,) = skipped["deliveries"]
    assert (whole["recipient"], whole["status"], whole["reason"]) == (
        "",
        "skipped",
        "entity_missing",
    )
    assert whole["detail"].startswith("finding: no Finding with cuid=")


def test_explain_json_of_a_pending_emit_shows_the_emit(app: Any, world: seed.DemoWorld) -> None:
    key, cuids = seed.emits(world)[5]
    write_emit(app, "ev-p", key, cuids, state="pending", attempts=2, last_error="refused")
    result = invoke("explain", "ev-p", "--app", app.ref, "--format", "json")
    document = json.loads(result.output)
    assert document["deliveries"] == []
    assert document["emit"]["state"] == "pending"
    assert (document["emit"]["attempts"], document["emit"]["last_error"]) == (2, "refused")
    assert document["emit"]["published_at"] is None


def test_stats_prints_one_json_document(app: Any, world: seed.DemoWorld) -> None:
    for number, (key, cuids) in enumerate(seed.emits(world)):
        app.events.run(key, f"ev-{number}", **cuids)
    before = datetime.now(UTC)
    result = invoke("stats", "--app", app.ref, "--since", "1h", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert (document["since"], document["event"]) == ("1h", None)
    start = datetime.fromisoformat(document["from"])
    assert timedelta(minutes=59) < before - start < timedelta(minutes=61)
    counts = {(c["event"], c["status"], c["reason"]): c["count"] for c in document["counts"]}
    assert counts[("broadcast_notification", "sent", "sent")] == 31
    assert counts[("model_finding_created", "skipped", "entity_missing")] == 1
    only = invoke("stats", "-A", app.ref, "--event", "user_invited", "--format", "json")
    assert json.loads(only.output)["counts"] == [
        {"event": "user_invited", "status": "sent", "reason": "sent", "count": 1}
    ]
    nothing = invoke("stats", "-A", app.ref, "--event", "nope", "--format", "json")
    assert nothing.exit_code == 0
    assert json.loads(nothing.output)["counts"] == []
    assert json.loads(nothing.output)["engagement"] == []


def tell(app: Any, kind: str, key: str, count: int, bounce: str = "HardBounce") -> None:
    """A webhook record of ``kind`` about each of ``count`` recipients sent an emit of ``key``."""
    with app.events.session_factory() as session:
        sent = session.execute(
            sa.select(deliveries.c.event_id, deliveries.c.recipient)
            .where(deliveries.c.event_key == key, deliveries.c.status == "sent")
            .order_by(deliveries.c.recipient)
            .limit(count)
        ).all()
        for event_id, recipient in sent:
            record = timeline.MessageEvent(
                record_type=kind,
                event_id=event_id,
                recipient=recipient,
                message_id=None,
                occurred_at=None,
                detail={"type": bounce} if kind == "Bounce" else {},
                identifies=(recipient,),
                event_key=key,
            )
            timeline.record(session, record)


def test_stats_warns_of_bounce_and_complaint_rates_above_the_limits(
    app: Any, world: seed.DemoWorld
) -> None:
    for number, (key, cuids) in enumerate(seed.emits(world)):
        app.events.run(key, f"ev-{number}", **cuids)
    tell(app, "Delivery", "broadcast_notification", 26)
    tell(app, "Bounce", "broadcast_notification", 4)  # of 31: 12.9%
    tell(app, "SpamComplaint", "broadcast_notification", 1)  # 3.23%
    tell(app, "Delivery", "model_comment_added", 3)
    result = invoke("stats", "--app", app.ref, "--since", "1h")
    assert result.exit_code == 0, result.output  # a report, not a check
    engagement = result.output.split("\n\n")[1].splitlines()
    assert engagement[0].split() == [
        "Event", "Sent", "Delivered", "Bounced", "Hard", "bounced", "Complained",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split()[1:] for line in engagement[2:] if "  " in line}
    assert rows["user_invited"] == ["1", "-", "-", "-", "-"]  # no record: not known, not 0
    assert "-: no webhook record about the event's messages yet" in engagement
    assert rows["broadcast_notification"] == [
        "31", "26", "(83.9%)", "4", "(12.9%)", "4", "(12.9%)", "1", "(3.23%)",
    ]  # fmt: skip
    assert rows["model_comment_added"] == [
        "3", "3", "(100.0%)", "0", "(0.0%)", "0", "(0.0%)", "0", "(0.00%)",
    ]  # fmt: skip
    warnings = [line for line in engagement if line.startswith("warning: ")]
    bounces = (
        "hard bounce rate 12.9% is above 10%, where Postmark reviews a sender "
        f"({timeline.BOUNCE_RATE_SOURCE})"
    )
    complaints = (
        "spam complaint rate 3.23% is above 0.1%, the inbox providers' limit "
        f"({timeline.COMPLAINT_RATE_SOURCE})"
    )
    assert warnings == [
        f"warning: broadcast_notification: {bounces}",
        f"warning: broadcast_notification: {complaints}",
    ]

    document = json.loads(invoke("stats", "-A", app.ref, "--format", "json").output)
    by_event = {e["event"]: e for e in document["engagement"]}
    assert by_event["broadcast_notification"] == {
        "event": "broadcast_notification",
        "sent": 31,
        "recorded": 26,  # the bounced and the complaining were delivered too
        "delivered": 26,
        "bounced": 4,
        "hard_bounced": 4,
        "complained": 1,
        "delivery_rate": pytest.approx(26 / 31),
        "bounce_rate": pytest.approx(4 / 31),
        "complaint_rate": pytest.approx(1 / 31),
        "warnings": [bounces, complaints],
    }
    assert by_event["model_comment_added"]["warnings"] == []
    assert by_event["user_invited"]["recorded"] == 0


def test_statuses_are_coloured_on_a_terminal_unless_no_color(
    app: Any, world: seed.DemoWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    for number, (key, cuids) in enumerate(seed.emits(world)):
        app.events.run(key, f"ev-{number}", **cuids)
    coloured = invoke("stats", "--app", app.ref, color=True).output
    assert "broadcast_notification             \x1b[32msent\x1b[0m     sent" in coloured
    assert "\x1b[33mskipped\x1b[0m  entity_missing" in coloured
    explained = invoke("explain", "ev-11", "--app", app.ref, color=True).output
    assert "(the whole emit)  \x1b[33mskipped\x1b[0m  entity_missing" in explained
    assert "\x1b[" not in invoke("stats", "--app", app.ref).output  # not a terminal
    as_json = invoke("stats", "--app", app.ref, "--format", "json", color=True).output
    assert "\x1b[" not in as_json
    monkeypatch.setenv("NO_COLOR", "1")
    refused = invoke("stats", "--app", app.ref, color=True).output
    assert "broadcast_notification             sent     sent" in refused
    assert "\x1b[" not in refused


def completions(args: list[str], incomplete: str) -> list[str]:
    """What click's shell completion offers after ``args``."""
    complete = ShellComplete(main, {}, "emailevents", "_EMAILEVENTS_COMPLETE")
    return [item.value for item in complete.get_completions(args, incomplete)]


def test_stats_event_completes_from_the_apps_registry(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert completions(["stats", "--app", app.ref, "--event"], "model_") == [
        "model_user_deleted",
        "model_user_added",
        "model_finding_created",
        "model_comment_added",
    ]
    monkeypatch.setenv("EMAILEVENTS_APP", app.ref)
    assert completions(["preview"], "workflow") == [
        "workflow_transition_user_action",
        "workflow_transition_status_set",
    ]
    monkeypatch.setenv("EMAILEVENTS_APP", "nosuchmodule_xyz:events")
    assert completions(["stats", "--event"], "model_") == []
