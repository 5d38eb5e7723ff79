"""What every route of the web component reads and answers with: the :class:`Request` an adapter
hands over, the :class:`Admitted` a route gives back when it wants the body, and the
:class:`Response` (JSON for Postmark, HTML for recipients, with the security headers a page needs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

__all__ = [
    "HTML_HEADERS",
    "UNAVAILABLE",
    "Admitted",
    "Request",
    "Response",
    "error",
    "unavailable_reason",
]

# The database is not there (down, restarting, the pool exhausted): Postmark retries on 503.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)

HTML_HEADERS = (
    # No script, no frames, forms only to ourselves: a page that shows a registry's titles and a
    # recipient's address can run nothing even if escaping failed.
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    # The URL holds the recipient's token: no Referer carries it to another site.
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


@dataclass(frozen=True)
class Request:
    """What a route sees of a request before its body is read."""

    method: str
    path: str
    """Below where the app is mounted."""
    query: str = ""
    authorization: str | None = None
    content_type: str | None = None
    content_length: int | None = None
    """``None``: not given."""


@dataclass(frozen=True)
class Response:
    """An answer: status, body, its type, and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of_json(cls, status: int, document: dict[str, Any], *headers: tuple[str, str]) -> Response:
        """A small JSON document (the webhook's answers)."""
        return cls(status, json.dumps(document).encode("utf-8"), "application/json", headers)

    @classmethod
    def of_html(cls, status: int, page: str, *headers: tuple[str, str]) -> Response:
        """A page, with :data:`HTML_HEADERS`."""
        return cls(
            status, page.encode("utf-8"), "text/html; charset=utf-8", (*HTML_HEADERS, *headers)
        )

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    def all_headers(self) -> list[tuple[str, str]]:
        """Its headers with the body's type and length."""
        return [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            *self.headers,
        ]


@dataclass(frozen=True)
class Admitted:
    """A request a route lets in: read at most ``max_body`` bytes of its body (0: none), then
    ``answer`` them; ``too_large`` answers a body found longer while reading it."""

    max_body: int
    answer: Callable[[bytes], Response]
    too_large: Callable[[], Response]


def error(status: HTTPStatus, message: str, *headers: tuple[str, str]) -> Response:
    """A JSON ``{"error": message}``."""
    return Response.of_json(status.value, {"error": message}, *headers)


def unavailable_reason(exc: Exception) -> str:
    """The driver's first line of why (no statement, no parameters: personal data)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else type(cause).__name__}"
