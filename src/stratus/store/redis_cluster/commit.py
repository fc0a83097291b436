"""Commits on a Redis Cluster store: one script on one shard, two-phase commit across them.

Theory of operation
-------------------
::

    participants = shards of the reads, writes and prefixes (a prefix that is not inside
                   one volume spans every shard)
    one shard      the COMMIT script on it: validate, then write (one round trip)
    several        PREPARE on each (validate, lock the keys read and written and the
                   prefixes read, stage the writes; deadline now + lock_timeout)
                   -> any refusal: decide b"a", ABORT the prepared ones, report
                   -> DECIDE b"c" on the coordinator shard (SET if absent): the commit point
                   -> FINISH on each: take versions, write, unlock (idempotent)

The life of a multi-shard transaction, as each shard and its coordinator shard see it:

=============  ==========================  ==========================================
state          how it got there            what a reader or writer that meets it does
=============  ==========================  ==========================================
prepared       PREPARE (locks, staged)     undecided within the deadline: a read takes
                                           the old value, a write waits
decided c      DECIDE c (the commit point) FINISH that shard (roll forward), read again
decided a      DECIDE a (refused, cut off, FINISH as aborted (unlock), go on
               or past the deadline)
finished       FINISH on that shard        nothing left: the writes are visible there
=============  ==========================  ==========================================

Readers never see half a transaction: a transaction's writes are invisible (staged) until
FINISH on that shard, and its decision is one key, written once (SET if absent) before any
FINISH. A reader that meets an undecided lock past its deadline decides b"a" itself,
which a late committer then loses. :meth:`TwoPhaseCommit.recover` finishes or aborts every
prepared transaction past its deadline (a crashed committer's).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis

from stratus import backoff
from stratus._exceptions import StoreLockTimeout
from stratus.store.base import CommitResult
from stratus.store.redis_cluster.layout import Layout
from stratus.store.redis_cluster.link import ClusterLink
from stratus.store.redis_cluster.scripts import BLOCKED, CONFLICT, DONE, RETRY


class Part:
    """What one shard checks and writes of a transaction."""

    __slots__ = ("guards", "n_versions", "prefixes", "reads", "writes")

    def __init__(self) -> None:
        self.reads: list[tuple[str, int, int]] = []  # key, version, index in the conflicts
        self.prefixes: list[tuple[str, int, bytes, int]] = []
        self.guards: list[tuple[str, int]] = []
        self.writes: list[tuple[str, int, bytes | None]] = []  # key, offset here, value
        self.n_versions = 0  # versions taken on this shard: the highest offset

    def args(self) -> list[Any]:
        """The check arguments of the COMMIT and PREPARE scripts."""
        args: list[Any] = [len(self.reads), len(self.prefixes), len(self.guards)]
        args.append(self.n_versions)
        for key, version, _ in self.reads:
            args += (key, version)
        for prefix, version, mode, _ in self.prefixes:
            args += (prefix, version, mode)
        for key, version in self.guards:
            args += (key, version)
        for key, offset, value in self.writes:
            args += (key, offset, b"d", b"") if value is None else (key, offset, b"p", value)
        return args

    def conflicts(self, names: list[str], reply: list[Any]) -> CommitResult:
        """The conflicts of a CONFLICT reply, named (in the transaction's order)."""
        indexes = [index for *_, index in self.reads] + [index for *_, index in self.prefixes]
        return CommitResult(ok=False, conflicts=[names[indexes[i - 1]] for i in reply[1:]])

    def versions(self, base: int, shards: int, index: int) -> dict[str, int]:
        """The versions of this shard's writes, from the base version it took."""
        return {key: (base + offset) * shards + index for key, offset, _ in self.writes}


class TwoPhaseCommit:
    """Validated commits of ``layout``'s shards over ``link``; a prepared transaction's
    locks last ``lock_timeout`` s before others may abort it."""

    def __init__(self, layout: Layout, link: ClusterLink, lock_timeout: float) -> None:
        self.layout = layout
        self.link = link
        self.lock_timeout = lock_timeout
        self._ids = itertools.count()

    def run(
        self,
        reads: Mapping[str, int],
        prefix_reads: Mapping[str, int],
        guards: Mapping[str, int],
        staged: Sequence[tuple[str, bytes | None, int]],
    ) -> CommitResult | None:
        """Validate and write, on one shard or by two-phase commit: the result (versions of
        the written keys), or None when a guard changed (nothing written)."""
        layout = self.layout
        parts: dict[int, Part] = {}

        def part(index: int) -> Part:
            return parts.setdefault(index, Part())

        names = [*reads, *prefix_reads]
        for i, (key, version) in enumerate(reads.items()):
            part(layout.shard_of(key)).reads.append((key, version, i))
        for i, (prefix, version) in enumerate(prefix_reads.items(), len(reads)):
            one = layout.prefix_shard(prefix)
            for index in range(layout.shards) if one is None else (one,):
                mode = b"e" if one is not None else b"m"
                part(index).prefixes.append((prefix, version, mode, i))
        for key, version in guards.items():
            part(layout.shard_of(key)).guards.append((key, version))
        for key, value, offset in staged:  # in version order
            target = part(layout.shard_of(key))
            target.writes.append((key, offset, value))
            target.n_versions = offset
        if not parts:
            return CommitResult(ok=True)
        if len(parts) == 1:  # the versions as in one sequence: a key written twice skips one
            return self._commit_one(names, *next(iter(parts.items())))
        for each in parts.values():  # consecutive on each shard
            each.writes = [(key, i, value) for i, (key, _, value) in enumerate(each.writes, 1)]
            each.n_versions = len(each.writes)
        return self._commit_many(names, parts)

    def _commit_one(self, names: list[str], index: int, part: Part) -> CommitResult | None:
        shards = self.layout.shards
        started = time.monotonic()
        while True:
            args = [shards, index, *part.args()]
            reply = self.link.write(self.link.scripts.commit, self.layout.keys[index], args)
            if reply[0] != BLOCKED:
                break
            self._wait_for({txid.decode() for txid in reply[1:]}, index, started)
        if reply[0] == CONFLICT:
            return part.conflicts(names, reply)
        if reply[0] == RETRY:
            return None
        base = int(reply[1])
        return CommitResult(ok=True, versions=part.versions(base, shards, index))

    def _commit_many(self, names: list[str], parts: Mapping[int, Part]) -> CommitResult | None:
        coordinator = min(parts)
        txid = f"{coordinator}.{os.getpid()}.{next(self._ids)}.{os.urandom(6).hex()}"
        prepared: list[int] = []
        refusal: list[Any] | None = None
        started = time.monotonic()
        lock_ms = int(self.lock_timeout * 1000)
        try:
            for index in sorted(parts):  # a fixed order: two committers do not deadlock
                while True:
                    args = [txid, lock_ms, *parts[index].args()]
                    reply = self.link.write(
                        self.link.scripts.prepare, self.layout.keys[index], args
                    )
                    if reply[0] != BLOCKED:
                        break
                    self._wait_for({t.decode() for t in reply[1:]}, index, started)
                if reply[0] != DONE:
                    refusal = reply
                    break
                prepared.append(index)
            decision = self.decide(txid, b"a" if refusal is not None else b"c")
        except BaseException:
            # Cut off: abort now if not decided yet (else a reader will); a commit decided
            # before the failure (its WAIT failed, say) is finished as committed, since
            # the decision record is what readers roll forward to.
            if prepared:
                try:
                    decided = self.decide(txid, b"a")
                    for index in prepared:
                        self.finish_on(index, txid, decided)
                except Exception:
                    pass
            raise
        versions: dict[str, int] = {}
        for index in prepared:
            base = self.finish_on(index, txid, decision)
            if decision == b"c":
                versions |= parts[index].versions(base, self.layout.shards, index)
        if decision == b"c":
            return CommitResult(ok=True, versions=versions)
        if refusal is None or refusal[0] == RETRY:
            return None  # a guard changed (or a reader aborted us: try again)
        return self._all_conflicts(names, parts)

    def _all_conflicts(self, names: list[str], parts: Mapping[int, Part]) -> CommitResult:
        """Every conflict of an aborted transaction, from a validation-only pass per shard."""
        found: set[str] = set()
        for index, part in parts.items():
            check = Part()
            check.reads, check.prefixes = part.reads, part.prefixes
            args = [self.layout.shards, index, *check.args()]
            reply = self.link.call(self.link.scripts.commit, self.layout.keys[index], args)
            if reply[0] == CONFLICT:
                found.update(check.conflicts(names, reply).conflicts)
        return CommitResult(ok=False, conflicts=[name for name in names if name in found])

    def decide(self, txid: str, decision: bytes) -> bytes:
        """Write ``decision`` for ``txid`` unless one is written: the one that stands.
        Deciding b"c" is the commit point (a reader may have aborted us first)."""
        key = self.layout.coordinator(txid).decision(txid)
        decided: bytes = self.link.write(self.link.scripts.decide, (key,), [decision, 0])
        return decided

    def finish_on(self, index: int, txid: str, decision: bytes) -> int:
        """Apply (b"c") or drop (b"a") ``txid``'s part on shard ``index`` and unlock it:
        the base version it took there (-1: aborted). Idempotent."""
        shard = self.layout.keys[index]
        keys = (*shard, shard.applied(txid))
        args = [txid, decision, self.layout.shards, index]
        return int(self.link.write(self.link.scripts.finish, keys, args))

    def resolve(self, index: int, txid: str) -> bool:
        """Settle what can be settled of the prepared ``txid`` met on shard ``index``:
        finish it there if decided, abort it if past its deadline. True if something
        changed (read again); False if it is still undecided within its deadline."""
        key = self.layout.coordinator(txid).decision(txid)
        txns = (self.layout.keys[index].txns,)
        deadline = int(self.link.call(self.link.scripts.deadline, txns, [txid]))
        if deadline < 0:
            return True  # finished meanwhile
        decided: bytes = self.link.write(self.link.scripts.decide, (key,), [b"a", deadline])
        if not decided:
            return False
        self.finish_on(index, txid, decided)
        return True

    def _wait_for(self, owners: set[str], index: int, started: float) -> None:
        """Wait for the transactions holding locks a write needs: settle each, or back off
        (a blocked write waits at most two lock timeouts, then StoreLockTimeout)."""
        settled = [self.resolve(index, txid) for txid in owners]
        if all(settled):
            return
        elapsed = time.monotonic() - started
        if elapsed > 2 * self.lock_timeout:
            raise StoreLockTimeout(self.layout.keys[index].locks, self.lock_timeout, [])
        time.sleep(backoff.LOCK.pause(int(elapsed * 1000) + 1, elapsed) or 0.001)

    def recover(self) -> int:
        """Finish or abort every prepared transaction past its deadline (a crashed
        committer's); how many were settled."""
        client = self.link.open()
        settled = 0
        for index, shard in enumerate(self.layout.keys):
            try:
                txids = [txid.decode() for txid in cast(list[bytes], client.hkeys(shard.txns))]
            except redis.RedisError as exc:
                self.link.failed(exc)
            settled += sum(self.resolve(index, txid) for txid in txids)
        return settled
