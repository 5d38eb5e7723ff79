"""``batch:``, in ``defaults`` and per event: whether the worker runs an event's messages that
arrive together as one batch (docs/registry.md, docs/performance.md).

Each is ``on``, ``off`` or ``{window_ms: 0..10000, max: 1..500}`` (``window_ms: 0`` is off). An
event's own ``batch:`` wins; a mapping takes what it leaves out from ``defaults.batch``, then
from the built-in 50 ms and 500. ``on`` (or a mapping without ``window_ms``) in an event turns
batching on even where ``defaults`` says ``off``, with the built-in window then. No ``batch:``
anywhere: on, 50 ms, 500. Every invalid value is EE080, where it is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..yamlnodes import Key
from .checker import Checker, dotted
from .model import DEFAULT_BATCH, BatchSetting
from .specs import FIELD_HINTS, EventSpec

__all__ = ["MAX_BATCH", "MAX_WINDOW_MS", "compile_batching"]

MAX_WINDOW_MS = 10_000
"""The longest window: ten seconds (a message waits at most this long for its batch)."""
MAX_BATCH = 500
"""The largest batch: what one Postmark batch request holds."""

_FIELDS = ("window_ms", "max")
_ABSENT = object()
_CODE = "EE080"


@dataclass(frozen=True)
class _Written:
    """A ``batch:`` as written: off, or on with the fields it gives (None: not given)."""

    on: bool
    window_ms: int | None = None
    max: int | None = None


def compile_batching(
    checker: Checker, defaults: Any, specs: Mapping[str, EventSpec]
) -> dict[str, BatchSetting | None]:
    """Each event's batching in effect (None: off), for the events whose ``batch:`` and
    ``defaults.batch`` are valid; the others are reported and left out."""
    base: _Written | None = _Written(on=True)
    raw = defaults.get("batch", _ABSENT) if isinstance(defaults, dict) else _ABSENT
    if raw is not _ABSENT:
        base = _read(checker, ("defaults", "batch"), raw)
    settings: dict[str, BatchSetting | None] = {}
    for key, spec in specs.items():
        if "batch" in checker.invalid.get(("events", key), ()):
            continue
        written = _written_in(checker, key, spec)
        if written is None or base is None:
            continue  # reported
        settings[key] = _resolve(base, written)
    return settings


_INHERIT = _Written(on=False, window_ms=-1)
"""An event without ``batch:``: what ``defaults`` says (a marker, never read as a setting)."""


def _written_in(checker: Checker, key: str, spec: EventSpec) -> _Written | None:
    path: Key = ("events", key, "batch")
    if spec.batch is None and path not in checker.doc.values:
        return _INHERIT
    return _read(checker, path, spec.batch)


def _resolve(base: _Written, written: _Written) -> BatchSetting | None:
    """The setting in effect for an event: its own ``batch:`` over ``defaults.batch``."""
    default_max = base.max if base.max is not None else DEFAULT_BATCH.max
    default_ms = DEFAULT_BATCH.window_ms if base.window_ms is None else base.window_ms
    if written is _INHERIT:
        return _setting(default_ms if base.on else 0, default_max)
    if not written.on:
        return None
    if written.window_ms is not None:
        window_ms: float = written.window_ms
    elif base.on and default_ms > 0:
        window_ms = default_ms
    else:  # defaults say off: the event's own `on` takes the built-in window
        window_ms = DEFAULT_BATCH.window_ms
    return _setting(window_ms, written.max if written.max is not None else default_max)


def _setting(window_ms: float, batch_max: int) -> BatchSetting | None:
    return None if window_ms <= 0 else BatchSetting(window_ms / 1000, batch_max)


def _read(checker: Checker, path: Key, value: Any) -> _Written | None:
    """``value`` checked: ``on``, ``off`` or a mapping of ``window_ms`` and ``max``; None when
    it is invalid (reported, EE080; EE005 for a field it does not have)."""
    where = dotted(path)
    # YAML 1.1 reads on/off (and yes/no, true/false) unquoted as booleans.
    if value is True or value == "on":
        return _Written(on=True)
    if value is False or value == "off":
        return _Written(on=False)
    if not isinstance(value, dict):
        got = "nothing" if value is None else repr(value)
        checker.problem(
            path,
            f"{where}: must be on, off or a mapping of window_ms and max (got {got})",
            hint=f"write {FIELD_HINTS['batch']}",
            code=_CODE,
        )
        return None
    before = checker.count
    for name in value:
        if name not in _FIELDS:
            checker.unknown_field((*path, name), str(name), _FIELDS)
    window_ms = _whole(checker, path, value, "window_ms")
    batch_max = _whole(checker, path, value, "max")
    if checker.count > before:
        return None
    if window_ms == 0:
        return _Written(on=False, window_ms=0, max=batch_max)
    return _Written(on=True, window_ms=window_ms, max=batch_max)


_RANGES = {
    "window_ms": (
        0,
        MAX_WINDOW_MS,
        "milliseconds",
        (
            "the time a batch waits for more messages, like `window_ms: 50`; 0 (or `batch: off`) "
            "runs each emit alone"
        ),
    ),
    "max": (
        1,
        MAX_BATCH,
        "messages",
        "a Postmark batch request holds 500, like `max: 500`; `batch: off` runs each emit alone",
    ),
}


def _whole(checker: Checker, path: Key, value: dict[str, Any], name: str) -> int | None:
    """``value[name]``, a whole number in its range; None when not given or invalid
    (reported)."""
    if name not in value:
        return None
    number = value[name]
    low, high, unit, hint = _RANGES[name]
    if type(number) is int and low <= number <= high:
        return number
    checker.problem(
        (*path, name),
        f"{dotted(path)}.{name}: must be a whole number of {unit} from {low} to {high} "
        f"(got {number!r})",
        hint=hint,
        code=_CODE,
    )
    return None
