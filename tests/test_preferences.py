"""Recipients' own choices in a run: the layers a run checks in order (org toggle, suppression,
preference), critical mail that preferences never stop, and the links and headers every message
of a category carries, up to the local Postmark server and back through one-click unsubscribe."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailevents import ConfigurationError, pipeline
from emailevents.cli import main
from emailevents.demo import seed
from emailevents.demo.run import REGISTRY
from emailevents.preferences import How
from emailevents.tables import preferences as preferences_table
from emailevents.testing.fake_postmark import FakePostmark
from tests.appmodule import app_module, demo_app
from tests.conftest import examples
from tests.wsgiserver import post, serve

OWEN = "owen@acme.test"
COMMENT = "model_comment_added"
CRITICAL = "model_comment_added_critical"
GENERAL = "model_comment_added_general"
TOGGLE = "inventory_model_documentation_comments"
PUBLIC_URL = "http://127.0.0.1:8025/email"


def registry_with_categories(folder: Path) -> Path:
    """The demo's registry with categories: comments (on by default), everything else in
    general, invitations critical, and two twins of the comment event: a critical one, and one
    in general."""
    text = Path(REGISTRY).read_text(encoding="utf-8")
    text = text.replace(
        "  org: org\n",
        "  org: org\n  category: general\n\n"
        "categories:\n"
        "  general: {title: News about your models, description: Findings and workflow.}\n"
        "  comments: {title: Comments, description: Someone commented on a model you follow.}\n",
        1,
    )
    text = text.replace(
        "  model_comment_added:\n", "  model_comment_added:\n    category: comments\n", 1
    )
    text = text.replace("  user_invited:\n", "  user_invited:\n    critical: true\n", 1)
    block = re.search(r"\n  model_comment_added:\n(?:    .*\n|      .*\n)+", text)
    assert block is not None
    twins = ""
    for key, marked in ((CRITICAL, "critical: true"), (GENERAL, "category: general")):
        twin = block.group(0).replace("model_comment_added:", f"{key}:", 1)
        twin = twin.replace("    category: comments\n", f"    {marked}\n")
        twins += twin.replace("on_model_comment_added", f"on_{key}")
    path = folder / "events.yaml"
    path.write_text(text + twins, encoding="utf-8")
    return path


@contextlib.contextmanager
def seeded_app(
    folder: Path, monkeypatch: pytest.MonkeyPatch, server: FakePostmark, registry: Path
) -> Iterator[Any]:
    """The demo application on ``registry``, sending to ``server``, its world seeded."""
    sender = f"PostmarkSender('test-token', api_url={server.url!r})"
    options = f" public_url={PUBLIC_URL!r}, signing_keys=['new-key', 'old-key'],"
    source = demo_app(folder / "app.sqlite3", sender=sender, options=options)
    source = source.replace("REGISTRY, celery", f"{str(registry)!r}, celery")
    with app_module(folder, source, monkeypatch, prefix="prefsapp") as module:
        with module.events.session_factory() as session:
            module.world = seed.seed(session)
            session.commit()
        yield module


@pytest.fixture
def app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_postmark: FakePostmark
) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    registry = registry_with_categories(tmp_path)
    with seeded_app(tmp_path, monkeypatch, fake_postmark, registry) as module:
        yield module


def run(app: Any, event_key: str, event_id: str) -> Any:
    _, cuids = seed.emits(app.world)[6]  # the comment: three recipients, Owen one of them
    event = app.events.event(event_key)
    return pipeline.run(app.events.runtime, event, event_id, cuids)


def owens(result: Any) -> tuple[str, str]:
    found = [o for o in result.outcomes if o.recipient in {OWEN, ""}]
    return found[0].status.value, found[0].reason.value


def test_a_message_of_a_category_carries_its_links_and_one_click_opts_out(
    app: Any, fake_postmark: FakePostmark
) -> None:
    assert owens(run(app, COMMENT, "ev-1")) == ("sent", "sent")
    (message,) = [m for m in fake_postmark.messages if OWEN in m.to]
    headers = {h["Name"]: h["Value"] for h in message.request["Headers"]}
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (url,) = re.findall(r"<([^>]+)>", headers["List-Unsubscribe"])
    assert url.startswith(f"{PUBLIC_URL}/unsubscribe/")
    assert message.template_model["unsubscribe_url"] == url
    assert message.template_model["preferences_url"].startswith(f"{PUBLIC_URL}/preferences/")

    # The mail provider's one-click POST, to the app where it is mounted.
    for port in serve(app.events.wsgi_app()):
        path = urlsplit(url).path.removeprefix("/email")
        form = "application/x-www-form-urlencoded"
        status, _, _ = post(
            port, b"List-Unsubscribe=One-Click", auth=None, path=path, content_type=form
        )
        assert status == 200
    assert app.events.preferences.get(OWEN)["comments"].how == How.ONE_CLICK

    status, reason = owens(run(app, COMMENT, "ev-2"))
    assert (status, reason) == ("skipped", "opted_out")
    assert owens(run(app, CRITICAL, "ev-3")) == ("sent", "sent")  # critical: still goes
    assert owens(run(app, GENERAL, "ev-4")) == ("sent", "sent")  # another category: still goes
    assert len([m for m in fake_postmark.messages if OWEN in m.to]) == 3


def test_without_public_url_and_keys_an_event_with_a_category_does_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = registry_with_categories(tmp_path)
    source = demo_app(tmp_path / "app.sqlite3").replace(
        "REGISTRY, celery", f"{str(registry)!r}, celery"
    )
    with (
        pytest.raises(ConfigurationError, match=r"public_url=.*signing_keys="),
        app_module(tmp_path, source, monkeypatch, prefix="nolinks"),
    ):
        pass


LAYERS = ("toggle", "suppressed", "preference")


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    toggle=st.booleans(),
    suppressed=st.booleans(),
    preference=st.sampled_from([None, True, False]),
    critical=st.booleans(),
)
def test_the_recorded_reason_is_the_first_layer_that_said_no(
    app: Any, toggle: bool, suppressed: bool, preference: bool | None, critical: bool
) -> None:
    with app.events.session_factory() as session:
        app.events.set_toggle(session, app.world.acme_org, TOGGLE, toggle)
        session.commit()
    if suppressed:
        app.events.suppressions.add([OWEN], stream="outbound")
    else:
        app.events.suppressions.remove([OWEN], stream="outbound")
    if preference is None:  # never chose: the category's default (on)
        with app.events.session_factory() as session:
            session.execute(sa.delete(preferences_table))
            session.commit()
    else:
        app.events.preferences.set(OWEN, "comments", enabled=preference, how=How.SUPPORT)
    result = run(app, CRITICAL if critical else COMMENT, str(uuid.uuid4()))
    if not toggle:
        expected = ("skipped", "toggle_off")
    elif suppressed:
        expected = ("skipped", "suppressed")
    elif preference is False and not critical:
        expected = ("skipped", "opted_out")
    else:
        expected = ("sent", "sent")
    assert owens(result) == expected


def test_stats_counts_opt_outs_per_category(app: Any) -> None:
    app.events.preferences.set(OWEN, "comments", enabled=False)
    run(app, COMMENT, "ev-1")
    result = CliRunner().invoke(main, ["stats", "--app", app.ref, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["opt_outs"] == [
        {"category": "general", "title": "News about your models", "switched_off": 0, "skipped": 0},
        {"category": "comments", "title": "Comments", "switched_off": 1, "skipped": 1},
    ]
    text = CliRunner().invoke(main, ["stats", "--app", app.ref]).output
    assert "Skipped opted_out (24h)" in text


def test_an_applications_own_preferences_decide_and_cannot_be_changed_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_postmark: FakePostmark
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = registry_with_categories(tmp_path)
    text = registry.read_text().replace(
        "  category: general\n",
        "  category: general\n  preferences: tests.appmodule:own_preferences\n",
        1,
    )
    registry.write_text(text)
    with seeded_app(tmp_path, monkeypatch, fake_postmark, registry) as module:
        result = run(module, COMMENT, "ev-own")
        (skip,) = [o for o in result.outcomes if o.recipient == OWEN]
        assert (skip.status, skip.reason) == ("skipped", "opted_out")
        assert skip.detail == "the application's preferences say category 'comments' is off"
        assert {o.status for o in result.outcomes if o.recipient != OWEN} == {"sent"}
        with pytest.raises(ConfigurationError, match=r"defaults\.preferences"):
            module.events.preferences.set(OWEN, "comments", enabled=True)


def test_support_staff_read_and_set_preferences_on_the_command_line(app: Any) -> None:
    runner = CliRunner()
    got = runner.invoke(main, ["preferences", "get", OWEN, "--app", app.ref])
    assert got.exit_code == 0, got.output
    assert "comments" in got.output
    switched = runner.invoke(
        main, ["preferences", "set", OWEN, "comments", "off", "--app", app.ref]
    )
    assert switched.exit_code == 0, switched.output
    assert app.events.preferences.get(OWEN)["comments"].enabled is False
    assert app.events.preferences.get(OWEN)["comments"].how == How.SUPPORT
    unknown = runner.invoke(main, ["preferences", "set", OWEN, "coments", "off", "--app", app.ref])
    assert unknown.exit_code == 1
    assert "did you mean 'comments'?" in unknown.output
