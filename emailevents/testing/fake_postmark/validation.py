"""A send checked as Postmark checks it: its JSON, addresses, fields and limits, and ErrorCodes.

Each check refuses what Postmark refuses with a
:class:`~emailevents.errors.RequestRefusedError` carrying Postmark's ErrorCode and message: 300
an invalid request, 402 invalid JSON, 403 incompatible JSON, 1120/1123 a template send's fields.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ...addresses import AddressError, parse_address, split_addresses
from ...errors import RequestRefusedError

__all__ = [
    "Envelope",
    "address_list",
    "parse_json",
    "plain_content",
    "recipient_addresses",
    "template_model",
]

# Postmark's limits (its API reference).
MAX_RECIPIENTS = 50
# Assumed: Postmark runs on .NET, whose JSON readers (System.Text.Json, Json.NET 13) refuse
# documents nested deeper than 64 by default. Deeper bodies are refused before parsing, so
# nothing downstream (copying, rendering) can recurse without bound.
MAX_JSON_DEPTH = 64
METADATA_MAX_FIELDS = 10
METADATA_MAX_KEY = 20
METADATA_MAX_VALUE = 80
TAG_MAX = 1000  # assumed: Postmark documents one tag per message of at most 1000 characters

# Recorded answers: the team's Postmark reference notes, and the threads and clients cited.
# swoosh/swoosh PR #568 records Postmark answering a Subject sent with a template this way.
_CONTENT_WITH_TEMPLATE = (
    "Neither 'TextBody', 'HtmlBody', or 'Subject' may be specified when using a template for "
    "the email."
)
_ZERO_RECIPIENTS = "Zero recipients specified"  # recorded by several clients' tests
_MISSING_FROM = "Invalid 'From' value."  # recorded by the multimail gem
_NO_BODY = "Provide either email TextBody or HtmlBody or both."  # ditto
# Assumed wording for the rest: the codes are Postmark's, the sentences ours.
_INVALID_JSON = "Received invalid JSON input."
_MISSING_MODEL = "The 'TemplateModel' field is required when sending with a template."

_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# RFC 5322 field names: printable ASCII but the colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_HEADER_BREAKS = re.compile(r"[\r\n\0]")
_TRACK_LINKS = frozenset({"None", "HtmlAndText", "HtmlOnly", "TextOnly"})


# -- addresses, read strictly in one place -------------------------------------------------------


class _IllegalAddressError(AddressError):
    """Raised when one item of an address list is not exactly one address; ``item`` is it."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(reason)
        self.item = item


