"""An embedded cluster whose state lives on a Redis Cluster (``redis-cluster://`` store
URL): functions, serializable transactions across shards, the file system, ``app.kv``."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import stratus
from stratus.kv.open import open_store
from stratus.store.redis_cluster import RedisClusterStore

SHARDS = 4


@pytest.fixture
def store_url(redis_cluster_url: str, tmp_path: Path) -> str:
    """A ``redis-cluster://`` URL of the session's cluster, on a namespace of the test's."""
    node = urlsplit(redis_cluster_url)
    namespace = "app-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    # A node that is down first: the others are where the cluster is discovered from.
    return (
        f"redis-cluster://127.0.0.1:1,{node.hostname}:{node.port}"
        f"?namespace={namespace}&shards={SHARDS}&wait_replicas=1"
    )


@pytest.fixture
def app(store_url: str, tmp_path: Path) -> Iterator[stratus.App]:
    with stratus.connect(data_dir=tmp_path / "stratus", executors=2, store=store_url) as app:
        yield app


def test_a_redis_cluster_url_opens_a_sharded_store(store_url: str) -> None:
    with open_store(store_url) as store:
        assert isinstance(store, RedisClusterStore)
        assert (store.shards, store.wait_replicas) == (SHARDS, 1)
        store.put("k", b"v")
        assert store.get("k").value == b"v"


def test_functions_keep_their_state_on_a_redis_cluster(app: stratus.App, store_url: str) -> None:
    @app.function
    def incr(ctx: stratus.Context, x: int) -> int:
        ctx.kv.incr("calls")
        return x + 1

    futures = [incr.remote(i) for i in range(40)]
    assert [f.result(timeout=60) for f in futures] == list(range(1, 41))
    assert app.kv.get("calls") == 40


def test_serializable_transfers_across_shards_keep_the_total(
    app: stratus.App, store_url: str
) -> None:
    accounts = [f"acct/{i}" for i in range(6)]
    with open_store(store_url) as store:
        assert isinstance(store, RedisClusterStore)
        assert len({store.shard_of(key) for key in accounts}) > 1  # 2PC commits
    for key in accounts:
        app.kv.put(key, 100)

    @app.function(consistency="serializable")
    def transfer(ctx: stratus.Context, src: str, dst: str, amount: int) -> bool:
        balance = ctx.kv.get(src)
        if balance < amount:
            return False
        ctx.kv.put(src, balance - amount)
        ctx.kv.put(dst, ctx.kv.get(dst) + amount)
        return True

    moves = [(accounts[i % 6], accounts[(i * 5 + 1) % 6], 1 + i % 17) for i in range(120)]
    moves = [(s, d, a) for s, d, a in moves if s != d]
    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(lambda m: transfer.remote(*m).result(timeout=90), m) for m in moves]
        outcomes = [f.result() for f in futures]
    assert any(outcomes)
    balances = [app.kv.get(key) for key in accounts]
    assert sum(balances) == 600 and min(balances) >= 0


def test_files_appended_by_functions_on_a_redis_cluster(app: stratus.App) -> None:
    @app.function
    def append(ctx: stratus.Context, i: int) -> None:
        with ctx.fs.open("/log", "a") as f:
            f.write(f"{i}\n")

    futures = [append.remote(i) for i in range(20)]
    for f in futures:
        f.result(timeout=60)
    with app.fs.transaction() as fs:
        lines = fs.read_bytes("/log").split()
    assert sorted(int(line) for line in lines) == list(range(20))
