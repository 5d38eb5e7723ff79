"""FakePostmark itself: started and stopped, what it received, and where each request goes.

Pages and control endpoints (``/``, ``/messages/...``, ``/__...``) need no token and are never
faulted nor held; every other request is authenticated, may be faulted (:mod:`.faults`) and is
answered by Postmark's API (:mod:`.routes`).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from ...errors import RequestRefusedError
from .activity import Activity
from .faults import MAX_FAULT_DELAY, Faults
from .handler import HTTPServer, Response, error_response, json_response
from .messages import Mailbox, ReceivedMessage
from .pages import MESSAGE_PAGE, Pages, script
from .routes import DEFAULT_STREAMS, STREAM_TYPES, Api
from .templates import StoredTemplate, TemplateStore, read_template_files
from .webhook_page import webhooks_page
from .webhooks import RECORD_TYPES, Webhooks

__all__ = ["FakePostmark"]

logger = logging.getLogger(__name__)

# Recorded answers: the team's Postmark reference notes.
_NO_TOKEN = "No Account or Server API tokens were supplied in the HTTP headers."  # noqa: S105 - a message
# Assumed wording: the code is Postmark's, the sentence ours.
_JSON_REQUIRED = "The request must have the Content-Type header set to application/json."


class FakePostmark:
    """A Postmark-compatible HTTP server on this machine, for tests and local development.

    Args:
        host: the address to listen on; keep the loopback address unless you mean otherwise.
        port: the port; 0 picks a free one (read it back from :attr:`url`).
        tokens: the server API tokens it accepts in ``X-Postmark-Server-Token``.
        templates: a directory of YAML template files, one YAML file (one template or a list),
            or a list of mappings; each has Postmark's ``Name``, ``Alias``, ``Subject``,
            ``HtmlBody``, ``TextBody`` and optionally ``TemplateId`` (assigned when absent).
        max_messages: how many received messages are kept (the oldest go first).
        message_streams: the server's message streams, ID -> ``MessageStreamType``
            (``Transactional``, ``Broadcasts`` or ``Inbound``), as ``GET /message-streams``
            lists them; by default Postmark's three: ``outbound``, ``broadcast``, ``inbound``.
        latency: seconds every API answer is held, as if Postmark were a network away (see
            :meth:`set_latency`).
        webhook_url: post webhooks here (``https://user:pass@host/path`` sends Basic
            credentials); more settings with ``server.webhooks.configure(...)``.
        webhook_record_types: which records to post: ``Delivery``, ``Bounce``,
            ``SpamComplaint``, ``Open``, ``Click``, ``SubscriptionChange`` (all by default).
        webhook_retry_scale: Postmark's retry schedule multiplied by this (0.001: its first
            retry after 60 ms).

    Raises:
        ValueError: a latency out of range, or webhook settings that are not valid.
        TemplateLoadError: a template is malformed, its content does not parse, or an id or
            alias is used twice.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Iterable[str] = ("test-token",),
        templates: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
        max_messages: int = 10_000,
        message_streams: Mapping[str, str] | None = None,
        latency: float = 0.0,
        webhook_url: str | None = None,
        webhook_record_types: Iterable[str] = RECORD_TYPES,
        webhook_retry_scale: float = 0.001,
    ) -> None:
        self.host = host
        self.message_streams = dict(DEFAULT_STREAMS if message_streams is None else message_streams)
        if not set(self.message_streams.values()) <= STREAM_TYPES:
            raise ValueError(f"message stream types are {', '.join(sorted(STREAM_TYPES))}")
        self.port = port
        self._tokens = tuple(tokens)
        if not self._tokens or not all(isinstance(t, str) and t for t in self._tokens):
            raise ValueError("tokens must be one or more non-empty strings")
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self.faults = Faults()
        self._mailbox = Mailbox(self._lock, max_messages)
        self._requests: deque[tuple[str, str]] = deque(maxlen=100_000)
        self._templates = TemplateStore(self._lock)
        self._pages = Pages(self._mailbox)
        self.webhooks = Webhooks()
        """Where webhooks go, and what was posted (:class:`~.webhooks.Webhooks`)."""
        self.activity = Activity(self._lock, self._mailbox, self.webhooks)
        """Bounces, complaints, opens, clicks and suppressions (:class:`~.activity.Activity`)."""
        self._api = Api(
            self._templates, self._mailbox, self.faults, self.message_streams, self.activity
        )
        if webhook_url is not None:
            self.webhooks.configure(
                webhook_url, record_types=webhook_record_types, retry_scale=webhook_retry_scale
            )
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        self._latency = 0.0
        self.set_latency(latency)
        self._initial: list[tuple[str, Mapping[str, Any]]] = []
        if templates is not None:
            if isinstance(templates, str | os.PathLike):
                self._initial = read_template_files(templates)
            else:
                self._initial = [(f"template {i + 1}", t) for i, t in enumerate(templates)]
            self._templates.load(self._initial)

    # -- lifecycle --

    def start(self) -> Self:
        """Listen and serve in a background (daemon) thread; returns the server."""
        with self._lock:
            if self._thread is not None:
                return self
            server = self._bind()
            self._thread = threading.Thread(
                target=self._run, args=(server,), name=f"fake-postmark-{self.port}", daemon=True
            )
            self._thread.start()
        self._serving.wait(5)
        return self

    def serve_forever(self) -> None:
        """Listen and serve in this thread until :meth:`stop` is called or Ctrl-C (for the CLI)."""
        server = self._bind()
        try:
            self._run(server)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, drop open connections and cut short any held responses."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()
        if self._serving.is_set():
            self._shutdown(server)
        server.close_connections()
        server.server_close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self.webhooks.stop()
        self._serving.clear()
        self._stopping.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _bind(self) -> HTTPServer:
        with self._lock:
            if self._server is not None:
                raise RuntimeError("this FakePostmark is already listening")
            self._server = HTTPServer(
                (self.host, self.port),
                answer=self._answer,
                note_request=self._note_request,
                stopping=self._stopping,
            )
            self.port = self._server.server_address[1]
            return self._server

    @staticmethod
    def _shutdown(server: HTTPServer) -> None:
        # serve_forever notices a shutdown only when its select() returns: knock until it has,
        # rather than wait out the poll interval.
        stopper = threading.Thread(target=server.shutdown, name="fake-postmark-stop", daemon=True)
        stopper.start()
        address = server.server_address[:2]
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=0.5).close()  # type: ignore[arg-type]
            stopper.join(0.01)

    def _run(self, server: HTTPServer) -> None:
        self._serving.set()
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            self._serving.clear()

    @property
    def url(self) -> str:
        """The root URL to give postmarker (``root_api_url``) or ``POSTMARK_API_URL``."""
        if self._server is None:
            raise RuntimeError("start() the server first: its port is chosen when it listens")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # -- what happened --

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Every message accepted, oldest first (a snapshot)."""
        return self._mailbox.snapshot()[0]

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every HTTP request received as ``(method, path)``, oldest first (a snapshot)."""
        with self._lock:
            return list(self._requests)

    @property
    def templates(self) -> list[StoredTemplate]:
        """The templates held now, by id."""
        return self._templates.listed()

    def message(self, message_id: str) -> ReceivedMessage:
        """One received message by its MessageID.

        Raises:
            KeyError: no such message.
        """
        return self._mailbox.find(message_id)

    @property
    def latency(self) -> float:
        """Seconds every API answer is held (0: none)."""
        with self._lock:
            return self._latency

    def set_latency(self, seconds: float) -> None:
        """Hold every API answer ``seconds`` (0 to stop), as a Postmark a network away would.

        Each request waits in its own connection's thread, so concurrent requests wait together,
        not one after another. The wait is cut short when the server stops. Pages and the
        ``/__`` control endpoints are not held; :meth:`reset` keeps the latency.

        Raises:
            ValueError: not a number of seconds between 0 and 120.
        """
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= MAX_FAULT_DELAY
        ):
            raise ValueError(
                f"latency must be between 0 and {MAX_FAULT_DELAY} seconds, not {seconds!r}"
            )
        with self._lock:
            self._latency = float(seconds)

    def reset(self) -> None:
        """Forget messages, requests, faults, bounces, suppressions and the webhooks posted;
        templates go back to those loaded at start (the webhook settings stay)."""
        with self._lock:
            self._mailbox.clear()
            self._requests.clear()
            self._templates.reset(self._initial)
        self.faults.clear()
        self.activity.clear()
        self.webhooks.clear()

    def clear_messages(self) -> None:
        """Forget the messages received (the inbox's "Clear all"); keep everything else."""
        self._mailbox.clear()

    def add_template(self, template: Mapping[str, Any]) -> StoredTemplate:
        """Add a template given with Postmark's field names (as in the YAML files).

        Raises:
            TemplateLoadError: as for templates given to the constructor.
        """
        return self._templates.load([("template", template)])[0]

    # -- requests --

    def _note_request(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        """The answer to a request, held by the latency unless it is local (the HTTP callback)."""
        try:
            response = self._respond(method, path, query, headers, body)
        except Exception:
            # A bug here, not the client's: say so as Postmark's 500 would, and log the trace.
            logger.exception("fake Postmark failed on %s %s", method, path)
            response = json_response(500, {"ErrorCode": 500, "Message": "Internal Server Error"})
        if not self._local_route(method, path):
            response.delay += self.latency
        return response

    def _authorized(self, token: str | None) -> bool:
        if not token:
            return False
        # Compare every token in constant time, so timing says nothing about them.
        matches = [hmac.compare_digest(token.encode(), t.encode()) for t in self._tokens]
        return any(matches)

    def _respond(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        route = path.rstrip("/") or "/"
        if method == "POST" and route.startswith("/__") and not self._same_origin(headers):
            # A page on another site may post forms here (a browser sends them cross-site with
            # an Origin header); the control endpoints change state, so only our own pages may.
            return json_response(403, {"error": "cross-origin requests are refused"})
        local = self._local(method, route, query, body)
        if local is not None:
            return local
        if not self._authorized(headers.get("x-postmark-server-token")):
            return json_response(401, {"ErrorCode": 10, "Message": _NO_TOKEN})
        media_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if method in {"POST", "PUT"} and media_type != "application/json":
            return error_response(RequestRefusedError(409, _JSON_REQUIRED))
        return self.faults.intercept(lambda: self._api.answer(method, route, query, body))

    @staticmethod
    def _local_route(method: str, path: str) -> bool:
        """Whether a request is for a page or a control endpoint (never held by the latency)."""
        route = path.rstrip("/") or "/"
        return (
            route == "/"
            or route.startswith("/__")
            or (method == "GET" and MESSAGE_PAGE.fullmatch(route) is not None)
        )

    def _same_origin(self, headers: Mapping[str, str]) -> bool:
        """Whether a request has no ``Origin`` (not from a browser page) or this server's own.

        The Host header is not trusted for this: under DNS rebinding, a page of another site
        reaches this server with its own name in both Host and Origin.
        """
        origin = headers.get("origin")
        if origin is None:
            return True
        port = self.port
        hosts = {self.host, f"[{self.host}]"}
        if self.host in {"127.0.0.1", "::1", "localhost", "0.0.0.0", "::"}:  # noqa: S104
            hosts |= {"127.0.0.1", "[::1]", "localhost"}
        return origin.lower() in {f"http://{host}:{port}" for host in hosts}

    def _local(
        self, method: str, route: str, query: dict[str, str], body: bytes
    ) -> Response | None:
        """Pages and control endpoints: no token, never faulted."""
        page = MESSAGE_PAGE.fullmatch(route)
        if page and method == "GET":
            return self._pages.message(page.group(1), query.get("q", ""))
        local: dict[tuple[str, str], Callable[[bytes], Response]] = {
            ("GET", "/"): lambda _: self._pages.index(query.get("q", ""), api_url=self.url),
            ("GET", "/__inbox"): lambda _: self._pages.live(query),
            ("GET", "/__inbox.js"): lambda _: script(),
            ("POST", "/__clear"): self._pages.clear,
            ("GET", "/__health"): lambda _: json_response(200, {"status": "ok"}),
            ("GET", "/__faults"): lambda _: json_response(200, self.faults.snapshot()),
            ("POST", "/__faults"): self._configure_faults,
            ("POST", "/__reset"): self._reset_endpoint,
            ("GET", "/__webhooks"): lambda _: self._pages.html(
                webhooks_page(self.webhooks.deliveries, self.webhooks.settings())
            ),
            ("GET", "/__webhooks/log"): lambda _: json_response(200, self._webhook_log()),
            ("POST", "/__webhooks"): self._control(configure_webhooks),
            ("POST", "/__bounces"): self._control(bounce_addresses),
            ("POST", "/__activity"): self._control(record_activity),
        }
        handler = local.get((method, route))
        return handler(body) if handler else None

    def _configure_faults(self, body: bytes) -> Response:
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                return json_response(400, {"error": "the body is a JSON object of fault settings"})
            self.faults.configure(request)
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, self.faults.snapshot())

    def _webhook_log(self) -> dict[str, Any]:
        return {
            "settings": self.webhooks.settings(),
            "deliveries": [d.summary() for d in self.webhooks.deliveries],
        }

    def _control(
        self, action: Callable[[FakePostmark, dict[str, Any]], Any]
    ) -> Callable[[bytes], Response]:
        """A control endpoint taking a JSON object and answering ``action``'s result as JSON."""

        def endpoint(body: bytes) -> Response:
            try:
                request = json.loads(body or b"{}")
                if not isinstance(request, dict):
                    return json_response(400, {"error": "the body is a JSON object"})
                return json_response(200, action(self, request))
            except KeyError as exc:
                return json_response(404, {"error": f"not found: {exc}"})
            except (ValueError, TypeError) as exc:
                return json_response(400, {"error": str(exc)})

        return endpoint

    def _reset_endpoint(self, _body: bytes) -> Response:
        self.reset()
        return json_response(200, {"status": "ok"})


# -- control endpoints over the activity (POST /__webhooks, /__bounces, /__activity) --


def configure_webhooks(server: FakePostmark, request: dict[str, Any]) -> dict[str, Any]:
    """``POST /__webhooks``: ``{"url": ..., "record_types": [...], "retry_scale": ...}``, the
    keyword arguments of :meth:`.Webhooks.configure`; ``{"url": null}`` stops posting."""
    options = dict(request)
    url = options.pop("url", None)
    if url is None:
        server.webhooks.disable()
    elif not isinstance(url, str):
        raise ValueError("url is a string")
    else:
        server.webhooks.configure(url, **options)
    return server.webhooks.settings()


def bounce_addresses(server: FakePostmark, request: dict[str, Any]) -> dict[str, Any]:
    """``POST /__bounces``: ``{"addresses": [...], "type": "HardBounce"}``."""
    addresses = request.get("addresses")
    if not isinstance(addresses, list):
        raise TypeError("addresses is a list of email addresses")
    server.activity.bounce_addresses(addresses, request.get("type", "HardBounce"))
    return {"bouncing": server.activity.bouncing()}


def record_activity(server: FakePostmark, request: dict[str, Any]) -> Any:
    """``POST /__activity``: ``{"record": "Bounce", "message_id": ..., "recipient": ...}``; the
    record made (``type`` names a bounce type, ``link`` the link clicked)."""
    kind, message_id = request.get("record"), request.get("message_id")
    recipient = request.get("recipient")
    if not isinstance(message_id, str) or not isinstance(recipient, str | None):
        raise TypeError("message_id is a MessageID and recipient an address")
    activity = server.activity
    if kind == "Bounce":
        return activity.bounce(message_id, recipient, bounce_type=request.get("type", "HardBounce"))
    if kind == "SpamComplaint":
        return activity.spam_complaint(message_id, recipient)
    if kind == "Open":
        return activity.open(message_id, recipient)
    if kind == "Click":
        link = request.get("link")
        if not isinstance(link, str):
            raise ValueError("a Click needs the link clicked")
        return activity.click(message_id, link, recipient)
    if kind == "Unsubscribe":
        entry = activity.unsubscribe(message_id, recipient)
        return entry.dump() if entry else None
    raise ValueError("record is Bounce, SpamComplaint, Open, Click or Unsubscribe")
