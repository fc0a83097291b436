"""The meter: one record per invocation attempt, durable even when the executor dies.

Theory of operation
-------------------
Each executor keeps a *spool*: a small file under ``<data_dir>/meter`` mapped into its
memory (``mmap``), so writing to it is a memory copy, not a system call, and what was
written survives the process being killed (the pages belong to the kernel's page cache).
The spool holds a header (the current batch number and the length of the log), one
*slot* per attempt running (the lowest free one: its depth in the invocation stack for
nested sync calls; async tasks, which end in any order, take any free one), and a *log*
of finished records:

    event                    spool                                  store
    ----------------------   ------------------------------------   -------------------------
    an attempt starts        slot[depth] = its record as if lost     -
    it commits writes        the counts go on the attempt (memory)   -
    it ends                  slot[depth] notes outcome and run time  -
    its reply left (settle)  log += its record; slot[depth] = empty  -
    flush (timer, log full)  log emptied, batch += 1                 Put(batch key, log)
    the executor exits       file removed after a last flush         Put(batch key, log)
    it dies (any signal)     left behind                             the coordinator recovers:
                                                                     Put(batch key, log +
                                                                     slots billed until death)

A record is therefore in the store, or in a spool that whoever notices the death (the
coordinator, on the executor's exit or at its next start) turns into a batch. Batch keys
are deterministic (``protocol.keys.meter_batch``) and recovery merges with what the key
already holds, so a batch committed just before the crash is never billed twice. The
header is updated in an order that keeps this true at every instant: the log length is
set to 0 before the batch number moves on.

The record is never part of the invocation's own commit (that cost ~7 us p50 a writing call
and a store key each, forever): an attempt whose writes committed but whose executor died
before ``end`` is billed ``lost`` from its slot, until the death (docs/metering.md).

An executor holds a shared ``flock`` on its spool while it lives; recovery takes it
exclusively, so a live executor's spool is never recovered.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import logging
import mmap
import os
import resource
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from stratus.kv.cache import KVCache
from stratus.protocol import keys
from stratus.protocol import messages as m
from stratus.protocol.metering import (
    LATENCY_BUCKETS,
    TENANT,
    InvocationRecord,
    Outcome,
    encode_batch,
    encode_entry,
    iter_batch,
)
from stratus.store.base import Merge, Put, Store, Write

log = logging.getLogger("stratus.metering")

_MAGIC = b"STRMTR01"
_HEADER = struct.Struct("<8sQQ")  # magic, batch number, log length
_SLOTS = 32  # invocation stack depth that is spooled; deeper ones are metered, not spooled
_SLOT_SIZE = 2048
_LOG_AT = 64 + _SLOTS * _SLOT_SIZE
SPOOL_SIZE = _LOG_AT + (1 << 20)
_LOG_SIZE = SPOOL_SIZE - _LOG_AT
_FLUSH_AT = _LOG_SIZE // 2  # flush when the log is this full, whatever the timer says
_EMPTY = b"\0\0\0\0"
_STATE = struct.Struct("<B7xQ")  # at the end of a slot: how the attempt ended, its run_ns
_SLOT_ROOM = _SLOT_SIZE - _STATE.size  # for the start record
_CODES: dict[Outcome, int] = {"ok": 1, "error": 2, "timeout": 3, "conflict": 4, "lost": 5}
_OUTCOMES = {code: outcome for outcome, code in _CODES.items()}


_END = struct.Struct("<Q")  # the log length, in the header after the magic and batch
_cpu_ns = time.process_time_ns  # one clock read: cheaper than getrusage's whole struct
_RSS_AFTER_NS = 1_000_000  # attempts at least this long read the peak RSS afresh


def _peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@dataclass(slots=True)
class Running:
    """An attempt being metered."""

    depth: int
    start: InvocationRecord  # what is known at the start
    t0: int  # perf_counter_ns at the start
    cpu0: int
    hits0: int
    misses0: int
    bytes0: int
    runs: int = 1
    outcome: Outcome = "lost"  # set by ``end``
    run_ns: int = 0
    kv_reads: int = 0
    # What its commit wrote: set by the executor once the commit succeeded.
    kv_writes: int = 0
    kv_write_bytes: int = 0
    # The file system adds its counts here (the executor's stack top is the attempt).
    fs_reads: int = 0
    fs_writes: int = 0
    fs_read_bytes: int = 0
    fs_write_bytes: int = 0


@dataclass
class Counts:
    """Per-function counts: an executor's since its last report, the cluster's in total."""

    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    cold_starts: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    seconds: float = 0.0


class Meter:
    """The executor's meter: ``begin`` / ``end`` around each attempt, ``flush`` often."""

    def __init__(self, data_dir: str, cluster_id: str, executor_id: str, store: Store) -> None:
        self.cluster_id = cluster_id
        self.executor_id = executor_id
        self.store = store
        directory = Path(data_dir) / keys.METER_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / keys.spool_name(cluster_id, executor_id)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        os.ftruncate(self._fd, SPOOL_SIZE)
        self._map = mmap.mmap(self._fd, SPOOL_SIZE)
        self._batch = 0
        self._log_end = 0
        self._write_header()
        # Slots of attempts running or ended but not yet logged. Sync attempts nest (a
        # stack), async tasks end in any order: a new one takes the lowest free slot.
        self._taken: set[int] = set()
        self._stats: dict[str, Counts] = {}
        self._peak_rss = _peak_rss_kb()  # refreshed by long attempts and by flushes
        self._ended: list[Running] = []  # ended, their records not yet logged (see settle)
        self.cache: KVCache | None = None  # the executor's, for hits and misses

    # ------------------------------------------------------------------ per attempt

    def begin(
        self,
        call: m.Call,
        memory_mb: int,
        *,
        queue_ns: int = 0,
        cold_start_ns: int = 0,
        spawn_ns: int = 0,
    ) -> Running:
        """Start metering an attempt: until ``end``, it is billed as lost if we die.

        ``queue_ns``, ``cold_start_ns`` and ``spawn_ns`` are what the call waited for
        before it started (see ``InvocationRecord``)."""
        if self._ended:
            self.settle()  # frees their slots
        plan = call.plan
        start = InvocationRecord(
            call.invocation_id,
            call.function,
            call.version,
            call.attempt,
            self.executor_id,
            "lost",
            time.time_ns(),
            0,
            memory_mb,
            node=call.node,
            dag="" if plan is None else plan.dag,
            tenant=keys.tenant_of_function(call.function) or TENANT,  # acme::f is acme's
            queue_ns=queue_ns,
            cold_start_ns=cold_start_ns,
            spawn_ns=spawn_ns,
        )
        depth = 0
        while depth in self._taken:
            depth += 1
        self._taken.add(depth)
        if depth < _SLOTS:
            entry = encode_entry(start)
            if len(entry) <= _SLOT_ROOM:
                at = 64 + depth * _SLOT_SIZE
                _STATE.pack_into(self._map, at + _SLOT_ROOM, 0, 0)  # running
                self._map[at : at + len(entry)] = entry
        if cold_start_ns or spawn_ns:
            self._stat(call.function).cold_starts += 1
        cache = self.cache
        hits, misses, read = (0, 0, 0) if cache is None else cache.counters()
        return Running(depth, start, time.perf_counter_ns(), _cpu_ns(), hits, misses, read)

    def record(
        self,
        running: Running,
        outcome: Outcome,
        *,
        run_ns: int | None = None,
    ) -> InvocationRecord:
        """The attempt's record as of now (its run time as of now, unless given), with the
        counts noted on ``running``."""
        if run_ns is None:
            run_ns = time.perf_counter_ns() - running.t0
        cpu_ns = _cpu_ns() - running.cpu0
        if run_ns >= _RSS_AFTER_NS:  # a short attempt cannot have grown much since
            self._peak_rss = _peak_rss_kb()
        cache = self.cache
        hits, misses, read = (0, 0, 0) if cache is None else cache.counters()
        return _finish(
            running.start,
            outcome=outcome,
            run_ns=run_ns,
            cpu_ns=cpu_ns,
            peak_rss_kb=self._peak_rss,
            runs=running.runs,
            kv_reads=running.kv_reads,
            kv_writes=running.kv_writes,
            kv_read_bytes=read - running.bytes0,
            kv_write_bytes=running.kv_write_bytes,
            cache_hits=hits - running.hits0,
            cache_misses=misses - running.misses0,
            fs_reads=running.fs_reads,
            fs_writes=running.fs_writes,
            fs_read_bytes=running.fs_read_bytes,
            fs_write_bytes=running.fs_write_bytes,
        )

    @staticmethod
    def note_writes(running: Running, kv_writes: Sequence[Write]) -> None:
        """Note what the attempt's commit wrote to the kv store (call it once the commit
        succeeded); ``end`` / ``settle`` put the counts in its record."""
        running.kv_writes = len(kv_writes)
        running.kv_write_bytes = sum(len(w.value) for w in kv_writes if isinstance(w, Put | Merge))

    def end(self, running: Running, outcome: Outcome, *, kv_reads: int = 0) -> None:
        """The attempt is over: note how and when in its slot, so that its reply may
        leave at once; ``settle`` logs its whole record (off the caller's wait)."""
        running.run_ns = time.perf_counter_ns() - running.t0
        running.outcome, running.kv_reads = outcome, kv_reads
        if running.depth < _SLOTS:
            at = 64 + running.depth * _SLOT_SIZE
            _STATE.pack_into(self._map, at + _SLOT_ROOM, _CODES[outcome], running.run_ns)
        self._ended.append(running)

    def settle(self) -> None:
        """Log the records of the attempts that ended, and free their slots. The executor
        calls it after its replies left, and before any attempt begins."""
        if not self._ended:
            return
        ended, self._ended = self._ended, []
        for running in ended:
            record = self.record(running, running.outcome, run_ns=running.run_ns)
            self._append(record)
            self._clear(running)
            self._count(record)

    def abort(self, running: Running, outcome: Outcome) -> None:
        """Log the attempt's record from a signal handler, just before the process exits
        (no flush: the interrupted code may be inside the store)."""
        ended, self._ended = self._ended, []
        for done in ended:
            self._append(self.record(done, done.outcome, run_ns=done.run_ns), flush=False)
        self._append(self.record(running, outcome), flush=False)

    def _clear(self, running: Running) -> None:
        self._taken.discard(running.depth)
        if running.depth < _SLOTS:
            at = 64 + running.depth * _SLOT_SIZE
            self._map[at : at + 4] = _EMPTY

    # ------------------------------------------------------------------ batches

    def flush(self) -> None:
        """Write the logged records to the store as one batch."""
        self.settle()
        if not self._log_end:
            return
        key = keys.meter_batch(self.cluster_id, self.executor_id, self._batch)
        self.store.put(key, self._log())
        self._next_batch()
        self._peak_rss = _peak_rss_kb()

    def close(self) -> None:
        """Flush, and remove the spool unless something is left in it."""
        try:
            self.flush()
        except Exception:
            log.exception("executor %s: metering flush failed; the spool stays", self.executor_id)
            return
        self._map.close()
        os.close(self._fd)
        if not self._taken:
            self.path.unlink(missing_ok=True)

    def report(self) -> list[m.FunctionMetrics]:
        """Counts since the last report, for the coordinator's metrics."""
        stats, self._stats = self._stats, {}
        return [
            m.FunctionMetrics(
                name, s.calls, s.errors, s.timeouts, s.cold_starts, s.buckets, s.seconds
            )
            for name, s in stats.items()
        ]

    def _log(self) -> bytes:
        return self._map[_LOG_AT : _LOG_AT + self._log_end]

    def _append(self, record: InvocationRecord, *, flush: bool = True) -> None:
        entry = encode_entry(record)
        if flush and self._log_end + len(entry) > _FLUSH_AT:
            try:
                self.flush()
            except Exception:  # the store is down: keep logging while there is room
                log.exception("executor %s: metering flush failed", self.executor_id)
        end = self._log_end
        if end + len(entry) > _LOG_SIZE:
            log.error("executor %s: metering spool full, record dropped", self.executor_id)
            return
        self._map[_LOG_AT + end : _LOG_AT + end + len(entry)] = entry
        self._log_end = end + len(entry)
        _END.pack_into(self._map, 16, self._log_end)  # after the entry: never a torn one

    def _next_batch(self) -> None:
        self._log_end = 0
        self._write_header()  # first: recovery must never see old records in a new batch
        self._batch += 1
        self._write_header()

    def _write_header(self) -> None:
        _HEADER.pack_into(self._map, 0, _MAGIC, self._batch, self._log_end)

    def _stat(self, function: str) -> Counts:
        stats = self._stats.get(function)
        if stats is None:
            stats = self._stats[function] = Counts()
        return stats

    def _count(self, record: InvocationRecord) -> None:
        stats = self._stat(record.function)
        stats.calls += 1
        if record.outcome != "ok":
            stats.errors += 1
            if record.outcome == "timeout":
                stats.timeouts += 1
        seconds = record.run_ns / 1e9
        stats.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        stats.seconds += seconds


