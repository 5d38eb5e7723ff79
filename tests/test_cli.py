"""The `emailevents` command line: demo, list, help, colour and completion."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError

from emailevents.cli import main
from emailevents.demo.run import MARKER, REGISTRY

COMMAND = [sys.executable, "-c", "from emailevents.cli import main; main(prog_name='emailevents')"]

SEED_TASKS = [
    "on_inventory_model_created", "on_organization_user_added", "on_model_user_deleted",
    "on_model_user_added", "on_user_invited", "on_model_finding_created",
    "on_model_comment_added", "on_workflow_transition_user_action",
    "on_workflow_transition_status_set", "on_inventory_model_monitoring_breach",
    "on_broadcast_notification",
]  # fmt: skip


def test_demo_sends_the_seed_events_through_postmarks_protocol_and_says_why_not(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    out = result.output
    # 8 single sends, one batch for the comment's 3 and one for the broadcast's 31 (the count once
    # included the demo's own request for the page it saved).
    assert "42 messages sent in 10 Postmark API requests, 2 emits skipped" in out
    assert "toggle_off: toggle 'inventory_model_monitoring_breach' is off" in out
    assert "entity_missing: finding: no Finding with cuid='c-deleted-finding'" in out
    assert "broadcast_notification             sent     31" in out
    assert f"Rendered messages: {directory / 'messages.html'}" in out

    files = sorted((directory / "outbox").glob("*.json"))
    assert len(files) == 42
    messages = [json.loads(f.read_text()) for f in files]
    (finding,) = [m for m in messages if m["Tag"] == "model_finding_created"]
    assert finding["TemplateAlias"] == "model-finding-created"
    assert finding["Recipients"] == ["owen@acme.test"]
    assert finding["Subject"] == (
        "New finding in Acme Risk: PD backtest does not cover the 2025 default cohort"
    )
    assert "Vera Nakamura raised a high severity finding" in finding["TextBody"]
    assert "<strong>Retail Credit PD Model</strong>" in finding["HtmlBody"]
    assert set(finding["Metadata"]) == {"event_id"}
    page = (directory / "messages.html").read_text()
    assert "New finding in Acme Risk: PD backtest" in page
    assert "Model inventory maintenance on Saturday" in page
    # The inbox's snapshot: the list, then every message with its parts, needing no server.
    assert page.count("<tr data-id=") == 42
    assert page.count("<article class='message'") == 42
    assert "/__inbox" not in page


def test_demo_starts_afresh_each_time_and_keeps_what_it_did_not_make(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    for _ in range(2):
        result = CliRunner().invoke(main, ["demo", "--dir", str(directory)])
        assert result.exit_code == 0, result.output
        (directory / "notes.txt").write_text("mine")
    assert len(list((directory / "outbox").glob("*.json"))) == 42
    assert (directory / "notes.txt").read_text() == "mine"
    assert (directory / MARKER).is_file()


def test_demo_uses_an_empty_folder_and_marks_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        MARKER,
        "demo.sqlite3",
        "messages.html",
        "outbox",
    ]


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("mydir", "mydir is not empty and was not made by the demo; nothing was deleted"),
        (".", "refusing the current folder"),
        ("..", "refusing a parent of the current folder"),
        ("HOME", "refusing your home folder"),
        ("/", "refusing a parent of"),
    ],
)
def test_demo_refuses_a_folder_it_did_not_make_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str, why: str
) -> None:
    home, work = tmp_path / "home", tmp_path / "home" / "projects" / "work"
    (work / "mydir").mkdir(parents=True)
    for folder in (home, work.parent, work, work / "mydir"):
        (folder / "notes.txt").write_text(f"notes in {folder.name}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    before = _files(tmp_path)
    result = CliRunner().invoke(main, ["demo", "--dir", str(home) if given == "HOME" else given])
    assert result.exit_code == 1, result.output
    assert why in result.output
    assert "Pass a" in result.output  # what to pass instead
    assert _files(tmp_path) == before


def test_list_prints_the_seed_table_as_text() -> None:
    result = CliRunner().invoke(main, ["list", str(REGISTRY)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["Task", "Toggle", "Key", "Template", "Entities", "Batching"]
    assert [line.split()[0] for line in lines[2:]] == [
        f"tasks.notifications.email.{task}" for task in SEED_TASKS
    ]
    invited = next(
        line for line in lines if line.startswith("tasks.notifications.email.on_user_invited ")
    )
    assert "(always enabled)" in invited
    assert "user: User, org: Organization, invitation: Invitation" in invited
    assert invited.endswith("50 ms, max 500")  # batched by default


def test_list_prints_markdown_for_docs() -> None:
    result = CliRunner().invoke(main, ["list", str(REGISTRY), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == [
        "| Task | Toggle Key | Template | Entities | Batching |",
        "| --- | --- | --- | --- | --- |",
    ]
    assert lines[6] == (
        "| tasks.notifications.email.on_user_invited | (always enabled) | user-invited | "
        "user: User, org: Organization, invitation: Invitation | 50 ms, max 500 |"
    )
    assert len(lines) == 2 + 11


def test_list_reports_every_registry_problem_with_its_position(tmp_path: Path) -> None:
    broken = tmp_path / "events.yaml"
    broken.write_text(
        "version: 2\n"
        "defaults: {from: 'a@b.test'}\n"
        "entities: {}\n"
        "events:\n"
        "  e:\n"
        "    toggle: always\n"
        "    templat: x\n"
    )
    result = CliRunner().invoke(main, ["list", str(broken)])
    assert result.exit_code == 1
    assert f"{broken}:1:10: unsupported version 2" in result.output
    assert f"{broken}:7:5: events.e: unknown field 'templat' (did you mean 'template'?)" in (
        result.output
    )


def test_a_missing_registry_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["list", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml' does not exist" in result.output


def test_fake_postmark_command_serves_postmarks_api_until_interrupted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 - our own command
        [*COMMAND, "fake-postmark", "--port", str(port), "--token", "tok-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = PostmarkClient(server_token="tok-1", root_api_url=f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = client.call(
                    "POST",
                    "email/withTemplate",
                    data={
                        "TemplateAlias": "user-invited",
                        "From": "a@acme.test",
                        "To": "b@acme.test",
                        "TemplateModel": {"subject": "Hello", "org_name": "Acme"},
                    },
                )
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert answer["ErrorCode"] == 0
        wrong = PostmarkClient(server_token="nope", root_api_url=f"http://127.0.0.1:{port}/")
        with pytest.raises(ClientError) as denied:
            wrong.call("GET", "templates", Count=10, Offset=0)
        assert denied.value.error_code == 10
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    assert f"A Postmark-compatible API at http://127.0.0.1:{port}/ (11 templates" in output
    assert "tok-1" not in output
    assert process.returncode == 0


def test_help_imports_neither_celery_sqlalchemy_nor_pydantic() -> None:
    probe = (
        "import sys\n"
        "from emailevents.cli import main\n"
        "for args in [[], *([name] for name in main.commands)]:\n"
        "    try:\n"
        "        main([*args, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('celery', 'kombu', 'sqlalchemy', 'pydantic', 'yaml', 'postmarker', 'requests')\n"
        "print(sorted(name for name in heavy if name in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert "Usage: " in done.stdout
    assert done.stderr.strip() == "[]"


def test_bare_emailevents_prints_help_and_succeeds() -> None:
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert "stats" in result.output


def test_list_prints_one_json_document() -> None:
    result = CliRunner().invoke(main, ["list", str(REGISTRY), "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["registry"] == str(REGISTRY)
    assert len(document["events"]) == 11
    invited = next(e for e in document["events"] if e["key"] == "user_invited")
    assert invited == {
        "key": "user_invited",
        "task": "tasks.notifications.email.on_user_invited",
        "toggle": None,
        "template": "user-invited",
        "entities": {"user": "User", "org": "Organization", "invitation": "Invitation"},
        "category": None,
        "critical": False,
        "batch": {"window_ms": 50, "max": 500},
    }
    assert document["categories"] == {}


CATEGORIES = """\
version: 1
defaults:
  from: "Acme <notifications@acme.test>"
  category: digest
