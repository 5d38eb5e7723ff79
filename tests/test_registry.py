"""events.yaml -> Registry: what compiles, and every mistake reported at once, where it is written.

Positions are computed from the YAML text of each test with :func:`at`, so a test states the
place it means ("the 'Usr' after 'user: '") rather than a number that goes stale.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import JsonValue, ValidationError

from emailevents.errors import EmailEventsError, Problem, RegistryError
from emailevents.registry import Category, EventSpec, Registry, load_registry, parse_registry
from tests.conftest import examples
from tests.registry_app import hooks, models

FILE = "events.yaml"

VALID = """\
version: 1

defaults:
  from: "Acme <notifications@acme.test>"
  message_stream: outbound
  org: org
  toggles: tests.registry_app.hooks:email_enabled

entities:
  User: tests.registry_app.models:User
  Organization: tests.registry_app.models:Organization
  Project: {model: "tests.registry_app.models:Project", key: ref}

events:
  project_created:
    toggle: project_created
    template: 12345678
    entities: {user: User, org: Organization, project: Project}
    subject: "New project in {org.name}: {project.title}"
    to: "{project.owner.email}"
    data:
      title: "{project.title}"
      budget: "{project.budget}"
      score: "{project.score}"
      reviewer_name: "{project.reviewer.full_name}"
      stage: "{project.stage}"
      settings: "{project.settings}"
      created_at: "{project.created_at}"
      founded: "{org.founded}"
      actor: "{user.display_name}"
      domain: "{user.domain}"
      url: "{site_url}/projects/{project.ref}"
      home: "{site_url}"
    task: tasks.email.on_project_created

  member_welcome:
    toggle: always
    template: member-welcome
    entities: {org: Organization, member: User}
    subject: Welcome to {org.name}
    recipients: tests.registry_app.hooks:org_members
    build: tests.registry_app.hooks:extras_for_org
"""


# --- helpers ------------------------------------------------------------------------------


def at(text: str, target: str, *, after: str = "", nth: int = 1) -> tuple[int, int]:
    """1-based (line, column) of ``target`` where it follows ``after`` (its ``nth`` occurrence)."""
    index = -1
    for _ in range(nth):
        index = text.index(after + target, index + 1)
    index += len(after)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def edit(text: str, old: str, new: str) -> str:
    """``text`` with the one occurrence of ``old`` replaced (a test edits what it means to)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(RegistryError) as caught:
        parse_registry(text, filename=FILE)
    return list(caught.value.problems)


def places(problems: list[Problem]) -> list[tuple[int, int]]:
    return [(p.line, p.column) for p in problems]


def only_problem(text: str) -> Problem:
    problems = problems_of(text)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def compiled(text: str = VALID) -> Registry:
    return parse_registry(text, filename=FILE)


def with_note(text: str = VALID) -> str:
    """``text`` whose ``project_created`` also has a ``note`` (tests.registry_app.models:Note)."""
    text = edit(
        text, "  Project: {model", "  Note: tests.registry_app.models:Note\n  Project: {model"
    )
    return edit(text, "project: Project}", "project: Project, note: Note}")


# --- a valid registry ---------------------------------------------------------------------


def test_a_valid_registry_compiles_every_event_in_the_order_written() -> None:
    registry = compiled()
    assert registry.source == FILE
    assert registry.version == 1
    assert list(registry.events) == ["project_created", "member_welcome"]


def test_task_names_default_to_emailevents_dot_key_unless_task_is_given() -> None:
    events = compiled().events
    assert events["project_created"].task_name == "tasks.email.on_project_created"
    assert events["member_welcome"].task_name == "emailevents.member_welcome"


def test_toggle_always_compiles_to_none_and_a_key_is_kept() -> None:
    events = compiled().events
    assert events["project_created"].toggle == "project_created"
    assert events["member_welcome"].toggle is None


def test_event_entities_keep_the_order_written_and_resolve_their_types() -> None:
    registry = compiled()
    event = registry.events["project_created"]
    assert event.entity_names == ("user", "org", "project")
    assert [(name, t.model, t.key) for name, t in event.entities] == [
        ("user", models.User, "cuid"),
        ("org", models.Organization, "cuid"),
        ("project", models.Project, "ref"),
    ]
    assert registry.events["member_welcome"].entity_names == ("org", "member")
    assert list(registry.entity_types) == ["User", "Organization", "Project"]


def test_defaults_reach_every_event_and_org_names_the_organization_entity() -> None:
    registry = compiled()
    assert registry.toggles is hooks.email_enabled
    for event in registry.events.values():
        assert event.from_ == "Acme <notifications@acme.test>"
        assert event.message_stream == "outbound"
        assert event.org == "org"


def test_templates_are_ids_or_aliases_as_written() -> None:
    events = compiled().events
    assert events["project_created"].template == 12345678
    assert events["member_welcome"].template == "member-welcome"


def test_recipients_and_build_callables_are_bound_to_the_names_they_take() -> None:
    event = compiled().events["member_welcome"]
    assert event.recipients is not None
    assert event.recipients.func is hooks.org_members
    assert event.recipients.params == ("org", "session")
    assert event.build is not None
    assert event.build.params == ("org",)
    assert event.to == ()


def test_expressions_are_compiled_once_with_their_fields() -> None:
    event = compiled().events["project_created"]
    assert event.subject is not None
    assert event.subject.template.source == "New project in {org.name}: {project.title}"
    assert [e.field for e in event.to] == ["to"]
    assert [e.field for e in event.data][:2] == ["data.title", "data.budget"]
    assert event.context_names == frozenset({"site_url"})


def test_the_payload_model_types_each_value_by_what_its_path_leads_to() -> None:
    fields = compiled().events["project_created"].payload_model.model_fields
    annotations = {name: f.annotation for name, f in fields.items()}
    assert annotations == {
        "subject": str,
        "title": str,
        "budget": Decimal,
        "score": float | None,  # a nullable column
        "reviewer_name": str | None,  # through a nullable relationship
        "stage": models.Stage,
        "settings": JsonValue,  # a JSON column holds any JSON value, not only dicts
        "created_at": dt.datetime,
        "founded": dt.date | None,
        "actor": JsonValue,  # a property: not known until read
        "domain": JsonValue,  # a hybrid property
        "url": str,  # text around a path
        "home": JsonValue,  # a context value
    }


def test_the_payload_model_requires_every_value_and_a_non_empty_subject() -> None:
    model = compiled().events["member_welcome"].payload_model
    assert list(model.model_fields) == ["subject"]
    assert model.model_validate({"subject": "Hi", "extra": 1}).model_dump() == {
        "subject": "Hi",
        "extra": 1,
    }  # extras allowed: `build:` adds them
    with pytest.raises(ValidationError):
        model.model_validate({"subject": ""})


def test_the_payload_model_forbids_values_nobody_declared_without_build() -> None:
    model = compiled().events["project_created"].payload_model
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate({"unexpected": 1})


def test_template_variables_named_like_pydantic_attributes_keep_their_names() -> None:
    text = edit(
        VALID,
        '      home: "{site_url}"\n',
        '      home: "{site_url}"\n'
        '      json: "{org.seats}"\n'
        '      copy: "{org.name}"\n'
        '      model_config: "{org.name}"\n'
        '      model_validate: "x {org.name}"\n',
    )
    model = compiled(text).events["project_created"].payload_model
    values: dict[str, Any] = dict.fromkeys(("score", "reviewer_name", "founded"))
    values |= {"subject": "s", "title": "t", "budget": "1.5", "stage": "live"}
    values |= {"settings": {}, "created_at": "2024-05-01T10:00:00", "actor": "a", "domain": "d"}
    values |= {"url": "u", "home": "h", "json": 3, "copy": "c", "model_config": "m"}
    values |= {"model_validate": "v"}
    dumped = model.model_validate(values).model_dump(mode="json", by_alias=True)
    assert {k: dumped[k] for k in ("json", "copy", "model_config", "model_validate")} == {
        "json": 3,
        "copy": "c",
        "model_config": "m",
        "model_validate": "v",
    }


