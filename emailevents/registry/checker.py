"""What every section's compiling shares: problems placed where they are written, specs
validated field by field, and ``module:attr`` references imported (or, unresolved, parsed)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import Problem
from ..introspect import Callee, import_ref, parse_ref
from ..yamlnodes import Document, Key
from .specs import EVENT_FIELD_HINTS, FIELD_HINTS, DigestSpec, EventSpec

__all__ = ["Checker", "dotted"]

M = TypeVar("M", bound=BaseModel)

_EXPRESSION_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class Checker:
    """One compile run over a document: collects every problem, in the document's own list.

    A mistake is reported once, where it is written: what depends on a broken part (an event
    using an entity type whose import failed, say) is skipped rather than reported again.

    With ``resolve=False`` nothing is imported: importing a ``module:attr`` reference runs its
    module's top-level code, which a review of the registry must not do. References are checked
    as written, and left unresolved like broken ones, so what needs them (attribute paths against
    the mappers, callables' signatures, payload classes) is not checked.
    """

    def __init__(self, doc: Document, *, resolve: bool = True) -> None:
        self.doc = doc
        self.resolve = resolve
        # Fields of a section that were in error (and left out, to check the rest).
        self.invalid: dict[Key, frozenset[str]] = {}

    def problem(
        self, path: Key, message: str, *, code: str, hint: str = "", at_key: bool = False
    ) -> None:
        """Report ``message`` at ``path``; ``code`` is its stable lint code (docs/lint.md)."""
        self.add(self.doc.problem(path, message, hint=hint, at_key=at_key, code=code))

    def add(self, problem: Problem) -> None:
        """Report a problem placed already (at an expression, say)."""
        self.doc.problems.append(problem)

    @property
    def count(self) -> int:
        """How many problems are reported so far."""
        return len(self.doc.problems)

    # -- schema --

    def validate(
        self,
        model: type[M],
        value: Any,
        path: Key,
        *,
        expected: str = "",
        placeholders: Mapping[str, Any] | None = None,
    ) -> M | None:
        """``value`` as a ``model``; with errors, reported, the spec of the fields that are valid.

        A spec with fields in error is still returned when leaving those fields out (or, for
        required ones, putting in ``placeholders``) makes it valid, so the rest of the section is
        checked too; ``self.invalid[path]`` then names the fields left out. Such a spec only
        ever serves to find more problems: a registry with problems is never built.
        """
        if value is None and path in self.doc.values:
            if not self.doc.is_broken(path):
                self.problem(
                    path, f"{dotted(path)}: is empty", hint=expected, at_key=True, code="EE007"
                )
            return None
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            errors = exc.errors()
        for error in errors:
            self._schema_error(model, path, value, error, expected)
        if not isinstance(value, dict) or not all(error["loc"] for error in errors):
            return None
        bad = frozenset(str(error["loc"][0]) for error in errors)
        kept = {name: v for name, v in value.items() if name not in bad}
        kept |= {name: v for name, v in (placeholders or {}).items() if name in bad}
        try:
            spec = model.model_validate(kept)
        except ValidationError:
            return None
        self.invalid[path] = bad
        return spec

    def _schema_error(
        self, model: type[BaseModel], path: Key, value: Any, error: Any, expected: str
    ) -> None:
        loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "missing":
            parent = (*path, *_located(value, loc[:-1]))
            name = str(loc[-1])
            hints = EVENT_FIELD_HINTS if model is EventSpec else FIELD_HINTS
            self.problem(
                parent,
                f"{dotted(parent)}: missing required field '{name}'",
                hint=hints.get(name, ""),
                at_key=True,
                code="EE006",
            )
            return
        where = (*path, *_located(value, loc))
        if kind != "extra_forbidden" and self.doc.is_broken(where):
            return  # the value could not be read from the YAML, which is reported already
        if kind == "extra_forbidden":
            inner = DigestSpec if model is EventSpec and loc[0] == "digest" else model
            fields = [f.alias or name for name, f in inner.model_fields.items()]
            self.unknown_field(where, str(where[-1]), fields)
        elif where == path and kind in ("model_type", "model_attributes_type", "dict_type"):
            self.problem(
                where,
                f"{dotted(where)}: must be a mapping of fields, not {_kind(value)}",
                hint=expected,
                code="EE007",
            )
        elif unquoted := _unquoted_expression(error.get("input")):
            quoted = f'["{unquoted}"]' if isinstance(error.get("input"), list) else f'"{unquoted}"'
            example = f"`{where[-1]}: {quoted}`" if len(where) > len(path) else quoted
            self.problem(
                where,
                f"{dotted(where)}: YAML reads {unquoted} unquoted as a mapping, not an expression",
                hint=f"quote expressions: {example}",
                code="EE007",
            )
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            hint = ""
            if kind != "value_error":  # our own validators' messages say what to write
                message = f"{message} (got {_kind(error.get('input'))})"
                hint = FIELD_HINTS.get(str(where[-1]), "") if len(where) > len(path) else ""
            self.problem(where, f"{dotted(where)}: {message}", hint=hint, code="EE007")

    def unknown_field(self, path: Key, name: str, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        parent = dotted(path[:-1]) or "registry"
        self.problem(
            path, f"{parent}: unknown field '{name}'", hint=hint, at_key=True, code="EE005"
        )

    # -- references --

    def reference(self, ref: str, path: Key) -> Any:
        """The object ``ref`` names; None when it is broken (reported) or not resolved."""
        try:
            if not self.resolve:
                parse_ref(ref)
                return None
            return import_ref(ref)
        except LookupError as exc:
            self.problem(path, f"{dotted(path)}: {exc}", code="EE012")
            return None

    def callable_reference(self, ref: str, path: Key) -> Callable[..., Any] | None:
        obj = self.reference(ref, path)
        if obj is not None and not callable(obj):
            self.problem(path, f"{dotted(path)}: '{ref}' is not callable", code="EE013")
            return None
        return obj  # type: ignore[no-any-return]

    def callee(self, ref: str | None, path: Key, available: set[str] | None) -> Callee | None:
        if ref is None:
            return None
        func = self.callable_reference(ref, path)
        if func is None or available is None:
            return None
        try:
            return Callee.bind(func, available, f"'{ref}'")
        except TypeError as exc:
            self.problem(path, f"{dotted(path)}: {exc}", code="EE014")
            return None


def dotted(path: Key) -> str:
    """``events.key.data.name``: a place in the document as problems name it."""
    return ".".join(str(p) for p in path)


def _located(value: Any, loc: tuple[Any, ...]) -> Key:
    """The part of a pydantic error location that indexes into ``value``.

    Pydantic puts union member tags ('str', 'list[str]') and '[key]' in locations; only the steps
    that exist in the data are places in the YAML.
    """
    found: list[str | int] = []
    for part in loc:
        in_mapping = isinstance(value, dict) and isinstance(part, str) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if in_mapping or in_list:
            value = value[part]
            found.append(part)
    return tuple(found)


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "nothing"),
    (bool, "a boolean"),
    ((int, float), "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
)


def _kind(value: Any) -> str:
    """What a YAML value is, in words: 'a number', 'a list', ..."""
    return next((name for cls, name in _KINDS if isinstance(value, cls)), type(value).__name__)


def _unquoted_expression(value: Any) -> str | None:
    """``{org.name}`` when YAML read an unquoted ``{org.name}`` (alone, in a list) as a mapping."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and len(item) == 1:
            ((key, inner),) = item.items()
            if inner is None and isinstance(key, str) and _EXPRESSION_PATH.match(key):
                return f"{{{key}}}"
    return None
