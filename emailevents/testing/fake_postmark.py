"""A local Postmark-compatible HTTP server, as moto is for AWS: the real client, no Postmark.

``FakePostmark`` speaks the part of Postmark's server API that emailevents uses, with Postmark's
JSON shapes, error codes and messages: template sends (single and batch), plain sends, the
templates API (list, get, create, edit, delete, validate) and the outbound message search. It
renders templates as Postmark does (see :mod:`emailevents.testing.mustache`), keeps every accepted
message, shows them in an inbox at ``/`` (:mod:`emailevents.testing.inbox`) like a local mail
catcher, and fails on demand (``server.faults``) so retry logic can be exercised over real HTTP::

    with FakePostmark(templates=DEMO_TEMPLATES) as server:
        client = PostmarkClient(server_token="test-token", root_api_url=server.url)
        server.faults.fail_next(1, status=429)
        ...
        assert server.messages[0].subject == "..."

Where Postmark's behaviour is known from its documentation, its clients or recorded answers,
the comment next to it says so; the rest is marked "assumed".
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import random
import re
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from ..addresses import AddressError, parse_address, split_addresses
from ..errors import TemplateLoadError
from . import inbox
from .mustache import Template, suggested_model

__all__ = [
    "DEFAULT_STREAMS",
    "DEMO_TEMPLATES",
    "FakePostmark",
    "Faults",
    "ReceivedMessage",
    "StoredTemplate",
    "TemplateLoadError",
]

logger = logging.getLogger(__name__)

DEMO_TEMPLATES = Path(__file__).resolve().parent.parent / "demo" / "templates"
"""The demo application's templates, one YAML file per event."""

# Postmark's limits (its API reference and Templates API pages).
MAX_BATCH = 500
MAX_RECIPIENTS = 50
MAX_TEMPLATES = 100
MAX_EMAIL_BYTES = 10 * 1024 * 1024  # "10 MB for our Email API"
MAX_BATCH_BYTES = 50 * 1024 * 1024  # "and 50 MB total for batch"
MAX_OTHER_BYTES = 1024 * 1024
# Assumed: Postmark runs on .NET, whose JSON readers (System.Text.Json, Json.NET 13) refuse
# documents nested deeper than 64 by default. Deeper bodies are refused before parsing, so
# nothing downstream (copying, rendering) can recurse without bound.
MAX_JSON_DEPTH = 64
METADATA_MAX_FIELDS = 10
METADATA_MAX_KEY = 20
METADATA_MAX_VALUE = 80
TAG_MAX = 1000  # assumed: Postmark documents one tag per message of at most 1000 characters

# Bounds on what a test or a separate process can ask of the fault injector.
MAX_QUEUED_FAULTS = 10_000
MAX_FAULT_DELAY = 120.0

_SERVER_ID = 1

# Recorded answers: the team's Postmark reference notes, and the threads and clients cited.
_NO_TOKEN = "No Account or Server API tokens were supplied in the HTTP headers."  # noqa: S105 - a message
_TEMPLATE_ID_NOT_FOUND = (
    "The 'TemplateId' associated with this request is not valid or was not found."
)
# As quoted by an application's tests around anymail's Postmark backend.
_TEMPLATE_ALIAS_NOT_FOUND = (
    "The Template's 'Alias' associated with this request is not valid or was not found."
)
# swoosh/swoosh PR #568 records Postmark answering a Subject sent with a template this way.
_CONTENT_WITH_TEMPLATE = (
    "Neither 'TextBody', 'HtmlBody', or 'Subject' may be specified when using a template for "
    "the email."
)
_ZERO_RECIPIENTS = "Zero recipients specified"  # recorded by several clients' tests
_MISSING_FROM = "Invalid 'From' value."  # recorded by the multimail gem
_NO_BODY = "Provide either email TextBody or HtmlBody or both."  # ditto
# ActiveCampaign/postmark-gem spec/unit/postmark/error_spec.rb
_INACTIVE_ALL = (
    "You tried to send to recipient(s) that have been marked as inactive. Found inactive "
    "addresses: {}. Inactive recipients are ones that have generated a hard bounce, a spam "
    "complaint, or a manual suppression."
)
_INACTIVE_SOME = "Message OK, but will not deliver to these inactive addresses: {}."
# Assumed wording for the rest: the codes are Postmark's, the sentences ours.
_INVALID_JSON = "Received invalid JSON input."
_JSON_REQUIRED = "The request must have the Content-Type header set to application/json."
_TOO_MANY_BATCH = f"Too many batch messages: at most {MAX_BATCH} may be sent in one request."
_MISSING_MODEL = "The 'TemplateModel' field is required when sending with a template."

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

