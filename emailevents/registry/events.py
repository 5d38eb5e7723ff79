"""The ``events:`` section: each event's entities, toggle, recipients, values and task name."""

from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Mapping
from typing import Any

from ..yamlnodes import Key
from .categories import Categories, event_category
from .checker import Checker
from .defaults import Defaults
from .digests import compile_digest
from .entities import EntityTypes
from .model import DEFAULT_BATCH, BatchSetting, EntityType, Event, Throttle
from .payload import compile_payload, payload_model
from .specs import (
    ALWAYS,
    EVENT_PLACEHOLDERS,
    FIELD_HINTS,
    IDENTIFIER,
    RESERVED_NAMES,
    EventSpec,
)
from .values import check_paths, compile_values

__all__ = ["check_task_names", "compile_event", "compile_event_specs"]

_TOGGLE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def compile_event_specs(checker: Checker, raw: Any) -> dict[str, EventSpec] | None:
    """Each event as written; an event whose fields are in error keeps those that are not."""
    if not isinstance(raw, dict) or not raw:
        if (raw is not None or ("events",) in checker.doc.values) and not checker.doc.is_broken(
            ("events",)
        ):
            checker.problem(
                ("events",),
                "events: must map event keys to their definitions",
                hint="like `finding_created: {toggle: ..., template: ..., ...}`",
                code="EE007",
            )
        return None
    specs: dict[str, EventSpec] = {}
    for key, value in raw.items():
        path: Key = ("events", key)
        if not IDENTIFIER.match(key):
            checker.problem(
                path,
                f"events: '{key}' is not an event key like 'finding_created'",
                at_key=True,
                code="EE010",
            )
        spec = checker.validate(EventSpec, value, path, placeholders=EVENT_PLACEHOLDERS)
        if spec is not None:
            specs[key] = spec
    return specs


def compile_event(
    checker: Checker,
    key: str,
    spec: EventSpec,
    defaults: Defaults,
    types: EntityTypes | None,
    *,
    categories: Categories,
    throttle: Throttle | None = None,
    batch: BatchSetting | None = DEFAULT_BATCH,
) -> Event | None:
    """The event, compiled; None when it has problems of its own, or what it needs has."""
    path: Key = ("events", key)
    before = checker.count
    invalid = checker.invalid.get(path, frozenset())
    entities, names = _event_entities(checker, key, spec, types, path)
    if "entities" not in invalid:
        _check_toggle(checker, key, spec, defaults.org, names)
    if not invalid & {"to", "recipients"}:  # else which of the two was meant is not known
        _check_recipients_given(checker, key, spec, path)
    # With the entities in error, what the callables may take is not known.
    available = None if "entities" in invalid else {*names, "session"}
    recipients = checker.callee(spec.recipients, (*path, "recipients"), available)
    build = checker.callee(spec.build, (*path, "build"), available)
    values = compile_values(checker, key, spec, path)
    payload = compile_payload(checker, key, spec, path)
    infos, context_paths = check_paths(checker, values, dict(entities), names)
    category = event_category(checker, key, spec, categories)
    digest = compile_digest(checker, key, spec, path, dict(entities), names)
    if checker.count > before or defaults.spec is None or types is None:
        return None
    return Event(
        key=key,
        task_name=spec.task or f"emailevents.{key}",
        toggle=None if spec.toggle == ALWAYS else spec.toggle,
        template=spec.template,
        entities=tuple(entities),
        org=defaults.org if defaults.org in names else None,
        from_=defaults.from_address,
        message_stream=defaults.spec.message_stream,
        subject=values.subject,
        to=values.to,
        to_addresses=values.to_addresses,
        recipients=recipients,
        data=values.data,
        payload_model=payload or payload_model(key, values, build, infos),
        build=build,
        context_names=frozenset(path.root for path in context_paths),
        spec=spec,
        category=category,
        critical=spec.critical,
        throttle=throttle,
        digest=digest,
        batch=batch,
    )


def _event_entities(
    checker: Checker,
    key: str,
    spec: EventSpec,
    types: EntityTypes | None,
    path: Key,
) -> tuple[list[tuple[str, EntityType]], set[str]]:
    """The entities whose types resolved, and every validly declared entity name."""
    entities: list[tuple[str, EntityType]] = []
    names: set[str] = set()
    for name, type_name in spec.entities.items():
        where: Key = (*path, "entities", name)
        reason = _invalid_entity_name(name)
        if reason:
            checker.problem(
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
            checker.problem(
                where,
                f"events.{key}.entities.{name}: unknown entity type '{type_name}'",
                hint=hint,
                code="EE011",
            )
            continue
        entities.append((name, entity_type))
    return entities, names


def _invalid_entity_name(name: str) -> str:
    """Why ``name`` cannot be a name ``emit()`` takes; empty when it can."""
    if name in RESERVED_NAMES:
        return "is reserved"
    if keyword.iskeyword(name):
        return "is a Python keyword, which emit() cannot take"
    if not IDENTIFIER.match(name):
        return "is not a valid name"
    return ""


def _check_toggle(checker: Checker, key: str, spec: EventSpec, org: str, names: set[str]) -> None:
    """A toggle key, and the organization entity its setting is looked up for."""
    if spec.toggle == ALWAYS:
        return
    path: Key = ("events", key)
    if not _TOGGLE_KEY.match(spec.toggle):
        checker.problem(
            (*path, "toggle"),
            f"events.{key}.toggle: '{spec.toggle}' is not a toggle key",
            hint=FIELD_HINTS["toggle"],
            code="EE030",
        )
    elif org not in names:
        checker.problem(
            (*path, "entities"),
            f"events.{key}: toggle '{spec.toggle}' needs the "
            f"organization, but the event has no entity named '{org}'",
            hint=f"add `{org}: <OrganizationType>` or use `toggle: always`",
            code="EE031",
        )


def _check_recipients_given(checker: Checker, key: str, spec: EventSpec, path: Key) -> None:
    """Exactly one of ``to:`` and ``recipients:``."""
    if spec.to is None and spec.recipients is None:
        checker.problem(
            path,
            f"events.{key}: says nobody to send to",
            hint="give `to:` (expressions) or `recipients:` (a callable)",
            at_key=True,
            code="EE034",
        )
    elif spec.to is not None and spec.recipients is not None:
        checker.problem(
            (*path, "recipients"),
            f"events.{key}: give either `to:` or `recipients:`, not both",
            at_key=True,
            code="EE035",
        )


def check_task_names(checker: Checker, specs: Mapping[str, EventSpec]) -> None:
    """Each event's task name is valid and its own."""
    seen: dict[str, str] = {}
    for key, spec in specs.items():
        path: Key = ("events", key, "task")
        if "task" in checker.invalid.get(path[:-1], ()):
            continue
        if spec.task is not None and not _TASK_NAME.match(spec.task):
            checker.problem(
                path,
                f"events.{key}.task: '{spec.task}' is not a valid task name",
                hint="dotted names, like 'tasks.email.on_finding_created'",
                code="EE036",
            )
            continue
        if spec.task is None and not IDENTIFIER.match(key):
            continue  # the key is reported already
        name = spec.task or f"emailevents.{key}"
        if name in seen:
            checker.problem(
                path if spec.task else path[:-1],
                f"events.{key}: task '{name}' is already the task of event '{seen[name]}'",
                hint="each event needs a task name of its own",
                at_key=spec.task is None,
                code="EE037",
            )
        seen.setdefault(name, key)
