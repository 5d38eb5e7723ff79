"""What an attribute path over SQLAlchemy mapped classes leads to, checked without a database."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.hybrid import HybridExtensionType
from sqlalchemy.orm import Mapper

from .errors import PathError

__all__ = [
    "Callee",
    "PathError",
    "PathInfo",
    "check_value_path",
    "describe_path",
    "import_ref",
    "mapper_of",
    "parse_ref",
]

Kind = Literal["column", "object", "collection", "unknown"]

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_REFERENCE = re.compile(rf"({_DOTTED}):({_DOTTED})\Z")


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
        PathError: an attribute does not exist, is a method, or follows a collection; the
            message says which and suggests the nearest name, ``index`` says which attribute.
    """
    info = PathInfo("object", target=cls)
    for i, attr in enumerate(attrs):
        if info.kind == "collection":
            raise PathError(
                f"'{attrs[i - 1]}' is a collection; expressions cannot index or map over it "
                "(use a `recipients:` or `build:` callable)",
                i - 1,
            )
        if info.kind == "column" and info.python_type is not None:
            # A column's value is a plain Python value: its attributes are checked on its type.
            _plain_attribute(info.python_type, attr, i)
            return PathInfo("unknown", nullable=True)
        target = info.target if info.kind == "object" else None
        mapper = mapper_of(target)
        if mapper is None or target is None:
            return PathInfo("unknown", nullable=True)
        try:
            info = _step(mapper, target, attr, nullable=info.nullable)
        except PathError as exc:
            raise exc.at(i) from None
        except sa.exc.SQLAlchemyError as exc:
            raise PathError(f"SQLAlchemy cannot describe {target.__name__}: {exc}", i) from exc
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
        python_type = _python_type(column.type)
        return PathInfo("column", python_type, nullable or bool(getattr(column, "nullable", True)))
    descriptors = mapper.all_orm_descriptors
    if attr in descriptors:  # hybrids, association proxies, synonyms
        if getattr(descriptors[attr], "extension_type", None) is HybridExtensionType.HYBRID_METHOD:
            raise PathError(f"{cls.__name__}.{attr} is a method; expressions cannot call it", 0)
        return PathInfo("unknown", nullable=True)
    names = [n for n in descriptors.keys() if not n.startswith("_")]  # noqa: SIM118
    _plain_attribute(cls, attr, 0, names)
    _declared_by_the_application(cls, attr)
    return PathInfo("unknown", nullable=True)


_OUT_OF_REACH_HINT = (
    "expressions reach the columns, relationships, properties and hybrid attributes a model "
    "declares; compute anything else in a `build:` callable"
)


# What a declarative base holds for SQLAlchemy: never a model's own attribute. (`metadata` and
# `registry` are SQLAlchemy's objects; `type_annotation_map` is a plain dict of the application.)
_DECLARATIVE_SETTINGS = frozenset({"metadata", "registry", "type_annotation_map"})


def _declared_by_the_application(cls: type, attr: str) -> None:
    """Check that ``attr``, neither a column, a relationship nor an ORM descriptor of the mapped
    ``cls``, is a property or a plain value that the application's own classes declare.

    What SQLAlchemy puts on a model (the declarative base's ``metadata`` and ``registry``,
    ``AsyncAttrs.awaitable_attrs``, a ``query_property``) is no value for an email: its text is a
    dump of the schema or a query.
    """
    owner, static = _declaration(cls, attr)
    what = ""
    if owner is not None and _from_sqlalchemy(owner):
        what = f"defined by SQLAlchemy's {owner.__name__}"
    elif _from_sqlalchemy(type(static)):
        what = f"SQLAlchemy's {type(static).__name__}"
    elif attr in _DECLARATIVE_SETTINGS:
        what = "a setting of SQLAlchemy's declarative base"
    elif hasattr(type(static), "__get__") and not isinstance(static, property | cached_property):
        what = f"a {type(static).__name__} descriptor"
    if what:
        raise PathError(
            f"{cls.__name__}.{attr} is {what}, not part of the application's model",
            0,
            code="EE027",
            hint=_OUT_OF_REACH_HINT,
        )


