"""``PostmarkSuppressions``: Postmark's Suppressions API, which postmarker does not cover (its
issue #197): https://postmarkapp.com/developer/api/suppressions-api

- ``GET /message-streams/{stream}/suppressions/dump``: the stream's suppressed addresses;
- ``POST /message-streams/{stream}/suppressions``: suppress up to 50 addresses at once;
- ``POST /message-streams/{stream}/suppressions/delete``: reactivate up to 50 at once.

Both POSTs answer per address: ``Status`` is ``Suppressed`` / ``Deleted``, or ``Failed`` with a
``Message`` (a spam complaint cannot be reactivated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from .postmark_api import PostmarkAPI

__all__ = ["MAX_CHANGES", "PostmarkSuppressions"]

MAX_CHANGES = 50
"""Postmark: "up to 50 email addresses in a single request"."""


class PostmarkSuppressions(PostmarkAPI):
    """A stream's suppressions at Postmark (``emailevents.suppressions.Remote``)."""

    def dump(self, stream: str) -> list[dict[str, Any]]:
        """Every suppressed address of ``stream``, with its reason, origin and time."""
        answer = self.call("GET", f"{_path(stream)}/dump")
        return list(answer.get("Suppressions") or [])

    def create(self, stream: str, addresses: Sequence[str]) -> list[dict[str, Any]]:
        """Suppress ``addresses`` on ``stream`` (a ManualSuppression); Postmark's answer per
        address."""
        return self._each(_path(stream), addresses)

    def delete(self, stream: str, addresses: Sequence[str]) -> list[dict[str, Any]]:
        """Reactivate ``addresses`` on ``stream``; Postmark's answer per address."""
        return self._each(f"{_path(stream)}/delete", addresses)

    def _each(self, endpoint: str, addresses: Sequence[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(addresses), MAX_CHANGES):
            chunk = addresses[start : start + MAX_CHANGES]
            data = {"Suppressions": [{"EmailAddress": address} for address in chunk]}
            answer = self.call("POST", endpoint, data=data)
            found.extend(answer.get("Suppressions") or [])
        return found


def _path(stream: str) -> str:
    return f"message-streams/{quote(stream, safe='')}/suppressions"
