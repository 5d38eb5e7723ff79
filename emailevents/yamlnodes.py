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

__all__ = ["Document", "Location", "load_document"]

Key = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    """Where a value stands: 1-based line and column, and its YAML scalar style."""

    line: int
    column: int
    style: str | None = None


@dataclass
class Document:
    """Plain data built from a YAML file, with the position of every value and mapping key."""

    filename: str
    data: Any = None
    values: dict[Key, Location] = field(default_factory=dict)
    keys: dict[Key, Location] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, path: Key, message: str, *, hint: str = "", at_key: bool = False) -> Problem:
        """A Problem placed at ``path`` (its key with ``at_key``), or its closest known parent."""
        where = self.locate(path, at_key=at_key)
        return Problem(message, file=self.filename, line=where.line, column=where.column, hint=hint)

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
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        doc.problems.append(Problem(f"invalid YAML: {message}", filename, line, column))
        return doc
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        doc.problems.append(Problem(f"invalid YAML: {exc}", filename))
        return doc
    if node is None:
        doc.problems.append(Problem("the registry is empty", filename, 1, 1))
        return doc
    builder = _Builder(doc)
    try:
        doc.data = builder.build(node, ())
    except RecursionError:
        doc.problems.append(Problem("invalid YAML: nested too deeply", filename))
    return doc


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.constructor = yaml.SafeLoader("")
        self.seen: set[int] = set()

    def build(self, node: yaml.Node, path: Key) -> Any:
        where = Location(
            node.start_mark.line + 1, node.start_mark.column + 1, getattr(node, "style", None)
        )
        self.doc.values[path] = where
        if id(node) in self.seen:
            self.doc.problems.append(
                self.doc.problem(
                    path,
                    "YAML anchors and aliases are not supported in a registry",
                    hint="write the value out in full",
                    at_key=True,
                )
            )
            return None
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.doc.problems.append(self.doc.problem(path, f"invalid value: {exc.problem}"))
            return None
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.doc.problems.append(self.doc.problem(path, f"invalid value: {exc}"))
            return None

    def _mapping(self, node: yaml.MappingNode, path: Key) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_where = Location(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                self.doc.problems.append(
                    Problem(
                        "mapping keys must be plain names (no lists, mappings or '<<' merges)",
                        self.doc.filename,
                        key_where.line,
                        key_where.column,
                    )
                )
                continue
            key = str(key_node.value)
            if key in first_seen:
                self.doc.problems.append(
                    Problem(
                        f"duplicate key {key!r} (first defined at line {first_seen[key]})",
                        self.doc.filename,
                        key_where.line,
                        key_where.column,
                        hint="YAML would silently keep only the last one",
                    )
                )
                continue
            first_seen[key] = key_where.line
            self.doc.keys[(*path, key)] = key_where
            out[key] = self.build(value_node, (*path, key))
        return out
