"""Postmark's template language (Mustachio), rendered with pystache, for the local Postmark server.

Mustachio looks like Mustache but is not quite it. What this module reproduces, each point taken
from Mustachio's own source (``Tokenizer.cs``, ``Parser.cs``, ``ContextObject.cs``,
``InferredTemplateModel.cs`` in ActiveCampaign/mustachio):

- Tags are found with Mustachio's pattern, so ``{{{{name}}`` renders ``{{`` then the value, and
  syntax errors carry Mustachio's messages with a 1-based line and character.
- ``{{#each list}}...{{/each}}`` iterates; a plain ``{{#list}}`` section does *not* iterate: it
  only tests the value and scopes into it (the mistake Mustache habits make on Postmark).
- A name is looked up in the current scope only, never in enclosing ones; ``../`` climbs one
  step of the path that led to the scope (``{{#each a.b}}{{../../x}}`` reads ``a.x``).
- An inverted section's body is rendered in the scope of its (falsy) value, and whitespace around
  section tags is kept as written (no "standalone line" trimming).
- ``{{x}}`` is HTML-encoded as .NET's ``HtmlEncode`` does; ``{{{x}}}`` and ``{{&x}}`` are raw.
- The suggested model (``SuggestedTemplateModel``) lists every path used: a plain variable as
  ``"name": "name_Value"``, a section as an object, an ``each`` as a list of one object, or of
  three placeholder strings when the items are printed whole with ``{{.}}``.

Rendering itself is pystache's: the template is translated to standard Mustache whose names a
small view object resolves with Mustachio's rules.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pystache

from ..errors import TemplateSyntaxError

__all__ = ["Template", "TemplateError", "TemplateSyntaxError", "suggested_model"]

# Mustachio's Tokenizer: a tag is two braces around brace-free text, or three around it.
_TAG = re.compile(r"(\{\{[^{}]+?\}\})|(\{\{\{[^{}]+?\}\}\})")
# Mustachio's "negative path spec": paths are word characters, dots and `../` steps only.
_BAD_PATH = re.compile(r"([.]{3,})|([^\w./_]+)|((?<![.]{2})[/])|([.]{2,}($|[^/]))", re.DOTALL)
# Mustachio's path splitter: `../` (or `..\`) climbs, anything between dots is a name.
_PATH_PART = re.compile(r"(\.\.[\\/])|([^.]+)", re.IGNORECASE | re.DOTALL)

_EACH_WITHOUT_PATH = (
    "The 'each' block being opened requires a model path to be specified in the form "
    "'{{#each <name>}}'."
)
_BAD_EACH_CLOSE = "The syntax to close the 'each' block should be: '{{/each}}'."
_EACH_CLOSED_UNOPENED = (
    "An 'each' block is being closed, but no corresponding opening element "
    "('{{#each <name>}}') was detected."
)
_MISMATCHED = "It appears that open and closing elements are mismatched."
_UNCLOSED = (
    "A scope block to the following path was opened but not closed: '{}', please close it "
    "using the appropriate syntax."
)
_BAD_PATH_MESSAGE = (
    "The path '{}' is not valid. Please see documentation for examples of valid paths."
)
# Ours, not Mustachio's: the suggested model and the translation to Mustache recurse once per
# level, so sections and path steps together are bounded (far above any real template).
MAX_DEPTH = 64
_TOO_DEEP = (
    f"The path '{{}}' is nested more than {MAX_DEPTH} levels deep (sections and path steps "
    "together)."
)


@dataclass(frozen=True)
class TemplateError:
    """One syntax error: Mustachio's message and where it is (1-based, as Postmark reports it)."""

    message: str
    line: int
    character: int

    def as_postmark(self) -> dict[str, Any]:
        """The ``ValidationErrors`` item of Postmark's ``/templates/validate`` answer."""
        return {"Message": self.message, "Line": self.line, "CharacterPosition": self.character}


# -- parsing -----------------------------------------------------------------------------------


class _Kind(Enum):
    SECTION = "#"
    INVERTED = "^"
    EACH = "each"


@dataclass
class _Value:
    path: str
    escaped: bool


