"""Sample values for an event's TemplateModel, built without a database: a value that is one
column gets a sample of the column's type, text shows its paths as ``<path>``.

``emailevents preview --sample`` shows them; lint checks ``payload:`` classes and templates
against them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .expressions import Path
from .introspect import PathError, PathInfo, describe_path
from .registry import Event, Expression
from .tokens import LINK_VARIABLES

__all__ = ["sample_recipients", "sample_template_model", "sample_values"]

_SAMPLES: tuple[tuple[type, Callable[[str], Any]], ...] = (
    (bool, lambda _: True),
    (int, lambda _: 1),
    (float, lambda _: 1.5),
    (decimal.Decimal, lambda _: decimal.Decimal("1.50")),
    (dt.datetime, lambda _: dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)),
    (dt.date, lambda _: dt.date(2025, 1, 31)),
    (dt.time, lambda _: dt.time(9, 30)),
    (dt.timedelta, lambda _: dt.timedelta(hours=1)),
    (uuid.UUID, lambda _: uuid.UUID(int=1)),
    (str, lambda path: f"<{path}>"),
)


def _sample_of(event: Event, ref: Path) -> tuple[Any, bool]:
    """A sample value for ``ref`` of the type its column holds; whether that type is known."""
    entity = dict(event.entities).get(ref.root)
    info: PathInfo | None = None
    if entity is not None:
        try:
            info = describe_path(entity.model, ref.attrs)
        except PathError:
            info = None
    python_type = info.python_type if info is not None and info.kind == "column" else None
    if python_type is not None:
        if issubclass(python_type, enum.Enum):
            members = list(python_type)
            if members:
                return members[0], True
        for cls, make in _SAMPLES:
            if issubclass(python_type, cls):
                return make(str(ref)), True
    return f"<{ref}>", False


def _sample_text(expression: Expression) -> str:
    return "".join(
        part if isinstance(part, str) else f"<{part}>" for part in expression.template.parts
    )


def sample_values(event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
    """The subject and data with sample values; and those whose type is known, by name."""
    model: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    if event.subject is not None:
        model["subject"] = typed["subject"] = _sample_text(event.subject)
    for expression in event.data:
        name = expression.field.removeprefix("data.")
        single = expression.template.single_path
        if single is None:
            model[name] = typed[name] = _sample_text(expression)
            continue
        value, known = _sample_of(event, single)
        model[name] = value
        if known:
            typed[name] = value
    return model, typed


def sample_recipients(event: Event) -> list[str]:
    """The event's ``to:`` with each path as ``<path>``, or where ``recipients:`` come from."""
    if event.recipients is not None:
        return [f"<whoever {event.spec.recipients} returns>"]
    return [_sample_text(expression) for expression in event.to]


def sample_template_model(event: Event) -> tuple[dict[str, Any], list[str]]:
    """A TemplateModel of sample values for ``event``, built without a database.

    Each value that is one column gets a sample of the column's type (strings read like
    ``<org.name>``), text gets its paths as ``<path>``; the result goes through the event's
    payload model as a task's would. Returns the model and notes on what could not be shown.
    """
    model, _ = sample_values(event)
    notes: list[str] = []
    if event.build is not None:
        notes.append(
            f"build: {event.spec.build} adds values when the task runs; they are not shown"
        )
        for name, info in event.payload_model.model_fields.items():
            alias = info.alias or name
            if info.is_required() and alias not in model:
                model[alias] = f"<build: {alias}>"
    # Each recipient's own links, added after validation as the task adds them.
    links = {name: f"<{name}>" for name in LINK_VARIABLES} if event.category is not None else {}
    try:
        validated = event.payload_model.model_validate(model)
        return {**validated.model_dump(mode="json", by_alias=True), **links}, notes
    except ValidationError as exc:
        notes.append(
            f"{event.payload_model.__name__} rejects the samples ({exc.error_count()} errors); "
            "shown unvalidated"
        )
        return {**json.loads(json.dumps(model, default=str)), **links}, notes
