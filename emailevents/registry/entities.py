"""The ``entities:`` section: each entity type's mapped class, and the column it is loaded by."""

from __future__ import annotations

import difflib
from typing import Any

import sqlalchemy as sa

from ..introspect import mapper_of
from ..yamlnodes import Key
from .checker import Checker, dotted
from .model import EntityType
from .specs import FIELD_HINTS, IDENTIFIER, EntitySpec

__all__ = ["EntityTypes", "compile_entity_types"]

EntityTypes = dict[str, EntityType | None]
"""Each declared entity type; None for one that is broken (reported)."""


def compile_entity_types(checker: Checker, raw: Any) -> EntityTypes | None:
    """The entity types; None when the section is missing or not a mapping (reported)."""
    if not isinstance(raw, dict):
        if (raw is not None or ("entities",) in checker.doc.values) and not checker.doc.is_broken(
            ("entities",)
        ):
            checker.problem(
                ("entities",),
                "entities: must map entity type names to mapped classes",
                hint=FIELD_HINTS["entities"],
                code="EE007",
            )
        return None
    return {name: _entity_type(checker, name, value) for name, value in raw.items()}


def _entity_type(checker: Checker, name: str, value: Any) -> EntityType | None:
    path: Key = ("entities", name)
    broken = False
    if not IDENTIFIER.match(name):
        checker.problem(
            path, f"entities: '{name}' is not a valid type name", at_key=True, code="EE010"
        )
        broken = True
    spec = checker.validate(
        EntitySpec,
        {"model": value} if isinstance(value, str) else value,
        path,
        expected="'package.module:Class', or {model: 'package.module:Class', key: cuid}",
    )
    if spec is None:
        return None
    model_path = path if isinstance(value, str) else (*path, "model")
    model = checker.reference(spec.model, model_path)
    if model is None:
        return None
    columns = _columns(checker, model, spec, model_path)
    if columns is None:
        return None
    if spec.key not in columns and "key" not in checker.invalid.get(path, ()):
        close = difflib.get_close_matches(spec.key, columns, n=1)
        written = isinstance(value, dict) and "key" in value
        checker.problem(
            (*path, "key") if written else path,
            f"{dotted(path)}: {model.__name__} has no column '{spec.key}' to load it by",
            hint=f"did you mean '{close[0]}'?"
            if close
            else "set `key:` to the column that holds its CUID",
            at_key=not written,
            code="EE016",
        )
        return None
    return None if broken else EntityType(name, model, spec.key)


def _columns(checker: Checker, model: Any, spec: EntitySpec, path: Key) -> list[str] | None:
    """The column attributes of ``model``; None when it is not a mapped class SQLAlchemy can
    configure (reported)."""
    mapper = mapper_of(model)
    if mapper is None:
        checker.problem(
            path,
            f"{dotted(path)}: '{spec.model}' is not a SQLAlchemy mapped class",
            code="EE013",
        )
        return None
    try:
        return list(mapper.column_attrs.keys())
    except sa.exc.SQLAlchemyError as exc:  # the mapper cannot be configured
        checker.problem(
            path,
            f"{dotted(path)}: SQLAlchemy cannot configure '{spec.model}'"
            f": {str(exc).splitlines()[0]}",
            code="EE015",
        )
        return None
