"""The chaos suite: realistic workloads under faults injected at random, then invariants.

Why: "faults are the judge". An acknowledged call's effects happen exactly once, nothing
committed is lost, no call hangs past its deadline, nothing is left running after close,
and the cluster answers once the faults end; each fault already has a targeted test, and
this checks the promises together, under load, with faults at moments nobody chose.

What: a *run* is one fault on one backend: a fresh embedded cluster (2 executors) on
SQLite, or on a real redis-server (AOF on, ``appendfsync always``), running three
workloads interleaved, ``window`` calls in flight:

- ``counter``: ``ctx.kv.incr("c")``;
- ``bank``: a transfer between two of 10 accounts under ``consistency="serializable"``
  (read two balances, write both) that also counts itself at ``applied/<id>``;
- ``append``: appends the call's id as a line to ``/appends.log`` in the file system.

Meanwhile a thread injects the run's fault again and again, at random moments drawn from
a seeded generator (the schedule is reproducible, the interleaving with calls is not):
``kill_executor`` (SIGKILL), ``stop_executor`` (SIGSTOP for a while, then SIGCONT: often
the store's lock holder), ``disk_full`` (the store on a small tmpfs filled with a ballast
file, then freed), ``hostile`` (strangers sending junk, a 60 MiB length prefix, half a
header, a badly signed frame), ``kill_redis`` (SIGKILL, restart on the same port from its
AOF), ``stop_redis`` (SIGSTOP then SIGCONT: a partition that any platform can make), and
``partition_iptables`` (DROP on Redis's loopback port), which is skipped with its reason
when ``iptables`` is not installed or we are not root.

After the faults end, the invariants (``check_*``): every acknowledged call's effect is
present exactly once; a failed call's effect at most once (a failed call may have been
applied: see docs/reliability.md, "The chaos suite"); the bank's total is constant; no
call took longer than its bound (``(retries + 1) x (timeout + 2 s)`` plus a grace, since
each attempt, held or sent, has its own deadline); the cluster answers a probe; after
``close()`` no process of the cluster (nor the redis-server) is left.

How: ``.venv/bin/python bench/chaos.py [--quick | --tiny] [--seed N]``: one JSON document
on stdout and in ``bench/results/chaos.json``, progress on stderr. The full run takes a
few minutes; ``tests/system/test_chaos.py`` runs a short one and asserts the invariants.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stratus
from _stats import bench_main, loadavg, results_path, run_header
from stratus.client.invocation import DEADLINE_GRACE
from stratus.transport import addresses

RESULTS = results_path("chaos")
TESTS = Path(__file__).resolve().parents[1] / "tests"

ACCOUNTS = 10
OPENING_BALANCE = 1000
LOG = "/appends.log"
WORKLOADS = ("counter", "bank", "append")
#: Each fault and the backend it runs on.
FAULTS: dict[str, str] = {
    "kill_executor": "sqlite",
    "stop_executor": "sqlite",
    "disk_full": "sqlite",
    "hostile": "sqlite",
    "kill_executor_redis": "redis",
    "kill_redis": "redis",
    "stop_redis": "redis",
    "partition_iptables": "redis",
}
#: Past a call's own bound (its attempts' deadlines): time to place and re-send it.
LATENCY_GRACE = 5.0
#: Errors that mean the call's effects were not applied, by any attempt: refused before
#: it was sent, or its last attempt wrote nothing and, had an earlier attempt committed,
#: that attempt would have found the invocation's record and answered its result.
#: Every other error may hide an applied call (docs/reliability.md, "The chaos suite").
NOT_APPLIED = frozenset(
    {
        "StoreFull",
        "ConflictError",
        "Overloaded",
        "NoCapacity",
        "MemoryLimitExceeded",
        "ExecutorStartFailed",  # a first attempt only; a retry's start failure is ExecutorLost
    }
)
#: How long a run goes on past its duration for its fault's first episode.
MAX_WAIT_FOR_FAULT = 30.0
#: The sqlite store's lock deadline: a stopped lock holder is found and killed this fast.
LOCK_TIMEOUT = 1.0


@dataclass(frozen=True)
class Settings:
    """One run per fault, each calling for ``duration`` seconds under it."""

    seed: int = 1
    duration: float = 20.0
    window: int = 6
    timeout: float = 3.0  # each function's timeout
    retries: int = 2
    faults: str = ",".join(FAULTS)


QUICK = Settings(duration=6.0)
TINY = Settings(duration=2.0, faults="kill_executor,kill_redis")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the workloads' functions (shipped by value: this module is __main__ or bench's)


def counter(ctx: Any, call_id: int) -> int:
    ctx.kv.incr("c")
    return call_id


def transfer(ctx: Any, call_id: int, source: int, target: int, amount: int) -> int:
    a = ctx.kv.get(f"acct/{source}")
    b = ctx.kv.get(f"acct/{target}")
    ctx.kv.put(f"acct/{source}", a - amount)
    ctx.kv.put(f"acct/{target}", b + amount)
    ctx.kv.incr(f"applied/{call_id}")  # 2 would be a transfer applied twice
    return call_id


def append(ctx: Any, call_id: int) -> int:
    with ctx.fs.open(LOG, "a") as f:
        f.write(f"{call_id}\n")
    return call_id


def probe(ctx: Any) -> Any:
    return ctx.kv.get("c")  # reads only: probing changes nothing


# --- outcomes


@dataclass
class Call:
    """One call of a workload and how it ended (``outcome``: "ok" or the error's type)."""

    workload: str
    call_id: int
    started: float
    finished: float | None = None
    outcome: str = ""
    message: str = ""  # the error's, for the report's samples


@dataclass
class Fault:
    """What the injector did, for the report."""

    name: str
    episodes: int = 0
    events: list[str] = field(default_factory=list)
    skipped: str = ""


# --- processes


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


def tree(root: int) -> list[int]:
    pids, frontier = [root], [root]
    while frontier:
        for child in children(frontier.pop()):
            pids.append(child)
            frontier.append(child)
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def executor_pids(app: stratus.App) -> list[int]:
    """The executors: the fork server's children (the coordinator's grandchildren)."""
    assert app._cluster is not None
    return [e for fs in children(app._cluster.process.pid) for e in children(fs)]


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- redis


class Redis:
    """A redis-server at a fixed port that the faults kill, stop and restart. AOF with
    ``appendfsync always``: an acknowledged write is fsynced before the reply, so it
    survives SIGKILL (``everysec`` may postpone the write itself by up to 2 s when a
    fsync is slow, and loses up to 1 s on a machine crash)."""

    OPTIONS = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")

    def __init__(self, directory: Path) -> None:
        sys.path.insert(0, str(TESTS))
        import redis_server  # the test suite's helper: readiness, a free port

        self._helper = redis_server
        self.directory = directory
        self.port = redis_server.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen([*command, *self.OPTIONS], stdin=subprocess.DEVNULL)
        self.pids.add(self.process.pid)
        if not self._helper._wait_ready(self.process, self.port, timeout=30):
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def signal(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.signal(signal.SIGCONT)
            self._helper.stop(self.process)
            self.process = None


# --- faults


class Injector(threading.Thread):
    """Injects one fault again and again until told to stop, then heals it. The schedule
    (which victim, how long, how long between) comes from ``rng``."""

    def __init__(self, fault: Fault, rng: random.Random, target: Target) -> None:
        super().__init__(name=f"chaos-{fault.name}", daemon=True)
        self.fault = fault
        self.rng = rng
        self.target = target
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        episode = {
            "kill_executor": self._kill_executor,
            "kill_executor_redis": self._kill_executor,
            "stop_executor": self._stop_executor,
            "disk_full": self._disk_full,
            "hostile": self._hostile,
            "kill_redis": self._kill_redis,
            "stop_redis": self._stop_redis,
            "partition_iptables": self._partition_iptables,
        }[self.fault.name]
        try:
            while not self.done.wait(self.rng.uniform(0.05, 0.8)):
                episode()
                self.fault.episodes += 1
        except BaseException as e:  # reported: a broken injector must not pass silently
            self.error = e

    def _note(self, text: str) -> None:
        self.fault.events.append(f"{time.monotonic() - self.target.t0:7.2f} s {text}")

    def _hold(self, low: float, high: float) -> None:
        self.done.wait(self.rng.uniform(low, high))

    def _victim(self) -> int | None:
        pids = sorted(executor_pids(self.target.app))
        return self.rng.choice(pids) if pids else None

    def _kill_executor(self) -> None:
        pid = self._victim()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._note(f"SIGKILL executor {pid}")

    def _stop_executor(self) -> None:
        pid = self._victim()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        self._note(f"SIGSTOP executor {pid}")
        self._hold(0.3, 2 * self.target.settings.timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def _disk_full(self) -> None:
        ballast = self.target.disk / "ballast"
        chunk = b"\0" * (64 * 1024)
        # Unbuffered: a write that finds the disk full raises here, never later in close()
        # (and a disk the store itself filled may refuse even the file: full all the same).
        with contextlib.suppress(OSError), open(ballast, "wb", buffering=0) as f:
            while True:
                f.write(chunk)
        self._note("disk full")
        self._hold(0.3, 1.5)
        ballast.unlink(missing_ok=True)

    def _hostile(self) -> None:
        targets = [self.target.app.address, *self.target.executor_addresses()]
        socks: list[socket.socket] = []
        for address in targets:
            for kind in ("junk", "huge", "half", "forged", "silent"):
                with contextlib.suppress(OSError):
                    sock = addresses.connect(address, timeout=1.0)
                    sock.settimeout(1.0)
                    socks.append(sock)
                    with contextlib.suppress(OSError):
                        sock.sendall(hostile_bytes(kind, self.rng))
        self._note(f"{len(socks)} hostile connections")
        self._hold(0.2, 1.0)
        for sock in socks:
            sock.close()

    def _kill_redis(self) -> None:
        redis = self.target.redis
        assert redis is not None
        redis.kill()
        self._note("SIGKILL redis-server")
        self._hold(0.1, 1.0)
        redis.start()

    def _stop_redis(self) -> None:
        redis = self.target.redis
        assert redis is not None
        redis.signal(signal.SIGSTOP)
        self._note("SIGSTOP redis-server")
        self._hold(0.3, 2.0)
        redis.signal(signal.SIGCONT)

    def _partition_iptables(self) -> None:
        redis = self.target.redis
        assert redis is not None
        rule = ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(redis.port), "-j", "DROP"]
        subprocess.run(["iptables", "-I", *rule], check=True)
        self._note("iptables DROP to redis")
        try:
            self._hold(0.3, 2.0)
        finally:
            subprocess.run(["iptables", "-D", *rule], check=True)


def hostile_bytes(kind: str, rng: random.Random) -> bytes:
    """What a stranger sends: junk, a 60 MiB length prefix, half a header, a frame whose
    MAC is wrong, or nothing."""
    match kind:
        case "junk":
            return rng.randbytes(4096)
        case "huge":
            return struct.pack("!I", 60 << 20) + rng.randbytes(4096)
        case "half":
            return b"\0\0"
        case "forged":
            body = rng.randbytes(64)
            return struct.pack("!I", 32 + len(body)) + rng.randbytes(32) + body
    return b""


def unavailable(fault: str) -> str:
    """Why ``fault`` cannot run here, or ""."""
    if fault in ("disk_full",) and os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if fault == "partition_iptables":
        if shutil.which("iptables") is None:
            return "iptables is not installed (the partition is made by SIGSTOP instead)"
        if os.geteuid() != 0:
            return "iptables needs root"
    return ""


# --- one run


@dataclass
class Target:
    """What the injector acts on."""

    app: stratus.App
    settings: Settings
    t0: float
    disk: Path
    redis: Redis | None
    addresses: list[str] = field(default_factory=list)

    def executor_addresses(self) -> list[str]:
        return list(self.addresses)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "16m") -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def run_one(fault_name: str, settings: Settings, base: Path, seed: int) -> dict[str, Any]:
    """One run: a fresh cluster, the three workloads under ``fault_name``; its figures."""
    fault = Fault(fault_name, skipped=unavailable(fault_name))
    if fault.skipped:
        return {"fault": fault_name, "backend": FAULTS[fault_name], "skipped": fault.skipped}
    rng = random.Random(seed)
    base.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        redis: Redis | None = None
        disk = base / "disk"
        if FAULTS[fault_name] == "redis":
            redis = Redis(base)
            stack.callback(redis.stop)
            redis.start()
            store = redis.url
        elif fault_name == "disk_full":
            stack.enter_context(small_filesystem(disk))
            store = f"sqlite:{disk}/state.db?lock_timeout={LOCK_TIMEOUT}"
        else:
            store = f"sqlite:{base}/state.db?lock_timeout={LOCK_TIMEOUT}"
        app = stratus.connect(data_dir=base / "stratus", executors=2, store=store)
        assert app._cluster is not None
        seen: set[int] = set(tree(app._cluster.process.pid))
        try:
            doc = drive(app, fault, rng, settings, Target(app, settings, 0.0, disk, redis), seen)
        finally:
            seen |= set(tree(app._cluster.process.pid))
            app.close()
        if redis is not None:
            seen |= redis.pids
            redis.stop()
    # After close: nothing of the cluster (nor the redis-server we started) may be left.
    wait_for(lambda: not any(alive(p) for p in seen), timeout=15)
    doc["leftover_processes"] = sorted(p for p in seen if alive(p))
    return doc


def drive(
    app: stratus.App,
    fault: Fault,
    rng: random.Random,
    settings: Settings,
    target: Target,
    seen: set[int],
) -> dict[str, Any]:
    opts = {"timeout": settings.timeout, "retries": settings.retries}
    fns = {
        "counter": app.function(counter, **opts),
        "bank": app.function(transfer, consistency="serializable", **opts),
        "append": app.function(append, **opts),
    }
    prober = app.function(probe, **opts)
    for account in range(ACCOUNTS):
        app.kv.put(f"acct/{account}", OPENING_BALANCE)
    assert prober.remote().result(timeout=60) is None  # warm, before any fault
    target.addresses = [e.unix for e in app._client._executors.values()]
    bound = (settings.retries + 1) * (settings.timeout + DEADLINE_GRACE) + LATENCY_GRACE

    calls: list[Call] = []
    in_flight: collections.deque[tuple[Call, Any]] = collections.deque()
    injector = Injector(fault, rng, target)
    target.t0 = time.monotonic()
    end = target.t0 + settings.duration
    injector.start()
    try:
        for i in itertools.count():
            # Until the duration is over and the fault struck at least once (a condition,
            # not a hope: a slow machine gets a longer run, bounded).
            now = time.monotonic()
            if now >= end and (fault.episodes > 0 or now >= end + MAX_WAIT_FOR_FAULT):
                break
            for workload in WORKLOADS:
                if len(in_flight) >= settings.window:
                    settle(*in_flight.popleft(), bound)
                call = Call(workload, i, time.monotonic())
                args: tuple[Any, ...] = (i,)
                if workload == "bank":
                    source, dest = rng.sample(range(ACCOUNTS), 2)
                    args = (i, source, dest, rng.randint(1, 50))
                calls.append(call)
                in_flight.append((call, submit(fns[workload], args, call)))
            seen |= set(tree(app._cluster.process.pid))  # type: ignore[union-attr]
        while in_flight:
            settle(*in_flight.popleft(), bound)
    finally:
        injector.done.set()
        injector.join()
    faults_over = time.monotonic()
    if injector.error is not None:
        raise RuntimeError(f"the {fault.name} injector failed") from injector.error
    answered = answers(prober, deadline=60.0)
    doc: dict[str, Any] = {
        "fault": fault.name,
        "backend": FAULTS[fault.name],
        "episodes": fault.episodes,
        "events": fault.events[:40],
        "cluster_answers_after_faults_s": answered
        if answered is None
        else round(answered - faults_over, 2),
        "latency_bound_s": bound,
        "workloads": {},
    }
    for workload in WORKLOADS:
        mine = [c for c in calls if c.workload == workload]
        doc["workloads"][workload] = CHECKS[workload](app, mine) | figures(mine, bound)
    return doc


def submit(fn: Any, args: tuple[Any, ...], call: Call) -> Any:
    try:
        future = fn.remote(*args)
    except stratus.StratusError as e:  # refused before it was sent (Overloaded...)
        call.finished, call.outcome = time.monotonic(), type(e).__name__
        return None

    def finished(_: Any) -> None:
        call.finished = time.monotonic()

    future.add_done_callback(finished)
    return future


def settle(call: Call, future: Any, bound: float) -> None:
    """Wait for ``call`` until its bound; "hung" if it is not done by then."""
    if future is None:
        return
    remaining = call.started + bound + 1.0 - time.monotonic()
    try:
        future.result(timeout=max(remaining, 0.01))
        call.outcome = "ok"
    except stratus.InvocationError as e:
        call.outcome, call.message = error_name(e), str(e).split("\n")[0][:300]
    except stratus.StratusError as e:
        call.outcome, call.message = type(e).__name__, str(e)[:300]
    except TimeoutError:
        call.outcome = "hung"
    if call.finished is None:  # the callback runs in the completing thread, maybe later
        call.finished = time.monotonic() if call.outcome != "hung" else None


def error_name(e: BaseException) -> str:
    if isinstance(e, stratus.RemoteError):
        return f"RemoteError[{e.remote_type}]"
    return type(e).__name__


def answers(prober: Any, deadline: float) -> float | None:
    """When a probe call first succeeded after the faults ended (None: not in time)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            prober.remote().result(timeout=max(end - time.monotonic(), 0.1))
            return time.monotonic()
        except (stratus.StratusError, TimeoutError):
            time.sleep(0.1)
    return None


# --- invariants


def figures(calls: Sequence[Call], bound: float) -> dict[str, Any]:
    outcomes = collections.Counter(c.outcome for c in calls)
    latencies = [c.finished - c.started for c in calls if c.finished is not None]
    slowest = max(latencies, default=0.0)
    return {
        "calls": len(calls),
        "acknowledged": outcomes.pop("ok", 0),
        "hung": outcomes.pop("hung", 0),
        "failed": dict(sorted(outcomes.items())),
        "failure_samples": {c.outcome: c.message for c in calls if c.message},
        "max_latency_s": round(slowest, 3),
        "over_bound": sum(1 for t in latencies if t > bound),
    }


def check_counter(app: stratus.App, calls: Sequence[Call]) -> dict[str, Any]:
    """Each call applies at most once, and not at all when it failed with an error of
    ``NOT_APPLIED``, so ``acknowledged <= c <= acknowledged + unsure``: below is a lost
    acknowledged effect, above a duplicate (or a "not applied" error that was)."""
    total = app.kv.get("c") or 0
    acked = sum(1 for c in calls if c.outcome == "ok")
    unsure = sum(1 for c in calls if c.outcome != "ok" and c.outcome not in NOT_APPLIED)
    return {
        "value": total,
        "duplicates": max(0, total - acked - unsure),
        "lost": max(0, acked - total),
        "failed_but_applied_at_least": max(0, total - acked),
        "applied_though_not_applied_error": 0,  # not observable on a total
    }


def check_bank(app: stratus.App, calls: Sequence[Call]) -> dict[str, Any]:
    """The total is constant; each transfer applied at most once, and once if acknowledged."""
    balances = [app.kv.get(f"acct/{a}") for a in range(ACCOUNTS)]
    applied = {c.call_id: app.kv.get(f"applied/{c.call_id}") or 0 for c in calls}
    return {
        "total": sum(balances),
        "expected_total": ACCOUNTS * OPENING_BALANCE,
        **per_call(calls, applied),
    }


def check_append(app: stratus.App, calls: Sequence[Call]) -> dict[str, Any]:
    """Each line at most once; every acknowledged append present; no line nobody wrote."""
    with app.fs.transaction() as fs:
        text = fs.path(LOG).read_text() if fs.exists(LOG) else ""
    lines = collections.Counter(int(line) for line in text.splitlines())
    ids = {c.call_id for c in calls}
    return {**per_call(calls, lines), "strangers": sorted(set(lines) - ids)}


def per_call(calls: Sequence[Call], applied: dict[int, int]) -> dict[str, Any]:
    failed_applied: collections.Counter[str] = collections.Counter()
    for c in calls:
        if c.outcome != "ok" and applied.get(c.call_id, 0):
            failed_applied[c.outcome] += 1
    return {
        "applied_though_not_applied_error": sum(
            n for kind, n in failed_applied.items() if kind in NOT_APPLIED
        ),
        "duplicates": sum(1 for c in calls if applied.get(c.call_id, 0) > 1),
        "lost": sum(1 for c in calls if c.outcome == "ok" and not applied.get(c.call_id, 0)),
        "failed_but_applied": dict(sorted(failed_applied.items())),
        "duplicate_ids": sorted(c.call_id for c in calls if applied.get(c.call_id, 0) > 1),
        "lost_ids": sorted(
            c.call_id for c in calls if c.outcome == "ok" and not applied.get(c.call_id, 0)
        ),
    }


CHECKS: dict[str, Callable[[stratus.App, Sequence[Call]], dict[str, Any]]] = {
    "counter": check_counter,
    "bank": check_bank,
    "append": check_append,
}


#: Figures of a workload that break an invariant when they are not 0.
MUST_BE_ZERO = ("duplicates", "lost", "hung", "over_bound", "applied_though_not_applied_error")


def violations(run: dict[str, Any]) -> list[str]:
    """What broke an invariant in one run's document (empty: all held)."""
    if "skipped" in run:
        return []
    found = []
    name = run["fault"]
    for workload, w in run["workloads"].items():
        for what in MUST_BE_ZERO:
            if w[what]:
                found.append(f"{name}/{workload}: {what} = {w[what]}")
        if workload == "bank" and w["total"] != w["expected_total"]:
            found.append(f"{name}/bank: total {w['total']} != {w['expected_total']}")
        if w.get("strangers"):
            found.append(f"{name}/append: lines nobody wrote: {w['strangers']}")
    if not run["episodes"]:
        found.append(f"{name}: the fault was never injected")
    if run["cluster_answers_after_faults_s"] is None:
        found.append(f"{name}: the cluster did not answer after the faults")
    if run["leftover_processes"]:
        found.append(f"{name}: processes left after close: {run['leftover_processes']}")
    return found


def run_all(settings: Settings, base: Path) -> list[dict[str, Any]]:
    runs = []
    for n, name in enumerate(f for f in settings.faults.split(",") if f):
        if name not in FAULTS:
            raise SystemExit(f"chaos: no fault named {name!r}; known: {', '.join(FAULTS)}")
        seed = settings.seed * 1000 + n
        log(f"chaos: {name} on {FAULTS[name]} (seed {seed})")
        started = time.monotonic()
        run = run_one(name, settings, base / name, seed)
        run["seed"] = seed
        run["seconds"] = round(time.monotonic() - started, 1)
        run["violations"] = violations(run)
        log(f"chaos: {name}: {run.get('skipped') or run['violations'] or 'invariants hold'}")
        runs.append(run)
    return runs


def table(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per workload x fault: the figures of docs/reliability.md."""
    rows = []
    for run in runs:
        if "skipped" in run:
            rows.append({"fault": run["fault"], "skipped": run["skipped"]})
            continue
        for workload, w in run["workloads"].items():
            rows.append(
                {
                    "fault": run["fault"],
                    "backend": run["backend"],
                    "workload": workload,
                    "calls": w["calls"],
                    "acknowledged": w["acknowledged"],
                    "failed": w["failed"],
                    "failed_but_applied": w.get(
                        "failed_but_applied", w.get("failed_but_applied_at_least")
                    ),
                    "duplicates": w["duplicates"],
                    "lost": w["lost"],
                    "hung": w["hung"],
                    "max_latency_s": w["max_latency_s"],
                    "latency_bound_s": run["latency_bound_s"],
                }
            )
    return rows


def run(settings: Settings, mode: str) -> dict[str, Any]:
    doc = run_header("chaos", mode)
    doc["settings"] = dataclasses.asdict(settings)
    doc["command"] = " ".join(["bench/chaos.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="stratus-chaos-") as tmp:
        runs = run_all(settings, Path(tmp))
    doc["runs"] = runs
    doc["table"] = table(runs)
    doc["violations"] = [v for r in runs for v in r.get("violations", [])]
    doc["leftover_processes"] = sorted({p for r in runs for p in r.get("leftover_processes", [])})
    doc["load"]["loadavg_end"] = loadavg()
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__ or "", RESULTS, settings, run, tunable=True, argv=argv)


if __name__ == "__main__":
    main()
