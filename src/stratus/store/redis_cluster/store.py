"""The Redis Cluster store: reads, merges and the change feed over sharded scripts.

Redis Cluster refuses a script whose keys lie in different hash slots, and one slot (one
store-wide sequence) would put every write on one master. So a namespace is split into
shards (:mod:`.layout`), each the single-slot layout of ``redis_store`` with its own
sequence and feed; a transaction on several shards commits in two phases (:mod:`.commit`);
every shard operation is one Lua script (:mod:`.scripts`) sent by :mod:`.link`.

A cross-shard prefix's version is the highest version under it on any shard, read after
raising every shard's sequence to the highest sequence of all (the ADVANCE script): every
later write under the prefix then takes a higher version, so at commit each shard checks
locally that its own prefix version is not above the one read.

A reader that meets a prepared transaction's lock settles it if it can (roll forward a
committed one, abort one past its deadline) and reads again; an undecided one within its
deadline has not committed, so the read takes the old value. A ``get_many`` across shards
reads every shard again and returns only when nothing changed between the two rounds.

Commits PUBLISH on their shard's channel; :meth:`RedisClusterStore.watch` listens to every
shard's on one node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import redis

from stratus import backoff
from stratus._exceptions import ConfigurationError, MergeContention
from stratus.store.base import (
    DEFAULT_MAX_VALUE_BYTES,
    BaseStore,
    Changes,
    CommitResult,
    Entry,
    Merge,
    MergeFn,
    Transaction,
    Write,
    WriteView,
    apply_writes,
    check_key,
    check_prefix,
    check_transaction,
    check_write,
)
from stratus.store.redis_cluster.commit import TwoPhaseCommit
from stratus.store.redis_cluster.layout import Layout, decode_cursor, encode_cursor
from stratus.store.redis_cluster.link import ClusterLink
from stratus.store.redis_store import _lex_range, _PubSubSignal, _StagingView

_R = TypeVar("_R")

DEFAULT_SHARDS = 8
"""Shards of a namespace; fixed for its lifetime (the key-to-shard map depends on it)."""

DEFAULT_LOCK_TIMEOUT = 5.0
"""Seconds a prepared transaction's locks last before anyone may abort it."""


