"""The web component over real HTTP: the WSGI app on waitress in a thread, the same app run by
`emailevents serve` in a subprocess, and the ASGI app on uvicorn; every answer Postmark can get."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import sessionmaker

from emailevents import schema, web
from emailevents.store import message_events
from tests.conftest import examples
from tests.wsgiserver import AUTH, basic, free_port, post, serve, wait_for, webhook_record

EVENT_ID = "7a1c2d3e-0000-4000-8000-000000000001"


def delivery(**changes: Any) -> dict[str, Any]:
    record = {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "Ada@Acme.test",
        "Tag": "user_invited",
        "DeliveredAt": "2026-11-20T09:31:10.2735393-04:00",
        "Details": "Test delivery webhook details",
        "Metadata": {"event_id": EVENT_ID},
    }
    return record | changes


@pytest.fixture
def engine(sqlite_engine: sa.Engine) -> sa.Engine:
    return sqlite_engine


@pytest.fixture
def site(engine: sa.Engine) -> web.Site:
    return web.Site(sessionmaker(engine), AUTH)


@pytest.fixture
def port(site: web.Site) -> Iterator[int]:
    yield from serve(web.WsgiApp(site))


def stored(engine: sa.Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(message_events)))


def test_a_delivery_is_recorded_and_answered_200(port: int, engine: sa.Engine) -> None:
    status, _, body = post(port, delivery())
    assert (status, json.loads(body)) == (200, {"recorded": "stored"})
    (row,) = stored(engine)
    assert (row.event_id, row.recipient, row.record_type) == (EVENT_ID, "ada@acme.test", "Delivery")
    assert row.message_id == "883953f4-6105-42a2-a16a-77a8eac79483"


@pytest.mark.parametrize(
    "auth",
    [None, basic("postmark", "wrong"), basic("someone", AUTH[1]), "Basic !!!", "Bearer x"],
)
def test_wrong_or_missing_credentials_get_401_with_a_challenge(
    port: int, engine: sa.Engine, auth: str | None
) -> None:
    status, headers, _ = post(port, delivery(), auth=auth)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Basic realm="emailevents"')
    assert stored(engine) == []


def oversized(port: int) -> int:
    """The status of a POST announced as 2 MB, its body never sent: a server that reads no
    more than its limit answers from the headers (a client sending the body meanwhile may
    find the connection closed under it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/postmark/webhook")
        connection.putheader("Authorization", basic(*AUTH))
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(2_000_000))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_body_over_the_limit_gets_413_unread(port: int) -> None:
    assert oversized(port) == 413


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        json.dumps({"RecordType": "Inbound", "MessageID": "x"}).encode(),
        json.dumps({k: v for k, v in delivery().items() if k != "Recipient"}).encode(),
        json.dumps(delivery(DeliveredAt="yesterday")).encode(),
        # What no database keeps, or longer than the timeline's columns: Postmark would retry
        # the 500 a failed INSERT gives for ever, so these are refused as it reads them.
        json.dumps(delivery(Metadata={"event_id": "ev\x00il"})).encode(),
        json.dumps(delivery(Details="\ud800")).encode(),
        json.dumps(delivery(MessageID="m" * 65)).encode(),
        json.dumps(delivery(Recipient="a" * 311 + "@acme.test")).encode(),
    ],
)
def test_garbage_or_an_unknown_shape_gets_400(
    port: int, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, answer = post(port, body)
    assert status == 400, answer
    assert "Ada@Acme.test" not in caplog.text  # the body's personal data is not logged
    assert "refused (400)" in caplog.text


def test_unknown_paths_and_other_methods(port: int) -> None:
    assert post(port, delivery(), path="/elsewhere")[0] == 404
    status, headers, _ = post(port, b"", method="GET")
    assert (status, headers["Allow"]) == (405, "POST")


def test_without_webhook_auth_the_route_is_not_there(engine: sa.Engine) -> None:
    for port in serve(web.WsgiApp(web.Site(sessionmaker(engine)))):
        assert post(port, delivery())[0] == 404


def test_an_unreachable_database_gets_503_for_postmark_to_retry() -> None:
    # Nothing listens on port 9 here: connecting is refused at once.
    engine = sa.create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:9/none", connect_args={"connect_timeout": 2}
    )
    for port in serve(web.WsgiApp(web.Site(sessionmaker(engine), AUTH))):
        assert post(port, delivery())[0] == 503


def test_the_same_record_posted_twice_and_at_once_is_stored_once(
    port: int, engine: sa.Engine
) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(port, delivery()), range(8)))
    assert {status for status, _, _ in answers} == {200}
    recorded = sorted(json.loads(body)["recorded"] for _, _, body in answers)
    assert recorded == ["duplicate"] * 7 + ["stored"]
    assert post(port, delivery())[2] == b'{"recorded": "duplicate"}'
    assert len(stored(engine)) == 1


def test_a_record_posted_again_is_answered_duplicate_on_each_database(
    db_engine: sa.Engine,
) -> None:
    # In-process: what the database says back about the second INSERT decides the answer.
    schema.upgrade(db_engine)
    app = web.WsgiApp(web.Site(sessionmaker(db_engine), AUTH))
    body = json.dumps(delivery()).encode()
    answers = []
    for _ in range(2):
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/postmark/webhook",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": basic(*AUTH),
            "wsgi.input": io.BytesIO(body),
        }
        answers.append(json.loads(b"".join(app(environ, lambda *_: None))))
    assert answers == [{"recorded": "stored"}, {"recorded": "duplicate"}]
    assert len(stored(db_engine)) == 1