@dataclass
class _Block:
    kind: _Kind
    path: str
    body: list[_Node] = field(default_factory=list)
    depth: int = 1  # the levels it adds: its path's steps


_Node = str | _Value | _Block


class _Tokenizer:
    """Mustachio's tokenizer, message for message; builds the tree when there are no errors."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.errors: list[tuple[int, str]] = []  # (offset, message)
        self.root: list[_Node] = []
        self._open: list[tuple[str, int]] = []  # Mustachio's scope stack: (entry, offset)
        self._tree: list[list[_Node]] = [self.root]
        self._blocks: list[_Block] = []
        self._depth = 0  # the open blocks' levels, summed

    def run(self) -> None:
        offset = 0
        for match in _TAG.finditer(self.text):
            if match.start() > offset:
                self._tree[-1].append(self.text[offset : match.start()])
            self._tag(match.group(0), match.start())
            offset = match.end()
        if offset < len(self.text):
            self._tree[-1].append(self.text[offset:])
        # Mustachio lists unclosed scopes outermost first.
        for entry, at in self._open:
            path = entry.strip("{#}")
            path = path.removeprefix("each ")
            self.errors.append((at, _UNCLOSED.format(path)))

    def _tag(self, tag: str, at: int) -> None:  # noqa: C901, PLR0912 - a branch per Mustachio tag
        if tag.startswith("{{#each"):
            self._open.append((tag, at))
            path = tag.lstrip("{").rstrip("}").lstrip("#").strip()[4:]
            if path.startswith(" ") and path.strip():
                self._push(_Kind.EACH, self._validated(path, at))
            else:
                self.errors.append((at, _EACH_WITHOUT_PATH))
        elif tag.startswith("{{/each"):
            if tag != "{{/each}}":
                self.errors.append((at, _BAD_EACH_CLOSE))
            elif self._open and self._open[-1][0].startswith("{{#each"):
                self._open.pop()
                self._pop()
            else:
                self.errors.append((at, _EACH_CLOSED_UNOPENED))
        elif tag.startswith(("{{#", "{{^")):
            kind = _Kind.SECTION if tag[2] == "#" else _Kind.INVERTED
            path = tag.lstrip("{").rstrip("}").lstrip(tag[2]).strip()
            # `{{#x}}a{{^x}}b{{/x}}`: reopening the innermost scope closes it first.
            if self._open and self._open[-1][0] == path:
                self._validated(path, at)
                self._pop()
            else:
                self._open.append((path, at))
            self._push(kind, self._validated(path, at))
        elif tag.startswith("{{/"):
            path = tag.lstrip("{").rstrip("}").lstrip("/").strip()
            if self._open and self._open[-1][0] == path:
                self._open.pop()
                self._validated(path, at)
                self._pop()
            else:
                self.errors.append((at, _MISMATCHED))
        elif tag.startswith(("{{{", "{{&")):
            path = tag.lstrip("{").rstrip("}").lstrip("&").strip()
            self._tree[-1].append(_Value(self._validated(path, at), escaped=False))
        elif tag.startswith("{{!"):
            pass  # a comment
        else:
            path = tag.lstrip("{").rstrip("}").strip()
            self._tree[-1].append(_Value(self._validated(path, at), escaped=True))

    def _validated(self, path: str, at: int) -> str:
        path = path.strip()
        if _BAD_PATH.search(path):
            self.errors.append((at, _BAD_PATH_MESSAGE.format(path)))
        elif self._depth + len(_path_parts(path)) > MAX_DEPTH:
            self.errors.append((at, _TOO_DEEP.format(path)))
        return path

    def _push(self, kind: _Kind, path: str) -> None:
        block = _Block(kind, path, depth=max(1, len(_path_parts(path))))
        self._tree[-1].append(block)
        self._tree.append(block.body)
        self._blocks.append(block)
        self._depth += block.depth

    def _pop(self) -> None:
        # With errors the tree is never used, so an unbalanced pop only needs to be harmless.
        if self._blocks:
            self._depth -= self._blocks.pop().depth
            self._tree.pop()

    def located_errors(self) -> tuple[TemplateError, ...]:
        newlines = [i for i, c in enumerate(self.text) if c == "\n"]
        located = []
        for at, message in self.errors:
            line = bisect.bisect_left(newlines, at)
            start = newlines[line - 1] + 1 if line > 0 else 0
            located.append(TemplateError(message, line + 1, at - start + 1))
        return tuple(sorted(located, key=lambda e: (e.line, e.character)))


def _path_parts(path: str) -> list[str]:
    """Mustachio's split: ``"../a.b"`` -> ``["../", "a", "b"]``; ``"."`` -> ``[]``."""
    return [m.group(0) for m in _PATH_PART.finditer(path)]


