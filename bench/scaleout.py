"""Scale-out: the trivial call and a read-modify-write on 1, 2 and 3 hosts, beside Ray and
Dask on as many nodes.

Run it as root with ``.venv/bin/python bench/scaleout.py`` (``--tiny``: one host, a few
calls; ``--no-ray``, ``--no-dask``). It prints one JSON document on stdout and writes it
to ``bench/results/scaleout.json``. Without root (or ``ip netns``, or redis-server) it
prints a document whose ``skipped`` says why, and exits 0.

Hosts are Linux network namespaces on one bridge (``tests/netns.py``): ``store`` runs
Redis, ``coord`` the stratus coordinator (``stratus up --executors 1 --store redis://...``)
and the Dask scheduler, and ``n1`` .. ``nN`` a stratus node agent (``--cores 1``: one
executor per host) and a Dask worker (one process, one thread). The client is this
process, in the root namespace on the bridge: every call crosses a veth pair and the
bridge. The functions ask for more memory than the coordinator's own node offers, so
they run on node agents only, one executor per host. Ray's driver must run on a Ray node,
so Ray's cluster is ``ray.cluster_utils.Cluster`` in this process's namespace: a head with
no CPU (the driver's node) and N nodes of one CPU each, on this machine's addresses; its
tasks read and write the same Redis on the ``store`` host.

Workloads, each call ``f(i)`` returning ``i + 1`` (checked):

- ``trivial``: return ``i + 1``.
- ``rmw_eventual``: read kv key ``k{i % keys}``, write it back plus one (stratus
  ``eventual``; on Ray and Dask a task with a Redis client: ``GET`` then ``SET``).
- ``rmw_serializable``: the same, ``serializable`` (Ray and Dask: ``WATCH`` / ``MULTI`` /
  ``EXEC``, again on a conflict).
- ``rmw_hot``: the serializable one on a single key: every call conflicts with the calls
  in flight beside it. A stratus call re-runs at most 10 times, then fails with
  ``ConflictError`` (counted, ``conflict_errors``); the peers' ``WATCH`` loops retry
  without bound. The key's final value is checked against the calls that succeeded (each
  applied once).

For each: synchronous calls one at a time (p50/p99) and an async batch (all calls in
flight, then all results; calls per second). Per host count, the systems take turns in
rounds (A B C, C B A) and samples are pooled; throughput is the median of the rounds.
This machine has 2 cores, so N hosts share them: the figures show what spreading costs
(the protocol's overheads) and that calls spread, not a speedup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import stratus
from _peers import import_peer
from _procs import descendants, process_table, wait_for_no_children
from _stats import bench_main, latency_summary, loadavg, module_version, results_path, run_header
from _timing import alternating, settle, time_calls

TESTS = Path(__file__).resolve().parents[1] / "tests"
RESULTS = results_path("scaleout")
RESULT_TIMEOUT = 120.0
WORKLOADS = ("trivial", "rmw_eventual", "rmw_serializable", "rmw_hot")
HOT = "hot"
GROW_TIMEOUT = 300.0  # for a peer's new node to join; minutes on a loaded 2-core machine


@dataclass(frozen=True)
class Settings:
    """How many hosts, and how many calls of each workload on each."""

    hosts: tuple[int, ...] = (1, 2, 3)
    sync_calls: int = 200  # per workload, system and round
    async_calls: int = 500  # one batch per workload, system and round
    rounds: int = 2
    keys: int = 1000  # rmw keys are spread over this many: conflicts are rare
    warmup_calls: int = 20
    settle_s: float = 0.2


TINY = replace(Settings(), hosts=(1,), sync_calls=10, async_calls=20, rounds=1, warmup_calls=2)


def incr(ctx: Any, i: int) -> int:
    return i + 1


def rmw(ctx: Any, key: str, i: int) -> int:
    ctx.kv.put(key, ctx.kv.get(key, 0) + 1)
    return i + 1


def plain_incr(i: int) -> int:
    return i + 1


def redis_rmw(url: str, key: str, i: int, serializable: bool) -> int:
    """The peers' read-modify-write: a task with a Redis client (one per worker process)."""
    import redis

    # Kept on the redis module: this function travels by value, its globals with it.
    clients: dict[str, Any] = redis.__dict__.setdefault("_scaleout_clients", {})
    client = clients.get(url) or clients.setdefault(url, redis.Redis.from_url(url))
    if not serializable:
        client.set(key, int(client.get(key) or 0) + 1)
        return i + 1
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                value = int(pipe.get(key) or 0) + 1
                pipe.multi()
                pipe.set(key, value)
                pipe.execute()
                return i + 1
            except redis.WatchError:
                continue


