"""Helpers shared by the benchmarks: percentiles, JSON output, the commit under test, and
keeping stdout for the JSON document."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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


CDF_POINTS = (*range(0, 100, 2), 99, 99.5, 99.9, 100)  # percentiles kept for the plots


def latency_summary(samples_ns: Sequence[int], *, cdf: bool = False) -> dict[str, Any]:
    """p50/p90/p99 (and min, mean, max) of latency samples in nanoseconds, in microseconds;
    with ``cdf``, also the latency at each of ``CDF_POINTS`` (for a plot of the CDF)."""
    ordered = sorted(samples_ns)

    def us(value: float) -> float:
        return round(value / 1000, 3)

    summary: dict[str, Any] = {
        "n": len(ordered),
        "p50_us": us(percentile(ordered, 50)),
        "p90_us": us(percentile(ordered, 90)),
        "p99_us": us(percentile(ordered, 99)),
        "min_us": us(ordered[0]),
        "mean_us": us(statistics.fmean(ordered)),
        "max_us": us(ordered[-1]),
    }
    if cdf:
        summary["cdf_us"] = [[q, us(percentile(ordered, q))] for q in CDF_POINTS]
    return summary


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded, or None when either side is missing or zero."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def results_path(name: str) -> Path:
    """Where benchmark ``name`` writes its JSON: ``bench/results/``, or the folder named by
    ``$STRATUS_BENCH_RESULTS`` (the suite's smoke test keeps the committed results intact)."""
    folder = os.environ.get("STRATUS_BENCH_RESULTS")
    base = Path(folder) if folder else Path(__file__).resolve().parent / "results"
    return base / f"{name}.json"


def images_path(name: str) -> Path:
    """Where benchmark ``name`` draws its own plot (most plots are the report's): the
    folder named by ``$STRATUS_BENCH_IMAGES`` (the suite sets it to the report's), else
    ``img/`` beside ``$STRATUS_BENCH_RESULTS`` when that is set, else ``docs/img/``."""
    folder = os.environ.get("STRATUS_BENCH_IMAGES")
    results = os.environ.get("STRATUS_BENCH_RESULTS")
    if folder:
        base = Path(folder)
    elif results:
        base = Path(results) / "img"
    else:
        base = Path(__file__).resolve().parents[1] / "docs" / "img"
    return base / f"{name}.png"


def add_mode_options(parser: argparse.ArgumentParser) -> None:
    """``--quick`` (the one-minute suite's settings) and ``--tiny`` (a smoke test)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer iterations")
    group.add_argument("--tiny", action="store_true", help="a few calls of each kind: a smoke test")


def chosen_mode(args: argparse.Namespace) -> str:
    """``full``, ``quick`` or ``tiny``, from the options of ``add_mode_options``."""
    return "tiny" if args.tiny else "quick" if args.quick else "full"


def bench_main(
    description: str,
    results: Path,
    settings: dict[str, Any],
    run: Callable[..., dict[str, Any]],
    *,
    peers: bool = False,
    options: dict[str, str] | None = None,
    tunable: bool = False,
    argv: Sequence[str] | None = None,
) -> None:
    """The command line of a benchmark: ``--quick`` / ``--tiny`` pick ``settings[mode]``;
    with ``peers``, ``--no-ray`` and ``--no-dask`` leave a peer out; each of ``options``
    (``{name: help}``) is a string option ``--name`` (default empty) passed to ``run`` as
    the keyword ``name``; with ``tunable`` (settings that are dataclasses), each field is an
    option ``--field-name`` of the field's type that overrides the mode's value.
    ``run(settings, mode, ...)`` runs with stdout sent to stderr; its document is printed
    and saved."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    add_mode_options(parser)
    if peers:
        parser.add_argument("--no-ray", action="store_true", help="leave Ray out")
        parser.add_argument("--no-dask", action="store_true", help="leave Dask out")
    for name, text in (options or {}).items():
        parser.add_argument(f"--{name}", default="", help=text)
    if tunable:
        _add_setting_options(parser, settings)
    parser.add_argument("--output", type=Path, default=results, help=f"default: {results}")
    args = parser.parse_args(argv)
    mode = chosen_mode(args)
    chosen = settings[mode]
    if tunable:
        given = {f.name: getattr(args, f"setting_{f.name}") for f in dataclasses.fields(chosen)}
        chosen = dataclasses.replace(chosen, **{k: v for k, v in given.items() if v is not None})
    keywords: dict[str, Any] = (
        {"with_ray": not args.no_ray, "with_dask": not args.no_dask} if peers else {}
    )
    keywords |= {name: getattr(args, name) for name in options or {}}
    with stdout_to_stderr():
        document = run(chosen, mode, **keywords)
    print(write_json(args.output, document))


def _add_setting_options(parser: argparse.ArgumentParser, settings: dict[str, Any]) -> None:
    """``--field-name`` for each field of the settings (dataclasses); its help gives the
    value in each mode."""
    for f in dataclasses.fields(settings["full"]):
        by_mode = ", ".join(f"{mode} {getattr(s, f.name)}" for mode, s in settings.items())
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"setting_{f.name}",
            metavar=f.name.upper(),
            type=type(getattr(settings["full"], f.name)),
            default=None,
            help=f"default by mode: {by_mode}",
        )


def run_header(name: str, mode: str, **versions: str | None) -> dict[str, Any]:
    """The opening of a benchmark's document: what, when, where, which versions, the load."""
    return {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
        },
        "versions": {"stratus": _stratus_version(), **versions, "git": git_revision()},
        "load": {"loadavg_start": loadavg(), "cpu_busy_pct_before": cpu_busy_pct(0.5)},
    }


def _stratus_version() -> str:
    import stratus

    return stratus.__version__


def module_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


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


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` every 10 ms until it holds; RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("condition not reached in time")
        time.sleep(0.01)


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