_TEMPLATE_FIELDS = frozenset(
    {"TemplateId", "Name", "Alias", "Subject", "HtmlBody", "TextBody", "Active", "TemplateType"}
)
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_MESSAGE_PAGE = re.compile(
    r"/messages/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
_MESSAGE_DETAILS = re.compile(r"/messages/outbound/([^/]+)/details")
_TEMPLATE_PATH = re.compile(r"/templates/([^/]+)")
_STREAM_PATH = re.compile(r"/message-streams/([^/]+)")
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# RFC 5322 field names: printable ASCII but the colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_HEADER_BREAKS = re.compile(r"[\r\n\0]")
_TRACK_LINKS = frozenset({"None", "HtmlAndText", "HtmlOnly", "TextOnly"})

#: Every Postmark server starts with these three streams ("outbound" is the default one).
DEFAULT_STREAMS: Mapping[str, str] = {
    "outbound": "Transactional",
    "broadcast": "Broadcasts",
    "inbound": "Inbound",
}
_STREAM_TYPES = frozenset({"Transactional", "Broadcasts", "Inbound"})
_STREAM_NAMES = {
    "outbound": "Default Transactional Stream",
    "broadcast": "Default Broadcast Stream",
    "inbound": "Default Inbound Stream",
}
# Assumed: Postmark's documentation names the endpoint, not its error for an unknown stream.
_STREAM_NOT_FOUND = (1226, "The message stream for the provided 'ID' was not found.")


class _ApiError(Exception):
    """Postmark's error answer: an ErrorCode and Message, with its HTTP status."""

    def __init__(self, error_code: int, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"ErrorCode": self.error_code, "Message": self.message}


def _now() -> datetime:
    return datetime.now(UTC)


# -- templates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTemplate:
    """A template the server holds, with Postmark's fields."""

    template_id: int
    name: str
    subject: str
    html_body: str | None = None
    text_body: str | None = None
    alias: str | None = None
    active: bool = True
    template_type: str = "Standard"

    @cached_property
    def compiled(self) -> dict[str, Template]:
        """The parsed Subject, HtmlBody and TextBody (those present)."""
        parts = {"Subject": self.subject, "HtmlBody": self.html_body, "TextBody": self.text_body}
        return {key: Template(text) for key, text in parts.items() if text is not None}

    def render(self, model: Mapping[str, Any]) -> dict[str, str]:
        """Subject, HtmlBody and TextBody (those present) rendered with ``model``.

        Raises:
            TemplateSyntaxError: a part has syntax errors.
        """
        return dict(self._rendered(json.dumps(model, sort_keys=True)))

    @cached_property
    def _rendered(self) -> Callable[[str], tuple[tuple[str, str], ...]]:
        # A batch usually carries one TemplateModel for all its messages (a fan-out): render
        # each distinct model once. Rendering is a pure function of the template and the model.
        @lru_cache(maxsize=256)
        def rendered(model_json: str) -> tuple[tuple[str, str], ...]:
            model = json.loads(model_json)
            return tuple((key, part.render(model)) for key, part in self.compiled.items())

        return rendered

    def summary(self) -> dict[str, Any]:
        """The item of ``GET /templates``."""
        return {
            "Active": self.active,
            "TemplateId": self.template_id,
            "Name": self.name,
            "Alias": self.alias,
            "TemplateType": self.template_type,
            "LayoutTemplate": None,
        }

    def details(self) -> dict[str, Any]:
        """The answer of ``GET /templates/{id or alias}``."""
        return {
            "TemplateId": self.template_id,
            "Name": self.name,
            "Alias": self.alias,
            "Subject": self.subject,
            "HtmlBody": self.html_body,
            "TextBody": self.text_body,
            "AssociatedServerId": _SERVER_ID,
            "Active": self.active,
            "TemplateType": self.template_type,
            "LayoutTemplate": None,
        }


def _check_template_fields(template: StoredTemplate) -> None:
    for required, text in (("Name", template.name), ("Subject", template.subject)):
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(1120, f"The template's '{required}' field is required.")
    for optional, body in (("HtmlBody", template.html_body), ("TextBody", template.text_body)):
        if body is not None and not isinstance(body, str):
            raise _ApiError(1122, f"The template's '{optional}' field must be a string.")
    if not template.html_body and not template.text_body:
        raise _ApiError(1120, "A template needs an HtmlBody or a TextBody, or both.")
    if not isinstance(template.active, bool):
        raise _ApiError(1122, "The template's 'Active' field must be true or false.")
    alias = template.alias
    if alias is not None and (not isinstance(alias, str) or not _ALIAS.fullmatch(alias)):
        raise _ApiError(
            1122,
            f"Invalid Alias {alias!r}: letters, digits, '.', '-' and '_', starting with a letter.",
        )


def _content_errors(template: StoredTemplate) -> str | None:
    problems = [
        f"{part}: line {error.line}, character {error.character}: {error.message}"
        for part, compiled in template.compiled.items()
        for error in compiled.errors
    ]
    return "; ".join(problems) or None


def _read_template_files(source: str | os.PathLike[str]) -> list[tuple[str, Mapping[str, Any]]]:
    path = Path(source)
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise TemplateLoadError(f"{path}: no .yaml or .yml template files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise TemplateLoadError(f"{path}: no such file or directory")
    found: list[tuple[str, Mapping[str, Any]]] = []
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TemplateLoadError(f"{file}: not valid YAML: {exc}") from exc
        items = data if isinstance(data, list) else [data]
        for index, item in enumerate(items):
            where = f"{file}" if len(items) == 1 else f"{file} (item {index + 1})"
            if not isinstance(item, Mapping):
                raise TemplateLoadError(f"{where}: a template is a mapping of Postmark fields")
            found.append((where, item))
    return found


# -- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the server accepted: rendered content, everything received, and its ids."""

    message_id: str
    received_at: datetime
    to: str
    from_: str
    subject: str
    html_body: str | None
    text_body: str | None
    tag: str | None
    metadata: dict[str, str]
    message_stream: str
    template_id: int | None
    template_alias: str | None
    template_model: dict[str, Any] | None
    cc: str | None = None
    bcc: str | None = None
    reply_to: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    """The message exactly as received (one item of a batch)."""

    @property
    def recipients(self) -> list[str]:
        """Every address the message went to (To, Cc, Bcc), read as the server read them."""
        return _recipients(self.to, self.cc, self.bcc)

    def addresses(self, field_name: str) -> list[tuple[str, str]]:
        """``(name, address)`` pairs of ``From``, ``To``, ``Cc``, ``Bcc`` or ``ReplyTo``.

        Read as the server read them when it accepted the message; ``name`` is ``""`` when
        there is none.

        Raises:
            KeyError: another field name.
        """
        fields = {
            "From": self.from_,
            "To": self.to,
            "Cc": self.cc,
            "Bcc": self.bcc,
            "ReplyTo": self.reply_to,
        }
        return list(_address_list(fields[field_name] or ""))

    def summary(self) -> dict[str, Any]:
        """The item of ``GET /messages/outbound``, in Postmark's shape."""
        return {
            "Tag": self.tag,
            "MessageID": self.message_id,
            "MessageStream": self.message_stream,
            "To": _people(self.to),
            "Cc": _people(self.cc),
            "Bcc": _people(self.bcc),
            "Recipients": self.recipients,
            "ReceivedAt": self.received_at.isoformat(),
            "From": self.from_,
            "Subject": self.subject,
            "Attachments": [],
            "Status": "Sent",
            "TrackOpens": bool(self.request.get("TrackOpens")),
            "TrackLinks": self.request.get("TrackLinks") or "None",
            "Metadata": dict(self.metadata),
            "Sandboxed": False,
        }

    def details(self) -> dict[str, Any]:
        """The answer of ``GET /messages/outbound/{id}/details``."""
        return {
            **self.summary(),
            "TextBody": self.text_body or "",
            "HtmlBody": self.html_body or "",
            "Body": "",
            "MessageEvents": [],
        }


def _people(field_value: str | None) -> list[dict[str, Any]]:
    if not field_value:
        return []
    return [{"Email": a, "Name": n or None} for n, a in _address_list(field_value)]


# -- addresses, read strictly in one place -------------------------------------------------------


class _IllegalAddressError(AddressError):
    """Raised when one item of an address list is not exactly one address; ``item`` is it."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(reason)
        self.item = item


# A batch sends the same From (and often the same To) hundreds of times: parsing and checking
# an address is most of the work of accepting a message, and its answer never changes.
@lru_cache(maxsize=65536)
def _address_list(value: str) -> tuple[tuple[str, str], ...]:
    """``'"Lovelace, Ada" <ada@acme.test>, bob@acme.test'`` -> ``(name, address)`` pairs.

    The one reading of an address field, for the checks on a send, ``ReceivedMessage.recipients``
    and the page alike. Each item between commas (outside quotes) must be exactly one address,
    as :func:`emailevents.addresses.parse_address` reads one: a line break, NUL or any control
    character, a comment, a group, an unbalanced bracket or quote, or an empty item is refused,
    not repaired. A blank value is the empty list.

    Raises:
        _IllegalAddressError: an item is not one address; ``item`` is that item, stripped.
    """
    if not value.strip():
        return ()
    parsed = []
    for item in split_addresses(value):
        try:
            parsed.append(parse_address(item))
        except AddressError as exc:
            raise _IllegalAddressError(item.strip(), str(exc)) from None
    return tuple(parsed)


# -- validation, as Postmark does it ---------------------------------------------------------------


def _addresses(value: Any, field_name: str) -> tuple[tuple[str, str], ...]:
    """A comma-separated address list, each address read strictly; at least one."""
    if not isinstance(value, str):
        raise _ApiError(403, f"The '{field_name}' field must be a string of addresses.")
    try:
        parsed = _address_list(value)
    except _IllegalAddressError as exc:
        # postmark-gem's spec records: "Error parsing 'To': Illegal email address
        # 'johne.xample.com'. It must contain the '@' symbol."
        hint = "" if "@" in exc.item else " It must contain the '@' symbol."
        raise _ApiError(
            300, f"Error parsing '{field_name}': Illegal email address '{exc.item}'.{hint}"
        ) from None
    if not parsed:
        raise _ApiError(300, _ZERO_RECIPIENTS)
    return parsed


def _optional_addresses(message: Mapping[str, Any], field_name: str) -> str | None:
    value = message.get(field_name)
    if value is None or value == "":
        return None
    _addresses(value, field_name)
    return str(value)


def _check_from(message: Mapping[str, Any]) -> str:
    value = message.get("From")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _ApiError(300, _MISSING_FROM)
    if not isinstance(value, str):
        raise _ApiError(403, "The 'From' field must be a string.")
    if len(_addresses(value, "From")) != 1:
        raise _ApiError(300, f"Error parsing 'From': Illegal email address '{value}'.")
    return value


def _check_headers(value: Any) -> None:
    # Postmark: "Headers: List of custom headers to include", each {"Name": ..., "Value": ...}.
    # A line break in either would start a header of its own (or the body): refused, with the
    # code Postmark gives an invalid request (300); a wrong shape is incompatible JSON (403).
    if value is None:
        return
    if not isinstance(value, list):
        raise _ApiError(403, "The 'Headers' field must be a list of {Name, Value} objects.")
    for header in value:
        if not isinstance(header, dict):
            raise _ApiError(403, "Each header must be an object with 'Name' and 'Value'.")
        name, text = header.get("Name"), header.get("Value")
        if not isinstance(name, str) or not isinstance(text, str):
            raise _ApiError(403, "A header's 'Name' and 'Value' must be strings.")
        if not _HEADER_NAME.fullmatch(name) or _HEADER_BREAKS.search(text):
            raise _ApiError(
                300,
                f"Invalid 'Headers': {name!r} is not a header name, or its value holds a line "
                "break.",
            )


def _check_tracking(message: Mapping[str, Any]) -> None:
    links, opens = message.get("TrackLinks"), message.get("TrackOpens")
    if links is not None and (not isinstance(links, str) or links not in _TRACK_LINKS):
        raise _ApiError(403, f"'TrackLinks' must be one of {', '.join(sorted(_TRACK_LINKS))}.")
    if opens is not None and not isinstance(opens, bool):
        raise _ApiError(403, "'TrackOpens' must be true or false.")


def _check_metadata(value: Any) -> dict[str, str]:
    # Postmark: at most 10 fields, keys up to 20 characters, values up to 80; keys may not
    # differ only by case. The sentences below are assumed; the code (300) is Postmark's.
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _ApiError(300, "Metadata must be an object of string keys and string values.")
    if len(value) > METADATA_MAX_FIELDS:
        raise _ApiError(
            300, f"Too many metadata fields ({len(value)}); at most {METADATA_MAX_FIELDS}."
        )
    seen: set[str] = set()
    checked: dict[str, str] = {}
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY:
            raise _ApiError(
                300, f"Metadata key '{key}' is longer than {METADATA_MAX_KEY} characters."
            )
        if key.lower() in seen:
            raise _ApiError(300, f"Metadata keys may not differ only by case: '{key}'.")
        seen.add(key.lower())
        if isinstance(item, dict | list):
            raise _ApiError(300, f"Metadata value for '{key}' must be a string.")
        text = "" if item is None else str(item)
        if len(text) > METADATA_MAX_VALUE:
            raise _ApiError(
                300, f"Metadata value for '{key}' is longer than {METADATA_MAX_VALUE} characters."
            )
        checked[key] = text
    return checked


def _check_tag(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _ApiError(403, "The 'Tag' field must be a string.")
    if len(value) > TAG_MAX:
        raise _ApiError(300, f"The 'Tag' field may be at most {TAG_MAX} characters long.")
    return value


def _check_stream(value: Any) -> str:
    if value is None or value == "":
        return "outbound"  # Postmark: omitted means the server's default transactional stream
    if not isinstance(value, str):
        raise _ApiError(403, "The 'MessageStream' field must be a string.")
    return value


@dataclass(frozen=True)
class _Envelope:
    """The checked non-content fields of one message."""

    to: str
    from_: str
    cc: str | None
    bcc: str | None
    reply_to: str | None
    tag: str | None
    metadata: dict[str, str]
    message_stream: str

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> _Envelope:
        from_ = _check_from(message)
        to = message.get("To")
        if to is None or (isinstance(to, str) and not to.strip()):
            raise _ApiError(300, _ZERO_RECIPIENTS)
        _addresses(to, "To")
        envelope = cls(
            to=str(to),
            from_=from_,
            cc=_optional_addresses(message, "Cc"),
            bcc=_optional_addresses(message, "Bcc"),
            reply_to=_optional_addresses(message, "ReplyTo"),
            tag=_check_tag(message.get("Tag")),
            metadata=_check_metadata(message.get("Metadata")),
            message_stream=_check_stream(message.get("MessageStream")),
        )
        _check_headers(message.get("Headers"))
        _check_tracking(message)
        if len(envelope.recipients()) > MAX_RECIPIENTS:
            # Postmark: at most 50 recipients per message, counting To, Cc and Bcc together.
            raise _ApiError(
                300,
                f"Invalid 'To': at most {MAX_RECIPIENTS} recipients are allowed, counting To, "
                "Cc and Bcc together.",
            )
        return envelope

    def recipients(self) -> list[str]:
        return _recipients(self.to, self.cc, self.bcc)


def _recipients(*fields: str | None) -> list[str]:
    return [address for f in fields if f for _, address in _address_list(f)]


# -- faults --------------------------------------------------------------------------------------


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


class Faults:
    """Failures on demand, for tests and for trying retry logic. Thread-safe and bounded.

    Faults apply to API requests that passed authentication, in the order they arrive: first
    those queued with :meth:`fail_next`, then a share of the rest with :meth:`fail_rate`.
    :meth:`fail_recipients` makes sends to given addresses fail with Postmark's per-recipient
    errors until cleared.
    """

    def __init__(self, stopping: threading.Event | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Fault] = deque()
        self._recipients: dict[str, int] = {}
        self._rate = 0.0
        self._rate_delay = 1.0
        self._random = random.Random()  # noqa: S311 - picking faults, not secrets
        self._stopping = stopping or threading.Event()

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

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _kwargs(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} takes an object of keyword arguments")  # noqa: TRY004
    return dict(value)


# -- HTTP ------------------------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering (after the delay)


def _json(status: int, payload: Any) -> _Response:
    return _Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def _error(exc: _ApiError) -> _Response:
    return _json(exc.status, exc.body())


# The pages run one script, their own file (/__inbox.js), and no inline one; emails are shown
# in sandboxed frames that cannot run any (a srcdoc frame also inherits this policy).
def _script() -> _Response:
    return _Response(
        200,
        inbox.SCRIPT.encode("utf-8"),
        content_type="text/javascript; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


_PAGE_POLICY = (
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def _page(status: int, body: str) -> _Response:
    return _Response(
        status,
        body.encode("utf-8"),
        content_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _PAGE_POLICY, "Cache-Control": "no-store"},
    )


def _see_other(location: str) -> _Response:
    return _Response(303, b"", content_type="text/plain", headers={"Location": location})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakePostmark) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        # The stdlib prints these to stderr; a client that hangs up mid-request is no news.
        # (socketserver calls this inside its exception handler, so exc_info is the error.)
        logger.debug("fake Postmark: error serving %s", client_address, exc_info=True)  # noqa: LOG014

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions use it
    server_version = "FakePostmark"
    sys_version = ""
    timeout = 30  # seconds an idle keep-alive connection is kept

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the client went away
            super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        path = unquote(split.path)
        fake._note_request(self.command, path)  # noqa: SLF001 - the server's own handler
        body = self._read_body(path)
        if body is None:
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            response = fake._respond(  # noqa: SLF001 - the server's own handler
                self.command, path, dict(parse_qsl(split.query)), headers, body
            )
        except Exception:
            # A bug here, not the client's: say so as Postmark's 500 would, and log the trace.
            logger.exception("fake Postmark failed on %s %s", self.command, path)
            response = _json(500, {"ErrorCode": 500, "Message": "Internal Server Error"})
        latency = fake.latency
        if latency and not fake._local_route(self.command, path):  # noqa: SLF001 - its own server
            fake.faults._wait(latency)  # noqa: SLF001 - cut short when the server stops
        self._answer(response)

    def _read_body(self, path: str) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self._answer(_Response(411, b"Length Required", "text/plain"), close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        limit = (
            MAX_BATCH_BYTES
            if "batch" in path.lower()
            else MAX_EMAIL_BYTES
            if path.startswith(("/email", "/templates"))
            else MAX_OTHER_BYTES
        )
        if length < 0:
            self._answer(_Response(400, b"Bad Content-Length", "text/plain"), close=True)
            return None
        if length > limit:
            # Postmark answers 413 Payload Too Large past its size limits; the body is not read.
            message = f"Request body over {limit} bytes".encode()
            self._answer(_Response(413, message, "text/plain"), close=True)
            return None
        return self.rfile.read(length) if length else b""

    def _answer(self, response: _Response, *, close: bool = False) -> None:
        if response.delay:
            self.server.fake.faults._wait(response.delay)  # noqa: SLF001 - the server's own handler
        if response.drop:
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:
            self.close_connection = True  # the client gave up (a timeout) or went away

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:  # noqa: ARG002
        # Method, path and status only: never the query string, headers (the token) or body.
        path = urlsplit(self.path).path
        logger.debug("%s %s -> %s", self.command, path, code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("fake Postmark: %s", format % args)


# -- the server ------------------------------------------------------------------------------------


class FakePostmark:
    """A Postmark-compatible HTTP server on this machine, for tests and local development.

    Args:
        host: the address to listen on; keep the loopback address unless you mean otherwise.
        port: the port; 0 picks a free one (read it back from :attr:`url`).
        tokens: the server API tokens it accepts in ``X-Postmark-Server-Token``.
        templates: a directory of YAML template files, one YAML file (one template or a list),
            or a list of mappings; each has Postmark's ``Name``, ``Alias``, ``Subject``,
            ``HtmlBody``, ``TextBody`` and optionally ``TemplateId`` (assigned when absent).
        max_messages: how many received messages are kept (the oldest go first).
        message_streams: the server's message streams, ID -> ``MessageStreamType``
            (``Transactional``, ``Broadcasts`` or ``Inbound``), as ``GET /message-streams``
            lists them; by default Postmark's three: ``outbound``, ``broadcast``, ``inbound``.
        latency: seconds every API answer is held, as if Postmark were a network away (see
            :meth:`set_latency`).

    Raises:
        ValueError: a latency out of range.
        TemplateLoadError: a template is malformed, its content does not parse, or an id or
            alias is used twice.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Iterable[str] = ("test-token",),
        templates: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
        max_messages: int = 10_000,
        message_streams: Mapping[str, str] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.host = host
        self.message_streams = dict(DEFAULT_STREAMS if message_streams is None else message_streams)
        if not set(self.message_streams.values()) <= _STREAM_TYPES:
            raise ValueError(f"message stream types are {', '.join(sorted(_STREAM_TYPES))}")
        self.port = port
        self._tokens = tuple(tokens)
        if not self._tokens or not all(isinstance(t, str) and t for t in self._tokens):
            raise ValueError("tokens must be one or more non-empty strings")
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self.faults = Faults(self._stopping)
        self._messages: deque[ReceivedMessage] = deque(maxlen=max_messages)
        self._version = 0  # counts changes to the messages, for the inbox's live list
        self._requests: deque[tuple[str, str]] = deque(maxlen=100_000)
        self._templates: dict[int, StoredTemplate] = {}
        self._next_id = 1_000_001
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        self._latency = 0.0
        self.set_latency(latency)
        self._initial: list[tuple[str, Mapping[str, Any]]] = []
        if templates is not None:
            if isinstance(templates, str | os.PathLike):
                self._initial = _read_template_files(templates)
            else:
                self._initial = [(f"template {i + 1}", t) for i, t in enumerate(templates)]
            self._load(self._initial)

    # -- lifecycle --

    def start(self) -> Self:
        """Listen and serve in a background (daemon) thread; returns the server."""
        with self._lock:
            if self._thread is not None:
                return self
            server = self._bind()
            self._thread = threading.Thread(
                target=self._run, args=(server,), name=f"fake-postmark-{self.port}", daemon=True
            )
            self._thread.start()
        self._serving.wait(5)
        return self

    def serve_forever(self) -> None:
        """Listen and serve in this thread until :meth:`stop` is called or Ctrl-C (for the CLI)."""
        server = self._bind()
        try:
            self._run(server)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, drop open connections and cut short any held responses."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()
        if self._serving.is_set():
            self._shutdown(server)
        server.close_connections()
        server.server_close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self._serving.clear()
        self._stopping.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _bind(self) -> _HTTPServer:
        with self._lock:
            if self._server is not None:
                raise RuntimeError("this FakePostmark is already listening")
            self._server = _HTTPServer((self.host, self.port), self)
            self.port = self._server.server_address[1]
            return self._server

    @staticmethod
    def _shutdown(server: _HTTPServer) -> None:
        # serve_forever notices a shutdown only when its select() returns: knock until it has,
        # rather than wait out the poll interval.
        stopper = threading.Thread(target=server.shutdown, name="fake-postmark-stop", daemon=True)
        stopper.start()
        address = server.server_address[:2]
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=0.5).close()  # type: ignore[arg-type]
            stopper.join(0.01)

    def _run(self, server: _HTTPServer) -> None:
        self._serving.set()
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            self._serving.clear()

    @property
    def url(self) -> str:
        """The root URL to give postmarker (``root_api_url``) or ``POSTMARK_API_URL``."""
        if self._server is None:
            raise RuntimeError("start() the server first: its port is chosen when it listens")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # -- what happened --

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Every message accepted, oldest first (a snapshot)."""
        with self._lock:
            return list(self._messages)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every HTTP request received as ``(method, path)``, oldest first (a snapshot)."""
        with self._lock:
            return list(self._requests)

    @property
    def templates(self) -> list[StoredTemplate]:
        """The templates held now, by id."""
        with self._lock:
            return [self._templates[i] for i in sorted(self._templates)]

    def message(self, message_id: str) -> ReceivedMessage:
        """One received message by its MessageID.

        Raises:
            KeyError: no such message.
        """
        with self._lock:
            for received in self._messages:
                if received.message_id == message_id:
                    return received
        raise KeyError(message_id)

    @property
    def latency(self) -> float:
        """Seconds every API answer is held (0: none)."""
        with self._lock:
            return self._latency

    def set_latency(self, seconds: float) -> None:
        """Hold every API answer ``seconds`` (0 to stop), as a Postmark a network away would.

        Each request waits in its own connection's thread, so concurrent requests wait together,
        not one after another. The wait is cut short when the server stops. Pages and the
        ``/__`` control endpoints are not held; :meth:`reset` keeps the latency.

        Raises:
            ValueError: not a number of seconds between 0 and 120.
        """
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= MAX_FAULT_DELAY
        ):
            raise ValueError(
                f"latency must be between 0 and {MAX_FAULT_DELAY} seconds, not {seconds!r}"
            )
        with self._lock:
            self._latency = float(seconds)

    def reset(self) -> None:
        """Forget messages, requests and faults; templates go back to those loaded at start."""
        with self._lock:
            self._messages.clear()
            self._version += 1
            self._requests.clear()
            self._templates.clear()
            self._next_id = 1_000_001
            self._load(self._initial)
        self.faults.clear()

    def clear_messages(self) -> None:
        """Forget the messages received (the inbox's "Clear all"); keep everything else."""
        with self._lock:
            self._messages.clear()
            self._version += 1

    def add_template(self, template: Mapping[str, Any]) -> StoredTemplate:
        """Add a template given with Postmark's field names (as in the YAML files).

        Raises:
            TemplateLoadError: as for templates given to the constructor.
        """
        with self._lock:
            return self._load([("template", template)])[0]

    # -- templates --

    def _load(self, items: list[tuple[str, Mapping[str, Any]]]) -> list[StoredTemplate]:
        loaded = []
        for where, item in items:
            unknown = set(item) - _TEMPLATE_FIELDS
            if unknown:
                raise TemplateLoadError(f"{where}: unknown template fields {sorted(unknown)}")
            try:
                template = self._new_template(item)
            except _ApiError as exc:
                raise TemplateLoadError(f"{where}: {exc.message}") from None
            self._templates[template.template_id] = template
            loaded.append(template)
        return loaded

    def _new_template(self, item: Mapping[str, Any]) -> StoredTemplate:
        """A checked template from Postmark's fields (``POST /templates`` and loading)."""
        if len(self._templates) >= MAX_TEMPLATES:
            # Postmark: "a Server may have up to 100 templates"; 1105 is its limit code.
            raise _ApiError(1105, f"Template limit would be exceeded ({MAX_TEMPLATES}).")
        template_id = item.get("TemplateId")
        if template_id is None:
            template_id = self._next_id
        elif isinstance(template_id, bool) or not isinstance(template_id, int) or template_id < 1:
            raise _ApiError(1122, f"TemplateId must be a positive integer, not {template_id!r}.")
        elif template_id in self._templates:
            raise _ApiError(1122, f"TemplateId {template_id} is already used.")
        if (item.get("TemplateType") or "Standard") != "Standard":
            raise _ApiError(1122, "Only Standard templates are supported by this server.")
        template = self._checked(
            StoredTemplate(
                template_id=template_id,
                name=item.get("Name", ""),  # checked by _checked, like the rest
                subject=item.get("Subject", ""),
                html_body=item.get("HtmlBody"),
                text_body=item.get("TextBody"),
                alias=item.get("Alias"),
                active=item.get("Active", True),
            ),
            replacing=None,
        )
        self._next_id = max(self._next_id, template_id + 1)
        return template

    def _checked(self, template: StoredTemplate, replacing: int | None) -> StoredTemplate:
        # Codes: 1120 a required template field is missing, 1122 a templated field is invalid
        # (Postmark's list of template API codes); the sentences are assumed.
        _check_template_fields(template)
        if template.alias is not None:
            for other in self._templates.values():
                same = other.alias and other.alias.lower() == template.alias.lower()
                if same and other.template_id != replacing:
                    raise _ApiError(1122, f"The Alias '{template.alias}' is already in use.")
        problems = _content_errors(template)
        if problems:
            raise _ApiError(1122, f"The template content is invalid: {problems}")
        return template

    def _find_template(self, ref: str) -> StoredTemplate:
        with self._lock:
            if _is_id(ref):
                found = self._templates.get(int(ref))
            else:
                found = next(
                    (t for t in self._templates.values() if t.alias and t.alias == ref), None
                )
        if found is None:
            raise _ApiError(1101, _TEMPLATE_ID_NOT_FOUND)
        return found

    def _template_for_send(self, message: Mapping[str, Any]) -> StoredTemplate:
        template_id, alias = message.get("TemplateId"), message.get("TemplateAlias")
        found: StoredTemplate | None = None
        if template_id is not None:
            error = _TEMPLATE_ID_NOT_FOUND
            if isinstance(template_id, str) and _is_id(template_id):
                template_id = int(template_id)  # JSON deserialisers take "123" for 123
            if isinstance(template_id, int) and not isinstance(template_id, bool):
                with self._lock:
                    found = self._templates.get(template_id)
        elif alias is not None:
            error = _TEMPLATE_ALIAS_NOT_FOUND
            with self._lock:
                found = next((t for t in self._templates.values() if t.alias == alias), None)
        else:
            error = _TEMPLATE_ID_NOT_FOUND  # assumed: with neither, Postmark finds no template
        if found is None or not found.active:
            raise _ApiError(1101, error)
        return found

    # -- requests --

    def _note_request(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def _authorized(self, token: str | None) -> bool:
        if not token:
            return False
        # Compare every token in constant time, so timing says nothing about them.
        matches = [hmac.compare_digest(token.encode(), t.encode()) for t in self._tokens]
        return any(matches)

    def _respond(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> _Response:
        route = path.rstrip("/") or "/"
        local = self._local(method, route, query, body)
        if local is not None:
            return local
        if not self._authorized(headers.get("x-postmark-server-token")):
            return _json(401, {"ErrorCode": 10, "Message": _NO_TOKEN})
        media_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if method in {"POST", "PUT"} and media_type != "application/json":
            return _error(_ApiError(409, _JSON_REQUIRED))
        fault = self.faults._take()  # noqa: SLF001 - the server's own faults
        if fault is None:
            return self._api(method, route, query, body)
        return self._faulted(fault, lambda: self._api(method, route, query, body))

    @staticmethod
    def _faulted(fault: _Fault, process: Callable[[], _Response]) -> _Response:
        if fault.delay is None:
            status = fault.status or 500
            default_code, default_message = _STATUS_FAULT_BODIES.get(
                status, (status, "Fault injected by FakePostmark.")
            )
            code = fault.error_code if fault.error_code is not None else default_code
            text = fault.message if fault.message is not None else default_message
            return _json(status, {"ErrorCode": code, "Message": text})
        if fault.accept:
            # Processed (a send is recorded) now; the answer waits, then goes to a client that
            # has usually given up: "timed out after Postmark accepted".
            response = process()
            response.delay = fault.delay
            return response
        return _Response(0, delay=fault.delay, drop=True)

    @staticmethod
    def _local_route(method: str, path: str) -> bool:
        """Whether a request is for a page or a control endpoint (never held by the latency)."""
        route = path.rstrip("/") or "/"
        return (
            route == "/"
            or route.startswith("/__")
            or (method == "GET" and _MESSAGE_PAGE.fullmatch(route) is not None)
        )

    def _local(
        self, method: str, route: str, query: dict[str, str], body: bytes
    ) -> _Response | None:
        """Pages and control endpoints: no token, never faulted."""
        page = _MESSAGE_PAGE.fullmatch(route)
        if page and method == "GET":
            return self._message_page(page.group(1), query.get("q", ""))
        local: dict[tuple[str, str], Callable[[bytes], _Response]] = {
            ("GET", "/"): lambda _: self._index_page(query.get("q", "")),
            ("GET", "/__inbox"): lambda _: self._inbox_update(query),
            ("GET", "/__inbox.js"): lambda _: _script(),
            ("POST", "/__clear"): self._clear_endpoint,
            ("GET", "/__health"): lambda _: _json(200, {"status": "ok"}),
            ("GET", "/__faults"): lambda _: _json(200, self.faults.snapshot()),
            ("POST", "/__faults"): self._configure_faults,
            ("POST", "/__reset"): self._reset_endpoint,
        }
        handler = local.get((method, route))
        return handler(body) if handler else None

    def _configure_faults(self, body: bytes) -> _Response:
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                return _json(400, {"error": "the body is a JSON object of fault settings"})
            self.faults.configure(request)
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, self.faults.snapshot())

    def _reset_endpoint(self, _body: bytes) -> _Response:
        self.reset()
        return _json(200, {"status": "ok"})

    # -- the inbox's pages (rendered by emailevents.testing.inbox) --

    def _index_page(self, query: str) -> _Response:
        with self._lock:
            messages, version = list(self._messages), self._version
        return _page(
            200, inbox.index_page(messages, query=query, version=version, api_url=self.url)
        )

    def _inbox_update(self, query: dict[str, str]) -> _Response:
        with self._lock:
            messages, version = list(self._messages), self._version
        answer = inbox.live_answer(
            messages, query=query.get("q", ""), version=version, since=query.get("since")
        )
        response = _json(200, answer)
        response.headers["Cache-Control"] = "no-store"
        return response

    def _message_page(self, message_id: str, query: str) -> _Response:
        found = inbox.search(self.messages, query)
        ids = [m.message_id for m in found]
        if message_id not in ids:
            try:
                received = self.message(message_id)  # opened from outside the search
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

    def _clear_endpoint(self, _body: bytes) -> _Response:
        self.clear_messages()
        return _see_other("/")

    def _api(self, method: str, route: str, query: dict[str, str], body: bytes) -> _Response:
        try:
            handler, allowed = self._route(route)
            if handler is None:
                raise _ApiError(404, f"No such endpoint: {route}", status=404)  # noqa: TRY301
            if method not in allowed:
                raise _ApiError(405, f"{method} is not allowed on {route}", status=405)  # noqa: TRY301
            data = _parse_json(body) if method in {"POST", "PUT"} else None
            return handler(method, route, query, data)
        except _ApiError as exc:
            return _error(exc)

    def _route(
        self, route: str
    ) -> tuple[Callable[[str, str, dict[str, str], Any], _Response] | None, set[str]]:
        fixed: dict[str, tuple[Callable[[str, str, dict[str, str], Any], _Response], set[str]]]
        fixed = {
            "/email": (self._post_email, {"POST"}),
            "/email/batch": (self._post_email_batch, {"POST"}),
            "/email/withTemplate": (self._post_with_template, {"POST"}),
            "/email/batchWithTemplates": (self._post_batch_with_templates, {"POST"}),
            "/templates": (self._templates_collection, {"GET", "POST"}),
            "/templates/validate": (self._post_validate, {"POST"}),
            "/messages/outbound": (self._get_outbound, {"GET"}),
            "/message-streams": (self._get_streams, {"GET"}),
        }
        if route in fixed:
            return fixed[route]
        if _TEMPLATE_PATH.fullmatch(route):
            return self._template_item, {"GET", "PUT", "DELETE"}
        if _MESSAGE_DETAILS.fullmatch(route):
            return self._get_details, {"GET"}
        if _STREAM_PATH.fullmatch(route):
            return self._get_stream, {"GET"}
        return None, set()

    # -- sending --

    def _post_with_template(self, _m: str, _r: str, _q: dict[str, str], data: Any) -> _Response:
        if not isinstance(data, dict):
            raise _ApiError(403, "The request body must be a JSON object.")
        answer = self._send_one(data, templated=True)
        return _json(200, answer)

    def _post_email(self, _m: str, _r: str, _q: dict[str, str], data: Any) -> _Response:
        if not isinstance(data, dict):
            raise _ApiError(403, "The request body must be a JSON object.")
        return _json(200, self._send_one(data, templated=False))

    def _post_batch_with_templates(
        self, _m: str, _r: str, _q: dict[str, str], data: Any
    ) -> _Response:
        messages = data.get("Messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            raise _ApiError(403, "The request body must be an object with a 'Messages' list.")
        return self._batch(messages, templated=True)

    def _post_email_batch(self, _m: str, _r: str, _q: dict[str, str], data: Any) -> _Response:
        if not isinstance(data, list):
            raise _ApiError(403, "The request body must be a JSON list of messages.")
        return self._batch(data, templated=False)

    def _batch(self, messages: list[Any], *, templated: bool) -> _Response:
        if len(messages) > MAX_BATCH:
            raise _ApiError(410, _TOO_MANY_BATCH)
        answers = []
        for item in messages:
            # Postmark answers 200 with one result per message, in request order, each with its
            # own ErrorCode ("the results are ordered the same as the original messages").
            try:
                if not isinstance(item, dict):
                    raise _ApiError(403, "Each message must be a JSON object.")  # noqa: TRY301
                answers.append(self._send_one(item, templated=templated))
            except _ApiError as exc:
                answers.append(exc.body())
        return _json(200, answers)

    def _send_one(self, message: dict[str, Any], *, templated: bool) -> dict[str, Any]:
        """Check, render and record one message; its answer, or raise its _ApiError."""
        template, model = self._template_and_model(message) if templated else (None, None)
        envelope = _Envelope.of(message)
        inactive = self._recipient_faults(envelope)
        if template is not None and model is not None:
            rendered = template.render(model)
            subject = rendered["Subject"]
            html_body, text_body = rendered.get("HtmlBody"), rendered.get("TextBody")
        else:
            subject, html_body, text_body = _plain_content(message)
        received = ReceivedMessage(
            message_id=str(uuid.uuid4()),
            received_at=_now(),
            to=envelope.to,
            from_=envelope.from_,
            subject=subject,
            html_body=html_body,
            text_body=text_body,
            tag=envelope.tag,
            metadata=envelope.metadata,
            message_stream=envelope.message_stream,
            template_id=template.template_id if template else None,
            template_alias=template.alias if template else None,
            template_model=_copy(model) if model is not None else None,
            cc=envelope.cc,
            bcc=envelope.bcc,
            reply_to=envelope.reply_to,
            request=message,  # parsed from this request's body: nobody else holds it
        )
        with self._lock:
            self._messages.append(received)
            self._version += 1
        return {
            "To": envelope.to,
            "SubmittedAt": received.received_at.isoformat(),
            "MessageID": received.message_id,
            "ErrorCode": 0,
            "Message": _INACTIVE_SOME.format(", ".join(inactive)) if inactive else "OK",
        }

    def _template_and_model(
        self, message: Mapping[str, Any]
    ) -> tuple[StoredTemplate, dict[str, Any]]:
        template = self._template_for_send(message)
        # postmarker sends explicit nulls for the fields it does not use: null means absent.
        if any(message.get(f) is not None for f in ("Subject", "HtmlBody", "TextBody")):
            raise _ApiError(1123, _CONTENT_WITH_TEMPLATE)
        model = message.get("TemplateModel")
        if model is None:
            raise _ApiError(1120, _MISSING_MODEL)
        if not isinstance(model, dict):
            raise _ApiError(403, "The 'TemplateModel' field must be a JSON object.")
        return template, model

    def _recipient_faults(self, envelope: _Envelope) -> list[str]:
        """Raise a configured recipient failure, or list the inactive (406) recipients."""
        recipients = envelope.recipients()
        inactive = []
        for address in recipients:
            code = self.faults._recipient_code(address)  # noqa: SLF001 - the server's own faults
            if code == 406:  # noqa: PLR2004 - Postmark's inactive recipient
                inactive.append(address)
            elif code is not None:
                text = _RECIPIENT_FAULT_MESSAGES.get(code, "Recipient '{}' was refused.")
                raise _ApiError(code, text.format(address))
        if inactive and len(inactive) == len(recipients):
            raise _ApiError(406, _INACTIVE_ALL.format(", ".join(inactive)))
        return inactive

    # -- templates API --

    def _templates_collection(
        self, method: str, _r: str, query: dict[str, str], data: Any
    ) -> _Response:
        if method == "POST":
            if not isinstance(data, dict) or not data:
                raise _ApiError(1109, "No template data was received.")
            allowed = {"Name", "Alias", "Subject", "HtmlBody", "TextBody", "TemplateType"}
            unknown = {k for k, v in data.items() if v is not None} - allowed - {"LayoutTemplate"}
            if unknown or data.get("LayoutTemplate") is not None:
                names = sorted(unknown) or ["LayoutTemplate"]
                raise _ApiError(1123, f"Fields not allowed here: {', '.join(names)}.")
            with self._lock:
                template = self._new_template({k: v for k, v in data.items() if k in allowed})
                self._templates[template.template_id] = template
            return _json(
                200, {"TemplateId": template.template_id, "Name": template.name, "Active": True}
            )
        count = _int_param(query, "Count", default=100, low=1, high=500)
        offset = _int_param(query, "Offset", default=0, low=0, high=10_000)
        kind = _param(query, "TemplateType") or "All"
        if kind.lower() not in {"all", "standard", "layout"}:
            raise _ApiError(403, "TemplateType must be All, Standard or Layout.")
        chosen = [t for t in self.templates if kind.lower() in {"all", t.template_type.lower()}]
        page = chosen[offset : offset + count]
        return _json(200, {"TotalCount": len(chosen), "Templates": [t.summary() for t in page]})

    def _template_item(self, method: str, route: str, _q: dict[str, str], data: Any) -> _Response:
        match = _TEMPLATE_PATH.fullmatch(route)
        assert match is not None  # noqa: S101 - routed here by this pattern
        template = self._find_template(match.group(1))
        if method == "GET":
            return _json(200, template.details())
        if method == "DELETE":
            with self._lock:
                self._templates.pop(template.template_id, None)
            return _json(
                200, {"ErrorCode": 0, "Message": f"Template {template.template_id} removed."}
            )
        if not isinstance(data, dict):
            raise _ApiError(1109, "No template data was received.")
        changes = {
            "name": data.get("Name"),
            "alias": data.get("Alias"),
            "subject": data.get("Subject"),
            "html_body": data.get("HtmlBody"),
            "text_body": data.get("TextBody"),
        }
        with self._lock:
            edited = replace(template, **{k: v for k, v in changes.items() if v is not None})
            edited = self._checked(edited, replacing=template.template_id)
            self._templates[template.template_id] = edited
        return _json(200, {"TemplateId": edited.template_id, "Name": edited.name, "Active": True})

    def _post_validate(self, _m: str, _r: str, _q: dict[str, str], data: Any) -> _Response:
        if not isinstance(data, dict):
            raise _ApiError(403, "The request body must be a JSON object.")
        parts: dict[str, str] = {
            key: data[key]
            for key in ("Subject", "HtmlBody", "TextBody")
            if isinstance(data.get(key), str)
        }
        if not parts:
            raise _ApiError(1109, "Give at least one of Subject, HtmlBody and TextBody.")
        model = data.get("TestRenderModel")
        if model is not None and not isinstance(model, dict):
            raise _ApiError(403, "TestRenderModel must be a JSON object.")
        compiled = {key: Template(text) for key, text in parts.items()}
        answer: dict[str, Any] = {"AllContentIsValid": all(t.is_valid for t in compiled.values())}
        for key in ("HtmlBody", "TextBody", "Subject"):
            template = compiled.get(key)
            if template is None:
                answer[key] = None
                continue
            answer[key] = {
                "ContentIsValid": template.is_valid,
                "ValidationErrors": [e.as_postmark() for e in template.errors],
                "RenderedContent": template.render(model or {}) if template.is_valid else None,
            }
        answer["SuggestedTemplateModel"] = suggested_model(*compiled.values())
        return _json(200, answer)

    # -- messages API --

    def _get_outbound(self, _m: str, _r: str, query: dict[str, str], _d: Any) -> _Response:
        count = _int_param(query, "count", default=100, low=1, high=500)
        offset = _int_param(query, "offset", default=0, low=0, high=10_000)
        filters: dict[str, Callable[[ReceivedMessage, str], bool]] = {
            "recipient": lambda m, v: v.lower() in (r.lower() for r in m.recipients),
            "fromemail": lambda m, v: v.lower() in m.from_.lower(),
            "tag": lambda m, v: m.tag == v,
            "subject": lambda m, v: v.lower() in m.subject.lower(),
            "messagestream": lambda m, v: m.message_stream == v,
        }
        chosen = list(reversed(self.messages))  # newest first
        for name, keep in filters.items():
            value = _param(query, name)
            if value:
                chosen = [m for m in chosen if keep(m, value)]
        # Postmark: "metadata_": "Filter by metadata key/value, e.g. metadata_color=blue".
        for name, value in query.items():
            if name.lower().startswith("metadata_") and value:
                key = name[len("metadata_") :]
                chosen = [m for m in chosen if m.metadata.get(key) == value]
        page = chosen[offset : offset + count]
        return _json(200, {"TotalCount": len(chosen), "Messages": [m.summary() for m in page]})

    def _get_details(self, _m: str, route: str, _q: dict[str, str], _d: Any) -> _Response:
        match = _MESSAGE_DETAILS.fullmatch(route)
        assert match is not None  # noqa: S101 - routed here by this pattern
        try:
            received = self.message(match.group(1))
        except KeyError:
            raise _ApiError(701, "This message was not found.") from None
        return _json(200, received.details())

    # -- message streams API --

    def _stream(self, stream_id: str) -> dict[str, Any]:
        """An item of ``GET /message-streams``, in Postmark's shape."""
        return {
            "ID": stream_id,
            "ServerID": _SERVER_ID,
            "Name": _STREAM_NAMES.get(stream_id, stream_id),
            "Description": None,
            "MessageStreamType": self.message_streams[stream_id],
            "CreatedAt": "2024-01-01T00:00:00-05:00",
            "UpdatedAt": None,
            "ArchivedAt": None,
            "ExpectedPurgeDate": None,
            "SubscriptionManagementConfiguration": {"UnsubscribeHandlingType": "None"},
        }

    def _get_streams(self, _m: str, _r: str, query: dict[str, str], _d: Any) -> _Response:
        kind = (_param(query, "MessageStreamType") or "All").lower()
        if kind not in {"all", *(t.lower() for t in _STREAM_TYPES)}:
            raise _ApiError(
                403, "MessageStreamType must be All, Inbound, Transactional or Broadcasts."
            )
        streams = [
            self._stream(stream_id)
            for stream_id, stream_type in self.message_streams.items()
            if kind in {"all", stream_type.lower()}
        ]
        return _json(200, {"MessageStreams": streams, "TotalCount": len(streams)})

    def _get_stream(self, _m: str, route: str, _q: dict[str, str], _d: Any) -> _Response:
        match = _STREAM_PATH.fullmatch(route)
        assert match is not None  # noqa: S101 - routed here by this pattern
        stream_id = match.group(1)
        if stream_id not in self.message_streams:
            raise _ApiError(*_STREAM_NOT_FOUND)
        return _json(200, self._stream(stream_id))


def _plain_content(message: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    subject, html_body, text_body = (
        message.get("Subject"),
        message.get("HtmlBody"),
        message.get("TextBody"),
    )
    for name, value in (("Subject", subject), ("HtmlBody", html_body), ("TextBody", text_body)):
        if value is not None and not isinstance(value, str):
            raise _ApiError(403, f"The '{name}' field must be a string.")
    if not html_body and not text_body:
        raise _ApiError(300, _NO_BODY)
    return subject or "", html_body, text_body


def _copy(value: Any) -> Any:
    """A deep copy of JSON data, so what was received cannot change under the test."""
    return json.loads(json.dumps(value))


def _parse_json(body: bytes) -> Any:
    """The body as JSON, or Postmark's 402: never a RecursionError, NaN or a lone surrogate."""
    try:
        text = body.decode("utf-8")
        too_deep = _nesting_over(text, MAX_JSON_DEPTH)
        data = (
            None if too_deep else json.loads(text, parse_constant=_no_constant, parse_float=_finite)
        )
        # `"\ud800"` is valid JSON syntax but no text: it could not be answered or shown.
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeError, over 4300 digits
        raise _ApiError(402, _INVALID_JSON) from None
    if too_deep:
        raise _ApiError(402, _INVALID_JSON)
    return data


def _nesting_over(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests deeper than ``limit``, found without recursion.

    Strings are cut out, then each pass removes the innermost ``[]`` and ``{}`` pairs: ``limit``
    passes empty any text nested at most ``limit`` deep. Brackets that do not pair up (invalid
    JSON) may count as deep; the parser refuses that text anyway.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR.sub("", brackets)  # one scan: only the pairs empty before it
    return bool(brackets)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json reads NaN and Infinity; JSON does not


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _is_id(text: str) -> bool:
    # Not str.isdigit: "²" is a digit that int() refuses, and 5000 digits are past int()'s limit.
    return text.isascii() and text.isdecimal() and len(text) <= 18  # noqa: PLR2004 - an int64


def _param(query: Mapping[str, str], name: str) -> str | None:
    # Postmark's query parameters are matched without regard to case (Count and count both work).
    for key, value in query.items():
        if key.lower() == name.lower():
            return value
    return None


def _int_param(query: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    raw = _param(query, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ApiError(403, f"'{name}' must be a whole number.") from None
    if not low <= value <= high:
        raise _ApiError(403, f"'{name}' must be between {low} and {high}.")
    return value