_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(
        f"scaleout.py: {time.monotonic() - _STARTED:6.1f} s: {message}", file=sys.stderr, flush=True
    )


def key_of(workload: str, keys: int, i: int) -> str:
    return HOT if workload == "rmw_hot" else f"k{i % keys}"


class System:
    """One system's calls of each workload: ``call(workload)(i)`` and ``batch(workload)(n)``."""

    name = ""

    def call(self, workload: str) -> Callable[[int], Any]:
        raise NotImplementedError

    def batch(self, workload: str) -> Callable[[int], list[Any]]:
        raise NotImplementedError

    def hot_value(self) -> int:
        raise NotImplementedError


class Stratus(System):
    """``stratus up`` on ``coord`` and node agents on ``n1`` .. ``nN``, fresh for each N."""

    name = "stratus"

    def __init__(self, hosts: Any, base: Path, store: str, n: int, keys: int) -> None:
        self.keys = keys
        data_dir = base / f"stratus-{n}"
        self.processes = []
        # One executor on the coordinator's node (it cannot have none); the functions ask
        # for more memory than it offers, so they run on the agents only.
        memory_mb = _memory_mb()
        address = hosts.stratus_up("coord", data_dir, f"{store}/{n}", "--executors", "1")
        self.processes.append(hosts.processes[-1])
        key = (data_dir / "key").read_text().strip()
        for k in range(1, n + 1):
            agent = ["--cores", "1", "--memory-mb", str(memory_mb + 2048)]
            self.processes.append(hosts.join(f"n{k}", address, base / f"n{k}-{n}", key, *agent))
        progress(f"{n} hosts: stratus up, agents started")
        self.app = stratus.connect(address, data_dir=data_dir)
        options = {"memory_mb": memory_mb + 1024, "min_instances": n}
        self.functions = {
            "trivial": self.app.function(incr, name="incr", **options),
            "rmw_eventual": self.app.function(rmw, name="rmw_eventual", **options),
            "rmw_serializable": self.app.function(
                rmw, name="rmw_serializable", consistency="serializable", **options
            ),
        }
        self.functions["rmw_hot"] = self.functions["rmw_serializable"]
        names = {f.name for f in self.functions.values()}
        wait_for_spread(self.app, names, {f"n{k}" for k in range(1, n + 1)})

    def _args(self, workload: str, i: int) -> tuple[Any, ...]:
        return (i,) if workload == "trivial" else (key_of(workload, self.keys, i), i)

    def call(self, workload: str) -> Callable[[int], Any]:
        fn = self.functions[workload]
        return lambda i: fn.remote(*self._args(workload, i)).result(timeout=RESULT_TIMEOUT)

    def batch(self, workload: str) -> Callable[[int], list[Any]]:
        fn = self.functions[workload]

        def run(n: int) -> list[Any]:
            futures = [fn.remote(*self._args(workload, i)) for i in range(n)]
            return [_result_or_conflict(f) for f in futures]

        return run

    def hot_value(self) -> int:
        return int(self.app.kv.get(HOT) or 0)

    def close(self, hosts: Any) -> None:
        self.app.close()
        for process in reversed(self.processes):
            hosts.stop(process)


def _result_or_conflict(future: Any) -> Any:
    """The call's value, or its ``ConflictError``: with many calls in flight on one key, a
    serializable call can lose all its runs (``SERIALIZABLE_ATTEMPTS``), as documented."""
    try:
        return future.result(timeout=RESULT_TIMEOUT)
    except stratus.ConflictError as error:
        return error


