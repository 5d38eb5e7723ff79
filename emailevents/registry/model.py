"""The compiled registry: entity types, events and their expressions, as a task run uses them."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any

from pydantic import BaseModel

from ..addresses import AddressTemplate
from ..errors import Problem, RegistryError
from ..expressions import Path, Template
from ..introspect import Callee, PathError, check_value_path
from .specs import DefaultsSpec, EventSpec

__all__ = [
    "DEFAULT_BATCH",
    "BatchSetting",
    "Category",
    "Digest",
    "EntityType",
    "Event",
    "Expression",
    "Registry",
    "Throttle",
    "context_problems",
    "context_references",
]


@dataclass(frozen=True)
class Category:
    """A category of ``categories:``: a kind of email recipients may choose to receive or not.

    ``default`` is whether a recipient who has not chosen receives it.
    """

    key: str
    title: str
    description: str
    default: bool


@dataclass(frozen=True)
class EntityType:
    """A registered entity type: the mapped class and the attribute its CUID is in."""

    name: str
    model: type
    key: str


@dataclass(frozen=True)
class Expression:
    """A compiled expression and where it was written (for errors that point at the YAML).

    ``where`` is the position of the expression's first character; when ``exact`` is false (a
    multi-line or escaped YAML scalar) offsets into the source cannot be mapped to columns and
    problems point at the scalar itself. ``label`` names the field in problems.
    """

    field: str
    template: Template
    where: Problem
    label: str = ""
    exact: bool = True

    def problem(
        self,
        message: str,
        path: Path | None = None,
        *,
        code: str,
        hint: str = "",
        offset: int | None = None,
    ) -> Problem:
        """A Problem with lint ``code`` at ``offset`` in the source (by default, at ``path``)."""
        if offset is None:
            offset = path.offset if path else 0
        column = self.where.column + (offset if self.exact and self.where.line else 0)
        return Problem(
            f"{self.label or self.field}: {message}",
            self.where.file,
            self.where.line,
            column,
            hint,
            code,
        )

    def path_problem(self, ref: Path, exc: PathError) -> Problem:
        """The problem of ``ref``, pointing at the attribute at fault: '{' root '.' attr '.' ..."""
        before = [ref.root, *ref.attrs[: exc.index]]
        offset = ref.offset + 1 + sum(len(name) + 1 for name in before)
        return self.problem(f"{{{ref}}}: {exc}", ref, offset=offset, code=exc.code, hint=exc.hint)


@dataclass(frozen=True)
class Digest:
    """An event's ``digest:``, compiled: where its emits to a recipient are collected, and when
    that recipient's digest is sent (docs/timing.md, "Digests").

    ``key`` is the digest's name in ``emailevents_digests``: its ``group``, or the event's key.
    Exactly one of ``window`` (fixed, from the digest's first item) and ``at`` (daily, at that
    time of day in the ``timezone`` the emit's entities give, else ``default_timezone``).
    """

    key: str
    template: int | str
    window: timedelta | None = None
    at: time | None = None
    timezone: Expression | None = None
    default_timezone: str = "UTC"
    subject: str | None = None
    """The digest's subject; ``{count}`` in it is the number of items."""
    single_plain: bool = False
    """A digest of one item is sent as the event's own email, with its own TemplateModel."""
    group: str | None = None


@dataclass(frozen=True)
class Throttle:
    """An event's ``throttle:``: at most ``limit`` emails to one recipient in any ``per``.

    ``scope`` names the budget they count against: the event's key, or ``group:NAME`` for the
    events of a ``group:`` (event keys have no colon, so the two never meet).
    """

    scope: str
    limit: int
    per: timedelta
    group: str | None = None


@dataclass(frozen=True)
class BatchSetting:
    """An event's cross-emit batching, in effect: the worker runs the event's messages that
    arrive within ``window`` seconds of each other together, at most ``max`` in one batch
    (one claim statement, one Postmark batch request, one outcome statement). Off is ``None``.
    """

    window: float
    """Seconds a batch waits for more messages once the pool is busy (``window_ms`` / 1000)."""
    max: int
    """The most messages one batch runs together (Postmark's batch holds 500)."""

    @property
    def window_ms(self) -> float:
        """The window in milliseconds, as ``batch: {window_ms: ...}`` writes it."""
        return self.window * 1000


DEFAULT_BATCH = BatchSetting(0.05, 500)
"""What an event gets with no ``batch:`` in it or in ``defaults``: on, 50 ms, 500 messages."""


@dataclass(frozen=True)
class Event:
    """One event, compiled: everything a task run needs, resolved once at load."""

    key: str
    task_name: str
    toggle: str | None
    template: int | str
    entities: tuple[tuple[str, EntityType], ...]
    org: str | None
    from_: str
    message_stream: str
    subject: Expression | None
    to: tuple[Expression, ...]
    to_addresses: tuple[AddressTemplate, ...]
    """``to:``, each split at load into its display-name and address parts."""
    recipients: Callee | None
    data: tuple[Expression, ...]
    payload_model: type[BaseModel]
    build: Callee | None
    context_names: frozenset[str]
    spec: EventSpec
    category: str | None = None
    """The event's ``category:``, or else the one of ``defaults``; None for a critical event
    (it never takes the default) and when no category applies."""
    critical: bool = False
    """Mail that preferences never stop (still suppressions and, unless ``always``, the toggle)."""
    throttle: Throttle | None = None
    """``throttle:``: how many emails a recipient gets at most in a sliding window."""
    digest: Digest | None = None
    """Its emits go into each recipient's digest rather than out one by one."""
    batch: BatchSetting | None = DEFAULT_BATCH
    """``batch:`` (or ``defaults.batch``): how the worker batches its messages; None: off."""

    @property
    def entity_names(self) -> tuple[str, ...]:
        """The names ``emit()`` takes, in order (as declared: known without importing)."""
        return tuple(self.spec.entities)

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return ((self.subject,) if self.subject else ()) + self.to + self.data


@dataclass(frozen=True)
class Registry:
    """A loaded registry; build it with :func:`~emailevents.registry.load_registry`."""

    source: str
    version: int
    defaults: DefaultsSpec
    entity_types: Mapping[str, EntityType]
    events: Mapping[str, Event]
    toggles: Callable[..., bool] | None = None
    preferences: Callable[..., bool | None] | None = None
    """``defaults.preferences``: the application's own preferences, ``(session, recipient,
    category) -> True | False | None``; ``None``: emailevents' table."""
    categories: Mapping[str, Category] = field(default_factory=dict)
    """The ``categories:`` section, by key, in the order written; empty without one."""

    def check_context(self, context: Mapping[str, Any]) -> None:
        """Check the names expressions use beyond entities against the engine's ``context``.

        Raises:
            RegistryError: an expression names something that is neither an entity of its event
                nor a context value, or a context callable takes a name its event lacks.
        """
        problems = context_problems(self.events.values(), context)
        if problems:
            raise RegistryError(problems)


def context_references(events: Iterable[Event]) -> Iterator[tuple[Event, Expression, Path]]:
    """Each path of the events' expressions that starts at a context value, not an entity."""
    for event in events:
        for expression in event.expressions:
            for path in expression.template.paths:
                if path.root not in event.entity_names:
                    yield event, expression, path


def context_problems(events: Iterable[Event], context: Mapping[str, Any]) -> list[Problem]:
    """What :meth:`Registry.check_context` finds in ``events`` against ``context``."""
    problems: list[Problem] = []
    checked: set[tuple[str, str]] = set()
    for event, expression, path in context_references(events):
        if path.root not in context:
            problems.append(_not_in_context(event, expression, path, context))
            continue
        value = context[path.root]
        if callable(value) and (event.key, path.root) not in checked:
            checked.add((event.key, path.root))
            try:
                Callee.bind(value, {*event.entity_names, "session"}, f"context '{path.root}'")
            except TypeError as exc:
                problems.append(
                    expression.problem(f"{exc} (in event '{event.key}')", path, code="EE014")
                )
        elif not callable(value):
            try:
                check_value_path(value, path.attrs)
            except PathError as exc:
                problems.append(expression.path_problem(path, exc))
    return problems


def _not_in_context(
    event: Event, expression: Expression, path: Path, context: Mapping[str, Any]
) -> Problem:
    close = difflib.get_close_matches(path.root, [*event.entity_names, *context], n=1)
    hint = (
        f"did you mean '{close[0]}'?"
        if close
        else "declare it under the event's entities, or pass "
        f"context={{'{path.root}': ...}} to EmailEvents"
    )
    message = f"'{path.root}' is neither an entity of event '{event.key}' nor a context value"
    return expression.problem(message, path, hint=hint, code="EE024")
