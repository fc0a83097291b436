"""Core benchmark: stratus against a plain Python call and against Ray, in one run.

Run it with ``make bench-core`` or ``.venv/bin/python bench/core.py`` (``--quick`` for a
short run, ``--no-ray`` to leave Ray out). It prints one JSON document on stdout and writes
it to ``bench/results/core.json``; everything else (Ray's logs included) goes to stderr.

What is measured (latencies are per call, timed with ``time.perf_counter_ns``):

1. The floor: a plain Python call ``incr(None, x)``.
2. A stratus synchronous call ``incr.remote(x).result()``, after a warm-up.
3. A stratus DAG ``square(incr(x))`` (``app.dag("pipeline", incr >> square)``).
4. stratus async throughput: N calls issued with ``.remote()``, then every ``.result()``;
   the median of several runs, in calls per second.
5. ``stratus.connect()`` until the cluster is ready (each followed by ``close()``).
6. The idle RSS of the stratus cluster: the coordinator (the child of this process running
   ``python -m stratus.server``) and all its descendants (fork server, executors).
7. Ray (``ray.init(num_cpus=2, include_dashboard=False)``): a task round trip, an actor
   method call, a task chain ``square.remote(incr.remote(x))``, async task throughput,
   ``ray.init`` time and the idle RSS of Ray's processes (every descendant of this process
   outside the stratus cluster, plus any process started during the run whose command line
   names Ray, in case one was re-parented).
8. Ratios Ray / stratus, and 9. whether stratus meets its targets.

The machine is small and noisy and round trips are bimodal, so latencies are taken in
rounds that alternate the systems (A B, B A, ...) with both clusters up, and the samples
of each kind are pooled; medians and tails are quoted. Throughput runs alternate too.
Each timed block starts after a short pause (and a ``gc.collect()``) so that one system's
background work after a burst weighs less on the next block. Ray's idle processes still
take some CPU, so stratus is also measured alone before Ray starts (``stratus.solo``);
the targets are checked against both. The clients live in this process and count in
neither RSS (PSS, which splits shared pages, is given as well). The load of the machine
before and after, and the commit under test, are recorded. A full run takes about 1 min.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import stratus
from _stats import (
    cpu_busy_pct,
    git_revision,
    latency_summary,
    loadavg,
    median,
    ratio,
    stdout_to_stderr,
    write_json,
)

try:
    import psutil
except ImportError:  # fall back to reading /proc
    psutil = None

RESULTS = Path(__file__).resolve().parent / "results" / "core.json"
RESULT_TIMEOUT = 120.0  # seconds; a benchmark call that takes longer is a failure

TARGETS = {  # name: (key into the stratus results, comparison, bound)
    "sync_p50_us": ("sync_call.p50_us", "<=", 100.0),
    "dag_p50_us": ("dag.p50_us", "<=", 150.0),
    "throughput_calls_per_s": ("throughput.calls_per_s", ">=", 20_000.0),
    "connect_s": ("connect.median_s", "<=", 0.5),
    "idle_rss_mb": ("idle_rss.total_rss_mb", "<=", 150.0),
}


@dataclass(frozen=True)
class Settings:
    floor_calls: int = 100_000
    warmup_calls: int = 200
    solo_rounds: int = 2  # stratus alone, before Ray starts
    rounds: int = 10  # latency rounds with both systems up, alternating which goes first
    stratus_sync_per_round: int = 1_000
    stratus_dag_per_round: int = 500
    ray_task_per_round: int = 150
    ray_actor_per_round: int = 150
    ray_chain_per_round: int = 80
    throughput_runs: int = 3
    stratus_throughput_calls: int = 20_000
    ray_throughput_calls: int = 5_000
    connects: int = 5
    settle_s: float = 0.3  # pause before each timed block
    idle_s: float = 1.0


QUICK = Settings(
    floor_calls=20_000,
    warmup_calls=100,
    solo_rounds=1,
    rounds=2,
    stratus_sync_per_round=500,
    stratus_dag_per_round=250,
    ray_task_per_round=100,
    ray_actor_per_round=100,
    ray_chain_per_round=50,
    stratus_throughput_calls=5_000,
    ray_throughput_calls=1_000,
    connects=3,
)


# The functions under test. stratus and Ray ship them by value (cloudpickle).


def incr(ctx: Any, x: int) -> int:
    return x + 1


def square(ctx: Any, x: int) -> int:
    return x * x


def ray_incr(x: int) -> int:
    return x + 1


def ray_square(x: int) -> int:
    return x * x


class RayCounter:
    def incr(self, x: int) -> int:
        return x + 1


def plus_one(i: int) -> int:  # the result expected of incr(i)
    return i + 1


def plus_one_squared(i: int) -> int:  # ... and of square(incr(i))
    return (i + 1) ** 2


# Timing.

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


def measure_floor(n: int) -> dict[str, Any]:
    """A plain call of ``incr``, timed one by one like the remote calls, and in a batch."""
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        start = clock()
        incr(None, i)
        samples[i] = clock() - start
    timer = [0] * n
    for i in range(n):
        start = clock()
        timer[i] = clock() - start
    start = clock()
    for i in range(n):
        incr(None, i)
    batch_ns = clock() - start
    return {
        **latency_summary(samples),
        "timer_overhead_p50_us": latency_summary(timer)["p50_us"],
        "batched_mean_us": round(batch_ns / n / 1000, 4),
    }


def throughput(batch: Callable[[int], Sequence[Any]], n: int) -> float:
    """Calls per second of ``batch(n)``, which issues n calls of incr(i) and waits for all."""
    start = time.perf_counter_ns()
    results = batch(n)
    elapsed = time.perf_counter_ns() - start
    if list(results) != list(range(1, n + 1)):
        raise AssertionError("a throughput batch returned wrong results")
    return n / (elapsed / 1e9)


def settle(seconds: float) -> None:
    """Let the previous block's after-effects (Ray's background work, say) die down."""
    time.sleep(seconds)
    gc.collect()


def latency_rounds(
    blocks: dict[str, list[Block]], rounds: int, settle_s: float
) -> dict[str, list[int]]:
    """Samples per ``system.kind``, from rounds in which the systems take turns (A B, B A)."""
    samples: dict[str, list[int]] = defaultdict(list)
    systems = list(blocks)
    for round_ in range(rounds):
        for system in systems if round_ % 2 == 0 else systems[::-1]:
            for kind, call, expect, n in blocks[system]:
                settle(settle_s)
                samples[f"{system}.{kind}"] += time_calls(call, expect, n)
    return samples


def throughput_runs(
    batches: dict[str, Callable[[int], Sequence[Any]]], settings: Settings
) -> dict[str, list[float]]:
    """Calls per second of each system's batch, the systems taking turns."""
    calls = {"stratus": settings.stratus_throughput_calls, "ray": settings.ray_throughput_calls}
    runs: dict[str, list[float]] = defaultdict(list)
    systems = list(batches)
    for run_ in range(settings.throughput_runs):
        for system in systems if run_ % 2 == 0 else systems[::-1]:
            settle(settings.settle_s)
            runs[system].append(throughput(batches[system], calls[system]))
    return runs