class Peer(System):
    """Ray or Dask: ``submit(fn, *args)`` returns a handle, ``gather(handles)`` the values."""

    def __init__(self, name: str, redis_url: str, keys: int) -> None:
        self.name, self.redis_url, self.keys = name, redis_url, keys
        self.submit: Callable[..., Any] = lambda fn, *args: None
        self.gather: Callable[[list[Any]], list[Any]] = lambda handles: []

    def _args(self, workload: str, i: int) -> tuple[Any, ...]:
        if workload == "trivial":
            return (plain_incr, i)
        key = f"{self.name}/{key_of(workload, self.keys, i)}"
        return (redis_rmw, self.redis_url, key, i, workload != "rmw_eventual")

    def call(self, workload: str) -> Callable[[int], Any]:
        return lambda i: self.gather([self.submit(*self._args(workload, i))])[0]

    def batch(self, workload: str) -> Callable[[int], list[Any]]:
        return lambda n: self.gather([self.submit(*self._args(workload, i)) for i in range(n)])

    def hot_value(self) -> int:
        import redis

        with redis.Redis.from_url(self.redis_url) as client:
            return int(client.get(f"{self.name}/{HOT}") or 0)


class RayPeer(Peer):
    """``ray.cluster_utils.Cluster``: a head without CPUs, then one 1-CPU node per host."""

    def __init__(self, ray: Any, redis_url: str, keys: int) -> None:
        super().__init__("ray", redis_url, keys)
        from ray.cluster_utils import Cluster

        self.ray = ray
        self.cluster = Cluster()
        try:
            self.cluster.add_node(**_ray_node(0))  # the first node is the head
            ray.init(address=self.cluster.address)
        except BaseException:
            self.close()
            raise
        tasks = {fn: ray.remote(fn) for fn in (plain_incr, redis_rmw)}
        self.submit = lambda fn, *args: tasks[fn].remote(*args)
        self.gather = lambda handles: ray.get(handles, timeout=RESULT_TIMEOUT)
        self.nodes = 0

    def grow(self, n: int) -> None:
        while self.nodes < n:
            started = time.time()
            try:
                self.cluster.add_node(**_ray_node(1))
            except Exception:  # its processes are not the cluster's: its shutdown misses them
                kill_ray_leftovers(started)
                raise
            self.nodes += 1
        self.cluster.wait_for_nodes(timeout=GROW_TIMEOUT)

    def close(self) -> None:
        self.ray.shutdown()
        self.cluster.shutdown()


def start_ray(ray: Any, redis_url: str, keys: int, attempts: int = 3) -> RayPeer | str:
    """Ray's head, or why not. A head waits 30 s at most for its raylet to register, which
    a loaded 2-core machine can outlast: a failed start is cleaned up and tried again."""
    failure = ""
    for attempt in range(1, attempts + 1):
        progress(f"starting Ray's head (attempt {attempt})")
        started = time.time()
        try:
            return RayPeer(ray, redis_url, keys)
        except Exception as error:  # Ray raises a bare Exception on a timed-out start
            failure = str(error)
            progress(f"Ray did not start: {failure}")
            kill_ray_leftovers(started)
    return f"Ray did not start in {attempts} attempts (load average {loadavg()}): {failure}"


def kill_ray_leftovers(since: float) -> None:
    """SIGKILL the processes of a failed Ray start: Ray's, started since ``since``, below
    this process or already orphaned from it (then in this process's working directory)."""
    table = process_table()
    ours = set(descendants(table, os.getpid())) - {os.getpid()}
    for proc in table.values():
        named = any(a.startswith("ray::") or "/ray/" in a for a in proc.cmdline[:3])
        if not named or proc.started < since - 1:
            continue
        with contextlib.suppress(OSError):
            if proc.pid in ours or os.readlink(f"/proc/{proc.pid}/cwd") == os.getcwd():
                os.kill(proc.pid, signal.SIGKILL)


