"""Store benchmark: SQLite (synchronous FULL, NORMAL), LMDB (sync on, off), Redis, one run.

Run it with ``.venv/bin/python bench/store.py`` (``--quick`` for a short run, ``--dir`` to
put the files on another filesystem). It prints one JSON document on stdout and writes it
to ``bench/results/store.json``.

Redis runs as two private ``redis-server`` processes on loopback TCP, their files in the
same directory as the others': ``redis_always`` (AOF, ``appendfsync always``: fsync before
each reply) and ``redis_everysec`` (AOF, ``appendfsync everysec``: survives a killed
server, a power loss takes up to ~1 s). No RDB snapshots.

What is measured, per backend configuration (``memory`` is the floor: the shared logic
with no engine under it), latencies per call with ``time.perf_counter_ns``:

1. ``get`` of a present key (100 B value), hot: the same key again and again.
2. ``put`` of a 100 B value (over 100 keys).
3. ``merge`` of a 100 B value (over 100 keys; ``merge_fn`` keeps the larger value).
4. ``commit`` of a transaction that read 2 keys and writes 2 keys (the reads are done by
   ``get`` before the clock starts; the commit validates them and always succeeds).
5. Two processes (spawned, each with its own store object on the same file or Redis
   namespace) merging into
   the same key as fast as they can, after meeting at a barrier: merges per second over
   both, and each merge's latency under that contention.

And the floor of durability on this machine: ``os.fdatasync`` after a 4 KiB append, in
the directory the stores use; and of a Redis call: a PING through redis-py (one loopback
round trip). Configurations are measured in rounds that alternate their
order (A B C D, D C B A, ...) and the samples of each are pooled, because the VM is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lmdb
import redis

import stratus
from _stats import git_revision, latency_summary, median, results_path, write_json
from stratus.store import LMDBStore, MemoryStore, Put, SQLiteStore, Store, Transaction
from stratus.store.redis_store import RedisStore

RESULTS = results_path("store")
TESTS = Path(__file__).resolve().parents[1] / "tests"
REDIS_OPTIONS = {
    "redis_always": ("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
    "redis_everysec": ("--save", "", "--appendonly", "yes", "--appendfsync", "everysec"),
}
VALUE = b"v" * 100


def keep_max(old: bytes | None, value: bytes) -> bytes:
    """A max register: the merge of the benchmark (cheap, so the store's cost shows)."""
    return value if old is None or value > old else old


def open_config(name: str, directory: Path) -> Store:
    """The store of configuration ``name``, with its files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if name == "memory":
        return MemoryStore(keep_max)
    if name == "sqlite_full":
        return SQLiteStore(directory / "store.db", keep_max, synchronous="FULL")
    if name == "sqlite_normal":
        return SQLiteStore(directory / "store.db", keep_max, synchronous="NORMAL")
    if name == "lmdb_sync":
        return LMDBStore(directory / "env", keep_max, sync=True)
    if name == "lmdb_nosync":
        return LMDBStore(directory / "env", keep_max, sync=False)
    if name in REDIS_OPTIONS:  # a namespace per directory, on the server of the config
        return RedisStore(os.environ[redis_url_variable(name)], keep_max, namespace=directory.name)
    raise ValueError(name)


CONFIGS = ["memory", "sqlite_full", "sqlite_normal", "lmdb_sync", "lmdb_nosync", *REDIS_OPTIONS]
SHARED_CONFIGS = CONFIGS[1:]


def redis_url_variable(name: str) -> str:
    """The environment variable holding the URL of config ``name``'s server (spawned
    workers inherit it)."""
    return f"STRATUS_BENCH_{name.upper()}_URL"


def start_redis_servers(base: Path, stack: contextlib.ExitStack) -> str:
    """Start one private redis-server per Redis config (stopped by ``stack``); returns
    the server's version."""
    sys.path.insert(0, str(TESTS))
    import redis_server  # the test suite's helper: a free loopback port, its own directory

    for name, options in REDIS_OPTIONS.items():
        directory = base / f"{name}-server"
        directory.mkdir()
        url = stack.enter_context(redis_server.serve(directory, options))
        os.environ[redis_url_variable(name)] = url
        stack.callback(os.environ.pop, redis_url_variable(name), None)
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split("v=")[1].split()[0] if "v=" in out else out.strip()


def timed(operation: Callable[[int], object], n: int) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        operation(i)
        samples.append(clock() - start)
    return samples


def commit_samples(store: Store, n: int) -> list[int]:
    """``n`` commits of 2 reads + 2 writes, timing only the commit."""
    samples = []
    for i in range(n):
        seen = store.get_many(["c1", "c2"])
        txn = Transaction(
            reads={key: entry.version for key, entry in seen.items()},
            writes=[Put("c1", VALUE), Put(f"c2-{i % 100}", VALUE)],
        )
        start = time.perf_counter_ns()
        result = store.commit(txn)
        samples.append(time.perf_counter_ns() - start)
        assert result.ok
    return samples


def fsync_samples(directory: Path, n: int) -> list[int]:
    """The latency of ``fdatasync`` after a 4 KiB append: the price of one durable write."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        samples = []
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            start = time.perf_counter_ns()
            os.fdatasync(fd)
            samples.append(time.perf_counter_ns() - start)
    finally:
        os.close(fd)
        path.unlink()
    return samples


def ping_samples(url: str, n: int) -> list[int]:
    """The latency of a PING through redis-py: the floor of any Redis store call."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()  # connect first
        return timed(lambda i: client.ping(), n)
    finally:
        client.close()


