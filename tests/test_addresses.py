"""Addresses: strict parsing, address templates whose shape is fixed at load, and entity data
that can change the name shown but never where a message goes (checked at what the local
Postmark server received)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from emailevents import EmailEvents, PostmarkSender, Reason, RegistryError, Status
from emailevents.addresses import (
    AddressError,
    check_address,
    compile_address,
    format_address,
    parse_address,
)
from emailevents.demo.models import Base, Organization, User
from emailevents.errors import ExpressionError
from emailevents.expressions import parse
from emailevents.registry import parse_registry
from emailevents.testing import Runs, worker
from emailevents.testing.fake_postmark import FakePostmark
from tests.conftest import examples

VICTIM = "victim@acme.test"

# The inputs that redirected mail before addresses were split at load.
REDIRECTS = [
    "x <evil@attacker.test> (",
    "<evil2@attacker.test>(",
    "x <evil@attacker.test>",
    '"x" <evil@attacker.test>, ',
    "evil@attacker.test",
    "a, evil@attacker.test",
    "undisclosed:evil@attacker.test;",
    "x\r\nBcc: evil@attacker.test",
    "x\x00<evil@attacker.test>",
    "Zoë <evil@attacker.test> (",
    "(comment) evil@attacker.test",
    "\\",
    '"',
]

# Display-name text as users type it: every character that means something to an address parser.
STORED_NAMES = st.text(
    alphabet=st.one_of(
        st.sampled_from('<>()",;:@\\[]. \t\r\n\x00\x0b\u2028=?'),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)
# Names that no database hands back, but a `recipients:` callable or a context value could.
NAMES = st.one_of(
    STORED_NAMES, st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
)


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ada@acme.test", ("", "ada@acme.test")),
        ("  ada@acme.test ", ("", "ada@acme.test")),
        ("Ada Lovelace <ada@acme.test>", ("Ada Lovelace", "ada@acme.test")),
        ("A. Lovelace <ada@acme.test>", ("A. Lovelace", "ada@acme.test")),
        ('"Lovelace, Ada" <ada@acme.test>', ("Lovelace, Ada", "ada@acme.test")),
        ('"Ada \\"the first\\"" <ada@acme.test>', ('Ada "the first"', "ada@acme.test")),
        ("<ada@acme.test>", ("", "ada@acme.test")),
        ("=?utf-8?b?Wm/DqyDDh2E=?= <zoe@acme.test>", ("=?utf-8?b?Wm/DqyDDh2E=?=", "zoe@acme.test")),
    ],
)
def test_parse_address_accepts_one_address_with_an_optional_name(
    value: str, expected: tuple[str, str]
) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ada@", "something after the @-sign"),
        ("ada..x@acme.test", "period"),
        ("a@b.test, c@d.test", "several addresses"),
        ("ada@acme.test\r\nBcc: eve@evil.test", "control character"),
        ("Ada\x00 <ada@acme.test>", "control character"),
        (f"x <evil@attacker.test> ( <{VICTIM}>", "not one address"),
        (f"<evil2@attacker.test>( <{VICTIM}>", "not one address"),
        (f"Ada (the first) <{VICTIM}>", "quote it"),
        (f"{VICTIM} (Ada)", "not one bare address"),
        (f'"Ada <{VICTIM}>', "unbalanced"),
        (f'"Ada" x" <{VICTIM}>', "unbalanced"),
        (f'"Ada \\" <{VICTIM}>', "unbalanced"),
        (f"Ada <{VICTIM}> <evil@attacker.test>", "not one address"),
        (f"Ada <{VICTIM}", "unbalanced|not one address"),
        (f"team: {VICTIM};", "several addresses"),
        ('"a b"@acme.test', "'\"'"),
        ("ada@[127.0.0.1]", "'\\['"),
    ],
)
def test_parse_address_refuses_what_it_would_have_to_repair(value: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_address(value)


@settings(max_examples=examples(2000))
@given(st.text(alphabet='ab@.<>()",;:\\ \x00\r\n', max_size=30))
def test_what_parse_address_accepts_mail_software_reads_the_same_way(value: str) -> None:
    try:
        name, address = parse_address(value)
    except AddressError:
        return
    assert [found for _, found in getaddresses([value])] == [address]
    assert " ".join(getaddresses([value])[0][0].split()) == " ".join(name.split())


@settings(max_examples=examples(500), suppress_health_check=[HealthCheck.too_slow])
@given(NAMES)
def test_any_display_name_keeps_the_address_it_is_formatted_with(name: str) -> None:
    formatted = format_address(name, VICTIM)
    assert not any(c in formatted for c in "\r\n\x00")
    assert [address for _, address in getaddresses([formatted])] == [VICTIM]
    assert parse_address(formatted)[1] == VICTIM


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a b@acme.test", "not one bare address"),
        ("Ada <ada@acme.test>", "not one bare address"),
        ("a@b.test,c@d.test", "not one bare address"),
        ("ada@acme.test\x00", "control character"),
        ("ada@acme.test\ud800", "control character"),
    ],
)
def test_check_address_takes_a_bare_address_only(value: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        check_address(value)


def test_check_address_answers_the_same_each_time_an_address_is_checked_again() -> None:
    # Cached (a batch checks the same addresses again and again): a refusal is not cached away.
    for _ in range(3):
        assert check_address("Ada@ACME.test") == "Ada@acme.test"
        with pytest.raises(AddressError, match="not one bare address"):
            check_address("Ada <ada@acme.test>")
        with pytest.raises(TypeError):
            check_address(["ada@acme.test"])  # type: ignore[arg-type]


# --- templates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name", "address"),
    [
        ("{user.email}", None, "{user.email}"),
        ("  {user.email} ", None, "{user.email}"),
        ("{user}", None, "{user}"),
        ("{user.full_name} <{user.email}>", "{user.full_name}", "{user.email}"),
        ('"{user.full_name}" <{user.email}>', "{user.full_name}", "{user.email}"),
        ("{user.full_name} via {org.name} <{user.email}>", "{user.full_name} via {org.name}", None),
        ("Ops <ops@acme.test>", "Ops", "ops@acme.test"),
        ("{user.handle}@acme.test", None, "{user.handle}@acme.test"),
        ("<{user.email}>", None, "{user.email}"),
    ],
)
def test_an_address_template_is_split_by_its_literal_text(
    source: str, name: str | None, address: str | None
) -> None:
    compiled = compile_address(parse(source))
    assert (compiled.name.source if compiled.name else None) == name
    if address is not None:
        assert compiled.address.source == address


@pytest.mark.parametrize(
    ("source", "column"),
    [
        ("Support {user.email}", 7),
        ("{user.email}, {org.email}", 12),
        ("{a.name} <{a.email}> <{b.email}>", 21),
        ("{a.name} <{a.email}> x", 19),
        ("{a.name} <{a.email}> (comment)", 19),
        ("{a.email} (x)", 10),
        ("{a.name} <>", 9),
        ("{a.name} <{a.email}", 9),
        ("x > {a.email}", 2),
    ],
)
def test_an_address_template_of_another_shape_is_a_load_time_error(
    source: str, column: int
) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_address(parse(source))
    assert caught.value.offset == column


def test_the_registry_reports_a_misshapen_address_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "events.yaml"
    path.write_text(
        REGISTRY.replace('to: "{user.full_name} <{user.email}>"', 'to: "Hi {user.email}"')
    )
    with pytest.raises(RegistryError) as caught:
        EmailEvents(path, celery=Celery(), session_factory=sessionmaker(), sender=_unused())
    (problem,) = caught.value.problems
    assert problem.code == "EE039"
    assert (problem.line, problem.column) == (14, 12)
    assert "' ' cannot stand in an address" in problem.message


@pytest.mark.parametrize(
    "from_",
    ["x <evil@attacker.test> ( <notifications@acme.test>", "<evil@attacker.test>( a@acme.test"],
)
def test_a_from_address_with_the_comment_trick_does_not_load(tmp_path: Path, from_: str) -> None:
    path = tmp_path / "events.yaml"
    path.write_text(REGISTRY.replace("Acme <notifications@acme.test>", from_))
    with pytest.raises(RegistryError) as caught:
        EmailEvents(path, celery=Celery(), session_factory=sessionmaker(), sender=_unused())
    assert [p.code for p in caught.value.problems] == ["EE009"]


def _from_yaml(value: str) -> str:
    """``value`` as a double-quoted YAML scalar, whatever it holds."""
    return json.dumps(value)  # JSON strings are YAML double-quoted scalars


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet='ab@.<>()",;: \\\r\n\x00', max_size=40))
def test_a_from_either_does_not_load_or_is_exactly_one_address(value: str) -> None:
    text = REGISTRY.replace('"Acme <notifications@acme.test>"', _from_yaml(value))
    try:
        registry = parse_registry(text)
    except RegistryError as exc:
        codes = {p.code for p in exc.problems}
    else:
        codes = set()
    if codes:
        assert codes <= {"EE009", "EE006", "EE007"}
        return
    from_ = registry.events["greet"].from_
    (found,) = getaddresses([from_])
    assert parse_address(from_) == (found[0], found[1])
    assert [a for _, a in getaddresses([value])] == [found[1]]


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.too_slow])
@given(NAMES)
def test_any_from_display_name_keeps_its_address(name: str) -> None:
    from_ = format_address(name, "notifications@acme.test")
    text = REGISTRY.replace('"Acme <notifications@acme.test>"', _from_yaml(from_))
    sent = parse_registry(text).events["greet"].from_
    assert [a for _, a in getaddresses([sent])] == ["notifications@acme.test"]


def _unused() -> PostmarkSender:
    return PostmarkSender("unused-token", api_url="http://127.0.0.1:9")


# --- end to end: what the local Postmark server received -----------------------------------

REGISTRY = """\
version: 1
defaults:
  from: "Acme <notifications@acme.test>"
  org: org
