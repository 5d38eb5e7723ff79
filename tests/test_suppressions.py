"""The suppression list we keep: what adds and lifts a suppression (webhooks, Postmark's 406,
its Suppressions API, a person), newest change winning in any order, and runs that skip a
suppressed recipient before claiming it, asking nothing of Postmark."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from emailevents import pipeline, schema
from emailevents.cli import main
from emailevents.demo import seed
from emailevents.errors import ConfigurationError
from emailevents.suppressions import Change, Origin, apply, entries, suppressed
from emailevents.tables import deliveries, metadata
from emailevents.tables import suppressions as suppressions_table
from emailevents.testing.fake_postmark import FakePostmark
from tests.appmodule import app_module, demo_app
from tests.conftest import examples
from tests.wsgiserver import AUTH, post, serve, webhook_record

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OWEN = "owen@acme.test"


def change(address: str, suppress: bool, minutes: int, reason: str = "HardBounce") -> Change:
    return Change(
        "outbound",
        address,
        suppress=suppress,
        reason=reason,
        origin=Origin.WEBHOOK,
        at=T0 + timedelta(minutes=minutes),
    )


# -- the list itself, on SQLite and PostgreSQL ----------------------------------------------------


@pytest.fixture
def session(db_engine: sa.Engine) -> Iterator[Session]:
    schema.upgrade(db_engine)
    with Session(db_engine) as session:
        yield session


@pytest.mark.services
def test_the_newest_change_wins_whatever_order_they_arrive_in(session: Session) -> None:
    # Postmark reactivated the address after its bounce; the bounce's webhook comes last.
    apply(session, [change("A@acme.test", False, 5, "ManualSuppression")])
    apply(session, [change("a@acme.test", True, 1)])
    apply(session, [change("b@acme.test", True, 1), change("b@acme.test", False, 1)])
    session.commit()
    assert suppressed(session, "outbound", ["a@acme.test"]) == {}
    # Of two changes at the same time, the suppression wins.
    (held,) = entries(session)
    assert (held.address, held.reason, held.since) == (
        "b@acme.test",
        "HardBounce",
        T0 + timedelta(minutes=1),
    )
    assert suppressed(session, "broadcast", ["b@acme.test"]) == {}


@pytest.fixture(scope="module")
def list_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('s') / 'list.sqlite3'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@settings(max_examples=examples(60), deadline=None)
@given(
    moves=st.lists(
        st.tuples(
            st.sampled_from(["x@acme.test", "Y@acme.test"]), st.booleans(), st.integers(0, 9)
        ),
        min_size=1,
        max_size=12,
    ),
    batch=st.integers(1, 4),
    seed_=st.integers(0, 2**16),
)
def test_any_order_and_grouping_of_changes_ends_in_the_newest(
    moves: list[tuple[str, bool, int]], batch: int, seed_: int, list_engine: sa.Engine
) -> None:
    changes = [change(address, suppress, minute) for address, suppress, minute in moves]
    shuffled = changes[:]
    random.Random(seed_).shuffle(shuffled)
    with Session(list_engine) as session:
        session.execute(sa.delete(suppressions_table))
        for start in range(0, len(shuffled), batch):
            apply(session, shuffled[start : start + batch])
            session.commit()
        got = set(suppressed(session, "outbound", ["x@acme.test", "y@acme.test"]))
    expected = set()
    for address in {a.lower() for a, _, _ in moves}:
        mine = [c for c in changes if c.address.lower() == address]
        newest = max(mine, key=lambda c: (c.at, c.suppress))
        if newest.suppress:
            expected.add(address)
    assert got == expected


# -- runs skip suppressed recipients -----------------------------------------------------------


@pytest.fixture
def app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_postmark: FakePostmark
) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    sender = f"PostmarkSender('test-token', api_url={fake_postmark.url!r})"
    source = demo_app(tmp_path / "app.sqlite3", sender=sender, options=f" webhook_auth={AUTH!r},")
    with app_module(tmp_path, source, monkeypatch, prefix="suppressapp") as module:
        with module.events.session_factory() as session:
            module.world = seed.seed(session)
            session.commit()
        yield module


def comment(app: Any, event_id: str, *, final_attempt: bool = True) -> Any:
    """Run the demo's comment event (three recipients, owen@acme.test one of them)."""
    key, cuids = seed.emits(app.world)[6]
    event = app.events.event(key)
    return pipeline.run(app.events.runtime, event, event_id, cuids, final_attempt=final_attempt)


def sends_to(fake_postmark: FakePostmark, address: str) -> int:
    return sum(address in m.to for m in fake_postmark.messages)


