"""The web component as an ASGI application (HTTP and lifespan), for any ASGI server or
framework (``app.mount("/emails", events.asgi_app())`` in FastAPI or Starlette)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .answers import Request, Response
from .site import Site

__all__ = ["AsgiApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiApp:
    """``events.asgi_app()``: answers with the :class:`Site`'s handler; the database work runs
    in a worker thread, so the event loop never waits on it."""

    def __init__(self, site: Site) -> None:
        self.site = site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here: the server closes the connection
        response = await self._respond(scope, receive)
        if response is None:
            return  # the client went away
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.all_headers()
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _respond(self, scope: Scope, receive: Receive) -> Response | None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        length: int | None = None
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                return Response.of_json(400, {"error": "Content-Length is not a number"})
        admitted = self.site.admit(
            Request(
                method=scope["method"],
                path=_path(scope),
                query=bytes(scope.get("query_string", b"")).decode("latin-1"),
                authorization=headers.get("authorization"),
                content_type=headers.get("content-type"),
                content_length=length,
            )
        )
        if isinstance(admitted, Response):
            return admitted
        body = bytearray()
        while admitted.max_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > admitted.max_body:
                return admitted.too_large()
            if not message.get("more_body", False):
                break
        return await asyncio.to_thread(admitted.answer, bytes(body))


def _path(scope: Scope) -> str:
    """The path below where the app is mounted: ASGI's ``path`` holds ``root_path``."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: say so, as servers that run lifespan expect."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
