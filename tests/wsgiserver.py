"""A WSGI app on a threaded standard-library server, for the web tests (a plain module, which
pytest does not rewrite: see tests/appmodule.py), the credentials they post with, the
webhook records they post, and waiting for a server process to listen."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import socketserver
import subprocess
import threading
import time
import wsgiref.simple_server
from collections.abc import Iterator
from typing import Any

import pytest

AUTH = ("postmark", "s3cret-pass")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


def serve(app: Any) -> Iterator[int]:
    """``app`` on a threaded standard-library WSGI server (a request per thread): its port."""
    server = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, app, server_class=_Server, handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def post(
    port: int,
    body: bytes | dict[str, Any],
    *,
    auth: str | None = basic(*AUTH),
    path: str = "/postmark/webhook",
    method: str = "POST",
    content_type: str = "application/json",
) -> tuple[int, Any, bytes]:
    """One request to the server on ``port``: status, headers and body of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": content_type}
    if auth is not None:
        headers["Authorization"] = auth
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def webhook_record(
    kind: str, recipient: str, message_id: str, *, event_id: str = "ev-comment", **fields: Any
) -> dict[str, Any]:
    """A Postmark webhook record of ``kind`` about a message of the demo's comment event."""
    common = {
        "RecordType": kind,
        "MessageID": message_id,
        "Tag": "model_comment_added",
        "MessageStream": "outbound",
        "Metadata": {"event_id": event_id},
    }
    if kind in {"Bounce", "SpamComplaint"}:
        return common | {"Email": recipient, "TypeCode": 1, **fields}
    return common | {"Recipient": recipient, **fields}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    """Return once ``process`` listens on ``port``; fail if it exits or takes longer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    pytest.fail("the server did not listen")
