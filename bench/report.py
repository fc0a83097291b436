"""The benchmark report: ``docs/benchmarks.md`` and its plots, from one run's JSON files.

``.venv/bin/python bench/report.py [RESULTS] [--docs FILE] [--images DIR]`` (the suite calls
it after a run). Every number in the report is read from ``RESULTS/*.json`` (default
``bench/results/``), so the document always matches one run; the prose around the tables
is here. An experiment whose file is missing is said to be missing. A results file this
module does not know is still reported: its ``targets`` (``{name: {target, value, met}}``)
join the targets table (as do those of any file no row of ``TARGETS`` reads; a name that
starts with ``cold`` fills the cold-start row), and its ``table`` (a list of rows with
``system``, ``p50_us``, ``p99_us`` and optionally ``per_s`` and ``ratio``) is printed under
its name.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import report_sections as sections
from report_format import (
    cell_ms,
    cell_us,
    markdown_table,
    megabytes,
    pick,
    rate,
    seconds,
    times,
    yes_no,
)

BENCH = Path(__file__).resolve().parent
KNOWN = (
    "suite",
    "transport",
    "core",
    "state",
    "store",
    "serving",
    "social",
    "scaling",
    "scaleout",
    "fs",
    "fuse",
    "elastic",
    "trace",
    "gateway",
)


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    """The documents of the run in ``folder``, by experiment name: those its ``suite.json``
    lists as done (a file left there by an earlier, separate run is not this run's), or
    every ``*.json`` when there is no ``suite.json``."""
    documents = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    suite = documents.get("suite")
    if suite is None:
        return documents
    done = {e["name"] for e in suite.get("experiments", []) if "error" not in e}
    return {name: doc for name, doc in documents.items() if name in done or name == "suite"}


@dataclass(frozen=True)
class Target:
    """A target of DESIGN.md section 4: where its value is in which results file, and the
    peers measured in the same run to show beside it, as (label, file, path, unit)."""

    what: str
    target: str
    bound: float
    unit: str  # us, ms, s, MB, x (a ratio) or per_s (a floor, not a ceiling)
    file: str
    path: str
    peers: tuple[tuple[str, str, str, str], ...] = ()

    def met(self, value: Any) -> bool | None:
        if not isinstance(value, int | float):
            return None
        return value >= self.bound if self.unit == "per_s" else value <= self.bound


TARGETS = [
    Target(
        "sync call of a trivial function, p50", "<= 100 µs", 100, "us", "core",
        "stratus.sync_call.p50_us",
        (("Ray task", "core", "ray.task_call.p50_us", "us"),
         ("Ray actor", "core", "ray.actor_call.p50_us", "us"),
         ("Dask", "core", "dask.submit.p50_us", "us")),
    ),
    Target(
        "2-function DAG `square(incr(x))`, p50", "<= 150 µs", 150, "us", "core",
        "stratus.dag.p50_us",
        (("Ray chain", "core", "ray.chain.p50_us", "us"),
         ("Dask chain", "core", "dask.chain.p50_us", "us")),
    ),
    Target(
        "function that reads and writes one key, p50 (`eventual`)", "<= 120 µs", 120, "us",
        "state", "rw_call.eventual.p50_us",
        (("stateless worker + Redis", "state", "rw_call.redis_rw.p50_us", "us"),),
    ),
    Target("same, `serializable`", "<= 120 µs", 120, "us", "state",
           "rw_call.serializable.p50_us"),
    Target("same, `causal`", "<= 120 µs", 120, "us", "state", "rw_call.causal.p50_us"),
    Target(
        "kv get inside a function, cache hit, p50", "<= 5 µs", 5, "us", "state",
        "kv_get.hit.p50_us", (("dict lookup", "state", "kv_get.dict_floor.p50_us", "us"),),
    ),
    Target(
        "async throughput, trivial function, 2 cores", ">= 20,000/s", 20_000, "per_s", "core",
        "stratus.throughput.calls_per_s",
        (("Ray", "core", "ray.throughput.calls_per_s", "per_s"),
         ("Dask", "core", "dask.throughput.calls_per_s", "per_s")),
    ),
    Target(
        "idle platform memory (RSS of all its processes)", "<= 150 MB", 150, "MB", "core",
        "stratus.idle_rss.total_rss_mb",
        (("Ray", "core", "ray.idle_rss.total_rss_mb", "MB"),
         ("Dask", "core", "dask.idle_rss.total_rss_mb", "MB")),
    ),
    Target(
        "`connect()` to a ready embedded cluster", "<= 0.5 s", 0.5, "s", "core",
        "stratus.connect.median_s",
        (("`ray.init`", "core", "ray.init_s", "s"),
         ("Dask `LocalCluster`", "core", "dask.init_s", "s")),
    ),
    Target("eventual staleness, max (section 2)", "< 100 ms", 100, "ms", "state",
           "staleness.max_ms"),
    Target(
        "create + write 4 KiB + commit in a function, p50 (the call minus a no-op call's)",
        "<= 300 µs", 300, "us", "fs", "small_file.stratus_fs_cost_p50_us",
        (("native file system, same way", "fs", "small_file.native_fs_cost_p50_us", "us"),),
    ),
    Target(
        "read of a cached 4 KiB file in a function, p50", "<= 20 µs", 20, "us", "fs",
        "cached_read_4k.first_in_invocation.p50_us",
        (("native file system", "fs", "cached_read_4k.native_first_in_invocation.p50_us",
          "us"),),
    ),
    Target(
        "FUSE open + read 4 KiB + close, p50 over a pyfuse3 pass-through's", "<= 1.5x", 1.5,
        "x", "fuse", "ratios.stratus_over_passthrough.open_read_close_p50",
        (("stratus mount", "fuse", "results.stratus.open_read_close.p50_us", "us"),
         ("pass-through", "fuse", "results.passthrough.open_read_close.p50_us", "us"),
         ("native", "fuse", "results.native.open_read_close.p50_us", "us")),
    ),
    Target(
        "HTTP gateway: added to a trivial call, p50 (gateway minus Python client)",
        "<= 300 µs", 300, "us", "gateway", "gateway_added_p50_us",
        (("FastAPI in-process, whole call", "gateway", "variants.fastapi_direct.p50_us", "us"),
         ("Ray Serve, whole call", "gateway", "variants.ray_serve.p50_us", "us")),
    ),
]  # fmt: skip
COLD_START = ("new executor ready (cold start)", "<= 20 ms")


def _value_cell(value: Any, unit: str) -> str:
    if value is None:
        return "not in this run"
    if unit == "us":
        return cell_us(value)
    if unit == "per_s":
        return rate(value)
    if unit == "ms":
        return cell_ms(value)
    if unit == "s":
        return seconds(value)
    if unit == "x":
        return times(value)
    return megabytes(value)


def targets_section(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for t in TARGETS:
        value = pick(results, t.file, t.path)
        peers = [
            f"{label} {_value_cell(pick(results, file, path), unit)}"
            for label, file, path, unit in t.peers
            if pick(results, file, path) is not None
        ]
        rows.append(
            [t.what, t.target, _value_cell(value, t.unit), yes_no(t.met(value)), "; ".join(peers)]
        )
    # Targets given by experiments whose file no row above reads (the cold start among them).
    covered = {target.file for target in TARGETS}
    extra = [
        (f"{name} (`{file}`)", t)
        for file, doc in results.items()
        if file not in covered
        for name, t in (doc.get("targets") or {}).items()
        if isinstance(t, dict)
    ]
    if not any(name.startswith("cold") for name, _ in extra):
        rows.append([*COLD_START, "not measured by this suite yet", "", ""])
    for name, t in extra:
        rows.append([name, str(t.get("target", "")), str(t.get("value")), yes_no(t.get("met")), ""])
    lines = [
        "## Targets (`shared/DESIGN.md` section 4)",
        "",
        "Each headline target with its value in this run (the interleaved figure, every"
        " peer's cluster up on the machine) and the peers measured in the same run.",
        "",
        *markdown_table(["what", "target", "stratus, this run", "met", "peers, same run"], rows),
    ]
    solo = pick(results, "core", "stratus.solo.sync_call.p50_us")
    if solo is not None:
        dag = pick(results, "core", "stratus.solo.dag.p50_us")
        lines += [
            "",
            f"With stratus alone on the machine (before any peer started): sync call p50"
            f" {cell_us(solo)}, DAG p50 {cell_us(dag)}.",
        ]
    return lines


def header_section(results: dict[str, dict[str, Any]], note: str) -> list[str]:
    suite = results.get("suite", {})
    core = results.get("core") or next(iter(results.values()), {})
    versions: dict[str, Any] = {}
    for doc in results.values():
        for name, version in (doc.get("versions") or {}).items():
            if name != "git" and isinstance(version, str):
                versions[name.replace("_", "-")] = version
    git = suite.get("git") or core.get("versions", {}).get("git") or {}
    machine = core.get("machine", {})
    durations = ", ".join(f"{e['name']} {e['seconds']:g} s" for e in suite.get("experiments", []))
    failed = suite.get("failed") or []
    rows = [
        ["date", suite.get("date", core.get("date", "?"))],
        ["command", "`make bench` (`.venv/bin/python bench/suite.py`)"],
        [
            "commit",
            f"`{git.get('commit', '?')[:10]}`"
            + (" (src/ modified)" if git.get("src_modified") else ""),
        ],
        [
            "machine",
            f"{machine.get('cpu_count', '?')} cores, {machine.get('platform', '?')},"
            f" {machine.get('python', '?')}",
        ],
        ["versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))],
        [
            "load average (1, 5, 15 min) at start / end",
            f"{suite.get('loadavg_start', '?')} / {suite.get('loadavg_end', '?')}",
        ],
        ["duration", f"{suite.get('seconds', '?')} s: {durations}"],
    ]
    for rerun in suite.get("reruns", []):
        rows.append(["rerun later", f"{rerun.get('date', '?')}: `{rerun.get('command', '?')}`"])
    if failed:
        rows.append(["failed experiments", ", ".join(failed)])
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/report.py from bench/results/*.json; edit that script, not"
        " this file. -->",
        "",
        "Every figure here comes from one run of `make bench`: `bench/suite.py` runs each"
        " experiment (`bench/<name>.py`) in its own process, saves the JSON document it prints"
        " in `bench/results/<name>.json`, then writes this file and the plots in `docs/img/`"
        " with `bench/report.py`. `make bench-quick` runs a subset with short settings (about a"
        " minute on a quiet machine) into `bench/results/quick/`.",
        "",
        "How to read the tables: latencies are per call, p50 (median) and p99, timed by the"
        " client with `time.perf_counter_ns`; every result is checked. Round trips between"
        " processes on these 2-core VMs are bimodal (a process woken on the other core pays"
        " 50-90 µs), so the systems run side by side in one process, in rounds that alternate"
        " their order (A B C, C B A, ...), and the samples of each are pooled. *ratio* is the"
        " row's p50 over stratus's p50 in the same table: above 1, stratus is faster."
        " Throughput is calls completed per second with many in flight.",
        "",
    ]
    if note:
        lines += [f"> {note}", ""]
    return [*lines, *markdown_table(["", ""], rows, header=False)]


def other_sections(results: dict[str, dict[str, Any]]) -> list[str]:
    """Experiments this module does not know: their ``table`` rows, if they give one."""
    lines: list[str] = []
    for name, doc in results.items():
        if name in KNOWN:
            continue
        lines += ["", f"## `{name}` (`bench/{name}.py`)", ""]
        table = sections.table_of(doc)
        if not table:
            lines.append(f"See `bench/results/{name}.json` (it gives no `table` to print).")
            continue
        lines += table
    return lines


def write_report(folder: Path, docs: Path, images: Path, note: str = "") -> str:
    """Write the report of the run in ``folder`` to ``docs``, its plots to ``images``."""
    results = load_results(folder)
    relative = Path(os.path.relpath(images, docs.parent))  # how the report links a plot
    body = [
        *header_section(results, note),
        "",
        *targets_section(results),
        *sections.all_sections(results, images, relative),
        *other_sections(results),
        "",
        "## Adding an experiment",
        "",
        "Write `bench/<name>.py` that prints one JSON document on stdout (progress on"
        " stderr) and takes `--quick` (and `--tiny` for the smoke test), then add one line"
        ' `Experiment("<name>")` to `EXPERIMENTS` in `bench/suite.py`. The report picks up'
        " its `targets` (`{name: {target, value, met}}`) into the targets table, and prints its"
        " `table` (rows with `system`, `p50_us`, `p99_us`, and optionally `per_s` and `ratio`)"
        " under its name; a section of its own goes in `bench/report_sections.py`.",
        "",
    ]
    text = "\n".join(body)
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=BENCH / "results")
    parser.add_argument("--docs", type=Path, default=BENCH.parent / "docs" / "benchmarks.md")
    parser.add_argument("--images", type=Path, default=BENCH.parent / "docs" / "img")
    parser.add_argument("--note", default="", help="a line under the title")
    args = parser.parse_args(argv)
    write_report(args.results, args.docs, args.images, args.note)


if __name__ == "__main__":
    main()
