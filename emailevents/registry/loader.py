"""Loading a registry: :func:`compile_registry` compiles it as far as it goes and says what is
wrong; :func:`load_registry` and :func:`parse_registry` give a :class:`Registry` or raise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from ..errors import Problem, RegistryError
from ..yamlnodes import Document, Key, load_document
from .batching import compile_batching
from .categories import Categories, compile_categories
from .checker import Checker
from .defaults import Defaults, compile_defaults
from .digests import check_digest_groups
from .entities import EntityTypes, compile_entity_types
from .events import check_task_names, compile_event, compile_event_specs
from .model import Event, Registry
from .specs import (
    FIELD_HINTS,
    OPTIONAL_SECTIONS,
    SUPPORTED_VERSIONS,
    TOP_LEVEL,
    DefaultsSpec,
    EventSpec,
)
from .throttles import compile_throttles

__all__ = ["Compilation", "compile_registry", "load_registry", "parse_registry"]


@dataclass(frozen=True)
class Compilation:
    """A registry compiled as far as it goes: what compiled, and every problem found.

    An event compiles when it has no problem of its own, whatever is wrong elsewhere. The
    :class:`Registry` is built only when there is no problem at all and everything was resolved.
    """

    document: Document
    """The registry's YAML, with the position of every value (to place more problems at)."""
    problems: tuple[Problem, ...]
    """Every problem, by position; as the YAML reader found them when there was nothing to
    compile."""
    registry: Registry | None = None
    defaults: DefaultsSpec | None = None
    """The ``defaults:`` section, when it is valid (its fields in error put aside)."""
    specs: Mapping[str, EventSpec] = field(default_factory=dict)
    """Every event as written, its fields in error put aside (see :meth:`valid`)."""
    events: Mapping[str, Event] = field(default_factory=dict)
    """The events that compiled."""
    invalid: Mapping[Key, frozenset[str]] = field(default_factory=dict)
    """The fields in error of each section, by the section's place in the document."""

    def valid(self, key: str, name: str) -> bool:
        """Whether event ``key``'s field ``name`` was valid as written."""
        return name not in self.invalid.get(("events", key), frozenset())


def load_registry(source: str | FilePath) -> Registry:
    """Load and check a registry file.

    Raises:
        RegistryError: listing every problem found, each with file:line:column.
    """
    path = FilePath(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError([Problem(f"cannot read the registry: {exc}", str(path))]) from exc
    return parse_registry(text, filename=str(path))


def parse_registry(text: str, *, filename: str = "<registry>") -> Registry:
    """Load and check a registry from its YAML text; see :func:`load_registry`."""
    compiled = compile_registry(text, filename=filename)
    if compiled.registry is None:
        problems = compiled.problems or (Problem("the registry could not be compiled", filename),)
        raise RegistryError(list(problems))
    return compiled.registry


def compile_registry(
    text: str, *, filename: str = "<registry>", resolve: bool = True
) -> Compilation:
    """Compile a registry from its YAML text as far as it goes; nothing is raised.

    Args:
        text: the registry's YAML.
        filename: the file problems name.
        resolve: import the ``module:attr`` references and check what they name. False imports
            nothing, and so runs none of the application's code (importing a module runs its
            top-level code): references are checked as written only, what needs them (attribute
            paths against the mappers, callables' signatures, payload classes) is not checked,
            the events lack their entity classes, callables and payload class, and no registry
            is built.
    """
    doc = load_document(text, filename)
    if doc.problems and doc.data is None:
        return Compilation(doc, tuple(doc.problems))
    return _compile(Checker(doc, resolve=resolve))


def _compile(checker: Checker) -> Compilation:
    doc = checker.doc
    data = doc.data
    if not isinstance(data, dict):
        checker.problem(
            (),
            "the registry must be a mapping with version, defaults, entities, events",
            code="EE007",
        )
        return Compilation(doc, _by_position(doc.problems))
    _check_sections(checker, data)
    defaults = compile_defaults(checker, data)
    categories = compile_categories(checker, data, defaults.spec)
    types = compile_entity_types(checker, data.get("entities"))
    specs = compile_event_specs(checker, data.get("events"))
    throttles = compile_throttles(checker, specs or {})
    batching = compile_batching(checker, data.get("defaults"), specs or {})
    events: dict[str, Event] = {}
    for key, spec in (specs or {}).items():
        if key not in batching:
            continue  # its batch: (or defaults.batch) is invalid, reported
        event = compile_event(
            checker,
            key,
            spec,
            defaults,
            types,
            categories=categories,
            throttle=throttles.get(key),
            batch=batching[key],
        )
        if event is not None:
            events[key] = event
    check_task_names(checker, specs or {})
    check_digest_groups(checker, specs or {})
    return Compilation(
        doc,
        _by_position(doc.problems),
        _registry(checker, defaults, types, specs, events, categories=categories),
        defaults.spec,
        specs or {},
        events,
        checker.invalid,
    )


def _registry(
    checker: Checker,
    defaults: Defaults,
    types: EntityTypes | None,
    specs: dict[str, EventSpec] | None,
    events: dict[str, Event],
    *,
    categories: Categories,
) -> Registry | None:
    """The registry, when nothing is wrong and everything is resolved.

    Unresolved, the events lack what a task run needs: no registry is built from them.
    """
    if (
        checker.doc.problems
        or defaults.spec is None
        or types is None
        or specs is None
        or not checker.resolve
    ):
        return None
    return Registry(
        source=checker.doc.filename,
        version=SUPPORTED_VERSIONS[-1],
        defaults=defaults.spec,
        entity_types={name: t for name, t in types.items() if t is not None},
        events=events,
        toggles=defaults.toggles,
        preferences=defaults.preferences,
        categories=categories.compiled,
    )


def _check_sections(checker: Checker, data: dict[str, Any]) -> None:
    """The top level: known sections, each of them there, and a version this code reads."""
    for key in data:
        if key not in TOP_LEVEL:
            checker.unknown_field((key,), key, TOP_LEVEL)
    for key in TOP_LEVEL:
        if key not in data and key not in OPTIONAL_SECTIONS:
            checker.problem(
                (), f"missing required section '{key}'", hint=FIELD_HINTS[key], code="EE006"
            )
    version = data.get("version")
    if (
        "version" in data
        and (type(version) is not int or version not in SUPPORTED_VERSIONS)
        and not checker.doc.is_broken(("version",))
    ):
        checker.problem(
            ("version",),
            f"unsupported version {version!r}",
            hint=f"this emailevents reads version {SUPPORTED_VERSIONS[-1]}",
            code="EE008",
        )


def _by_position(problems: list[Problem]) -> tuple[Problem, ...]:
    return tuple(sorted(problems, key=lambda p: (p.line, p.column)))