class DaskPeer(Peer):
    """``dask scheduler`` on ``coord`` and one ``dask worker`` (1 thread) per host."""

    def __init__(self, hosts: Any, redis_url: str, keys: int) -> None:
        super().__init__("dask", redis_url, keys)
        import distributed

        self.hosts = hosts
        self.dask = str(Path(sys.executable).with_name("dask"))
        address = hosts.addresses["coord"]
        scheduler = [self.dask, "scheduler", "--host", address, "--port", "8786"]
        hosts.run("coord", [*scheduler, "--no-dashboard"])
        self.address = f"tcp://{address}:8786"
        self.client = distributed.Client(self.address, timeout=60)
        self.submit = lambda fn, *args: self.client.submit(fn, *args, pure=False)
        self.gather = lambda handles: self.client.gather(handles)
        self.nodes = 0

    def grow(self, n: int) -> None:
        while self.nodes < n:
            self.nodes += 1
            host = f"n{self.nodes}"
            worker = [self.dask, "worker", self.address, "--nthreads", "1", "--name", host]
            worker += ["--host", self.hosts.addresses[host], "--no-dashboard", "--no-nanny"]
            self.hosts.run(host, worker)
        self.client.wait_for_workers(n, timeout=GROW_TIMEOUT)

    def close(self) -> None:
        self.client.close()


def _memory_mb() -> int:
    """This machine's memory: what the coordinator's one executor offers."""
    with open("/proc/meminfo") as meminfo:
        return int(meminfo.readline().split()[1]) // 1024


def _ray_node(cpus: int) -> dict[str, Any]:
    """A Ray node's options. Its agents' ports are given: with port 0 the raylet waits for
    each agent to write the port it took, which a loaded 2-core machine can outlast."""
    from helpers import free_port

    ports = ("metrics_agent_port", "dashboard_agent_listen_port", "runtime_env_agent_port")
    return {
        "num_cpus": cpus,
        "object_store_memory": 80 * 2**20,
        "include_dashboard": False,
        **{name: free_port() for name in ports},
    }


def wait_for_spread(app: Any, functions: set[str], nodes: set[str], timeout: float = 90) -> None:
    """Wait until every function's warm pool has a ready executor on each of ``nodes``."""
    deadline = time.monotonic() + timeout
    while True:
        ready = [e for e in app.status().executors if e.state == "ready"]
        pools = {f: {e.node for e in ready if f in e.pinned} for f in functions}
        if all(nodes <= used for used in pools.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"pools not spread over {sorted(nodes)} in {timeout} s: {pools}")
        time.sleep(0.05)


