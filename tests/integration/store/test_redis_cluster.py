"""Multi-shard transactions and failover of the Redis Cluster store, on a real cluster.

A committer "crashes" in-process: a patched step raises a ``BaseException`` that the
store's cleanup does not catch, so its locks and staged writes stay in Redis exactly as a
killed process would leave them; another store object (another client) then meets them.
"""

from __future__ import annotations

import functools
import hashlib
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

import redis_cluster
from stratus._exceptions import StoreUnavailable
from stratus.store import Entry, Put, Transaction
from stratus.store.redis_cluster import RedisClusterStore


def concat(old: bytes | None, value: bytes) -> bytes:
    return (old or b"") + value


def namespace_of(path: Path) -> str:
    """A namespace of its own for each test."""
    return "rc-" + hashlib.sha256(str(path).encode()).hexdigest()[:20]


class Crash(BaseException):
    """The committer dies here."""


@pytest.fixture
def pair(redis_cluster_url: str, tmp_path: Path) -> Iterator[tuple[RedisClusterStore, ...]]:
    """A committer and a reader on one fresh namespace of 4 shards, short lock deadlines."""
    options = {"namespace": namespace_of(tmp_path), "shards": 4, "lock_timeout": 0.5}
    with (
        RedisClusterStore(redis_cluster_url, concat, **options) as one,
        RedisClusterStore(redis_cluster_url, concat, **options) as two,
    ):
        yield one, two


def on_two_shards(store: RedisClusterStore) -> tuple[str, str]:
    """Two keys on different shards."""
    first = "k0"
    for i in range(1, 100):
        if store.shard_of(f"k{i}") != store.shard_of(first):
            return first, f"k{i}"
    raise AssertionError("no two shards")


def test_a_reader_never_sees_half_a_multi_shard_transaction(
    pair: tuple[RedisClusterStore, ...],
) -> None:
    writer, reader = pair
    a, b = on_two_shards(writer)
    writer.commit(Transaction(reads={}, writes=[Put(a, b"0"), Put(b, b"0")]))
    stop = threading.Event()
    torn: list[dict[str, Entry]] = []

    def read() -> None:
        while not stop.is_set():
            seen = reader.get_many([a, b])
            if seen[a].value != seen[b].value:
                torn.append(seen)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for n in range(1, 150):
            value = str(n).encode()
            assert writer.commit(Transaction(reads={}, writes=[Put(a, value), Put(b, value)])).ok
    finally:
        stop.set()
        thread.join(timeout=30)
    assert torn == []
    assert reader.get(a).value == reader.get(b).value == b"149"


