"""The ``defaults:`` section: the From address as sent, the message stream, and the toggles and
preferences callables."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..addresses import format_address, parse_address
from ..yamlnodes import Key
from .checker import Checker
from .specs import FIELD_HINTS, DefaultsSpec

__all__ = ["Defaults", "compile_defaults"]


@dataclass(frozen=True)
class Defaults:
    """The ``defaults:`` section compiled; ``spec`` is None when it is missing or invalid."""

    spec: DefaultsSpec | None
    org: str
    """Which entity of an event is the organization (as written, even in invalid defaults)."""
    from_address: str = ""
    """``defaults.from`` as sent: the name quoted by the standard library."""
    toggles: Callable[..., bool] | None = None
    preferences: Callable[..., bool | None] | None = None


def compile_defaults(checker: Checker, data: dict[str, Any]) -> Defaults:
    """The ``defaults:`` section and its ``toggles`` and ``preferences`` callables."""
    if "defaults" not in data:
        return Defaults(None, _raw_org(None))  # reported as a missing section
    spec = checker.validate(
        DefaultsSpec, data["defaults"], ("defaults",), placeholders={"from": ""}
    )
    if spec is None:
        return Defaults(None, _raw_org(data["defaults"]))
    from_address = ""
    if "from" not in checker.invalid.get(("defaults",), ()):
        from_address = _from_address(checker, spec.from_, ("defaults", "from"))
    toggles = _three_arguments(checker, spec.toggles, "toggles", "(session, org, toggle_key)")
    preferences = _three_arguments(
        checker, spec.preferences, "preferences", "(session, recipient, category)"
    )
    return Defaults(spec, spec.org, from_address, toggles, preferences)


def _from_address(checker: Checker, value: str, path: Key) -> str:
    try:
        return format_address(*parse_address(value))
    except ValueError as exc:  # AddressError
        checker.problem(path, f"defaults.from: {exc}", hint=FIELD_HINTS["from"], code="EE009")
        return ""


def _three_arguments(
    checker: Checker, ref: str | None, name: str, parameters: str
) -> Callable[..., Any] | None:
    """``defaults.<name>``'s callable, checked to take three positional arguments."""
    if ref is None:
        return None
    path: Key = ("defaults", name)
    func = checker.callable_reference(ref, path)
    if func is None:
        return None
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return func  # a builtin or extension callable: trust it
    try:
        signature.bind(None, None, None)
    except TypeError:
        checker.problem(
            path,
            f"defaults.{name}: '{ref}' cannot be called as {parameters}",
            hint=f"its signature is {signature}",
            code="EE014",
        )
        return None
    return func


def _raw_org(defaults: Any) -> str:
    """``defaults.org`` as written, for checking events when ``defaults`` itself is invalid."""
    org = defaults.get("org") if isinstance(defaults, dict) else None
    return org if isinstance(org, str) else str(DefaultsSpec.model_fields["org"].default)
