"""Each message stream's suppression list, and Postmark's Suppressions API over it.

An address is suppressed (Postmark: "inactive") on one stream after a hard bounce, a spam
complaint or a manual suppression; sends to it on that stream are refused with ErrorCode 406 (see
:meth:`~.faults.Faults.check_recipients`). The API's shapes and wording are Postmark's, from
https://postmarkapp.com/developer/api/suppressions-api.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from ...errors import RequestRefusedError
from .validation import address_list

__all__ = ["ORIGINS", "REASONS", "Suppression", "SuppressionList"]

#: Postmark's SuppressionReason values.
REASONS = ("HardBounce", "SpamComplaint", "ManualSuppression")
#: Postmark's Origin values: the recipient (a bounce, a complaint, an unsubscribe), the customer
#: (the API or the UI), or Postmark's staff.
ORIGINS = ("Recipient", "Customer", "Admin")

# Postmark's answers, from its Suppressions API reference.
_CANNOT_DELETE = "You do not have the required authority to change this suppression."
# Assumed wording: Postmark's reference shows Failed with a message, not this one's.
_INVALID_ADDRESS = "An invalid email address was provided."
_MAX_CHANGES = 50  # Postmark: "up to 50 email addresses in a single request"


class Changed(Protocol):
    """Told of a suppression added (``added=True``) or deleted."""

    def __call__(self, entry: Suppression, *, added: bool) -> None: ...


@dataclass(frozen=True)
class Suppression:
    """One suppressed address on one stream."""

    email_address: str
    reason: str
    origin: str
    created_at: datetime
    stream: str
    message_id: str | None = None
    """The message whose bounce or complaint suppressed it; ``None`` when made by hand."""

    def dump(self) -> dict[str, Any]:
        """The item of ``GET /message-streams/{stream}/suppressions/dump``."""
        return {
            "EmailAddress": self.email_address,
            "SuppressionReason": self.reason,
            "Origin": self.origin,
            "CreatedAt": self.created_at.isoformat(),
        }


class SuppressionList:
    """The suppressed addresses of every stream. Thread-safe.

    Args:
        lock: the server's lock.
        changed: told of every suppression added or deleted (the server posts a
            SubscriptionChange webhook for it).
    """

    def __init__(self, lock: threading.RLock, changed: Changed | None = None) -> None:
        self._lock = lock
        self._entries: dict[tuple[str, str], Suppression] = {}
        self._changed = changed

    def add(
        self,
        stream: str,
        address: str,
        *,
        reason: str = "ManualSuppression",
        origin: str = "Customer",
        message_id: str | None = None,
    ) -> Suppression | None:
        """Suppress ``address`` on ``stream``; the new suppression, or ``None`` if it already was.

        Raises:
            ValueError: an unknown reason or origin.
        """
        if reason not in REASONS or origin not in ORIGINS:
            raise ValueError(f"reason is one of {REASONS} and origin one of {ORIGINS}")
        key = (stream, address.strip().lower())
        with self._lock:
            if key in self._entries:
                return None
            entry = Suppression(
                address.strip(), reason, origin, datetime.now(UTC), stream, message_id
            )
            self._entries[key] = entry
        if self._changed is not None:
            self._changed(entry, added=True)
        return entry

    def delete(self, stream: str, address: str) -> bool:
        """Reactivate ``address`` on ``stream``; whether it was suppressed.

        Raises:
            PermissionError: a spam complaint, which Postmark never lets a customer delete.
        """
        key = (stream, address.strip().lower())
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            if entry.reason == "SpamComplaint":
                raise PermissionError(_CANNOT_DELETE)
            del self._entries[key]
        if self._changed is not None:
            self._changed(entry, added=False)
        return True

    def suppressed(self, stream: str, addresses: list[str]) -> set[str]:
        """Those of ``addresses`` suppressed on ``stream``, lowercased."""
        with self._lock:
            return {a.lower() for a in addresses if (stream, a.strip().lower()) in self._entries}

    def entries(self, stream: str | None = None) -> list[Suppression]:
        """The suppressions (of one stream), oldest first."""
        with self._lock:
            found = list(self._entries.values())
        return [s for s in found if stream is None or s.stream == stream]

    def clear(self) -> None:
        """Forget every suppression (no webhook)."""
        with self._lock:
            self._entries.clear()

    # -- the API --

    def dump(self, stream: str, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /message-streams/{stream}/suppressions/dump``, filtered as Postmark filters."""
        params = {k.lower(): v for k, v in query.items() if v}
        tests: list[Callable[[Suppression], bool]] = []
        if "emailaddress" in params:
            tests.append(lambda s: s.email_address.lower() == params["emailaddress"].lower())
        if "suppressionreason" in params:
            tests.append(lambda s: s.reason.lower() == params["suppressionreason"].lower())
        if "origin" in params:
            tests.append(lambda s: s.origin.lower() == params["origin"].lower())
        # Postmark: "fromdate"/"todate", e.g. 2020-02-01, both inclusive.
        if "fromdate" in params:
            start = _date(params["fromdate"], "fromdate")
            tests.append(lambda s: s.created_at.date() >= start)
        if "todate" in params:
            end = _date(params["todate"], "todate")
            tests.append(lambda s: s.created_at.date() <= end)
        chosen = [s for s in self.entries(stream) if all(test(s) for test in tests)]
        return {"Suppressions": [s.dump() for s in chosen]}

    def create_many(self, stream: str, data: Any) -> dict[str, Any]:
        """``POST /message-streams/{stream}/suppressions``: a ManualSuppression by the Customer."""
        results = []
        for address in _addresses(data):
            if not _valid(address):
                results.append(_status(address, "Failed", _INVALID_ADDRESS))
                continue
            self.add(stream, address)
            results.append(_status(address, "Suppressed", None))
        return {"Suppressions": results}

    def delete_many(self, stream: str, data: Any) -> dict[str, Any]:
        """``POST /message-streams/{stream}/suppressions/delete``: reactivate the addresses."""
        results = []
        for address in _addresses(data):
            if not _valid(address):
                results.append(_status(address, "Failed", _INVALID_ADDRESS))
                continue
            try:
                self.delete(stream, address)
            except PermissionError as exc:
                results.append(_status(address, "Failed", str(exc)))
                continue
            # Postmark answers Deleted for an address that was not suppressed, too.
            results.append(_status(address, "Deleted", None))
        return {"Suppressions": results}


def _addresses(data: Any) -> list[str]:
    items = data.get("Suppressions") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("EmailAddress"), str) for i in items
    ):
        raise RequestRefusedError(
            403, 'The request body must be {"Suppressions": [{"EmailAddress": ...}]}.'
        )
    if len(items) > _MAX_CHANGES:
        raise RequestRefusedError(
            300, f"At most {_MAX_CHANGES} email addresses may be changed in one request."
        )
    return [i["EmailAddress"] for i in items]


def _valid(address: str) -> bool:
    try:
        parsed = address_list(address)
    except ValueError:
        return False
    return len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1] == address.strip()


def _status(address: str, status: str, message: str | None) -> dict[str, Any]:
    return {"EmailAddress": address, "Status": status, "Message": message}


def _date(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise RequestRefusedError(403, f"'{name}' must be a date such as 2020-02-01.") from None
