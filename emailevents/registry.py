"""``events.yaml`` -> a checked, compiled :class:`Registry`.

Loading reports every problem at once, each with file:line:column. Everything is resolved here,
once: entity classes, ``module:attr`` callables, expressions (checked against the SQLAlchemy
mappers) and one pydantic payload model per event. Nothing is imported or parsed per message.
"""

from __future__ import annotations

import difflib
import inspect
import keyword
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
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

from .addresses import AddressTemplate, compile_address, format_address, parse_address
from .errors import ExpressionError, Problem, RegistryError
from .expressions import Path, Template, parse
from .introspect import (
    Callee,
    PathError,
    PathInfo,
    check_value_path,
    describe_path,
    import_ref,
    mapper_of,
    parse_ref,
)
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
_EXPRESSION_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
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

# Stand-ins for required event fields in error, so the rest of the event is still checked.
_EVENT_PLACEHOLDERS = {"toggle": "always", "template": "placeholder", "entities": {}}

# What to write instead, for the fields people most often get wrong.
_FIELD_HINTS = {
    "version": f"write `version: {SUPPORTED_VERSIONS[-1]}`",
    "defaults": "at least `from:`, the Postmark From address",
    "entities": "map entity type names to mapped classes, like `User: myapp.models:User`",
    "events": "map event keys to their definitions",
    "from": "like 'Acme <notifications@acme.test>'",
    "toggle": "an org email-settings key like 'artifact_created', or `always`",
    "template": "a Postmark TemplateId (a number) or TemplateAlias (a string)",
    "model": "a mapped class, like 'myapp.models:User'",
    "to": "an expression like '{user.email}', or a list of them",
}
_EVENT_FIELD_HINTS = {
    **_FIELD_HINTS,
    "entities": "the CUIDs emit() takes, in order, like `{user: User, org: Organization}`",
}


# --- the compiled registry ----------------------------------------------------------------


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

    @property
    def entity_names(self) -> tuple[str, ...]:
        """The names ``emit()`` takes, in order (as declared: known without importing)."""
        return tuple(self.spec.entities)

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
                problems.append(expression.problem(message, path, hint=hint, code="EE024"))
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
                    problems.append(_path_problem(expression, path, exc))
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
        problems = doc.problems or [Problem("the registry could not be compiled", filename)]
        raise RegistryError(sorted(problems, key=lambda p: (p.line, p.column)))
    return registry


# --- compiling ----------------------------------------------------------------------------