def throughput_summary(runs: Sequence[float], calls: int) -> dict[str, Any]:
    return {
        "calls_per_s": round(median(runs)),
        "runs_calls_per_s": [round(r) for r in runs],
        "calls_per_run": calls,
    }


# Processes and memory: psutil when installed, otherwise /proc.


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    rss: int  # bytes
    cmdline: tuple[str, ...]
    started: float  # seconds since the epoch


def process_table() -> dict[int, Proc]:
    return _table_psutil() if psutil is not None else _table_proc()


def _table_psutil() -> dict[int, Proc]:
    assert psutil is not None
    table = {}
    attrs = ["pid", "ppid", "memory_info", "cmdline", "create_time"]
    for process in psutil.process_iter(attrs):
        info = process.info
        if info["memory_info"] is None:  # gone or not ours to read
            continue
        table[info["pid"]] = Proc(
            info["pid"],
            info["ppid"],
            info["memory_info"].rss,
            tuple(info["cmdline"] or ()),
            info["create_time"],
        )
    return table


def _table_proc() -> dict[int, Proc]:
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # the process is gone
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields 3.. of proc(5)
        rss_kb = next((int(ln.split()[1]) for ln in status.splitlines() if ln[:6] == "VmRSS:"), 0)
        pid = int(entry.name)
        table[pid] = Proc(
            pid,
            int(fields[1]),
            rss_kb * 1024,
            tuple(arg.decode(errors="replace") for arg in cmdline.split(b"\0")[:-1]),
            boot + int(fields[19]) / ticks,
        )
    return table


