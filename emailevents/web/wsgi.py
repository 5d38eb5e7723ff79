"""The web component as a WSGI application (PEP 3333), for any WSGI server or framework."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .site import Response, Site

__all__ = ["WsgiApp"]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class WsgiApp:
    """``events.wsgi_app()``: answers with the :class:`Site`'s handler."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        response = self._respond(environ)
        start_response(response.status_line, response.all_headers())
        return [response.body]

    def _respond(self, environ: dict[str, Any]) -> Response:
        length = _content_length(environ.get("CONTENT_LENGTH"))
        if length == -1:
            return Response(400, {"error": "Content-Length is not a number"})
        refused = self.site.admit(
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("PATH_INFO", "") or "/",
            environ.get("HTTP_AUTHORIZATION"),
            length,
        )
        if refused is not None:
            return refused
        if length is None:
            # PEP 3333: without a length, reading wsgi.input may block or read past the body.
            return Response(411, {"error": "Content-Length is required"})
        return self.site.answer(environ["wsgi.input"].read(length))


def _content_length(value: str | None) -> int | None:
    """The header's value; None when absent, -1 when not a number."""
    if value is None or not value.strip():
        return None
    try:
        length = int(value)
    except ValueError:
        return -1
    return length if length >= 0 else -1
