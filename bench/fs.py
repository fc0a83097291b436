"""File-system benchmark: ``ctx.fs`` inside functions on the embedded store.

Run it with ``.venv/bin/python bench/fs.py`` (``--quick`` for a short run, ``--tiny`` for
the suite's smoke test; ``make bench-fs``). It prints one JSON document on stdout and writes
it to ``bench/results/fs.json`` (or ``$STRATUS_BENCH_RESULTS``); progress goes to stderr.

Set-up: an embedded cluster with one executor (so the executor that wrote a file is the
one whose cache serves it), its store in SQLite (WAL, ``synchronous=NORMAL``) under a
temporary directory. Peers measured in the same run: the same operations on the local
file system (a temporary directory) inside the same function, and a function that touches
nothing (the call's own cost, the floor of every call-level figure).

What is measured:

1. ``create + write 4 KiB + commit``: ``small.remote(i).result()`` from the client, where
   the function opens a new file, writes 4 KiB and returns (the executor then commits):
   the whole call, the no-op call (floor) and the difference (the fs cost, commit
   included). Also the same transaction timed in this process with ``app.fs.transaction``
   (no call at all: the fs layer and one store commit).
2. ``read of a cached 4 KiB file``: timed inside the function around
   ``open(path, "rb").read()`` + close: the first read of a fresh invocation (the
   executor's cache is warm, the transaction is new: path lookup, inode and chunk from the
   cache), and a read repeated in one invocation; the native file read the same way.
3. ``1 MiB sequential write and read``: a function writes 1 MiB in 64 KiB writes (timed
   inside, and the call with its commit, minus the floor), another reads it back in
   64 KiB reads (timed inside); the same on the native file system.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import stratus
from _procs import wait_for_no_children
from _stats import (
    bench_main,
    check_targets,
    latency_summary,
    loadavg,
    median,
    ratio,
    results_path,
    run_header,
)
from stratus.fs.session import transaction

RESULTS = results_path("fs")
TARGETS = {  # name: (path into the document, comparison, bound)
    "small_create_commit_p50_us": ("small_file.stratus_fs_cost_p50_us", "<=", 300.0),
    "cached_read_4k_p50_us": ("cached_read_4k.first_in_invocation.p50_us", "<=", 20.0),
}
SMALL = b"x" * 4096
BIG_PIECE = b"y" * 65536
BIG_PIECES = 16  # 1 MiB


@dataclass(frozen=True)
class Settings:
    small_calls: int = 2000
    reads: int = 2000
    big_rounds: int = 30


QUICK = Settings(small_calls=300, reads=300, big_rounds=5)
TINY = Settings(small_calls=40, reads=20, big_rounds=2)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed_calls(call: Callable[[int], Any], n: int) -> list[int]:
    samples = []
    gc.collect()
    for i in range(n):
        start = time.perf_counter_ns()
        call(i)
        samples.append(time.perf_counter_ns() - start)
    return samples


def register(app: stratus.App, native: str) -> dict[str, Any]:
    """The benchmark's functions; ``native`` is a local directory for the peer runs."""

    @app.function(volume="bench")
    def noop(ctx: stratus.Context, i: int) -> None:
        return None

    @app.function(volume="bench")
    def small(ctx: stratus.Context, i: int) -> None:
        with ctx.fs.open(f"/small/{i}", "wb") as f:
            f.write(SMALL)

    @app.function(volume="bench")
    def native_small(ctx: stratus.Context, i: int) -> None:
        with open(f"{native}/small-{i}", "wb") as f:
            f.write(SMALL)

    @app.function(volume="bench")
    def read_hot(ctx: stratus.Context, repeat: int, local: bool) -> list[int]:
        opener = open if local else ctx.fs.open
        path = f"{native}/hot" if local else "/hot"
        samples = []
        for _ in range(repeat):
            start = time.perf_counter_ns()
            with opener(path, "rb") as f:
                f.read()
            samples.append(time.perf_counter_ns() - start)
        return samples

    @app.function(volume="bench")
    def write_big(ctx: stratus.Context, local: bool) -> int:
        start = time.perf_counter_ns()
        with open(f"{native}/big", "wb") if local else ctx.fs.open("/big", "wb") as f:
            for _ in range(BIG_PIECES):
                f.write(BIG_PIECE)
        return time.perf_counter_ns() - start

    @app.function(volume="bench")
    def read_big(ctx: stratus.Context, local: bool) -> int:
        start = time.perf_counter_ns()
        with open(f"{native}/big", "rb") if local else ctx.fs.open("/big", "rb") as f:
            while f.read(65536):
                pass
        return time.perf_counter_ns() - start

    return {
        "noop": noop,
        "small": small,
        "native_small": native_small,
        "read_hot": read_hot,
        "write_big": write_big,
        "read_big": read_big,
    }


