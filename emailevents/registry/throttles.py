"""Each event's ``throttle:``: at most ``limit`` emails to one recipient in any ``per``, for the
event alone or, with ``group: NAME``, for every event of the group together.

The events of a group share one budget, so they must agree on it: each declares the same
``limit`` and ``per`` (EE071 otherwise, at each event that differs from the group's first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..yamlnodes import Key
from .checker import Checker
from .durations import checked_duration, format_duration
from .model import Throttle
from .specs import FIELD_HINTS, IDENTIFIER, EventSpec, ThrottleSpec

__all__ = ["GROUP_PREFIX", "compile_throttles"]

GROUP_PREFIX = "group:"
"""A group's budget is counted under ``group:NAME``; an event's under its key (no colon)."""

_STAND_INS = {"limit": 1, "per": "1h"}
"""For a required field in error, so that the rest of the throttle is still checked."""


def compile_throttles(checker: Checker, specs: Mapping[str, EventSpec]) -> dict[str, Throttle]:
    """The throttle of each event that declares one without a problem, by event key; the events
    of a group checked against the group's first."""
    throttles: dict[str, Throttle] = {}
    first: dict[str, str] = {}  # group -> the first event declaring it
    for key, spec in specs.items():
        if spec.throttle is None or "throttle" in checker.invalid.get(("events", key), ()):
            continue
        throttle = _throttle(checker, key, spec.throttle)
        if throttle is None:
            continue
        if throttle.group is not None:
            leader = first.setdefault(throttle.group, key)
            if leader != key and not _agrees(checker, key, throttle, leader, throttles[leader]):
                continue
        throttles[key] = throttle
    return throttles


def _throttle(checker: Checker, key: str, raw: Mapping[str, Any]) -> Throttle | None:
    path: Key = ("events", key, "throttle")
    before = checker.count
    spec = checker.validate(
        ThrottleSpec, dict(raw), path, expected=FIELD_HINTS["throttle"], placeholders=_STAND_INS
    )
    if spec is None:
        return None
    invalid = checker.invalid.get(path, frozenset())
    if "limit" not in invalid and spec.limit < 1:
        checker.problem(
            (*path, "limit"),
            f"events.{key}.throttle.limit: must be 1 or more (got {spec.limit})",
            hint="to send this event to nobody, remove it; to send without a limit, remove "
            "`throttle:`",
            code="EE070",
        )
    per = None
    if "per" not in invalid:
        per = checked_duration(checker, (*path, "per"), spec.per, code="EE070")
    if spec.group is not None and "group" not in invalid and not IDENTIFIER.match(spec.group):
        checker.problem(
            (*path, "group"),
            f"events.{key}.throttle.group: '{spec.group}' is not a group name",
            hint="letters, digits and `_`, starting with a letter, like 'findings'",
            code="EE070",
        )
    if checker.count > before or per is None:
        return None
    scope = key if spec.group is None else f"{GROUP_PREFIX}{spec.group}"
    return Throttle(scope, spec.limit, per, spec.group)


def _agrees(checker: Checker, key: str, throttle: Throttle, leader: str, first: Throttle) -> bool:
    """Whether ``throttle`` declares its group's budget as the group's first event does."""
    if (throttle.limit, throttle.per) == (first.limit, first.per):
        return True
    location = checker.doc.locate(("events", leader, "throttle"))
    checker.problem(
        ("events", key, "throttle"),
        f"events.{key}.throttle: group '{throttle.group}' is {first.limit} per "
        f"{format_duration(first.per)} in event '{leader}' (line {location.line}), here "
        f"{throttle.limit} per {format_duration(throttle.per)}",
        hint="the events of a group share one budget: give each the same `limit:` and `per:`",
        code="EE071",
    )
    return False
