"""The ``categories:`` section, and the category of each event: its own, or the defaults'.

Categories are optional: without the section, events need none (and may name none). Once it is
declared, every event that is not ``critical: true`` needs one, from ``category:`` or from
``defaults.category``; a critical event takes none, because preferences never stop it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any

from ..yamlnodes import Key
from .checker import Checker
from .model import Category
from .specs import FIELD_HINTS, IDENTIFIER, CategorySpec, DefaultsSpec, EventSpec

__all__ = [
    "Categories",
    "DefaultCategory",
    "compile_categories",
    "event_category",
]


@dataclass(frozen=True)
class DefaultCategory:
    """``defaults.category``: ``key`` when it is a declared category; ``given`` when the
    defaults name one or cannot be read (then an event without a category of its own is not
    reported: the defaults are)."""

    key: str | None = None
    given: bool = False


@dataclass(frozen=True)
class Categories:
    """The ``categories:`` section compiled.

    ``declared`` is whether the registry has the section; ``keys`` every key written in it (a
    broken category is still declared, so events naming it are not reported again); ``broken``
    that the section itself is wrong (reported), so events are not checked against it.
    """

    declared: bool = False
    keys: tuple[str, ...] = ()
    broken: bool = False
    compiled: dict[str, Category] = field(default_factory=dict)
    """The categories without problems, by key, in the order written."""
    default: DefaultCategory = field(default_factory=DefaultCategory)
    """``defaults.category``, checked against the categories."""


def compile_categories(
    checker: Checker, data: dict[str, Any], defaults: DefaultsSpec | None
) -> Categories:
    """The ``categories:`` section, and ``defaults.category`` checked against it."""
    categories = _section(checker, data)
    return replace(categories, default=_default_category(checker, defaults, categories))


def _section(checker: Checker, data: dict[str, Any]) -> Categories:
    """The ``categories:`` section; an empty one when the registry has none."""
    if "categories" not in data:
        return Categories()
    raw = data["categories"]
    path: Key = ("categories",)
    if checker.doc.is_broken(path):
        return Categories(declared=True, broken=True)
    if raw is None or raw == {}:
        checker.problem(
            path,
            "categories: is declared but empty",
            hint="declare at least one category, like "
            "`newsletters: {title: Newsletters, default: off}`, or remove the section",
            at_key=raw is None,
            code="EE065",
        )
        return Categories(declared=True, broken=True)
    if not isinstance(raw, dict):
        checker.problem(
            path,
            "categories: must map category keys to their definitions",
            hint=FIELD_HINTS["categories"],
            code="EE007",
        )
        return Categories(declared=True, broken=True)
    compiled: dict[str, Category] = {}
    for key, value in raw.items():
        category = _category(checker, key, value)
        if category is not None:
            compiled[key] = category
    return Categories(declared=True, keys=tuple(raw), compiled=compiled)


def _category(checker: Checker, key: str, value: Any) -> Category | None:
    path: Key = ("categories", key)
    before = checker.count
    if not IDENTIFIER.match(key):
        checker.problem(
            path,
            f"categories: '{key}' is not a category key",
            hint="letters, digits and `_`, starting with a letter, like 'product_updates'",
            at_key=True,
            code="EE063",
        )
    spec = checker.validate(CategorySpec, value, path, expected=FIELD_HINTS["categories"])
    if spec is None:
        return None
    if "title" not in checker.invalid.get(path, ()) and not spec.title.strip():
        written = isinstance(value, dict) and "title" in value
        checker.problem(
            (*path, "title") if written else path,
            f"categories.{key}: {'has an empty title' if written else 'has no title'}",
            hint="give it `title:`, the name recipients see among their email preferences",
            at_key=not written,
            code="EE064",
        )
    if checker.count > before:
        return None
    return Category(key, spec.title, spec.description, spec.default)


def _default_category(
    checker: Checker, defaults: DefaultsSpec | None, categories: Categories
) -> DefaultCategory:
    """``defaults.category``, checked against the declared categories."""
    if defaults is None or "category" in checker.invalid.get(("defaults",), ()):
        return DefaultCategory(given=True)  # the defaults' problems are reported
    if defaults.category is None:
        return DefaultCategory()
    if categories.broken:
        return DefaultCategory(given=True)
    if defaults.category not in categories.keys:
        _undeclared(checker, ("defaults", "category"), "defaults", defaults.category, categories)
        return DefaultCategory(given=True)
    return DefaultCategory(defaults.category, given=True)


def event_category(
    checker: Checker,
    key: str,
    spec: EventSpec,
    categories: Categories,
) -> str | None:
    """The category of event ``key``: its own, or else the defaults'.

    A critical event has none, and may not name one. Once ``categories:`` is declared, every
    other event needs one.
    """
    path: Key = ("events", key)
    invalid = checker.invalid.get(path, frozenset())
    if categories.broken or invalid & {"category", "critical"}:
        return None
    if spec.critical:
        if spec.category is not None:
            checker.problem(
                (*path, "category"),
                f"events.{key}: give either `critical: true` or `category: {spec.category}`, "
                "not both",
                hint="preferences never stop critical mail, so it has no category",
                code="EE061",
            )
        return None
    if spec.category is not None:
        if spec.category not in categories.keys:
            _undeclared(checker, (*path, "category"), f"events.{key}", spec.category, categories)
            return None
        return spec.category
    if categories.default.given:
        # None when it is undeclared: reported once, at defaults.
        return categories.default.key
    if categories.declared:
        checker.problem(
            path,
            f"events.{key}: has no category, and `defaults:` gives none",
            hint=f"add `category: ...`{_one_of(categories)} or `critical: true`",
            at_key=True,
            code="EE062",
        )
    return None


def _undeclared(checker: Checker, path: Key, owner: str, name: str, categories: Categories) -> None:
    close = difflib.get_close_matches(name, list(categories.keys), n=1)
    if close:
        hint = f"did you mean '{close[0]}'?"
    elif categories.declared:
        hint = f"declare it under `categories:` (declared: {', '.join(categories.keys)})"
    else:
        hint = f"declare it in a top-level `categories:` section, like `{name}: {{title: ...}}`"
    checker.problem(
        path, f"{owner}.category: '{name}' is not a declared category", hint=hint, code="EE060"
    )


def _one_of(categories: Categories) -> str:
    """`` (one of: a, b)``: the keys an event can name (an invalid one is reported already)."""
    keys = [key for key in categories.keys if IDENTIFIER.match(key)]
    return f" (one of: {', '.join(keys)})" if keys else ""
