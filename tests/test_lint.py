"""`emailevents lint`: each kind of mistake gives its documented code, and nothing else.

The corpus in ``tests/lint_corpus/cases`` holds one broken registry per finding code (and, for
the checks against Postmark, the templates the local Postmark-compatible server holds); each
case's directory name starts with the code it must produce. Postmark cases run over HTTP against
:class:`~emailevents.testing.fake_postmark.FakePostmark`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from emailevents.cli import main
from emailevents.demo import DEMO_TEMPLATES
from emailevents.lint import (
    CODES,
    NOT_IMPORTED,
    Finding,
    Severity,
    lint,
    lint_report,
)
from emailevents.senders import PostmarkSender
from emailevents.senders.postmark_templates import PostmarkTemplates
from emailevents.testing.fake_postmark import FakePostmark
from tests.appmodule import app_module, demo_app
from tests.test_docs import parse_blocks

ROOT = Path(__file__).parent.parent
CORPUS = Path(__file__).parent / "lint_corpus" / "cases"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir())
EVENTS_YAML = ROOT / "events.yaml"
LINT_DOC = ROOT / "docs" / "lint.md"
TOKEN = "lint-test-token"
_LOCAL_URL = re.compile(r"http://127\.0\.0\.1:\d+/")


@dataclasses.dataclass
class Case:
    """One corpus case, ready to lint: its directory and how to call lint for it."""

    path: Path
    options: dict[str, Any]

    @property
    def code(self) -> str:
        return self.path.name[:5]

    @property
    def templates(self) -> list[dict[str, Any]] | None:
        file = self.path / "templates.yaml"
        return yaml.safe_load(file.read_text()) if file.exists() else None


def load_case(path: Path) -> Case:
    file = path / "case.yaml"
    return Case(path, yaml.safe_load(file.read_text()) if file.exists() else {})


def fake_postmark_for(case: Case) -> FakePostmark:
    """A started local Postmark holding the case's templates."""
    items = case.templates or []
    server = FakePostmark(
        tokens=[TOKEN],
        templates=[{k: v for k, v in t.items() if k != "TemplateType"} for t in items],
    ).start()
    for stored, item in zip(server.templates, items, strict=True):
        if item.get("TemplateType"):
            # The local server holds Standard templates only; Postmark servers hold Layouts too.
            server._templates[stored.template_id] = dataclasses.replace(
                stored, template_type=item["TemplateType"]
            )
    if case.options.get("streams_endpoint") is False:
        # A Postmark-compatible server without the message streams API (lint asks it first).
        server.faults.fail_next(1, status=404, error_code=404, message="No such endpoint")
    return server


def run_case(case: Case, monkeypatch: pytest.MonkeyPatch, *, resolve: bool = True) -> list[Finding]:
    """Lint the case as `emailevents lint events.yaml` would in its directory."""
    monkeypatch.chdir(case.path)
    kwargs: dict[str, Any] = {"resolve": resolve}
    if "context" in case.options:
        kwargs["context_names"] = case.options["context"]
    if "toggle_keys" in case.options:
        kwargs["toggle_keys"] = case.options["toggle_keys"]
    if case.templates is None:
        return lint("events.yaml", **kwargs)
    server = fake_postmark_for(case)
    try:
        return lint("events.yaml", sender=PostmarkSender(TOKEN, api_url=server.url), **kwargs)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _forget_the_broken_mapper() -> Iterator[None]:
    yield
    module = sys.modules.pop("tests.lint_corpus.broken_mapper", None)
    if module is not None:
        module.BrokenBase.registry.dispose()


# --- the corpus -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_each_broken_registry_gives_its_code_and_nothing_else(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = load_case(path)
    findings = run_case(case, monkeypatch)
    assert findings, f"{path.name} found nothing"
    assert {f.code for f in findings} == {case.code}, "\n".join(map(str, findings))
    assert all(f.severity is CODES[case.code][0] for f in findings)
    assert all(f.file == "events.yaml" for f in findings)


