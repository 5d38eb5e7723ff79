"""Durations as ``events.yaml`` writes them: ``30s``, ``15m``, ``1h``, ``2d``, or several units in
that order (``1h30m``, ``1d12h``). One parser for every duration of the registry (a throttle's
``per:``, a digest's ``window:``); a problem in one is reported at its node, with line and
column (:func:`checked_duration`).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from ..errors import DurationError
from ..yamlnodes import Key
from .checker import Checker, dotted

__all__ = [
    "DURATION_HINT",
    "DurationError",
    "checked_duration",
    "format_duration",
    "parse_duration",
]

DURATION_HINT = "a duration like 30s, 15m, 1h, 2d or 1h30m"

_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")
_LONGEST = timedelta(days=36_500)
"""A hundred years: past that, a number is a typo (and ``timedelta`` would overflow)."""


def parse_duration(text: str) -> timedelta:
    """``text`` (``30s``, ``15m``, ``1h``, ``2d``, ``1h30m``...) as a ``timedelta``.

    Units go from days to seconds, each at most once; the duration is longer than zero.

    Raises:
        DurationError: ``text`` is not such a duration (the message says why).
    """
    if not isinstance(text, str):
        raise DurationError(f"{text!r} is not a duration (write {DURATION_HINT})")
    match = _DURATION.match(text)
    if not text or match is None:
        raise DurationError(f"'{text}' is not a duration (write {DURATION_HINT})")
    seconds = sum(
        int(n) * size for n, (_, size) in zip(match.groups(), _UNITS, strict=True) if n is not None
    )
    if seconds == 0:
        raise DurationError(f"'{text}' is no time at all (write {DURATION_HINT})")
    if seconds > _LONGEST.total_seconds():
        raise DurationError(f"'{text}' is longer than a hundred years")
    return timedelta(seconds=seconds)


def format_duration(duration: timedelta) -> str:
    """``duration`` as :func:`parse_duration` reads it (whole seconds): ``1h30m``."""
    seconds = int(duration.total_seconds())
    parts: list[str] = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def checked_duration(checker: Checker, path: Key, value: Any, *, code: str) -> timedelta | None:
    """``value``, the duration written at ``path``; None, with a problem reported at its line and
    column under lint ``code``, when it is not one."""
    try:
        return parse_duration(value)
    except DurationError as exc:
        checker.problem(path, f"{dotted(path)}: {exc}", code=code)
        return None