def test_a_suppressed_recipient_is_skipped_with_why_and_the_others_still_get_theirs(
    app: Any, fake_postmark: FakePostmark
) -> None:
    app.events.suppressions.add([OWEN], stream="outbound", reason="asked us by phone")
    result = comment(app, "ev-1")
    (skip,) = [o for o in result.outcomes if o.recipient == OWEN]
    assert (skip.status, skip.reason) == ("skipped", "suppressed")
    assert skip.detail.startswith("suppressed on stream 'outbound' since 20")
    assert "ManualSuppression (set by hand); asked us by phone" in skip.detail
    assert sends_to(fake_postmark, OWEN) == 0
    assert len(fake_postmark.messages) == 2
    # No request about it reached Postmark: the two sends and the suppression asked for.
    assert [path for _, path in fake_postmark.requests if "suppressions" not in path] == [
        "/email/batchWithTemplates"
    ]


def test_a_recipient_suppressed_between_two_tries_is_skipped_not_left_retrying(
    app: Any, fake_postmark: FakePostmark
) -> None:
    fake_postmark.faults.fail_next(1, status=503)
    first = comment(app, "ev-2", final_attempt=False)
    assert {o.status for o in first.outcomes} == {"retry"}
    app.events.suppressions.add([OWEN], stream="outbound")
    again = comment(app, "ev-2")
    assert {o.recipient: o.reason for o in again.outcomes}[OWEN] == "suppressed"
    with app.events.session_factory() as session:
        row = session.execute(
            sa.select(deliveries.c.status, deliveries.c.reason).where(
                deliveries.c.event_id == "ev-2", deliveries.c.recipient == OWEN
            )
        ).one()
    assert tuple(row) == ("skipped", "suppressed")
    assert sends_to(fake_postmark, OWEN) == 0


def test_postmarks_406_suppresses_so_the_next_emit_asks_nothing(
    app: Any, fake_postmark: FakePostmark
) -> None:
    fake_postmark.activity.suppressions.add(
        "outbound", OWEN, reason="HardBounce", origin="Recipient"
    )
    first = comment(app, "ev-3")
    (refused,) = [o for o in first.outcomes if o.recipient == OWEN]
    assert (refused.status, refused.reason) == ("failed", "rejected")
    assert "ErrorCode 406" in refused.detail
    (held,) = app.events.suppressions.get(OWEN)
    assert (held.reason, held.origin, held.event_id) == ("InactiveRecipient", "send", "ev-3")
    asked = len(fake_postmark.requests)
    second = comment(app, "ev-4")
    (skip,) = [o for o in second.outcomes if o.recipient == OWEN]
    assert skip.reason == "suppressed"
    assert "InactiveRecipient (Postmark's answer to a send, emit ev-3)" in skip.detail
    # One request, for the two others; none names Owen.
    assert len(fake_postmark.requests) == asked + 1
    assert all(OWEN not in m.to for m in fake_postmark.messages[-2:])


# -- Postmark's Suppressions API -------------------------------------------------------------


def test_sync_adds_what_postmark_holds_and_says_what_only_we_hold(
    app: Any, fake_postmark: FakePostmark
) -> None:
    fake_postmark.activity.suppressions.add(
        "outbound", "gone@acme.test", reason="HardBounce", origin="Recipient"
    )
    fake_postmark.activity.suppressions.add(
        "outbound", "spam@acme.test", reason="SpamComplaint", origin="Recipient"
    )
    with app.events.session_factory() as session:
        apply(session, [change("local@acme.test", True, 0)])
        session.commit()
    (synced,) = app.events.suppressions.sync()
    assert synced.added == ("gone@acme.test", "spam@acme.test")
    assert synced.only_here == ("local@acme.test",)
    assert {(s.address, s.reason, s.origin) for s in app.events.suppressions.list()} >= {
        ("gone@acme.test", "HardBounce", "sync"),
        ("spam@acme.test", "SpamComplaint", "sync"),
    }
    (again,) = app.events.suppressions.sync()
    assert (again.added, again.known) == ((), ("gone@acme.test", "spam@acme.test"))


def test_remove_asks_postmark_first_and_keeps_what_it_refuses(
    app: Any, fake_postmark: FakePostmark
) -> None:
    app.events.suppressions.add(["a@acme.test"])
    fake_postmark.activity.suppressions.add(
        "outbound", "spam@acme.test", reason="SpamComplaint", origin="Recipient"
    )
    app.events.suppressions.sync()
    assert {s.email_address for s in fake_postmark.activity.suppressions.entries("outbound")} == {
        "a@acme.test",
        "spam@acme.test",
    }
    (removed,) = app.events.suppressions.remove(["a@acme.test", "spam@acme.test"])
    assert removed.changed == ("a@acme.test",)
    assert removed.refused == {
        "spam@acme.test": "You do not have the required authority to change this suppression."
    }
    assert [s.address for s in app.events.suppressions.list()] == ["spam@acme.test"]
    assert [s.email_address for s in fake_postmark.activity.suppressions.entries("outbound")] == [
        "spam@acme.test"
    ]


