"""The example applications in examples/ work as their READMEs say.

Each test copies its example to ``tmp_path`` and runs it there with the README's own commands,
each a process of its own: the web server (uvicorn; Flask's werkzeug server) and a Celery worker
on the filesystem broker, sending with the real ``PostmarkSender`` over HTTP to the local
Postmark-compatible server, which runs in the test so that it can read what arrived. Requests
go over HTTP. A request that commits sends its email; a request that emitted and then failed
leaves nothing: no email, no pending emit, no delivery row.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import sqlalchemy as sa

import emailevents
from emailevents.testing.fake_postmark import FakePostmark, ReceivedMessage

EXAMPLES = Path(__file__).parent.parent / "examples"
TOKEN = "test-token"
SITE_URL = "https://app.acme.test"
WAIT = 30.0
"""Seconds a server is given to listen, and the worker to send what the test expects."""

# The commands each README tells its reader to run. The tests add a port, and a concurrency of 1
# (one task at a time, in the order they were published); the local Postmark server runs in the
# test, as FakePostmark with the same templates, so that the test can read what it received.
FASTAPI = {
    "init-db": "python -m projects_api.init_db",
    "web": "uvicorn projects_api.main:app",
    "worker": "celery -A projects_api.main:celery_app worker --loglevel=INFO",
    "postmark": "emailevents fake-postmark --templates postmark",
}
FLASK = {
    "init-db": "flask --app findings_app.app init-db",
    "web": "flask --app findings_app.app run",
    "worker": "celery -A findings_app.app:celery_app worker --loglevel=INFO",
    "postmark": "emailevents fake-postmark --templates postmark",
}
# What the reader's shell would not have: the settings of the environment running the tests.
_NOT_THE_READERS = ("POSTMARK_SERVER_TOKEN", "POSTMARK_API_URL", "CELERY_BROKER_URL", "SITE_URL")

T = TypeVar("T")


@pytest.mark.slow
def test_fastapi_example_sends_what_commits_and_nothing_for_a_rollback(tmp_path: Path) -> None:
    app = copy_example("fastapi", tmp_path)
    database = tmp_path / "projects.sqlite3"
    env = readers_env(DATABASE_URL=f"sqlite:///{database}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ada = {"X-User": "ada@acme.test"}

    with (
        FakePostmark(templates=app / "postmark") as postmark,
        running(app, FASTAPI, env, postmark, port) as example,
    ):
        wait_until_serving(example, f"{url}/openapi.json")
        # The import emits for Risk model and Fraud model, then fails on the third project (its
        # name is taken by the first): 409, and the transaction rolls back, emits included.
        failed = requests.post(
            f"{url}/projects/import",
            headers=ada,
            json=[
                {"name": "Risk model", "owner": "owen@acme.test"},
                {"name": "Fraud model", "owner": "owen@acme.test"},
                {"name": "Risk model", "owner": "owen@acme.test"},
            ],
            timeout=10,
        )
        assert (failed.status_code, failed.json()) == (
            409,
            {"detail": "'Risk model' exists already"},
        )
        created = requests.post(
            f"{url}/projects",
            headers=ada,
            json={"name": "Churn model", "owner": "owen@acme.test"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        imported = requests.post(
            f"{url}/projects/import",
            headers=ada,
            json=[
                {"name": "Credit model", "owner": "owen@acme.test"},
                {"name": "Pricing model", "owner": "owen@acme.test"},
            ],
            timeout=10,
        )
        assert imported.status_code == 201, imported.text
        projects = {p["name"]: p["cuid"] for p in [created.json(), *imported.json()]}
        messages = wait_for_sent(example, postmark, database, len(projects))

    by_name = {m.template_model["project_name"]: m for m in messages}
    assert set(by_name) == {"Churn model", "Credit model", "Pricing model"}
    for name, message in by_name.items():
        assert message.to == "Owen Ortiz <owen@acme.test>"
        assert message.recipients == ["owen@acme.test"]
        assert message.template_alias == "project-created"
        assert message.tag == "project_created"
        assert message.subject == f"Ada Lovelace created {name}"
        assert message.template_model == {
            "subject": f"Ada Lovelace created {name}",
            "org_name": "Acme",
            "actor_name": "Ada Lovelace",
            "project_name": name,
            "url": f"{SITE_URL}/projects/{projects[name]}",
        }
        assert f"Open the project: {SITE_URL}/projects/{projects[name]}" in message.text_body
    assert_only_these_emits(database, messages)
    assert table_column(database, "projects", "name") == set(projects)


@pytest.mark.parametrize(("example", "commands"), [("fastapi", FASTAPI), ("flask", FLASK)])
def test_the_readme_shows_the_commands_the_tests_run(
    example: str, commands: dict[str, str]
) -> None:
    readme = (EXAMPLES / example / "README.md").read_text(encoding="utf-8")
    for command in commands.values():
        assert command in readme, f"examples/{example}/README.md does not show '{command}'"


@pytest.mark.slow
def test_flask_example_sends_what_commits_and_nothing_for_a_rollback(tmp_path: Path) -> None:
    app = copy_example("flask", tmp_path)
    database = tmp_path / "findings.sqlite3"
    env = readers_env(DATABASE_URL=f"sqlite:///{database}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ada = {"X-User": "ada@acme.test"}

    with (
        FakePostmark(templates=app / "postmark") as postmark,
        running(app, FLASK, env, postmark, port) as example,
    ):
        wait_until_serving(example, f"{url}/findings")
        # The import emits for the first two findings, then aborts on the third (its assignee is
        # no member): 422, no commit, and Flask-SQLAlchemy rolls the session back at the end of
        # the request, emits included.
        failed = requests.post(
            f"{url}/findings/import",
            headers=ada,
            json=[
                {"title": "Stale training data", "assignee": "owen@acme.test"},
                {"title": "PII in logs", "severity": "high", "assignee": "owen@acme.test"},
                {"title": "Unowned model", "assignee": "nobody@acme.test"},
            ],
            timeout=10,
        )
        assert (failed.status_code, failed.json()) == (
            422,
            {"error": "'nobody@acme.test' is not a member of Acme"},
        )
        reported = requests.post(
            f"{url}/findings",
            headers=ada,
            json={
                "title": "Drift in churn model",
                "severity": "high",
                "assignee": "owen@acme.test",
            },
            timeout=10,
        )
        assert reported.status_code == 201, reported.text
        imported = requests.post(
            f"{url}/findings/import",
            headers=ada,
            json=[
                {"title": "Missing monitoring", "severity": "low", "assignee": "owen@acme.test"},
                {"title": "Undocumented features", "assignee": "owen@acme.test"},
            ],
            timeout=10,
        )
        assert imported.status_code == 201, imported.text
        findings = {f["title"]: f for f in [reported.json(), *imported.json()]}
        messages = wait_for_sent(example, postmark, database, len(findings))

    by_title = {m.template_model["title"]: m for m in messages}
    assert set(by_title) == {"Drift in churn model", "Missing monitoring", "Undocumented features"}
    for title, message in by_title.items():
        finding = findings[title]
        severity = finding["severity"]
        assert message.to == "Owen Ortiz <owen@acme.test>"
        assert message.recipients == ["owen@acme.test"]
        assert message.template_alias == "finding-reported"
        assert message.tag == "finding_reported"
        assert message.subject == f"New {severity} finding in Acme: {title}"
        assert message.template_model == {
            "subject": f"New {severity} finding in Acme: {title}",
            "org_name": "Acme",
            "reporter_name": "Ada Lovelace",
            "title": title,
            "severity": severity,
            "url": f"{SITE_URL}/findings/{finding['cuid']}",
        }
        assert f"Open the finding: {SITE_URL}/findings/{finding['cuid']}" in message.text_body
    assert_only_these_emits(database, messages)
    assert table_column(database, "findings", "title") == set(findings)


# -- helpers --------------------------------------------------------------------------------------


@dataclass
class Background:
    """A process of the example, and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def background(name: str, args: list[str], cwd: Path, env: dict[str, str]) -> Iterator[Background]:
    """Run a process until the block ends; it must not print a traceback."""
    log = cwd.parent / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, the README's command
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Background(name, process, log)
    try:
        yield running
    finally:
        stop(process)
    assert "Traceback (most recent call last)" not in running.output(), (
        f"the {name} printed a traceback:\n{running.output()}"
    )


