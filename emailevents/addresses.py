"""Email addresses: strict parsing, and address templates whose shape is fixed at load.

Where a message goes is decided by the registry, never by entity data. An address template like
``"{user.full_name} <{user.email}>"`` is split when the registry loads into its display-name
part and its address part; each is rendered on its own, the name is made safe and the two are
joined by :func:`email.utils.formataddr` (which quotes the name, or encodes it as RFC 2047 when
it is not ASCII). Whatever a user's name holds (``<``, ``(``, quotes, commas, line breaks) it
can change the name shown, never the address; the address part must render to exactly one bare
address or the recipient is skipped.

We call ``email_validator`` (the library behind pydantic's ``EmailStr``) ourselves because
pydantic's wrapper rejects the ``.test`` domains that RFC 2606 reserves for exactly the
development and test setups our users run; everything else is checked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import formataddr, getaddresses
from typing import Any

import email_validator

from .errors import AddressError, ExpressionError
from .expressions import Path, Template, header_text, unsendable

__all__ = [
    "AddressError",
    "AddressTemplate",
    "check_address",
    "compile_address",
    "display_name",
    "format_address",
    "parse_address",
    "split_addresses",
]

# Characters that never stand in a bare address as we accept it: RFC 5322 specials (they make
# mail software read comments, groups, lists, routes or quoted strings) and whitespace. Quoted
# local parts and domain literals are refused by email_validator's defaults as well.
_NOT_IN_ADDRESS = re.compile(r'[\s<>()\[\]\\,;:"]')
# Specials that an unquoted display name may not hold ('.' is common in names and harmless).
_NOT_IN_PHRASE = re.compile(r'[<>()\[\]\\,;:@"]')


def check_address(value: str) -> str:
    """One bare address (``ada@acme.test``), normalised; nothing else is accepted.

    Raises:
        AddressError: ``value`` is empty, holds a display name, comment, angle bracket, quote,
            whitespace or control character, or is not a valid address.
    """
    if not value:
        raise AddressError("the address is empty")
    control = unsendable(value)
    if control is not None:
        raise AddressError(f"{value!r} holds a control character or lone surrogate ({control!r})")
    special = _NOT_IN_ADDRESS.search(value)
    if special is not None:
        raise AddressError(
            f"{value!r} is not one bare address: {special.group()!r} may not appear in it"
        )
    if "@" not in value:
        raise AddressError(f"{value!r} is not an email address")
    try:
        checked = email_validator.validate_email(
            value, check_deliverability=False, test_environment=True
        )
    except email_validator.EmailNotValidError as exc:
        raise AddressError(f"{value!r}: {exc}") from exc
    return checked.normalized


def parse_address(value: str) -> tuple[str, str]:
    """``"Ada <ada@acme.test>"`` -> ``("Ada", "ada@acme.test")``; the address normalised.

    Strict: a bare address, or a display name (a plain phrase, or a quoted string) followed by
    one address in angle brackets. Comments, groups, lists and unbalanced brackets are refused,
    not repaired; and the standard library's parser must read the same address.

    Raises:
        AddressError: not exactly one valid address; the message says what is wrong.
    """
    control = unsendable(value)
    if control is not None:
        raise AddressError(
            f"{value!r} holds a control character ({control!r}); "
            "line breaks and NUL are not allowed in an address"
        )
    text = value.strip()
    if "<" not in text and ">" not in text:
        if "," in text or ";" in text:
            raise AddressError(f"{value!r} is several addresses; give one per recipient")
        if "@" not in text:
            raise AddressError(f"{value!r} is not an email address")
        return "", check_address(text)
    name_part, address_part = _split_angle(text, value)
    name = _phrase(name_part.strip(), value)
    address = check_address(address_part)
    # Defence in depth: mail software must read the same thing we did.
    if [found for _, found in getaddresses([text])] != [address_part]:
        raise AddressError(f"{value!r} is read as a different address by mail software")
    return name, address


def _split_angle(text: str, value: str) -> tuple[str, str]:
    """``name <address>`` -> (name, address), the ``<`` found outside any quoted name."""
    for i, char in _outside_quotes(text):
        if char == "<":
            rest = text[i + 1 :]
            if not rest.endswith(">") or "<" in rest or ">" in rest[:-1]:
                raise AddressError(
                    f"{value!r} is not one address: write `Name <address>`, with one address "
                    "in angle brackets at the end"
                )
            return text[:i], rest[:-1]
    raise AddressError(f"{value!r} has unbalanced quotes or angle brackets")


def split_addresses(value: str) -> list[str]:
    """A comma-separated list of addresses cut at the commas outside quoted display names.

    Each item is still to be checked (:func:`parse_address`): this only finds where they are.
    """
    cuts = [i for i, char in _outside_quotes(value) if char == ","]
    return [value[a + 1 : b] for a, b in zip([-1, *cuts], [*cuts, len(value)], strict=True)]


def _outside_quotes(text: str) -> Iterator[tuple[int, str]]:
    """Each character of ``text`` that stands outside a quoted string, with its index."""
    in_quotes = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and in_quotes:
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif not in_quotes:
            yield i, char


def _phrase(text: str, value: str) -> str:
    """A display name as written: a quoted string (unescaped) or a phrase without specials."""
    if len(text) >= 2 and text[0] == text[-1] == '"':  # noqa: PLR2004 - the two quotes
        inner = text[1:-1]
        if re.search(r'(?<!\\)(?:\\\\)*"', inner):
            raise AddressError(f"{value!r}: the display name has a stray quote")
        return re.sub(r"\\(.)", r"\1", inner)
    special = _NOT_IN_PHRASE.search(text)
    if special is not None:
        raise AddressError(
            f"{value!r}: the display name holds {special.group()!r}; quote it "
            '(`"Lovelace, Ada" <ada@acme.test>`)'
        )
    return text


def display_name(value: Any) -> str:
    """Any value as a display name fit for a header: one line, no control characters."""
    return header_text("" if value is None else str(value))


def format_address(name: str, address: str) -> str:
    """The ``To``/``From`` form: ``"Ada Lovelace" <ada@acme.test>``, or the bare address.

    The name is cleaned by :func:`display_name` and quoted or RFC 2047-encoded by the standard
    library; no name can change the address.
    """
    name = display_name(name)
    return formataddr((name, address)) if name else address


# --- address templates -------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressTemplate:
    """An address expression split at load: the display-name part and the address part.

    ``name`` is None for a bare address template (``{user.email}``). A template that is exactly
    one path (``{user}``, ``{user.email}``) may also resolve to an object with an ``email``
    attribute, or to a list of them: see :meth:`render`.
    """

    source: str
    address: Template
    name: Template | None = None

    def render_name(self, values: Mapping[str, Any]) -> str:
        """The display name, fit for a header ("" when the template has none)."""
        return display_name(self.name.render_text(values)) if self.name is not None else ""

    def render_address(self, values: Mapping[str, Any]) -> Any:
        """What the address part renders to, not yet checked (see :func:`check_address`).

        Text for a template with literal text; a lone ``{path}`` keeps its value, which may be
        an object with an ``email`` attribute or a collection of them.
        """
        return self.address.render(values)


def compile_address(template: Template) -> AddressTemplate:
    """Split ``template`` into its display-name and address parts, by its literal text alone.

    Accepted shapes: ``ADDRESS`` or ``NAME <ADDRESS>``, where the ``<`` and ``>`` are literal
    text of the template, ``NAME`` is any text and paths (optionally in double quotes), and
    ``ADDRESS`` is paths and literal text without whitespace or specials.

    Raises:
        ExpressionError: the template has another shape; the offset points at the fault.
    """
    parts = list(template.parts)
    offsets = _offsets(template)
    brackets = [
        (i, j, char)
        for i, part in enumerate(parts)
        if isinstance(part, str)
        for j, char in enumerate(part)
        if char in "<>"
    ]
    if not brackets:
        _check_address_literals(template, parts, offsets)
        return AddressTemplate(template.source, _strip(template, parts))
    opening = [b for b in brackets if b[2] == "<"]
    last = len(parts) - 1
    shaped = (
        len(brackets) == 2  # noqa: PLR2004 - one '<' and one '>'
        and brackets[0][2] == "<"
        and brackets[1][2] == ">"
        and brackets[1][0] == last
        and isinstance(parts[last], str)
        and not str(parts[last])[brackets[1][1] + 1 :].strip()
    )
    if not shaped:
        i, j, _ = opening[1] if len(opening) > 1 else brackets[-1]
        raise ExpressionError(
            "an address is `{user.email}` or `Name <{user.email}>`, with one '<' and one '>' "
            "at the end; write a name that holds brackets through an expression",
            source=template.source,
            offset=offsets[i] + j,
        )
    (li, lj, _), (ri, rj, _) = brackets
    name_parts = [*parts[:li], str(parts[li])[:lj]]
    if li == ri:
        address_parts: list[str | Path] = [str(parts[li])[lj + 1 : rj]]
        address_offsets = [offsets[li] + lj + 1]
    else:
        address_parts = [str(parts[li])[lj + 1 :], *parts[li + 1 : ri], str(parts[ri])[:rj]]
        address_offsets = [offsets[li] + lj + 1, *offsets[li + 1 : ri], offsets[ri]]
    if not any(str(p).strip() for p in address_parts):
        raise ExpressionError(
            "nothing between '<' and '>'; write `Name <{user.email}>`",
            source=template.source,
            offset=offsets[li] + lj,
        )
    _check_address_literals(template, address_parts, address_offsets)
    name = _strip(template, name_parts, unquote=True)
    return AddressTemplate(
        template.source, _strip(template, address_parts), name if name.parts else None
    )


def _offsets(template: Template) -> list[int]:
    """Where each part of ``template`` starts in its source."""
    offsets, at = [], 0
    for part in template.parts:
        offsets.append(at)
        at += (
            len(part.replace("{", "{{").replace("}", "}}"))
            if isinstance(part, str)
            else len(str(part)) + 2
        )
    return offsets


def _check_address_literals(
    template: Template, parts: list[str | Path], offsets: list[int]
) -> None:
    last = len(parts) - 1
    for k, (part, offset) in enumerate(zip(parts, offsets, strict=False)):
        if not isinstance(part, str):
            continue
        # Spaces around the whole address are trimmed, as YAML authors write them.
        text = part.lstrip() if k == 0 else part
        text = text.rstrip() if k == last else text
        lead = len(part) - len(part.lstrip()) if k == 0 else 0
        # Point at the bracket or comma that shows what was meant, before any space.
        special = re.search(r'[<>()\[\]\\,;:"]', text) or _NOT_IN_ADDRESS.search(text)
        if special is not None:
            raise ExpressionError(
                f"{special.group()!r} cannot stand in an address; to show a name, write "
                "`Name <{user.email}>`",
                source=template.source,
                offset=offset + lead + special.start(),
            )


def _strip(template: Template, parts: list[str | Path], *, unquote: bool = False) -> Template:
    """The parts as a Template of their own: empty literals dropped, the ends trimmed."""
    kept = [p for p in parts if p != ""]
    if kept and isinstance(kept[0], str):
        kept[0] = kept[0].lstrip()
    if kept and isinstance(kept[-1], str):
        kept[-1] = kept[-1].rstrip()
    kept = [p for p in kept if p != ""]
    if (
        unquote
        and kept
        and isinstance(kept[0], str)
        and isinstance(kept[-1], str)
        and kept[0].startswith('"')
        and kept[-1].endswith('"')
        and (len(kept) > 1 or len(kept[0]) >= 2)  # noqa: PLR2004 - both quotes
    ):
        kept[0] = kept[0][1:]
        kept[-1] = kept[-1][:-1]
        kept = [p for p in kept if p != ""]
    source = "".join(
        p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else f"{{{p}}}" for p in kept
    )
    return Template(source=source or template.source, parts=tuple(kept))
