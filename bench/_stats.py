"""Helpers shared by the benchmarks: percentiles, JSON output, the commit under test, and
keeping stdout for the JSON document."""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
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


def check_targets(
    doc: dict[str, Any], targets: dict[str, tuple[str, str, float]]
) -> dict[str, Any]:
    """Each target ``name: (dotted path into doc, "<=" or ">=", bound)`` with its value
    and whether it is met (None when the value is missing)."""
    report: dict[str, Any] = {}
    for name, (path, comparison, bound) in targets.items():
        value: Any = doc
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        met = None
        if isinstance(value, int | float):
            met = value <= bound if comparison == "<=" else value >= bound
        report[name] = {"target": f"{comparison} {bound:g}", "value": value, "met": met}
    return report


def write_json(path: Path, document: dict[str, Any]) -> str:
    """Write ``document`` to ``path`` (creating its folder) and return the text written."""
    text = json.dumps(document, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return text


def git_revision() -> dict[str, Any] | None:
    """The commit of the checkout under test, and whether src/ differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "src_modified": bool(changes.strip())}


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever writes to fd 1 (this process and its children) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_header(benchmark: str, quick: bool) -> dict[str, Any]:
    """The fields every result document starts with: what ran, when, on what machine."""
    import platform

    return {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "quick": quick,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
        },
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_busy_pct(interval: float) -> float | None:
    """How busy all cores were over the next ``interval`` seconds, from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]  # user .. steal
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except OSError:
        return None
    return round(100 * (1 - (idle1 - idle0) / max(1, total1 - total0)), 1)
