"""Throttles: ``throttle: {limit, per}`` on an event (or ``group:``) sends a recipient at most
``limit`` emails in any ``per``; past it the recipient's outcome is skipped ``throttled``.

The registry's durations and checks; then a real Celery worker consuming real broker messages,
the local Postmark server over HTTP, and the slots on a real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, RunResult, Status, pipeline, store, throttles
from emailevents.cli import main
from emailevents.demo import hooks, seed
from emailevents.demo.run import REGISTRY, seed_database
from emailevents.registry import compile_registry
from emailevents.registry.durations import DurationError, format_duration, parse_duration
from emailevents.registry.model import Throttle
from emailevents.senders.postmark import PostmarkSender
from emailevents.tables import current_time, throttle_slots
from emailevents.testing import Runs, worker
from emailevents.testing.fake_postmark import FakePostmark
from tests.test_preferences import seeded_app

OWEN = "owen@acme.test"
FINDING = "model_finding_created"  # the demo's finding: one recipient, Owen
COMMENT = "model_comment_added"  # the demo's comment: Owen, Priya and Sam


# -- durations --


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("2d", 172_800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93_784),
    ],
)
def test_a_duration_is_units_from_days_to_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "1", "h", "1 h", "1H", "30m1h", "1h1h", "-1h", "1.5h", "0s", "0h0m", "1w", " 1h"]
)
def test_anything_else_is_refused_saying_what_to_write(text: str) -> None:
    with pytest.raises(DurationError, match="30s, 15m, 1h, 2d or 1h30m"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=36_500 * 86_400))
def test_a_duration_written_back_reads_the_same(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration


# -- the registry --

HEAD = """\
version: 1
defaults:
  from: "Acme <notifications@acme.test>"
