"""The loop closed, end to end (issue 14's "Done means"): the local Postmark server sends 200
messages, posts every webhook twice and some newest first, over real HTTP, to the application
served by ``emailevents serve`` (waitress) on PostgreSQL; the database is cut in the middle of
the burst (503, which Postmark retries). Afterwards every timeline is right, each record is
stored once, the 13 bounced or complaining addresses are suppressed, and the next emit to them
is skipped without a request to Postmark."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from emailevents import RunResult, timeline
from emailevents.demo import models, seed
from emailevents.tables import message_events
from emailevents.testing.fake_postmark import FakePostmark
from tests.appmodule import app_module
from tests.brokers import TcpProxy, free_port
from tests.conftest import POSTGRES_URL, _postgres_engine
from tests.wsgiserver import AUTH

pytestmark = [pytest.mark.services, pytest.mark.slow]

MESSAGES = 200
BOUNCING = [f"gone{i}@partner.test" for i in range(10)]
COMPLAINING = 3

APP = """\
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from emailevents import EmailEvents, PostmarkSender
from emailevents.demo import hooks, models
from emailevents.demo.run import REGISTRY
from emailevents.testing import memory_app

engine = sa.create_engine(
    {url!r},
    pool_pre_ping=True,
    connect_args={{"options": "-csearch_path={schema}", "connect_timeout": 3}},
)
events = EmailEvents(
    REGISTRY,
    celery=memory_app(),
    session_factory=sessionmaker(engine),
    sender=PostmarkSender("test-token", api_url={api!r}),
    context={{"site_url": hooks.site_url}},
    webhook_auth={auth!r},
    set_default=False,
)
"""


@pytest.fixture
def schema_name() -> Iterator[str]:
    name = f"w_{uuid.uuid4().hex[:12]}"
    engine = _postgres_engine(name)
    engine.dispose()
    try:
        yield name
    finally:
        admin = sa.create_engine(POSTGRES_URL)
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """PostgreSQL as the served application reaches it: cut when the test says."""
    server = TcpProxy(("127.0.0.1", 5432))
    yield server
    server.close()


@dataclass
class World:
    """The application, on PostgreSQL directly (the served one reaches it through ``proxy``),
    with the demo world and an invitation for each message."""

    app: Any
    actor: dict[str, str]
    invitations: list[str]
    log: Path

    def invite(self, invitation: str) -> RunResult:
        result: RunResult = self.app.events.run(
            "user_invited", str(uuid.uuid4()), **self.actor, invitation=invitation
        )
        return result


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schema_name: str, fake_postmark: FakePostmark
) -> Iterator[World]:
    monkeypatch.chdir(tmp_path)
    direct = APP.format(url=POSTGRES_URL, schema=schema_name, api=fake_postmark.url, auth=AUTH)
    with app_module(tmp_path, direct, monkeypatch, prefix="direct") as app:
        models.Base.metadata.create_all(app.engine)
        app.events.create_tables(app.engine)
        with Session(app.engine) as session:
            demo = seed.seed(session)
            org = session.scalars(sa.select(models.Organization).filter_by(cuid=demo.acme_org))
            admin = session.scalars(sa.select(models.User).filter_by(cuid=demo.acme_admin))
            org_id, admin_id = org.one().id, admin.one().id
            invitations = [
                models.Invitation(
                    email=BOUNCING[i] if i < len(BOUNCING) else f"guest{i}@partner.test",
                    organization_id=org_id,
                    invited_by_id=admin_id,
                    role="viewer",
                )
                for i in range(MESSAGES)
            ]
            session.add_all(invitations)
            session.commit()
            cuids = [i.cuid for i in invitations]
        actor = {"user": demo.acme_admin, "org": demo.acme_org}
        yield World(app, actor, cuids, tmp_path / "serve.log")


@pytest.fixture
def served(
    world: World, tmp_path: Path, schema_name: str, proxy: TcpProxy, fake_postmark: FakePostmark
) -> Iterator[int]:
    """``emailevents serve`` in a process of its own, on the database behind ``proxy``: its
    port. What it prints goes to a file (a pipe nobody reads would fill, and block its logging),
    checked when it stops."""
    url = POSTGRES_URL.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    source = APP.format(url=url, schema=schema_name, api=fake_postmark.url, auth=AUTH)
    (tmp_path / "served.py").write_text(source, encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-c", "from emailevents.cli import main; main()", "serve"]
    with world.log.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own command
            [*command, "--app", "served:events", "--port", str(port), "--threads", "4"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, world.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "emailevents serve did not listen"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(15)
    output = world.log.read_text()
    assert "Traceback" not in output
    assert AUTH[1] not in output


def test_two_hundred_messages_their_webhooks_twice_and_out_of_order_through_a_database_cut(
    world: World, served: int, proxy: TcpProxy, fake_postmark: FakePostmark
) -> None:
    fake_postmark.webhooks.configure(
        f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{served}/postmark/webhook",
        duplicate=True,
        out_of_order=0.05,
    )
    fake_postmark.activity.bounce_addresses(BOUNCING)
    half = MESSAGES // 2
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(world.invite, world.invitations[:half]))
        proxy.cut()  # the database goes away in the middle of the burst
        results += pool.map(world.invite, world.invitations[half:])
        time.sleep(1.0)
        proxy.restore()
    assert Counter(o.status.value for r in results for o in r.outcomes) == {"sent": MESSAGES}
    sent = {o.recipient: (r.event_id, o.message_id) for r in results for o in r.outcomes}
    complaining = [f"guest{i}@partner.test" for i in range(half, half + COMPLAINING)]
    assert fake_postmark.webhooks.wait(60), _progress(fake_postmark)
    for address in complaining:
        fake_postmark.activity.spam_complaint(sent[address][1])
    assert fake_postmark.webhooks.wait(60), _progress(fake_postmark)

    # Every record reached the application, some after a 503 during the cut.
    deliveries = fake_postmark.webhooks.deliveries
    answers = Counter(a.status for d in deliveries for a in d.attempts)
    assert answers[503] > 0, f"the cut met no webhook: {answers}"
    assert {d.state for d in deliveries} == {"delivered"}
    assert {d.copy for d in deliveries} == {1, 2}
    assert "the database is unavailable (503" in world.log.read_text()

    with Session(world.app.engine) as session:
        # Each record stored once, however often it came.
        stored = session.execute(sa.select(sa.func.count()).select_from(message_events))
        assert stored.scalar_one() == len({d.number for d in deliveries})
        states = Counter(
            life.state
            for event_id, _ in sent.values()
            for life in timeline.explain(session, event_id).values()
        )
    assert states == {
        "delivered": MESSAGES - len(BOUNCING) - COMPLAINING,
        "bounced": len(BOUNCING),
        "complained": COMPLAINING,
    }

    held = {s.address: s for s in world.app.events.suppressions.list(stream="outbound")}
    assert sorted(held) == sorted(BOUNCING + complaining)
    assert {held[a].reason for a in BOUNCING} == {"HardBounce"}
    assert {held[a].reason for a in complaining} == {"SpamComplaint"}

    # The next emit to each of them is skipped, and Postmark hears nothing of it.
    asked = len(fake_postmark.requests)
    again = [world.invite(c) for c in world.invitations[: len(BOUNCING)]]
    again += [world.invite(c) for c in world.invitations[half : half + COMPLAINING]]
    assert {(o.status.value, o.reason.value) for r in again for o in r.outcomes} == {
        ("skipped", "suppressed")
    }
    assert len(fake_postmark.requests) == asked


def _progress(fake_postmark: FakePostmark) -> str:
    """Where the webhooks are: their states, and the answers their attempts got."""
    deliveries = fake_postmark.webhooks.deliveries
    states = Counter(d.state for d in deliveries)
    answers = Counter(a.status or a.error for d in deliveries for a in d.attempts)
    return f"webhooks still on their way: {dict(states)}, answers {dict(answers)}"
