"""Commit latency: single Redis vs Redis Cluster, single-shard and multi-shard, one run.

Run it with ``.venv/bin/python bench/rcluster.py`` (``--quick`` for a short run). It prints
one JSON document and writes it to ``bench/results/rcluster.json``.

Servers: one private ``redis-server`` and one private Redis Cluster of 3 masters + 3
replicas (``tests/redis_cluster.py``), all on loopback, all with ``appendonly yes``
(``appendfsync everysec``). The measured call is ``store.commit`` of a transaction that read
2 keys and writes those 2 keys (the reads are done by ``get`` before the clock starts, so
every commit succeeds), in five configurations:

- ``redis``: ``RedisStore``, one slot, one Lua script call.
- ``cluster_one_shard``: ``RedisClusterStore`` (8 shards), both keys on one shard: one
  script call, as ``redis`` but through the cluster client.
- ``cluster_two_shards``: both keys on different shards: two-phase commit (prepare on each
  shard, the decision, finish on each: 5 script calls).
- ``cluster_*_wait1``: the same with ``wait_replicas=1`` (``WAIT 1`` pipelined after each
  write script: prepare, decision and finish too), the cost of "an acknowledged write
  survives a failover".

Configurations alternate their order in rounds and samples are pooled (the VM is noisy).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _stats import (
    add_mode_options,
    chosen_mode,
    git_revision,
    latency_summary,
    results_path,
    write_json,
)

TESTS = Path(__file__).resolve().parents[1] / "tests"
RESULTS = results_path("rcluster")
ROUNDS = {"full": 6, "quick": 3, "tiny": 1}
PER_ROUND = {"full": 1000, "quick": 300, "tiny": 30}


def concat(old: bytes | None, value: bytes) -> bytes:
    return (old or b"") + value


def committer(store: Any, a: str, b: str) -> Callable[[], int]:
    """A function that does one read-read-commit and returns the commit's duration (ns)."""
    from stratus.store import Put, Transaction

    value = b"x" * 100

    def once() -> int:
        seen = store.get_many([a, b])
        txn = Transaction(
            reads={a: seen[a].version, b: seen[b].version}, writes=[Put(a, value), Put(b, value)]
        )
        start = time.perf_counter_ns()
        result = store.commit(txn)
        elapsed = time.perf_counter_ns() - start
        assert result.ok
        return elapsed

    return once


def keys_on(store: Any, same: bool) -> tuple[str, str]:
    first = "bench/0"
    for i in range(1, 1000):
        other = f"bench/{i}"
        if (store.shard_of(other) == store.shard_of(first)) == same:
            return first, other
    raise RuntimeError("no such keys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_options(parser)
    mode = chosen_mode(parser.parse_args())
    sys.path.insert(0, str(TESTS))
    import redis_cluster
    import redis_server
    from stratus.store.redis_cluster import RedisClusterStore
    from stratus.store.redis_store import RedisStore

    aof = ("--save", "", "--appendonly", "yes")
    with tempfile.TemporaryDirectory(prefix="stratus-rcluster-") as folder:
        root = Path(folder)
        (root / "single").mkdir()
        (root / "cluster").mkdir()
        with (
            redis_server.serve(root / "single", aof) as url,
            redis_cluster.serve(root / "cluster") as cluster,
        ):
            stores: list[Any] = [RedisStore(url, concat, namespace="bench")]
            stores.append(RedisClusterStore(cluster.url, concat, namespace="bench"))
            stores.append(
                RedisClusterStore(cluster.url, concat, namespace="bench-w", wait_replicas=1)
            )
            single, sharded, waited = stores
            configs = {
                "redis": committer(single, "bench/a", "bench/b"),
                "cluster_one_shard": committer(sharded, *keys_on(sharded, True)),
                "cluster_two_shards": committer(sharded, *keys_on(sharded, False)),
                "cluster_one_shard_wait1": committer(waited, *keys_on(waited, True)),
                "cluster_two_shards_wait1": committer(waited, *keys_on(waited, False)),
            }
            samples: dict[str, list[int]] = {name: [] for name in configs}
            order = list(configs)
            for run in range(ROUNDS[mode]):
                for name in order if run % 2 == 0 else reversed(order):
                    once = configs[name]
                    for _ in range(50):  # warm up
                        once()
                    samples[name] += [once() for _ in range(PER_ROUND[mode])]
            for store in stores:
                store.close()
    document = {
        "benchmark": "rcluster",
        "mode": mode,
        "revision": git_revision(),
        "commit_latency_us": {name: latency_summary(s) for name, s in samples.items()},
    }
    print(write_json(RESULTS, document))


if __name__ == "__main__":
    main()
