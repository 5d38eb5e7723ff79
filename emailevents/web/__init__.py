"""emailevents' web component: ``events.wsgi_app()`` and ``events.asgi_app()`` answer
Postmark's webhooks (``POST /postmark/webhook``) for any WSGI or ASGI server or framework,
and ``emailevents serve`` runs them standalone (docs/webhooks.md).

Written on the standard library: one request handler (:mod:`.site`) behind a small WSGI app
(:mod:`.wsgi`) and an ASGI app (:mod:`.asgi`).
"""

from __future__ import annotations

from .asgi import AsgiApp
from .serve import serve
from .site import DEFAULT_MAX_BODY, WEBHOOK_PATH, Response, Site
from .wsgi import WsgiApp

__all__ = ["DEFAULT_MAX_BODY", "WEBHOOK_PATH", "AsgiApp", "Response", "Site", "WsgiApp", "serve"]