def measure(systems: list[System], settings: Settings) -> dict[str, Any]:
    """Every workload of every system, the systems taking turns round by round."""
    samples: dict[tuple[str, str], list[int]] = defaultdict(list)
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
    hot_calls: dict[str, int] = defaultdict(int)
    conflicts: dict[tuple[str, str], int] = defaultdict(int)
    start_hot = {s.name: s.hot_value() for s in systems}
    for system in systems:
        for workload in WORKLOADS:
            time_calls(system.call(workload), lambda i: i + 1, settings.warmup_calls)
            hot_calls[system.name] += settings.warmup_calls * (workload == "rmw_hot")
    for round_ in range(settings.rounds):
        for system in alternating(systems, round_):
            for workload in WORKLOADS:
                progress(f"round {round_ + 1}: {system.name} {workload}")
                settle(settings.settle_s)
                call = system.call(workload)
                samples[system.name, workload] += time_calls(
                    call, lambda i: i + 1, settings.sync_calls
                )
                settle(settings.settle_s)
                rate, failed = batch_rate(system.batch(workload), settings.async_calls)
                rates[system.name, workload].append(rate)
                conflicts[system.name, workload] += failed
                if workload == "rmw_hot":
                    hot_calls[system.name] += settings.sync_calls + settings.async_calls - failed
    result: dict[str, Any] = {}
    for system in systems:
        rows = result[system.name] = {}
        for workload in WORKLOADS:
            runs = rates[system.name, workload]
            rows[workload] = {
                "sync": latency_summary(samples[system.name, workload]),
                "calls_per_s": round(sorted(runs)[len(runs) // 2]) if runs else None,
                "runs_calls_per_s": [round(r) for r in runs],
                "conflict_errors": conflicts[system.name, workload],
            }
        applied = system.hot_value() - start_hot[system.name]
        rows["hot_key_check"] = {"calls": hot_calls[system.name], "applied": applied}
        if applied != hot_calls[system.name]:
            raise AssertionError(
                f"{system.name}: {hot_calls[system.name]} hot-key calls applied {applied} times"
            )
    return result


def batch_rate(batch: Callable[[int], list[Any]], n: int) -> tuple[float, int]:
    """Calls per second of ``batch(n)`` (calls of ``i`` in flight, each ``i + 1``) counting
    the calls that succeeded, and how many failed with ``ConflictError``."""
    start = time.perf_counter_ns()
    results = batch(n)
    elapsed = time.perf_counter_ns() - start
    done = [(i, r) for i, r in enumerate(results) if not isinstance(r, stratus.ConflictError)]
    if any(r != i + 1 for i, r in done):
        raise AssertionError("a batch returned wrong results")
    failed = n - len(done)
    return (n - failed) / (elapsed / 1e9), failed


def table(by_hosts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the report: hosts, system, workload, p50, p99, calls per second."""
    return [
        {
            "hosts": int(n),
            "system": system,
            "workload": workload,
            "p50_us": row["sync"]["p50_us"],
            "p99_us": row["sync"]["p99_us"],
            "per_s": row["calls_per_s"],
            "conflict_errors": row["conflict_errors"],
        }
        for n, systems in by_hosts.items()
        for system, rows in systems.items()
        for workload, row in rows.items()
        if workload in WORKLOADS
    ]


def run(settings: Settings, mode: str, with_ray: bool, with_dask: bool) -> dict[str, Any]:
    clock_start = time.perf_counter_ns()
    doc = run_header(
        "scaleout", mode, ray=module_version("ray"), dask=module_version("distributed")
    )
    doc["settings"] = asdict(settings)
    sys.path.insert(0, str(TESTS))
    import netns

    refusal = netns.refusal()
    if refusal:
        doc["skipped"] = f"the scale-out benchmark needs network namespaces: {refusal}"
        return doc
    doc["topology"] = (
        "network namespaces on one bridge: store (Redis), coord (stratus coordinator, Dask"
        " scheduler), n1..nN (a stratus node agent of 1 executor, a Dask worker of 1 thread);"
        " Ray: a CPU-less head and N 1-CPU nodes in the client's namespace; the client is"
        " the root namespace"
    )
    left_out: dict[str, str] = {}
    by_hosts: dict[str, dict[str, Any]] = {}
    hosts = netns.Hosts(log_dir=Path(tempfile.mkdtemp(prefix="stratus-scaleout-logs-")))
    progress(f"logs of the hosts' processes in {hosts.log_dir}")
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-scaleout-")))
        stack.callback(hosts.teardown)
        hosts.make(["store", "coord", *(f"n{k}" for k in range(1, max(settings.hosts) + 1))])
        redis = hosts.redis("store", base)
        peers: list[Any] = []
        if with_dask:
            progress("starting Dask's scheduler")
            dask = DaskPeer(hosts, f"{redis}/0", settings.keys)
            stack.callback(dask.close)
            peers.append(dask)
        else:
            left_out["dask"] = "skipped with --no-dask"
        ray, reason, _ = import_peer("ray") if with_ray else (None, "skipped with --no-ray", 0)
        ray_peer = start_ray(ray, f"{redis}/0", settings.keys) if ray is not None else reason
        if isinstance(ray_peer, RayPeer):
            stack.callback(ray_peer.close)
            peers.append(ray_peer)
        elif ray_peer:
            left_out["ray"] = ray_peer
        for n in settings.hosts:
            progress(f"{n} hosts: starting stratus, growing the peers")
            system = Stratus(hosts, base, redis, n, settings.keys)
            try:
                for peer in list(peers):
                    progress(f"{n} hosts: growing {peer.name}")
                    try:
                        peer.grow(n)
                    except Exception as error:  # a loaded machine: keep what was measured
                        progress(f"{peer.name} left out from {n} hosts on: {error!r}")
                        left_out[peer.name] = f"did not grow to {n} nodes: {error!r}"
                        peers.remove(peer)
                by_hosts[str(n)] = measure([system, *peers], settings)
            finally:
                progress(f"{n} hosts: stopping stratus")
                system.close(hosts)
    progress("stopped")
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["hosts"] = by_hosts
    doc["left_out"] = left_out
    doc["table"] = table(by_hosts)
    doc["load"]["loadavg_end"] = loadavg()
    doc["duration_s"] = round((time.perf_counter_ns() - clock_start) / 1e9, 1)
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": TINY, "tiny": TINY}
    bench_main(__doc__, RESULTS, settings, run, peers=True, argv=argv)


if __name__ == "__main__":
    main()
