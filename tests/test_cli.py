"""The `emailevents` command line: demo and list."""

from __future__ import annotations

import json
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
    # 9 single sends, one batch for the comment's 3 and one for the broadcast's 31.
    assert "42 messages sent in 11 Postmark API requests, 2 emits skipped" in out
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
    assert lines[0].split() == ["Task", "Toggle", "Key", "Template", "Entities"]
    assert [line.split()[0] for line in lines[2:]] == [
        f"tasks.notifications.email.{task}" for task in SEED_TASKS
    ]
    invited = next(
        line for line in lines if line.startswith("tasks.notifications.email.on_user_invited ")
    )
    assert "(always enabled)" in invited
    assert "user: User, org: Organization, invitation: Invitation" in invited


def test_list_prints_markdown_for_docs() -> None:
    result = CliRunner().invoke(main, ["list", str(REGISTRY), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == ["| Task | Toggle Key | Template | Entities |", "| --- | --- | --- | --- |"]
    assert lines[6] == (
        "| tasks.notifications.email.on_user_invited | (always enabled) | user-invited | "
        "user: User, org: Organization, invitation: Invitation |"
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
    command = [sys.executable, "-c", "from emailevents.cli import main; main()"]
    process = subprocess.Popen(  # noqa: S603 - our own command
        [*command, "fake-postmark", "--port", str(port), "--token", "tok-1"],
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