categories:
  digest: {title: Weekly digest, default: off}
  findings: {title: Findings, description: "New findings on your models"}
entities:
  User: emailevents.demo.models:User
events:
  weekly_digest:
    toggle: always
    template: weekly-digest
    entities: {user: User}
    to: "{user.email}"
  finding_created:
    toggle: always
    template: finding-created
    entities: {user: User}
    to: "{user.email}"
    category: findings
  password_reset:
    toggle: always
    template: password-reset
    entities: {user: User}
    to: "{user.email}"
    critical: true
"""


def test_list_shows_each_events_category_or_critical(tmp_path: Path) -> None:
    registry = tmp_path / "events.yaml"
    registry.write_text(CATEGORIES)
    result = CliRunner().invoke(main, ["list", str(registry)])
    assert result.exit_code == 0, result.output
    header, _, *rows = result.output.splitlines()
    assert header.split()[-1] == "Category"
    assert [row.split()[-1] for row in rows] == ["digest", "findings", "critical"]
    as_json = CliRunner().invoke(main, ["list", str(registry), "--format", "json"])
    document = json.loads(as_json.output)
    assert [(e["category"], e["critical"]) for e in document["events"]] == [
        ("digest", False),
        ("findings", False),
        (None, True),
    ]
    assert document["categories"] == {
        "digest": {"title": "Weekly digest", "description": "", "default": False},
        "findings": {
            "title": "Findings",
            "description": "New findings on your models",
            "default": True,
        },
    }


def test_list_of_a_registry_without_categories_keeps_its_columns() -> None:
    result = CliRunner().invoke(main, ["list", str(REGISTRY)])
    header = result.output.split("\n")[0].split()
    assert header == ["Task", "Toggle", "Key", "Template", "Entities", "Batching"]


# --- colour ---------------------------------------------------------------------------------

BROKEN = "version: 1\ndefaults: {from: a@b.test}\nentities: {}\nevents:\n  e:\n    templat: x\n"
RED_CODE = "\x1b[31mEE005\x1b[0m"


def test_lint_colours_findings_by_severity_unless_no_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "events.yaml").write_text(BROKEN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = CliRunner().invoke(main, ["lint", "--offline"], color=True)
    assert coloured.exit_code == 1
    assert f"events.yaml:6:5: {RED_CODE} events.e: unknown field 'templat'" in coloured.output
    plain = CliRunner().invoke(main, ["lint", "--offline"], color=False)
    assert "events.yaml:6:5: EE005 events.e" in plain.output
    assert "\x1b[" not in plain.output
    for value in ("1", "true", "0"):  # any non-empty value, https://no-color.org
        monkeypatch.setenv("NO_COLOR", value)
        refused = CliRunner().invoke(main, ["lint", "--offline"], color=True)
        assert "events.yaml:6:5: EE005 events.e" in refused.output
        assert "\x1b[" not in refused.output
    monkeypatch.setenv("NO_COLOR", "")
    empty = CliRunner().invoke(main, ["lint", "--offline"], color=True)
    assert RED_CODE in empty.output


def _run_on_a_terminal(args: list[str], cwd: Path, **env: str) -> str:
    """What a command prints to a terminal (a pseudo-terminal), with ``env`` set."""
    leader, follower = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | env
    try:
        subprocess.run(  # noqa: S603 - our own command
            [*COMMAND, *args], stdout=follower, cwd=cwd, env=environment, check=False, timeout=60
        )
    finally:
        os.close(follower)
    chunks = []
    with open(leader, "rb") as terminal:  # noqa: PTH123 - a file descriptor
        try:
            while chunk := terminal.read1(65536):
                chunks.append(chunk)
        except OSError:  # the terminal is closed once everything was read (Linux: EIO)
            pass
    return b"".join(chunks).decode()


def test_colour_reaches_a_terminal_but_not_a_pipe_nor_no_color(tmp_path: Path) -> None:
    (tmp_path / "events.yaml").write_text(BROKEN)
    lint = ["lint", "--offline"]
    assert RED_CODE in _run_on_a_terminal(lint, tmp_path)
    refused = _run_on_a_terminal(lint, tmp_path, NO_COLOR="1")
    assert "events.yaml:6:5: EE005 events.e" in refused
    assert "\x1b[" not in refused
    piped = subprocess.run(  # noqa: S603 - our own command
        [*COMMAND, *lint], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert "events.yaml:6:5: EE005 events.e" in piped.stdout
    assert "\x1b[" not in piped.stdout


def test_demo_colours_outcomes_on_a_terminal(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path / "d")], color=True)
    assert result.exit_code == 0, result.output
    assert "\x1b[32msent\x1b[0m     31    ada@acme.test" in result.output
    assert "\x1b[33mskipped\x1b[0m  0     entity_missing" in result.output


# --- shell completion -----------------------------------------------------------------------


def _complete(words: str, cwd: Path | None = None, **env: str) -> list[str]:
    """What bash completion offers for the last of ``words``, asked as bash asks it."""
    argv = words.split(" ")
    environment = {
        **os.environ,
        "_EMAILEVENTS_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(argv) - 1),
        **env,
    }
    done = subprocess.run(  # noqa: S603 - our own command
        [*COMMAND], capture_output=True, text=True, cwd=cwd, env=environment, check=True
    )
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


def test_preview_completes_event_names_from_the_registry(tmp_path: Path) -> None:
    shutil.copy(REGISTRY, tmp_path / "events.yaml")
    assert _complete("emailevents preview model_", tmp_path) == [
        "model_user_deleted",
        "model_user_added",
        "model_finding_created",
        "model_comment_added",
    ]
    elsewhere = f"emailevents preview --sample --registry {REGISTRY} user_"
    assert _complete(elsewhere) == ["user_invited"]
    (tmp_path / "empty").mkdir()
    assert _complete("emailevents preview model_", tmp_path / "empty") == []


def test_the_shell_script_comes_from_click() -> None:
    done = subprocess.run(  # noqa: S603 - our own command
        COMMAND,
        capture_output=True,
        text=True,
        env={**os.environ, "_EMAILEVENTS_COMPLETE": "bash_source"},
        check=True,
    )
    assert "_emailevents_completion()" in done.stdout


# --- the demo's database, asked with explain and stats ------------------------------------

DEMO_COMMAND = re.compile(r"^  (EMAILEVENTS_DEMO_DIR=.+? emailevents (explain|stats) .*)$")


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` as a user pastes it into bash, with this interpreter's ``emailevents``."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(  # noqa: S603 - the command the demo printed
        ["bash", "-c", command],  # noqa: S607 - the user's shell
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PATH": path},
        check=False,
        timeout=120,
    )


def test_the_demo_prints_explain_and_stats_commands_that_work_on_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo", "--dir", "my demo"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "emailevents demo: 12 emits of the 11 events in the demo's built-in registry "
        "(emailevents/demo/events.yaml): one of each, and model_finding_created once more, "
        "for a finding deleted before the worker ran."
    )
    printed = {
        match[2]: match[1] for match in map(DEMO_COMMAND.match, result.output.splitlines()) if match
    }
    assert set(printed) == {"explain", "stats"}
    assert printed["stats"].startswith("EMAILEVENTS_DEMO_DIR='my demo' emailevents stats")

    explained = _shell(printed["explain"], tmp_path)
    assert explained.returncode == 0, explained.stderr
    assert explained.stdout.startswith("event model_finding_created, id ")
    assert "(the whole emit)  skipped  entity_missing  finding: no Finding with cuid=" in (
        explained.stdout
    )
    counted = _shell(printed["stats"], tmp_path)
    assert counted.returncode == 0, counted.stderr
    outcomes, engagement = counted.stdout.split("\n\n")
    rows = {tuple(line.split()[:3]): line.split()[3] for line in outcomes.splitlines()[2:]}
    assert rows[("broadcast_notification", "sent", "sent")] == "31"
    assert rows[("inventory_model_monitoring_breach", "skipped", "toggle_off")] == "1"
    assert rows[("model_finding_created", "skipped", "entity_missing")] == "1"
    assert len(rows) == 12
    assert "no webhook record about the 42 messages sent" in engagement  # the demo has none


def test_the_demo_app_says_to_run_the_demo_first(tmp_path: Path) -> None:
    command = "EMAILEVENTS_DEMO_DIR=nowhere emailevents stats --app emailevents.demo.app:events"
    done = _shell(command, tmp_path)
    assert done.returncode == 2
    assert "no demo database in nowhere: run `emailevents demo --dir nowhere` first" in (
        done.stderr
    )


def test_fake_postmark_on_a_port_in_use_says_so_and_how_to_choose_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["fake-postmark", "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.output
    assert "choose another with --port" in result.output
    assert "Traceback" not in result.output