# -- the suggested model -------------------------------------------------------------------------


class _Usage(Enum):
    SCALAR = 1
    CONDITIONAL = 2
    COLLECTION = 3


class _Inferred:
    """Mustachio's InferredTemplateModel: how each path is used, as a tree."""

    def __init__(self, key: str = "", parent: _Inferred | None = None) -> None:
        self.key = key
        self.parent = parent
        self.usages: set[_Usage] = set()
        self.children: dict[str, _Inferred] = {}

    def use(self, path: str, usage: _Usage) -> _Inferred:
        node = self.walk(_path_parts(path))
        node.usages.add(usage)
        return node

    def walk(self, parts: list[str]) -> _Inferred:
        if not parts:
            return self
        head, rest = parts[0], parts[1:]
        if head.startswith(".."):
            return (self.parent or self).walk(rest)
        if head not in self.children:
            self.children[head] = _Inferred(head, self)
        return self.children[head].walk(rest)

    def representation(self) -> Any:
        nested = {key: child.representation() for key, child in self.children.items()}
        if not self.usages:
            return nested
        if self.usages == {_Usage.SCALAR}:
            return f"{self.key}_Value"
        if _Usage.COLLECTION in self.usages:
            return [nested] if nested else [f"{self.key}_{i}" for i in (1, 2, 3)]
        return nested

    def infer(self, nodes: list[_Node]) -> None:
        for node in nodes:
            if isinstance(node, _Value):
                self.use(node.path, _Usage.SCALAR)
            elif isinstance(node, _Block):
                usage = _Usage.COLLECTION if node.kind is _Kind.EACH else _Usage.CONDITIONAL
                self.use(node.path, usage).infer(node.body)


# -- rendering -------------------------------------------------------------------------------------

# Names the translation adds; `@` cannot appear in a Mustachio path, so none can clash.
_UP, _ITEMS, _HERE, _NOTHING, _BRACE = "@up", "@items", "@here", "@nothing", "@brace"
# Put before every section tag so pystache never sees one alone on its line: Mustachio keeps the
# whitespace and line break around section tags, the Mustache spec drops them.
_KEEP_LINE = "{{" + _NOTHING + "}}"


def _key(path: str, suffix: str | None = None) -> str:
    parts = [_UP if part.startswith("..") else part for part in _path_parts(path)]
    if suffix:
        parts.append(suffix)
    return ".".join(parts) or "."


def _translate(nodes: list[_Node]) -> Iterator[str]:
    for node in nodes:
        if isinstance(node, str):
            # Literal text: braces left over are not tags for Mustachio, so keep pystache off them.
            yield node.replace("{", "{{&" + _BRACE + "}}")
        elif isinstance(node, _Value):
            yield "{{" + ("" if node.escaped else "&") + _key(node.path) + "}}"
        elif node.kind is _Kind.SECTION:
            key = _key(node.path)
            yield from (_KEEP_LINE, "{{#", key, "}}", *_translate(node.body))
            yield from (_KEEP_LINE, "{{/", key, "}}")
        elif node.kind is _Kind.EACH:
            key = _key(node.path, _ITEMS)
            yield from (_KEEP_LINE, "{{#", key, "}}", *_translate(node.body))
            yield from (_KEEP_LINE, "{{/", key, "}}")
        else:
            # Render the body once, inside the falsy value's scope, as Mustachio does.
            key, here = _key(node.path), _key(node.path, _HERE)
            yield from (_KEEP_LINE, "{{^", key, "}}", "{{#", here, "}}", *_translate(node.body))
            yield from (_KEEP_LINE, "{{/", here, "}}", "{{/", key, "}}")


