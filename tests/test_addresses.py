"""Address parsing: the shortcut for bare addresses answers what the full parser answers."""

from __future__ import annotations

from email.utils import getaddresses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailevents.addresses import _BARE, AddressError, format_address, parse_address

# Bare-address characters, plus the ones that make `getaddresses` read something else.
_ALPHABET = "aZ9._+-@ <>\"',;:()[]\\!#"


@settings(max_examples=3000)
@given(
    st.one_of(
        st.text(alphabet=_ALPHABET, min_size=1, max_size=16),
        st.from_regex(_BARE, fullmatch=True),
    )
)
def test_the_bare_address_shortcut_agrees_with_getaddresses(value: str) -> None:
    if _BARE.fullmatch(value):
        assert getaddresses([value]) == [("", value)]


@settings(max_examples=1000)
@given(
    st.from_regex(r"[A-Za-z0-9._+-]{1,12}@[A-Za-z0-9.-]{1,12}", fullmatch=True),
)
def test_a_bare_address_is_checked_as_fully_as_any(value: str) -> None:
    try:
        name, address = parse_address(value)
    except AddressError:
        return  # rejected by email_validator, as it would be without the shortcut
    assert (name, address.lower()) == ("", value.lower())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ada@acme.test", ("", "ada@acme.test")),
        ("Ada Lovelace <ada@acme.test>", ("Ada Lovelace", "ada@acme.test")),
        ('"Lovelace, Ada" <ada@acme.test>', ("Lovelace, Ada", "ada@acme.test")),
    ],
)
def test_parse_address(value: str, expected: tuple[str, str]) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ada@", "not an email address"),
        ("ada..x@acme.test", "period"),
        ("a@b.test, c@d.test", "2 addresses"),
        ("ada@acme.test\r\nBcc: eve@evil.test", "line breaks"),
    ],
)
def test_bad_addresses_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_address(value)


def test_format_address() -> None:
    assert format_address("", "ada@acme.test") == "ada@acme.test"
    assert format_address("Lovelace, Ada", "ada@acme.test") == '"Lovelace, Ada" <ada@acme.test>'