def one_round(store: Store, gets: int, writes: int) -> dict[str, list[int]]:
    """Latency samples of each single-process operation on ``store``."""
    return {
        "get_hot": timed(lambda i: store.get("hot"), gets),
        "put_100B": timed(lambda i: store.put(f"p{i % 100}", VALUE), writes),
        "merge_100B": timed(lambda i: store.merge(f"m{i % 100}", VALUE), writes),
        "commit_2r2w": commit_samples(store, writes),
    }


# --------------------------------------------------------------------------- two processes


def _merge_worker(name: str, directory: str, barrier: Any, results: Any, n: int) -> None:
    with open_config(name, Path(directory)) as store:
        store.merge("warm", VALUE)
        barrier.wait(timeout=60)
        begin = time.perf_counter_ns()  # CLOCK_MONOTONIC: comparable across processes
        samples = timed(lambda i: store.merge("hot", b"%08d" % i), n)
        end = time.perf_counter_ns()
    results.put((begin, end, samples))


def two_process_merges(name: str, directory: Path, n: int) -> tuple[float, list[int]]:
    """Merges per second of two processes merging ``n`` times each into one key, and the
    latencies they saw."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_merge_worker, args=(name, str(directory), barrier, results, n))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join()
    results.close()
    results.join_thread()
    wall_ns = max(end for _, end, _ in outcomes) - min(begin for begin, _, _ in outcomes)
    return 2 * n * 1e9 / wall_ns, outcomes[0][2] + outcomes[1][2]


# --------------------------------------------------------------------------- the run


def filesystem_of(path: Path) -> str | None:
    """The mount (device, type, options) holding ``path``, from /proc/mounts."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    best = max((m for m in mounts if str(path.resolve()).startswith(m[1])), key=lambda m: len(m[1]))
    return f"{best[0]} on {best[1]} type {best[2]} ({best[3]})"


def run(base: Path, quick: bool) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        redis_version = start_redis_servers(base, stack)
        doc = run_all(base, quick)
        doc["versions"]["redis-server"] = redis_version
        return doc


def run_all(base: Path, quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 5
    per_round = {"get": 2000 if quick else 5000, "write": 100 if quick else 300}
    process_merges = 300 if quick else 1500
    process_runs = 1 if quick else 2
    began = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "store",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "filesystem": filesystem_of(base),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {
            "stratus": stratus.__version__,
            "sqlite": sqlite3.sqlite_version,
            "py-lmdb": lmdb.__version__,
            "lmdb": ".".join(map(str, lmdb.version())),
            "redis-py": redis.__version__,
            "hiredis": redis.utils.HIREDIS_AVAILABLE,
            "git": git_revision(),
        },
        "settings": {
            "rounds": rounds,
            "gets_per_round": per_round["get"],
            "writes_per_round": per_round["write"],
            "value_bytes": len(VALUE),
            "two_process_merges_each": process_merges,
            "two_process_runs": process_runs,
        },
    }
    stores = {name: open_config(name, base / name) for name in CONFIGS}
    samples: dict[str, dict[str, list[int]]] = {name: {} for name in CONFIGS}
    fsync: list[int] = []
    ping: list[int] = []
    try:
        for store in stores.values():
            store.put("hot", VALUE)
            store.put("c1", VALUE)
            store.put("c2", VALUE)
        for r in range(rounds):
            fsync += fsync_samples(base, 100)
            ping += ping_samples(os.environ[redis_url_variable("redis_everysec")], 300)
            for name in CONFIGS if r % 2 == 0 else reversed(CONFIGS):
                batches = one_round(stores[name], per_round["get"], per_round["write"])
                for operation, batch in batches.items():
                    samples[name].setdefault(operation, []).extend(batch)
    finally:
        for store in stores.values():
            store.close()

    two: dict[str, dict[str, Any]] = {}
    for run_index in range(process_runs):
        order = SHARED_CONFIGS if run_index % 2 == 0 else SHARED_CONFIGS[::-1]
        for name in order:
            directory = base / f"{name}-2p-{run_index}"
            rate, latencies = two_process_merges(name, directory, process_merges)
            entry = two.setdefault(name, {"runs_per_s": [], "latencies": []})
            entry["runs_per_s"].append(round(rate))
            entry["latencies"] += latencies

    results: dict[str, Any] = {}
    for name in CONFIGS:
        results[name] = {op: latency_summary(batch) for op, batch in samples[name].items()}
        if name in two:
            single = results[name]["merge_100B"]["mean_us"]
            results[name]["two_process_merges"] = {
                "merges_per_s": round(median(two[name]["runs_per_s"])),
                "runs_per_s": two[name]["runs_per_s"],
                "one_process_merges_per_s": round(1e6 / single),
                "latency": latency_summary(two[name]["latencies"]),
            }
    doc["fdatasync_4KiB"] = latency_summary(fsync)
    doc["redis_py_ping"] = latency_summary(ping)
    doc["results"] = results
    doc["table_p50_p99_us"] = {
        name: {
            op: [summary["p50_us"], summary["p99_us"]]
            for op, summary in results[name].items()
            if op != "two_process_merges"
        }
        | (
            {"two_process_merges_per_s": results[name]["two_process_merges"]["merges_per_s"]}
            if "two_process_merges" in results[name]
            else {}
        )
        for name in CONFIGS
    }
    doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["duration_s"] = round(time.perf_counter() - began, 1)
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--dir", type=Path, default=None, help="where the store files go")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="stratus-bench-store-", dir=args.dir))
    try:
        doc = run(base, args.quick)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = json.dumps(doc, indent=2) if args.no_save else write_json(RESULTS, doc)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