entities: {}
events:
"""


def event(key: str, throttle: str) -> str:
    return (
        f"  {key}:\n    toggle: always\n    template: {key}\n    entities: {{}}\n"
        f'    to: "ops@acme.test"\n    throttle: {throttle}\n'
    )


def problems(*events: str) -> list[tuple[str, str]]:
    compilation = compile_registry(HEAD + "".join(events), filename="events.yaml")
    return [(p.code, str(p)) for p in compilation.problems]


def test_a_throttle_compiles_to_its_budget() -> None:
    text = HEAD + event("a", "{limit: 3, per: 1h}") + event("b", "{limit: 2, per: 90m, group: g}")
    registry = compile_registry(text, filename="events.yaml").registry
    assert registry is not None
    a, b = registry.events["a"].throttle, registry.events["b"].throttle
    assert a is not None
    assert (a.scope, a.limit, a.per) == ("a", 3, timedelta(hours=1))
    assert b is not None
    assert (b.scope, b.limit, b.per) == ("group:g", 2, timedelta(minutes=90))


def test_each_mistake_in_a_throttle_is_reported_where_it_is_written() -> None:
    found = problems(event("c", "{limit: 0, per: 0s, group: 1x, every: 2}"))
    assert found == [
        (
            "EE070",
            (
                "events.yaml:11:23: events.c.throttle.limit: must be 1 or more (got 0) (to send "
                "this event to nobody, remove it; to send without a limit, remove `throttle:`)"
            ),
        ),
        (
            "EE070",
            (
                "events.yaml:11:31: events.c.throttle.per: '0s' is no time at all (write a "
                "duration like 30s, 15m, 1h, 2d or 1h30m)"
            ),
        ),
        (
            "EE070",
            (
                "events.yaml:11:42: events.c.throttle.group: '1x' is not a group name (letters, "
                "digits and `_`, starting with a letter, like 'findings')"
            ),
        ),
        (
            "EE005",
            (
                "events.yaml:11:46: events.c.throttle: unknown field 'every' "
                "(allowed: limit, per, group)"
            ),
        ),
    ]


@pytest.mark.parametrize(
    ("throttle", "code", "message"),
    [
        ('{limit: "3", per: 1h}', "EE007", "11:23: events.d.throttle.limit: Input should be"),
        ("{limit: 3, per: 3600}", "EE007", "11:31: events.d.throttle.per: Input should be"),
        ("{limit: 3, per: 1h30x}", "EE070", "11:31: events.d.throttle.per: '1h30x' is not"),
        ("{per: 1h30x}", "EE006", "11:5: events.d.throttle: missing required field 'limit'"),
        ("3", "EE007", "11:15: events.d.throttle: Input should be a valid dictionary"),
    ],
)
def test_a_throttle_of_the_wrong_shape_is_reported(throttle: str, code: str, message: str) -> None:
    found = problems(event("d", throttle))
    assert found[0][0] == code
    assert found[0][1].startswith(f"events.yaml:{message}")


def test_the_events_of_a_group_must_agree_on_its_budget() -> None:
    found = problems(
        event("a", "{limit: 3, per: 1h, group: g}"),
        event("b", "{limit: 3, per: 60m, group: g}"),  # the same budget, written otherwise
        event("c", "{limit: 2, per: 1h, group: g}"),
    )
    assert found == [
        (
            "EE071",
            (
                "events.yaml:23:15: events.c.throttle: group 'g' is 3 per 1h in event 'a' "
                "(line 11), here 2 per 1h (the events of a group share one budget: give each the "
                "same `limit:` and `per:`)"
            ),
        )
    ]


# -- a run --


@dataclass
class App:
    events: EmailEvents
    world: seed.DemoWorld
    factory: sessionmaker[Session]

    def emit_finding(self) -> Any:
        _, cuids = seed.emits(self.world)[5]
        return self.events.emit(FINDING, **cuids)

    def run(self, key: str, event_id: str) -> RunResult:
        _, cuids = next((k, c) for k, c in seed.emits(self.world) if k == key)
        return pipeline.run(self.events.runtime, self.events.event(key), event_id, cuids)

    def slots(self) -> list[tuple[str, str, int, str]]:
        with self.factory() as session:
            rows = session.execute(
                sa.select(
                    throttle_slots.c.scope,
                    throttle_slots.c.recipient,
                    throttle_slots.c.slot,
                    throttle_slots.c.event_id,
                ).order_by(throttle_slots.c.recipient, throttle_slots.c.slot)
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]


def registry(folder: Path, finding: str, comment: str | None = None) -> Path:
    """The demo's registry with ``finding`` as the finding event's throttle (and ``comment`` as
    the comment event's)."""
    text = Path(REGISTRY).read_text(encoding="utf-8")
    text = text.replace(f"  {FINDING}:\n", f"  {FINDING}:\n    throttle: {finding}\n", 1)
    if comment is not None:
        text = text.replace(f"  {COMMENT}:\n", f"  {COMMENT}:\n    throttle: {comment}\n", 1)
    path = folder / "events.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def make_app(
    engine: sa.Engine,
    celery_app: Celery,
    server: FakePostmark,
    folder: Path,
    *,
    finding: str = "{limit: 3, per: 1h}",
    comment: str | None = None,
    batch_window: float = 0.0,
) -> App:
    celery_app.conf.worker_prefetch_multiplier = 50  # a batch is made of the prefetched
    factory, world = seed_database(engine)
    events = EmailEvents(
        str(registry(folder, finding, comment)),
        celery=celery_app,
        session_factory=factory,
        sender=PostmarkSender("test-token", api_url=server.url, timeout=5),
        context={"site_url": hooks.site_url},
        set_default=False,
        batch_window=batch_window,
        max_retries=3,
        retry_backoff=0.05,
    )
    return App(events, world, factory)


def outcomes(results: list[RunResult]) -> Counter[tuple[str, str]]:
    return Counter((o.status.value, o.reason.value) for r in results for o in r.outcomes)


@pytest.mark.parametrize("batch_window", [0.0, 0.05])
def test_a_throttle_of_3_per_hour_skips_the_fourth_emit(
    sqlite_engine: sa.Engine,
    celery_app: Celery,
    fake_postmark: FakePostmark,
    tmp_path: Path,
    batch_window: float,
) -> None:
    app = make_app(sqlite_engine, celery_app, fake_postmark, tmp_path, batch_window=batch_window)
    with Runs() as runs, worker(celery_app, concurrency=2):
        first = runs.wait(*[app.emit_finding() for _ in range(3)])
        fourth = app.emit_finding()
        (result,) = runs.wait(fourth)
    assert outcomes(first) == {("sent", "sent"): 3}
    (skip,) = result.outcomes
    assert (skip.status, skip.reason.value, skip.recipient) == (Status.SKIPPED, "throttled", OWEN)
    assert skip.detail == (
        f"3 emails of event '{FINDING}' went to this recipient in the last 1h (throttle: 3 per 1h)"
    )
    assert len(fake_postmark.messages) == 3
    assert fourth.event_id not in {m.metadata["event_id"] for m in fake_postmark.messages}
    # Each sent emit holds a slot; the throttled one none.
    sent = {m.metadata["event_id"] for m in fake_postmark.messages}
    assert {(s[0], s[1], s[3]) for s in app.slots()} == {(FINDING, OWEN, i) for i in sent}


