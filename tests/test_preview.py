"""`emailevents preview`: the TemplateModel a task would send, rendered by the local Postmark."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from emailevents import store
from emailevents.cli import main
from emailevents.demo import DEMO_TEMPLATES, seed
from emailevents.demo.run import REGISTRY
from emailevents.preview import PreviewError, preview, preview_sample
from emailevents.registry import load_registry
from emailevents.testing.fake_postmark import FakePostmark
from tests.appmodule import demo_app

TOKEN = "preview-test-token"


@pytest.fixture
def postmark() -> Iterator[FakePostmark]:
    with FakePostmark(tokens=[TOKEN], templates=DEMO_TEMPLATES) as server:
        yield server


def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> Any:
    name = f"previewapp_{uuid.uuid4().hex[:8]}"
    sender = f"PostmarkSender({TOKEN!r}, api_url={url!r})" if url else "OutboxSender()"
    (tmp_path / f"{name}.py").write_text(demo_app(tmp_path / "app.db", sender=sender))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("POSTMARK_SERVER_TOKEN", raising=False)
    monkeypatch.delenv("POSTMARK_API_URL", raising=False)
    module = __import__(name)
    module.ref = f"{name}:events"
    with module.events.session_factory() as session:
        module.world = seed.seed(session)
        session.commit()
    return module


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postmark: FakePostmark) -> Iterator[Any]:
    """The demo application, seeded, sending with PostmarkSender to the local Postmark."""
    module = make_app(tmp_path, monkeypatch, postmark.url)
    yield module
    module.engine.dispose()
    sys.modules.pop(module.__name__, None)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def cuid_options(cuids: dict[str, str]) -> list[str]:
    return [f"--cuid={name}={cuid}" for name, cuid in cuids.items()]


def test_preview_shows_exactly_what_the_task_sends(app: Any, postmark: FakePostmark) -> None:
    key, cuids = seed.emits(app.world)[5]  # the finding
    result = invoke("preview", key, "--app", app.ref, "--format", "json", *cuid_options(cuids))
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)

    app.events.run(key, "ev-sent", **cuids)
    (sent,) = postmark.messages
    assert shown["TemplateModel"] == sent.template_model
    assert shown["recipients"] == [sent.to]
    assert shown["rendered"]["Subject"] == sent.subject
    assert shown["rendered"]["TextBody"] == sent.text_body
    assert shown["rendered"]["HtmlBody"] == sent.html_body


def test_preview_prints_the_email_and_writes_the_html(app: Any, tmp_path: Path) -> None:
    key, cuids = seed.emits(app.world)[5]
    html = tmp_path / "finding.html"
    result = invoke("preview", key, "--app", app.ref, "--html", str(html), *cuid_options(cuids))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == [
        "event model_finding_created, template 'model-finding-created' (loaded from the database)",
        "to: owen@acme.test",
    ]
    assert '  "finding_title": "PD backtest does not cover the 2025 default cohort",' in lines
    assert (
        "Subject: New finding in Acme Risk: PD backtest does not cover the 2025 default cohort"
        in lines
    )
    assert lines[-1] == f"HtmlBody: written to {html} ({len(html.read_text())} characters)"
    assert "<strong>Retail Credit PD Model</strong>" in html.read_text()
    assert TOKEN not in result.output


def test_preview_sends_and_records_nothing(app: Any, postmark: FakePostmark) -> None:
    key, cuids = seed.emits(app.world)[6]  # the comment, to three stakeholders
    result = preview(app.events, key, cuids)
    assert len(result.recipients) == 3
    assert postmark.messages == []
    with app.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.deliveries)).scalar() == 0


def test_a_missing_entity_is_why_the_task_would_skip(app: Any) -> None:
    key, cuids = seed.emits(app.world)[11]  # the finding that does not exist
    result = invoke("preview", key, "--app", app.ref, *cuid_options(cuids))
    assert result.exit_code == 1
    assert "the task would skip this email: finding: no Finding with cuid='c-deleted-finding'" in (
        result.output
    )
    with pytest.raises(PreviewError):
        preview(app.events, key, cuids)


def test_a_toggle_that_is_off_is_a_note_and_the_model_is_still_shown(app: Any) -> None:
    with app.events.session_factory() as session:
        for org, toggle in seed.toggles_off(app.world):
            app.events.set_toggle(session, org, toggle, enabled=False)
        session.commit()
    key, cuids = seed.emits(app.world)[9]  # the monitoring breach, its toggle now off
    result = invoke("preview", key, "--app", app.ref, *cuid_options(cuids))
    assert result.exit_code == 0, result.output
    assert (
        "note: the task would skip this email: toggle 'inventory_model_monitoring_breach' is off "
        "for the org" in result.output
    )
    assert '"metric":' in result.output


def test_sample_values_need_no_database_and_render_at_postmark(
    postmark: FakePostmark, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POSTMARK_SERVER_TOKEN", raising=False)
    result = invoke(
        "preview", "model_finding_created", "--sample", "--registry", str(REGISTRY),
        "--token", TOKEN, "--api-url", postmark.url, "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["sample"] is True
    assert shown["recipients"] == ["<finding.owner.email>"]
    assert shown["TemplateModel"]["subject"] == "New finding in <org.name>: <finding.title>"
    assert shown["TemplateModel"]["url"] == "<site_url>/findings/<finding.cuid>"
    assert shown["rendered"]["Subject"] == "New finding in <org.name>: <finding.title>"
    assert "&lt;finding.title&gt;" in shown["rendered"]["HtmlBody"]  # HTML-escaped by {{ }}
    assert postmark.requests == [("GET", "/templates/model-finding-created"),
                                 ("POST", "/templates/validate")]  # fmt: skip


def test_sample_values_take_each_columns_type() -> None:
    registry = load_registry(REGISTRY)
    shown = preview_sample(registry, "inventory_model_monitoring_breach")
    assert shown.template_model["threshold"] == 1.5  # a Float column
    assert shown.template_model["metric"] == "<breach.metric>"
    assert shown.recipients == ("<whoever emailevents.demo.hooks:stakeholders_of_breach returns>",)


def test_usage_problems_exit_2(app: Any) -> None:
    key, cuids = seed.emits(app.world)[5]
    assert invoke("preview", key, *cuid_options(cuids)).exit_code == 2  # neither --app nor --sample
    assert invoke("preview", key, "--app", app.ref, "--cuid", "user").exit_code == 2
    missing = invoke("preview", key, "--app", app.ref, f"--cuid=user={cuids['user']}")
    assert missing.exit_code == 2
    assert "is missing org, finding" in missing.output
    unknown = invoke("preview", "model_finding_create", "--app", app.ref)
    assert unknown.exit_code == 2
    assert "did you mean 'model_finding_created'?" in unknown.output


def test_without_a_reachable_postmark_the_model_is_shown_unrendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakePostmark(tokens=[TOKEN]).start()
    url = server.url
    server.stop()
    module = make_app(tmp_path, monkeypatch, url)
    try:
        key, cuids = seed.emits(module.world)[5]
        result = invoke("preview", key, "--app", module.ref, *cuid_options(cuids))
    finally:
        module.engine.dispose()
        sys.modules.pop(module.__name__, None)
    assert result.exit_code == 0, result.output
    assert f"not rendered: cannot reach Postmark at {url}" in result.output
    assert '"org_name": "Acme Risk"' in result.output


def test_an_app_without_postmark_shows_the_model_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = make_app(tmp_path, monkeypatch, "")
    try:
        key, cuids = seed.emits(module.world)[0]
        result = invoke("preview", key, "--app", module.ref, *cuid_options(cuids))
    finally:
        module.engine.dispose()
        sys.modules.pop(module.__name__, None)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "not rendered: no Postmark server configured (give --token and --api-url)"
    )


def test_a_template_postmark_does_not_have_exits_1(app: Any, postmark: FakePostmark) -> None:
    client = app.events.sender.client
    client.call("DELETE", "templates/model-finding-created")
    key, cuids = seed.emits(app.world)[5]
    result = invoke("preview", key, "--app", app.ref, *cuid_options(cuids))
    assert result.exit_code == 1
    assert f"Postmark at {postmark.url} has no template 'model-finding-created'" in result.output
