"""The inbox's pages as FakePostmark serves them: rendered by :mod:`.inbox`, sent with their policy.

The pages run one script, their own file (``/__inbox.js``), and no inline one; emails are shown
in sandboxed frames that cannot run any (a srcdoc frame also inherits this policy).
"""

from __future__ import annotations

import re

from . import inbox
from .handler import Response, json_response
from .messages import Mailbox

__all__ = ["MESSAGE_PAGE", "Pages", "script"]

MESSAGE_PAGE = re.compile(
    r"/messages/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
"""The path of one message's page; its group is the MessageID."""

_PAGE_POLICY = (
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def script() -> Response:
    """The pages' script (``GET /__inbox.js``)."""
    return Response(
        200,
        inbox.SCRIPT.encode("utf-8"),
        content_type="text/javascript; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


class Pages:
    """The inbox over a server's :class:`~.messages.Mailbox`: its pages and the live list."""

    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox

    def index(self, query: str, *, api_url: str) -> Response:
        """The inbox at ``/``, showing where the API is."""
        messages, version = self._mailbox.snapshot()
        return _page(200, inbox.index_page(messages, query=query, version=version, api_url=api_url))

    def live(self, query: dict[str, str]) -> Response:
        """The live list's update (``GET /__inbox``)."""
        messages, version = self._mailbox.snapshot()
        answer = inbox.live_answer(
            messages, query=query.get("q", ""), version=version, since=query.get("since")
        )
        response = json_response(200, answer)
        response.headers["Cache-Control"] = "no-store"
        return response

    def message(self, message_id: str, query: str) -> Response:
        """One message's page, with its neighbours in the search it was opened from."""
        found = inbox.search(self._mailbox.snapshot()[0], query)
        ids = [m.message_id for m in found]
        if message_id not in ids:
            try:
                received = self._mailbox.find(message_id)  # opened from outside the search
            except KeyError:
                return _page(404, inbox.not_found_page())
            return _page(200, inbox.message_page(received))
        at = ids.index(message_id)
        return _page(
            200,
            inbox.message_page(
                found[at],
                query=query,
                newer=ids[at - 1] if at > 0 else None,
                older=ids[at + 1] if at + 1 < len(ids) else None,
            ),
        )

    @staticmethod
    def html(page: str) -> Response:
        """A page rendered elsewhere (the webhooks page), sent with the pages' policy."""
        return _page(200, page)

    def clear(self, _body: bytes) -> Response:
        """Forget every message (``POST /__clear``, the inbox's "Clear all"), back to the inbox."""
        self._mailbox.clear()
        return Response(303, b"", content_type="text/plain", headers={"Location": "/"})


def _page(status: int, body: str) -> Response:
    return Response(
        status,
        body.encode("utf-8"),
        content_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _PAGE_POLICY, "Cache-Control": "no-store"},
    )