def test_records_of_messages_we_did_not_send_are_counted_not_stored(
    port: int, engine: sa.Engine
) -> None:
    # No event id, one that is not a string, one longer than any of ours.
    for metadata in ({}, {"event_id": 5}, {"event_id": "x" * 65}):
        status, _, body = post(port, delivery(Metadata=metadata, MessageID=str(uuid.uuid4())))
        assert (status, json.loads(body)) == (200, {"recorded": "foreign"})
    assert stored(engine) == []
    with engine.connect() as connection:
        counts = connection.execute(
            sa.text("SELECT record_type, count FROM emailevents_foreign_records")
        )
        assert list(counts) == [("Delivery", 3)]


def _asgi_call(app: web.AsgiApp, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    sent: list[dict[str, Any]] = []
    chunks = [body[:10], body[10:]]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/emails/postmark/webhook",
        "root_path": "/emails",
        "headers": headers,
    }
    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def test_the_asgi_app_answers_with_the_same_handler_mounted_below_a_path(
    site: web.Site, engine: sa.Engine
) -> None:
    app = web.AsgiApp(site)
    auth = [(b"authorization", basic(*AUTH).encode())]
    assert _asgi_call(app, json.dumps(delivery()).encode(), auth) == 200
    assert _asgi_call(app, json.dumps(delivery()).encode(), []) == 401
    # No Content-Length: the body is counted as it comes, and refused past the limit.
    assert _asgi_call(app, b"{" * 1_000_001, auth) == 413
    assert len(stored(engine)) == 1


def test_the_asgi_app_on_uvicorn(site: web.Site, engine: sa.Engine) -> None:
    import uvicorn  # noqa: PLC0415

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(web.AsgiApp(site), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert post(port, delivery())[0] == 200
        assert oversized(port) == 413
        assert post(port, delivery(), auth=None)[0] == 401
    finally:
        server.should_exit = True
        thread.join(10)
    assert len(stored(engine)) == 1


APP = """\
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from emailevents import EmailEvents, OutboxSender
from emailevents.demo import hooks
from emailevents.demo.run import REGISTRY
from emailevents.testing import memory_app

engine = sa.create_engine("sqlite:///{db}")
events = EmailEvents(REGISTRY, celery=memory_app(), session_factory=sessionmaker(engine),
                     sender=OutboxSender(), context={{"site_url": hooks.site_url}},
                     webhook_auth=("postmark", "s3cret-pass"), set_default=False)
events.create_tables(engine)
"""


def test_emailevents_serve_runs_the_app_standalone(tmp_path: Path) -> None:
    (tmp_path / "webapp.py").write_text(APP.format(db=tmp_path / "served.sqlite3"))
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    command = [sys.executable, "-c", "from emailevents.cli import main; main()", "serve"]
    process = subprocess.Popen(  # noqa: S603 - our own command
        [*command, "--app", "webapp:events", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(port, process)
        assert post(port, delivery())[0] == 200
        assert post(port, delivery(), auth=basic("postmark", "nope"))[0] == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert "Traceback" not in output
    assert "s3cret-pass" not in output
    assert "webhook: event=user_invited event_id=" in output


def test_posting_to_a_stopped_server_is_refused(site: web.Site) -> None:
    # The thread's server closes with its fixture: nothing answers afterwards.
    ports = list(serve(web.WsgiApp(site)))
    with pytest.raises(OSError):
        post(ports[0], delivery())


RECORD_SHAPES = [
    webhook_record("Delivery", "ada@acme.test", "m1", DeliveredAt="2026-12-02T10:00:00Z"),
    webhook_record(
        "Bounce",
        "ada@acme.test",
        "m1",
        ID=1,
        Type="HardBounce",
        Inactive=True,  # its Type is then the suppression's reason
        BouncedAt="2026-12-02T10:00:00Z",
    ),
    webhook_record(
        "SpamComplaint",
        "ada@acme.test",
        "m1",
        ID=2,
        Type="SpamComplaint",
        BouncedAt="2026-12-02T10:00:00Z",
    ),
    webhook_record(
        "SubscriptionChange",
        "ada@acme.test",
        "m1",
        ChangedAt="2026-12-02T10:00:00Z",
        SuppressSending=True,
        SuppressionReason="HardBounce",
        Origin="Recipient",
    ),
    webhook_record(
        "Click", "ada@acme.test", "m1", ReceivedAt="2026-12-02T10:00:00Z", OriginalLink="x"
    ),
]


@settings(
    max_examples=examples(60),
    deadline=None,
    # One database for every example: each posts a record, which stands alone.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    shape=st.sampled_from(RECORD_SHAPES),
    field=st.sampled_from(
        [
            "Type",
            "SuppressionReason",
            "MessageStream",
            "MessageID",
            "Tag",
            "Origin",
            "Email",
            "Recipient",
            "OriginalLink",
            "Description",
        ]
    ),
    value=st.one_of(
        st.text(max_size=40),
        st.integers(1, 400).map(lambda n: "é" * n),  # past any column's length
        st.integers(),
        st.none(),
        st.booleans(),
    ),
)
def test_any_value_in_any_field_is_recorded_or_refused_never_a_500(
    db_engine: sa.Engine, shape: dict[str, Any], field: str, value: Any
) -> None:
    schema.upgrade(db_engine)  # once per engine: verified and cached
    app = web.WsgiApp(web.Site(sessionmaker(db_engine), AUTH))
    body = json.dumps({**shape, field: value}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": web.WEBHOOK_PATH,
        "HTTP_AUTHORIZATION": basic(*AUTH),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    answered: list[str] = []
    app(environ, lambda status, _headers: answered.append(status))
    assert answered[0][:3] in {"200", "400"}, (field, value, answered)
