"""Medians with their spread, and ratios of two figures measured in the same run."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["figure", "ratio"]


def figure(values: Sequence[float], unit: str) -> dict[str, Any]:
    """The median of repeated measurements, with min, max and every value."""
    if not values:
        raise ValueError("no measurements")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "unit": unit,
        "values": list(values),
    }


def ratio(
    numerator: Sequence[float], denominator: Sequence[float], *, target: str, met: bool | None
) -> dict[str, Any]:
    """The median of the paired ratios ``numerator[i] / denominator[i]``, with their spread.

    The two lists are measurements taken in turn (engine, hand-written, hand-written, engine,
    ...), so the i-th ratio compares two runs made a moment apart on the same services: a burst
    of noise on a shared machine moves one pair, not the median.
    """
    pairs = [a / b for a, b in zip(numerator, denominator, strict=False) if b]
    if not pairs:
        raise ValueError("no pair of measurements to compare")
    value = statistics.median(pairs)
    return {
        "value": value,
        "min": min(pairs) if pairs else value,
        "max": max(pairs) if pairs else value,
        "target": target,
        "met": met,
    }
