"""Small formatting helpers of the report: cells for latencies, rates and ratios, Markdown
tables, and reading a value from a results document by a dotted path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pick(results: dict[str, dict[str, Any]], file: str, path: str) -> Any:
    """``results[file]`` followed along ``path`` (``a.b.c``); None where anything is missing."""
    value: Any = results.get(file)
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def cell_us(value: Any) -> str:
    """A latency given in µs: ``0.47 µs``, ``87 µs``, ``2.28 ms``, ``1.31 s``."""
    if not isinstance(value, int | float):
        return "-"
    if value >= 1_000_000:
        return f"{value / 1e6:.2f} s"
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    if value >= 10:
        return f"{value:.0f} µs"
    return f"{value:.2f} µs"


def cell_ms(value: Any) -> str:
    """A latency given in ms."""
    return cell_us(value * 1000) if isinstance(value, int | float) else "-"


def rate(value: Any) -> str:
    """Calls (or operations) per second: ``23,907/s``."""
    if not isinstance(value, int | float):
        return "-"
    return f"{value:,.0f}/s" if value >= 100 else f"{value:.1f}/s"


def seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else "-"


def megabytes(value: Any) -> str:
    return f"{value:.0f} MB" if isinstance(value, int | float) else "-"


def times(value: Any) -> str:
    """A ratio: ``26x``, ``1.5x``, ``0.42x``."""
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.0f}x" if value >= 10 else f"{value:.2g}x"


def over(value: Any, base: Any) -> str:
    """``value / base`` as a ratio cell."""
    if not isinstance(value, int | float) or not isinstance(base, int | float) or not base:
        return "-"
    return times(value / base)


def yes_no(met: Any) -> str:
    return {True: "yes", False: "**no**"}.get(met, "-")


def markdown_table(
    head: Sequence[str], rows: Sequence[Sequence[Any]], *, header: bool = True
) -> list[str]:
    """A GitHub Markdown table; with ``header=False`` the head row is left blank."""
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
