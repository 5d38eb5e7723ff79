"""An event's values: ``subject``, ``to`` and ``data`` compiled as expressions, and their paths
checked against the entities' mappers."""

from __future__ import annotations

from dataclasses import dataclass

from ..addresses import AddressTemplate, compile_address
from ..errors import ExpressionError, Problem
from ..expressions import Path, parse
from ..introspect import PathError, PathInfo, describe_path, mapper_of
from ..yamlnodes import Key
from .checker import Checker, dotted
from .model import EntityType, Expression
from .specs import IDENTIFIER, EventSpec

__all__ = ["Values", "check_paths", "compile_expression", "compile_values"]


@dataclass(frozen=True)
class Values:
    """An event's expressions that compiled (those in error are reported and left out)."""

    subject: Expression | None
    to: tuple[Expression, ...]
    to_addresses: tuple[AddressTemplate, ...]
    data: tuple[Expression, ...]

    @property
    def expressions(self) -> list[Expression]:
        return [*([self.subject] if self.subject else []), *self.to, *self.data]


def compile_values(checker: Checker, key: str, spec: EventSpec, path: Key) -> Values:
    subject = None
    if spec.subject is not None:
        subject = _expression(checker, "subject", spec.subject, (*path, "subject"))
    if isinstance(spec.to, str):
        to = [_expression(checker, "to", spec.to, (*path, "to"))]
    else:
        to = [
            _expression(checker, "to", src, (*path, "to", i)) for i, src in enumerate(spec.to or [])
        ]
    addresses = [_address(checker, e) for e in to if e is not None]
    data = []
    for name, source in spec.data.items():
        where: Key = (*path, "data", name)
        if not IDENTIFIER.match(name):
            checker.problem(
                where,
                f"events.{key}.data: '{name}' is not a template variable name",
                hint="letters, digits and '_', starting with a letter",
                at_key=True,
                code="EE010",
            )
        elif name == "subject" and spec.subject is not None:
            checker.problem(
                where,
                f"events.{key}.data: 'subject' is already the event's subject",
                at_key=True,
                code="EE043",
            )
        data.append(_expression(checker, f"data.{name}", source, where))
    return Values(
        subject,
        tuple(e for e in to if e is not None),
        tuple(a for a in addresses if a is not None),
        tuple(e for e in data if e is not None),
    )


def compile_expression(
    checker: Checker, field_name: str, source: str, path: Key
) -> Expression | None:
    """The expression written at ``path``; None when it does not parse (reported)."""
    return _expression(checker, field_name, source, path)


def _expression(checker: Checker, field_name: str, source: str, path: Key) -> Expression | None:
    where = checker.doc.locate(path)
    exact = where.text_column is not None
    column = where.text_column or where.column
    try:
        template = parse(source)
    except ExpressionError as exc:
        checker.add(
            Problem(
                f"{dotted(path)}: {exc.reason}",
                checker.doc.filename,
                where.line,
                column + exc.offset if exact else column,
                code="EE020",
            )
        )
        return None
    anchor = Problem("", checker.doc.filename, where.line, column)
    return Expression(field_name, template, anchor, label=dotted(path), exact=exact)


def _address(checker: Checker, expression: Expression) -> AddressTemplate | None:
    """``to:`` must be ``ADDRESS`` or ``NAME <ADDRESS>`` by its literal text alone."""
    try:
        return compile_address(expression.template)
    except ExpressionError as exc:
        checker.add(
            expression.problem(
                exc.reason,
                offset=exc.offset,
                hint="the name part may hold anything; the address part only paths and "
                "address characters",
                code="EE039",
            )
        )
        return None


def check_paths(
    checker: Checker,
    values: Values,
    entity_map: dict[str, EntityType],
    names: set[str],
) -> tuple[dict[str, PathInfo], list[Path]]:
    """Check each path against its entity's mapper; collect the paths to context values."""
    infos: dict[str, PathInfo] = {}
    context_paths: list[Path] = []
    for expression in values.expressions:
        for ref in expression.template.paths:
            entity = entity_map.get(ref.root)
            if entity is not None:
                info = _check_path(checker, expression, ref, entity)
                if info is not None:
                    infos[str(ref)] = info
            elif ref.root not in names:  # a declared entity of a broken type is not context
                context_paths.append(ref)
    return infos, context_paths


def _check_path(
    checker: Checker, expression: Expression, ref: Path, entity: EntityType
) -> PathInfo | None:
    try:
        info = describe_path(entity.model, ref.attrs)
    except PathError as exc:
        checker.add(expression.path_problem(ref, exc))
        return None
    if info.kind not in ("object", "collection") or info.target is None:
        return info
    noun = info.target.__name__
    what = f"a collection of {noun}" if info.kind == "collection" else f"an object of type {noun}"
    whole_recipient = expression.field == "to" and ref is expression.template.single_path
    if whole_recipient:
        if hasattr(info.target, "email"):
            return info
        checker.add(
            expression.problem(
                f"{{{ref}}} is {what}, and {noun} has no `email` attribute to send to",
                ref,
                hint="name the address, like {" + str(ref) + ".email}",
                code="EE023",
            )
        )
        return None
    column = _a_column(info.target)
    checker.add(
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
