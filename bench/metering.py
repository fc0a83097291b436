"""Metering and log-capture costs per call, measured in one process.

Run it with ``.venv/bin/python bench/metering.py`` (``--quick`` for a short run, ``--tiny``
for the suite's smoke test). It prints one JSON document on stdout and writes it to
``bench/results/metering.json`` (or ``$STRATUS_BENCH_RESULTS``); progress goes to stderr.

What is measured (per operation, ``time.perf_counter_ns``, in alternating rounds so that
the machine's noise falls on both sides of each ratio):

1. ``meter``: ``Meter.begin`` + ``Meter.end`` of one attempt (the executor's added work
   per call: two CPU-clock reads, two msgpack encodes, two copies into the mmap'd spool);
   the peer is an empty ``time.perf_counter_ns`` pair.
2. ``commit``: a one-key kv commit to SQLite with the meter around it (``begin``, the
   commit, ``Meter.note_writes``, ``end``: what a writing call pays for metering) against
   the same commit alone.
3. ``flush``: one batch of ``batch`` records written to the store (what the 250 ms timer
   does), and its cost per record.
4. ``print``: one ``print()`` captured into the invocation's log file against a ``print()``
   to ``/dev/null``; ``quiet_end``: the check at the end of an invocation that printed
   nothing (the only cost of capturing for most calls).

The whole-call effect is measured by ``bench/core.py`` (sync call p50 before and after;
see docs/metering.md).
"""

from __future__ import annotations

import gc
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from _stats import bench_main, latency_summary, loadavg, ratio, results_path, run_header
from stratus.kv.open import open_store
from stratus.protocol import messages as m
from stratus.server.logs import InvocationLogs
from stratus.server.metering import Meter
from stratus.store.base import Put, Transaction

RESULTS = results_path("metering")


@dataclass(frozen=True)
class Settings:
    n: int = 2000  # operations per round
    rounds: int = 10
    batch: int = 1000  # records per flush


QUICK = Settings(n=500, rounds=4, batch=500)
TINY = Settings(n=50, rounds=2, batch=50)


def timed(op: Callable[[int], Any], n: int) -> list[int]:
    samples = []
    for i in range(n):
        t = time.perf_counter_ns()
        op(i)
        samples.append(time.perf_counter_ns() - t)
    return samples


def rounds(ops: dict[str, Callable[[int], Any]], n: int, count: int) -> dict[str, list[int]]:
    """Each op ``n`` times per round, ``count`` rounds, the order reversed every round."""
    out: dict[str, list[int]] = {name: [] for name in ops}
    names = list(ops)
    for r in range(count):
        gc.collect()
        for name in names if r % 2 == 0 else reversed(names):
            out[name] += timed(ops[name], n)
    return out


def run(settings: Settings, mode: str) -> dict[str, Any]:
    doc: dict[str, Any] = run_header("metering", mode, sqlite=sqlite3.sqlite_version)
    doc["settings"] = asdict(settings)
    n, count, batch = settings.n, settings.rounds, settings.batch
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"sqlite:{d}/state.db")
        meter = Meter(d, "bench", "x1", store)
        call = m.Call(1, "c1.1", "incr", 1, b"", 1, 300.0, "c1")

        def metered(i: int) -> None:
            meter.end(meter.begin(call, 512), "ok")

        def plain_commit(i: int) -> None:
            assert store.commit(Transaction({}, [Put(f"k{i % 100}", b"v" * 100)])).ok

        def metered_commit(i: int) -> None:  # what a writing call pays for metering
            running = meter.begin(call, 512)
            writes = [Put(f"k{i % 100}", b"v" * 100)]
            assert store.commit(Transaction({}, writes)).ok
            meter.note_writes(running, writes)
            meter.end(running, "ok")

        def flush(i: int) -> None:
            for _ in range(batch):
                meter.end(meter.begin(call, 512), "ok")
            t = time.perf_counter_ns()
            meter.flush()
            flushes.append(time.perf_counter_ns() - t)

        flushes: list[int] = []
        running_call: list[m.Call | None] = [call]
        logs = InvocationLogs(d, "bench", "x1", lambda: running_call[0])
        null = open("/dev/null", "w")  # noqa: SIM115
        saved, sys.stdout = sys.stdout, null  # the captured lines' copy goes nowhere
        logs.install()
        capture = sys.stdout
        sys.stdout = saved

        def captured_print(i: int) -> None:
            print("a line of output", i, file=capture)

        def plain_print(i: int) -> None:
            print("a line of output", i, file=null)

        def nothing(i: int) -> None:
            time.perf_counter_ns()

        def quiet_end(i: int) -> None:
            logs.end_invocation()

        print(f"metering: {count} rounds of {n} operations", file=sys.stderr, flush=True)
        samples = rounds(
            {
                "meter": metered,
                "empty": nothing,
                "commit_plain": plain_commit,
                "commit_metered": metered_commit,
                "print_captured": captured_print,
                "print_devnull": plain_print,
                "quiet_end": quiet_end,
            },
            n,
            count,
        )
        for i in range(max(3, count)):
            flush(i)
        null.close()
        logs.close()
        meter.close()
        store.close()
    summary = {name: latency_summary(s) for name, s in samples.items()}
    flush_summary = latency_summary(flushes)
    doc["per_call"] = summary
    doc["flush"] = {"records": batch, **flush_summary}
    doc["derived"] = {
        "meter_added_p50_us": round(summary["meter"]["p50_us"] - summary["empty"]["p50_us"], 3),
        "commit_metered_added_p50_us": round(
            summary["commit_metered"]["p50_us"] - summary["commit_plain"]["p50_us"], 3
        ),
        "commit_metered_over_plain_p50": ratio(
            summary["commit_metered"]["p50_us"], summary["commit_plain"]["p50_us"]
        ),
        "flush_per_record_us": round(flush_summary["p50_us"] / batch, 3),
        "print_captured_over_devnull_p50": ratio(
            summary["print_captured"]["p50_us"], summary["print_devnull"]["p50_us"]
        ),
    }
    doc["table"] = table(summary)
    doc["load"]["loadavg_end"] = loadavg()
    return doc


def table(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's rows: each metered operation, then its peer without metering or
    capture; per_s is one at a time (1 / mean), ratio is the row's p50 over the first's."""
    pairs = [
        ("meter begin + end", "meter", "an empty timer pair", "empty"),
        ("one-key commit + meter begin/end", "commit_metered", "one-key commit", "commit_plain"),
        ("print() captured to the log", "print_captured", "print() to /dev/null", "print_devnull"),
    ]
    rows = []
    for ours, key, peer, peer_key in pairs:
        base = summary[key]
        rows.append(_row(ours, base, base))
        rows.append(_row(peer, summary[peer_key], base))
    rows.append(_row("end of an invocation that printed nothing", summary["quiet_end"], None))
    return rows


def _row(system: str, summary: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "system": system,
        "p50_us": summary["p50_us"],
        "p99_us": summary["p99_us"],
        "per_s": round(1e6 / summary["mean_us"], 1) if summary["mean_us"] else None,
        "ratio": ratio(summary["p50_us"], base["p50_us"]) if base else None,
    }


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__ or "", RESULTS, settings, run, argv=argv)


if __name__ == "__main__":
    main()
