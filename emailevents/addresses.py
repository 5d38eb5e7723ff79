"""Email address checks, shared by the registry (``from``) and the pipeline (recipients).

We call ``email_validator`` (the library behind pydantic's ``EmailStr``) ourselves because
pydantic's wrapper rejects the ``.test`` domains that RFC 2606 reserves for exactly the
development and test setups our users run; everything else is checked the same way.
"""

from __future__ import annotations

import re
from email.utils import formataddr, getaddresses

import email_validator

__all__ = ["AddressError", "format_address", "parse_address"]


# An address with no display name, quotes or comments, as most recipient columns hold: what
# `getaddresses` answers for it is itself (a test holds the two equal), and it costs a third of
# the check of an address, once per recipient of a fan-out.
_BARE = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+")


class AddressError(ValueError):
    """Raised when a string is not one email address (optionally with a display name)."""


def parse_address(value: str) -> tuple[str, str]:
    """``"Ada <ada@acme.test>"`` -> ``("Ada", "ada@acme.test")``; the address normalised.

    Raises:
        AddressError: not a single valid address; the message says what is wrong.
    """
    if any(c in value for c in "\r\n"):
        raise AddressError("line breaks are not allowed in an address")
    parsed = [("", value)] if _BARE.fullmatch(value) else getaddresses([value])
    if len(parsed) != 1:
        raise AddressError(f"{value!r} is {len(parsed)} addresses; give one per recipient")
    name, address = parsed[0]
    if not address or "@" not in address:
        raise AddressError(f"{value!r} is not an email address")
    try:
        checked = email_validator.validate_email(
            address, check_deliverability=False, test_environment=True
        )
    except email_validator.EmailNotValidError as exc:
        raise AddressError(f"{address!r}: {exc}") from exc
    return name, checked.normalized


def format_address(name: str, address: str) -> str:
    """The ``To``/``From`` form: ``"Ada Lovelace" <ada@acme.test>``, or the bare address."""
    return formataddr((name, address)) if name else address