class RedisClusterStore(BaseStore):
    """A :class:`~stratus.store.Store` on the Redis Cluster at ``url`` (any node), under
    ``namespace``, split into ``shards`` shards (fixed for the namespace's lifetime).

    ``startup_nodes`` are URLs of more nodes to discover the cluster from, should the one
    at ``url`` be down. ``wait_replicas`` > 0 makes every write wait (``WAIT``, up to
    ``wait_timeout`` s) until that many replicas have it, so a failover keeps it;
    ``lock_timeout`` is how long a prepared multi-shard transaction may hold its locks
    before others abort it. ``stratus.kv.open`` opens one from a ``redis-cluster://`` URL.

    >>> store = RedisClusterStore("redis://127.0.0.1:7000", concat)  # doctest: +SKIP
    """

    one_sequence = False
    """Versions are unique and increase per key, but are not consecutive across keys."""

    def __init__(
        self,
        url: str,
        merge_fn: MergeFn,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        namespace: str = "stratus",
        shards: int = DEFAULT_SHARDS,
        merge_attempts: int = 100,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        startup_nodes: Sequence[str] = (),
    ) -> None:
        super().__init__(merge_fn, max_value_bytes=max_value_bytes)
        self._layout = Layout(namespace, shards)
        if merge_attempts < 1 or lock_timeout <= 0 or wait_replicas < 0:
            raise ConfigurationError("merge_attempts and lock_timeout must be positive")
        self.namespace = namespace
        self.shards = shards
        self.merge_attempts = merge_attempts
        self.lock_timeout = lock_timeout
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._link = ClusterLink(
            url,
            namespace=namespace,
            startup_nodes=startup_nodes,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            settle_timeout=lock_timeout,
        )
        self.address = self._link.address
        self._txn = TwoPhaseCommit(self._layout, self._link, lock_timeout)
        self._track()

    def shard_of(self, key: str) -> int:
        """The shard of ``key``: a volume's keys share the shard of the volume prefix."""
        return self._layout.shard_of(key)

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Entry:
        """The key's value and version; ``Entry(None, 0)`` when it was never written."""
        check_key(key)
        return self.get_many([key])[key]

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """:meth:`get` of several keys, from one snapshot (two rounds across shards)."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        if not wanted:
            return {}
        by_shard = self._layout.group(wanted)
        rows = self._read_resolved(by_shard)
        while len(by_shard) > 1:
            again = self._read_resolved(by_shard)
            if {k: v[1] for k, v in again.items()} == {k: v[1] for k, v in rows.items()}:
                break
            rows = again
        return {key: Entry(*rows[key]) for key in wanted}

    def _read_resolved(self, by_shard: Mapping[int, list[str]]) -> dict[str, tuple[Any, int]]:
        """Each shard's rows, after rolling forward any committed transaction met there."""
        rows: dict[str, tuple[Any, int]] = {}
        get_rows = self._link.scripts.get_rows
        for index, keys in by_shard.items():
            shard = self._layout.keys[index]
            while True:
                reply = self._link.call(get_rows, (shard.values, shard.feed, shard.locks), keys)
                owners = {reply[3 * i + 2].decode() for i in range(len(keys)) if reply[3 * i + 2]}
                # An undecided transaction's writes are not visible yet: read the old rows.
                if not any([self._txn.resolve(index, txid) for txid in owners]):
                    break
            for i, key in enumerate(keys):
                rows[key] = (reply[3 * i], int(reply[3 * i + 1]))
        return rows

    def keys(self, prefix: str = "") -> list[str]:
        """The live keys starting with ``prefix``, sorted (not one snapshot across shards)."""
        low, high = _lex_range(check_prefix(prefix))
        client = self._link.open()
        one = self._layout.prefix_shard(prefix)
        found: list[bytes] = []
        for index in range(self.shards) if one is None else (one,):
            live = self._layout.keys[index].live
            try:
                found += cast(list[bytes], client.zrange(live, low, high, bylex=True))
            except redis.RedisError as exc:
                self._link.failed(exc)
        return sorted(key.decode() for key in found)

    def prefix_version(self, prefix: str) -> int:
        """The highest version under ``prefix``, tombstones included (0: none); across shards,
        read after raising every shard's sequence past it (see the module docstring)."""
        check_prefix(prefix)
        one = self._layout.prefix_shard(prefix)
        indexes = list(range(self.shards)) if one is None else [one]
        floor = 0 if one is not None else max(self._seqs())
        while True:
            best, top, waited = 0, 0, False
            for index in indexes:
                shard = self._layout.keys[index]
                keys = (shard.feed, shard.names, shard.seq, shard.locks)
                reply = self._link.write(self._link.scripts.advance, keys, [prefix, floor])
                best, top = max(best, int(reply[0])), max(top, int(reply[1]))
                for txid in {owner.decode() for owner in reply[2:]}:
                    waited |= self._txn.resolve(index, txid)
            # Every shard must have been raised past the highest sequence seen, or a later
            # write on a shard read early could take a version below ``best``.
            if not waited and (one is not None or top <= floor):
                return best
            floor = max(floor, top)

    def changes(self, since: int, limit: int = 1000) -> Changes:
        """Keys whose current version is above the cursor ``since``, in version order.

        The cursor (``Changes.last``, :meth:`last_version`) holds every shard's sequence;
        a version is not a cursor here: pass 0 or a ``last`` this store returned.
        """
        self._check_limit(limit)
        cursors = decode_cursor(since, self.shards)
        pages: list[tuple[int, list[tuple[str, int]], int]] = []
        for index, shard in enumerate(self._layout.keys):
            after = cursors[index] * self.shards + index
            reply = self._link.call(
                self._link.scripts.changes, (shard.feed, shard.seq), [after, limit]
            )
            page = [(k.decode(), int(v)) for k, v in zip(reply[1::2], reply[2::2], strict=True)]
            pages.append((int(reply[0]), page, index))
        merged = sorted((item for _, page, _ in pages for item in page), key=lambda kv: kv[1])
        taken = merged[:limit]
        top = taken[-1][1] if len(taken) == limit else None
        new: list[int] = []
        went_back = False
        for seq, page, index in pages:
            went_back |= seq < cursors[index]
            listed = [v for _, v in page if top is None or v <= top]
            if len(listed) == len(page) and len(page) < limit:
                new.append(seq)  # everything of this shard up to its sequence was listed
            else:
                new.append(listed[-1] // self.shards if listed else cursors[index])
        if went_back:  # another store under the cursor: a ``last`` below ``since`` says so
            last = encode_cursor(new)
            return Changes(last=last if last < since else 0, keys=taken)
        return Changes(last=encode_cursor(new), keys=taken)

    def last_version(self) -> int:
        """The change-feed cursor of the store's current state (every shard's sequence)."""
        return encode_cursor(self._seqs())

    def _seqs(self) -> list[int]:
        client = self._link.open()
        try:
            values = [client.get(shard.seq) for shard in self._layout.keys]
        except redis.RedisError as exc:
            self._link.failed(exc)
        return [int(value or 0) for value in values]

    # ------------------------------------------------------------------ writes

    def commit(self, txn: Transaction) -> CommitResult:
        """Validate ``txn``'s reads and apply its writes atomically, or not."""
        txn = check_transaction(txn, self.max_value_bytes)
        return self._apply(txn.reads, txn.prefix_reads, txn.writes)

    def _write_one(self, write: Write) -> int:
        write = check_write(write, self.max_value_bytes)
        return self._apply({}, {}, (write,)).versions[write.key]

    def _apply(
        self, reads: Mapping[str, int], prefix_reads: Mapping[str, int], writes: Sequence[Write]
    ) -> CommitResult:
        merged = list(dict.fromkeys(write.key for write in writes if isinstance(write, Merge)))
        group = self._layout.group
        rows: dict[str, tuple[Any, int]] = self._read_resolved(group(merged)) if merged else {}
        for attempt in range(self.merge_attempts):
            view = _StagingView(rows)
            try:
                _, _, merged_into = apply_writes(
                    view, 0, writes, self.merge_fn, self.max_value_bytes
                )
            except Exception:
                outcome = self._txn.run(reads, prefix_reads, view.guards, [])
                if isinstance(outcome, CommitResult):
                    if not outcome.ok:
                        return outcome
                    raise  # the merge saw the current values: its error stands
            else:
                outcome = self._txn.run(reads, prefix_reads, view.guards, view.staged)
                if isinstance(outcome, CommitResult):
                    if not outcome.ok:
                        return outcome
                    versions = outcome.versions
                    return CommitResult(ok=True, versions=versions, merged_into=merged_into)
            # A merged key changed since it was read: compute the merge again.
            if attempt > 0:
                backoff.MERGE.sleep(attempt)
            rows = self._read_resolved(group(merged))
        raise MergeContention(merged, self.merge_attempts)

    def recover(self) -> int:
        """Finish or abort every prepared transaction past its deadline (a crashed
        committer's); how many were settled. Readers do this for the keys they meet."""
        return self._txn.recover()

    def purge(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` entirely (no tombstone, no new version); how many were."""
        wanted = list(dict.fromkeys(keys))
        for key in wanted:
            check_key(key)
        if not wanted:
            return 0
        # With one shard, its sequence is the store's: the key at its last version stays,
        # as in the other backends. With several there is no store-wide last version.
        last = self._seqs()[0] if self.shards == 1 else -1
        removed = 0
        for index, group in self._layout.group(wanted).items():
            shard = self._layout.keys[index]
            keys = (shard.values, shard.feed, shard.live, shard.names)
            removed += int(self._link.write(self._link.scripts.purge, keys, [last, *group]))
        return removed

    def _atomic(self, body: Callable[[WriteView, int], tuple[_R, int]]) -> _R:
        raise NotImplementedError("RedisClusterStore writes through its scripts")

    # ------------------------------------------------------------------ lifetime

    def _abandon(self) -> object | None:
        return self._link.detach()

    def watch(self) -> _PubSubSignal:
        """A signal fed by the commit scripts' PUBLISH on each shard's channel: a cache
        that watches it refreshes when something was written instead of polling the feed.

        One connection, to one node, subscribed to every shard's channel: Redis Cluster
        broadcasts PUBLISH to every node. If that node goes, the signal breaks and the
        cache polls again."""
        client = self._link.open()
        try:
            default = client.get_default_node()  # type: ignore[no-untyped-call]
            node = client.get_redis_connection(default)
        except redis.RedisError as exc:
            self._link.failed(exc)
        return _PubSubSignal(node, *(shard.seq for shard in self._layout.keys))

    def close(self) -> None:
        """Close the store's connections; idempotent."""
        with self._lock:
            client = self._link.detach()
        if client is not None:
            client.close()