@contextlib.contextmanager
def running(
    app: Path, commands: dict[str, str], env: dict[str, str], postmark: FakePostmark, port: int
) -> Iterator[list[Background]]:
    """The example, as its README runs it: the tables, the web server and the worker.

    The web server is started first, so that its start-up overlaps the others'; the worker once
    the tables exist, as the README says (a worker checks emailevents' tables when it starts).
    """
    with contextlib.ExitStack() as stack:
        web = stack.enter_context(
            background("web", [*argv(commands["web"]), "--port", str(port)], app, env)
        )
        init_db = subprocess.run(  # noqa: S603 - this interpreter, the README's command
            argv(commands["init-db"]),
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert init_db.returncode == 0, init_db.stdout + init_db.stderr
        worker = stack.enter_context(
            background(
                "worker",
                [*argv(commands["worker"]), "--concurrency=1"],
                app,
                {**env, **postmark_env(postmark)},
            )
        )
        yield [web, worker]


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the process and its children (a worker's pool): what it was run for is done, and a
    Celery warm shutdown takes seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def copy_example(example: str, tmp_path: Path) -> Path:
    """The example as a reader has it: its own folder, nothing left from another run."""
    return Path(
        shutil.copytree(
            EXAMPLES / example,
            tmp_path / example,
            ignore=shutil.ignore_patterns("__pycache__", "broker", "instance", "*.sqlite3"),
        )
    )


def argv(command: str) -> list[str]:
    """A README command, run by this interpreter (the reader's virtualenv)."""
    program, *args = shlex.split(command)
    return (
        [sys.executable, *args] if program == "python" else [sys.executable, "-m", program, *args]
    )


def readers_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_THE_READERS}
    return {**env, "PYTHONUNBUFFERED": "1", "SITE_URL": SITE_URL, **settings}


def postmark_env(postmark: FakePostmark) -> dict[str, str]:
    """What the README has the worker started with: the local server, and its token."""
    return {"POSTMARK_API_URL": postmark.url, "POSTMARK_SERVER_TOKEN": TOKEN}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_serving(example: list[Background], url: str) -> None:
    def answered() -> bool:
        with contextlib.suppress(requests.ConnectionError):
            requests.get(url, timeout=2)
            return True
        return False

    eventually(answered, example, f"{url} to answer")


def wait_for_sent(
    example: list[Background], postmark: FakePostmark, database: Path, count: int
) -> list[ReceivedMessage]:
    """Wait for ``count`` messages at Postmark, and ``count`` sends recorded in the database.

    The worker runs one task at a time, in the order they were published. The failed request
    came first: had it published an emit, that task would have run, and left its row in the
    delivery log, before the ``count`` emits that followed it were done.
    """
    eventually(
        lambda: (
            len(postmark.messages) >= count
            and sum(row.status == "sent" for row in delivery_rows(database)) >= count
        ),
        example,
        f"{count} messages at Postmark, recorded as sent",
    )
    return postmark.messages


def eventually(check: Callable[[], T], watched: list[Background], what: str) -> T:
    """Wait until ``check()`` is true; fail with what the processes printed if one exits first
    or time runs out."""
    deadline = time.monotonic() + WAIT
    while True:
        result = check()
        if result:
            return result
        exited = [p for p in watched if p.process.poll() is not None]
        if exited or time.monotonic() > deadline:
            why = f"the {exited[0].name} exited" if exited else f"{WAIT:.0f} s passed"
            logs = "\n".join(f"--- {p.name}:\n{p.output()}" for p in watched)
            pytest.fail(f"waiting for {what}: {why}\n{logs}")
        time.sleep(0.05)


def delivery_rows(database: Path) -> list[Any]:
    deliveries = emailevents.metadata.tables["emailevents_deliveries"]
    return rows(
        database, sa.select(deliveries.c.event_id, deliveries.c.status, deliveries.c.reason)
    )


def assert_only_these_emits(database: Path, messages: list[ReceivedMessage]) -> None:
    """Every emit the database knows of is one of ``messages``, run and sent: no task ran for an
    emit of the request that rolled back (it would have left a delivery row, ``entity_missing``
    at least), and no row of it is left in ``emailevents_emits``."""
    sent = {m.metadata["event_id"] for m in messages}
    assert len(sent) == len(messages)
    assert sorted(tuple(row) for row in delivery_rows(database)) == sorted(
        (event_id, "sent", "sent") for event_id in sent
    )
    emits = emailevents.metadata.tables["emailevents_emits"]
    assert {row.event_id: row.state for row in rows(database, sa.select(emits))} == dict.fromkeys(
        sent, "published"
    )


def table_column(database: Path, table: str, column: str) -> set[Any]:
    return {row[0] for row in rows(database, sa.text(f"SELECT {column} FROM {table}"))}  # noqa: S608


def rows(database: Path, query: sa.Executable) -> list[Any]:
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(query))
    finally:
        engine.dispose()
