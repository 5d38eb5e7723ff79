"""FakePostmark's HTTP plumbing: requests read within Postmark's size limits, answers written.

:class:`HTTPServer` knows nothing of Postmark: it hands each request to the ``answer`` callback
it is given and writes back the :class:`Response`, held or dropped as the response says. Keep-alive
connections are tracked so that stopping the server can close them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import RequestRefusedError

__all__ = ["HTTPServer", "Response", "error_response", "json_response"]

logger = logging.getLogger(__name__)

# Postmark's limits (its API reference).
MAX_EMAIL_BYTES = 10 * 1024 * 1024  # "10 MB for our Email API"
MAX_BATCH_BYTES = 50 * 1024 * 1024  # "and 50 MB total for batch"
MAX_OTHER_BYTES = 1024 * 1024


@dataclass
class Response:
    """An answer to write: status, body and headers; ``delay`` holds it, ``drop`` withholds it."""

    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering (after the delay)


def json_response(status: int, payload: Any) -> Response:
    """``payload`` as a JSON answer."""
    return Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def error_response(exc: RequestRefusedError) -> Response:
    """Postmark's error answer for a refused request."""
    return json_response(exc.status, exc.body())


Answer = Callable[[str, str, dict[str, str], dict[str, str], bytes], Response]
"""``answer(method, path, query, headers, body)``: what the server answers a request with."""


class HTTPServer(ThreadingHTTPServer):
    """Serves each request on a thread of its own.

    Args:
        address: ``(host, port)``; an IPv6 host listens on IPv6.
        answer: the answer to a request whose body was read.
        note_request: called with the method and path of every request, before its body is read.
        stopping: set when the server stops: cuts every held answer short.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        answer: Answer,
        note_request: Callable[[str, str], None],
        stopping: threading.Event,
    ) -> None:
        self.answer = answer
        self.note_request = note_request
        self.stopping = stopping
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        # The stdlib prints these to stderr; a client that hangs up mid-request is no news.
        # (socketserver calls this inside its exception handler, so exc_info is the error.)
        logger.debug("fake Postmark: error serving %s", client_address, exc_info=True)  # noqa: LOG014

    def close_connections(self) -> None:
        """Shut down every open connection (their threads then end)."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions use it
    server_version = "FakePostmark"
    sys_version = ""
    timeout = 30  # seconds an idle keep-alive connection is kept

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the client went away
            super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        self.server.note_request(self.command, path)
        body = self._read_body(path)
        if body is None:
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        query = dict(parse_qsl(split.query))
        self._answer(self.server.answer(self.command, path, query, headers, body))

    def _read_body(self, path: str) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self._answer(Response(411, b"Length Required", "text/plain"), close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        limit = (
            MAX_BATCH_BYTES
            if "batch" in path.lower()
            else MAX_EMAIL_BYTES
            if path.startswith(("/email", "/templates"))
            else MAX_OTHER_BYTES
        )
        if length < 0:
            self._answer(Response(400, b"Bad Content-Length", "text/plain"), close=True)
            return None
        if length > limit:
            # Postmark answers 413 Payload Too Large past its size limits; the body is not read.
            message = f"Request body over {limit} bytes".encode()
            self._answer(Response(413, message, "text/plain"), close=True)
            return None
        return self.rfile.read(length) if length else b""

    def _answer(self, response: Response, *, close: bool = False) -> None:
        if response.delay:
            self.server.stopping.wait(response.delay)
        if response.drop:
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:
            self.close_connection = True  # the client gave up (a timeout) or went away

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:  # noqa: ARG002
        # Method, path and status only: never the query string, headers (the token) or body.
        path = urlsplit(self.path).path
        logger.debug("%s %s -> %s", self.command, path, code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("fake Postmark: %s", format % args)