@pytest.mark.parametrize("batch_window", [0.0, 0.05])
def test_ten_emits_at_once_from_four_threads_send_exactly_three(
    db_engine: sa.Engine,
    celery_app: Celery,
    fake_postmark: FakePostmark,
    tmp_path: Path,
    batch_window: float,
) -> None:
    app = make_app(db_engine, celery_app, fake_postmark, tmp_path, batch_window=batch_window)
    with Runs() as runs, worker(celery_app, concurrency=4):
        results = runs.wait(*[app.emit_finding() for _ in range(10)])
    assert outcomes(results) == {("sent", "sent"): 3, ("skipped", "throttled"): 7}
    sent = {r.event_id for r in results if r.outcomes[0].status is Status.SENT}
    assert Counter(m.metadata["event_id"] for m in fake_postmark.messages) == dict.fromkeys(sent, 1)
    assert sorted((s[2], s[3] in sent) for s in app.slots()) == [(0, True), (1, True), (2, True)]


def test_a_retried_emit_keeps_its_one_slot(
    sqlite_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark, tmp_path: Path
) -> None:
    app = make_app(sqlite_engine, celery_app, fake_postmark, tmp_path)
    fake_postmark.faults.fail_next(1, status=500)
    with Runs() as runs, worker(celery_app, concurrency=2):
        retried = app.emit_finding()
        assert outcomes(runs.wait(retried)) == {("sent", "sent"): 1}
        assert [s[3] for s in app.slots()] == [retried.event_id]
        assert len(fake_postmark.messages) == 1  # the 500 took nothing
        later = [app.emit_finding() for _ in range(3)]
        results = runs.wait(*later)
    # The retry took no second slot: two more fit in the budget of three, the third does not.
    assert outcomes(results) == {("sent", "sent"): 2, ("skipped", "throttled"): 1}
    assert len(fake_postmark.messages) == 3


def test_a_redelivered_emit_reuses_its_slot_and_is_not_sent_again(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark, tmp_path: Path
) -> None:
    app = make_app(db_engine, celery_app, fake_postmark, tmp_path, finding="{limit: 1, per: 1h}")
    assert outcomes([app.run(FINDING, "ev-1")]) == {("sent", "sent"): 1}
    again = app.run(FINDING, "ev-1")  # its message delivered again
    assert outcomes([again]) == {("skipped", "already_recorded"): 1}
    assert outcomes([app.run(FINDING, "ev-2")]) == {("skipped", "throttled"): 1}
    # The throttled emit, delivered again, stays throttled and takes no slot either.
    assert outcomes([app.run(FINDING, "ev-2")]) == {("skipped", "already_recorded"): 1}
    assert [s[3] for s in app.slots()] == ["ev-1"]
    assert len(fake_postmark.messages) == 1


def test_a_slot_is_free_again_after_per(
    sqlite_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark, tmp_path: Path
) -> None:
    app = make_app(
        sqlite_engine, celery_app, fake_postmark, tmp_path, finding="{limit: 1, per: 2s}"
    )
    assert outcomes([app.run(FINDING, "ev-1")]) == {("sent", "sent"): 1}
    assert outcomes([app.run(FINDING, "ev-2")]) == {("skipped", "throttled"): 1}
    time.sleep(2.1)
    assert outcomes([app.run(FINDING, "ev-3")]) == {("sent", "sent"): 1}
    assert [s[2:] for s in app.slots()] == [(0, "ev-3")]  # the same slot, taken over
    assert len(fake_postmark.messages) == 2


def test_a_suppressed_recipient_takes_no_slot(
    sqlite_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark, tmp_path: Path
) -> None:
    app = make_app(
        sqlite_engine, celery_app, fake_postmark, tmp_path, finding="{limit: 1, per: 1h}"
    )
    app.events.suppressions.add([OWEN], stream="outbound")
    assert outcomes([app.run(FINDING, "ev-1")]) == {("skipped", "suppressed"): 1}
    assert app.slots() == []
    app.events.suppressions.remove([OWEN], stream="outbound")
    assert outcomes([app.run(FINDING, "ev-2")]) == {("sent", "sent"): 1}


