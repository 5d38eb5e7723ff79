"""Failures on demand: FakePostmark's fault injector, for tests and for trying retry logic.

A :class:`Faults` queues failures for the next requests, fails a share of them at random, or
refuses sends to given recipients with Postmark's per-recipient ErrorCodes; the server asks it
to :meth:`~Faults.intercept` every authenticated API request.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import RequestRefusedError
from .handler import Response, json_response

__all__ = ["MAX_FAULT_DELAY", "Faults"]

# Bounds on what a test or a separate process can ask of the fault injector.
MAX_QUEUED_FAULTS = 10_000
MAX_FAULT_DELAY = 120.0

# ActiveCampaign/postmark-gem spec/unit/postmark/error_spec.rb
_INACTIVE_ALL = (
    "You tried to send to recipient(s) that have been marked as inactive. Found inactive "
    "addresses: {}. Inactive recipients are ones that have generated a hard bounce, a spam "
    "complaint, or a manual suppression."
)
# Messages for recipients made to fail with `fail_recipients`.
_RECIPIENT_FAULT_MESSAGES = {
    300: "Error parsing 'To': Illegal email address '{}'.",
    405: "Your account is not allowed to send right now (recipient: {}).",
    406: _INACTIVE_ALL,
    412: "Your account is pending approval (recipient: {}).",
    413: "Your account may not send (recipient: {}).",
}
_STATUS_FAULT_BODIES: dict[int, tuple[int, str]] = {
    # Assumed bodies: Postmark documents the statuses, not what comes with them.
    429: (429, "Rate limit exceeded. Please slow down your requests."),
    500: (500, "Internal Server Error"),
    503: (100, "Postmark is undergoing maintenance. Please try again shortly."),
}


@dataclass(frozen=True)
class _Fault:
    """One forced failure: an HTTP error answer, or a held (and maybe dropped) response."""

    status: int | None = None
    delay: float | None = None
    accept: bool = False
    error_code: int | None = None
    message: str | None = None

    def describe(self) -> dict[str, Any]:
        if self.delay is not None:
            return {"timeout": self.delay, "accept": self.accept}
        return {"status": self.status, "error_code": self.error_code, "message": self.message}

    def answer(self, process: Callable[[], Response]) -> Response:
        """The faulted answer; ``process`` gives the real one, for a timeout that accepts."""
        if self.delay is None:
            status = self.status or 500
            default_code, default_message = _STATUS_FAULT_BODIES.get(
                status, (status, "Fault injected by FakePostmark.")
            )
            code = self.error_code if self.error_code is not None else default_code
            text = self.message if self.message is not None else default_message
            return json_response(status, {"ErrorCode": code, "Message": text})
        if self.accept:
            # Processed (a send is recorded) now; the answer waits, then goes to a client that
            # has usually given up: "timed out after Postmark accepted".
            response = process()
            response.delay = self.delay
            return response
        return Response(0, delay=self.delay, drop=True)


class Faults:
    """Failures on demand, for tests and for trying retry logic. Thread-safe and bounded.

    Faults apply to API requests that passed authentication, in the order they arrive: first
    those queued with :meth:`fail_next`, then a share of the rest with :meth:`fail_rate`.
    :meth:`fail_recipients` makes sends to given addresses fail with Postmark's per-recipient
    errors until cleared.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Fault] = deque()
        self._recipients: dict[str, int] = {}
        self._rate = 0.0
        self._rate_delay = 1.0
        self._random = random.Random()  # noqa: S311 - picking faults, not secrets

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int | None = None,
        timeout: float | None = None,
        accept: bool = False,
        error_code: int | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next ``n`` API requests fail.

        Args:
            n: how many requests.
            status: answer with this HTTP status (default 500) and a Postmark error body
                (``ErrorCode``/``Message``, overridable with ``error_code`` and ``message``).
            timeout: instead, hold the response this many seconds: a client with a shorter
                timeout sees ``requests.Timeout``. With ``accept=True`` the request is processed
                (a send is recorded) before the wait and its real answer follows it, the
                "Postmark accepted but the client timed out" case; with ``accept=False`` nothing
                is recorded and the connection is closed without an answer.
            accept: see ``timeout``.
            error_code: the body's ``ErrorCode`` for a status fault.
            message: the body's ``Message`` for a status fault.

        Raises:
            ValueError: out-of-range or contradictory arguments.
        """
        fault = self._make(
            status=status, timeout=timeout, accept=accept, error_code=error_code, message=message
        )
        if not 1 <= n <= MAX_QUEUED_FAULTS:
            raise ValueError(f"n must be between 1 and {MAX_QUEUED_FAULTS}, not {n}")
        with self._lock:
            if len(self._queue) + n > MAX_QUEUED_FAULTS:
                raise ValueError(f"at most {MAX_QUEUED_FAULTS} faults may be queued")
            self._queue.extend([fault] * n)

    def fail_recipients(self, recipients: Mapping[str, int]) -> None:
        """Make sends to these addresses fail with these Postmark ErrorCodes, until cleared.

        406 is Postmark's inactive recipient: a message whose every recipient is inactive fails
        with 406; one with some active recipients is accepted with ErrorCode 0 and Postmark's
        "will not deliver to these inactive addresses" message. Other codes (300, 405, ...)
        fail the whole message with that code.
        """
        checked = {}
        for address, code in recipients.items():
            if not isinstance(address, str) or "@" not in address:
                raise ValueError(f"not an email address: {address!r}")
            if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 9999:  # noqa: PLR2004
                raise ValueError(f"not a Postmark ErrorCode: {code!r}")
            checked[address.strip().lower()] = code
        with self._lock:
            if len(self._recipients) + len(checked) > MAX_QUEUED_FAULTS:
                raise ValueError(f"at most {MAX_QUEUED_FAULTS} failing recipients")
            self._recipients.update(checked)

    def fail_rate(self, fraction: float, *, seed: int | None = None, timeout: float = 1.0) -> None:
        """Fail this share of API requests, each with HTTP 500, HTTP 429 or a timeout.

        The kind is drawn at random (seeded for repeatable runs); a timeout holds the response
        ``timeout`` seconds and is as often accepted (recorded) as not. ``fail_rate(0)`` stops.
        """
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
        self._make(timeout=timeout)  # checks the bound
        with self._lock:
            self._rate = fraction
            self._rate_delay = timeout
            self._random = random.Random(seed)  # noqa: S311 - picking faults, not secrets

    def clear(self) -> None:
        """Remove every configured fault."""
        with self._lock:
            self._queue.clear()
            self._recipients.clear()
            self._rate = 0.0

    def snapshot(self) -> dict[str, Any]:
        """What is configured now, as JSON (``GET /__faults`` answers this)."""
        with self._lock:
            return {
                "queued": [f.describe() for f in self._queue],
                "recipients": dict(self._recipients),
                "rate": self._rate,
                "rate_timeout": self._rate_delay,
            }

    def configure(self, request: Mapping[str, Any]) -> None:
        """Apply a ``POST /__faults`` body: ``{"clear": true, "fail_next": {...}, ...}``.

        Keys are applied in this order: ``clear``, ``fail_recipients`` (a mapping of address to
        ErrorCode), ``fail_next`` and ``fail_rate`` (the keyword arguments of those methods).
        """
        unknown = set(request) - {"clear", "fail_next", "fail_recipients", "fail_rate"}
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        if request.get("clear"):
            self.clear()
        if "fail_recipients" in request:
            recipients = request["fail_recipients"]
            if not isinstance(recipients, Mapping):
                raise ValueError("fail_recipients is an object of address: ErrorCode")
            self.fail_recipients(recipients)
        if "fail_next" in request:
            self.fail_next(**_kwargs(request["fail_next"], "fail_next"))
        if "fail_rate" in request:
            self.fail_rate(**_kwargs(request["fail_rate"], "fail_rate"))

    def intercept(self, process: Callable[[], Response]) -> Response:
        """The answer to an API request: ``process()``, unless a fault takes this request."""
        fault = self._take()
        if fault is None:
            return process()
        return fault.answer(process)

    def check_recipients(
        self, recipients: list[str], suppressed: frozenset[str] | set[str] = frozenset()
    ) -> list[str]:
        """Raise a configured recipient failure, or list the inactive (406) recipients.

        ``suppressed`` (lowercased) are inactive too: the stream's suppression list.

        Raises:
            RequestRefusedError: a recipient made to fail, or every recipient inactive.
        """
        inactive = []
        for address in recipients:
            code = 406 if address.lower() in suppressed else self._recipient_code(address)
            if code == 406:  # noqa: PLR2004 - Postmark's inactive recipient
                inactive.append(address)
            elif code is not None:
                text = _RECIPIENT_FAULT_MESSAGES.get(code, "Recipient '{}' was refused.")
                raise RequestRefusedError(code, text.format(address))
        if inactive and len(inactive) == len(recipients):
            raise RequestRefusedError(406, _INACTIVE_ALL.format(", ".join(inactive)))
        return inactive

    def _make(
        self,
        *,
        status: int | None = None,
        timeout: float | None = None,
        accept: bool = False,
        error_code: int | None = None,
        message: str | None = None,
    ) -> _Fault:
        if timeout is not None:
            if status is not None or error_code is not None or message is not None:
                raise ValueError("a timeout fault takes no status, error_code or message")
            if isinstance(timeout, bool) or not 0 < timeout <= MAX_FAULT_DELAY:
                raise ValueError(f"timeout must be in (0, {MAX_FAULT_DELAY}] seconds")
            return _Fault(delay=float(timeout), accept=bool(accept))
        status = 500 if status is None else status
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:  # noqa: PLR2004
            raise ValueError(f"status must be an HTTP error status (400-599), not {status!r}")
        return _Fault(status=status, error_code=error_code, message=message)

    def _take(self) -> _Fault | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._rate and self._random.random() < self._rate:
                kind = self._random.choice(("500", "429", "timeout"))
                if kind == "timeout":
                    return _Fault(delay=self._rate_delay, accept=self._random.random() < 0.5)  # noqa: PLR2004
                return _Fault(status=int(kind))
            return None

    def _recipient_code(self, address: str) -> int | None:
        with self._lock:
            return self._recipients.get(address.strip().lower())


def _kwargs(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} takes an object of keyword arguments")  # noqa: TRY004
    return dict(value)
