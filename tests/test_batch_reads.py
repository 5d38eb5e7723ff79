"""What a batch reads once for all its emits (docs/performance.md, "Cross-emit batching"): the
suppressions, the preferences, the throttle slots and the delivery rows of its recipients, and
the entities its expressions reach through relationships. Counted in SQL statements, which must
not grow with the number of emits; and the same outcomes as emits run alone.

``batchrun.run_together`` in-process on a real database (SQLite and PostgreSQL), sending to the
outbox sender.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, OutboxSender, RunResult, batchrun
from emailevents.demo.models import Base, InventoryModel, ModelFinding, Organization, User
from emailevents.tables import IN_LIST

REGISTRY = """\
version: 1
defaults:
  from: "Acme <notifications@acme.test>"
  message_stream: outbound
  org: org
categories:
  activity: {title: Activity}
entities:
  User: emailevents.demo.models:User
  Organization: emailevents.demo.models:Organization
  Finding: {model: "emailevents.demo.models:ModelFinding", key: cuid}
events:
  note:
    toggle: always
    template: note
    entities: {user: User, org: Organization}
    subject: "Hello {user.full_name}"
    to: "{user.email}"
    category: activity
    throttle: {limit: 1, per: 1h}
    data:
      name: "{user.full_name}"
  plain:
    toggle: always
    template: note
    entities: {user: User, org: Organization}
    subject: "Hello {user.full_name}"
    to: "{user.email}"
    category: activity
    data:
      name: "{user.full_name}"
  finding:
    toggle: always
    template: note
    entities: {user: User, org: Organization, finding: Finding}
    critical: true
    subject: "{finding.title} on {finding.inventory_model.name}"
    to: "{finding.owner.full_name} <{finding.owner.email}>"
    data:
      name: "{finding.owner.full_name}"
      model: "{finding.inventory_model.name}"
"""

# The tables a batch reads for its recipients, and whose reads must not grow with its emits.
READS = {
    "suppressions": "emailevents_suppressions",
    "preferences": "emailevents_preferences",
    "throttle slots": "emailevents_throttle_slots",
    "outcomes": "emailevents_deliveries",
}


@dataclass
class World:
    events: EmailEvents
    engine: sa.Engine
    factory: sessionmaker[Session]
    org: str
    actor: str
    sender: OutboxSender

    def users(self, count: int, start: int = 0) -> list[str]:
        with self.factory() as session:
            users = [
                User(email=f"user{i}@acme.test", full_name=f"User {i}")
                for i in range(start, start + count)
            ]
            session.add_all(users)
            session.commit()
            return [u.cuid for u in users]

    def findings(self, count: int, start: int) -> list[str]:
        with self.factory() as session:
            owners = [
                User(email=f"owner{i}@acme.test", full_name=f"Owner {i}")
                for i in range(start, start + count)
            ]
            model = InventoryModel(name=f"Model {start}", organization_id=1, owner=owners[0])
            findings = [
                ModelFinding(title=f"Finding {i}", severity="high", inventory_model=model, owner=o)
                for i, o in enumerate(owners)
            ]
            session.add_all(findings)
            session.commit()
            return [f.cuid for f in findings]

    def run(self, key: str, name: str, cuids: list[str], prefix: str = "ev") -> dict[str, Any]:
        """Emits of ``key``, each with one of ``cuids`` as its entity ``name``, in one batch."""
        base = {"user": self.actor, "org": self.org}
        emits = [
            batchrun.Emit(f"{prefix}-{i}", {**base, name: cuid}) for i, cuid in enumerate(cuids)
        ]
        return batchrun.run_together(self.events.runtime, self.events.event(key), emits)


@pytest.fixture
def world(tmp_path: Path, celery_app: Celery, db_engine: sa.Engine) -> Iterator[World]:
    Base.metadata.create_all(db_engine)
    factory = sessionmaker(db_engine)
    path = tmp_path / "events.yaml"
    path.write_text(REGISTRY)
    sender = OutboxSender()
    events = EmailEvents(
        path,
        celery=celery_app,
        session_factory=factory,
        sender=sender,
        public_url="https://app.example.com/email",
        signing_keys=["a long random secret for the tests"],
        set_default=False,
    )
    events.create_tables(db_engine)
    with factory() as session:
        org = Organization(id=1, name="Acme", slug="acme")
        actor = User(email="actor@acme.test", full_name="Actor")
        session.add_all([org, actor])
        session.commit()
        yield World(events, db_engine, factory, org.cuid, actor.cuid, sender)


class Statements:
    """Every SELECT the engine runs while the block is open, by the table it reads."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.selects: list[str] = []

    def __enter__(self) -> Self:
        sa.event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            self.selects.append(statement)

    def reading(self, table: str) -> int:
        """SELECTs whose FROM names ``table``."""
        pattern = re.compile(rf"\bFROM\s+(\S+\.)?\"?{table}\b", re.IGNORECASE)
        return sum(1 for s in self.selects if pattern.search(s))


