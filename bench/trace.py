"""Trace benchmark: fixed versus learned keep-alive, replaying one invocation trace.

Run it with ``.venv/bin/python bench/trace.py`` (``--quick`` for a short run, ``--tiny``
for the suite's smoke test; ``--trace FILE.csv`` to replay a trace of the Azure Functions
2019 public data set, ``invocations_per_function_md.anon.dNN.csv``, instead of a synthetic
one; ``--minutes``, ``--minute``, ``--functions`` and the other settings override the
mode's). It prints one JSON document on stdout, writes it to ``bench/results/trace.json``
(or ``$STRATUS_BENCH_RESULTS``) and draws pool sizes and latencies over time in
``docs/img/elastic.png`` (or ``$STRATUS_BENCH_IMAGES``, see ``_stats.images_path``;
matplotlib, from the ``bench`` extra).

The trace format is Azure's: one row per function, ``HashOwner, HashApp, HashFunction,
Trigger``, then invocations in each minute of the day (columns ``1`` .. ``1440``).
``synthesize`` writes one whose shape follows what "Serverless in the Wild" (ATC 2020)
measured: rates spread over orders of magnitude (HTTP-like functions with Poisson
arrivals, mean rates log-uniform from one an hour to 10 a minute), timer-triggered
functions firing every 1 to 30 minutes (cron's usual periods), and bursty ones (quiet, then
a few minutes of many calls); 40 % timers, 40 % HTTP, 20 % bursty.

Replay: time is compressed, one trace minute lasting ``--minute`` seconds (0.25 s in the
full suite: 240 trace minutes in 60 s, so that timers of up to 20 minutes are learned); the
calls of a minute are spread uniformly at random over it. Two embedded clusters replay the
same trace at the same time, one with a fixed keep-alive of 10 trace minutes (Azure's
practice), one with the hybrid-histogram policy (1-minute bins over 4 trace hours, 10-minute
fallback); both have the same autoscaler and the same cap.

What is measured, per policy:

- **cold-start percentage**: a call is cold when the instance of its function that served
  it was built (on pinning, or lazily) after the call was issued, so the call waited for an
  executor or for the code: each function is a class whose ``__init__`` notes the time, and
  CLOCK_MONOTONIC is one clock for all processes of the machine;
- **idle executor memory-seconds**: every ``--sample`` seconds, the executors alive that run
  no call (``status()``), times the executors' mean PSS, summed over the replay, in MB x
  wall seconds and in MB x trace seconds (x 60 / ``--minute``);
- call latency (p50, p99) as the caller sees it.

The same trace also drives the pool-sizing state machine alone (``simulate``: no cluster,
a fake clock, each call taking ``--work`` seconds): cold starts there are calls that find
their pool at zero, memory the sum of pool sizes over time. It isolates what the policy
decides from what the machine adds (process wake-ups under load, bursts that outgrow a
pool), and it is deterministic.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import stratus
from _procs import pss_bytes, wait_for_no_children
from _stats import (
    bench_main,
    check_targets,
    images_path,
    latency_summary,
    loadavg,
    ratio,
    results_path,
    run_header,
)

RESULTS = results_path("trace")
PLOT = images_path("elastic")
TARGETS = {  # name: (path into the document, comparison, bound)
    "learned_over_fixed_cold_start_pct": ("ratios.cold_pct_learned_over_fixed", "<=", 1.0),
    "learned_over_fixed_idle_memory_mb_s": ("ratios.idle_memory_learned_over_fixed", "<=", 1.0),
}
MINUTES_PER_DAY = 1440
TIMER_PERIODS = [5, 15, 30, 2, 10, 20, 1]  # minutes


@dataclass(frozen=True)
class Settings:
    functions: int = 12  # synthesized (or the first rows of --trace)
    minutes: int = 240  # trace minutes replayed
    minute: float = 0.25  # wall seconds per trace minute
    cap: int = 16  # executors per cluster at most
    work: float = 0.002  # seconds each call runs
    sample: float = 0.1  # seconds between samples of the executors
    seed: int = 5


QUICK = Settings(functions=6, minutes=80)
TINY = Settings(functions=5, minutes=12, minute=0.1, cap=8)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- traces


@dataclass(frozen=True)
class Row:
    owner: str
    app: str
    function: str
    trigger: str
    counts: list[int]  # invocations per minute


def synthesize(functions: int, minutes: int, seed: int) -> list[Row]:
    """A synthetic trace with the published shapes (see the module docstring)."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for i in range(functions):
        kind = ("timer", "timer", "http", "http", "bursty")[i % 5]
        counts = [0] * MINUTES_PER_DAY
        if kind == "timer":  # every `period` minutes (cron's usual ones), at a fixed phase
            period = rng.choice(TIMER_PERIODS)
            phase = rng.randrange(period)
            for m in range(phase, minutes, period):
                counts[m] = 1
        elif kind == "http":  # Poisson, mean rate log-uniform from 1/60 to 10 per minute
            rate = math.exp(rng.uniform(math.log(1 / 60), math.log(10)))
            for m in range(minutes):
                counts[m] = _poisson(rng, rate)
        else:  # bursty: quiet, then bursts of a few minutes
            m = rng.randrange(10)
            while m < minutes:
                for b in range(m, min(minutes, m + rng.randint(1, 3))):
                    counts[b] = rng.randint(5, 30)
                m += rng.randint(15, 40)
        owner, app = f"o{i % 4}", f"a{i}"
        rows.append(Row(owner, app, f"f{i}", kind, counts))
    return rows


