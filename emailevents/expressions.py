"""The ``{entity.attr}`` expression language: parse once, check, render many times.

A template is literal text with ``{name.attr.attr}`` paths; ``{{`` and ``}}`` stand for literal
braces. Names are ASCII identifiers that do not start with ``_``: no calls, no indexing, no
private or dunder attributes. Nothing here ever calls ``str.format`` on user data.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ExpressionError, RenderError

__all__ = [
    "Path",
    "RenderError",
    "Template",
    "body_text",
    "header_text",
    "parse",
    "unsendable",
]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Everything str.splitlines() breaks on: mail clients and Postmark differ in which they honour.
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")
# What else never belongs in a header: the other C0 and C1 controls (NUL among them) and DEL,
# Unicode's category Cc.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Lone surrogates (from data decoded with surrogateescape) cannot be encoded to send.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_UNSENDABLE = re.compile(f"{_CONTROLS.pattern}|{_SURROGATES.pattern}")


def unsendable(text: str) -> str | None:
    """The first control character (NUL, CR, LF...) or lone surrogate in ``text``, if any."""
    found = _UNSENDABLE.search(text)
    return found.group() if found else None


def header_text(text: str) -> str:
    """``text`` fit for a mail header: one line, no control characters, encodable.

    Line breaks fold to a space (a header cannot be split or added through them), other control
    characters are removed and lone surrogates become U+FFFD.
    """
    text = _LINE_BREAKS.sub(" ", text.replace("\t", " "))
    text = _CONTROLS.sub("", text)
    return _SURROGATES.sub("\ufffd", text).strip()


def body_text(text: str) -> str:
    """``text`` fit for a TemplateModel value: NUL removed, lone surrogates become U+FFFD."""
    return _SURROGATES.sub("\ufffd", text.replace("\x00", ""))


def _callable_error(path: Path, value: Any) -> RenderError:
    """The error for a path that leads to ``value``, a callable."""
    return RenderError(
        path,
        reason=f"{{{path}}} is {_callable_kind(value)}, not a value; expressions never call "
        "what they name (give the value itself, from a context callable or `build:`)",
    )


def _callable_kind(value: Any) -> str:
    """What a callable is, in words, read from its type only (never from the value itself)."""
    kind = type(value)
    if issubclass(kind, type):
        return "a class"
    if issubclass(kind, types.BuiltinFunctionType):
        return "a built-in function or method"
    if issubclass(kind, types.MethodType):
        return "a method"
    if issubclass(kind, types.FunctionType):
        return "a function"
    return f"a callable {kind.__name__}"


@dataclass(frozen=True)
class Path:
    """One ``{root.attr.attr}`` reference; ``offset`` is where its ``{`` stands in the source."""

    root: str
    attrs: tuple[str, ...]
    offset: int

    def __str__(self) -> str:
        return ".".join((self.root, *self.attrs))

    def resolve(self, values: Mapping[str, Any]) -> Any:
        """Follow the path from ``values[root]``; a ``None`` on the way gives ``None``.

        Raises:
            RenderError: reading an attribute failed, or the path reached a callable (a method
                where the registry could not know the type, such as on a property's value).
        """
        value = values[self.root]
        for attr in self.attrs:
            if value is None:
                return None
            if callable(value):
                raise _callable_error(self, value)
            try:
                value = getattr(value, attr)
            except Exception as exc:
                raise RenderError(self, exc) from exc
        if callable(value):  # its repr would be sent: '<bound method ... at 0x...>'
            raise _callable_error(self, value)
        return value


@dataclass(frozen=True)
class Template:
    """A parsed template: literal strings and paths, in order."""

    source: str
    parts: tuple[str | Path, ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in self.parts if isinstance(p, Path))

    @property
    def single_path(self) -> Path | None:
        """The path when the template is exactly one ``{path}`` and nothing else."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Path):
            return self.parts[0]
        return None

    def render(self, values: Mapping[str, Any]) -> Any:
        """Render; a lone ``{path}`` keeps its value's type (a number stays a number)."""
        single = self.single_path
        if single is not None:
            return single.resolve(values)
        return self.render_text(values)

    def render_text(self, values: Mapping[str, Any], *, single_line: bool = False) -> str:
        """Render to a string; ``single_line`` makes it fit for a header (:func:`header_text`)."""
        out = [p if isinstance(p, str) else _text(p, p.resolve(values)) for p in self.parts]
        text = "".join(out)
        return header_text(text) if single_line else text


def _text(path: Path, value: Any) -> str:
    # type() rather than isinstance(): isinstance may read `__class__` through the value's own
    # __getattribute__, and rendering never touches an attribute that starts with '_'.
    kind = type(value)
    try:
        if value is None:
            return ""
        if issubclass(kind, dt.date):
            return str(kind.isoformat(value))
        if issubclass(kind, enum.Enum):
            # What a lone `{path}` sends too (pydantic dumps an enum as its value).
            return _text(path, value.value)
        return str(value)
    except Exception as exc:
        raise RenderError(path, exc, doing="rendering") from exc


def parse(source: str) -> Template:
    """Parse ``source`` into a Template.

    Raises:
        ExpressionError: the source is not a valid template; the error gives the column.
    """
    if not isinstance(source, str):
        raise ExpressionError("an expression must be a string", source=repr(source), offset=0)
    parts: list[str | Path] = []
    literal: list[str] = []
    i, end = 0, len(source)
    while i < end:
        char = source[i]
        if char == "{" and source.startswith("{{", i):
            literal.append("{")
            i += 2
        elif char == "}":
            if not source.startswith("}}", i):
                raise ExpressionError(
                    "unmatched '}' (write '}}' for a literal brace)", source=source, offset=i
                )
            literal.append("}")
            i += 2
        elif char == "{":
            close = source.find("}", i + 1)
            if close == -1:
                raise ExpressionError(
                    "'{' is never closed (write '{{' for a literal brace)", source=source, offset=i
                )
            if literal:
                parts.append("".join(literal))
                literal.clear()
            parts.append(_parse_path(source, i, close))
            i = close + 1
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append("".join(literal))
    return Template(source=source, parts=tuple(parts))


def _parse_path(source: str, start: int, close: int) -> Path:
    body = source[start + 1 : close]
    if not body:
        raise ExpressionError(
            "empty '{}'; name a value like {org.name}", source=source, offset=start
        )
    names = body.split(".")
    offset = start + 1
    for name in names:
        if not name:
            # '{.a}', '{a..b}', '{a.}': point at the stray dot.
            raise ExpressionError(
                f"unexpected '.' in {{{body}}}; expressions are dotted names like {{org.name}}",
                source=source,
                offset=offset if offset == start + 1 else offset - 1,
            )
        if name.startswith("_"):
            raise ExpressionError(
                f"'{name}' starts with '_'; private attributes cannot be used",
                source=source,
                offset=offset,
            )
        match = _NAME.match(name)
        if match is None or match.end() != len(name):
            bad = name[match.end()] if match else (name[:1] or ".")
            raise ExpressionError(
                f"unexpected {bad!r} in {{{body}}}; expressions are dotted names like "
                "{org.name}: no calls, indexing, spaces or operators",
                source=source,
                offset=offset + (match.end() if match else 0),
            )
        offset += len(name) + 1
    return Path(root=names[0], attrs=tuple(names[1:]), offset=start)