def measure_small(app: stratus.App, fns: dict[str, Any], s: Settings) -> dict[str, Any]:
    with app.fs.transaction(volume="bench") as fs:
        fs.mkdir("/small")
    noop, small, native = fns["noop"], fns["small"], fns["native_small"]
    for fn in (noop, small, native):  # warm the code and the caches
        for i in range(50):
            fn.remote(10**6 + i).result(timeout=30)
    floor, ours, peer = [], [], []
    for round_ in range(4):  # alternate the order, pool the samples
        order = [(floor, noop), (ours, small), (peer, native)]
        for samples, fn in order if round_ % 2 == 0 else order[::-1]:
            samples += timed_calls(
                lambda i, fn=fn, base=round_ * s.small_calls: fn.remote(base + i).result(30),
                s.small_calls // 4,
            )
    in_process = []
    volumes = app.fs.volumes
    for i in range(s.small_calls // 4):
        start = time.perf_counter_ns()
        with transaction(volumes, "bench") as fs, fs.open(f"/small/client-{i}", "wb") as f:
            f.write(SMALL)
        in_process.append(time.perf_counter_ns() - start)
    floor_p50 = latency_summary(floor)["p50_us"]
    doc = {
        "noop_call": latency_summary(floor),
        "stratus_call": latency_summary(ours),
        "native_call": latency_summary(peer),
        "client_transaction": latency_summary(in_process),
    }
    doc["stratus_fs_cost_p50_us"] = round(doc["stratus_call"]["p50_us"] - floor_p50, 3)
    doc["native_fs_cost_p50_us"] = round(doc["native_call"]["p50_us"] - floor_p50, 3)
    return doc


def measure_reads(
    app: stratus.App, fns: dict[str, Any], s: Settings, native: str
) -> dict[str, Any]:
    with app.fs.transaction(volume="bench") as fs:
        fs.write_bytes("/hot", SMALL)
    Path(native, "hot").write_bytes(SMALL)
    read_hot = fns["read_hot"]
    read_hot.remote(5, False).result(timeout=30)  # the executor caches it
    first, first_native, repeated, repeated_native = [], [], [], []
    for _ in range(s.reads):
        first += read_hot.remote(1, False).result(timeout=30)
        first_native += read_hot.remote(1, True).result(timeout=30)
    for _ in range(max(1, s.reads // 100)):
        repeated += read_hot.remote(100, False).result(timeout=30)
        repeated_native += read_hot.remote(100, True).result(timeout=30)
    return {
        "first_in_invocation": latency_summary(first),
        "native_first_in_invocation": latency_summary(first_native),
        "repeated_in_invocation": latency_summary(repeated),
        "native_repeated_in_invocation": latency_summary(repeated_native),
    }


def measure_big(app: stratus.App, fns: dict[str, Any], s: Settings) -> dict[str, Any]:
    noop, write_big, read_big = fns["noop"], fns["write_big"], fns["read_big"]
    rows: dict[str, list[int]] = {k: [] for k in ("write", "write_call", "read", "floor")}
    native: dict[str, list[int]] = {k: [] for k in ("write", "read")}
    for _ in range(s.big_rounds):
        start = time.perf_counter_ns()
        rows["write"].append(write_big.remote(False).result(timeout=60))
        rows["write_call"].append(time.perf_counter_ns() - start)
        rows["read"].append(read_big.remote(False).result(timeout=60))
        native["write"].append(write_big.remote(True).result(timeout=60))
        native["read"].append(read_big.remote(True).result(timeout=60))
        start = time.perf_counter_ns()
        noop.remote(0).result(timeout=60)
        rows["floor"].append(time.perf_counter_ns() - start)

    def mb_per_s(samples: list[int]) -> float:
        return round(1.0 / (median(samples) / 1e9), 1)

    commit_ns = [w - f for w, f in zip(rows["write_call"], rows["floor"], strict=True)]
    return {
        "stratus_write_in_function": latency_summary(rows["write"]),
        "stratus_write_call_minus_floor": latency_summary(commit_ns),
        "stratus_read_in_function": latency_summary(rows["read"]),
        "native_write_in_function": latency_summary(native["write"]),
        "native_read_in_function": latency_summary(native["read"]),
        "stratus_write_MiB_per_s_incl_commit": mb_per_s(commit_ns),
        "stratus_read_MiB_per_s": mb_per_s(rows["read"]),
        "native_write_MiB_per_s": mb_per_s(native["write"]),
        "native_read_MiB_per_s": mb_per_s(native["read"]),
    }


def table(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's rows: each operation in a function on stratus and on the native file
    system; per_s is one at a time (1 / mean), ratio is the row's p50 over stratus's."""
    small, reads = doc["small_file"], doc["cached_read_4k"]
    big = doc["sequential_1MiB"]
    pairs = [
        ("create + write 4 KiB, the whole call", small["stratus_call"], small["native_call"]),
        (
            "read of a cached 4 KiB file, first in an invocation",
            reads["first_in_invocation"],
            reads["native_first_in_invocation"],
        ),
        (
            "read of a cached 4 KiB file, repeated in an invocation",
            reads["repeated_in_invocation"],
            reads["native_repeated_in_invocation"],
        ),
        (
            "write 1 MiB (64 KiB writes)",
            big["stratus_write_in_function"],
            big["native_write_in_function"],
        ),
        (
            "read 1 MiB (64 KiB reads)",
            big["stratus_read_in_function"],
            big["native_read_in_function"],
        ),
    ]
    rows = [{"system": "no-op call (the floor of the call rows)", **_row(small["noop_call"], None)}]
    for what, ours, native in pairs:
        rows.append({"system": f"stratus: {what}", **_row(ours, ours)})
        rows.append({"system": f"native: {what}", **_row(native, ours)})
    return rows


def _row(summary: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "p50_us": summary["p50_us"],
        "p99_us": summary["p99_us"],
        "per_s": round(1e6 / summary["mean_us"], 1),
        "ratio": ratio(summary["p50_us"], base["p50_us"]) if base else None,
    }


def run(settings: Settings, mode: str) -> dict[str, Any]:
    doc: dict[str, Any] = run_header("fs", mode, sqlite=sqlite3.sqlite_version)
    doc["settings"] = asdict(settings)
    doc["cluster"] = {"executors": 1, "store": "sqlite:<data_dir>/state.db (WAL, NORMAL)"}
    with tempfile.TemporaryDirectory(prefix="stratus-fs-bench-") as base:
        native = os.path.join(base, "native")
        os.mkdir(native)
        with stratus.connect(data_dir=os.path.join(base, "stratus"), executors=1) as app:
            fns = register(app, native)
            progress("1/3 create + write 4 KiB + commit")
            doc["small_file"] = measure_small(app, fns, settings)
            progress("2/3 read of a cached 4 KiB file")
            doc["cached_read_4k"] = measure_reads(app, fns, settings, native)
            progress("3/3 1 MiB sequential write and read")
            doc["sequential_1MiB"] = measure_big(app, fns, settings)
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["targets"] = check_targets(doc, TARGETS)
    doc["cached_read_4k"]["over_native_p50"] = ratio(
        doc["cached_read_4k"]["first_in_invocation"]["p50_us"],
        doc["cached_read_4k"]["native_first_in_invocation"]["p50_us"],
    )
    doc["table"] = table(doc)
    doc["load"]["loadavg_end"] = loadavg()
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__ or "", RESULTS, settings, run, argv=argv)


if __name__ == "__main__":
    main()