def outcomes(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Event id -> (status, reason) of its one recipient."""
    found: dict[str, tuple[str, str]] = {}
    for event_id, result in results.items():
        assert isinstance(result, RunResult), result
        (outcome,) = result.outcomes
        found[event_id] = (outcome.status.value, outcome.reason.value)
    return found


def reads(world: World, key: str, name: str, cuids: list[str], prefix: str) -> Counter[str]:
    with Statements(world.engine) as statements:
        results = world.run(key, name, cuids, prefix)
    assert set(outcomes(results).values()) == {("sent", "sent")}
    return Counter({what: statements.reading(table) for what, table in READS.items()})


def test_a_batch_reads_suppressions_preferences_slots_and_outcomes_once_whatever_its_size(
    world: World,
) -> None:
    few = reads(world, "note", "user", world.users(3), "few")
    many = reads(world, "note", "user", world.users(40, start=3), "many")
    assert many == few
    assert all(few[what] == 1 for what in READS), few


def test_a_batch_reads_the_entities_its_expressions_reach_once_whatever_its_size(
    world: World,
) -> None:
    # {finding.owner.email}, {finding.inventory_model.name}: each finding's owner is a user of
    # its own, loaded with the findings, not one SELECT per emit.
    def selects(count: int, start: int, prefix: str) -> int:
        cuids = world.findings(count, start)
        with Statements(world.engine) as statements:
            results = world.run("finding", "finding", cuids, prefix)
        assert set(outcomes(results).values()) == {("sent", "sent")}
        return len(statements.selects)

    assert selects(30, 3, "many") == selects(3, 0, "few")
    sent = {m.message.to for m in world.sender.messages}
    assert len(sent) == 33
    assert "Owner 9 <owner9@acme.test>" in sent


def test_a_suppressed_recipient_in_the_middle_of_a_batch_is_skipped_for_its_reason(
    world: World,
) -> None:
    cuids = world.users(5)
    world.events.suppressions.add(["user2@acme.test"], stream="outbound")
    assert outcomes(world.run("note", "user", cuids)) == {
        "ev-0": ("sent", "sent"),
        "ev-1": ("sent", "sent"),
        "ev-2": ("skipped", "suppressed"),
        "ev-3": ("sent", "sent"),
        "ev-4": ("sent", "sent"),
    }
    assert "user2@acme.test" not in {m.message.to for m in world.sender.messages}


def test_preferences_are_honoured_in_a_batch(world: World) -> None:
    cuids = world.users(4)
    world.events.preferences.set("user1@acme.test", "activity", enabled=False)
    world.events.preferences.set("user3@acme.test", "activity", enabled=True)
    assert outcomes(world.run("plain", "user", cuids)) == {
        "ev-0": ("sent", "sent"),
        "ev-1": ("skipped", "opted_out"),
        "ev-2": ("sent", "sent"),
        "ev-3": ("sent", "sent"),
    }


def test_a_throttle_still_limits_a_recipient_within_one_batch(world: World) -> None:
    # limit 1 per hour: the same recipient three times in one batch gets one email.
    (cuid,) = world.users(1)
    others = world.users(2, start=1)
    assert outcomes(world.run("note", "user", [cuid, others[0], cuid, others[1], cuid])) == {
        "ev-0": ("sent", "sent"),
        "ev-1": ("sent", "sent"),
        "ev-2": ("skipped", "throttled"),
        "ev-3": ("sent", "sent"),
        "ev-4": ("skipped", "throttled"),
    }
    # and the next batch finds the slots taken
    assert set(outcomes(world.run("note", "user", [cuid, *others], "next")).values()) == {
        ("skipped", "throttled")
    }


@pytest.mark.parametrize("db_engine", ["sqlite"], indirect=True)
def test_more_recipients_than_an_in_list_holds_are_read_in_chunks(world: World) -> None:
    count = IN_LIST + 100
    cuids = world.users(count)
    world.events.suppressions.add([f"user{count - 3}@acme.test"], stream="outbound")
    world.events.preferences.set("user7@acme.test", "activity", enabled=False)
    with Statements(world.engine) as statements:
        found = outcomes(world.run("note", "user", cuids))
    assert Counter(found.values()) == {
        ("sent", "sent"): count - 2,
        ("skipped", "suppressed"): 1,
        ("skipped", "opted_out"): 1,
    }
    assert found[f"ev-{count - 3}"] == ("skipped", "suppressed")
    assert found["ev-7"] == ("skipped", "opted_out")
    chunks = {what: statements.reading(table) for what, table in READS.items()}
    assert chunks == dict.fromkeys(READS, 2)
