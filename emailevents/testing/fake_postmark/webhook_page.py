"""The page of the webhooks a FakePostmark posted (``GET /__webhooks``): each record, where it
went, and every attempt's answer. Everything in a record came from a client (addresses, tags,
metadata) and is HTML-escaped, as on the inbox (:mod:`.inbox`)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from .inbox import layout
from .webhooks import WebhookDelivery

__all__ = ["webhooks_page"]

LIMIT = 500
"""How many records the page shows, newest first."""

_e = html.escape


def webhooks_page(deliveries: Sequence[WebhookDelivery], settings: dict[str, Any]) -> str:
    """The page: the settings, then a row per record posted, newest first."""
    url = settings.get("url")
    where = (
        f"Posting {_e(', '.join(settings['record_types']))} to <code>{_e(url)}</code>"
        + (" with Basic credentials" if settings.get("credentials") else "")
        + f"; retries at {_e(str(settings['retry_scale']))} times Postmark's schedule."
        if url
        else "No webhook URL is configured: nothing is posted."
    )
    rows = "".join(_row(d) for d in list(reversed(deliveries))[:LIMIT]) or (
        "<tr class='empty'><td colspan='6'>No webhooks posted.</td></tr>"
    )
    body = (
        "<nav class='pager'><a href='/'>← Inbox</a></nav>"
        f"<p class='count'>{where}</p>"
        "<table class='messages webhooks'><thead><tr><th>#</th><th>RecordType</th>"
        "<th>Recipient</th><th>State</th><th>Attempts (status, time)</th><th>Body</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )
    return layout(f"Webhooks ({len(deliveries)}) · FakePostmark", body)


def _row(d: WebhookDelivery) -> str:
    recipient = d.body.get("Recipient") or d.body.get("Email") or ""
    attempts = "; ".join(
        f"{a.status if a.status is not None else a.error or 'no answer'} at "
        f"{a.at.isoformat(timespec='milliseconds')} ({a.seconds * 1000:.0f} ms, "
        f"{a.retries_remaining} left)"
        for a in d.attempts
    )
    copy = " (copy 2)" if d.copy == 2 else ""  # noqa: PLR2004
    body = _e(json.dumps(d.body, indent=2, ensure_ascii=False))
    return (
        f"<tr><td>{d.number}{copy}</td><td>{_e(d.record_type)}</td>"
        f"<td title='{_e(recipient)}'>{_e(recipient)}</td>"
        f"<td><span class='badge'>{_e(d.state)}</span></td>"
        f"<td title='{_e(attempts)}'>{len(d.attempts)}: {_e(attempts) if attempts else '—'}</td>"
        f"<td><details><summary>JSON</summary><pre>{body}</pre></details></td></tr>"
    )
