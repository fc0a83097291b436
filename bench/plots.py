"""The report's plots (matplotlib, no display): latency CDFs, and throughput and latency
against the number of concurrent clients. Each function writes one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, whatever the environment says

import matplotlib.pyplot as plt

STYLE = {"dpi": 110, "figsize": (7.5, 4.2)}
Series = dict[str, Sequence[Sequence[float]]]  # label: [[percentile, latency_us], ...]


def latency_cdf(path: Path, title: str, series: Series, note: str = "") -> Path:
    """One CDF per series from its ``cdf_us`` points, latency on a log axis."""
    figure, axes = plt.subplots(figsize=STYLE["figsize"])
    for label, points in series.items():
        if not points:
            continue
        axes.plot([p[1] for p in points], [p[0] / 100 for p in points], label=label, lw=1.6)
    axes.set_xscale("log")
    axes.set_xlabel("latency (µs, log scale)")
    axes.set_ylabel("fraction of calls")
    axes.set_ylim(0, 1.01)
    axes.grid(True, which="both", alpha=0.3)
    axes.set_title(title, fontsize=11)
    axes.legend(fontsize=8, loc="lower right")
    if note:
        figure.text(0.01, 0.01, note, fontsize=7, alpha=0.7)
    return _save(figure, path)


def versus_clients(path: Path, title: str, systems: dict[str, list[dict[str, Any]]]) -> Path:
    """Throughput (left) and p50 / p99 latency (right) against concurrent clients."""
    figure, (rate, latency) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, rows in systems.items():
        clients = [row["clients"] for row in rows]
        (line,) = rate.plot(clients, [row["calls_per_s"] for row in rows], "o-", label=name)
        latency.plot(clients, [row["p50_us"] / 1000 for row in rows], "o-", color=line.get_color())
        latency.plot(
            clients,
            [row["p99_us"] / 1000 for row in rows],
            "x--",
            color=line.get_color(),
            alpha=0.6,
        )
    ticks = sorted({row["clients"] for rows in systems.values() for row in rows})
    for axes in (rate, latency):
        axes.set_xscale("log", base=2)
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.set_yscale("log")
        axes.set_xlabel("concurrent clients (threads)")
        axes.grid(True, which="both", alpha=0.3)
    rate.set_ylabel("calls per second")
    rate.legend(fontsize=8)
    latency.set_ylabel("latency (ms): p50 solid, p99 dashed")
    figure.suptitle(title, fontsize=11)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=STYLE["dpi"])
    plt.close(figure)
    return path