def test_a_committer_dead_before_its_decision_is_aborted_by_readers(
    pair: tuple[RedisClusterStore, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    committer, reader = pair
    a, b = on_two_shards(committer)
    committer.put(a, b"old")

    def crash(*args: object) -> bytes:
        raise Crash

    monkeypatch.setattr(committer._txn, "decide", crash)
    with pytest.raises(Crash):
        committer.commit(Transaction(reads={a: 1}, writes=[Put(a, b"new"), Put(b, b"new")]))
    # Prepared, undecided: readers see the state before it, never half of it.
    assert reader.get_many([a, b]) == {a: Entry(b"old", reader.get(a).version), b: Entry(None, 0)}
    # A write waits for the deadline (0.5 s), then aborts it and goes through.
    assert reader.put(a, b"other") > 0
    assert reader.get_many([a, b])[b] == Entry(None, 0)
    assert reader.recover() == 0  # nothing left to settle


def test_a_committer_dead_after_its_decision_is_rolled_forward_by_readers(
    pair: tuple[RedisClusterStore, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    committer, reader = pair
    a, b = on_two_shards(committer)

    def crash(*args: object) -> int:
        raise Crash

    monkeypatch.setattr(committer._txn, "finish_on", crash)
    with pytest.raises(Crash):
        committer.commit(Transaction(reads={}, writes=[Put(a, b"1"), Put(b, b"2")]))
    # Committed (the decision is written) but applied nowhere: a reader finishes it.
    seen = reader.get_many([a, b])
    assert (seen[a].value, seen[b].value) == (b"1", b"2")
    assert reader.recover() == 0


def test_recover_settles_abandoned_transactions_past_their_deadline(
    pair: tuple[RedisClusterStore, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    committer, reader = pair
    a, b = on_two_shards(committer)

    def crash(*args: object) -> bytes:
        raise Crash

    monkeypatch.setattr(committer._txn, "decide", crash)
    with pytest.raises(Crash):
        committer.commit(Transaction(reads={}, writes=[Put(a, b"x"), Put(b, b"y")]))
    deadline = time.monotonic() + 10
    settled = 0
    while settled < 2 and time.monotonic() < deadline:  # two shards hold it
        settled += reader.recover()
        time.sleep(0.05)
    assert settled == 2
    assert reader.get_many([a, b]) == {a: Entry(None, 0), b: Entry(None, 0)}


def test_a_commit_decided_before_a_failure_is_finished_as_committed(
    pair: tuple[RedisClusterStore, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision is written, then the committer fails (its WAIT, say): the commit is
    not acknowledged, but what the decision record says (committed) is what happens."""
    committer, reader = pair
    a, b = on_two_shards(committer)
    decide = committer._txn.decide

    def decide_then_fail(txid: str, decision: bytes) -> bytes:
        decided = decide(txid, decision)
        if decision == b"c":
            raise StoreUnavailable("the decision's WAIT timed out")
        return decided

    monkeypatch.setattr(committer._txn, "decide", decide_then_fail)
    with pytest.raises(StoreUnavailable):
        committer.commit(Transaction(reads={}, writes=[Put(a, b"1"), Put(b, b"2")]))
    seen = reader.get_many([a, b])
    assert (seen[a].value, seen[b].value) == (b"1", b"2")
    assert reader.recover() == 0


def test_a_watcher_is_signalled_by_commits_on_every_shard(
    pair: tuple[RedisClusterStore, ...],
) -> None:
    watcher, writer = pair
    signal = watcher.watch()
    assert signal.healthy and not signal.drain()  # nothing written yet
    for shard in range(writer.shards):
        key = next(f"k{i}" for i in range(1000) if writer.shard_of(f"k{i}") == shard)
        writer.put(key, b"v")
        assert select.select([signal], [], [], 10.0)[0] == [signal], f"shard {shard}"
        assert signal.drain() and not signal.drain()
    a, b = on_two_shards(writer)
    writer.commit(Transaction(reads={a: writer.get(a).version}, writes=[]))  # no signal
    writer.commit(Transaction(reads={}, writes=[Put(a, b"x"), Put(b, b"y")]))  # 2PC
    assert select.select([signal], [], [], 10.0)[0] == [signal]
    assert signal.drain()
    signal.close()
    assert not signal.healthy and not signal.drain()


def test_a_replicated_write_loads_its_script_on_a_master_without_it(
    redis_cluster_url: str, tmp_path: Path
) -> None:
    """With ``wait_replicas`` writes go as EVALSHA in a pipeline: a master that lost its
    scripts (a new one after a failover, or flushed) gets them and the write goes on."""
    options = {"namespace": namespace_of(tmp_path), "shards": 4, "wait_replicas": 1}
    with RedisClusterStore(redis_cluster_url, concat, **options) as store:
        a, b = on_two_shards(store)
        store.put(a, b"1")
        store._link.open().execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
        store.put(a, b"2")
        assert store.commit(Transaction(reads={}, writes=[Put(a, b"3"), Put(b, b"4")])).ok
        assert (store.get(a).value, store.get(b).value) == (b"3", b"4")


class Load(redis_cluster.Workload):
    """Threads putting to keys of their own, each remembering what was acknowledged (and
    what failed, which may or may not have been applied)."""

    def __init__(self, store: RedisClusterStore, threads: int = 4, keys: int = 60) -> None:
        super().__init__(*(functools.partial(self._run, t, keys) for t in range(threads)))
        self.store = store
        self.acknowledged: dict[str, bytes] = {}
        self.maybe: dict[str, set[bytes]] = {}
        self.acked_at: list[tuple[float, str]] = []  # monotonic time, key
        self._lock = threading.Lock()

    def _run(self, thread: int, keys: int) -> None:
        n = 0
        while not self.stopping.is_set():
            key, value = f"t{thread}/k{n % keys}", f"{thread}.{n}".encode()
            n += 1
            try:
                self.store.put(key, value)
            except Exception:  # not acknowledged: may or may not be there
                with self._lock:
                    self.maybe.setdefault(key, set()).add(value)
                continue
            with self._lock:
                self.acknowledged[key] = value
                self.maybe.pop(key, None)
                self.acked_at.append((time.monotonic(), key))

    def acks(self) -> int:
        return len(self.acked_at)

    def lost(self) -> dict[str, bytes]:
        """Acknowledged puts not readable now (nor overwritten by a failed one)."""
        got = self.store.get_many(list(self.acknowledged))
        return {
            key: value
            for key, value in self.acknowledged.items()
            if got[key].value != value and got[key].value not in self.maybe.get(key, set())
        }


def test_acknowledged_puts_survive_a_master_failover(tmp_path: Path) -> None:
    """A cluster of its own (it is failed over): every put that threads had acknowledged
    after WAIT 1 is readable once a replica took over its master's slots mid-load."""
    with (
        redis_cluster.serve(tmp_path) as cluster,
        RedisClusterStore(
            cluster.url, concat, namespace="failover", shards=6, wait_replicas=1
        ) as store,
    ):
        with Load(store) as load:
            load.wait_acks(200)
            cluster.failover(cluster.replicas()[0])
            load.wait_acks(200)
        assert load.lost() == {}


def masters_of(store: RedisClusterStore) -> list[int]:
    """The port of the master of each shard, now."""
    client = store._link.open()
    slots = [client.keyslot(shard.seq) for shard in store._layout.keys]
    return [client.nodes_manager.get_node_from_slot(slot).port for slot in slots]


def test_acknowledged_puts_survive_a_killed_master(tmp_path: Path) -> None:
    """SIGKILL a master mid-load: its replica takes over after the node timeout (1 s
    here), and every put acknowledged with WAIT 1 is readable. The new master has no
    replica until the killed node is back, so its shards refuse WAIT 1 writes until then."""
    with (
        redis_cluster.serve(tmp_path, node_timeout_ms=1000) as cluster,
        RedisClusterStore(
            cluster.url, concat, namespace="killed", shards=6, wait_replicas=1
        ) as store,
    ):
        victim = cluster.ports[0]  # a master: `--cluster create` makes the first ones so
        heir = cluster.replica_of(victim)
        its_shards = {i for i, port in enumerate(masters_of(store)) if port == victim}
        assert its_shards, "no shard on the victim"

        def acked_on_victim_since(moment: float) -> list[float]:
            acks = list(load.acked_at)
            return [at for at, key in acks if at > moment and store.shard_of(key) in its_shards]

        with Load(store) as load:
            load.wait_acks(200)
            killed = time.monotonic()
            cluster.kill(victim)
            cluster.wait_role(heir, "master")
            took_over = time.monotonic() - killed
            load.wait_acks(20)  # the other masters' shards went on meanwhile
            restarted = time.monotonic()
            cluster.restart(victim)  # back as the heir's replica: WAIT 1 succeeds again
            cluster.wait_role(victim, "slave")
            deadline = time.monotonic() + 30
            # (A put acknowledged just after ``killed`` may have beaten the kill: wait for
            # one after the restart.)
            while not acked_on_victim_since(restarted):
                assert time.monotonic() < deadline, "the killed master's shards stayed down"
                time.sleep(0.01)
        back = min(acked_on_victim_since(restarted)) - restarted
        print(  # the measured outage, for docs/store.md (run with -s)
            f"\nkilled master: its replica took over after {took_over:.2f} s; its shards "
            f"took WAIT 1 writes again {back:.2f} s after the killed node was restarted"
        )
        assert load.lost() == {}


class Paused:
    """A test hook on a committer: its two-phase commit stops between its phases (every
    shard prepared, the decision not written) until :meth:`resume`."""

    def __init__(self, store: RedisClusterStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.between_phases = threading.Event()
        self._resume = threading.Event()
        decide = store._txn.decide

        def decide_later(txid: str, decision: bytes) -> bytes:
            if decision == b"c" and not self.between_phases.is_set():
                self.between_phases.set()
                assert self._resume.wait(60), "never resumed"
            return decide(txid, decision)

        monkeypatch.setattr(store._txn, "decide", decide_later)

    def resume(self) -> None:
        self._resume.set()


def slot_master(cluster: redis_cluster.Cluster, store: RedisClusterStore, shard: int) -> int:
    """The port of the master of ``shard``'s slot now."""
    return cluster.master_of(store._link.open().keyslot(store._layout.keys[shard].tag))


@pytest.mark.parametrize(
    ("fault", "where"),
    [("failover", "coordinator"), ("failover", "participant"), ("kill", "coordinator")],
)
def test_a_failover_between_the_two_phases_of_a_commit_applies_it_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, where: str
) -> None:
    """A two-phase commit pauses with both shards prepared and no decision; the master of
    its coordinator shard (where the decision goes) or of its other shard fails over
    (``CLUSTER FAILOVER``), or is SIGKILLed; the commit goes on. Then its effects are all
    there or none are, and the committer was acknowledged only if they are all there."""
    options = {"shards": 4, "wait_replicas": 1, "lock_timeout": 3.0}
    with (
        redis_cluster.serve(tmp_path, node_timeout_ms=1000) as cluster,
        RedisClusterStore(cluster.url, concat, namespace="phases", **options) as committer,
        RedisClusterStore(cluster.url, concat, namespace="phases", **options) as reader,
    ):
        a, b = next(
            (a, b)
            for a, b in (("a", f"b{i}") for i in range(1000))
            if slot_master(cluster, committer, committer.shard_of(a))
            != slot_master(cluster, committer, committer.shard_of(b))
        )
        committer.put(a, b"old")
        coordinator = min(committer.shard_of(a), committer.shard_of(b))
        other = max(committer.shard_of(a), committer.shard_of(b))
        victim = slot_master(cluster, committer, coordinator if where == "coordinator" else other)
        heir = cluster.replica_of(victim)
        paused = Paused(committer, monkeypatch)
        outcome: list[object] = []
        txn = Transaction(reads={a: committer.get(a).version}, writes=[Put(a, b"1"), Put(b, b"2")])
        thread = threading.Thread(target=lambda: outcome.append(_commit_or_error(committer, txn)))
        thread.start()
        try:
            assert paused.between_phases.wait(30), "the commit did not reach its decision"
            if fault == "failover":
                cluster.failover(heir)
            else:
                cluster.kill(victim)
                cluster.wait_role(heir, "master")
        finally:
            paused.resume()
            thread.join(timeout=60)
        assert not thread.is_alive() and len(outcome) == 1
        if fault == "kill":  # the heir takes WAIT 1 writes once the victim is its replica
            cluster.restart(victim)
            cluster.wait_role(victim, "slave")
            cluster.wait_ok()
        deadline = time.monotonic() + 30
        while reader.recover() or any(  # settle what the fault cut off
            reader._link.open().hlen(shard.txns) for shard in reader._layout.keys
        ):
            assert time.monotonic() < deadline, "a prepared transaction was never settled"
            time.sleep(0.05)
        seen = reader.get_many([a, b])
        applied = (seen[a].value, seen[b].value) == (b"1", b"2")
        assert applied or (seen[a].value, seen[b].value) == (b"old", None), seen
        acknowledged = getattr(outcome[0], "ok", False)
        if acknowledged:
            assert applied
        else:  # raised: a typed error, whichever way the decision went
            assert isinstance(outcome[0], StoreUnavailable), outcome[0]
        if fault == "failover":  # a graceful failover loses nothing: the commit went on
            assert acknowledged


def _commit_or_error(store: RedisClusterStore, txn: Transaction) -> object:
    try:
        return store.commit(txn)
    except Exception as exc:
        return exc
