"""Small helpers shared by the benchmarks: percentiles of latency samples, and JSON output."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_summary(samples_ns: Sequence[int]) -> dict[str, Any]:
    """p50/p90/p99 (and min, mean, max) of latency samples in nanoseconds, in microseconds."""
    ordered = sorted(samples_ns)

    def us(value: float) -> float:
        return round(value / 1000, 3)

    return {
        "n": len(ordered),
        "p50_us": us(percentile(ordered, 50)),
        "p90_us": us(percentile(ordered, 90)),
        "p99_us": us(percentile(ordered, 99)),
        "min_us": us(ordered[0]),
        "mean_us": us(statistics.fmean(ordered)),
        "max_us": us(ordered[-1]),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded, or None when either side is missing or zero."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def write_json(path: Path, document: dict[str, Any]) -> str:
    """Write ``document`` to ``path`` (creating its folder) and return the text written."""
    text = json.dumps(document, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return text