def _exists(value: Any) -> bool:
    """Mustachio's truthiness ("falsey values by JavaScript standards")."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, list | dict):
        return bool(value)
    return True


def _text(value: Any) -> str:
    """A value as .NET prints it: ``True``, ``2`` for ``2.0``, nothing for null or containers."""
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:  # noqa: PLR2004 - .NET switches to E notation
            return str(int(value))
        return repr(value).upper() if "e" in repr(value) else repr(value)
    return str(value)


class _Scope:
    """What pystache sees as the context: resolves names with Mustachio's rules.

    pystache looks names up on objects as attributes and walks outwards when one is missing;
    answering every name (with an empty scope when absent) keeps lookups in the current scope.
    """

    __slots__ = ("_state",)

    def __init__(self, value: Any, parent: _Scope | None, *, forced: bool = False) -> None:
        object.__setattr__(self, "_state", (value, parent, forced))

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            return object.__getattribute__(self, name)
        value, parent, _ = object.__getattribute__(self, "_state")
        if name.startswith("@"):
            return _special(name, self, value, parent)
        child = value.get(name) if isinstance(value, dict) else None
        return _Scope(child, self)

    def __bool__(self) -> bool:
        value, _, forced = object.__getattribute__(self, "_state")
        return forced or _exists(value)

    def __str__(self) -> str:
        return _text(object.__getattribute__(self, "_state")[0])


def _special(name: str, scope: _Scope, value: Any, parent: _Scope | None) -> Any:
    """The names the translation adds (see ``_translate``)."""
    if name == _UP:
        return parent or scope  # `../` at the root stays at the root
    if name == _ITEMS:
        return [_Scope(item, scope) for item in value] if isinstance(value, list) else []
    if name == _HERE:
        return _Scope(value, parent, forced=True)
    return {_NOTHING: "", _BRACE: "{"}[name]


def _html_encode(text: str) -> str:
    """.NET's ``HtmlEncode``: the five markup characters, Latin-1 supplement and astral planes."""
    out = []
    for char in text:
        code = ord(char)
        if char == "<":
            out.append("&lt;")
        elif char == ">":
            out.append("&gt;")
        elif char == "&":
            out.append("&amp;")
        elif char == '"':
            out.append("&quot;")
        elif char == "'":
            out.append("&#39;")
        elif 160 <= code <= 255 or code > 0xFFFF:  # noqa: PLR2004 - the ranges .NET encodes
            out.append(f"&#{code};")
        else:
            out.append(char)
    return "".join(out)


_RENDERER = pystache.Renderer(escape=_html_encode, missing_tags="ignore")


class Template:
    """One Mustachio template: its syntax errors, its suggested model, and rendering.

    Example:
        >>> Template("Hi {{#each people}}{{name}} {{/each}}").render(
        ...     {"people": [{"name": "Ada"}, {"name": "<Bob>"}]})
        'Hi Ada &lt;Bob&gt; '
    """

    def __init__(self, text: str) -> None:
        self.text = text
        tokenizer = _Tokenizer(text)
        tokenizer.run()
        self.errors: tuple[TemplateError, ...] = tokenizer.located_errors()
        self._tree = tokenizer.root
        self._parsed = None if self.errors else pystache.parse("".join(_translate(self._tree)))

    @property
    def is_valid(self) -> bool:
        return not self.errors

    def render(self, model: Mapping[str, Any]) -> str:
        """The template applied to ``model`` (a JSON object, as Postmark's TemplateModel).

        Raises:
            TemplateSyntaxError: the template has syntax errors.
        """
        if self._parsed is None:
            raise TemplateSyntaxError(self.errors)
        rendered: str = _RENDERER.render(self._parsed, _Scope(dict(model), None))
        return rendered

    def infer_into(self, inferred: _Inferred) -> None:
        if self.is_valid:
            inferred.infer(self._tree)


def suggested_model(*templates: Template) -> dict[str, Any]:
    """Postmark's ``SuggestedTemplateModel`` for the templates together (invalid ones skipped)."""
    root = _Inferred()
    for template in templates:
        template.infer_into(root)
    model = root.representation()
    return model if isinstance(model, dict) else {}