def test_a_payload_class_replaces_the_generated_model() -> None:
    text = edit(
        VALID,
        "    task: tasks.email.on_project_created\n",
        "    task: tasks.email.on_project_created\n"
        "    payload: tests.registry_app.hooks:ProjectPayload\n",
    )
    assert compiled(text).events["project_created"].payload_model is hooks.ProjectPayload


def test_a_payload_class_that_would_drop_or_lack_values_is_rejected() -> None:
    text = edit(
        VALID,
        "    task: tasks.email.on_project_created\n",
        "    task: tasks.email.on_project_created\n"
        "    payload: tests.registry_app.hooks:NarrowPayload\n",
    )
    problems = problems_of(text)
    dropped = [p for p in problems if "has no field" in p.message]
    assert [p.message.split("'")[1] for p in dropped] == [
        "budget",
        "score",
        "reviewer_name",
        "stage",
        "settings",
        "created_at",
        "founded",
        "actor",
        "domain",
        "url",
        "home",
    ]
    assert places(dropped[:1]) == [at(text, "budget:")]
    assert dropped[0].message == (
        "events.project_created: NarrowPayload has no field 'budget', so its value would be "
        "dropped from the TemplateModel"
    )
    (lacking,) = [p for p in problems if "requires" in p.message]
    assert lacking.message == (
        "events.project_created.payload: NarrowPayload requires 'sponsor', which the event's "
        "subject and data do not provide"
    )
    assert len(problems) == 12


def test_a_recipient_object_without_an_email_attribute_is_rejected() -> None:
    text = edit(VALID, '    to: "{project.owner.email}"\n', '    to: "{project}"\n')
    problem = only_problem(text)
    assert problem.message == (
        "events.project_created.to: {project} is an object of type Project, and Project has "
        "no `email` attribute to "
        "send to"
    )
    assert places([problem]) == [at(text, "{project}", after='to: "')]


def test_events_may_go_to_a_list_of_recipients_and_to_whole_objects() -> None:
    text = edit(
        VALID,
        '    to: "{project.owner.email}"\n',
        '    to: ["{project.owner}", "{org.members}", "Ops <ops@acme.test>", "{user.email}"]\n',
    )
    event = compiled(text).events["project_created"]
    assert [e.template.source for e in event.to] == [
        "{project.owner}",
        "{org.members}",
        "Ops <ops@acme.test>",
        "{user.email}",
    ]


def test_the_demo_registry_loads() -> None:
    registry = load_registry(Path(__file__).parents[1] / "events.yaml")
    assert len(registry.events) == 11


def test_load_registry_names_the_file_in_every_position(tmp_path: Path) -> None:
    path = tmp_path / "mail.yaml"
    path.write_text(edit(VALID, "version: 1", "version: 3"), encoding="utf-8")
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    assert str(caught.value).splitlines()[1] == (
        f"  {path}:1:10: unsupported version 3 (this emailevents reads version 1)"
    )


def test_an_unreadable_registry_file_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read the registry"):
        load_registry(tmp_path / "missing.yaml")


# --- RegistryError ------------------------------------------------------------------------


def test_registry_error_is_an_emailevents_error_and_a_value_error() -> None:
    assert issubclass(RegistryError, EmailEventsError)
    assert issubclass(RegistryError, ValueError)


def test_registry_error_lists_every_problem_as_file_line_column_message_hint() -> None:
    text = edit(VALID, "version: 1", "version: 2")
    text = edit(
        text, "entities: {org: Organization, member: User}", "entities: {org: Organisation}"
    )
    with pytest.raises(RegistryError) as caught:
        parse_registry(text, filename=FILE)
    version_line, version_column = at(text, "2", after="version: ")
    org_line, org_column = at(text, "Organisation}")
    assert str(caught.value).splitlines() == [
        "2 problems in the email registry:",
        (
            f"  {FILE}:{version_line}:{version_column}: unsupported version 2 "
            "(this emailevents reads version 1)"
        ),
        (
            f"  {FILE}:{org_line}:{org_column}: events.member_welcome.entities.org: "
            "unknown entity type 'Organisation' (did you mean 'Organization'?)"
        ),
    ]


# --- YAML itself ----------------------------------------------------------------------------


def test_yaml_syntax_errors_are_reported_where_they_are() -> None:
    text = edit(VALID, "  member_welcome:\n", "  member_welcome:\n\tfoo: 1\n")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "\t")
    assert problem.message == "invalid YAML: a tab in the indentation"
    assert problem.source_line == "\tfoo: 1"  # the rest in tests/test_yamlsyntax.py


def test_characters_yaml_refuses_are_reported_where_they_are() -> None:
    text = edit(VALID, "Welcome to", "Welcome\x07 to")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "\x07")
    assert "U+0007" in problem.message


def test_an_empty_registry_is_reported() -> None:
    assert str(only_problem("# nothing yet\n")) == f"{FILE}:1:1: the registry is empty"


def test_a_registry_that_is_not_a_mapping_is_reported() -> None:
    problem = only_problem("- version: 1\n")
    assert (problem.line, problem.column) == (1, 1)
    assert "must be a mapping" in problem.message


def test_several_yaml_documents_are_reported() -> None:
    text = VALID + "---\nversion: 1\n"
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "---")
    assert "single document" in problem.message


def test_absurdly_deep_nesting_is_reported_where_it_gets_too_deep() -> None:
    text = VALID + "  deep: " + "[" * 100 + "]" * 100 + "\n"
    problem = only_problem(text)
    # The root mapping, `events:` and 62 lists make 64 levels: the 63rd '[' is one too many.
    assert (problem.line, problem.column) == at(text, "[", after="deep: " + "[" * 62)
    assert problem.message == "invalid YAML: nested more than 64 levels deep"


def test_duplicate_keys_are_reported_at_every_level() -> None:
    text = edit(VALID, "version: 1\n", "version: 1\nversion: 1\n")
    text = edit(text, "  org: org\n", "  org: org\n  org: organization\n")
    text = edit(
        text,
        "  User: tests.registry_app.models:User\n",
        "  User: tests.registry_app.models:User\n  User: tests.registry_app.models:User\n",
    )
    text = edit(text, '      home: "{site_url}"\n', '      home: "{site_url}"\n      title: x\n')
    text = edit(text, "    subject: Welcome", "    subject: Hi\n    subject: Welcome")
    text += "  project_created:\n    toggle: always\n"
    problems = problems_of(text)
    assert places(problems) == [
        at(text, "version", nth=2),
        at(text, "org: organization"),
        at(text, "User:", nth=2),
        at(text, "title: x"),
        at(text, "subject: Welcome"),
        at(text, "project_created:", nth=2),
    ]
    assert problems[0].message == "duplicate key 'version' (first defined at line 1)"
    assert problems[0].hint == "YAML would silently keep only the last one"
    assert all(p.message.startswith("duplicate key") for p in problems)


def test_anchors_and_aliases_are_reported_where_each_is_written() -> None:
    text = edit(
        VALID,
        "  User: tests.registry_app.models:User\n",
        "  User: &user tests.registry_app.models:User\n  Member: *user\n",
    )
    problems = problems_of(text)
    assert places(problems) == [at(text, "&user"), at(text, "*user")]
    assert "anchors are not supported" in problems[0].message
    assert "aliases are not supported" in problems[1].message


def test_a_merge_key_is_reported_once() -> None:
    text = edit(
        VALID,
        "  member_welcome:\n    toggle: always\n",
        "  member_welcome:\n    <<: {toggle: always}\n    toggle: always\n",
    )
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "<<")


def test_yaml_tags_on_collections_are_reported() -> None:
    text = edit(
        VALID,
        "entities: {org: Organization, member: User}",
        "entities: !people {org: Organization, member: User}",
    )
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "!people")
    assert problem.message == "YAML tags are not supported in a registry (!people)"


def test_yaml_tags_on_values_the_safe_loader_cannot_build_are_reported() -> None:
    text = edit(VALID, "template: member-welcome", "template: !!python/name:os.system")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "!!python")
    assert problem.message.startswith("invalid value: could not determine a constructor")


# --- sections and fields ------------------------------------------------------------------