def test_every_code_has_a_case_in_the_corpus() -> None:
    assert sorted({p.name[:5] for p in CASES}) == sorted(CODES)


def test_every_code_the_loader_gives_is_a_documented_code() -> None:
    sources = [
        ROOT / "emailevents" / name for name in ("yamlnodes.py", "yamlsyntax.py", "introspect.py")
    ] + sorted((ROOT / "emailevents" / "registry").glob("*.py"))
    used = {code for s in sources for code in re.findall(r'code="(EE\d{3})"', s.read_text())}
    assert used
    assert used <= set(CODES)


def test_the_clean_registry_gives_no_findings_offline_and_at_postmark() -> None:
    assert lint(EVENTS_YAML, context_names={"site_url"}) == []
    with FakePostmark(tokens=[TOKEN], templates=DEMO_TEMPLATES) as server:
        sender = PostmarkSender(TOKEN, api_url=server.url)
        report = lint_report(EVENTS_YAML, context_names={"site_url"}, sender=sender)
    assert report.findings == ()
    assert report.templates_checked == 11
    assert report.shared_toggles == {
        "workflow_transitions": (
            "workflow_transition_user_action",
            "workflow_transition_status_set",
        )
    }


def test_without_the_application_a_context_value_is_info_once_per_name() -> None:
    findings = lint(EVENTS_YAML)
    assert [(f.code, f.severity) for f in findings] == [("EE026", Severity.INFO)]
    assert "'site_url'" in findings[0].message
    assert "used by 11 events" in findings[0].message


@pytest.mark.parametrize("resolve", [True, False], ids=["imported", "not-imported"])
def test_a_context_callable_is_checked_against_its_events_entities(resolve: bool) -> None:
    def site_url(org: object, project: object) -> str:
        return ""

    findings = lint(EVENTS_YAML, context_names={"site_url": site_url}, resolve=resolve)
    assert {f.code for f in findings} == {"EE014"}
    assert "takes 'project'" in findings[0].message
    assert "given: inventory_model, org, session, user" in findings[0].message


def test_with_the_application_a_method_on_a_plain_context_value_is_an_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.yaml"
    text = (CORPUS / "EE026-context-offline" / "events.yaml").read_text()
    path.write_text(text.replace("{site_url}/", "{site_url.upper}/"))
    (finding,) = lint(path, context_names={"site_url": "https://acme.test"})
    assert (finding.code, finding.severity) == ("EE021", Severity.ERROR)
    assert "{site_url.upper}: str.upper is a method; expressions cannot call it" in finding.message
    line = path.read_text().splitlines()[finding.line - 1]
    assert line[finding.column - 1 :].startswith("upper}")


def test_every_finding_of_a_registry_with_many_mistakes_is_reported(tmp_path: Path) -> None:
    text = (CORPUS / "EE021-path-not-found" / "events.yaml").read_text()
    text = text.replace("version: 1", "version: 2").replace("subject:", "subjet:")
    (tmp_path / "events.yaml").write_text(text)
    assert [f.code for f in lint(tmp_path / "events.yaml")] == ["EE008", "EE005", "EE021"]


# --- what lint adds to the loader -----------------------------------------------------------


def registry_with(tmp_path: Path, case: str, old: str, new: str) -> Path:
    text = (CORPUS / case / "events.yaml").read_text()
    assert old in text
    path = tmp_path / "events.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_a_nullable_path_is_fine_when_the_recipient_is_reached_through_it(tmp_path: Path) -> None:
    # With the owner null the event has nobody to send to: a recorded skip, not a blank.
    path = registry_with(tmp_path, "EE025-nullable", '"{user.email}"', '"{finding.owner.email}"')
    assert lint(path) == []


def test_a_nullable_column_is_reported_where_it_is_written(tmp_path: Path) -> None:
    path = registry_with(tmp_path, "EE025-nullable", "{finding.owner.full_name}", "{user.nickname}")
    (finding,) = lint(path)
    assert finding.code == "EE025"
    assert "User.nickname is null (a nullable column)" in finding.message
    line = path.read_text().splitlines()[finding.line - 1]
    assert line[finding.column - 1 :].startswith("{user.nickname}")