class _Compiler:
    """Checks a document section by section, collecting every problem.

    A mistake is reported once, where it is written: what depends on a broken part (an event
    using an entity type whose import failed, say) is skipped rather than reported again.

    With ``resolve=False`` nothing is imported: importing a ``module:attr`` reference runs its
    module's top-level code, which a review of the registry must not do. References are checked
    as written, and left unresolved like broken ones, so what needs them (attribute paths against
    the mappers, callables' signatures, payload classes) is not checked; the events compiled lack
    their entity classes, callables and payload class, and no registry is built.
    """

    def __init__(self, doc: Document, *, resolve: bool = True) -> None:
        self.doc = doc
        self.resolve = resolve
        self.context_refs: list[tuple[Event, Expression, Path]] = []
        self.from_address = ""
        """``defaults.from`` as sent: the name quoted by the standard library."""
        # Fields of a section that were in error (and left out, to check the rest).
        self.invalid: dict[Key, frozenset[str]] = {}

    def problem(
        self, path: Key, message: str, *, code: str, hint: str = "", at_key: bool = False
    ) -> None:
        """Report ``message`` at ``path``; ``code`` is its stable lint code (docs/lint.md)."""
        self.doc.problems.append(
            self.doc.problem(path, message, hint=hint, at_key=at_key, code=code)
        )

    def compile(self) -> Registry | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.problem(
                (),
                "the registry must be a mapping with version, defaults, entities, events",
                code="EE007",
            )
            return None
        for key in data:
            if key not in _TOP_LEVEL:
                self._unknown_field((key,), key, _TOP_LEVEL)
        for key in _TOP_LEVEL:
            if key not in data:
                self.problem(
                    (), f"missing required section '{key}'", hint=_FIELD_HINTS[key], code="EE006"
                )
        version = data.get("version")
        if (
            "version" in data
            and (type(version) is not int or version not in SUPPORTED_VERSIONS)
            and not self.doc.is_broken(("version",))
        ):
            self.problem(
                ("version",),
                f"unsupported version {version!r}",
                hint=f"this emailevents reads version {SUPPORTED_VERSIONS[-1]}",
                code="EE008",
            )
        defaults, toggles = self._defaults(data)
        types = self._entity_types(data.get("entities"))
        specs = self._event_specs(data.get("events"))
        events: dict[str, Event] = {}
        org = defaults.org if defaults is not None else _raw_org(data.get("defaults"))
        for key, spec in (specs or {}).items():
            event = self._event(key, spec, defaults, org, types)
            if event is not None:
                events[key] = event
        self._check_task_names(specs or {})
        # Unresolved, the events lack what a task run needs: no registry is built from them.
        if (
            self.doc.problems
            or defaults is None
            or types is None
            or specs is None
            or not self.resolve
        ):
            return None
        return Registry(
            source=self.doc.filename,
            version=SUPPORTED_VERSIONS[-1],
            defaults=defaults,
            entity_types={name: t for name, t in types.items() if t is not None},
            events=events,
            toggles=toggles,
            _context_refs=tuple(self.context_refs),
        )

    # -- schema --

    def _validate(
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
                    path, f"{_dotted(path)}: is empty", hint=expected, at_key=True, code="EE007"
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
        self, model: type[_Spec], path: Key, value: Any, error: Any, expected: str
    ) -> None:
        loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "missing":
            parent = (*path, *_located(value, loc[:-1]))
            name = str(loc[-1])
            hints = _EVENT_FIELD_HINTS if model is EventSpec else _FIELD_HINTS
            self.problem(
                parent,
                f"{_dotted(parent)}: missing required field '{name}'",
                hint=hints.get(name, ""),
                at_key=True,
                code="EE006",
            )
            return
        where = (*path, *_located(value, loc))
        if kind != "extra_forbidden" and self.doc.is_broken(where):
            return  # the value could not be read from the YAML, which is reported already
        if kind == "extra_forbidden":
            fields = [f.alias or name for name, f in model.model_fields.items()]
            self._unknown_field(where, str(where[-1]), fields)
        elif where == path and kind in ("model_type", "model_attributes_type", "dict_type"):
            self.problem(
                where,
                f"{_dotted(where)}: must be a mapping of fields, not {_kind(value)}",
                hint=expected,
                code="EE007",
            )
        elif unquoted := _unquoted_expression(error.get("input")):
            quoted = f'["{unquoted}"]' if isinstance(error.get("input"), list) else f'"{unquoted}"'
            example = f"`{where[-1]}: {quoted}`" if len(where) > len(path) else quoted
            self.problem(
                where,
                f"{_dotted(where)}: YAML reads {unquoted} unquoted as a mapping, not an expression",
                hint=f"quote expressions: {example}",
                code="EE007",
            )
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            hint = ""
            if kind != "value_error":  # our own validators' messages say what to write
                message = f"{message} (got {_kind(error.get('input'))})"
                hint = _FIELD_HINTS.get(str(where[-1]), "") if len(where) > len(path) else ""
            self.problem(where, f"{_dotted(where)}: {message}", hint=hint, code="EE007")

    def _unknown_field(self, path: Key, name: str, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        parent = _dotted(path[:-1]) or "registry"
        self.problem(
            path, f"{parent}: unknown field '{name}'", hint=hint, at_key=True, code="EE005"
        )

    # -- defaults --

    def _defaults(self, data: dict[str, Any]) -> tuple[DefaultsSpec | None, Any]:
        """The ``defaults:`` section and its ``toggles`` callable."""
        if "defaults" not in data:
            return None, None  # reported as a missing section
        defaults = self._validate(
            DefaultsSpec, data["defaults"], ("defaults",), placeholders={"from": ""}
        )
        if defaults is None:
            return None, None
        if "from" not in self.invalid.get(("defaults",), ()):
            self._check_from(defaults.from_, ("defaults", "from"))
        if defaults.toggles is None:
            return defaults, None
        return defaults, self._toggles(defaults.toggles, ("defaults", "toggles"))

    def _check_from(self, value: str, path: Key) -> None:
        try:
            self.from_address = format_address(*parse_address(value))
        except ValueError as exc:  # AddressError
            self.problem(path, f"defaults.from: {exc}", hint=_FIELD_HINTS["from"], code="EE009")

    def _toggles(self, ref: str, path: Key) -> Callable[..., bool] | None:
        func = self._callable(ref, path)
        if func is None:
            return None
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            return func  # a builtin or extension callable: trust it
        try:
            signature.bind(None, None, None)
        except TypeError:
            self.problem(
                path,
                f"defaults.toggles: '{ref}' cannot be called as (session, org, toggle_key)",
                hint=f"its signature is {signature}",
                code="EE014",
            )
            return None
        return func

    # -- entities --

    def _entity_types(self, raw: Any) -> dict[str, EntityType | None] | None:
        """The entity types, None for one that is declared but broken (already reported)."""
        if not isinstance(raw, dict):
            if (raw is not None or ("entities",) in self.doc.values) and not self.doc.is_broken(
                ("entities",)
            ):
                self.problem(
                    ("entities",),
                    "entities: must map entity type names to mapped classes",
                    hint=_FIELD_HINTS["entities"],
                    code="EE007",
                )
            return None
        return {name: self._entity_type(name, value) for name, value in raw.items()}

    def _entity_type(self, name: str, value: Any) -> EntityType | None:
        path: Key = ("entities", name)
        broken = False
        if not _IDENTIFIER.match(name):
            self.problem(
                path, f"entities: '{name}' is not a valid type name", at_key=True, code="EE010"
            )
            broken = True
        spec = self._validate(
            EntitySpec,
            {"model": value} if isinstance(value, str) else value,
            path,
            expected="'package.module:Class', or {model: 'package.module:Class', key: cuid}",
        )
        if spec is None:
            return None
        model_path = path if isinstance(value, str) else (*path, "model")
        model = self._import(spec.model, model_path)
        if model is None:
            return None
        mapper = mapper_of(model)
        if mapper is None:
            self.problem(
                model_path,
                f"{_dotted(model_path)}: '{spec.model}' is not a SQLAlchemy mapped class",
                code="EE013",
            )
            return None
        try:
            columns = list(mapper.column_attrs.keys())
        except sa.exc.SQLAlchemyError as exc:  # the mapper cannot be configured
            self.problem(
                model_path,
                f"{_dotted(model_path)}: SQLAlchemy cannot configure '{spec.model}'"
                f": {str(exc).splitlines()[0]}",
                code="EE015",
            )
            return None
        if spec.key not in columns and "key" not in self.invalid.get(path, ()):
            close = difflib.get_close_matches(spec.key, columns, n=1)
            written = isinstance(value, dict) and "key" in value
            self.problem(
                (*path, "key") if written else path,
                f"{_dotted(path)}: {model.__name__} has no column '{spec.key}' to load it by",
                hint=f"did you mean '{close[0]}'?"
                if close
                else "set `key:` to the column that holds its CUID",
                at_key=not written,
                code="EE016",
            )
            return None
        return None if broken else EntityType(name, model, spec.key)

    # -- events --

    def _event_specs(self, raw: Any) -> dict[str, EventSpec] | None:
        if not isinstance(raw, dict) or not raw:
            if (raw is not None or ("events",) in self.doc.values) and not self.doc.is_broken(
                ("events",)
            ):
                self.problem(
                    ("events",),
                    "events: must map event keys to their definitions",
                    hint="like `finding_created: {toggle: ..., template: ..., ...}`",
                    code="EE007",
                )
            return None
        specs: dict[str, EventSpec] = {}
        for key, value in raw.items():
            path: Key = ("events", key)
            if not _IDENTIFIER.match(key):
                self.problem(
                    path,
                    f"events: '{key}' is not an event key like 'finding_created'",
                    at_key=True,
                    code="EE010",
                )
            spec = self._validate(EventSpec, value, path, placeholders=_EVENT_PLACEHOLDERS)
            if spec is not None:
                specs[key] = spec
        return specs

    def _event(
        self,
        key: str,
        spec: EventSpec,
        defaults: DefaultsSpec | None,
        org: str,
        types: dict[str, EntityType | None] | None,
    ) -> Event | None:
        path: Key = ("events", key)
        before = len(self.doc.problems)
        invalid = self.invalid.get(path, frozenset())
        entities, names = self._event_entities(key, spec, types, path)
        if "entities" not in invalid:
            self._check_toggle(key, spec, org, names, path)
        if invalid & {"to", "recipients"}:
            pass  # reported already; which of the two was meant is not known
        elif spec.to is None and spec.recipients is None:
            self.problem(
                path,
                f"events.{key}: says nobody to send to",
                hint="give `to:` (expressions) or `recipients:` (a callable)",
                at_key=True,
                code="EE034",
            )
        elif spec.to is not None and spec.recipients is not None:
            self.problem(
                (*path, "recipients"),
                f"events.{key}: give either `to:` or `recipients:`, not both",
                at_key=True,
                code="EE035",
            )
        # With the entities in error, what the callables may take is not known.
        available = None if "entities" in invalid else {*names, "session"}
        recipients = self._callee(spec.recipients, (*path, "recipients"), available)
        build = self._callee(spec.build, (*path, "build"), available)
        subject, to, to_addresses, data = self._event_expressions(key, spec, path)
        payload = self._payload(key, spec, path)
        if payload is not None:
            self._check_payload_fields(key, payload, spec, path)
        infos, refs = self._check_references(
            [*([subject] if subject else []), *to, *data], dict(entities), names
        )
        if len(self.doc.problems) > before or defaults is None or types is None:
            return None
        event = Event(
            key=key,
            task_name=spec.task or f"emailevents.{key}",
            toggle=None if spec.toggle == ALWAYS else spec.toggle,
            template=spec.template,
            entities=tuple(entities),
            org=org if org in names else None,
            from_=self.from_address,
            message_stream=defaults.message_stream,
            subject=subject,
            to=to,
            to_addresses=to_addresses,
            recipients=recipients,
            data=data,
            payload_model=payload or _payload_model(key, subject, data, build, infos),
            build=build,
            context_names=frozenset(ref.root for _, ref in refs),
            spec=spec,
        )
        self.context_refs.extend((event, expression, ref) for expression, ref in refs)
        return event

    def _event_entities(
        self,
        key: str,
        spec: EventSpec,
        types: dict[str, EntityType | None] | None,
        path: Key,
    ) -> tuple[list[tuple[str, EntityType]], set[str]]:
        """The entities whose types resolved, and every validly declared entity name."""
        entities: list[tuple[str, EntityType]] = []
        names: set[str] = set()
        for name, type_name in spec.entities.items():
            where: Key = (*path, "entities", name)
            if name in RESERVED_NAMES or keyword.iskeyword(name) or not _IDENTIFIER.match(name):
                reason = (
                    "is reserved"
                    if name in RESERVED_NAMES
                    else "is a Python keyword, which emit() cannot take"
                    if keyword.iskeyword(name)
                    else "is not a valid name"
                )
                self.problem(
                    where,
                    f"events.{key}.entities: entity name '{name}' {reason}",
                    at_key=True,
                    code="EE010",
                )
                continue
            names.add(name)
            if types is None or (type_name in types and types[type_name] is None):
                continue  # the entity types are broken and already reported
            entity_type = types.get(type_name)
            if entity_type is None:
                close = difflib.get_close_matches(type_name, list(types), n=1)
                hint = f"did you mean '{close[0]}'?" if close else "declare it under `entities:`"
                self.problem(
                    where,
                    f"events.{key}.entities.{name}: unknown entity type '{type_name}'",
                    hint=hint,
                    code="EE011",
                )
                continue
            entities.append((name, entity_type))
        return entities, names

    def _check_toggle(
        self, key: str, spec: EventSpec, org: str, names: set[str], path: Key
    ) -> None:
        if spec.toggle == ALWAYS:
            return
        if not _TOGGLE_KEY.match(spec.toggle):
            self.problem(
                (*path, "toggle"),
                f"events.{key}.toggle: '{spec.toggle}' is not a toggle key",
                hint=_FIELD_HINTS["toggle"],
                code="EE030",
            )
        elif org not in names:
            self.problem(
                (*path, "entities"),
                f"events.{key}: toggle '{spec.toggle}' needs the "
                f"organization, but the event has no entity named '{org}'",
                hint=f"add `{org}: <OrganizationType>` or use `toggle: always`",
                code="EE031",
            )

    def _event_expressions(
        self, key: str, spec: EventSpec, path: Key
    ) -> tuple[
        Expression | None,
        tuple[Expression, ...],
        tuple[AddressTemplate, ...],
        tuple[Expression, ...],
    ]:
        subject = None
        if spec.subject is not None:
            subject = self._expression("subject", spec.subject, (*path, "subject"))
        if isinstance(spec.to, str):
            to = [self._expression("to", spec.to, (*path, "to"))]
        else:
            to = [
                self._expression("to", src, (*path, "to", i)) for i, src in enumerate(spec.to or [])
            ]
        addresses = [self._address(e) for e in to if e is not None]
        data = []
        for name, source in spec.data.items():
            where: Key = (*path, "data", name)
            if not _IDENTIFIER.match(name):
                self.problem(
                    where,
                    f"events.{key}.data: '{name}' is not a template variable name",
                    hint="letters, digits and '_', starting with a letter",
                    at_key=True,
                    code="EE010",
                )
            elif name == "subject" and spec.subject is not None:
                self.problem(
                    where,
                    f"events.{key}.data: 'subject' is already the event's subject",
                    at_key=True,
                    code="EE043",
                )
            data.append(self._expression(f"data.{name}", source, where))
        return (
            subject,
            tuple(e for e in to if e is not None),
            tuple(a for a in addresses if a is not None),
            tuple(e for e in data if e is not None),
        )

    def _expression(self, field_name: str, source: str, path: Key) -> Expression | None:
        where = self.doc.locate(path)
        exact = where.text_column is not None
        column = where.text_column or where.column
        try:
            template = parse(source)
        except ExpressionError as exc:
            self.doc.problems.append(
                Problem(
                    f"{_dotted(path)}: {exc.reason}",
                    self.doc.filename,
                    where.line,
                    column + exc.offset if exact else column,
                    code="EE020",
                )
            )
            return None
        anchor = Problem("", self.doc.filename, where.line, column)
        return Expression(field_name, template, anchor, label=_dotted(path), exact=exact)

    def _address(self, expression: Expression) -> AddressTemplate | None:
        """``to:`` must be ``ADDRESS`` or ``NAME <ADDRESS>`` by its literal text alone."""
        try:
            return compile_address(expression.template)
        except ExpressionError as exc:
            self.doc.problems.append(
                expression.problem(
                    exc.reason,
                    offset=exc.offset,
                    hint="the name part may hold anything; the address part only paths and "
                    "address characters",
                    code="EE039",
                )
            )
            return None

    def _check_references(
        self,
        expressions: list[Expression],
        entity_map: dict[str, EntityType],
        names: set[str],
    ) -> tuple[dict[str, PathInfo], list[tuple[Expression, Path]]]:
        """Check each path against its entity's mapper; collect the paths to context values."""
        infos: dict[str, PathInfo] = {}
        context_refs: list[tuple[Expression, Path]] = []
        for expression in expressions:
            for ref in expression.template.paths:
                entity = entity_map.get(ref.root)
                if entity is not None:
                    info = self._check_path(expression, ref, entity)
                    if info is not None:
                        infos[str(ref)] = info
                elif ref.root not in names:  # a declared entity of a broken type is not context
                    context_refs.append((expression, ref))
        return infos, context_refs

    def _check_path(self, expression: Expression, ref: Path, entity: EntityType) -> PathInfo | None:
        try:
            info = describe_path(entity.model, ref.attrs)
        except PathError as exc:
            self.doc.problems.append(_path_problem(expression, ref, exc))
            return None
        if info.kind not in ("object", "collection") or info.target is None:
            return info
        noun = info.target.__name__
        what = (
            f"a collection of {noun}" if info.kind == "collection" else f"an object of type {noun}"
        )
        whole_recipient = expression.field == "to" and ref is expression.template.single_path
        if whole_recipient:
            if hasattr(info.target, "email"):
                return info
            self.doc.problems.append(
                expression.problem(
                    f"{{{ref}}} is {what}, and {noun} has no `email` attribute to send to",
                    ref,
                    hint="name the address, like {" + str(ref) + ".email}",
                    code="EE023",
                )
            )
            return None
        column = _a_column(info.target)
        self.doc.problems.append(
            expression.problem(
                f"{{{ref}}} is {what}, not a value",
                ref,
                hint=f"name one of its columns, like {{{ref}.{column}}}"
                if info.kind == "object" and column
                else "use a `build:` callable to turn it into values",
                code="EE022",
            )
        )
        return None

    def _payload(self, key: str, spec: EventSpec, path: Key) -> type[BaseModel] | None:
        if spec.payload is None:
            return None
        cls = self._import(spec.payload, (*path, "payload"))
        if cls is not None and not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            self.problem(
                (*path, "payload"),
                f"events.{key}.payload: '{spec.payload}' is not a pydantic model class",
                code="EE013",
            )
            return None
        return cls

    def _check_payload_fields(
        self, key: str, payload: type[BaseModel], spec: EventSpec, path: Key
    ) -> None:
        """A payload class must take every value the event builds, and need none it lacks."""
        fields = payload.model_fields
        accepted = set(fields) | {f.alias for f in fields.values() if f.alias}
        provided = [*(["subject"] if spec.subject is not None else []), *spec.data]
        if payload.model_config.get("extra") != "allow":
            for name in provided:
                if name not in accepted:
                    where = (*path, "data", name) if name in spec.data else (*path, "subject")
                    self.problem(
                        where,
                        f"events.{key}: {payload.__name__} has no field '{name}', so its "
                        "value would be dropped from the TemplateModel",
                        hint=f"add `{name}` to {payload.__name__}, or allow extra fields",
                        at_key=True,
                        code="EE040",
                    )
        if spec.build is None:  # what build: returns is known only when it runs
            for name, info in fields.items():
                if info.is_required() and name not in provided and info.alias not in provided:
                    self.problem(
                        (*path, "payload"),
                        f"events.{key}.payload: {payload.__name__} requires '{info.alias or name}'"
                        ", which the event's subject and data do not provide",
                        hint=f"add `{info.alias or name}:` under data",
                        code="EE041",
                    )

    def _check_task_names(self, specs: Mapping[str, EventSpec]) -> None:
        seen: dict[str, str] = {}
        for key, spec in specs.items():
            path: Key = ("events", key, "task")
            if "task" in self.invalid.get(path[:-1], ()):
                continue
            if spec.task is not None and not _TASK_NAME.match(spec.task):
                self.problem(
                    path,
                    f"events.{key}.task: '{spec.task}' is not a valid task name",
                    hint="dotted names, like 'tasks.email.on_finding_created'",
                    code="EE036",
                )
                continue
            if spec.task is None and not _IDENTIFIER.match(key):
                continue  # the key is reported already
            name = spec.task or f"emailevents.{key}"
            if name in seen:
                self.problem(
                    path if spec.task else path[:-1],
                    f"events.{key}: task '{name}' is already the task of event '{seen[name]}'",
                    hint="each event needs a task name of its own",
                    at_key=spec.task is None,
                    code="EE037",
                )
            seen.setdefault(name, key)

    # -- references --

    def _import(self, ref: str, path: Key) -> Any:
        """The object ``ref`` names; None when it is broken (reported) or not resolved."""
        try:
            if not self.resolve:
                parse_ref(ref)
                return None
            return import_ref(ref)
        except LookupError as exc:
            self.problem(path, f"{_dotted(path)}: {exc}", code="EE012")
            return None

    def _callable(self, ref: str, path: Key) -> Callable[..., Any] | None:
        obj = self._import(ref, path)
        if obj is not None and not callable(obj):
            self.problem(path, f"{_dotted(path)}: '{ref}' is not callable", code="EE013")
            return None
        return obj  # type: ignore[no-any-return]

    def _callee(self, ref: str | None, path: Key, available: set[str] | None) -> Callee | None:
        if ref is None:
            return None
        func = self._callable(ref, path)
        if func is None or available is None:
            return None
        try:
            return Callee.bind(func, available, f"'{ref}'")
        except TypeError as exc:
            self.problem(path, f"{_dotted(path)}: {exc}", code="EE014")
            return None


def _path_problem(expression: Expression, ref: Path, exc: PathError) -> Problem:
    """The problem of ``ref``, pointing at the attribute at fault: '{' root '.' attr '.' ..."""
    before = [ref.root, *ref.attrs[: exc.index]]
    offset = ref.offset + 1 + sum(len(name) + 1 for name in before)
    return expression.problem(f"{{{ref}}}: {exc}", ref, offset=offset, code=exc.code, hint=exc.hint)


def _dotted(path: Key) -> str:
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


def _raw_org(defaults: Any) -> str:
    """``defaults.org`` as written, for checking events when ``defaults`` itself is invalid."""
    org = defaults.get("org") if isinstance(defaults, dict) else None
    return org if isinstance(org, str) else str(DefaultsSpec.model_fields["org"].default)


def _payload_model(
    key: str,
    subject: Expression | None,
    data: tuple[Expression, ...],
    build: Callee | None,
    infos: Mapping[str, PathInfo],
) -> type[BaseModel]:
    """The pydantic model a generated event validates its TemplateModel with.

    A value that is exactly one path to a column gets the column's type (optional when the column
    or a relationship on the way is nullable); any other single value must be JSON; text is str.
    Template variables may be any name, so a name that is also a BaseModel attribute (`json`,
    `copy`, `model_config`) gets a field name of its own and the variable name as its alias.
    """
    fields: dict[str, Any] = {}
    if subject is not None:
        fields["subject"] = (str, Field(min_length=1))
    for expression in data:
        name = expression.field.removeprefix("data.")
        single = expression.template.single_path
        annotation: Any = str
        if single is not None:
            info = infos.get(str(single))
            if info is not None and info.kind == "column" and info.python_type is not None:
                annotation = info.python_type | None if info.nullable else info.python_type
            else:
                annotation = JsonValue
        attribute = name
        while hasattr(BaseModel, attribute) or attribute in fields:
            attribute = f"{attribute}_"
        fields[attribute] = (annotation, Field(alias=name) if attribute != name else ...)
    extra: Literal["allow", "forbid"] = "allow" if build else "forbid"
    model: type[BaseModel] = create_model(
        f"{_camel(key)}TemplateModel",
        __config__=ConfigDict(extra=extra, frozen=True, protected_namespaces=()),
        **fields,
    )
    return model


def _a_column(cls: type) -> str | None:
    """A column worth suggesting: the first one that is not a key."""
    mapper = mapper_of(cls)
    if mapper is None:
        return None
    for name, prop in mapper.column_attrs.items():
        column = prop.columns[0]
        if not getattr(column, "primary_key", False) and not getattr(column, "foreign_keys", None):
            return str(name)
    return None


def _camel(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))
