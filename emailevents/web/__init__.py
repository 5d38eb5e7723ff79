"""emailevents' web component: ``events.wsgi_app()`` and ``events.asgi_app()`` answer
Postmark's webhooks (``POST /postmark/webhook``) and recipients' one-click unsubscribe and
preferences page (``/unsubscribe/TOKEN``, ``/preferences/TOKEN``) for any WSGI or ASGI server
or framework, and ``emailevents serve`` runs them standalone (docs/webhooks.md,
docs/preferences.md).

Written on the standard library: one request handler (:mod:`.site`, the recipients' routes in
:mod:`.links` and their HTML in :mod:`.pages`) behind a small WSGI app (:mod:`.wsgi`) and an
ASGI app (:mod:`.asgi`).
"""

from __future__ import annotations

from .answers import Request, Response
from .asgi import AsgiApp
from .serve import serve
from .site import DEFAULT_MAX_BODY, WEBHOOK_PATH, Site
from .wsgi import WsgiApp

__all__ = [
    "DEFAULT_MAX_BODY",
    "WEBHOOK_PATH",
    "AsgiApp",
    "Request",
    "Response",
    "Site",
    "WsgiApp",
    "serve",
]
