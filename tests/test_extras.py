"""Each extra brings what its transport needs: installed alone into a fresh virtual environment,
a real ``celery worker`` from that environment runs one task through it.

``redis``: the worker consumes from Redis (kombu's Redis transport imports ``redis`` and
``packaging``). ``postgres``: the task reads PostgreSQL through SQLAlchemy and psycopg, on
kombu's filesystem transport, which needs nothing more. ``serve``: ``emailevents serve`` from
that environment answers a webhook on waitress (200, and 401 to wrong credentials).

Installing takes packages from the package index, through uv (the same metadata pip reads, in
seconds where pip takes minutes on two cores): without the index the tests skip, and fail under
``EMAILEVENTS_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, unavailable
from tests.wsgiserver import basic, free_port, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent

APP = """\
import os

import sqlalchemy
from celery import Celery

app = Celery("extras", broker=os.environ["BROKER"])
app.conf.update(
    task_default_queue=os.environ["QUEUE"],
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "data_folder_in": os.environ["FOLDER"],
        "data_folder_out": os.environ["FOLDER"],
        "polling_interval": 0.1,
    },
)


@app.task
def probe(path):
    url = os.environ.get("DATABASE")
    if url:
        with sqlalchemy.create_engine(url).connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    with open(path, "w") as done:
        done.write("ran")
"""


def install(tmp_path: Path, extra: str) -> Path:
    """A fresh virtual environment with ``emailevents[extra]`` alone; its ``bin`` folder."""
    venv = tmp_path / "venv"
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "--quiet", str(venv)], check=True, timeout=120)  # noqa: S603
    target = ["--python", str(venv / "bin" / "python")]
    installed = subprocess.run(  # noqa: S603 - uv into the new environment, our own checkout
        [*uv, "pip", "install", "--quiet", *target, f"{REPO}[{extra}]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if installed.returncode != 0:
        unavailable("the package index", installed.stderr[-2000:])
    return venv / "bin"


@pytest.mark.parametrize(
    ("extra", "broker", "database"),
    [
        ("redis", "redis://127.0.0.1:6379/15", None),
        ("postgres", "filesystem://", POSTGRES_URL),
    ],
)
def test_an_extra_alone_runs_a_task_on_a_real_worker(
    tmp_path: Path, extra: str, broker: str, database: str | None
) -> None:
    bin_folder = install(tmp_path, extra)
    folder = tmp_path / "broker"
    folder.mkdir()
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        "BROKER": broker,
        "QUEUE": f"extras-{uuid.uuid4().hex[:8]}",
        "FOLDER": str(folder),
        **({"DATABASE": database} if database else {}),
    }
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(  # noqa: S603 - the new environment's celery
        [str(bin_folder / "celery"), "-A", "app", "worker", "--pool", "solo", "-l", "WARNING"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    done = tmp_path / "ran"
    try:
        subprocess.run(  # noqa: S603 - the new environment's interpreter
            [
                str(bin_folder / "python"),
                "-c",
                f"from app import probe; probe.delay({str(done)!r})",
            ],
            cwd=tmp_path,
            env=env,
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        while not done.exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    output = (tmp_path / "worker.log").read_text(errors="replace")
    assert done.exists(), f"the worker with emailevents[{extra}] ran no task:\n{output[-3000:]}"


WEBAPP = """\
import sqlalchemy
from celery import Celery
from sqlalchemy.orm import sessionmaker

from emailevents import EmailEvents, OutboxSender

engine = sqlalchemy.create_engine("sqlite:///webapp.sqlite3")
events = EmailEvents("events.yaml", celery=Celery("webapp"), session_factory=sessionmaker(engine),
                     sender=OutboxSender(), webhook_auth=("postmark", "s3cret-pass"))
events.create_tables(engine)
"""

REGISTRY = """\
version: 1
defaults:
  from: "MyApp <notifications@myapp.test>"
entities: {}
events:
  weekly_report:
    toggle: always
    template: weekly-report
    entities: {}
    to: "ops@myapp.test"
"""

DELIVERY = {
    "RecordType": "Delivery",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Recipient": "ops@myapp.test",
    "Tag": "weekly_report",
    "DeliveredAt": "2026-12-02T13:56:14Z",
    "Metadata": {"event_id": "94b48740-4236-4bbf-84c2-85a1be9628cd"},
}


def _post(port: int, password: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/postmark/webhook",
        data=json.dumps(DELIVERY).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic("postmark", password)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_the_serve_extra_alone_answers_a_webhook_on_waitress(tmp_path: Path) -> None:
    bin_folder = install(tmp_path, "serve")
    (tmp_path / "webapp.py").write_text(WEBAPP, encoding="utf-8")
    (tmp_path / "events.yaml").write_text(REGISTRY, encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(  # noqa: S603 - the new environment's emailevents
        [str(bin_folder / "emailevents"), "serve", "--app", "webapp:events", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(port, server, 60)
        answers = (_post(port, "s3cret-pass"), _post(port, "wrong"))
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    output = (tmp_path / "serve.log").read_text(errors="replace")
    assert answers == (200, 401), output[-3000:]
    assert "Traceback" not in output