def test_a_warning_on_purpose_is_silenced_by_a_comment_on_its_line(tmp_path: Path) -> None:
    first, second = (
        (CORPUS / "EE038-shared-template" / "events.yaml").read_text().split("  finding_reopened:")
    )
    second = second.replace(
        "template: finding-created", "template: finding-created  # emailevents: ignore[EE038]"
    )
    (tmp_path / "events.yaml").write_text(f"{first}  finding_reopened:{second}")
    assert lint(tmp_path / "events.yaml") == []


def test_an_error_cannot_be_silenced(tmp_path: Path) -> None:
    path = registry_with(
        tmp_path,
        "EE021-path-not-found",
        '"{finding.titel}"',
        '"{finding.titel}"  # emailevents: ignore[EE021]',
    )
    assert [f.code for f in lint(path)] == ["EE021"]


def test_an_unreadable_registry_is_a_finding(tmp_path: Path) -> None:
    (finding,) = lint(tmp_path / "missing.yaml")
    assert finding.code == "EE001"
    assert "cannot read the registry" in finding.message


# --- against Postmark: requests and settings ------------------------------------------------


def generated_registry(count: int) -> tuple[str, list[dict[str, Any]]]:
    """A registry of ``count`` events, each with a template of its own, and those templates."""
    head = (CORPUS / "EE025-nullable" / "events.yaml").read_text().split("events:\n")[0]
    events, templates = [], []
    for i in range(count):
        events.append(
            f"  event_{i}:\n"
            f"    toggle: event_{i}\n"
            f"    template: {'template-' + str(i) if i % 2 else 1_000 + i}\n"
            "    entities: {user: User, org: Organization, finding: Finding}\n"
            f'    subject: "Event {i} in {{org.name}}"\n'
            '    to: "{user.email}"\n'
            "    data:\n"
            '      title: "{finding.title}"\n'
            '      actor_name: "{user.full_name}"\n'
        )
        templates.append(
            {
                "TemplateId": 1_000 + i,
                "Name": f"Template {i}",
                "Alias": f"template-{i}",
                "Subject": "{{subject}}",
                "TextBody": "{{actor_name}}: {{title}}",
            }
        )
    return head + "events:\n" + "".join(events), templates


def test_a_hundred_events_lint_in_few_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, templates = generated_registry(100)
    (tmp_path / "events.yaml").write_text(text)
    with FakePostmark(tokens=[TOKEN], templates=templates) as server:
        started = time.perf_counter()
        report = lint_report(
            tmp_path / "events.yaml", sender=PostmarkSender(TOKEN, api_url=server.url)
        )
        seconds = time.perf_counter() - started
        requests = server.requests
    with capsys.disabled():  # shown in every run's output, not asserted: machines differ
        print(  # noqa: T201
            f"\n100 events linted against the local Postmark: {len(requests)} requests "
            f"in {seconds:.2f}s"
        )
    assert report.findings == ()
    assert report.templates_checked == 100
    kinds = [
        (
            method,
            re.sub(r"/templates/[\w-]+$", "/templates/{ref}", path) if method == "GET" else path,
        )
        for method, path in requests
    ]
    assert kinds.count(("GET", "/templates")) == 1  # one page: a server holds at most 100
    assert kinds.count(("GET", "/templates/{ref}")) == 100
    assert kinds.count(("POST", "/templates/validate")) == 100
    assert kinds.count(("GET", "/message-streams")) == 1
    assert len(requests) <= 2 + 2 * 100


def test_templates_are_listed_page_by_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("emailevents.senders.postmark_templates._PAGE", 5)
    with FakePostmark(tokens=[TOKEN], templates=DEMO_TEMPLATES) as server:
        listed = PostmarkTemplates(PostmarkSender(TOKEN, api_url=server.url)).templates()
        requests = server.requests
    assert sorted(t["Alias"] for t in listed) == sorted(t.alias for t in server.templates)
    assert requests == [("GET", "/templates")] * 3  # 5 + 5 + 1