def test_unknown_fields_are_reported_at_every_level_with_the_nearest_name() -> None:
    text = edit(VALID, "version: 1\n", "version: 1\nverison: 1\n")
    text = edit(text, "  org: org\n", "  org: org\n  form: x@acme.test\n")
    text = edit(text, "key: ref}", "key: ref, kye: ref}")
    text = edit(text, "    subject: Welcome", "    subjet: Hi\n    subject: Welcome")
    problems = problems_of(text)
    assert places(problems) == [
        at(text, "verison"),
        at(text, "form:"),
        at(text, "kye"),
        at(text, "subjet"),
    ]
    assert [(p.message, p.hint) for p in problems] == [
        ("registry: unknown field 'verison'", "did you mean 'version'?"),
        ("defaults: unknown field 'form'", "did you mean 'from'?"),
        ("entities.Project: unknown field 'kye'", "did you mean 'key'?"),
        ("events.member_welcome: unknown field 'subjet'", "did you mean 'subject'?"),
    ]


def test_an_unknown_field_far_from_any_name_lists_the_allowed_ones() -> None:
    text = edit(VALID, "version: 1\n", "version: 1\nzzz: 1\n")
    problem = only_problem(text)
    assert problem.hint == "allowed: version, defaults, categories, entities, events"


@pytest.mark.parametrize("section", ["version", "defaults", "entities", "events"])
def test_a_missing_section_is_one_problem(section: str) -> None:
    order = ["version", "defaults", "entities", "events", None]
    start = VALID.index(f"{section}:")
    following = order[order.index(section) + 1]
    end = VALID.index(f"{following}:") if following else len(VALID)
    text = VALID[:start] + VALID[end:]
    problem = only_problem(text)
    assert (problem.line, problem.column) == (1, 1)
    assert problem.message == f"missing required section '{section}'"


@pytest.mark.parametrize(
    ("version", "shown"), [("2", "2"), ("'1'", "'1'"), ("1.0", "1.0"), ("", "None")]
)
def test_an_unsupported_version_is_reported_at_its_value(version: str, shown: str) -> None:
    text = edit(VALID, "version: 1\n", f"version: {version}\n")
    problem = only_problem(text)
    expected = at(text, version, after="version: ") if version else at(text, "version")
    assert (problem.line, problem.column) == expected
    assert problem.message == f"unsupported version {shown}"


def test_an_empty_section_says_so() -> None:
    text = edit(VALID, '  from: "Acme <notifications@acme.test>"\n', "")
    text = edit(text, "  message_stream: outbound\n  org: org\n", "")
    text = edit(text, "  toggles: tests.registry_app.hooks:email_enabled\n", "")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "defaults:")
    assert problem.message == "defaults: is empty"


def test_a_missing_from_is_reported_at_defaults() -> None:
    text = edit(VALID, '  from: "Acme <notifications@acme.test>"\n', "")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "defaults:")
    assert problem.message == "defaults: missing required field 'from'"


@pytest.mark.parametrize(
    "address", ["not an address", "a@acme.test, b@acme.test", "Acme <acme.test>", "x@"]
)
def test_an_invalid_from_address_is_reported_at_its_value(address: str) -> None:
    text = edit(VALID, '"Acme <notifications@acme.test>"', f'"{address}"')
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, f'"{address}"')
    assert problem.message.startswith("defaults.from: ")


def test_a_field_of_the_wrong_type_says_what_it_got() -> None:
    text = edit(VALID, "  message_stream: outbound", "  message_stream: [outbound]")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "[outbound]")
    assert problem.message == (
        "defaults.message_stream: Input should be a valid string (got a list)"
    )


# --- entity types -------------------------------------------------------------------------


def test_bad_module_attr_references_are_each_reported_with_what_is_wrong() -> None:
    text = edit(
        VALID,
        "  Project: {model",
        "  Malformed: tests.registry_app.models.User\n"
        "  NoModule: tests.registry_app.nothing:User\n"
        "  NoAttribute: tests.registry_app.models:Usr\n"
        "  RaisesOnImport: tests.registry_app.broken:Thing\n"
        "  Project: {model",
    )
    problems = problems_of(text)
    assert places(problems) == [
        at(text, "tests.registry_app.models.User"),
        at(text, "tests.registry_app.nothing"),
        at(text, "tests.registry_app.models:Usr"),
        at(text, "tests.registry_app.broken"),
    ]
    assert [p.message for p in problems] == [
        (
            "entities.Malformed: 'tests.registry_app.models.User' is not a "
            "'package.module:attribute' reference"
        ),
        (
            "entities.NoModule: cannot import module 'tests.registry_app.nothing': "
            "ModuleNotFoundError: No module named 'tests.registry_app.nothing'"
        ),
        (
            "entities.NoAttribute: 'tests.registry_app.models' has no attribute 'Usr' "
            "(did you mean 'User'?)"
        ),
        (
            "entities.RaisesOnImport: cannot import module 'tests.registry_app.broken': "
            "RuntimeError: registry_app.broken fails at import on purpose"
        ),
    ]


def test_a_reference_may_name_an_attribute_of_an_attribute() -> None:
    text = edit(
        VALID,
        "    recipients: tests.registry_app.hooks:org_members",
        "    recipients: tests.registry_app.hooks:Namespace.members",
    )
    recipients = compiled(text).events["member_welcome"].recipients
    assert recipients is not None
    assert recipients.func is hooks.org_members


def test_a_missing_attribute_of_an_attribute_is_named() -> None:
    text = edit(
        VALID,
        "    recipients: tests.registry_app.hooks:org_members",
        "    recipients: tests.registry_app.hooks:Namespace.membres",
    )
    problem = only_problem(text)
    assert problem.message == (
        "events.member_welcome.recipients: 'tests.registry_app.hooks:Namespace' has no "
        "attribute 'membres' (did you mean 'members'?)"
    )


def test_an_entity_type_must_be_a_mapped_class() -> None:
    text = edit(
        VALID,
        "  User: tests.registry_app.models:User",
        "  User: tests.registry_app.models:NotMapped",
    )
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "tests.registry_app.models:NotMapped")
    assert problem.message == (
        "entities.User: 'tests.registry_app.models:NotMapped' is not a SQLAlchemy mapped class"
    )


def test_an_entity_type_needs_the_column_it_is_loaded_by() -> None:
    text = edit(VALID, "key: ref}", "key: reff}")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "reff")
    assert problem.message == "entities.Project: Project has no column 'reff' to load it by"
    assert problem.hint == "did you mean 'ref'?"


def test_an_entity_type_without_key_is_loaded_by_cuid() -> None:
    text = edit(VALID, ", key: ref}", "}")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "Project:")
    assert "Project has no column 'cuid'" in problem.message


def test_an_entity_type_of_the_wrong_shape_says_what_to_write() -> None:
    text = edit(VALID, "  User: tests.registry_app.models:User", "  User: [1]")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "[1]")
    assert problem.message == "entities.User: must be a mapping of fields, not a list"
    assert "package.module:Class" in problem.hint


@pytest.fixture
def broken_mapper() -> Iterator[str]:
    """The reference of a mapped class SQLAlchemy cannot configure; forgotten afterwards."""
    yield "tests.registry_app.broken_mapper:Orphan"
    module = sys.modules.pop("tests.registry_app.broken_mapper", None)
    if module is not None:
        module.BrokenBase.registry.dispose()


def test_a_mapper_sqlalchemy_cannot_configure_is_a_problem_not_a_crash(
    broken_mapper: str,
) -> None:
    text = edit(VALID, "  User: tests.registry_app.models:User", f"  User: {broken_mapper}")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, broken_mapper)
    assert problem.message.startswith(
        f"entities.User: SQLAlchemy cannot configure '{broken_mapper}'"
    )
    assert "Nowhere" in problem.message


def test_a_broken_entity_type_is_reported_once_not_again_by_each_event_using_it() -> None:
    text = edit(
        VALID, "  User: tests.registry_app.models:User", "  User: tests.registry_app.models:Usr"
    )
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "tests.registry_app.models:Usr")


def test_an_invalid_entity_type_name_is_reported() -> None:
    text = edit(VALID, "  Project: {model", "  2Project: {model")
    text = edit(text, "project: Project}", "project: 2Project}")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "2Project:")


# --- events -------------------------------------------------------------------------------


