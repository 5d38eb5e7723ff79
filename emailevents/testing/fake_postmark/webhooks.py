"""Webhooks as Postmark posts them: at least once, from the background, retried on its schedule.

:class:`Webhooks` holds one webhook URL and the record types it wants, and a thread of its own
that posts each record as JSON, never inside the request that caused it. A ``2xx`` answer
delivers it; ``5xx``, ``408``, ``429``, a timeout or a refused connection is tried again on
Postmark's schedule (scaled down, see :data:`RETRY_SCHEDULE`); any other answer drops it. Every
attempt says how many tries are left in ``X-PM-Retries-Remaining``. For idempotency tests it can
post each record twice, and hold records briefly to post them newest first.

Postmark's documents: https://postmarkapp.com/developer/webhooks/webhooks-overview (Basic HTTP
credentials in the URL, ``https://<username>:<password>@example.com/webhook``) and
https://postmarkapp.com/support/article/understanding-inbound-webhook-retries-in-postmark (the
schedule).
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import http.client
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["RECORD_TYPES", "RETRY_SCHEDULE", "Attempt", "WebhookDelivery", "Webhooks"]

logger = logging.getLogger(__name__)

#: The record types of Postmark's outbound webhooks (the ``RecordType`` of each body).
RECORD_TYPES = ("Delivery", "Bounce", "SpamComplaint", "Open", "Click", "SubscriptionChange")

#: Seconds from one try to the next, as Postmark documents its webhook retries: "A total of 10
#: retries are attempted over roughly 10.5 hours": 1 minute, 5 minutes, 10 minutes three times,
#: 15 and 30 minutes, 1, 2 and 6 hours. Postmark documents it for inbound webhooks; the same
#: schedule is assumed for the outbound ones. Multiplied by ``retry_scale``.
RETRY_SCHEDULE = (60, 300, 600, 600, 600, 900, 1800, 3600, 7200, 21600)

# Retried: the receiver is down or busy. Anything else it answers is final.
_RETRIED_STATUSES = frozenset({408, 429})
MAX_LOG = 10_000


@dataclass(frozen=True)
class Attempt:
    """One POST of a record: when, the answer's status (``None``: no answer) and the error."""

    at: datetime
    status: int | None
    error: str | None
    seconds: float
    retries_remaining: int


@dataclass
class WebhookDelivery:
    """One record on its way: its body and every attempt so far.

    ``state`` is ``pending`` (to be tried, or tried again), ``delivered`` (a 2xx), ``dropped`` (an
    answer that is not retried) or ``failed`` (no try left).
    """

    number: int
    record_type: str
    body: dict[str, Any]
    url: str
    state: str = "pending"
    attempts: list[Attempt] = field(default_factory=list)
    copy: int = 1
    """2 for the second post of a record posted twice (``duplicate=True``)."""

    def summary(self) -> dict[str, Any]:
        """As ``GET /__webhooks/log`` lists it."""
        return {
            "number": self.number,
            "RecordType": self.record_type,
            "url": self.url,
            "state": self.state,
            "copy": self.copy,
            "body": self.body,
            "attempts": [
                {
                    "at": a.at.isoformat(),
                    "status": a.status,
                    "error": a.error,
                    "seconds": round(a.seconds, 4),
                    "retries_remaining": a.retries_remaining,
                }
                for a in self.attempts
            ],
        }


@dataclass(frozen=True)
class _Settings:
    url: str  # without the credentials
    authorization: str | None
    record_types: frozenset[str]
    retry_scale: float
    timeout: float
    duplicate: bool
    out_of_order: float  # seconds records are held to go newest first; 0: in order


