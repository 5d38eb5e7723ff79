"""The one request handler the WSGI and the ASGI app share: routes, credentials, body limit,
and the webhook's answers.

A request is answered in two steps, so that no adapter reads a body it will refuse:
:meth:`Site.admit` looks at the method, path and headers (404, 405, 401, 411, 413), then
:meth:`Site.answer` takes the body, at most ``max_body`` bytes (400, 503, 200).

What each answer means to Postmark: 200 recorded (or stored already); 400 the document is not a
record we know, which Postmark should not retry; 503 our database is unreachable, which it
retries; 401/404/405/413 a configuration to fix, which it retries in vain.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from .. import suppressions, timeline
from . import postmark

__all__ = ["DEFAULT_MAX_BODY", "REALM", "WEBHOOK_PATH", "Response", "Site"]

WEBHOOK_PATH = "/postmark/webhook"
DEFAULT_MAX_BODY = 1_000_000
REALM = "emailevents"

logger = logging.getLogger("emailevents.web")

# The database is not there (down, restarting, the pool exhausted): Postmark retries on 503.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)


@dataclass(frozen=True)
class Response:
    """An answer: status, extra headers, and a small JSON body."""

    status: int
    document: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    @property
    def body(self) -> bytes:
        return json.dumps(self.document).encode("utf-8")

    def all_headers(self) -> list[tuple[str, str]]:
        """Its headers with the body's type and length."""
        return [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(self.body))),
            *self.headers,
        ]


def _error(status: HTTPStatus, message: str, *headers: tuple[str, str]) -> Response:
    return Response(status.value, {"error": message}, headers)


@dataclass(frozen=True)
class Site:
    """What the web apps answer with: the application's sessions and the webhook's settings.

    Args:
        session_factory: opens a session on the application's database (the engine's).
        webhook_auth: (user, password) Postmark sends with HTTP Basic; ``None``: no webhook route.
        max_body: the largest body read, in bytes; a longer one is refused with 413 unread.
    """

    session_factory: Callable[[], Session]
    webhook_auth: tuple[str, str] | None = None
    max_body: int = DEFAULT_MAX_BODY

    def admit(
        self, method: str, path: str, authorization: str | None, content_length: int | None
    ) -> Response | None:
        """The answer to a request refused before its body is read, or ``None`` to read it
        (at most ``max_body`` bytes; ``content_length`` ``None``: not given)."""
        if path != WEBHOOK_PATH or self.webhook_auth is None:
            return _error(HTTPStatus.NOT_FOUND, f"no such path: {path[:200]}")
        if method != "POST":
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, "POST only", ("Allow", "POST"))
        if not self._authorized(authorization):
            logger.warning("webhook: wrong or missing credentials (401)")
            challenge = ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
            return _error(HTTPStatus.UNAUTHORIZED, "wrong or missing credentials", challenge)
        if content_length is not None and content_length > self.max_body:
            logger.warning(
                "webhook: body of %d bytes refused (413; the limit is %d)",
                content_length,
                self.max_body,
            )
            return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"over {self.max_body} bytes")
        return None

    def too_large(self) -> Response:
        """The answer to a body found longer than ``max_body`` while reading it."""
        logger.warning("webhook: body over %d bytes refused (413)", self.max_body)
        return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"over {self.max_body} bytes")

    def answer(self, body: bytes) -> Response:
        """Record the webhook's record in ``body`` (admitted by :meth:`admit`)."""
        try:
            record = postmark.parse(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            reason = _reason(exc)
            logger.warning("webhook: record refused (400): %s", reason)
            logger.debug("webhook: the refused body: %r", body[:2000])
            return _error(HTTPStatus.BAD_REQUEST, reason)
        event = postmark.message_event(record)
        change = postmark.suppression_change(record)
        where = {
            "event_key": event.event_key,
            "event_id": event.event_id,
            "record_type": event.record_type,
            "message_id": event.message_id,
        }
        try:
            with self.session_factory() as session:
                if change is not None:  # in the record's transaction: both, or neither
                    suppressions.apply(session, [change])
                recorded = timeline.record(session, event)
        except UNAVAILABLE as exc:
            logger.warning(
                "webhook: event=%s event_id=%s %s not recorded, the database is unavailable "
                "(503; Postmark retries): %s",
                event.event_key,
                event.event_id,
                event.record_type,
                _unavailable(exc),
                extra=where,
            )
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, "the database is unavailable")
        logger.info(
            "webhook: event=%s event_id=%s %s %s",
            event.event_key,
            event.event_id,
            event.record_type,
            recorded.value,
            extra={**where, "recorded": recorded.value},
        )
        return Response(HTTPStatus.OK.value, {"recorded": recorded.value})

    def _authorized(self, authorization: str | None) -> bool:
        """HTTP Basic with the configured credentials, compared in constant time."""
        assert self.webhook_auth is not None  # noqa: S101 - admit() answers 404 without it
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        user, colon, password = decoded.partition(b":")
        expected_user, expected_password = (p.encode("utf-8") for p in self.webhook_auth)
        # Both parts compared, whatever the first gave: the time taken tells nothing.
        same_user = hmac.compare_digest(user, expected_user)
        same_password = hmac.compare_digest(password, expected_password)
        return scheme.lower() == "basic" and bool(colon) and same_user & same_password


def _unavailable(exc: Exception) -> str:
    """The driver's first line of why (no statement, no parameters: personal data)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else type(cause).__name__}"


def _reason(exc: Exception) -> str:
    """Why a body was refused, without the values it held (personal data)."""
    if isinstance(exc, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        return "not a Postmark record we know: " + "; ".join(problems[:5])
    if isinstance(exc, UnicodeDecodeError):
        return "the body is not UTF-8"
    return f"the body is not JSON ({type(exc).__name__})"