def test_an_unknown_entity_type_is_reported_with_the_nearest_name() -> None:
    text = edit(VALID, "{user: User, org", "{user: Usr, org")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "Usr")
    assert problem.message == "events.project_created.entities.user: unknown entity type 'Usr'"
    assert problem.hint == "did you mean 'User'?"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("session", "is reserved"),
        ("subject", "is reserved"),
        ("class", "is a Python keyword, which emit() cannot take"),
        ("first-name", "is not a valid name"),
    ],
)
def test_entity_names_emit_cannot_take_are_reported(name: str, reason: str) -> None:
    text = edit(VALID, "{org: Organization, member: User}", f"{{org: Organization, {name}: User}}")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, name, after="Organization, ")
    assert problem.message == f"events.member_welcome.entities: entity name '{name}' {reason}"


def test_a_missing_toggle_is_reported_at_the_event_with_what_to_write() -> None:
    text = edit(VALID, "    toggle: always\n", "")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "member_welcome:")
    assert problem.message == "events.member_welcome: missing required field 'toggle'"
    assert problem.hint == "an org email-settings key like 'artifact_created', or `always`"


@pytest.mark.parametrize("value", ["", "~", "[a]", "'two words'", "''"])
def test_a_toggle_that_is_not_a_key_is_reported_at_its_value(value: str) -> None:
    text = edit(VALID, "    toggle: always\n", f"    toggle: {value}\n")
    problem = only_problem(text)
    expected = at(text, value, after="toggle: ") if value else at(text, "toggle", nth=3)
    assert (problem.line, problem.column) == expected
    assert problem.message.startswith("events.member_welcome.toggle: ")
    assert problem.hint == "an org email-settings key like 'artifact_created', or `always`"


def test_a_toggle_needs_the_organization_entity() -> None:
    text = edit(VALID, "{user: User, org: Organization, project", "{user: User, project")
    problem = only_problem(text)  # `{org.name}` is now a context value, checked later
    assert (problem.line, problem.column) == at(text, "{user: User, project")
    assert "toggle 'project_created' needs the organization" in problem.message
    assert problem.hint == "add `org: <OrganizationType>` or use `toggle: always`"


def test_defaults_org_names_the_organization_entity_toggles_need() -> None:
    text = edit(VALID, "  org: org\n", "  org: company\n")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "{user: User")
    assert "no entity named 'company'" in problem.message


@pytest.mark.parametrize("template", ["true", "0", "''", "1.5", "[1]", "~"])
def test_a_template_must_be_an_id_or_an_alias(template: str) -> None:
    text = edit(VALID, "    template: member-welcome", f"    template: {template}")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, template, after="template: ")
    assert problem.message.startswith("events.member_welcome.template: ")


def test_an_event_needs_to_or_recipients() -> None:
    text = edit(VALID, "    recipients: tests.registry_app.hooks:org_members\n", "")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "member_welcome:")
    assert problem.message == "events.member_welcome: says nobody to send to"


def test_an_event_may_not_have_both_to_and_recipients() -> None:
    text = edit(
        VALID,
        "    recipients: tests.registry_app.hooks:org_members\n",
        '    to: "{member.email}"\n    recipients: tests.registry_app.hooks:org_members\n',
    )
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "recipients:")
    assert problem.message == "events.member_welcome: give either `to:` or `recipients:`, not both"


@pytest.mark.parametrize("to", ["[]", "~", "5", "[5]"])
def test_to_must_be_an_expression_or_a_non_empty_list_of_them(to: str) -> None:
    text = edit(VALID, '    to: "{project.owner.email}"', f"    to: {to}")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, to, after="to: ")
    assert problem.message == (
        "events.project_created.to: must be an expression string or a non-empty list of them"
    )


def test_callables_that_take_names_the_event_lacks_are_reported() -> None:
    text = edit(
        VALID,
        "    recipients: tests.registry_app.hooks:org_members\n"
        "    build: tests.registry_app.hooks:extras_for_org\n",
        "    recipients: tests.registry_app.hooks:wants_colour\n"
        "    build: tests.registry_app.hooks:positional_only\n",
    )
    problems = problems_of(text)
    assert places(problems) == [
        at(text, "tests.registry_app.hooks:wants_colour"),
        at(text, "tests.registry_app.hooks:positional_only"),
    ]
    assert problems[0].message == (
        "events.member_welcome.recipients: 'tests.registry_app.hooks:wants_colour' takes "
        "'colour', which is not one of the names it can be given: member, org, session"
    )
    assert "positional-only parameter 'org'" in problems[1].message


def test_callables_may_take_session_and_optional_names() -> None:
    text = edit(
        VALID,
        "    build: tests.registry_app.hooks:extras_for_org\n",
        "    build: tests.registry_app.hooks:project_people\n",
    )
    problem = only_problem(text)  # project_people needs `project`, which member_welcome lacks
    assert "takes 'project'" in problem.message
    text = edit(
        VALID,
        "    task: tasks.email.on_project_created\n",
        "    task: tasks.email.on_project_created\n"
        "    build: tests.registry_app.hooks:project_people\n",
    )
    build = compiled(text).events["project_created"].build
    assert build is not None
    assert build.params == ("project", "user")


def test_a_callable_reference_must_be_callable() -> None:
    text = edit(
        VALID,
        "    recipients: tests.registry_app.hooks:org_members",
        "    recipients: tests.registry_app.hooks:NOT_CALLABLE",
    )
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "tests.registry_app.hooks:NOT_CALLABLE")
    assert problem.message == (
        "events.member_welcome.recipients: 'tests.registry_app.hooks:NOT_CALLABLE' is not callable"
    )


@pytest.mark.parametrize("payload", ["NotAModel", "NOT_CALLABLE", "org_members"])
def test_a_payload_must_be_a_pydantic_model_class(payload: str) -> None:
    ref = f"tests.registry_app.hooks:{payload}"
    text = edit(VALID, "    task: tasks.email.on", f"    payload: {ref}\n    task: tasks.email.on")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, ref)
    assert (
        problem.message == f"events.project_created.payload: '{ref}' is not a pydantic model class"
    )


def test_a_toggles_callable_must_take_session_org_and_toggle_key() -> None:
    ref = "tests.registry_app.hooks:toggles_without_key"
    text = edit(VALID, "tests.registry_app.hooks:email_enabled", ref)
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, ref)
    assert problem.message == (
        f"defaults.toggles: '{ref}' cannot be called as (session, org, toggle_key)"
    )


@pytest.mark.parametrize("task", ["tasks..email", "tasks email", "1tasks.email", "tasks.email."])
def test_an_invalid_task_name_is_reported(task: str) -> None:
    text = edit(VALID, "tasks.email.on_project_created", task)
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, task, after="task: ")
    assert problem.message == f"events.project_created.task: '{task}' is not a valid task name"


def test_two_events_with_one_task_name_are_reported_at_the_second() -> None:
    text = edit(
        VALID,
        "    build: tests.registry_app.hooks:extras_for_org\n",
        "    build: tests.registry_app.hooks:extras_for_org\n"
        "    task: tasks.email.on_project_created\n",
    )
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "tasks.email.on_project_created", nth=2)
    assert problem.message == (
        "events.member_welcome: task 'tasks.email.on_project_created' is already the task of "
        "event 'project_created'"
    )


def test_a_task_name_that_is_another_events_default_is_reported() -> None:
    text = edit(VALID, "tasks.email.on_project_created", "emailevents.member_welcome")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "member_welcome:")
    assert "'emailevents.member_welcome' is already the task of event 'project_created'" in (
        problem.message
    )


def test_an_invalid_event_key_is_reported_once() -> None:
    text = edit(VALID, "  member_welcome:", "  member-welcome:")
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "member-welcome:")
    assert problem.message == "events: 'member-welcome' is not an event key like 'finding_created'"


def test_data_names_must_be_template_variable_names() -> None:
    text = edit(VALID, '      home: "{site_url}"', '      home page: "{site_url}"')
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "home page")
    assert problem.message == (
        "events.project_created.data: 'home page' is not a template variable name"
    )


def test_data_may_not_set_subject_when_the_event_has_one() -> None:
    text = edit(VALID, '      home: "{site_url}"', '      subject: "{site_url}"')
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, 'subject: "{site_url}"')


