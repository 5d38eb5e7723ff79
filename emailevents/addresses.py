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

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formataddr, getaddresses
from typing import Any

import email_validator

from .errors import AddressError, ExpressionError, RenderError
from .expressions import Path, Template, header_text, unsendable
from .outcomes import Outcome, Reason, Status

__all__ = [
    "AddressError",
    "AddressTemplate",
    "Candidate",
    "called_candidates",
    "check_address",
    "checked_candidates",
    "compile_address",
    "display_name",
    "format_address",
    "parse_address",
    "split_addresses",
    "template_candidates",
]

# Characters that never stand in a bare address as we accept it: RFC 5322 specials (they make
# mail software read comments, groups, lists, routes or quoted strings) and whitespace. Quoted
# local parts and domain literals are refused by email_validator's defaults as well.
_NOT_IN_ADDRESS = re.compile(r'[\s<>()\[\]\\,;:"]')
# Specials that an unquoted display name may not hold ('.' is common in names and harmless).
_NOT_IN_PHRASE = re.compile(r'[<>()\[\]\\,;:@"]')


@functools.lru_cache(maxsize=4096)
def check_address(value: str) -> str:
    """One bare address (``ada@acme.test``), normalised; nothing else is accepted.

    Cached (a pure function of the string; a batch checks the same senders and recipients
    again and again): an address refused raises each time, as it is not cached.

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


# --- a run's recipients ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """Something that should name one recipient, and where it came from."""

    source: str
    value: Any
    """A string, an object with an ``email`` attribute, or anything else (then rejected)."""
    name: str = ""
    named: bool = False
    """Whether a string may carry its own display name (those a ``recipients:`` callable gives)."""
    error: Exception | None = None

    def address(self) -> tuple[str, str]:
        """(display name, checked address); raises AddressError or RenderError."""
        if self.error is not None:
            raise self.error
        value = getattr(self.value, "email", self.value)
        if not isinstance(value, str) or not value.strip():
            raise AddressError(f"no address ({value!r})")
        if self.named:
            return parse_address(value)
        return self.name, check_address(value.strip())

    def label(self) -> str:
        value = getattr(self.value, "email", self.value)
        if isinstance(value, str) and value.strip():
            return display_name(value)
        return f"<{self.source}>"


def template_candidates(
    to_addresses: Sequence[AddressTemplate], values: Mapping[str, Any]
) -> list[Candidate]:
    """What an event's ``to:`` templates render to, one candidate per address found."""
    found: list[Candidate] = []
    for i, address in enumerate(to_addresses):
        where = f"to[{i}]" if len(to_addresses) > 1 else "to"
        source = f"{where} {address.source}"
        try:
            name = address.render_name(values)
            items = _flatten(address.render_address(values), source)
        except RenderError as exc:
            found.append(Candidate(source, None, error=exc))
            continue
        found.extend(Candidate(origin, value, name=name) for value, origin in items)
    return found


def called_candidates(value: Any) -> list[Candidate]:
    """What a ``recipients:`` callable returned: strings (parsed strictly), objects with an
    ``email``, ``(name, address)`` pairs, or an iterable of those."""
    found: list[Candidate] = []
    for item, where in _flatten(value, "recipients"):
        if not _is_pair(item):
            found.append(Candidate(where, item, named=True))
            continue
        name, address = item
        error = None
        if _is_address(name) and _is_address(address):
            # ("a@x.test", "b@x.test") is two addresses in a tuple, not a (name, address) pair:
            # refused rather than sent to one of them under the other's name.
            error = AddressError(
                f"the pair ({name!r}, {address!r}) has an address for its name; return "
                "(name, address) pairs, or a list of addresses"
            )
        found.append(Candidate(where, address, name=display_name(name), error=error))
    return found


def checked_candidates(found: Iterable[Candidate]) -> tuple[dict[str, str], list[Outcome]]:
    """Each distinct address (its key, the address lowercased -> the ``To`` form), and a skip
    for each candidate that is not one address."""
    recipients: dict[str, str] = {}
    rejected: list[Outcome] = []
    for candidate in found:
        try:
            name, email = candidate.address()
        except (ValueError, RenderError) as exc:  # AddressError, or reading an entity failed
            rejected.append(
                Outcome(
                    Status.SKIPPED,
                    Reason.INVALID_RECIPIENT,
                    recipient=candidate.label()[:320],
                    detail=f"{candidate.source}: {_first_line(exc)}",
                )
            )
            continue
        recipients.setdefault(email.lower(), format_address(name, email))
    # An address refused in one form and given validly in another is that one recipient.
    rejected = [o for o in rejected if (o.recipient or "").lower() not in recipients]
    return recipients, rejected


def _is_address(value: Any) -> bool:
    try:
        check_address(value)
    except (AddressError, TypeError):
        return False
    return True


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2  # noqa: PLR2004 - (name, address)


def _flatten(value: Any, source: str) -> list[tuple[Any, str]]:
    if value is None or isinstance(value, str) or hasattr(value, "email") or _is_pair(value):
        return [(value, source)]
    if isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
        return [(item, f"{source}[{i}]") for i, item in enumerate(value)]
    return [(value, source)]


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