entities:
  User: emailevents.demo.models:User
  Organization: emailevents.demo.models:Organization
events:
  greet:
    toggle: always
    template: greet
    entities: {user: User, org: Organization}
    subject: "Hello {user.full_name}"
    to: "{user.full_name} <{user.email}>"
    data:
      name: "{user.full_name}"
  greet_called:
    toggle: always
    template: greet
    entities: {user: User, org: Organization}
    subject: "Hello {user.full_name}"
    recipients: tests.test_addresses:recipients
    data:
      name: "{user.full_name}"
"""

TEMPLATE = {
    "Name": "Greet",
    "Alias": "greet",
    "Subject": "{{subject}}",
    "TextBody": "Hi {{{name}}}",
    "HtmlBody": "<p>Hi {{name}}</p>",
}


# What `recipients` returns instead of its usual answer, when a test sets it.
GIVEN_BACK: list[Any] = []


def recipients(user: User) -> list[Any]:
    """What an application's callable returns: the forms a `recipients:` callable may give."""
    if GIVEN_BACK:
        return GIVEN_BACK
    return [
        (user.full_name, user.email),  # a (name, address) pair: the name can be anything
        user,  # an object with `email`
    ]


@dataclass
class World:
    events: EmailEvents
    server: FakePostmark
    factory: sessionmaker[Session]
    org: str

    def user(self, name: str, email: str) -> str:
        with self.factory() as session:
            if session.get_bind().dialect.name == "postgresql":
                name = name.replace("\x00", "")  # PostgreSQL stores no NUL in text
            user = User(email=email, full_name=name)
            session.add(user)
            session.commit()
            return user.cuid

    def received_by(self, event_id: str) -> list[str]:
        """Every To the server got for one emit."""
        return [m.to for m in self.server.messages if m.metadata.get("event_id") == event_id]


