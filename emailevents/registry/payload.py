"""An event's TemplateModel: its ``payload:`` class checked against the values the event builds,
or a pydantic model generated from those values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model

from ..introspect import Callee, PathInfo
from ..yamlnodes import Key
from .checker import Checker
from .specs import EventSpec
from .values import Values

__all__ = ["compile_payload", "payload_model"]


def compile_payload(
    checker: Checker, key: str, spec: EventSpec, path: Key
) -> type[BaseModel] | None:
    """The event's ``payload:`` class, checked against its values; None without one."""
    if spec.payload is None:
        return None
    cls = checker.reference(spec.payload, (*path, "payload"))
    if cls is None:
        return None
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        checker.problem(
            (*path, "payload"),
            f"events.{key}.payload: '{spec.payload}' is not a pydantic model class",
            code="EE013",
        )
        return None
    _check_payload_fields(checker, key, cls, spec, path)
    return cls


def _check_payload_fields(
    checker: Checker, key: str, payload: type[BaseModel], spec: EventSpec, path: Key
) -> None:
    """A payload class must take every value the event builds, and need none it lacks."""
    fields = payload.model_fields
    accepted = set(fields) | {f.alias for f in fields.values() if f.alias}
    provided = [*(["subject"] if spec.subject is not None else []), *spec.data]
    if payload.model_config.get("extra") != "allow":
        for name in provided:
            if name not in accepted:
                where = (*path, "data", name) if name in spec.data else (*path, "subject")
                checker.problem(
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
                checker.problem(
                    (*path, "payload"),
                    f"events.{key}.payload: {payload.__name__} requires '{info.alias or name}'"
                    ", which the event's subject and data do not provide",
                    hint=f"add `{info.alias or name}:` under data",
                    code="EE041",
                )


def payload_model(
    key: str, values: Values, build: Callee | None, infos: Mapping[str, PathInfo]
) -> type[BaseModel]:
    """The pydantic model a generated event validates its TemplateModel with.

    A value that is exactly one path to a column gets the column's type (optional when the column
    or a relationship on the way is nullable); any other single value must be JSON; text is str.
    Template variables may be any name, so a name that is also a BaseModel attribute (`json`,
    `copy`, `model_config`) gets a field name of its own and the variable name as its alias.
    """
    fields: dict[str, Any] = {}
    if values.subject is not None:
        fields["subject"] = (str, Field(min_length=1))
    for expression in values.data:
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


def _camel(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))
