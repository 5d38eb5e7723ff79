"""One task run: the 11 seed events through a real Celery worker, and every way a run can end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, OutboxSender, Reason, Status
from emailevents.demo import models, seed
from emailevents.demo.run import REGISTRY, demo_events, seed_database
from emailevents.registry import parse_registry
from emailevents.senders.postmark import PostmarkSender
from emailevents.store import deliveries
from emailevents.testing import Runs, memory_app, worker
from emailevents.testing.fake_postmark import FakePostmark
from tests.registry_app import hooks as app_hooks
from tests.registry_app.world import create_world


@dataclass
class Demo:
    events: EmailEvents
    outbox: OutboxSender
    world: seed.DemoWorld
    session_factory: sessionmaker[Session]

    def log(self, event_id: str) -> list[tuple[str, str, str]]:
        with self.session_factory() as session:
            rows = session.execute(
                sa.select(deliveries.c.recipient, deliveries.c.status, deliveries.c.reason)
                .where(deliveries.c.event_id == event_id)
                .order_by(deliveries.c.recipient)
            )
            return [tuple(row) for row in rows]


@pytest.fixture
def demo(db_engine: sa.Engine, celery_app: Celery, outbox: OutboxSender) -> Demo:
    factory, world = seed_database(db_engine, toggles_off=True)
    events = demo_events(celery=celery_app, session_factory=factory, sender=outbox)
    return Demo(events, outbox, world, factory)


def test_the_seed_events_run_on_a_real_worker_and_send_exactly_the_expected_messages(  # noqa: PLR0915
    demo: Demo, celery_app: Celery
) -> None:
    with Runs() as runs, worker(celery_app):
        receipts = [demo.events.emit(key, **cuids) for key, cuids in seed.emits(demo.world)]
        results = runs.wait(*receipts)

    by_event: dict[str, list[Any]] = {}
    for message in demo.outbox.messages:
        by_event.setdefault(message.message.event_key, []).append(message)

    def only(key: str) -> Any:
        assert len(by_event[key]) == 1, by_event[key]
        return by_event[key][0].message

    acme, w = "https://acme.acme.test", demo.world
    m = only("inventory_model_created")
    assert (m.template, m.to) == ("inventory-model-created", "owen@acme.test")
    assert dict(m.template_model) == {
        "subject": "New model in Acme Risk: Retail Credit PD Model",
        "org_name": "Acme Risk",
        "actor_name": "Ada Lovelace",
        "model_name": "Retail Credit PD Model",
        "owner_name": "Owen Ortiz",
        "url": f"{acme}/models/{w.credit_model}",
    }
    m = only("organization_user_added")
    assert (m.template, m.to) == ("organization-user-added", "noah@acme.test")
    assert dict(m.template_model) == {
        "subject": "You were added to Acme Risk",
        "org_name": "Acme Risk",
        "actor_name": "Ada Lovelace",
        "member_name": "Noah Fischer",
        "url": f"{acme}/",
    }
    m = only("model_user_deleted")
    assert (m.template, m.to) == ("model-user-deleted", "priya@acme.test")
    assert m.template_model["subject"] == "You were removed from Retail Credit PD Model"
    assert m.template_model["stakeholder_name"] == "Priya Raman"
    assert m.template_model["role"] == "reviewer"
    m = only("model_user_added")
    assert (m.template, m.to) == ("model-user-added", "sam@acme.test")
    assert m.template_model["subject"] == "You were added to Retail Credit PD Model as developer"
    m = only("user_invited")
    assert (m.template, m.to) == ("user-invited", "jordan@partner.test")
    assert dict(m.template_model) == {
        "subject": "Ada Lovelace invited you to Acme Risk",
        "org_name": "Acme Risk",
        "actor_name": "Ada Lovelace",
        "role": "validator",
        "url": f"{acme}/invitations/{w.invitation}",
    }
    m = only("model_finding_created")
    assert (m.template, m.to) == ("model-finding-created", "owen@acme.test")
    assert dict(m.template_model) == {
        "subject": "New finding in Acme Risk: PD backtest does not cover the 2025 default cohort",
        "org_name": "Acme Risk",
        "actor_name": "Vera Nakamura",
        "finding_title": "PD backtest does not cover the 2025 default cohort",
        "severity": "high",
        "model_name": "Retail Credit PD Model",
        "url": f"{acme}/findings/{w.finding}",
    }
    comments = by_event["model_comment_added"]
    assert sorted(c.to for c in comments) == ["owen@acme.test", "priya@acme.test", "sam@acme.test"]
    assert {c.subject for c in comments} == {"Vera Nakamura commented on Retail Credit PD Model"}
    assert comments[0].message.template_model["section"] == "Calibration"
    m = only("workflow_transition_user_action")
    assert (m.template, m.to) == ("workflow-transition-user-action", "vera@acme.test")
    assert m.template_model["subject"] == (
        "Action needed on Retail Credit PD Model: Pending Approval"
    )
    assert m.template_model["assignee_name"] == "Vera Nakamura"
    m = only("workflow_transition_status_set")
    assert (m.template, m.to) == ("workflow-transition-status-set", "owen@acme.test")
    assert m.template_model["subject"] == "Retail Credit PD Model is now Approved"
    broadcast = by_event["broadcast_notification"]
    assert len(broadcast) == 31
    assert len({b.to for b in broadcast}) == 31
    assert {b.subject for b in broadcast} == {"[Acme Risk] Model inventory maintenance on Saturday"}
    assert "inventory_model_monitoring_breach" not in by_event
    assert len(demo.outbox) == 1 + 1 + 1 + 1 + 1 + 1 + 3 + 1 + 1 + 31

    for message in demo.outbox.messages:
        m = message.message
        assert m.from_ == "Acme Notifications <notifications@acme.test>"
        assert m.message_stream == "outbound"
        assert m.tag == m.event_key
        assert m.metadata == {"event_id": m.event_id}

    breach, missing = results[9], results[11]
    assert [(o.status, o.reason) for o in breach.outcomes] == [(Status.SKIPPED, Reason.TOGGLE_OFF)]
    assert "inventory_model_monitoring_breach" in breach.outcomes[0].detail
    assert [(o.status, o.reason) for o in missing.outcomes] == [
        (Status.SKIPPED, Reason.ENTITY_MISSING)
    ]
    assert missing.outcomes[0].detail == "finding: no Finding with cuid='c-deleted-finding'"
    assert demo.log(receipts[9].event_id) == [("", "skipped", "toggle_off")]
    assert demo.log(receipts[0].event_id) == [("owen@acme.test", "sent", "sent")]
    assert len(demo.log(receipts[10].event_id)) == 31


def test_old_positional_call_sites_keep_working_under_the_seed_task_names(
    demo: Demo, celery_app: Celery
) -> None:
    task = celery_app.tasks["tasks.notifications.email.on_model_finding_created"]
    with Runs() as runs, worker(celery_app):
        result = task.delay(demo.world.acme_validator, demo.world.acme_org, demo.world.finding)
        (run,) = runs.wait(result.id)
    assert [o.recipient for o in run.with_status(Status.SENT)] == ["owen@acme.test"]
    assert run.event_id == result.id


def test_a_redelivered_emit_sends_nothing_twice(demo: Demo) -> None:
    cuids = dict(seed.emits(demo.world)[6][1])
    first = demo.events.run("model_comment_added", "event-1", **cuids)
    again = demo.events.run("model_comment_added", "event-1", **cuids)
    assert len(first.with_status(Status.SENT)) == 3
    assert [(o.status, o.reason) for o in again.outcomes] == [
        (Status.SKIPPED, Reason.ALREADY_RECORDED)
    ] * 3
    assert all("already sent" in o.detail for o in again.outcomes)
    assert len(demo.outbox) == 3


def test_toggle_switched_back_on_sends_again(demo: Demo) -> None:
    key, cuids = seed.emits(demo.world)[9]
    with demo.session_factory() as session:
        demo.events.set_toggle(
            session, demo.world.globex_org, "inventory_model_monitoring_breach", enabled=True
        )
        session.commit()
    result = demo.events.run(key, "event-2", **cuids)
    assert sorted(o.recipient for o in result.with_status(Status.SENT)) == [
        "lisa@globex.test",
        "marge@globex.test",
    ]


def test_always_events_ignore_an_org_toggle_of_the_same_name(demo: Demo) -> None:
    key, cuids = seed.emits(demo.world)[4]
    with demo.session_factory() as session:
        demo.events.set_toggle(session, demo.world.acme_org, "user_invited", enabled=False)
        session.commit()
    result = demo.events.run(key, "event-3", **cuids)
    assert [o.recipient for o in result.with_status(Status.SENT)] == ["jordan@partner.test"]


def test_a_recipient_with_no_address_is_a_recorded_skip_naming_the_expression(demo: Demo) -> None:
    with demo.session_factory() as session:
        transition = session.scalars(
            sa.select(models.WorkflowTransition).where(
                models.WorkflowTransition.cuid == demo.world.transition_user_action
            )
        ).one()
        transition.assignee = None
        session.commit()
    key, cuids = seed.emits(demo.world)[7]  # workflow_transition_user_action -> assignee
    result = demo.events.run(key, "event-4", **cuids)
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == (Status.SKIPPED, Reason.NO_RECIPIENTS)
    assert "to {transition.assignee.email}" in outcome.detail
    assert "no address (None)" in outcome.detail
    assert demo.log("event-4") == [("", "skipped", "no_recipients")]
    assert len(demo.outbox) == 0


def test_a_malformed_address_is_skipped_and_the_other_recipients_still_get_theirs(
    demo: Demo,
) -> None:
    with demo.session_factory() as session:
        sam = session.scalars(sa.select(models.User).where(models.User.email == "sam@acme.test"))
        sam.one().email = "sam at acme"
        session.commit()
    key, cuids = seed.emits(demo.world)[6]  # the comment: owen, priya, sam
    result = demo.events.run(key, "event-5", **cuids)
    assert sorted(o.recipient for o in result.with_status(Status.SENT)) == [
        "owen@acme.test",
        "priya@acme.test",
    ]
    (skipped,) = result.with_status(Status.SKIPPED)
    assert (skipped.reason, skipped.recipient) == (Reason.INVALID_RECIPIENT, "sam at acme")
    assert ("sam at acme", "skipped", "invalid_recipient") in demo.log("event-5")


def test_an_application_callable_that_raises_is_recorded_and_reraised(demo: Demo) -> None:
    def site_url(org: models.Organization) -> str:
        raise RuntimeError(f"no site for {org.slug}")

    events = EmailEvents(
        REGISTRY,
        celery=memory_app(),
        session_factory=demo.session_factory,
        sender=demo.outbox,
        context={"site_url": site_url},
        set_default=False,
    )
    key, cuids = seed.emits(demo.world)[1]
    with pytest.raises(RuntimeError, match="no site for acme"):
        events.run(key, "event-7", **cuids)
    assert demo.log("event-7") == [("", "failed", "application_error")]
    assert len(demo.outbox) == 0


def test_every_outcome_is_logged_with_the_event_key_and_id(
    demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    key, cuids = seed.emits(demo.world)[11]  # the missing finding
    with caplog.at_level("INFO", logger="emailevents"):
        demo.events.run(key, "event-8", **cuids)
    (record,) = [r for r in caplog.records if r.name == "emailevents"]
    assert record.event_key == "model_finding_created"  # type: ignore[attr-defined]
    assert record.event_id == "event-8"  # type: ignore[attr-defined]
    assert record.reason == "entity_missing"  # type: ignore[attr-defined]
    assert "event=model_finding_created event_id=event-8 status=skipped" in record.getMessage()


def test_line_breaks_in_an_entity_value_reach_postmark_as_spaces_in_the_subject_only(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    # CR LF would end the Subject header; \x0b and \u2028 are line breaks to some mail clients.
    title = "PD backtest\r\nmisses\x0bthe 2025\u2028cohort\n"
    factory, world = seed_database(db_engine)
    with factory.begin() as session:
        finding = session.scalars(
            sa.select(models.ModelFinding).where(models.ModelFinding.cuid == world.finding)
        ).one()
        finding.title = title
    events = demo_events(
        celery=celery_app,
        session_factory=factory,
        sender=PostmarkSender("test-token", api_url=fake_postmark.url, timeout=5),
    )
    key, cuids = seed.emits(world)[5]
    with Runs() as runs, worker(celery_app):
        (result,) = runs.wait(events.emit(key, **cuids))
    assert [(o.status, o.recipient) for o in result.outcomes] == [(Status.SENT, "owen@acme.test")]
    (received,) = fake_postmark.messages
    subject = "New finding in Acme Risk: PD backtest misses the 2025 cohort"
    assert received.request["TemplateModel"]["subject"] == subject
    assert received.subject == subject  # the template's Subject, as the server rendered it
    assert received.request["TemplateModel"]["finding_title"] == title  # a body keeps its lines


# --- a callable is never sent -----------------------------------------------------------------

# Paths whose end the registry cannot type (a property's value, a JSON column, a context
# callable's result) are checked when rendered: a method there is an error, not its repr.
SHOUTED = """\
version: 1