def _poisson(rng: random.Random, rate: float) -> int:
    """Knuth's method: fine for the small rates used here."""
    limit, k, p = math.exp(-rate), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def write_trace(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            ["HashOwner", "HashApp", "HashFunction", "Trigger"]
            + [str(m) for m in range(1, MINUTES_PER_DAY + 1)]
        )
        for r in rows:
            out.writerow([r.owner, r.app, r.function, r.trigger, *r.counts])


def read_trace(path: Path) -> list[Row]:
    """Rows of an Azure 2019 ``invocations_per_function`` CSV."""
    with path.open(newline="") as f:
        rows = []
        for record in csv.DictReader(f):
            counts = [int(record.get(str(m)) or 0) for m in range(1, MINUTES_PER_DAY + 1)]
            rows.append(
                Row(
                    record["HashOwner"],
                    record["HashApp"],
                    record["HashFunction"],
                    record["Trigger"],
                    counts,
                )
            )
    return rows


# --------------------------------------------------------------------------- replay


class Traced:
    """A function of the trace: the instance notes when it was built (its cold start)."""

    def __init__(self) -> None:
        self.built = time.monotonic()

    def __call__(self, ctx: Any, work: float) -> float:
        if work:
            time.sleep(work)
        return self.built


@dataclass
class Replay:
    policy: str
    calls: list[tuple[float, float, bool]] = field(default_factory=list)  # at, ms, cold
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # at, alive, busy
    pool_sizes: list[int] = field(default_factory=list)  # sum of the pools' sizes, per sample
    executor_pss_mb: float = 0.0
    errors: int = 0


def schedule(rows: list[Row], minutes: int, minute: float, seed: int) -> list[tuple[float, int]]:
    """(offset in seconds, row index) of every call, in order."""
    rng = random.Random(seed)
    calls = [
        (m * minute + rng.random() * minute, i)
        for i, row in enumerate(rows)
        for m in range(minutes)
        for _ in range(row.counts[m])
    ]
    return sorted(calls)


def replay(
    policy: str,
    rows: list[Row],
    calls: list[tuple[float, int]],
    start: float,
    args: Settings,
    data_dir: Path,
) -> Replay:
    config = _autoscaling(policy, args.minute)
    result = Replay(policy)
    with stratus.connect(data_dir=data_dir, executors=args.cap, autoscaling=config) as app:
        handles = [
            app.function(name=f"{policy}-{r.function}", max_instances=4, retries=0)(Traced)
            for r in rows
        ]
        stop = threading.Event()
        sampler = threading.Thread(target=_sample, args=(app, result, start, stop, args.sample))
        sampler.start()
        finished: list[tuple[float, float, float, Any]] = []  # issued, sent, done, future
        futures = []
        try:
            while time.monotonic() < start:
                time.sleep(0.005)
            for offset, i in calls:
                delay = start + offset - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                issued, sent = time.monotonic(), time.perf_counter()
                future = handles[i].remote(args.work)
                future.add_done_callback(
                    lambda f, a=issued, b=sent: finished.append((a, b, time.perf_counter(), f))
                )
                futures.append(future)
            for future in futures:
                try:
                    future.result(timeout=60)
                except stratus.StratusError:
                    result.errors += 1
        finally:
            stop.set()
            sampler.join()
        for issued, sent, done, future in sorted(finished, key=lambda x: x[0]):
            if future.exception() is None:
                cold = future.result() > issued  # built after the call was issued
                result.calls.append((issued - start, (done - sent) * 1000, cold))
    return result