@pytest.fixture
def world(tmp_path: Path, celery_app: Celery, db_engine: sa.Engine) -> Iterator[World]:
    engine = db_engine
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    path = tmp_path / "events.yaml"
    path.write_text(REGISTRY)
    with FakePostmark(templates=[TEMPLATE]) as server:
        events = EmailEvents(
            path,
            celery=celery_app,
            session_factory=factory,
            sender=PostmarkSender("test-token", api_url=server.url, concurrency=1),
        )
        events.create_tables(engine)
        with factory() as session:
            org = Organization(name="Acme", slug="acme")
            session.add(org)
            session.commit()
            yield World(events, server, factory, org.cuid)


def assert_only_to(world: World, event_id: str, email: str) -> None:
    (to,) = world.received_by(event_id)
    assert [address for _, address in getaddresses([to])] == [email], to
    assert parse_address(to)[1] == email


def test_names_that_held_a_redirect_reach_their_owners_only_on_a_real_worker(
    world: World, celery_app: Celery
) -> None:
    owners = {
        (event, i): world.user(name, f"owner-{event}-{i}@acme.test")
        for event in ("greet", "greet_called")
        for i, name in enumerate(REDIRECTS)
    }
    with Runs() as runs, worker(celery_app):
        receipts = {
            key: world.events.emit(key[0], user=user, org=world.org) for key, user in owners.items()
        }
        results = dict(zip(receipts, runs.wait(*receipts.values()), strict=True))
    for (event, i), result in results.items():
        email = f"owner-{event}-{i}@acme.test"
        sent = [o.recipient for o in result.outcomes if o.status == Status.SENT]
        assert sent == [email], result.outcomes
        # The pair and the object of greet_called are one recipient: one message.
        assert_only_to(world, result.event_id, email)
        (message,) = [m for m in world.server.messages if m.metadata["event_id"] == result.event_id]
        assert "\x00" not in message.subject
        assert "\x00" not in message.template_model["name"]
        assert not any(c in message.subject for c in "\r\n")
        assert getaddresses([message.from_]) == [("Acme", "notifications@acme.test")]
    assert len(world.server.messages) == len(owners)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=STORED_NAMES, event=st.sampled_from(["greet", "greet_called"]))