# A batch sends the same From (and often the same To) hundreds of times: parsing and checking
# an address is most of the work of accepting a message, and its answer never changes.
@lru_cache(maxsize=65536)
def address_list(value: str) -> tuple[tuple[str, str], ...]:
    """``'"Lovelace, Ada" <ada@acme.test>, bob@acme.test'`` -> ``(name, address)`` pairs.

    The one reading of an address field, for the checks on a send, ``ReceivedMessage.recipients``
    and the page alike. Each item between commas (outside quotes) must be exactly one address,
    as :func:`emailevents.addresses.parse_address` reads one: a line break, NUL or any control
    character, a comment, a group, an unbalanced bracket or quote, or an empty item is refused,
    not repaired. A blank value is the empty list.

    Raises:
        AddressError: an item is not one address.
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


def recipient_addresses(*fields: str | None) -> list[str]:
    """Every address of these address fields (To, Cc, Bcc), in order."""
    return [address for f in fields if f for _, address in address_list(f)]


# -- a send's fields -------------------------------------------------------------------------------


def _addresses(value: Any, field_name: str) -> tuple[tuple[str, str], ...]:
    """A comma-separated address list, each address read strictly; at least one."""
    if not isinstance(value, str):
        raise RequestRefusedError(403, f"The '{field_name}' field must be a string of addresses.")
    try:
        parsed = address_list(value)
    except _IllegalAddressError as exc:
        # postmark-gem's spec records: "Error parsing 'To': Illegal email address
        # 'johne.xample.com'. It must contain the '@' symbol."
        hint = "" if "@" in exc.item else " It must contain the '@' symbol."
        raise RequestRefusedError(
            300, f"Error parsing '{field_name}': Illegal email address '{exc.item}'.{hint}"
        ) from None
    if not parsed:
        raise RequestRefusedError(300, _ZERO_RECIPIENTS)
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
        raise RequestRefusedError(300, _MISSING_FROM)
    if not isinstance(value, str):
        raise RequestRefusedError(403, "The 'From' field must be a string.")
    if len(_addresses(value, "From")) != 1:
        raise RequestRefusedError(300, f"Error parsing 'From': Illegal email address '{value}'.")
    return value


def _check_headers(value: Any) -> None:
    # Postmark: "Headers: List of custom headers to include", each {"Name": ..., "Value": ...}.
    # A line break in either would start a header of its own (or the body): refused, with the
    # code Postmark gives an invalid request (300); a wrong shape is incompatible JSON (403).
    if value is None:
        return
    if not isinstance(value, list):
        raise RequestRefusedError(
            403, "The 'Headers' field must be a list of {Name, Value} objects."
        )
    for header in value:
        if not isinstance(header, dict):
            raise RequestRefusedError(403, "Each header must be an object with 'Name' and 'Value'.")
        name, text = header.get("Name"), header.get("Value")
        if not isinstance(name, str) or not isinstance(text, str):
            raise RequestRefusedError(403, "A header's 'Name' and 'Value' must be strings.")
        if not _HEADER_NAME.fullmatch(name) or _HEADER_BREAKS.search(text):
            raise RequestRefusedError(
                300,
                f"Invalid 'Headers': {name!r} is not a header name, or its value holds a line "
                "break.",
            )


def _check_tracking(message: Mapping[str, Any]) -> None:
    links, opens = message.get("TrackLinks"), message.get("TrackOpens")
    if links is not None and (not isinstance(links, str) or links not in _TRACK_LINKS):
        raise RequestRefusedError(
            403, f"'TrackLinks' must be one of {', '.join(sorted(_TRACK_LINKS))}."
        )
    if opens is not None and not isinstance(opens, bool):
        raise RequestRefusedError(403, "'TrackOpens' must be true or false.")


def _check_metadata(value: Any) -> dict[str, str]:
    # Postmark: at most 10 fields, keys up to 20 characters, values up to 80; keys may not
    # differ only by case. The sentences below are assumed; the code (300) is Postmark's.
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestRefusedError(
            300, "Metadata must be an object of string keys and string values."
        )
    if len(value) > METADATA_MAX_FIELDS:
        raise RequestRefusedError(
            300, f"Too many metadata fields ({len(value)}); at most {METADATA_MAX_FIELDS}."
        )
    seen: set[str] = set()
    checked: dict[str, str] = {}
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY:
            raise RequestRefusedError(
                300, f"Metadata key '{key}' is longer than {METADATA_MAX_KEY} characters."
            )
        if key.lower() in seen:
            raise RequestRefusedError(300, f"Metadata keys may not differ only by case: '{key}'.")
        seen.add(key.lower())
        if isinstance(item, dict | list):
            raise RequestRefusedError(300, f"Metadata value for '{key}' must be a string.")
        text = "" if item is None else str(item)
        if len(text) > METADATA_MAX_VALUE:
            raise RequestRefusedError(
                300, f"Metadata value for '{key}' is longer than {METADATA_MAX_VALUE} characters."
            )
        checked[key] = text
    return checked


def _check_tag(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestRefusedError(403, "The 'Tag' field must be a string.")
    if len(value) > TAG_MAX:
        raise RequestRefusedError(300, f"The 'Tag' field may be at most {TAG_MAX} characters long.")
    return value


def _check_stream(value: Any) -> str:
    if value is None or value == "":
        return "outbound"  # Postmark: omitted means the server's default transactional stream
    if not isinstance(value, str):
        raise RequestRefusedError(403, "The 'MessageStream' field must be a string.")
    return value


@dataclass(frozen=True)
class Envelope:
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
    def of(cls, message: Mapping[str, Any]) -> Envelope:
        """The envelope of a message as sent, checked as Postmark checks it."""
        from_ = _check_from(message)
        to = message.get("To")
        if to is None or (isinstance(to, str) and not to.strip()):
            raise RequestRefusedError(300, _ZERO_RECIPIENTS)
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
            raise RequestRefusedError(
                300,
                f"Invalid 'To': at most {MAX_RECIPIENTS} recipients are allowed, counting To, "
                "Cc and Bcc together.",
            )
        return envelope

    def recipients(self) -> list[str]:
        """Every address it goes to: To, Cc and Bcc."""
        return recipient_addresses(self.to, self.cc, self.bcc)


# -- a send's content ------------------------------------------------------------------------------


def template_model(message: Mapping[str, Any]) -> dict[str, Any]:
    """The TemplateModel of a template send, which may not carry content of its own."""
    # postmarker sends explicit nulls for the fields it does not use: null means absent.
    if any(message.get(f) is not None for f in ("Subject", "HtmlBody", "TextBody")):
        raise RequestRefusedError(1123, _CONTENT_WITH_TEMPLATE)
    model = message.get("TemplateModel")
    if model is None:
        raise RequestRefusedError(1120, _MISSING_MODEL)
    if not isinstance(model, dict):
        raise RequestRefusedError(403, "The 'TemplateModel' field must be a JSON object.")
    return model


def plain_content(message: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """Subject, HtmlBody and TextBody of a send without a template; a body is required."""
    subject, html_body, text_body = (
        message.get("Subject"),
        message.get("HtmlBody"),
        message.get("TextBody"),
    )
    for name, value in (("Subject", subject), ("HtmlBody", html_body), ("TextBody", text_body)):
        if value is not None and not isinstance(value, str):
            raise RequestRefusedError(403, f"The '{name}' field must be a string.")
    if not html_body and not text_body:
        raise RequestRefusedError(300, _NO_BODY)
    return subject or "", html_body, text_body


# -- a request's JSON ------------------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
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
        raise RequestRefusedError(402, _INVALID_JSON) from None
    if too_deep:
        raise RequestRefusedError(402, _INVALID_JSON)
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
