"""Metering and log-capture costs per call, measured in one process.

Run it with ``.venv/bin/python bench/metering.py`` (``--quick`` for a short run). It prints
one JSON document on stdout and writes it to ``bench/results/metering.json``.

What is measured (per operation, ``time.perf_counter_ns``, in alternating rounds so that
the machine's noise falls on both sides of each ratio):

1. ``meter``: ``Meter.begin`` + ``Meter.end`` of one attempt (the executor's added work
   per call: getrusage twice, two msgpack encodes, two copies into the mmap'd spool);
   the peer is an empty ``time.perf_counter_ns`` pair.
2. ``commit``: a one-key kv commit to SQLite with the record in the same transaction
   (``Meter.with_record``) against the same commit without it.
3. ``flush``: one batch of ``batch`` records written to the store (what the 250 ms timer
   does), and its cost per record.
4. ``print``: one ``print()`` captured into the invocation's log file against a ``print()``
   to ``/dev/null``; ``quiet_end``: the check at the end of an invocation that printed
   nothing (the only cost of capturing for most calls).

The whole-call effect is measured by ``bench/core.py`` (sync call p50 before and after;
see docs/metering.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _stats import git_revision, latency_summary, loadavg, ratio, stdout_to_stderr, write_json
from stratus.kv.open import open_store
from stratus.protocol import messages as m
from stratus.server.logs import InvocationLogs
from stratus.server.metering import Meter
from stratus.store.base import Put, Transaction

RESULTS = Path(__file__).resolve().parent / "results" / "metering.json"


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    n, count, batch = (500, 4, 500) if args.quick else (2000, 10, 1000)
    load_start = loadavg()
    with tempfile.TemporaryDirectory() as d, stdout_to_stderr():
        store = open_store(f"sqlite:{d}/state.db")
        meter = Meter(d, "bench", "x1", store)
        call = m.Call(1, "c1.1", "incr", 1, b"", 1, 300.0, "c1")

        def metered(i: int) -> None:
            meter.end(meter.begin(call, 512), "ok")

        def plain_commit(i: int) -> None:
            store.commit(Transaction({}, [Put(f"k{i % 100}", b"v" * 100)]))

        def recorded_commit(i: int) -> None:
            running = meter.begin(call, 512)
            writes = [Put(f"k{i % 100}", b"v" * 100)]
            txn = meter.with_record(running, Transaction({}, writes), 0, writes)
            assert store.commit(txn).ok
            meter.committed(running)
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
        saved = sys.stdout
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

        samples = rounds(
            {
                "meter": metered,
                "empty": nothing,
                "commit_plain": plain_commit,
                "commit_with_record": recorded_commit,
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
    document = {
        "benchmark": "metering",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "git": git_revision(),
        "load": {"loadavg_start": load_start, "loadavg_end": loadavg()},
        "per_call": summary,
        "flush": {"records": batch, **flush_summary},
        "derived": {
            "meter_added_p50_us": round(summary["meter"]["p50_us"] - summary["empty"]["p50_us"], 3),
            "commit_with_record_over_plain_p50": ratio(
                summary["commit_with_record"]["p50_us"], summary["commit_plain"]["p50_us"]
            ),
            "flush_per_record_us": round(flush_summary["p50_us"] / batch, 3),
            "print_captured_over_devnull_p50": ratio(
                summary["print_captured"]["p50_us"], summary["print_devnull"]["p50_us"]
            ),
        },
    }
    print(write_json(args.output, document))


if __name__ == "__main__":
    main()