def test_an_event_that_is_not_a_mapping_is_reported() -> None:
    text = VALID + "  extra_event: just text\n"
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "just text")
    assert problem.message == "events.extra_event: must be a mapping of fields, not a string"


# --- expressions in events ----------------------------------------------------------------


def test_expression_syntax_errors_point_at_the_character_in_the_yaml() -> None:
    text = edit(VALID, '"{project.title}"', '"{project.title()}"')
    text = edit(text, 'url: "{site_url}/projects', "url: '{site_url}}/projects")
    text = edit(text, '{project.ref}"', "{project.ref}'")
    text = edit(
        text, "subject: Welcome to {org.name}", "subject: Welcome to {org._sa_instance_state}"
    )
    problems = problems_of(text)
    assert places(problems) == [
        at(text, "(", after="{project.title"),
        at(text, "}", after="{site_url}"),
        at(text, "_sa_instance_state"),
    ]
    assert problems[0].message.startswith(
        "events.project_created.data.title: unexpected '(' in {project.title()}"
    )
    assert problems[1].message == (
        "events.project_created.data.url: unmatched '}' (write '}}' for a literal brace)"
    )
    assert problems[2].message == (
        "events.member_welcome.subject: '_sa_instance_state' starts with '_'; private "
        "attributes cannot be used"
    )


def test_an_expression_in_a_multi_line_or_escaped_scalar_is_reported_at_its_start() -> None:
    text = edit(
        VALID,
        '    subject: "New project in {org.name}: {project.title}"',
        "    subject: >-\n      New project in\n      {org.name}: {project.title()}",
    )
    text = edit(text, '"{project.title}"', '"\\u0041 {project.title"')
    problems = problems_of(text)
    assert places(problems) == [at(text, ">-"), at(text, '"\\u0041')]


def test_a_misspelt_attribute_is_reported_at_the_attribute_with_the_nearest_name() -> None:
    text = edit(VALID, '"{project.owner.email}"', '"{project.owner.emial}"')
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "emial")
    assert problem.message == (
        "events.project_created.to: {project.owner.emial}: User has no attribute 'emial' "
        "(did you mean 'email'?)"
    )


def test_a_misspelt_relationship_is_reported_at_it() -> None:
    text = edit(VALID, '"{project.reviewer.full_name}"', '"{project.reveiwer.full_name}"')
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, "reveiwer")
    assert "did you mean 'reviewer'?" in problem.message


def problem_at_fault(expression: str, at_fault: str) -> Problem:
    """The one problem of ``expression`` in the home data value, checked to point at
    ``at_fault``, the attribute where the path goes wrong."""
    text = edit(with_note(), '"{site_url}"', f'"x {expression}"')
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(
        text, at_fault, after=expression[: expression.index(at_fault)]
    )
    return problem


@pytest.mark.parametrize(
    ("expression", "at_fault", "message"),
    [
        ("{user.greeting}", "greeting", "User.greeting is a method; expressions cannot call it"),
        ("{user.is_in}", "is_in", "User.is_in is a method; expressions cannot call it"),
        ("{user.email.upper}", "upper", "str.upper is a method; expressions cannot call it"),
        ("{note.Stage}", "Stage", "Note.Stage is a class, not a value"),
        ("{user.email.lenght}", "lenght", "str has no attribute 'lenght'"),
        (
            "{org.members.email}",
            "members",
            "'members' is a collection; expressions cannot index or map over it",
        ),
    ],
)
def test_paths_to_methods_or_through_collections_are_reported_at_the_attribute(
    expression: str, at_fault: str, message: str
) -> None:
    problem = problem_at_fault(expression, at_fault)
    assert message in problem.message
    assert problem.message.startswith(f"events.project_created.data.home: {expression}: ")


@pytest.mark.parametrize(
    ("expression", "what"),
    [
        ("{project.owner}", "an object of type User"),
        ("{project}", "an object of type Project"),
        ("{org.members}", "a collection of User"),
        ("{user.organization}", "an object of type Organization"),
    ],
)
def test_a_data_value_that_is_a_whole_object_is_reported(expression: str, what: str) -> None:
    text = edit(VALID, '"{site_url}"', f'"{expression}"')
    problem = only_problem(text)
    assert (problem.line, problem.column) == at(text, expression)
    assert (
        problem.message == f"events.project_created.data.home: {expression} is {what}, not a value"
    )


def test_a_whole_object_in_text_or_a_subject_is_reported_too() -> None:
    text = edit(VALID, "subject: Welcome to {org.name}", "subject: Welcome to {org}")
    text = edit(text, '"{site_url}"', '"Owner: {project.owner}"')
    problems = problems_of(text)
    assert places(problems) == [at(text, "{project.owner}"), at(text, "{org}")]


@pytest.mark.parametrize(
    ("expression", "at_fault", "message"),
    [
        ("{user.metadata}", "metadata", "User.metadata is SQLAlchemy's MetaData"),
        ("{user.registry.metadata.tables}", "registry", "User.registry is SQLAlchemy's registry"),
        ("{project.owner.metadata}", "metadata", "User.metadata is SQLAlchemy's MetaData"),
        (
            "{user.type_annotation_map}",
            "type_annotation_map",
            "User.type_annotation_map is a setting of SQLAlchemy's declarative base",
        ),
        (
            "{note.awaitable_attrs}",
            "awaitable_attrs",
            "Note.awaitable_attrs is defined by SQLAlchemy's AsyncAttrs",
        ),
        ("{note.query}", "query", "Note.query is SQLAlchemy's query"),
        ("{note.flask_query}", "flask_query", "Note.flask_query is a QueryProperty descriptor"),
    ],
    ids=[
        "metadata",
        "registry",
        "through a relationship",
        "type_annotation_map",
        "AsyncAttrs",
        "query",
        "descriptor",
    ],
)
def test_what_sqlalchemy_or_another_library_puts_on_a_model_is_out_of_reach(
    expression: str, at_fault: str, message: str
) -> None:
    # The last-but-one put a 6,587-character dump of every table into a sent subject.
    problem = problem_at_fault(expression, at_fault)
    assert problem.message == (
        f"events.project_created.data.home: {expression}: {message}, not part of the "
        "application's model"
    )
    assert problem.code == "EE027"
    assert problem.hint == (
        "expressions reach the columns, relationships, properties and hybrid attributes a model "
        "declares; compute anything else in a `build:` callable"
    )


def test_what_the_application_declares_on_a_model_stays_in_reach() -> None:
    text = edit(
        with_note(),
        '      home: "{site_url}"\n',
        '      home: "{site_url}"\n'
        '      note_body: "{note.body}"\n'
        '      summary: "{note.summary}"\n'
        '      kind: "{note.KIND}"\n'
        '      actor_domain: "{user.domain}"\n',
    )
    fields = compiled(text).events["project_created"].payload_model.model_fields
    assert {"note_body", "summary", "kind", "actor_domain"} <= set(fields)


def test_attribute_paths_reach_columns_relationships_and_properties() -> None:
    text = edit(
        VALID,
        '      home: "{site_url}"\n',
        '      home: "{site_url}"\n'
        '      a: "{project.owner.organization.name}"\n'
        '      b: "{project.stage.value}"\n'
        '      c: "{project.created_at.year}"\n'
        '      d: "{user.display_name.whatever}"\n',
    )
    fields = compiled(text).events["project_created"].payload_model.model_fields
    annotations = {name: fields[name].annotation for name in "abcd"}
    assert annotations == {
        "a": str | None,  # project.owner.organization is nullable
        "b": JsonValue,  # attributes of a column's value are not typed further
        "c": JsonValue,
        "d": JsonValue,
    }


# --- context values -----------------------------------------------------------------------


def test_names_that_are_not_entities_are_context_values_checked_by_check_context() -> None:
    text = edit(VALID, '"{project.title}"', '"{projet.title}"')
    registry = compiled(text)
    assert registry.events["project_created"].context_names == frozenset({"projet", "site_url"})
    with pytest.raises(RegistryError) as caught:
        registry.check_context({"site_url": "https://acme.test"})
    problems = list(caught.value.problems)
    assert places(problems) == [at(text, "{projet.title}")]
    assert problems[0].message == (
        "events.project_created.data.title: 'projet' is neither an entity of event "
        "'project_created' nor a context value"
    )
    assert problems[0].hint == "did you mean 'project'?"