class Webhooks:
    """Where and how a FakePostmark posts its webhooks, and what it posted. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._settings: _Settings | None = None
        self._queue: list[tuple[float, int, WebhookDelivery]] = []
        self._log: deque[WebhookDelivery] = deque(maxlen=MAX_LOG)
        self._numbers = itertools.count(1)
        self._order = itertools.count()
        self._busy = 0
        self._batch_until = 0.0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.version = 0
        """Counts changes to the log, for the page."""

    def configure(
        self,
        url: str,
        *,
        record_types: Iterable[str] = RECORD_TYPES,
        retry_scale: float = 0.001,
        timeout: float = 5.0,
        duplicate: bool = False,
        out_of_order: float = 0.0,
    ) -> None:
        """Post webhooks to ``url`` from now on.

        Args:
            url: an ``http://`` or ``https://`` URL; ``https://user:pass@host/path`` sends those
                Basic HTTP credentials, as Postmark does.
            record_types: which records to post (see :data:`RECORD_TYPES`); others are not made.
            retry_scale: Postmark's retry schedule multiplied by this: 0.001 (the default) makes
                its 1 minute 60 ms and all ten retries 38 s; 0.00001 makes them 0.4 s.
            timeout: seconds to wait for the receiver to connect and to answer each try.
            duplicate: post every record twice, for idempotency tests.
            out_of_order: hold records this many seconds and post each such batch newest first.

        Raises:
            ValueError: a URL that is not http(s), an unknown record type, or an out-of-range
                number.
        """
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"a webhook URL is http:// or https://, not {url!r}")
        types = frozenset(record_types)
        if not types <= set(RECORD_TYPES):
            raise ValueError(f"record types are {', '.join(RECORD_TYPES)}, not {sorted(types)}")
        for name, value, high in (
            ("retry_scale", retry_scale, 1.0),
            ("timeout", timeout, 120.0),
            ("out_of_order", out_of_order, 60.0),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= high
            ):
                raise ValueError(f"{name} must be between 0 and {high}, not {value!r}")
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        bare = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        with self._lock:
            self._settings = _Settings(
                bare, authorization, types, float(retry_scale), float(timeout), duplicate,
                float(out_of_order),
            )  # fmt: skip

    def disable(self) -> None:
        """Post nothing more (what is on its way is dropped)."""
        with self._lock:
            self._settings = None
            for _, _, delivery in self._queue:
                delivery.state = "dropped"
            self._queue.clear()
            self._lock.notify_all()

    @property
    def url(self) -> str | None:
        """Where webhooks go (without the credentials), or ``None``."""
        with self._lock:
            return self._settings.url if self._settings else None

    def settings(self) -> dict[str, Any]:
        """What is configured, as JSON (without the credentials)."""
        with self._lock:
            s = self._settings
            if s is None:
                return {"url": None}
            return {
                "url": s.url,
                "credentials": s.authorization is not None,
                "record_types": sorted(s.record_types),
                "retry_scale": s.retry_scale,
                "timeout": s.timeout,
                "duplicate": s.duplicate,
                "out_of_order": s.out_of_order,
            }

    def wants(self, record_type: str) -> bool:
        """Whether records of this type are posted."""
        with self._lock:
            return self._settings is not None and record_type in self._settings.record_types

    def post(self, body: dict[str, Any]) -> None:
        """Post a record (its ``RecordType`` says which) from the background, if it is wanted."""
        with self._lock:
            s = self._settings
            if s is None or body["RecordType"] not in s.record_types:
                return
            now = time.monotonic()
            due = now
            if s.out_of_order:
                if now >= self._batch_until:
                    self._batch_until = now + s.out_of_order
                due = self._batch_until
            number = next(self._numbers)
            for copy in (1, 2) if s.duplicate else (1,):
                delivery = WebhookDelivery(number, body["RecordType"], body, s.url, copy=copy)
                self._log.append(delivery)
                # Newest first within a held batch: order by the negated sequence.
                order = -next(self._order) if s.out_of_order else next(self._order)
                heapq.heappush(self._queue, (due, order, delivery))
            self.version += 1
            self._start()
            self._lock.notify_all()

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        """Every record posted or on its way, in the order they were made (a snapshot)."""
        with self._lock:
            return list(self._log)

    def delivered(self, record_type: str | None = None) -> list[dict[str, Any]]:
        """The bodies the receiver accepted (a 2xx), in the order it accepted them."""
        with self._lock:
            done = [d for d in self._log if d.state == "delivered"]
        if record_type is not None:
            done = [d for d in done if d.record_type == record_type]
        return [d.body for d in sorted(done, key=lambda d: d.attempts[-1].at)]

    def wait(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is on its way; whether that happened within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def clear(self) -> None:
        """Forget what was posted, and drop what is on its way; keep the settings."""
        with self._lock:
            self._queue.clear()
            self._log.clear()
            self.version += 1
            self._lock.notify_all()

    def stop(self) -> None:
        """Stop the posting thread (a server that stops calls this)."""
        with self._lock:
            self._stopping = True
            thread, self._thread = self._thread, None
            self._lock.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        with self._lock:
            self._stopping = False  # a later post starts a new thread

    # -- the posting thread --

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="fake-postmark-webhooks", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                delivery, settings = self._next()
                if delivery is None or settings is None:
                    return
                self._busy += 1
            try:
                self._attempt(delivery, settings)
            finally:
                with self._lock:
                    self._busy -= 1
                    self.version += 1
                    self._lock.notify_all()

    def _next(self) -> tuple[WebhookDelivery | None, _Settings | None]:
        """The next record due, waiting for it; ``(None, None)`` when stopping."""
        while not self._stopping:
            if self._queue and self._settings is not None:
                due = self._queue[0][0]
                left = due - time.monotonic()
                if left <= 0:
                    return heapq.heappop(self._queue)[2], self._settings
                self._lock.wait(left)
            else:
                self._lock.wait(1.0)
        return None, None

    def _attempt(self, delivery: WebhookDelivery, settings: _Settings) -> None:
        remaining = len(RETRY_SCHEDULE) - len(delivery.attempts)
        started, at = time.monotonic(), datetime.now(UTC)
        status, error = _post(delivery.body, settings, remaining)
        attempt = Attempt(at, status, error, time.monotonic() - started, remaining)
        retried = status is None or status >= 500 or status in _RETRIED_STATUSES  # noqa: PLR2004
        with self._lock:
            delivery.attempts.append(attempt)
            if status is not None and 200 <= status < 300:  # noqa: PLR2004
                delivery.state = "delivered"
            elif not retried:
                delivery.state = "dropped"
            elif remaining == 0:
                delivery.state = "failed"
            elif self._settings is None:
                delivery.state = "dropped"  # disabled meanwhile
            else:
                wait = RETRY_SCHEDULE[len(RETRY_SCHEDULE) - remaining] * settings.retry_scale
                heapq.heappush(self._queue, (time.monotonic() + wait, next(self._order), delivery))


def _post(
    body: dict[str, Any], settings: _Settings, remaining: int
) -> tuple[int | None, str | None]:
    """POST one record; the answer's status, or ``None`` and what went wrong."""
    parts = urlsplit(settings.url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=settings.timeout or None)
    payload = json.dumps(body).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Postmark",
        "X-PM-Retries-Remaining": str(remaining),
    }
    if settings.authorization:
        headers["Authorization"] = settings.authorization
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=payload, headers=headers)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        logger.debug("webhook to %s failed: %s", settings.url, exc)
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        with contextlib.suppress(OSError):
            connection.close()
    return response.status, None