def _autoscaling(policy: str, minute: float) -> stratus.AutoscalingConfig:
    """Knative's windows and Azure's keep-alive and bins, in compressed time."""
    scale = minute / 60.0  # wall seconds per trace second
    return stratus.AutoscalingConfig(
        tick=0.1,
        stable_window=60 * scale,
        panic_window=6 * scale,
        scale_to_zero_grace=0.2,
        keep_alive=policy,
        fixed_keep_alive=600 * scale,
        idle_bin=60 * scale,
        idle_range=4 * 3600 * scale,
        drain=0.05,
    )


def _sample(
    app: stratus.App, result: Replay, start: float, stop: threading.Event, every: float
) -> None:
    pss: list[float] = []
    while not stop.wait(every):
        status = app.status()
        alive = [e for e in status.executors if e.state in ("ready", "draining", "starting")]
        busy = sum(1 for e in alive if e.inflight > 0)
        result.samples.append((time.monotonic() - start, len(alive), busy))
        result.pool_sizes.append(sum(p.target for p in status.pools))
        if len(pss) < 50:
            pss += [pss_bytes(e.pid) or 0 for e in alive if e.state == "ready" and e.pid]
    known = [p / 2**20 for p in pss if p > 0]
    result.executor_pss_mb = round(sum(known) / len(known), 1) if known else 0.0


def simulate(
    policy: str, rows: list[Row], calls: list[tuple[float, int]], args: Settings
) -> dict[str, Any]:
    """The trace through `Elastic` alone, ticking every 0.1 s of wall time (see above)."""
    from stratus.server.pools import Configure, Demand, Elastic, Load, Tick

    tick = 0.1
    e = Elastic(_autoscaling(policy, args.minute))
    for r in rows:
        e.handle(Configure(r.function, 0, 4), 0.0)
    now, i, cold, pool_seconds = 0.0, 0, 0, 0.0
    end = calls[-1][0] + 60 * args.minute if calls else 0.0
    while now < end:
        now += tick
        counts: dict[str, int] = {}
        while i < len(calls) and calls[i][0] < now:
            function = rows[calls[i][1]].function
            if e.sizes()[function][0] == 0:
                cold += 1
                e.handle(Demand(function, 1), calls[i][0])
            counts[function] = counts.get(function, 0) + 1
            i += 1
        for function, n in counts.items():
            e.handle(Load(function, n, n * args.work, 0, 0), now)
        e.handle(Tick(), now)
        pool_seconds += tick * sum(size for size, _, _ in e.sizes().values())
    return {
        "cold_start_pct": round(100 * cold / max(1, len(calls)), 2),
        "pool_executor_seconds_wall": round(pool_seconds, 1),
    }


def summarize(r: Replay, args: Settings) -> dict[str, Any]:
    cold = sum(1 for _, _, c in r.calls if c)
    idle_executor_s = sum(max(0, alive - busy) * args.sample for _, alive, busy in r.samples)
    mb = r.executor_pss_mb
    return {
        "calls": len(r.calls),
        "errors": r.errors,
        "cold_starts": cold,
        "cold_start_pct": round(100 * cold / max(1, len(r.calls)), 2),
        "idle_executor_seconds_wall": round(idle_executor_s, 1),
        "executor_pss_mb": mb,
        "idle_memory_mb_s_wall": round(idle_executor_s * mb, 1),
        "idle_memory_mb_s_trace": round(idle_executor_s * mb * 60 / args.minute, 1),
        "latency": latency_summary([int(ms * 1e6) for _, ms, _ in r.calls]) if r.calls else {},
        "mean_pool_size_sum": round(sum(r.pool_sizes) / max(1, len(r.pool_sizes)), 2),
        "mean_executors_alive": round(sum(a for _, a, _ in r.samples) / max(1, len(r.samples)), 2),
    }