def test_check_context_reports_every_use_of_a_missing_context_value() -> None:
    text = VALID
    with pytest.raises(RegistryError) as caught:
        compiled(text).check_context({})
    problems = list(caught.value.problems)
    assert places(problems) == [at(text, "{site_url}", nth=1), at(text, "{site_url}", nth=2)]
    assert (
        problems[0].hint
        == "declare it under the event's entities, or pass context={'site_url': ...} to EmailEvents"
    )


def test_check_context_rejects_a_callable_that_takes_a_name_the_event_lacks() -> None:
    with pytest.raises(RegistryError) as caught:
        compiled().check_context({"site_url": hooks.moon_phase})
    problems = list(caught.value.problems)
    assert places(problems) == [at(VALID, "{site_url}")]
    assert "takes 'moon'" in problems[0].message
    assert "(in event 'project_created')" in problems[0].message


def test_a_declared_entity_of_a_broken_type_is_not_mistaken_for_a_context_value() -> None:
    text = edit(VALID, "{user: User, org", "{user: Usr, org")
    problem = only_problem(text)  # not also "'user' is not a context value"
    assert "unknown entity type 'Usr'" in problem.message


@dataclass(frozen=True)
class Brand:
    """A plain context value with attributes of its own."""

    name: str


@pytest.mark.parametrize(
    ("value", "expression", "at_fault", "message", "code"),
    [
        ("https://acme.test", "{brand.upper}", "upper", "str.upper is a method", "EE021"),
        (Brand("Acme"), "{brand.name.upper}", "upper", "str.upper is a method", "EE021"),
        (Brand("Acme"), "{brand.greet}", "greet", "Brand has no attribute 'greet'", "EE021"),
        (
            models.Organization(name="Acme"),
            "{brand.metadata}",
            "metadata",
            "Organization.metadata is SQLAlchemy's MetaData",
            "EE027",
        ),
    ],
    ids=["str method", "method of an attribute", "missing attribute", "mapped object"],
)
def test_check_context_checks_the_path_on_a_plain_value_where_it_is_written(
    value: object, expression: str, at_fault: str, message: str, code: str
) -> None:
    text = edit(VALID, '"{site_url}"', f'"x {expression}"')
    with pytest.raises(RegistryError) as caught:
        compiled(text).check_context({"site_url": "https://acme.test", "brand": value})
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == at(
        text, at_fault, after=expression[: expression.index(at_fault)]
    )
    assert problem.message.startswith(f"events.project_created.data.home: {expression}: {message}")
    assert problem.code == code


def test_a_method_on_a_plain_context_value_says_to_give_the_value_itself() -> None:
    text = edit(VALID, '"{site_url}"', '"{site_url.upper}"')
    with pytest.raises(RegistryError) as caught:
        compiled(text).check_context({"site_url": "https://acme.test"})
    assert str(caught.value) == (
        "1 problem in the email registry:\n"
        f"  events.yaml:{at(text, 'upper')[0]}:{at(text, 'upper')[1]}: "
        "events.project_created.data.home: {site_url.upper}: str.upper is a method; expressions "
        "cannot call it (give the value itself as a context value, or a context callable that "
        "returns it)"
    )


def test_check_context_accepts_data_attributes_of_plain_values_and_leaves_callables_to_render() -> (
    None
):
    text = edit(VALID, '"{site_url}"', '"{brand.name} {site_url.upper}"')
    registry = compiled(text)
    registry.check_context({"site_url": hooks.site_url, "brand": Brand("Acme")})
    with pytest.raises(RegistryError):  # the same path on a plain value is refused
        registry.check_context({"site_url": "https://acme.test", "brand": Brand("Acme")})


# --- every problem at once ----------------------------------------------------------------


def test_a_registry_with_n_mistakes_reports_exactly_n_problems_in_file_order() -> None:
    text = edit(VALID, "version: 1", "version: 7")  # 1
    text = edit(text, '"Acme <notifications@acme.test>"', '"Acme"')  # 2
    text = edit(text, "  org: org\n", "  org: org\n  orgs: org\n")  # 3
    text = edit(
        text,
        "  User: tests.registry_app.models:User\n",
        "  User: tests.registry_app.models:User\n  Thing: tests.registry_app.models:Thingy\n",
    )  # 4
    text = edit(text, "    toggle: project_created\n", "")  # 5
    text = edit(text, '"{project.owner.email}"', '"{project.owner.emial}"')  # 6
    text = edit(text, '"{project.budget}"', '"{project.budget"')  # 7
    text = edit(text, '"{project.score}"', '"{project.owner}"')  # 8
    text = edit(text, "      title: ", "      title: x\n      title: ")  # 9
    text = edit(text, "template: member-welcome", "template: member-welcome\n    templat: x")  # 10
    text = edit(text, "{org: Organization, member: User}", "{org: Organization, member: Usr}")  # 11
    text = edit(text, "hooks:org_members", "hooks:wants_colour")  # 12
    text = edit(text, "hooks:extras_for_org", "hooks:NOT_CALLABLE")  # 13
    problems = problems_of(text)
    assert places(problems) == [
        at(text, "7", after="version: "),
        at(text, '"Acme"'),
        at(text, "orgs"),
        at(text, "tests.registry_app.models:Thingy"),
        at(text, "project_created:"),
        at(text, "emial"),
        at(text, "title: ", nth=2),
        at(text, "{project.budget"),
        at(text, "{project.owner}"),
        at(text, "templat:"),
        at(text, "Usr"),
        at(text, "tests.registry_app.hooks:wants_colour"),
        at(text, "tests.registry_app.hooks:NOT_CALLABLE"),
    ]


def test_an_invalid_defaults_section_does_not_hide_the_events_problems() -> None:
    text = edit(VALID, "  org: org\n", "  org: org\n  colour: blue\n")
    text = edit(text, '"{project.owner.email}"', '"{project.owner.emial}"')
    assert places(problems_of(text)) == [at(text, "colour"), at(text, "emial")]


def test_a_broken_callable_does_not_hide_the_events_expression_problems() -> None:
    text = edit(VALID, "hooks:org_members", "hooks:wants_colour")
    text = edit(text, "Welcome to {org.name}", "Welcome to {org.nme}")
    problems = problems_of(text)
    assert places(problems) == [at(text, "nme"), at(text, "tests.registry_app.hooks:wants_colour")]


# --- categories ---------------------------------------------------------------------------

WITH_CATEGORIES = edit(
    edit(
        edit(
            VALID,
            "  toggles: tests.registry_app.hooks:email_enabled\n",
            "  toggles: tests.registry_app.hooks:email_enabled\n  category: projects\n"
            "\ncategories:\n"
            "  projects:\n"
            "    title: Projects\n"
            '    description: "New projects in your organization"\n'
            "  digest: {title: Weekly digest, default: off}\n",
        ),
        "    build: tests.registry_app.hooks:extras_for_org\n",
        "    build: tests.registry_app.hooks:extras_for_org\n    critical: true\n",
    ),
    "    task: tasks.email.on_project_created\n",
    "    task: tasks.email.on_project_created\n    category: digest\n",
)
"""VALID with two categories: ``project_created`` in ``digest``, ``member_welcome`` critical."""


def test_without_categories_the_registry_has_none_and_events_need_none() -> None:
    registry = compiled()
    assert registry.categories == {}
    for event in registry.events.values():
        assert (event.category, event.critical) == (None, False)


def test_categories_compile_in_the_order_written_with_their_defaults() -> None:
    registry = compiled(WITH_CATEGORIES)
    assert list(registry.categories) == ["projects", "digest"]
    assert registry.categories["projects"] == Category(
        "projects", "Projects", "New projects in your organization", default=True
    )
    assert registry.categories["digest"] == Category("digest", "Weekly digest", "", default=False)


@pytest.mark.parametrize(("written", "default"), [("off", False), ("on", True), ("no", False)])
def test_a_categorys_default_reads_yaml_booleans_like_off(written: str, default: bool) -> None:
    text = edit(WITH_CATEGORIES, "default: off}", f"default: {written}}}")
    assert compiled(text).categories["digest"].default is default