def pss_bytes(pid: int) -> int | None:
    """Proportional set size (shared pages split between their users), Linux only."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def descendants(table: dict[int, Proc], root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = defaultdict(list)
    for proc in table.values():
        children[proc.ppid].append(proc.pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children[pid])
    return sorted(found)


def short_name(cmdline: Sequence[str]) -> str:
    """``raylet``, ``ray::IDLE``, ``-m stratus.server``, ``dashboard.py``..."""
    if not cmdline:
        return "?"
    program = os.path.basename(cmdline[0])
    if not program.startswith("python"):
        return program
    args = list(cmdline[1:])
    if "-m" in args[:-1]:
        return "-m " + args[args.index("-m") + 1]
    script = next((a for a in args if not a.startswith("-")), program)
    return os.path.basename(script)


def memory_report(table: dict[int, Proc], pids: Sequence[int]) -> dict[str, Any]:
    procs = [table[pid] for pid in pids if pid in table]
    pss = {p.pid: pss_bytes(p.pid) for p in procs}
    mb = 2**20
    return {
        "total_rss_mb": round(sum(p.rss for p in procs) / mb, 1),
        "total_pss_mb": (
            round(sum(v for v in pss.values() if v) / mb, 1) if all(pss.values()) else None
        ),
        "processes": [
            {
                "pid": p.pid,
                "name": short_name(p.cmdline),
                "rss_mb": round(p.rss / mb, 1),
                "pss_mb": round(pss[p.pid] / mb, 1) if pss[p.pid] else None,
            }
            for p in procs
        ],
    }


def stratus_cluster(table: dict[int, Proc], executor_pids: set[int]) -> tuple[int, list[int]]:
    """The coordinator (our child running stratus.server) whose tree holds these executors."""
    for proc in table.values():
        if proc.ppid == os.getpid() and "stratus.server" in proc.cmdline:
            tree = descendants(table, proc.pid)
            if executor_pids <= set(tree):
                return proc.pid, tree
    raise RuntimeError(f"no stratus coordinator among our children runs executors {executor_pids}")


def ray_processes(table: dict[int, Proc], exclude: set[int], since: float) -> tuple[list[int], int]:
    """Ray's processes: our descendants outside ``exclude`` (and other than ourselves), plus
    processes started since ``since`` whose command line names Ray. Also the count of those
    found only by the second rule (re-parented away from us)."""
    ours = set(descendants(table, os.getpid())) - exclude - {os.getpid()}
    named = {
        p.pid
        for p in table.values()
        if p.started >= since
        and p.pid not in exclude | {os.getpid()}
        and any(a.startswith("ray::") or "/ray/" in a for a in p.cmdline[:3])
    }
    return sorted(ours | named), len(named - ours)


def our_children() -> list[int]:
    return [p.pid for p in process_table().values() if p.ppid == os.getpid()]


def wait_for_no_children(timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := our_children()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# The two systems.


class StratusSide:
    """An embedded stratus cluster with ``incr``, ``square`` and the DAG registered."""

    def __init__(self, data_dir: Path, settings: Settings) -> None:
        self.app = stratus.connect(data_dir=data_dir)
        self.incr = self.app.function(incr)
        self.square = self.app.function(square)
        self.dag = self.app.dag("pipeline", self.incr >> self.square)
        self.blocks: list[Block] = [
            ("sync_call", self.sync_call, plus_one, settings.stratus_sync_per_round),
            ("dag", self.dag_call, plus_one_squared, settings.stratus_dag_per_round),
        ]

    def sync_call(self, i: int) -> int:
        return self.incr.remote(i).result(timeout=RESULT_TIMEOUT)

    def dag_call(self, i: int) -> int:
        return self.dag.remote(i).result(timeout=RESULT_TIMEOUT)

    def batch(self, n: int) -> list[int]:
        futures = [self.incr.remote(i) for i in range(n)]
        return [f.result(timeout=RESULT_TIMEOUT) for f in futures]

    def warm_up(self, calls: int) -> None:
        for _kind, call, expect, _n in self.blocks:
            time_calls(call, expect, calls)
        self.batch(1_000)

    def executors(self) -> list[dict[str, Any]]:
        """pid and calls served of each executor (as last reported, once a second)."""
        return [{"pid": e.pid, "served": e.served} for e in self.app.status().executors]


class RaySide:
    """A local Ray cluster with the same functions as tasks, and an actor."""

    def __init__(self, ray: ModuleType, settings: Settings) -> None:
        self.ray = ray
        start = time.perf_counter_ns()
        ray.init(num_cpus=2, include_dashboard=False)
        self.init_s = (time.perf_counter_ns() - start) / 1e9
        self.incr = ray.remote(ray_incr)
        self.square = ray.remote(ray_square)
        self.actor = ray.remote(RayCounter).remote()
        self.blocks: list[Block] = [
            ("task_call", self.task_call, plus_one, settings.ray_task_per_round),
            ("actor_call", self.actor_call, plus_one, settings.ray_actor_per_round),
            ("chain", self.chain_call, plus_one_squared, settings.ray_chain_per_round),
        ]

    def task_call(self, i: int) -> int:
        return self.ray.get(self.incr.remote(i), timeout=RESULT_TIMEOUT)

    def actor_call(self, i: int) -> int:
        return self.ray.get(self.actor.incr.remote(i), timeout=RESULT_TIMEOUT)

    def chain_call(self, i: int) -> int:
        return self.ray.get(self.square.remote(self.incr.remote(i)), timeout=RESULT_TIMEOUT)

    def batch(self, n: int) -> list[int]:
        return self.ray.get([self.incr.remote(i) for i in range(n)], timeout=RESULT_TIMEOUT)

    def warm_up(self, calls: int) -> None:
        for _kind, call, expect, _n in self.blocks:
            time_calls(call, expect, calls)
        self.batch(1_000)


def measure_connects(count: int, base: Path) -> dict[str, Any]:
    """``connect()`` to a ready cluster, the first call on it, and ``close()``, each timed."""
    clock = time.perf_counter_ns
    connect_s, first_call_ms, close_s = [], [], []
    for k in range(count):
        start = clock()
        app = stratus.connect(data_dir=base / f"connect-{k}")
        connect_s.append((clock() - start) / 1e9)
        try:
            fn = app.function(incr)
            start = clock()
            fn.remote(1).result(timeout=RESULT_TIMEOUT)
            first_call_ms.append((clock() - start) / 1e6)
        finally:
            start = clock()
            app.close()
            close_s.append((clock() - start) / 1e9)
    return {
        "median_s": round(median(connect_s), 4),
        "runs_s": [round(s, 4) for s in connect_s],
        "first_call_after_connect_median_ms": round(median(first_call_ms), 2),
        "close_median_s": round(median(close_s), 4),
    }


def import_ray() -> tuple[ModuleType | None, str | None, float]:
    start = time.perf_counter_ns()
    try:
        import ray
    except ImportError as error:
        return None, f"ray is not importable: {error}", 0.0
    return ray, None, (time.perf_counter_ns() - start) / 1e9


# The run.


def run(settings: Settings, with_ray: bool) -> dict[str, Any]:
    began = time.time()
    clock_start = time.perf_counter_ns()
    doc: dict[str, Any] = {
        "benchmark": "core",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": settings == QUICK,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
        },
        "versions": {"stratus": stratus.__version__, "ray": None, "git": git_revision()},
        "settings": asdict(settings),
        "process_info": "psutil" if psutil is not None else "/proc",
        "load": {"loadavg_start": loadavg(), "cpu_busy_pct_before": cpu_busy_pct(0.5)},
    }
    busy = doc["load"]["cpu_busy_pct_before"]
    if busy is not None and busy > 10:
        print(f"core.py: the machine is {busy:.0f}% busy already; expect noise", file=sys.stderr)
    doc["python_call"] = measure_floor(settings.floor_calls)

    ray_module, ray_reason, ray_import_s = None, "skipped with --no-ray", 0.0
    if with_ray:
        ray_module, ray_reason, ray_import_s = import_ray()
        if ray_module is not None:
            doc["versions"]["ray"] = ray_module.__version__
        else:
            print(f"core.py: {ray_reason}; Ray is left out", file=sys.stderr)

    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-bench-")))
        connect = measure_connects(settings.connects, base)

        s = StratusSide(base / "main", settings)
        stack.callback(s.app.close)
        s.warm_up(settings.warmup_calls)
        # A baseline while stratus has the machine to itself, before Ray starts.
        solo = latency_rounds({"stratus": s.blocks}, settings.solo_rounds, settings.settle_s)
        solo_runs = throughput_runs({"stratus": s.batch}, settings)

        r: RaySide | None = None
        if ray_module is not None:
            r = RaySide(ray_module, settings)
            stack.callback(ray_module.shutdown)
            r.warm_up(settings.warmup_calls)

        # Both clusters up; the systems take turns, and the samples are pooled per kind.
        blocks = {"stratus": s.blocks, **({"ray": r.blocks} if r else {})}
        samples = latency_rounds(blocks, settings.rounds, settings.settle_s)
        runs = throughput_runs({"stratus": s.batch, **({"ray": r.batch} if r else {})}, settings)

        # Idle memory of both clusters, at the same moment.
        time.sleep(settings.idle_s)
        table = process_table()
        executors = s.executors()
        coordinator, stratus_pids = stratus_cluster(table, {e["pid"] for e in executors})

        doc["stratus"] = {
            "sync_call": latency_summary(samples["stratus.sync_call"]),
            "dag": latency_summary(samples["stratus.dag"]),
            "throughput": throughput_summary(runs["stratus"], settings.stratus_throughput_calls),
            "connect": connect,
            "idle_rss": {"coordinator_pid": coordinator, **memory_report(table, stratus_pids)},
            "executors": executors,
            "solo": {
                "note": "measured before Ray started, with stratus alone on the machine",
                "sync_call": latency_summary(solo["stratus.sync_call"]),
                "dag": latency_summary(solo["stratus.dag"]),
                "throughput": throughput_summary(
                    solo_runs["stratus"], settings.stratus_throughput_calls
                ),
            },
        }
        if r is None:
            doc["ray"] = None
            doc["ray_reason"] = ray_reason
        else:
            ray_pids, reparented = ray_processes(table, set(stratus_pids), began)
            doc["ray"] = {
                "task_call": latency_summary(samples["ray.task_call"]),
                "actor_call": latency_summary(samples["ray.actor_call"]),
                "chain": latency_summary(samples["ray.chain"]),
                "throughput": throughput_summary(runs["ray"], settings.ray_throughput_calls),
                "import_s": round(ray_import_s, 3),
                "init_s": round(r.init_s, 3),
                "idle_rss": {"found_only_by_name": reparented, **memory_report(table, ray_pids)},
            }
    # The ExitStack has shut Ray down and closed the cluster; nothing of ours may be left.
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["load"]["loadavg_end"] = loadavg()
    doc["ratios_ray_over_stratus"] = ratios(doc["stratus"], doc["ray"])
    doc["targets"] = targets(doc["stratus"])
    doc["duration_s"] = round((time.perf_counter_ns() - clock_start) / 1e9, 1)
    return doc


def ratios(s: dict[str, Any], r: dict[str, Any] | None) -> dict[str, Any] | None:
    """Ray / stratus: above 1 stratus is faster or smaller, except for throughput."""
    if r is None:
        return None
    return {
        "note": "ray / stratus; for throughput, below 1 means stratus does more calls/s",
        "sync_call_p50": ratio(r["task_call"]["p50_us"], s["sync_call"]["p50_us"]),
        "sync_call_p99": ratio(r["task_call"]["p99_us"], s["sync_call"]["p99_us"]),
        "actor_call_p50_vs_sync_call_p50": ratio(
            r["actor_call"]["p50_us"], s["sync_call"]["p50_us"]
        ),
        "chain_vs_dag_p50": ratio(r["chain"]["p50_us"], s["dag"]["p50_us"]),
        "chain_vs_dag_p99": ratio(r["chain"]["p99_us"], s["dag"]["p99_us"]),
        "throughput": ratio(r["throughput"]["calls_per_s"], s["throughput"]["calls_per_s"]),
        "init_vs_connect": ratio(r["init_s"], s["connect"]["median_s"]),
        "idle_rss": ratio(r["idle_rss"]["total_rss_mb"], s["idle_rss"]["total_rss_mb"]),
    }


def targets(s: dict[str, Any]) -> dict[str, Any]:
    """Each target against the main (interleaved) figure, and the solo one where there is."""
    report: dict[str, Any] = {}
    for name, (key, comparison, bound) in TARGETS.items():
        section, field = key.split(".")

        def check(value: float, bound: float = bound, comparison: str = comparison) -> bool:
            return value <= bound if comparison == "<=" else value >= bound

        value = s[section][field]
        report[name] = {"target": f"{comparison} {bound:g}", "value": value, "met": check(value)}
        if section in s["solo"]:
            solo = s["solo"][section][field]
            report[name] |= {"value_solo": solo, "met_solo": check(solo)}
    checks = list(report.values())
    report["all_met"] = all(t["met"] for t in checks)
    report["all_met_solo"] = all(t.get("met_solo", t["met"]) for t in checks)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke test)")
    parser.add_argument("--no-ray", action="store_true", help="leave Ray out")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args(argv)
    with stdout_to_stderr():
        doc = run(QUICK if args.quick else Settings(), with_ray=not args.no_ray)
    print(write_json(args.output, doc))


if __name__ == "__main__":
    main()
