"""EmailEvents and emit(): one task per event; arguments checked before anything is queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

import emailevents
from emailevents import (
    ConfigurationError,
    EmailEvents,
    EmailEventsError,
    EmitArgumentError,
    EmitValueError,
    OutboxSender,
    RegistryError,
    Status,
    UnknownEventError,
)
from emailevents.demo import hooks
from emailevents.demo.run import REGISTRY
from emailevents.registry import parse_registry
from emailevents.testing import memory_app
from tests.registry_app import hooks as registry_hooks
from tests.registry_app import models as registry_models
from tests.registry_app.world import create_world
from tests.test_registry import VALID

CUIDS = {"user": "cu1", "org": "co1", "finding": "cf1"}


@pytest.fixture
def events(tmp_path: Path, celery_app: Celery) -> EmailEvents:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    return EmailEvents(
        REGISTRY,
        celery=celery_app,
        session_factory=sessionmaker(engine),
        sender=OutboxSender(),
        context={"site_url": hooks.site_url},
        set_default=False,
    )


def test_one_task_per_event_under_the_registry_task_names(
    events: EmailEvents, celery_app: Celery
) -> None:
    names = {event.task_name for event in events.events.values()}
    assert len(names) == 11
    assert names <= set(celery_app.tasks)
    task = celery_app.tasks["tasks.notifications.email.on_model_finding_created"]
    assert task.acks_late is True
    assert task.ignore_result is True


def test_emit_publishes_by_name_and_returns_the_event_id_as_the_task_id(
    events: EmailEvents, published: list[dict[str, Any]]
) -> None:
    receipt = events.emit("model_finding_created", **CUIDS)
    assert receipt.event_key == "model_finding_created"
    assert receipt.task_name == "tasks.notifications.email.on_model_finding_created"
    (message,) = published
    assert message["headers"]["id"] == receipt.event_id
    args, kwargs, _ = message["body"]
    assert (args, kwargs) == ((), CUIDS) or (list(args), kwargs) == ([], CUIDS)


def test_positional_delay_is_published_by_entity_name_in_declared_order(
    events: EmailEvents, celery_app: Celery, published: list[dict[str, Any]]
) -> None:
    task = celery_app.tasks["tasks.notifications.email.on_model_finding_created"]
    task.delay("cu1", "co1", "cf1")
    _, kwargs, _ = published[0]["body"]
    assert list(kwargs.items()) == list(CUIDS.items())


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda e: e.emit("model_finding_create", **CUIDS),
            UnknownEventError,
            "unknown email event 'model_finding_create'; did you mean 'model_finding_created'?",
        ),
        (
            lambda e: e.emit("model_finding_created", user="u", org="o"),
            EmitArgumentError,
            "event 'model_finding_created' is missing finding (it takes user, org, finding)",
        ),
        (
            lambda e: e.emit("model_finding_created", **CUIDS, findings="x"),
            EmitArgumentError,
            "has no entity 'findings'; did you mean 'finding'?",
        ),
        (
            lambda e: e.emit("model_finding_created", **{**CUIDS, "org": 7}),
            EmitArgumentError,
            "'org' must be a CUID string, got int (pass org=obj.cuid, not the object)",
        ),
        (
            lambda e: e.emit("model_finding_created", **{**CUIDS, "org": ""}),
            EmitValueError,
            "'org' is not a CUID: ''",
        ),
        (
            lambda e: e.emit("model_finding_created", **{**CUIDS, "org": " co1"}),
            EmitValueError,
            "'org' is not a CUID",
        ),
        (
            lambda e: e.emit("model_finding_created", **{**CUIDS, "org": "x" * 256}),
            EmitValueError,
            "longer than 255 characters",
        ),
        (
            lambda e: e.emit("model_finding_created", **{**CUIDS, "org": "co\x001"}),
            EmitValueError,
            "'org' is not a CUID: 'co\\x001' holds '\\x00' (a control character or lone surrogate)",
        ),
        (
            lambda e: e.emit("model_finding_created", **{**CUIDS, "finding": "cf\ud8001"}),
            EmitValueError,
            "'finding' is not a CUID: 'cf\\ud8001' holds '\\ud800'",
        ),
        (
            lambda e: e.tasks["model_finding_created"].delay("a", "b\x07b", "c"),
            EmitValueError,
            "'org' is not a CUID",
        ),
        (
            lambda e: e.tasks["model_finding_created"].delay("a", "b"),
            EmitArgumentError,
            "is missing finding",
        ),
        (
            lambda e: e.tasks["model_finding_created"].delay("a", "b", "c", "d"),
            EmitArgumentError,
            "takes 3 CUIDs (user, org, finding), got 4 positional",
        ),
        (
            lambda e: e.tasks["model_finding_created"].delay("a", "b", "c", user="u"),
            EmitArgumentError,
            "'user' given both by position and by name",
        ),
    ],
)
def test_bad_emits_raise_a_clear_error_and_queue_nothing(
    events: EmailEvents,
    published: list[dict[str, Any]],
    call: Any,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error) as raised:
        call(events)
    assert message in str(raised.value)
    assert isinstance(raised.value, EmailEventsError)
    assert published == []


def test_emit_errors_also_are_the_builtin_they_resemble() -> None:
    assert issubclass(UnknownEventError, LookupError)
    assert issubclass(EmitArgumentError, TypeError)
    assert issubclass(EmitValueError, ValueError)
    assert issubclass(RegistryError, ValueError)


def test_module_level_emit_uses_the_latest_default_instance(
    tmp_path: Path, published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("emailevents.engine._default", None)
    with pytest.raises(ConfigurationError, match="needs an EmailEvents instance"):
        emailevents.emit("model_finding_created", **CUIDS)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    EmailEvents(
        REGISTRY,
        celery=memory_app(),
        session_factory=sessionmaker(engine),
        sender=OutboxSender(),
        context={"site_url": hooks.site_url},
    )
    receipt = emailevents.emit("model_finding_created", **CUIDS)
    assert published[0]["headers"]["id"] == receipt.event_id


def test_a_second_engine_on_the_same_app_cannot_silently_shadow_the_first(
    events: EmailEvents, celery_app: Celery
) -> None:
    with pytest.raises(ConfigurationError, match="already has a task named"):
        EmailEvents(
            REGISTRY,
            celery=celery_app,
            session_factory=events.session_factory,
            sender=OutboxSender(),
            context={"site_url": hooks.site_url},
            set_default=False,
        )


def test_missing_context_values_are_reported_with_their_positions(celery_app: Celery) -> None:
    with pytest.raises(RegistryError) as raised:
        EmailEvents(
            REGISTRY,
            celery=celery_app,
            session_factory=sessionmaker(),
            sender=OutboxSender(),
            set_default=False,
        )
    problems = raised.value.problems
    assert len(problems) == sum(
        1 for line in REGISTRY.read_text().splitlines() if "{site_url}" in line
    )
    first = problems[0]
    assert first.file == str(REGISTRY)
    line = REGISTRY.read_text().splitlines()[first.line - 1]
    assert line[first.column - 1 :].startswith("{site_url}")
    assert "'site_url' is neither an entity of event" in first.message


def test_a_context_callable_asking_for_a_name_the_event_lacks_is_rejected(
    celery_app: Celery,
) -> None:
    def site_url(org: Any, reviewer: Any) -> str:
        return ""

    with pytest.raises(RegistryError, match="takes 'reviewer'"):
        EmailEvents(
            REGISTRY,
            celery=celery_app,
            session_factory=sessionmaker(),
            sender=OutboxSender(),
            context={"site_url": site_url},
            set_default=False,
        )


def test_a_method_named_on_a_plain_context_value_is_refused_when_the_engine_is_built(
    tmp_path: Path, celery_app: Celery
) -> None:
    registry = tmp_path / "events.yaml"
    registry.write_text(VALID.replace('home: "{site_url}"', 'home: "{site_url.upper}"'))
    with pytest.raises(RegistryError) as raised:
        EmailEvents(
            registry,
            celery=celery_app,
            session_factory=sessionmaker(),
            sender=OutboxSender(),
            context={"site_url": "https://acme.test"},
            set_default=False,
        )
    (problem,) = raised.value.problems
    assert str(problem).startswith(f"{registry}:")
    assert problem.message == (
        "events.project_created.data.home: {site_url.upper}: str.upper is a method; "
        "expressions cannot call it"
    )
    assert problem.hint == (
        "give the value itself as a context value, or a context callable that returns it"
    )
    assert celery_app.tasks.get("tasks.email.on_project_created") is None  # nothing registered


def per_project(project: registry_models.Project, session: Session) -> str:
    """A context callable that takes an entity and the run's session."""
    assert session.get(registry_models.Project, project.id) is project
    return f"https://{project.ref}.acme.test"


@pytest.mark.parametrize(
    ("site_url", "expected"),
    [
        ("https://acme.test", "https://acme.test"),
        (registry_hooks.site_url, "https://org-acme.acme.test"),
        (per_project, "https://p-1.acme.test"),
    ],
    ids=["a plain value", "a callable taking an entity", "a callable taking session too"],
)
def test_a_context_value_or_callable_taking_entity_names_is_what_the_event_renders(
    tmp_path: Path, site_url: Any, expected: str
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    world = create_world(engine)
    outbox = OutboxSender()
    events = EmailEvents(
        parse_registry(VALID, filename="events.yaml"),
        celery=memory_app(),
        session_factory=world.factory,
        sender=outbox,
        context={"site_url": site_url},
        set_default=False,
    )
    events.create_tables(engine)
    result = events.run("project_created", "ev-1", **world.cuids())
    assert [(o.status, o.recipient) for o in result.outcomes] == [(Status.SENT, "owen@acme.test")]
    (sent,) = outbox.messages
    model = sent.message.template_model
    assert (model["home"], model["url"]) == (expected, f"{expected}/projects/p-1")
    engine.dispose()