def test_a_template_referenced_by_several_events_is_fetched_once(tmp_path: Path) -> None:
    case = load_case(CORPUS / "EE038-shared-template")
    (tmp_path / "events.yaml").write_text((case.path / "events.yaml").read_text())
    with FakePostmark(
        tokens=[TOKEN], templates=load_case(CORPUS / "EE053-variable-not-provided").templates
    ) as server:
        findings = lint(tmp_path / "events.yaml", sender=PostmarkSender(TOKEN, api_url=server.url))
        requests = server.requests
    assert [f.code for f in findings] == ["EE053", "EE038", "EE053"]
    assert requests.count(("POST", "/templates/validate")) == 1


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env)


def test_a_rejected_token_exits_2_naming_the_setting_not_the_token() -> None:
    with FakePostmark(tokens=["the-right-token"], templates=DEMO_TEMPLATES) as server:
        result = invoke(
            "lint", str(EVENTS_YAML), "--token", "wrong-token-123", "--api-url", server.url
        )
    assert result.exit_code == 2, result.output
    assert "rejected the server token" in result.output
    assert "POSTMARK_SERVER_TOKEN" in result.output
    assert "wrong-token-123" not in result.output


def test_an_unreachable_postmark_exits_2_naming_the_url_setting() -> None:
    server = FakePostmark(tokens=[TOKEN]).start()
    url = server.url
    server.stop()  # nothing listens there any more
    result = invoke(
        "lint", str(EVENTS_YAML), env={"POSTMARK_SERVER_TOKEN": TOKEN, "POSTMARK_API_URL": url}
    )
    assert result.exit_code == 2, result.output
    assert f"cannot reach Postmark at {url}" in result.output
    assert "POSTMARK_API_URL" in result.output
    assert TOKEN not in result.output


def test_a_postmark_outage_exits_2() -> None:
    with FakePostmark(tokens=[TOKEN], templates=DEMO_TEMPLATES) as server:
        server.faults.fail_next(1, status=503)
        result = invoke("lint", str(EVENTS_YAML), "--token", TOKEN, "--api-url", server.url)
    assert result.exit_code == 2, result.output
    assert "HTTP 503, ErrorCode 100" in result.output


def test_a_url_that_is_not_postmarks_api_exits_2() -> None:
    result = invoke("lint", str(EVENTS_YAML), "--token", TOKEN, "--api-url", "not a url")
    assert result.exit_code == 2
    assert "api_url must be Postmark's API URL" in result.output


# --- the command line -------------------------------------------------------------------------


def test_lint_prints_one_finding_per_line_and_exits_1_on_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(CORPUS / "EE021-path-not-found")
    result = invoke("lint")
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert re.fullmatch(r"events\.yaml:\d+:\d+: EE021 .+ \(did you mean 'title'\?\)", first)


def test_lint_exits_0_below_fail_on_and_1_at_it() -> None:
    assert invoke("lint", str(EVENTS_YAML), "--offline").exit_code == 0  # one info
    assert invoke("lint", str(EVENTS_YAML), "--offline", "--fail-on", "warning").exit_code == 0
    assert invoke("lint", str(EVENTS_YAML), "--offline", "--fail-on", "info").exit_code == 1


def test_lint_json_has_every_finding_with_its_severity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS / "EE025-nullable")
    result = CliRunner().invoke(main, ["lint", "--format", "json"])
    assert result.exit_code == 0  # a warning, below the default --fail-on error
    document = json.loads(result.stdout)
    assert document["counts"] == {"error": 0, "warning": 1, "info": 0}
    (finding,) = document["findings"]
    assert (finding["code"], finding["severity"], finding["file"]) == (
        "EE025",
        "warning",
        "events.yaml",
    )
    assert finding["source_line"] == ""  # only YAML syntax errors show their line
    assert document["postmark"] is None