def _declaration(cls: type, attr: str) -> tuple[type | None, Any]:
    """The class of ``cls``'s MRO that declares ``attr``, and what it declares."""
    for klass in inspect.getmro(cls):
        if attr in vars(klass):
            return klass, vars(klass)[attr]
    return None, inspect.getattr_static(cls, attr)


def _from_sqlalchemy(obj: type) -> bool:
    module = str(getattr(obj, "__module__", None) or "")
    return module == "sqlalchemy" or module.startswith("sqlalchemy.")


def check_value_path(value: Any, attrs: tuple[str, ...]) -> None:
    """Check ``attrs`` on ``value``, a plain context value (known before any task runs).

    Each attribute must exist and must not be a method; a mapped object's are checked as
    :func:`describe_path` checks its class. Past a property, what a path reaches is known only
    when it is rendered.

    Raises:
        PathError: an attribute does not exist or is a method; ``index`` says which.
    """
    for i, attr in enumerate(attrs):
        if value is None:
            return
        if mapper_of(type(value)) is not None:
            try:
                describe_path(type(value), attrs[i:])
            except PathError as exc:
                raise exc.at(i) from None
            return
        kind = type(value).__name__
        try:
            static = inspect.getattr_static(value, attr)
        except AttributeError:
            options = [n for n in dir(value) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, options, n=1)
            hint = f"did you mean '{close[0]}'?" if close else ""
            raise PathError(f"{kind} has no attribute '{attr}'", i, hint=hint) from None
        if isinstance(static, staticmethod | classmethod) or callable(static):
            raise PathError(
                f"{kind}.{attr} is a method; expressions cannot call it",
                i,
                hint="give the value itself as a context value, or a context callable that "
                "returns it",
            )
        if hasattr(type(static), "__get__"):
            return  # a property, a slot...: its value is read when the path is rendered
        value = static


def _python_type(column_type: Any) -> type | None:
    """The Python type of a column's values, or None when it is not one type (JSON, custom)."""
    if isinstance(column_type, sa.JSON):
        return None  # any JSON value, whatever `python_type` (dict) says
    try:
        found = column_type.python_type
    except NotImplementedError:
        return None
    return found if isinstance(found, type) else None


def _plain_attribute(cls: type, attr: str, index: int, names: list[str] | None = None) -> None:
    """Check that ``cls`` has a data attribute ``attr``, not a method; ``names`` add hints."""
    try:
        static = inspect.getattr_static(cls, attr)
    except AttributeError:
        options = [*(names or []), *(n for n in dir(cls) if not n.startswith("_"))]
        close = difflib.get_close_matches(attr, options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PathError(f"{cls.__name__} has no attribute '{attr}'{hint}", index) from None
    if isinstance(static, type):
        raise PathError(f"{cls.__name__}.{attr} is a class, not a value", index)
    if isinstance(static, staticmethod | classmethod) or (
        callable(static) and not isinstance(static, property)
    ):
        raise PathError(f"{cls.__name__}.{attr} is a method; expressions cannot call it", index)


def parse_ref(ref: str) -> tuple[str, str]:
    """``module:attr`` as its module name and attribute path, checked as written; imports nothing.

    Raises:
        LookupError: the reference is not a ``package.module:attribute`` reference.
    """
    match = _REFERENCE.match(ref)
    if match is None:
        raise LookupError(f"{ref!r} is not a 'package.module:attribute' reference")
    module_name, attr_path = match.groups()
    return module_name, attr_path


def import_ref(ref: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted).

    Raises:
        LookupError: the reference is malformed, the module fails to import, or lacks the name.
    """
    module_name, attr_path = parse_ref(ref)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any error raised while importing user code
        raise LookupError(
            f"cannot import module '{module_name}': {type(exc).__name__}: {exc}"
        ) from exc
    done = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - a module __getattr__ or property may raise anything
            options = [name for name in dir(obj) if not name.startswith("_")]
            close = difflib.get_close_matches(part, options, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise LookupError(f"'{done}' has no attribute '{part}'{hint}") from None
        done = f"{done}:{part}" if done == module_name else f"{done}.{part}"
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
                if param.default is param.empty:
                    raise TypeError(
                        f"{what} has positional-only parameter '{param.name}'; it is called "
                        "with names"
                    )
                continue
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