def test_an_event_has_its_own_category_or_else_the_defaults() -> None:
    text = edit(WITH_CATEGORIES, "    category: digest\n", "")
    assert compiled(text).events["project_created"].category == "projects"
    assert compiled(WITH_CATEGORIES).events["project_created"].category == "digest"


def test_a_critical_event_has_no_category_not_even_the_defaults() -> None:
    event = compiled(WITH_CATEGORIES).events["member_welcome"]
    assert (event.category, event.critical) == (None, True)


def test_an_event_category_that_is_not_declared_is_reported_with_the_nearest_key() -> None:
    text = edit(WITH_CATEGORIES, "    category: digest\n", "    category: digets\n")
    problem = only_problem(text)
    assert (problem.code, (problem.line, problem.column)) == ("EE060", at(text, "digets"))
    assert problem.message == (
        "events.project_created.category: 'digets' is not a declared category"
    )
    assert problem.hint == "did you mean 'digest'?"


def test_a_defaults_category_that_is_not_declared_is_reported_once_at_defaults() -> None:
    text = edit(WITH_CATEGORIES, "  category: projects\n", "  category: billing\n")
    text = edit(text, "    category: digest\n", "")
    problem = only_problem(text)  # not again at project_created, which inherits it
    assert (problem.code, (problem.line, problem.column)) == ("EE060", at(text, "billing"))
    assert problem.message == "defaults.category: 'billing' is not a declared category"
    assert problem.hint == "declare it under `categories:` (declared: projects, digest)"


def test_a_category_without_a_categories_section_is_reported() -> None:
    text = edit(
        VALID, "    task: tasks.email.on_project_created\n", "    task: t.a\n    category: news\n"
    )
    problem = only_problem(text)
    assert (problem.code, (problem.line, problem.column)) == ("EE060", at(text, "news"))
    assert problem.hint == (
        "declare it in a top-level `categories:` section, like `news: {title: ...}`"
    )


def test_without_categories_an_event_may_still_be_critical() -> None:
    text = edit(
        VALID,
        "    build: tests.registry_app.hooks:extras_for_org\n",
        "    build: tests.registry_app.hooks:extras_for_org\n    critical: true\n",
    )
    event = compiled(text).events["member_welcome"]
    assert (event.category, event.critical) == (None, True)


def test_a_critical_event_with_a_category_is_reported_at_the_category() -> None:
    text = edit(
        WITH_CATEGORIES, "    critical: true\n", "    critical: true\n    category: projects\n"
    )
    problem = only_problem(text)
    assert problem.code == "EE061"
    assert (problem.line, problem.column) == at(text, "projects", after="    category: ")
    assert problem.message == (
        "events.member_welcome: give either `critical: true` or `category: projects`, not both"
    )
    assert problem.hint == "preferences never stop critical mail, so it has no category"


def test_with_categories_an_event_without_one_is_reported_at_the_event() -> None:
    text = edit(WITH_CATEGORIES, "  category: projects\n", "")
    text = edit(text, "    critical: true\n", "")
    problem = only_problem(text)  # project_created has a category of its own
    assert problem.code == "EE062"
    assert (problem.line, problem.column) == at(text, "member_welcome:")
    assert problem.message == "events.member_welcome: has no category, and `defaults:` gives none"
    assert problem.hint == "add `category: ...` (one of: projects, digest) or `critical: true`"


def test_a_category_key_that_is_not_an_identifier_is_reported_at_the_key() -> None:
    text = edit(WITH_CATEGORIES, "  digest: {", "  weekly digest: {")
    text = edit(text, "    category: digest\n", "")
    problem = only_problem(text)
    assert problem.code == "EE063"
    assert (problem.line, problem.column) == at(text, "weekly digest")
    assert problem.message == "categories: 'weekly digest' is not a category key"


@pytest.mark.parametrize(
    ("entry", "at_fault", "message"),
    [
        ("{default: off}", "digest", "has no title"),
        ("{title: '', default: off}", "''", "has an empty title"),
        ("{title: '  ', default: off}", "'  '", "has an empty title"),
    ],
)
def test_a_category_needs_a_title(entry: str, at_fault: str, message: str) -> None:
    text = edit(
        WITH_CATEGORIES, "  digest: {title: Weekly digest, default: off}", f"  digest: {entry}"
    )
    problem = only_problem(text)  # and project_created, in that category, is not reported
    assert problem.code == "EE064"
    assert (problem.line, problem.column) == at(
        text, at_fault, after="  " if at_fault == "digest" else "title: "
    )
    assert problem.message == f"categories.digest: {message}"


@pytest.mark.parametrize("empty", [" {}", ""])
def test_an_empty_categories_section_is_reported_once(empty: str) -> None:
    start = WITH_CATEGORIES.index("categories:\n")
    end = WITH_CATEGORIES.index("\nentities:")
    text = WITH_CATEGORIES[:start] + f"categories:{empty}\n" + WITH_CATEGORIES[end:]
    problem = only_problem(text)  # the events' categories are not checked against nothing
    assert problem.code == "EE065"
    assert (problem.line, problem.column) == (at(text, "{}") if empty else at(text, "categories:"))
    assert problem.message == "categories: is declared but empty"


def test_category_fields_of_the_wrong_type_are_reported_at_their_values() -> None:
    text = edit(WITH_CATEGORIES, "    critical: true\n", "    critical: sometimes\n")
    text = edit(text, "default: off}", "default: maybe}")
    problems = problems_of(text)
    assert [p.code for p in problems] == ["EE007", "EE007"]
    assert places(problems) == [at(text, "maybe"), at(text, "sometimes")]


# --- robustness (hypothesis) --------------------------------------------------------------


def _parses_or_registry_error(text: str) -> None:
    """Parse ``text``: a Registry, or a RegistryError whose every problem has a place in it."""
    try:
        parse_registry(text, filename=FILE)
    except RegistryError as exc:
        problems = exc.problems
    else:
        return
    assert problems
    # Lines as PyYAML numbers them (it also breaks lines at NEL, LS and PS).
    lines = len(re.split("\r\n|[\n\r\x85\u2028\u2029]", text))
    for problem in problems:
        assert problem.file == FILE
        assert problem.message
        assert 1 <= problem.line <= lines, problem
        assert problem.column >= 1, problem


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_is_a_registry_or_a_registry_error(text: str) -> None:
    _parses_or_registry_error(text)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="{}[]:,-&*!|>'\"#\n\t ab1.", max_size=200))
def test_yaml_punctuation_is_a_registry_or_a_registry_error(text: str) -> None:
    _parses_or_registry_error(text)


_REFS = st.sampled_from(
    [
        "tests.registry_app.models:User",
        "tests.registry_app.models:Organization",
        "tests.registry_app.models:Project",
        "tests.registry_app.models:NotMapped",
        "tests.registry_app.models:Nope",
        "tests.registry_app.models",
        "tests.registry_app.broken:X",
        "tests.registry_app.hooks:org_members",
        "tests.registry_app.hooks:project_people",
        "tests.registry_app.hooks:extras_for_org",
        "tests.registry_app.hooks:wants_colour",
        "tests.registry_app.hooks:positional_only",
        "tests.registry_app.hooks:ProjectPayload",
        "tests.registry_app.hooks:NOT_CALLABLE",
        "tests.registry_app.hooks:email_enabled",
        "tests.registry_app.hooks:toggles_without_key",
        "no.such.module:x",
        ":",
        "a:b:c",
    ]
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), st.dates()
)
_EXPRESSIONS = st.one_of(
    st.sampled_from(
        [
            "{org.name}",
            "Hi {user.full_name}, {org.seats} seats",
            "{user.email}",
            "{project.title}",
            "{project.owner}",
            "{project.owner.email}",
            "{project.reviewer.nickname}",
            "{project.settings.a}",
            "{project.stage.value}",
            "{org.members}",
            "{org.members.email}",
            "{user.greeting}",
            "{user.is_in}",
            "{user.email.upper}",
            "{user.display_name}",
            "{site_url}/x",
            "{{literal}}",
            "{",
            "}",
            "{a.__class__}",
            "{a..b}",
        ]
    ),
    st.text(max_size=12),
    _SCALARS,
)
_NAMES = st.one_of(
    st.sampled_from(["user", "org", "project", "member", "session", "class", "1x", "json"]),
    st.text(max_size=6),
)
_TYPE_NAMES = st.one_of(
    st.sampled_from(["User", "Organization", "Project", "Nope"]), st.text(max_size=4)
)