def test_sync_without_a_postmark_sender_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with app_module(
        tmp_path, demo_app(tmp_path / "o.sqlite3"), monkeypatch, prefix="outboxapp"
    ) as module:
        with pytest.raises(ConfigurationError, match="not a PostmarkSender"):
            module.events.suppressions.sync()
        # Without Postmark, add and remove change the local list only.
        module.events.suppressions.add([OWEN])
        assert [s.address for s in module.events.suppressions.list()] == [OWEN]
        module.events.suppressions.remove([OWEN])
        assert module.events.suppressions.list() == []


# -- webhooks -----------------------------------------------------------------------------------


@pytest.fixture
def port(app: Any) -> Iterator[int]:
    yield from serve(app.events.wsgi_app())


def later(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def test_webhooks_suppress_on_hard_bounces_complaints_and_unsubscribes_and_lift_on_reactivation(
    app: Any, port: int
) -> None:
    posts = [
        webhook_record(
            "Bounce", "hard@acme.test", "m1", ID=1, Type="HardBounce", BouncedAt=later(1)
        ),
        webhook_record(
            "Bounce", "soft@acme.test", "m2", ID=2, Type="SoftBounce", BouncedAt=later(1)
        ),
        webhook_record(
            "SpamComplaint", "spam@acme.test", "m3", ID=3, Type="SpamComplaint", BouncedAt=later(1)
        ),
        webhook_record(
            "SubscriptionChange",
            "left@acme.test",
            "m4",
            ChangedAt=later(1),
            SuppressSending=True,
            SuppressionReason="ManualSuppression",
            Origin="Recipient",
        ),
        # Reactivated after its bounce, and the reactivation arrives first.
        webhook_record(
            "SubscriptionChange", "back@acme.test", "m5", ChangedAt=later(3), SuppressSending=False
        ),
        webhook_record(
            "Bounce", "back@acme.test", "m5", ID=5, Type="HardBounce", BouncedAt=later(2)
        ),
        webhook_record("Delivery", "fine@acme.test", "m6", DeliveredAt=later(1)),
    ]
    for body in posts + posts:  # Postmark delivers each at least once
        assert post(port, body)[0] == 200
    held = {s.address: s for s in app.events.suppressions.list()}
    assert sorted(held) == ["hard@acme.test", "left@acme.test", "spam@acme.test"]
    assert held["hard@acme.test"].event_id == "ev-comment"
    assert (held["spam@acme.test"].reason, held["spam@acme.test"].origin) == (
        "SpamComplaint",
        "webhook",
    )


# -- the command line ---------------------------------------------------------------------------


def cli(app: Any, *args: str) -> Any:
    return CliRunner().invoke(main, ["suppressions", *args, "--app", app.ref])


def test_the_commands_add_list_remove_and_sync_against_postmark(
    app: Any, fake_postmark: FakePostmark
) -> None:
    added = cli(app, "add", "a@acme.test", "not an address", "--reason", "asked by phone")
    assert added.exit_code == 1
    assert added.stdout == "outbound: suppressed a@acme.test\n"
    assert "outbound: not an address refused: " in added.stderr
    fake_postmark.activity.suppressions.add(
        "outbound", "spam@acme.test", reason="SpamComplaint", origin="Recipient"
    )
    synced = cli(app, "sync")
    assert synced.exit_code == 0, synced.output
    assert synced.output == (
        "outbound: 1 added from Postmark, 1 known already\n  added spam@acme.test\n"
    )
    listed = cli(app, "list")
    rows = [line.split()[:4] for line in listed.output.splitlines()[2:]]
    assert rows == [
        ["outbound", "a@acme.test", "ManualSuppression", "manual"],
        ["outbound", "spam@acme.test", "SpamComplaint", "sync"],
    ]
    assert "asked by phone" in listed.output
    document = json.loads(cli(app, "list", "--format", "json").output)
    assert [s["address"] for s in document["suppressions"]] == ["a@acme.test", "spam@acme.test"]

    removed = cli(app, "remove", "a@acme.test", "spam@acme.test", "--format", "json")
    assert removed.exit_code == 1
    assert json.loads(removed.stdout) == {
        "streams": [
            {
                "stream": "outbound",
                "reactivated": ["a@acme.test"],
                "refused": {
                    "spam@acme.test": "You do not have the required authority to change "
                    "this suppression."
                },
            }
        ]
    }
    assert [s.address for s in app.events.suppressions.list()] == ["spam@acme.test"]


def test_a_postmark_that_cannot_be_reached_is_one_line_without_the_token(
    app: Any, fake_postmark: FakePostmark
) -> None:
    fake_postmark.stop()
    result = cli(app, "sync")
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach Postmark at ")
    assert "test-token" not in result.output
    assert "Traceback" not in result.output
