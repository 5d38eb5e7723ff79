"""The one request handler the WSGI and the ASGI app share: routes, credentials, body limit,
and the webhook's answers (the recipients' pages are :mod:`.links`').

A request is answered in two steps, so that no adapter reads a body it will refuse:
:meth:`Site.admit` looks at the method, path and headers (404, 405, 401, 413) and answers, or
gives back an :class:`~.answers.Admitted` saying how much body to read and what answers it (for
the webhook, :meth:`Site.answer`: at most ``max_body`` bytes; 400, 503, 200).

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

from pydantic import ValidationError
from sqlalchemy.orm import Session

from .. import suppressions, timeline
from ..preferences import Preferences
from ..tokens import Signer
from . import links, postmark
from .answers import UNAVAILABLE, Admitted, Request, Response, error, unavailable_reason

__all__ = ["DEFAULT_MAX_BODY", "REALM", "WEBHOOK_PATH", "Site"]

WEBHOOK_PATH = "/postmark/webhook"
DEFAULT_MAX_BODY = 1_000_000
REALM = "emailevents"

logger = logging.getLogger("emailevents.web")


@dataclass(frozen=True)
class Site:
    """What the web apps answer with: the application's sessions and the webhook's settings.

    Args:
        session_factory: opens a session on the application's database (the engine's).
        webhook_auth: (user, password) Postmark sends with HTTP Basic; ``None``: no webhook route.
        max_body: the webhook's largest body, in bytes; a longer one is refused with 413 unread.
        preferences: recipients' choices; with ``signer``, the one-click unsubscribe and the
            preferences page (``/unsubscribe/TOKEN``, ``/preferences/TOKEN``), else 404.
        signer: verifies the tokens of those links.
    """

    session_factory: Callable[[], Session]
    webhook_auth: tuple[str, str] | None = None
    max_body: int = DEFAULT_MAX_BODY
    preferences: Preferences | None = None
    signer: Signer | None = None

    def admit(self, request: Request) -> Response | Admitted:
        """The answer to a request refused before its body is read, or what to read and answer
        it with."""
        route, _, rest = request.path.lstrip("/").partition("/")
        if route in links.ROUTES and self.preferences is not None and self.signer is not None:
            return links.Links(self.preferences, self.signer).admit(request, route, rest)
        if request.path != WEBHOOK_PATH or self.webhook_auth is None:
            return error(HTTPStatus.NOT_FOUND, f"no such path: {request.path[:200]}")
        if request.method != "POST":
            return error(HTTPStatus.METHOD_NOT_ALLOWED, "POST only", ("Allow", "POST"))
        if not self._authorized(request.authorization):
            logger.warning("webhook: wrong or missing credentials (401)")
            challenge = ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
            return error(HTTPStatus.UNAUTHORIZED, "wrong or missing credentials", challenge)
        if request.content_length is not None and request.content_length > self.max_body:
            logger.warning(
                "webhook: body of %d bytes refused (413; the limit is %d)",
                request.content_length,
                self.max_body,
            )
            return error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"over {self.max_body} bytes")
        return Admitted(self.max_body, self.answer, self.too_large)

    def too_large(self) -> Response:
        """The answer to a body found longer than ``max_body`` while reading it."""
        logger.warning("webhook: body over %d bytes refused (413)", self.max_body)
        return error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"over {self.max_body} bytes")

    def answer(self, body: bytes) -> Response:
        """Record the webhook's record in ``body`` (admitted by :meth:`admit`)."""
        try:
            record = postmark.parse(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            reason = _reason(exc)
            logger.warning("webhook: record refused (400): %s", reason)
            logger.debug("webhook: the refused body: %r", body[:2000])
            return error(HTTPStatus.BAD_REQUEST, reason)
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
                unavailable_reason(exc),
                extra=where,
            )
            return error(HTTPStatus.SERVICE_UNAVAILABLE, "the database is unavailable")
        logger.info(
            "webhook: event=%s event_id=%s %s %s",
            event.event_key,
            event.event_id,
            event.record_type,
            recorded.value,
            extra={**where, "recorded": recorded.value},
        )
        return Response.of_json(HTTPStatus.OK.value, {"recorded": recorded.value})

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
