"""YAML to plain data, keeping every node's position and catching what PyYAML lets through.

PyYAML silently keeps the last of two equal keys and expands aliases into shared objects; a
registry needs both reported, with line and column, so we compose the node graph and build
the values ourselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Problem
from .yamlsyntax import source_lines, syntax_problem

__all__ = ["Document", "Location", "load_document"]

Key = tuple[str | int, ...]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# A registry needs five levels; far deeper input would only exhaust the composer's recursion.
_MAX_DEPTH = 64
# What PyYAML counts as a line break when it numbers lines (yaml/reader.py, Reader.forward).
_YAML_BREAKS = "\n\x85\u2028\u2029"


@dataclass(frozen=True)
class Location:
    """Where a value stands: 1-based line and column, and its YAML scalar style.

    ``text_column`` is set when a string value is written verbatim on one line (plain, or quoted
    without escapes): it is the column of the value's first character, so an offset into the
    value is an offset into the line.
    """

    line: int
    column: int
    style: str | None = None
    text_column: int | None = None


@dataclass
class Document:
    """Plain data built from a YAML file, with the position of every value and mapping key."""

    filename: str
    data: Any = None
    values: dict[Key, Location] = field(default_factory=dict)
    keys: dict[Key, Location] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Paths whose value could not be built (reported already; the data holds None there).
    broken: set[Key] = field(default_factory=set)

    def is_broken(self, path: Key) -> bool:
        """Whether the value at ``path``, or one it is part of, could not be built."""
        return any(tuple(path[:i]) in self.broken for i in range(len(path) + 1))

    def problem(
        self,
        path: Key,
        message: str,
        *,
        hint: str = "",
        at_key: bool = False,
        code: str = "EE001",
    ) -> Problem:
        """A Problem placed at ``path`` (its key with ``at_key``), or its closest known parent."""
        where = self.locate(path, at_key=at_key)
        return Problem(
            message, file=self.filename, line=where.line, column=where.column, hint=hint, code=code
        )

    def locate(self, path: Key, *, at_key: bool = False) -> Location:
        path = tuple(path)
        while path:
            found = (self.keys if at_key else self.values).get(path) or self.keys.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.values.get((), Location(1, 1))


def load_document(text: str, filename: str) -> Document:
    """Compose ``text`` and build its data; syntax errors become problems, never exceptions."""
    doc = Document(filename)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        # PyYAML's reader refuses control characters without a mark; we give the position.
        line, column = _position(text, exc.position)
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        doc.problems.append(
            Problem(
                f"invalid YAML: character {char!r} (U+{ord(char[:1] or ' '):04X}) is not "
                "allowed; YAML accepts only printable characters",
                filename,
                line,
                column,
                code="EE002",
                source_line=source_lines(text)[line - 1],
            )
        )
        return doc
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        doc.problems.append(syntax_problem(text, filename, exc))
        return doc
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        doc.problems.append(Problem(f"invalid YAML: {exc}", filename, code="EE002"))
        return doc
    finally:
        loader.dispose()
    if node is None:
        doc.problems.append(Problem("the registry is empty", filename, 1, 1, code="EE006"))
        return doc
    for anchor, mark in loader.anchor_marks:
        doc.problems.append(
            Problem(
                f"YAML anchors are not supported in a registry (&{anchor})",
                filename,
                mark.line + 1,
                mark.column + 1,
                hint="write each value out in full where it is used",
                code="EE004",
            )
        )
    builder = _Builder(doc, text)
    try:
        doc.data = builder.build(node, ())
    except RecursionError:
        doc.problems.append(Problem("invalid YAML: nested too deeply", filename, code="EE002"))
    return doc


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of ``text[index]``, numbered the way PyYAML numbers its marks."""
    line, column, i = 1, 1, 0
    while i < index:
        char = text[i]
        if char in _YAML_BREAKS or (char == "\r" and text[i + 1 : i + 2] != "\n"):
            line, column = line + 1, 1
        elif char != "\ufeff":
            column += 1
        i += 1
    return line, column


