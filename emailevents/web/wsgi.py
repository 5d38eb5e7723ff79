"""The web component as a WSGI application (PEP 3333), for any WSGI server or framework."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .answers import Request, Response
from .site import Site

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
            return Response.of_json(400, {"error": "Content-Length is not a number"})
        admitted = self.site.admit(
            Request(
                method=environ.get("REQUEST_METHOD", "GET"),
                path=environ.get("PATH_INFO", "") or "/",
                query=environ.get("QUERY_STRING", ""),
                authorization=environ.get("HTTP_AUTHORIZATION"),
                content_type=environ.get("CONTENT_TYPE"),
                content_length=length,
            )
        )
        if isinstance(admitted, Response):
            return admitted
        if not admitted.max_body:
            return admitted.answer(b"")
        if length is None:
            # PEP 3333: without a length, reading wsgi.input may block or read past the body.
            return Response.of_json(411, {"error": "Content-Length is required"})
        return admitted.answer(environ["wsgi.input"].read(length))


def _content_length(value: str | None) -> int | None:
    """The header's value; None when absent, -1 when not a number."""
    if value is None or not value.strip():
        return None
    try:
        length = int(value)
    except ValueError:
        return -1
    return length if length >= 0 else -1
