"""What an attribute path over SQLAlchemy mapped classes leads to, checked without a database."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Mapper

__all__ = ["Callee", "PathInfo", "describe_path", "import_ref", "mapper_of"]

Kind = Literal["column", "object", "collection", "unknown"]


@dataclass(frozen=True)
class PathInfo:
    """The end of a path: a column, a related object, a collection, or unknown statically."""

    kind: Kind
    python_type: type | None = None
    nullable: bool = False
    target: type | None = None


def mapper_of(cls: object) -> Mapper[Any] | None:
    found = sa.inspect(cls, raiseerr=False) if isinstance(cls, type) else None
    return found if isinstance(found, Mapper) else None


def describe_path(cls: type, attrs: tuple[str, ...]) -> PathInfo:
    """Walk ``attrs`` from the mapped class ``cls``.

    Raises:
        LookupError: an attribute does not exist, is a method, or follows a collection; the
            message says which and suggests the nearest name.
    """
    info = PathInfo("object", target=cls)
    for i, attr in enumerate(attrs):
        rest = attrs[i + 1 :]
        if info.kind == "collection":
            raise LookupError(
                f"'{attrs[i - 1]}' is a collection; expressions cannot index or map over it "
                "(use a `recipients:` or `build:` callable)"
            )
        if info.kind != "object" or info.target is None:
            return PathInfo("unknown", nullable=True)
        mapper = mapper_of(info.target)
        if mapper is None:
            return PathInfo("unknown", nullable=True)
        info = _step(mapper, info.target, attr, nullable=info.nullable)
        if info.kind == "unknown" and rest:
            return info
    return info


def _step(mapper: Mapper[Any], cls: type, attr: str, *, nullable: bool) -> PathInfo:
    if attr in mapper.relationships:
        rel = mapper.relationships[attr]
        if rel.uselist:
            return PathInfo("collection", nullable=nullable, target=rel.mapper.class_)
        local_nullable = any(getattr(col, "nullable", True) for col in rel.local_columns)
        return PathInfo(
            "object",
            nullable=nullable or local_nullable or rel.direction.name != "MANYTOONE",
            target=rel.mapper.class_,
        )
    if attr in mapper.column_attrs:
        column = mapper.column_attrs[attr].columns[0]
        try:
            python_type: type | None = column.type.python_type
        except NotImplementedError:
            python_type = None
        return PathInfo("column", python_type, nullable or bool(getattr(column, "nullable", True)))
    if attr in mapper.all_orm_descriptors:  # hybrid properties, association proxies
        return PathInfo("unknown", nullable=True)
    try:
        static = inspect.getattr_static(cls, attr)
    except AttributeError:
        names = [n for n in mapper.all_orm_descriptors.keys() if not n.startswith("_")]  # noqa: SIM118
        names += [n for n in dir(cls) if not n.startswith("_") and n not in names]
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise LookupError(f"{cls.__name__} has no attribute '{attr}'{hint}") from None
    if isinstance(static, staticmethod | classmethod) or (
        callable(static) and not isinstance(static, property)
    ):
        raise LookupError(f"{cls.__name__}.{attr} is a method; expressions cannot call it")  # noqa: TRY004
    return PathInfo("unknown", nullable=True)


def import_ref(ref: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted).

    Raises:
        LookupError: the reference is malformed, the module fails to import, or lacks the name.
    """
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise LookupError(f"'{ref}' is not a 'module:attribute' reference")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any error raised while importing user code
        raise LookupError(
            f"cannot import module '{module_name}': {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LookupError(f"module '{module_name}' has no attribute '{attr_path}'") from None
    return obj


@dataclass(frozen=True)
class Callee:
    """An application callable and the names it is called with (matched by parameter name)."""

    func: Callable[..., Any]
    params: tuple[str, ...]

    @classmethod
    def bind(cls, func: Callable[..., Any], available: set[str], what: str) -> Callee:
        """Check that every required parameter of ``func`` is one of ``available``.

        Raises:
            TypeError: ``func`` is not callable or asks for a name that is not available.
        """
        if not callable(func):
            raise TypeError(f"{what} is not callable")
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot read the signature of {what}: {exc}") from exc
        params: list[str] = []
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if param.kind is param.POSITIONAL_ONLY:
                raise TypeError(f"{what} has positional-only parameter '{param.name}'")
            if param.name in available:
                params.append(param.name)
            elif param.default is param.empty:
                known = ", ".join(sorted(available))
                raise TypeError(
                    f"{what} takes '{param.name}', which is not one of the names it can be "
                    f"given: {known}"
                )
        return cls(func, tuple(params))

    def __call__(self, values: Mapping[str, Any]) -> Any:
        return self.func(**{name: values[name] for name in self.params})