def test_any_display_name_reaches_exactly_its_owner(world: World, name: str, event: str) -> None:
    email = f"u{uuid.uuid4().hex[:12]}@acme.test"
    receipt = world.events.run(event, "e-" + email, user=world.user(name, email), org=world.org)
    assert {o.status for o in receipt.outcomes} == {Status.SENT}, receipt.outcomes
    assert_only_to(world, receipt.event_id, email)


@pytest.mark.parametrize(
    "email",
    [
        f"x <evil@attacker.test> ( <{VICTIM}>",
        f"{VICTIM} (x)",
        f"{VICTIM}, evil@attacker.test",
        f"Name <{VICTIM}>",
        f"{VICTIM}\r\nBcc: evil@attacker.test",
    ],
)
def test_an_address_column_holding_more_than_an_address_is_skipped_with_its_reason(
    world: World, email: str
) -> None:
    result = world.events.run("greet", "e-1", user=world.user("Ada", email), org=world.org)
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == (Status.SKIPPED, Reason.NO_RECIPIENTS)
    assert "not one bare address" in outcome.detail or "control character" in outcome.detail
    assert world.server.messages == []


def test_strings_from_a_recipients_callable_are_parsed_strictly(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "tests.test_addresses.GIVEN_BACK",
        [
            f"x <evil@attacker.test> ( <{VICTIM}>",
            "Ada (comment) <ada@acme.test>",
            "Ops <ops@acme.test",
            ("a@acme.test", "b@acme.test"),
            '"Lovelace, Ada" <ada@acme.test>',
        ],
    )
    result = world.events.run(
        "greet_called", "e-1", user=world.user("x", "x@acme.test"), org=world.org
    )
    by_status = [(o.status, o.recipient) for o in result.outcomes]
    assert by_status == [
        (Status.SKIPPED, f"x <evil@attacker.test> ( <{VICTIM}>"),
        (Status.SKIPPED, "Ada (comment) <ada@acme.test>"),
        (Status.SKIPPED, "Ops <ops@acme.test"),
        (Status.SKIPPED, "b@acme.test"),
        (Status.SENT, "ada@acme.test"),
    ]
    assert "address for its name" in result.outcomes[3].detail
    assert world.received_by("e-1") == ['"Lovelace, Ada" <ada@acme.test>']