def test_lint_json_gives_a_yaml_syntax_errors_line_as_a_field_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(CORPUS / "EE002-yaml-syntax")
    result = CliRunner().invoke(main, ["lint", "--format", "json"])
    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert (finding["line"], finding["column"]) == (17, 7)
    assert finding["message"] == "invalid YAML: missing ':' after the key 'to'"
    assert finding["source_line"] == '    to "{user.email}"'


def test_lint_usage_problems_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert invoke("lint").exit_code == 2  # no events.yaml here
    assert invoke("lint", "--fail-on", "sometimes").exit_code == 2
    assert invoke("lint", "--app", "no_such_module:events").exit_code == 2


@pytest.fixture
def postmark() -> Iterator[FakePostmark]:
    with FakePostmark(tokens=[TOKEN], templates=DEMO_TEMPLATES) as server:
        yield server


def _app_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postmark: FakePostmark, token: str
) -> Iterator[Any]:
    """The demo application as a module of its own, its PostmarkSender given ``token``."""
    sender = f"PostmarkSender({token!r}, api_url={postmark.url!r})"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POSTMARK_SERVER_TOKEN", raising=False)
    source = demo_app(tmp_path / "app.sqlite3", sender=sender)
    with app_module(tmp_path, source, monkeypatch, prefix="lintapp") as module:
        yield module


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postmark: FakePostmark) -> Iterator[Any]:
    """The demo application as a module, sending with PostmarkSender to the local Postmark."""
    yield from _app_module(tmp_path, monkeypatch, postmark, TOKEN)


def test_with_the_app_the_clean_registry_passes_at_its_postmark(
    app: Any, postmark: FakePostmark
) -> None:
    result = invoke("lint", "--app", app.ref)
    assert result.exit_code == 0, result.output
    assert "no findings in" in result.output
    assert f"templates checked at Postmark ({postmark.url}): 11" in result.output
    assert TOKEN not in result.output


@pytest.fixture
def tokenless_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postmark: FakePostmark
) -> Iterator[Any]:
    """The same application, its PostmarkSender given no token (a web process's settings)."""
    yield from _app_module(tmp_path, monkeypatch, postmark, "")


def test_an_app_whose_sender_has_no_token_is_linted_with_the_token_given(
    tokenless_app: Any, postmark: FakePostmark
) -> None:
    offline = invoke("lint", "--app", tokenless_app.ref)
    assert offline.exit_code == 0, offline.output
    assert "templates not checked at Postmark: give --token" in offline.output
    checked = invoke(
        "lint", "--app", tokenless_app.ref, "--token", TOKEN, "--api-url", postmark.url
    )
    assert checked.exit_code == 0, checked.output
    assert f"templates checked at Postmark ({postmark.url}): 11" in checked.output
    from_env = invoke(
        "lint",
        "--app",
        tokenless_app.ref,
        env={"POSTMARK_SERVER_TOKEN": TOKEN, "POSTMARK_API_URL": postmark.url},
    )
    assert from_env.exit_code == 0, from_env.output
    assert f"templates checked at Postmark ({postmark.url}): 11" in from_env.output
    assert TOKEN not in offline.output + checked.output + from_env.output


def test_with_the_app_org_settings_no_event_uses_are_reported(app: Any) -> None:
    with app.events.session_factory() as session:
        app.events.set_toggle(session, "c-org-1", "findings_digest", enabled=False)
        app.events.set_toggle(session, "c-org-1", "artifact_create", enabled=False)
        app.events.set_toggle(session, "c-org-2", "artifact_create", enabled=False)
        app.events.set_toggle(session, "c-org-1", "workflow_transitions", enabled=False)
        session.commit()
    result = invoke("lint", "--app", app.ref, "--offline")
    assert result.exit_code == 0, result.output  # warnings
    found = {line.split(": ")[1].split()[0]: line for line in result.output.splitlines()
             if ": EE0" in line}  # fmt: skip
    assert sorted(found) == ["EE032", "EE033"]
    assert "EE032 events.model_finding_created.toggle: no org has a setting for " in found["EE032"]
    assert "2 orgs switched off 'artifact_create'" in found["EE032"]
    assert found["EE033"].endswith(
        "EE033 1 org switched off toggle 'findings_digest', which no event uses: they would get "
        "those emails again under another key (move the settings to the event's toggle key, or "
        "delete them)"
    )


