"""``events.yaml`` -> a checked, compiled :class:`Registry`.

Loading reports every problem at once, each with file:line:column. Everything is resolved here,
once: entity classes, ``module:attr`` callables, expressions (checked against the SQLAlchemy
mappers) and one pydantic payload model per event. Nothing is imported or parsed per message.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path as FilePath
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    field_validator,
)

from .addresses import AddressError, parse_address
from .errors import ExpressionError, Problem, RegistryError
from .expressions import Path, Template, parse
from .introspect import Callee, PathInfo, describe_path, import_ref, mapper_of
from .yamlnodes import Document, Key, load_document

__all__ = [
    "ALWAYS",
    "DefaultsSpec",
    "EntitySpec",
    "EntityType",
    "Event",
    "EventSpec",
    "Registry",
    "load_registry",
    "parse_registry",
]

ALWAYS = "always"
SUPPORTED_VERSIONS = (1,)
RESERVED_NAMES = frozenset({"session", "event_id", "recipient", "subject"})
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_TOGGLE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


# --- the schema: what events.yaml may say --------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)


class DefaultsSpec(_Spec):
    """The ``defaults:`` section."""

    from_: StrictStr = Field(alias="from")
    message_stream: StrictStr = "outbound"
    org: StrictStr = "org"
    toggles: StrictStr | None = None


class EntitySpec(_Spec):
    """One entry of ``entities:``: a mapped class and the column its CUID is in."""

    model: StrictStr
    key: StrictStr = "cuid"


class EventSpec(_Spec):
    """One entry of ``events:``, as written."""

    toggle: StrictStr
    template: StrictInt | StrictStr
    entities: dict[StrictStr, StrictStr]
    subject: StrictStr | None = None
    to: StrictStr | list[StrictStr] | None = None
    recipients: StrictStr | None = None
    data: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    payload: StrictStr | None = None
    build: StrictStr | None = None
    task: StrictStr | None = None

    @field_validator("template", mode="wrap")
    @classmethod
    def _template(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str) or value in ("", 0):
            raise ValueError("must be a Postmark TemplateId (a number) or TemplateAlias (a string)")
        return handler(value)

    @field_validator("to", mode="wrap")
    @classmethod
    def _to(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        ):
            return handler(value)
        raise ValueError("must be an expression string or a non-empty list of them")


M = TypeVar("M", bound="_Spec")

_TOP_LEVEL = ("version", "defaults", "entities", "events")


# --- the compiled registry ----------------------------------------------------------------


@dataclass(frozen=True)
class EntityType:
    """A registered entity type: the mapped class and the attribute its CUID is in."""

    name: str
    model: type
    key: str


@dataclass(frozen=True)
class Expression:
    """A compiled expression and where it was written (for errors that point at the YAML)."""

    field: str
    template: Template
    where: Problem

    def problem(self, message: str, path: Path | None = None, *, hint: str = "") -> Problem:
        column = self.where.column + (path.offset if path and self.where.line else 0)
        return Problem(f"{self.field}: {message}", self.where.file, self.where.line, column, hint)


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
    recipients: Callee | None
    data: tuple[Expression, ...]
    payload_model: type[BaseModel]
    build: Callee | None
    context_names: frozenset[str]
    spec: EventSpec

    @property
    def entity_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.entities)

    @property
    def expressions(self) -> tuple[Expression, ...]:
        return ((self.subject,) if self.subject else ()) + self.to + self.data


@dataclass(frozen=True)
class Registry:
    """A loaded registry; build it with :func:`load_registry`."""

    source: str
    version: int
    defaults: DefaultsSpec
    entity_types: Mapping[str, EntityType]
    events: Mapping[str, Event]
    toggles: Callable[..., bool] | None = None
    _context_refs: tuple[tuple[Event, Expression, Path], ...] = field(default=(), repr=False)

    def check_context(self, context: Mapping[str, Any]) -> None:
        """Check the names expressions use beyond entities against the engine's ``context``.

        Raises:
            RegistryError: an expression names something that is neither an entity of its event
                nor a context value, or a context callable takes a name its event lacks.
        """
        problems: list[Problem] = []
        checked: set[tuple[str, str]] = set()
        for event, expression, path in self._context_refs:
            if path.root not in context:
                options = [*event.entity_names, *context]
                close = difflib.get_close_matches(path.root, options, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else "declare it under the event's entities, or pass "
                    f"context={{'{path.root}': ...}} to EmailEvents"
                )
                message = (
                    f"'{path.root}' is neither an entity of event '{event.key}' nor a context value"
                )
                problems.append(expression.problem(message, path, hint=hint))
                continue
            value = context[path.root]
            if callable(value) and (event.key, path.root) not in checked:
                checked.add((event.key, path.root))
                try:
                    Callee.bind(value, {*event.entity_names, "session"}, f"context '{path.root}'")
                except TypeError as exc:
                    problems.append(expression.problem(f"{exc} (in event '{event.key}')", path))
        if problems:
            raise RegistryError(problems)


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
    doc = load_document(text, filename)
    if doc.problems and doc.data is None:
        raise RegistryError(doc.problems)
    registry = _Compiler(doc).compile()
    if doc.problems or registry is None:
        raise RegistryError(sorted(doc.problems, key=lambda p: (p.line, p.column)))
    return registry


# --- compiling ----------------------------------------------------------------------------


class _Compiler:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.context_refs: list[tuple[Event, Expression, Path]] = []

    def problem(self, path: Key, message: str, *, hint: str = "", at_key: bool = False) -> None:
        self.doc.problems.append(self.doc.problem(path, message, hint=hint, at_key=at_key))

    def compile(self) -> Registry | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.problem(
                (), "the registry must be a mapping with version, defaults, entities, events"
            )
            return None
        for key in data:
            if key not in _TOP_LEVEL:
                self._unknown_field((key,), key, _TOP_LEVEL)
        for key in _TOP_LEVEL:
            if key not in data:
                self.problem((), f"missing required section '{key}'")
        version = data.get("version")
        if "version" in data and (type(version) is not int or version not in SUPPORTED_VERSIONS):
            self.problem(
                ("version",),
                f"unsupported version {version!r}",
                hint=f"this emailevents reads version {SUPPORTED_VERSIONS[-1]}",
            )
        defaults = self._validate(DefaultsSpec, data.get("defaults"), ("defaults",))
        toggles = None
        if defaults is not None:
            self._check_from(defaults.from_, ("defaults", "from"))
            if defaults.toggles is not None:
                toggles = self._callable(defaults.toggles, ("defaults", "toggles"))
        entity_types = self._entity_types(data.get("entities"))
        events = self._events(data.get("events"), defaults, entity_types)
        if defaults is None or entity_types is None or events is None:
            return None
        self._check_task_names(events)
        return Registry(
            source=self.doc.filename,
            version=SUPPORTED_VERSIONS[-1],
            defaults=defaults,
            entity_types=entity_types,
            events=events,
            toggles=toggles,
            _context_refs=tuple(self.context_refs),
        )

    # -- schema --

    def _validate(self, model: type[M], value: Any, path: Key) -> M | None:
        if value is None and path in self.doc.values:
            self.problem(path, "is empty", at_key=True)
            return None
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            for error in exc.errors():
                self._schema_error(model, path, error)
            return None

    def _schema_error(self, model: type[_Spec], path: Key, error: Any) -> None:
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        where = (*path, *loc)
        dotted = ".".join(str(p) for p in where)
        kind = error["type"]
        if kind == "extra_forbidden":
            fields = [f.alias or name for name, f in model.model_fields.items()]
            self._unknown_field(where, str(loc[-1]), fields)
        elif kind == "missing":
            self.problem(
                where[:-1],
                f"{'.'.join(map(str, where[:-1]))}: missing required field '{loc[-1]}'",
                at_key=True,
            )
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            self.problem(where, f"{dotted}: {message}")

    def _unknown_field(self, path: Key, name: str, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        parent = ".".join(str(p) for p in path[:-1]) or "registry"
        self.problem(path, f"{parent}: unknown field '{name}'", hint=hint, at_key=True)

    # -- entities --

    def _entity_types(self, raw: Any) -> dict[str, EntityType] | None:
        if not isinstance(raw, dict):
            if raw is not None or ("entities",) in self.doc.values:
                self.problem(("entities",), "entities: must map type names to mapped classes")
            return None
        types: dict[str, EntityType] = {}
        for name, value in raw.items():
            path: Key = ("entities", name)
            if not _IDENTIFIER.match(name):
                self.problem(path, f"entity type '{name}' is not a valid name", at_key=True)
            spec = self._validate(
                EntitySpec, {"model": value} if isinstance(value, str) else value, path
            )
            if spec is None:
                continue
            model_path = path if isinstance(value, str) else (*path, "model")
            model = self._import(spec.model, model_path)
            if model is None:
                continue
            mapper = mapper_of(model)
            if mapper is None:
                self.problem(
                    model_path, f"entities.{name}: '{spec.model}' is not a SQLAlchemy mapped class"
                )
                continue
            if spec.key not in mapper.column_attrs:
                self.problem(
                    path,
                    f"entities.{name}: {model.__name__} has no column '{spec.key}' to load it by",
                    hint="set `key:` to its CUID column",
                )
                continue
            types[name] = EntityType(name, model, spec.key)
        return types

    # -- events --

    def _events(
        self, raw: Any, defaults: DefaultsSpec | None, types: dict[str, EntityType] | None
    ) -> dict[str, Event] | None:
        if not isinstance(raw, dict) or not raw:
            if raw is not None or ("events",) in self.doc.values:
                self.problem(("events",), "events: must map event keys to their definitions")
            return None
        events: dict[str, Event] = {}
        for key, value in raw.items():
            path: Key = ("events", key)
            if not _IDENTIFIER.match(key):
                self.problem(
                    path, f"event key '{key}' must be a name like 'finding_created'", at_key=True
                )
            spec = self._validate(EventSpec, value, path)
            if spec is None or defaults is None or types is None:
                continue
            event = self._event(key, spec, defaults, types, path)
            if event is not None:
                events[key] = event
        return events

    def _event(
        self,
        key: str,
        spec: EventSpec,
        defaults: DefaultsSpec,
        types: dict[str, EntityType],
        path: Key,
    ) -> Event | None:
        before = len(self.doc.problems)
        entities = self._event_entities(spec, types, path)
        names = {name for name, _ in entities}
        self._check_toggle(key, spec, defaults, names, path)
        if (spec.to is None) == (spec.recipients is None):
            self.problem(
                path, f"events.{key}: give exactly one of `to:` and `recipients:`", at_key=True
            )
        available = {*names, "session"}
        recipients = self._callee(spec.recipients, (*path, "recipients"), available)
        build = self._callee(spec.build, (*path, "build"), available)
        subject, to, data = self._event_expressions(key, spec, path)
        payload = self._payload(key, spec, path)
        if len(self.doc.problems) > before:
            return None
        event = Event(
            key=key,
            task_name=spec.task or f"emailevents.{key}",
            toggle=None if spec.toggle == ALWAYS else spec.toggle,
            template=spec.template,
            entities=tuple(entities),
            org=defaults.org if defaults.org in names else None,
            from_=defaults.from_,
            message_stream=defaults.message_stream,
            subject=subject,
            to=to,
            recipients=recipients,
            data=data,
            payload_model=BaseModel,
            build=build,
            context_names=frozenset(),
            spec=spec,
        )
        infos, context_names = self._check_references(event)
        if len(self.doc.problems) > before:
            return None
        return replace(
            event,
            payload_model=payload or _payload_model(event, infos),
            context_names=frozenset(context_names),
        )

    def _check_toggle(
        self, key: str, spec: EventSpec, defaults: DefaultsSpec, names: set[str], path: Key
    ) -> None:
        if spec.toggle == ALWAYS:
            return
        if not _TOGGLE_KEY.match(spec.toggle):
            self.problem(
                (*path, "toggle"),
                f"events.{key}.toggle: '{spec.toggle}' is not a toggle key",
                hint="a key like 'artifact_created', or 'always'",
            )
        elif defaults.org not in names:
            self.problem(
                (*path, "entities"),
                f"events.{key}: toggle '{spec.toggle}' needs the "
                f"organization, but the event has no entity named '{defaults.org}'",
                hint=f"add `{defaults.org}: <OrganizationType>` or use `toggle: always`",
            )

    def _event_expressions(
        self, key: str, spec: EventSpec, path: Key
    ) -> tuple[Expression | None, tuple[Expression, ...], tuple[Expression, ...]]:
        subject = None
        if spec.subject is not None:
            subject = self._expression("subject", spec.subject, (*path, "subject"))
        if isinstance(spec.to, str):
            to = [self._expression("to", spec.to, (*path, "to"))]
        else:
            to = [
                self._expression("to", src, (*path, "to", i)) for i, src in enumerate(spec.to or [])
            ]
        data = []
        for name, source in spec.data.items():
            if not _IDENTIFIER.match(name):
                self.problem(
                    (*path, "data", name),
                    f"events.{key}.data: '{name}' is not a template variable name",
                    at_key=True,
                )
            if name == "subject" and spec.subject is not None:
                self.problem(
                    (*path, "data", name),
                    f"events.{key}.data: 'subject' is already the event's subject",
                    at_key=True,
                )
            data.append(self._expression(f"data.{name}", source, (*path, "data", name)))
        return (
            subject,
            tuple(e for e in to if e is not None),
            tuple(e for e in data if e is not None),
        )

    def _check_references(self, event: Event) -> tuple[dict[str, PathInfo], set[str]]:
        """Check each path against its entity's mapper; collect the context names used."""
        entity_map = dict(event.entities)
        infos: dict[str, PathInfo] = {}
        context_names: set[str] = set()
        for expression in event.expressions:
            for ref in expression.template.paths:
                if ref.root in entity_map:
                    info = self._check_path(expression, ref, entity_map[ref.root])
                    if info is not None:
                        infos[str(ref)] = info
                else:
                    context_names.add(ref.root)
                    self.context_refs.append((event, expression, ref))
        return infos, context_names

    def _event_entities(
        self, spec: EventSpec, types: dict[str, EntityType], path: Key
    ) -> list[tuple[str, EntityType]]:
        entities = []
        for name, type_name in spec.entities.items():
            where: Key = (*path, "entities", name)
            if not _IDENTIFIER.match(name) or name in RESERVED_NAMES:
                reason = "is reserved" if name in RESERVED_NAMES else "is not a valid name"
                self.problem(where, f"entity name '{name}' {reason}", at_key=True)
            elif type_name not in types:
                close = difflib.get_close_matches(type_name, list(types), n=1)
                hint = f"did you mean '{close[0]}'?" if close else "declare it under `entities:`"
                self.problem(where, f"unknown entity type '{type_name}'", hint=hint)
            else:
                entities.append((name, types[type_name]))
        return entities

    def _expression(self, field_name: str, source: str, path: Key) -> Expression | None:
        where = self.doc.locate(path)
        # Quoted scalars start one column before their text.
        shift = 1 if where.style in ("'", '"') else 0
        anchor = Problem("", self.doc.filename, where.line, where.column + shift)
        try:
            template = parse(source)
        except ExpressionError as exc:
            self.doc.problems.append(
                Problem(
                    f"{field_name}: {exc.reason}",
                    self.doc.filename,
                    where.line,
                    where.column + shift + exc.offset if where.style != "|" else where.column,
                )
            )
            return None
        return Expression(field_name, template, anchor)

    def _check_path(self, expression: Expression, ref: Path, entity: EntityType) -> PathInfo | None:
        try:
            info = describe_path(entity.model, ref.attrs)
        except LookupError as exc:
            self.doc.problems.append(expression.problem(f"{{{ref}}}: {exc}", ref))
            return None
        if expression.field == "to" or ref is not expression.template.single_path:
            return info
        if info.kind in ("object", "collection"):
            self.doc.problems.append(
                expression.problem(
                    f"{{{ref}}} is a {info.target.__name__ if info.target else 'related object'} "
                    f"{'collection' if info.kind == 'collection' else 'object'}, not a value",
                    ref,
                    hint="name one of its columns, like {" + str(ref) + ".name}",
                )
            )
            return None
        return info

    def _payload(self, key: str, spec: EventSpec, path: Key) -> type[BaseModel] | None:
        if spec.payload is None:
            return None
        cls = self._import(spec.payload, (*path, "payload"))
        if cls is not None and not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            self.problem(
                (*path, "payload"),
                f"events.{key}.payload: '{spec.payload}' is not a pydantic model class",
            )
            return None
        return cls

    # -- references --

    def _import(self, ref: str, path: Key) -> Any:
        try:
            return import_ref(ref)
        except LookupError as exc:
            self.problem(path, f"{'.'.join(map(str, path))}: {exc}")
            return None

    def _callable(self, ref: str, path: Key) -> Callable[..., Any] | None:
        obj = self._import(ref, path)
        if obj is not None and not callable(obj):
            self.problem(path, f"{'.'.join(map(str, path))}: '{ref}' is not callable")
            return None
        return obj  # type: ignore[no-any-return]

    def _callee(self, ref: str | None, path: Key, available: set[str]) -> Callee | None:
        if ref is None:
            return None
        func = self._callable(ref, path)
        if func is None:
            return None
        try:
            return Callee.bind(func, available, f"'{ref}'")
        except TypeError as exc:
            self.problem(path, f"{'.'.join(map(str, path))}: {exc}")
            return None

    def _check_from(self, value: str, path: Key) -> None:
        try:
            parse_address(value)
        except AddressError as exc:
            self.problem(
                path, f"defaults.from: {exc}", hint="like 'Acme <notifications@acme.test>'"
            )

    def _check_task_names(self, events: dict[str, Event]) -> None:
        seen: dict[str, str] = {}
        for event in events.values():
            path: Key = ("events", event.key, "task")
            if not _TASK_NAME.match(event.task_name):
                self.problem(
                    path, f"events.{event.key}.task: '{event.task_name}' is not a valid task name"
                )
            elif event.task_name in seen:
                self.problem(
                    path,
                    f"events.{event.key}.task: '{event.task_name}' is already the "
                    f"task of event '{seen[event.task_name]}'",
                )
            seen.setdefault(event.task_name, event.key)


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in ("str", "int", "list[str]") or "[" in part)


def _payload_model(event: Event, infos: Mapping[str, PathInfo]) -> type[BaseModel]:
    """The pydantic model a generated event validates its TemplateModel with.

    A value that is exactly one path to a column gets the column's type (optional when the column
    or a relationship on the way is nullable); any other single value must be JSON; text is str.
    """
    fields: dict[str, Any] = {}
    if event.subject is not None:
        fields["subject"] = (str, Field(min_length=1))
    for expression in event.data:
        name = expression.field.removeprefix("data.")
        single = expression.template.single_path
        if single is None:
            fields[name] = (str, ...)
            continue
        info = infos.get(str(single))
        if info is not None and info.kind == "column" and info.python_type is not None:
            annotation: Any = info.python_type
            fields[name] = (annotation | None if info.nullable else annotation, ...)
        else:
            fields[name] = (JsonValue, ...)
    extra: Literal["allow", "forbid"] = "allow" if event.build else "forbid"
    model: type[BaseModel] = create_model(
        f"{_camel(event.key)}TemplateModel",
        __config__=ConfigDict(extra=extra, frozen=True),
        **fields,
    )
    return model


def _camel(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))