class _AliasNode(yaml.Node):
    """An ``*alias``, kept as a node of its own so that it can be reported where it is written."""

    id = "alias"

    def __init__(self, target: yaml.Node, anchor: str, start: Any, end: Any) -> None:
        super().__init__(target.tag, target, start, end)
        self.anchor = anchor


class _Loader(yaml.SafeLoader):
    """SafeLoader composing aliases as :class:`_AliasNode` and noting where anchors stand."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.anchor_marks: list[tuple[str, Any]] = []
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if self.depth >= _MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {_MAX_DEPTH} levels deep", event.start_mark
            )
        if isinstance(event, yaml.AliasEvent):
            self.get_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is None:
                mark: Any = event.start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", mark
                )
            return _AliasNode(target, str(event.anchor), event.start_mark, event.end_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None and anchor not in self.anchors:
            self.anchor_marks.append((anchor, event.start_mark))
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Builder:
    def __init__(self, doc: Document, text: str) -> None:
        self.doc = doc
        self.text = text
        self.constructor = yaml.SafeLoader("")
        self.built: dict[int, Any] = {}

    def build(self, node: yaml.Node, path: Key) -> Any:
        where = Location(
            node.start_mark.line + 1,
            node.start_mark.column + 1,
            getattr(node, "style", None),
            self._text_column(node),
        )
        self.doc.values[path] = where
        if isinstance(node, _AliasNode):
            self._refuse(
                where,
                f"YAML aliases are not supported in a registry (*{node.anchor})",
                hint="write the value out in full",
            )
            # The anchored value, so that one alias is one problem; None inside its own anchor.
            if id(node.value) not in self.built:
                self.doc.broken.add(path)
            return self.built.get(id(node.value))
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in (
            _MAP_TAG,
            _SEQ_TAG,
        ):
            self._refuse(
                where,
                f"YAML tags are not supported in a registry ({node.tag})",
                hint="write a plain mapping or list",
            )
        if isinstance(node, yaml.MappingNode):
            value: Any = self._mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            value = []
            for i, item in enumerate(node.value):
                value.append(self.build(item, (*path, i)))
        else:
            value = self._scalar(node, path)
        self.built[id(node)] = value
        return value

    def _refuse(
        self, where: Location, message: str, *, hint: str = "", code: str = "EE004"
    ) -> None:
        """A problem of the YAML itself, at ``where``."""
        self.doc.problems.append(
            Problem(message, self.doc.filename, where.line, where.column, hint=hint, code=code)
        )

    def _scalar(self, node: yaml.Node, path: Key) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.doc.problems.append(
                self.doc.problem(path, f"invalid value: {exc.problem}", code="EE002")
            )
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.doc.problems.append(self.doc.problem(path, f"invalid value: {exc}", code="EE002"))
        self.doc.broken.add(path)
        return None

    def _text_column(self, node: yaml.Node) -> int | None:
        start, end = node.start_mark, node.end_mark
        if not isinstance(node, yaml.ScalarNode) or start.line != end.line:
            return None
        raw = self.text[start.index : end.index]
        if node.style is None and raw == node.value:
            return int(start.column) + 1
        if node.style in ("'", '"') and raw[1:-1] == node.value:
            return int(start.column) + 2
        return None

    def _mapping(self, node: yaml.MappingNode, path: Key) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_where = Location(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                self._refuse(
                    key_where,
                    "mapping keys must be plain names (no lists, mappings, aliases or '<<' merges)",
                )
                continue
            key = str(key_node.value)
            if key in first_seen:
                self._refuse(
                    key_where,
                    f"duplicate key {key!r} (first defined at line {first_seen[key]})",
                    hint="YAML would silently keep only the last one",
                    code="EE003",
                )
                continue
            first_seen[key] = key_where.line
            self.doc.keys[(*path, key)] = key_where
            out[key] = self.build(value_node, (*path, key))
            if value_node.start_mark.index == value_node.end_mark.index:
                # `key:` with nothing after it: the empty value stands where the key does.
                self.doc.values[(*path, key)] = key_where
        return out