defaults:
  from: "Acme <notifications@acme.test>"

entities:
  User: tests.registry_app.models:User
  Organization: tests.registry_app.models:Organization
  Project: {model: "tests.registry_app.models:Project", key: ref}

events:
  project_shouted:
    toggle: always
    template: project-shouted
    entities: {user: User, org: Organization, project: Project}
    subject: "{project.title} by {user.display_name}"
    to: ["{project.owner.email}"]
    data:
      shout: "{site_url}"
"""
SHOUTED_TEMPLATE = {
    "Name": "Project shouted",
    "Alias": "project-shouted",
    "Subject": "{{subject}}",
    "TextBody": "{{shout}}",
}
METHOD = (
    "is a built-in function or method, not a value; expressions never call what they name "
    "(give the value itself, from a context callable or `build:`)"
)


def shouted_events(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark, old: str, new: str
) -> tuple[EmailEvents, dict[str, str], sessionmaker[Session]]:
    """The SHOUTED registry with ``old`` replaced by ``new``, sending to ``fake_postmark``."""
    assert old in SHOUTED
    registry = parse_registry(SHOUTED.replace(old, new), filename="events.yaml")
    world = create_world(db_engine)
    fake_postmark.add_template(SHOUTED_TEMPLATE)
    events = EmailEvents(
        registry,
        celery=celery_app,
        session_factory=world.factory,
        sender=PostmarkSender("test-token", api_url=fake_postmark.url, timeout=5),
        context={"site_url": app_hooks.site_url},
        set_default=False,
    )
    events.create_tables(db_engine)
    return events, world.cuids(), world.factory


def log_of(factory: sessionmaker[Session], event_id: str) -> list[tuple[str, str, str]]:
    with factory() as session:
        rows = session.execute(
            sa.select(deliveries.c.recipient, deliveries.c.status, deliveries.c.reason)
            .where(deliveries.c.event_id == event_id)
            .order_by(deliveries.c.recipient)
        )
        return [tuple(row) for row in rows]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (("by {user.display_name}", "by {user.display_name.upper}"), "user.display_name.upper"),
        (('"{site_url}"', '"Visit {site_url.upper}"'), "site_url.upper"),
        (('"{site_url}"', '"{site_url.upper}"'), "site_url.upper"),
        (('"{site_url}"', '"{project.settings.keys}"'), "project.settings.keys"),
    ],
    ids=["a property in the subject", "a context callable in text", "alone", "a JSON column"],
)
def test_a_path_that_renders_to_a_method_fails_the_emit_and_sends_nothing(
    db_engine: sa.Engine,
    celery_app: Celery,
    fake_postmark: FakePostmark,
    change: tuple[str, str],
    path: str,
) -> None:
    events, cuids, factory = shouted_events(db_engine, celery_app, fake_postmark, *change)
    with Runs() as runs, worker(celery_app):
        (result,) = runs.wait(events.emit("project_shouted", **cuids))
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == (Status.FAILED, Reason.INVALID_PAYLOAD)
    assert outcome.detail == f"{{{path}}} {METHOD}"
    assert fake_postmark.requests == []
    assert log_of(factory, result.event_id) == [("", "failed", "invalid_payload")]


def test_a_recipient_path_that_renders_to_a_method_is_skipped_and_the_others_get_theirs(
    db_engine: sa.Engine, celery_app: Celery, fake_postmark: FakePostmark
) -> None:
    events, cuids, factory = shouted_events(
        db_engine,
        celery_app,
        fake_postmark,
        '["{project.owner.email}"]',
        '["{project.owner.email}", "{user.display_name.lower}"]',
    )
    with Runs() as runs, worker(celery_app):
        (result,) = runs.wait(events.emit("project_shouted", **cuids))
    (skipped,) = result.with_status(Status.SKIPPED)
    assert skipped.reason is Reason.INVALID_RECIPIENT
    assert skipped.recipient.startswith("<to[1] {user.display_name.lower}")
    assert f"{{user.display_name.lower}} {METHOD}" in skipped.detail
    (received,) = fake_postmark.messages
    assert received.to == "owen@acme.test"
    assert received.subject == "Retail Credit PD by Ada Lovelace"
    assert received.text_body == "https://org-acme.acme.test"
    assert log_of(factory, result.event_id) == [
        (skipped.recipient, "skipped", "invalid_recipient"),
        ("owen@acme.test", "sent", "sent"),
    ]
