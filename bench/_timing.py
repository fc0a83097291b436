"""Timing shared by the benchmarks: checked calls timed one by one, systems taking turns
(A B, B A, ...) so that the noise of this small VM hits them alike, and throughput runs."""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from _stats import median

Call = Callable[[int], Any]
Block = tuple[str, Call, Callable[[int], Any], int]  # kind, call(i), its result, calls a round


def time_calls(call: Call, expect: Callable[[int], Any], n: int) -> list[int]:
    """Latency in ns of ``call(i)`` for i in range(n); every result is checked, untimed."""
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        start = clock()
        value = call(i)
        samples[i] = clock() - start
        if value != expect(i):
            raise AssertionError(f"call({i}) returned {value!r}, expected {expect(i)!r}")
    return samples


def settle(seconds: float) -> None:
    """Let the previous block's after-effects (Ray's background work, say) die down."""
    time.sleep(seconds)
    gc.collect()


def alternating(names: Sequence[str], round_: int) -> Sequence[str]:
    """The order of a round: as given in even rounds, reversed in odd ones."""
    return names if round_ % 2 == 0 else names[::-1]


def latency_rounds(
    blocks: dict[str, list[Block]], rounds: int, settle_s: float
) -> dict[str, list[int]]:
    """Samples per ``system.kind``, from rounds in which the systems take turns (A B, B A)."""
    samples: dict[str, list[int]] = defaultdict(list)
    for round_ in range(rounds):
        for system in alternating(list(blocks), round_):
            for kind, call, expect, n in blocks[system]:
                settle(settle_s)
                samples[f"{system}.{kind}"] += time_calls(call, expect, n)
    return samples


def throughput(batch: Callable[[int], Sequence[Any]], n: int) -> float:
    """Calls per second of ``batch(n)``, which issues n calls of incr(i) and waits for all."""
    start = time.perf_counter_ns()
    results = batch(n)
    elapsed = time.perf_counter_ns() - start
    if list(results) != list(range(1, n + 1)):
        raise AssertionError("a throughput batch returned wrong results")
    return n / (elapsed / 1e9)


def throughput_runs(
    batches: dict[str, Callable[[int], Sequence[Any]]],
    calls: dict[str, int],
    runs: int,
    settle_s: float,
) -> dict[str, list[float]]:
    """Calls per second of each system's batch of ``calls[system]``, the systems taking turns."""
    rates: dict[str, list[float]] = defaultdict(list)
    for run_ in range(runs):
        for system in alternating(list(batches), run_):
            settle(settle_s)
            rates[system].append(throughput(batches[system], calls[system]))
    return rates


def throughput_summary(runs: Sequence[float], calls: int) -> dict[str, Any]:
    return {
        "calls_per_s": round(median(runs)),
        "runs_calls_per_s": [round(r) for r in runs],
        "calls_per_run": calls,
    }