def _mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """Usually ``valid``, sometimes ``other``: deep checks run only on mostly valid input."""
    return st.one_of(valid, valid, valid, other)


_ENTITY = st.one_of(
    _REFS,
    st.fixed_dictionaries(
        {"model": _REFS}, optional={"key": st.sampled_from(["cuid", "ref", "id", "nope"])}
    ),
    _SCALARS,
)
_EVENT = st.fixed_dictionaries(
    {
        "toggle": _mostly(st.sampled_from(["always", "welcome"]), _SCALARS),
        "template": _mostly(st.just(1), _SCALARS),
        "entities": _mostly(
            st.dictionaries(
                st.sampled_from(["user", "org", "project", "member"]),
                st.sampled_from(["User", "Organization", "Project"]),
                min_size=1,
            ),
            st.one_of(st.dictionaries(_NAMES, _TYPE_NAMES, max_size=3), _SCALARS),
        ),
    },
    optional={
        "subject": _EXPRESSIONS,
        "to": st.one_of(_EXPRESSIONS, st.lists(_EXPRESSIONS, max_size=3)),
        "recipients": _REFS,
        "data": _mostly(st.dictionaries(_NAMES, _EXPRESSIONS, max_size=4), _SCALARS),
        "payload": _REFS,
        "build": _REFS,
        "task": _mostly(st.sampled_from(["tasks.a", "tasks.b", "emailevents.b"]), _SCALARS),
        "category": _mostly(st.sampled_from(["projects", "digest", "nope"]), _SCALARS),
        "critical": _mostly(st.booleans(), _SCALARS),
        "subjet": _SCALARS,
    },
)
_DEFAULTS = st.fixed_dictionaries(
    {"from": _mostly(st.just("Acme <a@acme.test>"), st.sampled_from(["nope", "", "a@b, c@d"]))},
    optional={
        "org": st.sampled_from(["org", "company"]),
        "toggles": _REFS,
        "message_stream": _SCALARS,
        "category": _mostly(st.sampled_from(["projects", "nope"]), _SCALARS),
        "form": _SCALARS,
    },
)
_REGISTRY = st.fixed_dictionaries(
    {
        "version": _mostly(st.just(1), _SCALARS),
        "defaults": _mostly(_DEFAULTS, _SCALARS),
        "entities": _mostly(
            st.fixed_dictionaries(
                {
                    "User": _mostly(st.just("tests.registry_app.models:User"), _ENTITY),
                    "Organization": st.just("tests.registry_app.models:Organization"),
                    "Project": _mostly(
                        st.just({"model": "tests.registry_app.models:Project", "key": "ref"}),
                        _ENTITY,
                    ),
                },
                optional={"Nope": _ENTITY},
            ),
            _SCALARS,
        ),
        "events": _mostly(
            st.dictionaries(
                st.one_of(st.sampled_from(["a", "b", "c"]), _NAMES), _EVENT, min_size=1, max_size=3
            ),
            _SCALARS,
        ),
    },
    optional={
        "categories": _mostly(
            st.dictionaries(
                st.one_of(st.sampled_from(["projects", "digest"]), _NAMES),
                st.one_of(
                    st.fixed_dictionaries(
                        {"title": _mostly(st.just("Projects"), _SCALARS)},
                        optional={"description": _SCALARS, "default": st.booleans()},
                    ),
                    _SCALARS,
                ),
                max_size=3,
            ),
            _SCALARS,
        ),
        "extra": _SCALARS,
    },
)


_VALUES = st.one_of(
    _SCALARS,
    _EXPRESSIONS,
    _REFS,
    st.lists(_EXPRESSIONS, max_size=2),
    st.dictionaries(_NAMES, _EXPRESSIONS, max_size=2),
)
_FIELD_NAMES = st.one_of(
    st.sampled_from(
        [
            "version",
            "from",
            "org",
            "toggles",
            "key",
            "model",
            "categories",
            "title",
            "default",
            *EventSpec.model_fields,
        ]
    ),
    _NAMES,
)


def _places_in(data: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) of a nested structure of dicts and lists."""
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in list(items):
        yield data, key
        if isinstance(value, dict | list):
            yield from _places_in(value)


@st.composite
def _edited_valid_data(draw: st.DrawFn) -> dict[str, Any]:
    """A valid registry's data with one to three values replaced, removed or added."""
    data: dict[str, Any] = yaml.safe_load(draw(st.sampled_from([VALID, WITH_CATEGORIES])))
    for _ in range(draw(st.integers(1, 3))):
        container, key = draw(st.sampled_from(list(_places_in(data))))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            container[key] = draw(_VALUES)
        elif action == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[draw(_FIELD_NAMES)] = draw(_VALUES)
        else:
            container.append(draw(_VALUES))
    return data


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_REGISTRY, _edited_valid_data()), st.booleans())
def test_any_registry_shaped_yaml_is_a_registry_or_a_registry_error(
    data: dict[str, Any], flow: bool
) -> None:
    _parses_or_registry_error(yaml.safe_dump(data, sort_keys=False, default_flow_style=flow))


@st.composite
def _mutations(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from([VALID, WITH_CATEGORIES]))
    for _ in range(draw(st.integers(1, 3))):
        lines = text.split("\n")
        kind = draw(st.sampled_from(["delete", "insert", "replace_line", "duplicate", "swap"]))
        i = draw(st.integers(0, len(text)))
        if kind == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 12)) :]
        elif kind == "insert":
            text = (
                text[:i] + draw(st.text(alphabet="{}[]:,-&*!|>'\"#\n ab._", max_size=6)) + text[i:]
            )
        elif kind == "replace_line":
            n = draw(st.integers(0, len(lines) - 1))
            lines[n] = draw(st.text(max_size=30))
            text = "\n".join(lines)
        elif kind == "duplicate":
            n = draw(st.integers(0, len(lines) - 1))
            lines.insert(n, lines[n])
            text = "\n".join(lines)
        else:
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_any_mutation_of_a_valid_registry_is_a_registry_or_a_registry_error(text: str) -> None:
    _parses_or_registry_error(text)


def test_problems_are_positioned_inside_the_file() -> None:
    text = edit(VALID, '"{project.owner.email}"', '"{project.owner.emial}"')
    for problem in problems_of(text):
        assert 1 <= problem.line <= text.count("\n") + 1
        assert 1 <= problem.column <= len(text.splitlines()[problem.line - 1]) + 1


def test_the_generated_payload_model_is_frozen_and_dumps_each_value_as_postmark_takes_it() -> None:
    model = compiled().events["project_created"].payload_model
    template_model = model.model_validate(
        {
            "subject": "New project in Acme Risk: Credit",
            "title": "Credit",
            "budget": Decimal("12.50"),
            "score": None,
            "reviewer_name": None,
            "stage": models.Stage.LIVE,
            "settings": {"colour": "blue", "tags": [1, None]},
            "created_at": dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC),
            "founded": dt.date(2001, 2, 3),
            "actor": "Ada",
            "domain": "acme.test",
            "url": "https://acme.test/projects/p-1",
            "home": "https://acme.test",
        }
    )
    assert template_model.model_dump(mode="json", by_alias=True) == {
        "subject": "New project in Acme Risk: Credit",
        "title": "Credit",
        "budget": "12.50",
        "score": None,
        "reviewer_name": None,
        "stage": "live",
        "settings": {"colour": "blue", "tags": [1, None]},
        "created_at": "2024-05-01T10:00:00Z",
        "founded": "2001-02-03",
        "actor": "Ada",
        "domain": "acme.test",
        "url": "https://acme.test/projects/p-1",
        "home": "https://acme.test",
    }
    # What was validated is what is sent: a build step or a sender cannot change it afterwards.
    with pytest.raises(ValidationError, match="frozen"):
        template_model.title = "Changed"  # type: ignore[misc]