def test_the_events_of_a_group_share_one_budget_per_recipient(
    sqlite_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark, tmp_path: Path
) -> None:
    budget = "{limit: 2, per: 1h, group: model_activity}"
    app = make_app(
        sqlite_engine, celery_app, fake_postmark, tmp_path, finding=budget, comment=budget
    )
    assert outcomes([app.run(FINDING, "ev-1")]) == {("sent", "sent"): 1}  # Owen: 1 of 2
    assert outcomes([app.run(COMMENT, "ev-2")]) == {("sent", "sent"): 3}  # Owen: 2 of 2
    third = app.run(COMMENT, "ev-3")
    assert {(o.recipient, o.reason.value) for o in third.outcomes} == {
        (OWEN, "throttled"),
        ("priya@acme.test", "sent"),
        ("sam@acme.test", "sent"),
    }
    (owen,) = [o for o in third.outcomes if o.recipient == OWEN]
    assert "of group 'model_activity'" in owen.detail
    assert {s[0] for s in app.slots()} == {"group:model_activity"}


@pytest.fixture
def cli_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_postmark: FakePostmark
) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    path = registry(tmp_path, "{limit: 1, per: 1h}")
    with seeded_app(tmp_path, monkeypatch, fake_postmark, path) as module:
        yield module


def test_explain_and_stats_show_the_throttled(cli_app: Any) -> None:
    _, cuids = seed.emits(cli_app.world)[5]
    event = cli_app.events.event(FINDING)
    for event_id in ("ev-1", "ev-2"):
        pipeline.run(cli_app.events.runtime, event, event_id, cuids)
    explained = CliRunner().invoke(main, ["explain", "ev-2", "--app", cli_app.ref])
    assert explained.exit_code == 0, explained.output
    line = next(line for line in explained.output.splitlines() if line.startswith(OWEN))
    assert line.split()[1:3] == ["skipped", "throttled"], explained.output
    document = json.loads(
        CliRunner()
        .invoke(main, ["explain", "ev-2", "--app", cli_app.ref, "--format", "json"])
        .output
    )
    assert [(d["recipient"], d["status"], d["reason"]) for d in document["deliveries"]] == [
        (OWEN, "skipped", "throttled")
    ]
    stats = CliRunner().invoke(main, ["stats", "--app", cli_app.ref, "--format", "json"])
    assert stats.exit_code == 0, stats.output
    counts = {
        (c["event"], c["status"], c["reason"]): c["count"]
        for c in json.loads(stats.output)["counts"]
    }
    assert counts[(FINDING, "skipped", "throttled")] == 1
    assert counts[(FINDING, "sent", "sent")] == 1


def test_no_emit_takes_a_slot_of_an_event_without_a_throttle(
    sqlite_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark, tmp_path: Path
) -> None:
    app = make_app(sqlite_engine, celery_app, fake_postmark, tmp_path)
    assert outcomes([app.run(COMMENT, str(uuid.uuid4())) for _ in range(4)]) == {
        ("sent", "sent"): 12
    }
    assert app.slots() == []


@pytest.mark.parametrize("commits_alone", [True, False])
def test_two_runs_of_one_emit_at_the_same_moment_hold_one_slot(
    db_engine: sa.Engine, commits_alone: bool
) -> None:
    # The race the unique (scope, recipient, event id) closes: a run of ev-1 took slot 1 while
    # another run of ev-1, which read the slots before that, takes slot 0, free again.
    factory, _ = seed_database(db_engine)
    budget = Throttle(FINDING, 2, timedelta(hours=1))
    now = current_time()
    with factory() as session:
        if commits_alone:
            store.statements_commit_alone(session)
        assert throttles.throttled(session, budget, "ev-old", [OWEN]) == []  # slot 0
        assert throttles.throttled(session, budget, "ev-1", [OWEN]) == []  # slot 1
        took = throttles._take(session, FINDING, OWEN, 0, "ev-1", now, now + timedelta(hours=2))
        assert took  # refused by the constraint: the emit holds a slot already
        held = [(h.slot, h.event_id) for h in throttles.held(session, FINDING, OWEN)]
        assert held == [(0, "ev-old"), (1, "ev-1")]
        # The session goes on working after the refusal.
        assert throttles.throttled(session, budget, "ev-2", [OWEN]) == [OWEN]
