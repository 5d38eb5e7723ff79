"""A WSGI app on a threaded standard-library server, for the web tests (a plain module, which
pytest does not rewrite: see tests/appmodule.py), and the credentials they post with."""

from __future__ import annotations

import base64
import socketserver
import threading
import wsgiref.simple_server
from collections.abc import Iterator
from typing import Any

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