def test_with_the_app_a_registry_that_does_not_load_is_still_linted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = CORPUS / "EE021-path-not-found" / "events.yaml"
    name = f"brokenapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from emailevents import EmailEvents, OutboxSender\n"
        "from emailevents.testing import memory_app\n"
        f"events = EmailEvents({str(broken)!r}, celery=memory_app(), session_factory=None,\n"
        "                     sender=OutboxSender(), set_default=False)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("lint", str(broken), "--app", name)
    assert result.exit_code == 1
    assert ": EE021 " in result.output
    assert "the application's registry does not load" in result.output


def test_the_message_streams_api_of_the_local_server_has_postmarks_shape(
    postmark: FakePostmark,
) -> None:
    client = PostmarkSender(TOKEN, api_url=postmark.url).client
    listed = client.call("GET", "message-streams", MessageStreamType="Transactional")
    assert listed["TotalCount"] == 1
    (stream,) = listed["MessageStreams"]
    assert (stream["ID"], stream["MessageStreamType"], stream["ArchivedAt"]) == (
        "outbound",
        "Transactional",
        None,
    )
    assert client.call("GET", "message-streams/broadcast")["MessageStreamType"] == "Broadcasts"


# --- --no-import: the registry's code is not run ----------------------------------------------

# The codes whose checks need the application's classes and callables; --no-import leaves them
# out (EE012 only for references that are well-formed, EE056 only for one column's value).
NEEDS_IMPORT = {
    "EE012", "EE013", "EE014", "EE015", "EE016", "EE021", "EE022", "EE023", "EE025", "EE027",
    "EE040", "EE041", "EE042", "EE056",
}  # fmt: skip

SHOP_REGISTRY = """\
version: 1

defaults:
  from: "Acme <notifications@acme.test>"
  toggles: shop.settings:email_enabled

entities:
  User: shop.models:User
  Organization: {model: "shop.models:Organization", key: cuid}

events:
  user_invited:
    toggle: user_invited
    template: user-invited
    entities: {user: User, org: Organization}
    subject: "Welcome to {org.name}"
    to: "{user.email}"
    data:
      org_name: "{org.name}"
      url: "{site_url}/welcome"
  user_removed:
    toggle: always
    template: user-removed
    entities: {user: User}
    recipients: shop.hooks:admins
    payload: shop.hooks:RemovedEmail
    data:
      name: "{user.full_name}"
"""

# Each module of the application records that it ran; its models refuse to be imported at all.
RECORD = 'import pathlib\npathlib.Path("ran.txt").open("a").write(__name__ + "\\n")\n'
SHOP_MODULES = {
    "shop/__init__.py": RECORD,
    "shop/models.py": RECORD + 'raise RuntimeError("shop.models must not run in a review")\n',
    "shop/settings.py": RECORD + "def email_enabled(session, org, toggle_key): return True\n",
    "shop/hooks.py": RECORD + "def admins(session): return []\nRemovedEmail = None\n",
}


def shop(root: Path, registry: str = SHOP_REGISTRY) -> Path:
    """A fresh folder holding a registry and the application code it names."""
    for name, source in {"events.yaml": registry, **SHOP_MODULES}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    return root