def plot(replays: list[Replay], path: Path, minute: float) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for r, color in zip(replays, ("tab:orange", "tab:blue"), strict=False):
        xs = [t / minute for t, _, _ in r.samples]
        top.step(xs, [a for _, a, _ in r.samples], where="post", color=color, label=r.policy)
        warm = [(t / minute, ms) for t, ms, c in r.calls if not c]
        cold = [(t / minute, ms) for t, ms, c in r.calls if c]
        bottom.scatter(*zip(*warm, strict=True), s=4, color=color, alpha=0.4) if warm else None
        if cold:
            bottom.scatter(
                *zip(*cold, strict=True), s=14, marker="x", color=color, label=f"{r.policy} cold"
            )
    top.set_ylabel("executors alive")
    top.legend(loc="upper right")
    bottom.set_yscale("log")
    bottom.set_ylabel("call latency (ms)")
    bottom.set_xlabel("trace minute")
    bottom.legend(loc="upper right")
    fig.suptitle("stratus: fixed 10-minute keep-alive vs learned (hybrid histogram)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def table(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's rows: each policy's cold starts, idle executors and memory on the
    cluster, and the pool-sizing state machine alone on the same trace."""
    rows = []
    for policy, key in (("fixed 10-minute keep-alive", "fixed_10_min"), ("learned", "learned")):
        replayed, alone = doc[key], doc["policy_alone"][key]
        rows.append(
            {
                "policy": policy,
                "calls": replayed["calls"],
                "cold_starts": replayed["cold_starts"],
                "cold_start_pct": replayed["cold_start_pct"],
                "idle_memory_mb_s_wall": replayed["idle_memory_mb_s_wall"],
                "idle_executor_seconds_wall": replayed["idle_executor_seconds_wall"],
                "mean_executors_alive": replayed["mean_executors_alive"],
                "alone_cold_start_pct": alone["cold_start_pct"],
                "alone_pool_executor_seconds_wall": alone["pool_executor_seconds_wall"],
            }
        )
    return rows


def load_rows(settings: Settings, trace: str, folder: Path) -> tuple[list[Row], str]:
    """The trace's rows: the first of ``trace`` (a CSV), or a synthetic trace written to
    ``folder`` and read back (so that the reader is exercised)."""
    if trace:
        return read_trace(Path(trace))[: settings.functions], trace
    rows = synthesize(settings.functions, settings.minutes, settings.seed)
    trace_file = folder / "synthetic.csv"
    write_trace(rows, trace_file)
    return read_trace(trace_file), "synthetic"


def run(args: Settings, mode: str, trace: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = run_header("trace", mode)
    doc["settings"] = asdict(args)
    with tempfile.TemporaryDirectory(prefix="stratus-trace-bench-") as tmp:
        rows, source = load_rows(args, trace, Path(tmp))
        calls = schedule(rows, args.minutes, args.minute, args.seed)
        log(f"trace: replaying {len(calls)} calls of {len(rows)} functions, {args.minutes} min")
        start = time.monotonic() + 3.0  # both clusters up before the first call
        results: dict[str, Replay] = {}
        threads = [
            threading.Thread(
                target=lambda p=p: results.__setitem__(
                    p, replay(p, rows, calls, start, args, Path(tmp) / p)
                )
            )
            for p in ("fixed", "hybrid")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    missing = {"fixed", "hybrid"} - set(results)
    if missing:  # a replay's thread failed: its traceback is above
        raise SystemExit(f"trace: the replay of {', '.join(sorted(missing))} failed")
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    image = plot([results["fixed"], results["hybrid"]], PLOT, args.minute)
    fixed, learned = summarize(results["fixed"], args), summarize(results["hybrid"], args)
    doc["trace"] = {
        "source": source,
        "functions": len(rows),
        "triggers": sorted({r.trigger for r in rows}),
        "minutes": args.minutes,
        "wall_seconds_per_minute": args.minute,
        "calls": len(calls),
    }
    doc["fixed_10_min"] = fixed
    doc["learned"] = learned
    doc["ratios"] = {
        "cold_pct_learned_over_fixed": ratio(learned["cold_start_pct"], fixed["cold_start_pct"]),
        "idle_memory_learned_over_fixed": ratio(
            learned["idle_memory_mb_s_wall"], fixed["idle_memory_mb_s_wall"]
        ),
    }
    alone = {p: simulate(p, rows, calls, args) for p in ("fixed", "hybrid")}
    doc["policy_alone"] = {"fixed_10_min": alone["fixed"], "learned": alone["hybrid"]}
    doc["plot"] = os.path.basename(image) if image else None
    doc["targets"] = check_targets(doc, TARGETS)
    doc["table"] = table(doc)
    doc["load"]["loadavg_end"] = loadavg()
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    options = {"trace": "an Azure invocations_per_function CSV (default: a synthetic trace)"}
    bench_main(__doc__ or "", RESULTS, settings, run, options=options, tunable=True, argv=argv)


if __name__ == "__main__":
    main()