def _finish(start: InvocationRecord, **fields: Any) -> InvocationRecord:
    return msgspec.structs.replace(start, **fields)


# --------------------------------------------------------------------------- recovery


def recover(
    path: Path,
    store: Store,
    *,
    died_ns: int | None = None,
    timed_out: frozenset[str] = frozenset(),
) -> int:
    """Turn a dead executor's spool into a batch in the store and remove it; return the
    number of records written. Attempts still running when it died are billed until
    ``died_ns`` (default: the spool's last modification) as ``lost``, or ``timeout``
    for the invocation ids in ``timed_out``. A spool still locked by a live executor,
    or not a spool, is left alone (returns 0)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its executor is alive
        data = os.pread(fd, SPOOL_SIZE, 0)
        if len(data) < _LOG_AT or data[:8] != _MAGIC:
            log.warning("%s is not a metering spool: left alone", path)
            return 0
        if died_ns is None:
            died_ns = os.fstat(fd).st_mtime_ns
        _, batch, log_end = _HEADER.unpack_from(data, 0)
        cluster_id, _, executor_id = path.name.removesuffix(".spool").partition("-")
        records = list(iter_batch(memoryview(data)[_LOG_AT : _LOG_AT + min(log_end, _LOG_SIZE)]))
        logged = {r.identity for r in records}
        for depth in range(_SLOTS):
            at = 64 + depth * _SLOT_SIZE
            start = next(iter_batch(memoryview(data)[at : at + _SLOT_ROOM]), None)
            if start is None or start.identity in logged:
                continue  # empty, or ended (timed out) before the death
            code, run_ns = _STATE.unpack_from(data, at + _SLOT_ROOM)
            outcome: Outcome = "timeout" if start.invocation_id in timed_out else "lost"
            if code in _OUTCOMES:  # it had ended; its full record was not written yet
                outcome = _OUTCOMES[code]
            else:
                run_ns = max(0, died_ns - start.started_ns)
            records.append(_finish(start, outcome=outcome, run_ns=run_ns))
        written = 0
        if records:
            key = keys.meter_batch(cluster_id, executor_id, batch)
            stored = store.get(key).value
            already = list(iter_batch(stored)) if stored else []
            seen = {r.identity for r in already}  # a batch committed just before the death
            merged = already + [r for r in records if r.identity not in seen]
            store.put(key, encode_batch(merged))
            written = len(merged) - len(already)
        path.unlink(missing_ok=True)
        return written
    finally:
        os.close(fd)


def recover_all(directory: Path, store: Store, cluster_id: str | None = None) -> int:
    """Recover every unlocked spool in ``directory`` (of ``cluster_id`` only, if given)."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(directory.glob("*.spool")):
            if cluster_id is None or path.name.startswith(f"{cluster_id}-"):
                total += recover(path, store)
    return total