def emailevents(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a process of its own, in ``cwd``, which it can import from."""
    return subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-c", "from emailevents.cli import main; main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def ran(cwd: Path) -> set[str]:
    file = cwd / "ran.txt"
    return set(file.read_text().split()) if file.exists() else set()


def test_no_import_runs_none_of_the_code_the_registry_names(tmp_path: Path) -> None:
    root = shop(tmp_path, SHOP_REGISTRY.replace("toggle: user_invited", 'toggle: "user invited"'))
    reviewed = emailevents(root, "lint", "--no-import")
    assert ran(root) == set(), reviewed.stderr
    assert reviewed.returncode == 1, reviewed.stderr
    findings = reviewed.stdout.splitlines()
    assert [line.split()[1] for line in findings] == ["EE030"]
    assert "not checked, to import nothing (--no-import): whether module:attr references" in (
        reviewed.stderr
    )

    linted = emailevents(root, "lint")
    assert ran(root) == {"shop", "shop.models", "shop.settings", "shop.hooks"}
    assert linted.returncode == 1, linted.stderr
    assert findings[0] in linted.stdout.splitlines()  # the same finding at the same place
    assert "RuntimeError: shop.models must not run in a review" in linted.stdout
    assert "not checked, to import nothing" not in linted.stderr


def test_no_import_json_names_the_checks_it_left_out(tmp_path: Path) -> None:
    root = shop(tmp_path)
    reviewed = emailevents(root, "lint", "--no-import", "--format", "json")
    assert ran(root) == set()
    assert reviewed.returncode == 0, reviewed.stderr  # one info: site_url
    document = json.loads(reviewed.stdout)
    assert document["skipped"] == list(NOT_IMPORTED)
    assert [f["code"] for f in document["findings"]] == ["EE026"]
    assert document["events"] == 2
    assert json.loads(emailevents(root, "lint", "--format", "json").stdout)["skipped"] == []


def test_no_import_checks_templates_at_postmark_with_a_token(tmp_path: Path) -> None:
    root = shop(tmp_path)
    templates = [
        {
            "Name": "Invited",
            "Alias": "user-invited",
            "Subject": "{{subject}}",
            "TextBody": "{{org_name}}: {{url}}, from {{inviter}}",
        },
        {"Name": "Removed", "Alias": "user-removed", "Subject": "Bye", "TextBody": "{{reason}}"},
    ]
    with FakePostmark(tokens=[TOKEN], templates=templates) as server:
        reviewed = emailevents(
            root, "lint", "--no-import", "--token", TOKEN, "--api-url", server.url
        )
        url, requests = server.url, server.requests
    assert ran(root) == set()
    assert reviewed.returncode == 1, reviewed.stderr
    codes = {line.split()[1]: line for line in reviewed.stdout.splitlines()}
    # {{reason}} is not reported: the payload class, not imported, may provide it.
    assert sorted(codes) == ["EE026", "EE053", "EE055"]
    assert "template 'user-invited' uses {{inviter}}" in codes["EE053"]
    assert "template 'user-removed' never uses {{name}}" in codes["EE055"]
    assert f"templates checked at Postmark ({url}): 2" in reviewed.stderr
    assert requests.count(("POST", "/templates/validate")) == 2
    assert TOKEN not in reviewed.stdout + reviewed.stderr


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_no_import_gives_the_same_findings_for_what_needs_no_import(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = load_case(path)
    before = set(sys.modules)
    reviewed = run_case(case, monkeypatch, resolve=False)
    assert not {name for name in set(sys.modules) - before if name.startswith("tests.")}
    expected = [] if case.code in NEEDS_IMPORT else run_case(case, monkeypatch)

    def shown(findings: list[Finding]) -> list[str]:
        return [_LOCAL_URL.sub("http://127.0.0.1:9025/", str(f)) for f in findings]

    assert shown(reviewed) == shown(expected)


def test_no_import_still_checks_the_form_of_references(tmp_path: Path) -> None:
    root = shop(tmp_path, SHOP_REGISTRY.replace("shop.hooks:admins", "shop.hooks.admins"))
    (finding,) = [f for f in lint(root / "events.yaml", resolve=False) if f.code != "EE026"]
    assert finding.code == "EE012"
    assert "'shop.hooks.admins' is not a 'package.module:attribute' reference" in finding.message
    assert (finding.line, finding.column) == (25, 17)


def test_the_codes_no_import_leaves_out_are_the_ones_it_names() -> None:
    named = set(re.findall(r"EE\d{3}", " ".join(NOT_IMPORTED)))
    ranges = re.findall(r"EE(\d{3})-EE(\d{3})", " ".join(NOT_IMPORTED))
    named |= {f"EE{n:03d}" for lo, hi in ranges for n in range(int(lo), int(hi) + 1)}
    assert named - {"EE053"} == NEEDS_IMPORT


def test_no_import_takes_no_application() -> None:
    given = invoke("lint", str(EVENTS_YAML), "--no-import", "--app", "no_such_module:events")
    assert given.exit_code == 2
    assert "--no-import imports nothing, and --app imports the application" in given.output
    # An application named by the environment (set for other commands) is left alone.
    from_env = invoke(
        "lint", str(EVENTS_YAML), "--no-import", env={"EMAILEVENTS_APP": "no_such_module:events"}
    )
    assert from_env.exit_code == 0, from_env.output
    assert "EMAILEVENTS_APP is not used with --no-import" in from_env.output


# --- docs/lint.md -------------------------------------------------------------------------------


def doc_sections() -> dict[str, str]:
    text = LINT_DOC.read_text()
    parts = re.split(r"^### (EE\d{3})\b.*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_docs_explain_every_code_with_its_severity() -> None:
    headings = re.findall(r"^### (EE\d{3}) (.+)$", LINT_DOC.read_text(), flags=re.MULTILINE)
    assert headings == [(code, title) for code, (_, title) in CODES.items()]
    sections = doc_sections()
    for code, body in sections.items():
        severity = CODES[code][0].value
        assert f"*{severity}*" in body.split("\n\n")[1], f"{code}: say it is *{severity}*"
        assert "**Fix:**" in body, f"{code}: say how to fix it"


@pytest.mark.parametrize("code", sorted(CODES))
def test_each_docs_example_is_what_lint_prints_for_its_corpus_case(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (path,) = [p for p in CASES if p.name.startswith(code)]
    case = load_case(path)
    blocks = parse_blocks(doc_sections()[code])
    outputs = [b for b in blocks if b.lang == "text"]
    assert outputs, f"{code}: docs/lint.md shows no output"
    printed = "\n".join(
        _LOCAL_URL.sub("http://127.0.0.1:9025/", str(f)) for f in run_case(case, monkeypatch)
    )
    assert outputs[0].source.strip() == printed
    # The YAML shown is the case's own: its registry, or the templates Postmark holds.
    written = "".join(
        file.read_bytes().decode("utf-8", "replace")
        for file in (path / "events.yaml", path / "templates.yaml")
        if file.exists()
    ).splitlines()
    for block in blocks:
        if block.lang == "yaml":
            for line in block.source.splitlines():
                assert line in written, f"{code}: {line!r} is not a line of {path.name}"


@pytest.mark.parametrize("categories", [False, True])
def test_the_recipients_links_are_provided_to_events_with_a_category(
    tmp_path: Path, categories: bool
) -> None:
    case = load_case(CORPUS / "EE053-variable-not-provided")
    registry = (case.path / "events.yaml").read_text()
    registry = registry.replace(
        "      actor_name", '      org_name: "{org.name}"\n      actor_name'
    )
    if categories:
        registry = registry.replace(
            "\nentities:", "\ncategories:\n  findings: {title: Findings}\n\nentities:"
        ).replace(
            "    toggle: finding_created", "    toggle: finding_created\n    category: findings"
        )
    (tmp_path / "events.yaml").write_text(registry)
    template = dict(case.templates[0])
    template["TextBody"] += " {{unsubscribe_url}} {{preferences_url}}"
    with FakePostmark(tokens=[TOKEN], templates=[template]) as server:
        findings = lint(tmp_path / "events.yaml", sender=PostmarkSender(TOKEN, api_url=server.url))
    unprovided = sorted(re.findall(r"uses \{\{(\w+)\}\}", " ".join(f.message for f in findings)))
    assert unprovided == ([] if categories else ["preferences_url", "unsubscribe_url"])
