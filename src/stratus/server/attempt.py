"""One attempt of an invocation on an executor: its runs, and the commit of their effects.

Theory of operation: an attempt is what one executor does with one ``Call`` (or DAG
step) it received: run the function, then commit what the run wrote, the kv and fs
writes and the invocation's record, in **one** store transaction. ``Attempts.runs`` is a
generator the executor drives: it yields ``(ctx, args, kwargs)`` for each run of the
function, the driver runs the function (on the executor's stack, or as an asyncio task
for ``async def``) and sends back what it returned, or throws in what it raised; the
generator returns the outcome (a pickled result or an ``ErrorInfo``) and the kv
transaction, which a DAG step before the sink hands on.

The life of an attempt (``n`` counts runs; ``N`` is ``SERIALIZABLE_ATTEMPTS``, 1 for a
streamed call, whose items are already out):

    state      event                                      next       outcome
    --------   ----------------------------------------   --------   ---------------------
    start      attempt > 1 and a record exists            done       the recorded result
                                                                     (ResultLost if too
                                                                     large to be kept)
    start      otherwise                                  run 1      (fresh kv and fs)
    run n      returned; nothing to commit                done       the result
    run n      returned; commit ok                        done       the result
    run n      commit conflicts on the record             done       the recorded result
    run n      commit conflicts                           run n+1    (after backoff n)
    run n      causal read broke the cut (CausalRetry)    run n+1    (reads at least these)
    run n      store unavailable (lock timeout: told)     done       StoreUnavailable
    run n      result unpicklable / too large / no Ref    done       that error
    run n      MemoryError                                done       MemoryLimitExceeded
    run n      raised, and its fs reads were stale        run n+1    (it may fail no more)
    run n      raised                                     done       RemoteError (its type)
    run n      driver gave up (timeout: GeneratorExit)    gone       nothing commits
    run N      a row above says run N+1                   done       ConflictError

Which commit: fs reads are always validated, kv reads only when ``serializable``; only
the last step of a DAG (or a plain call) commits kv writes, earlier steps pass theirs
on with their result, and each step commits its own fs transaction. The record, written
only if absent and together with the writes, makes a retry after a crash between commit
and reply answer the recorded result instead of applying the writes again
(``stratus.store.records``, docs/reliability.md). A read-only run takes no write lock:
its read versions are checked instead.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from stratus import _exceptions as exc
from stratus import backoff
from stratus.fs import FsSession, Volumes
from stratus.kv import KVCache, KVTransaction, Ref
from stratus.kv.causal import CausalRetry, CausalTransaction
from stratus.kv.counters import CounterWriters
from stratus.lattice import HybridClock, VectorClock
from stratus.objects import ObjectStore, is_object
from stratus.protocol import errors, keys, serialization
from stratus.protocol import messages as m
from stratus.server.context import Context, ImmediateKV, ScopedKV
from stratus.server.link import Caller
from stratus.server.mail import PostOffice
from stratus.server.metering import Meter, Running
from stratus.store import records
from stratus.store.base import CommitResult, Put, Store, Transaction
from stratus.store.feed import ChangeFeed
from stratus.transport.reactor import Connection

SERIALIZABLE_ATTEMPTS = 10  # runs of an invocation whose commit conflicts, then ConflictError
# Tests only (docs/reliability.md): the executor kills itself right after attempt 1 of
# the function of this name committed, before replying, as a crash there would.
_EXIT_AFTER_COMMIT = os.environ.get("STRATUS_TEST_EXIT_AFTER_COMMIT", "")

AttemptOutcome = tuple[bytes | m.ErrorInfo, KVTransaction]  # what an attempt returns
Runs = Generator[tuple[Context, Any, Any], Any, AttemptOutcome]


@dataclass(slots=True)
class Job:
    """An invocation to run, as it arrived, with its loaded code."""

    conn: Connection | None  # the caller's connection (None: a DAG step)
    call: m.Call
    target: Any
    options: m.FunctionOptions
    args: Any
    kwargs: Any
    upstream_kv: list[bytes]
    arrived: int  # perf_counter_ns, 0: unknown


@dataclass(slots=True)
class Attempts:
    """What an executor's attempts run against: its store and caches, and what a
    ``Context`` is made of. ``on_store_stuck`` is told of a write that waited past the
    store's lock deadline; ``on_out_of_memory`` of a run that hit its memory limit (the
    executor then lifts the limit to build the reply, and exits after it)."""

    executor_id: str
    store: Store
    feed: ChangeFeed
    kv_cache: KVCache
    volumes: Volumes
    clock: HybridClock
    counters: CounterWriters  # writer ids of ctx.kv.incr
    caller: Caller
    post: PostOffice
    kv_now: ImmediateKV
    objects: ObjectStore
    meter: Meter
    max_payload: int
    on_store_stuck: Callable[[exc.StoreLockTimeout], None]
    on_out_of_memory: Callable[[], None]

    def runs(self, job: Job, metered: Running) -> Runs:
        """The attempt's runs of ``job`` (see the module docstring): yields (ctx, args,
        kwargs) for each run, takes back what it returned or raised, and returns the
        outcome with the kv transaction."""
        call, options, args, kwargs = job.call, job.options, job.args, job.kwargs
        validate = options.consistency == "serializable"
        causal = options.consistency == "causal"
        commits = call.plan is None or call.node == call.plan.sink
        # Only a conflict (or a causal retry) runs it again.
        runs = 1 if call.stream else SERIALIZABLE_ATTEMPTS
        required: dict[str, VectorClock] = {}
        record_key = keys.invocation_record(call.invocation_id, call.node)
        tenant = keys.tenant_of_function(
            call.function
        )  # registered: only the cluster key writes it
        if call.attempt > 1:  # an earlier attempt may have committed, then died
            recorded = self._recorded(call, record_key)
            if recorded is not None:
                return recorded
        for run in range(runs):
            metered.runs = run + 1
            self.feed.refresh_if_stale()
            # A tenant's keys are platform keys: its scoped view checks the names it is given.
            reserved = keys.PLATFORM if tenant is None else ()
            kv = (
                CausalTransaction(
                    self.kv_cache, self.clock, self.executor_id, required, reserved=reserved
                )
                if causal
                else KVTransaction(self.kv_cache, self.clock, reserved=reserved)
            )
            kv.counters = self.counters
            for exported in job.upstream_kv:
                kv.absorb(exported)
            fs, ctx = self._context(tenant, call, options.volume, kv)
            try:
                if call.refs:
                    args, kwargs = _resolve_refs(
                        ctx.kv, self.objects if tenant is None else None, args, kwargs
                    )
                value = yield ctx, args, kwargs
                outcome = serialization.dumps(value, limit=self.max_payload, what="result")
                fs.finish()  # files left open are flushed into the transaction
                record = _Record(record_key, call.attempt, outcome, kv, carries=not commits)
                result = self._commit(kv, fs, metered, record, validate=validate, commits=commits)
                # A step before a DAG's sink hands its increments on: their fate is unknown here.
                kv.settle_counters((result is not None and result.ok) if commits else None)
                if result is None:
                    return outcome, kv
                if result.ok and call.function == _EXIT_AFTER_COMMIT and call.attempt == 1:
                    os.kill(os.getpid(), signal.SIGKILL)  # tests only: die before replying
            except CausalRetry as retry:
                kv.settle_counters(False)
                fs.abandon()
                required = retry.required  # run again, reading at least these versions
                continue
            except (exc.SerializationError, exc.PayloadTooLarge, exc.ObjectNotFound) as e:
                kv.settle_counters(None)
                fs.abandon()
                return errors.encode(e), kv
            except exc.StoreUnavailable as e:  # the commit failed: a platform error, typed
                kv.settle_counters(None)
                fs.abandon()
                if isinstance(e, exc.StoreLockTimeout):  # the coordinator kills stuck executors
                    self.on_store_stuck(e)
                return errors.encode(e), kv
            except MemoryError:
                kv.settle_counters(None)
                self.on_out_of_memory()
                mb = options.resources.memory_mb
                error = m.ErrorInfo("MemoryLimitExceeded", f"{call.function} used over {mb} MB")
                return error, kv
            except GeneratorExit:  # the driver gave up on the run (a timeout): nothing commits
                kv.settle_counters(None)
                fs.abandon()
                raise
            except BaseException as e:  # SystemExit too: the function failed, not the executor
                kv.settle_counters(None)  # maybe it was the commit that failed
                stale = self._read_stale_fs(fs)
                fs.abandon()
                if stale:
                    continue  # it may have failed because of what changed: run it again
                return self._failed(e, options), kv
            fs.txn.finished(result)
            if result.ok:
                if commits:
                    kv.remember_commit(self.kv_cache, result)
                return outcome, kv
            if record_key in result.conflicts:  # another attempt committed it first
                recorded = self._recorded(call, record_key)
                if recorded is not None:
                    return recorded
            self.kv_cache.invalidate(result.conflicts)
            backoff.CONFLICT.sleep(run + 1)
        conflict = m.ErrorInfo(
            "ConflictError", f"{call.function}: its reads changed in each of {runs} runs"
        )  # serializable: commits conflicted; causal: reads kept breaking the causal cut
        return conflict, kv

    def _commit(
        self,
        kv: KVTransaction,
        fs: FsSession,
        metered: Running,
        record: _Record,
        *,
        validate: bool,
        commits: bool,
    ) -> CommitResult | None:
        """Commit the invocation's kv and fs transactions as one (None: nothing to do),
        with its invocation record when it writes (``stratus.store.records``); once it
        committed, note what it wrote on the attempt's metering."""
        kv_commits = commits and (kv.has_writes or (validate and bool(kv.reads)))
        if not kv_commits and not fs.used:
            return None
        if fs.used:
            metered.fs_reads = len(fs.txn.reads)
        if (kv_commits and kv.has_writes) or fs.txn.has_writes:
            own = kv.transaction(validate=validate) if kv_commits else Transaction({}, [])
            txn, files = own, fs.txn.store_writes() if fs.used else []
            # The record is written only if absent: with the writes, exactly once.
            txn = Transaction(
                {**own.reads, **(fs.txn.reads if fs.used else {}), record.key: 0},
                [*own.writes, *files, Put(record.key, record.encode())],
                {**own.prefix_reads, **(fs.txn.prefix_reads if fs.used else {})},
            )
            result = self.store.commit(txn)
            if result.ok:  # billed from the spool: a death before ``end`` bills it lost
                self.meter.note_writes(metered, own.writes)
                metered.fs_writes = len(files)
                metered.fs_write_bytes = sum(len(w.value) for w in files if isinstance(w, Put))
            return result
        # Read-only: a check of the versions read, no write lock.
        result = kv.validate_reads(self.store) if kv_commits else CommitResult(ok=True)
        return fs.txn.validate(self.store) if result.ok and fs.used else result

    def _context(
        self, tenant: str | None, call: m.Call, volume: str, kv: KVTransaction
    ) -> tuple[FsSession, Context]:
        """The file system and ``Context`` of a run of ``call``; for ``tenant``'s function,
        its kv keys, volumes and nested calls in the tenant's namespace, and no ``app.put``
        objects (their names are the cluster's, not a tenant's)."""
        view: KVTransaction | ScopedKV = kv
        if tenant is None:
            fs = FsSession(self.volumes, volume)
            kv_now, objects, scope = self.kv_now, self.objects, ""
        else:
            fs = FsSession(self.volumes, volume, prefix=keys.tenant_volume(tenant, ""))
            prefix = keys.tenant_prefix(tenant)
            view, objects, scope = ScopedKV(kv, prefix), None, keys.tenant_function(tenant, "")
            kv_now = ImmediateKV(self.kv_cache, self.clock, prefix)
        ctx = Context(
            self.caller,
            view,
            self.post,
            invocation_id=call.invocation_id,
            function=call.function,
            executor_id=self.executor_id,
            attempt=call.attempt,
            fs=fs,
            kv_now=kv_now,
            objects=objects,
            scope=scope,
        )
        return fs, ctx

    def _recorded(self, call: m.Call, record_key: str) -> AttemptOutcome | None:
        """What an earlier attempt of ``call`` committed (its result, and for a DAG step
        the kv state it handed on), or None when no attempt did."""
        record = records.read(self.store, record_key)
        if record is None:
            return None
        kv = KVTransaction(self.kv_cache, self.clock)
        if record.result is None:
            lost = m.ErrorInfo(
                "ResultLost",
                f"{call.function} was applied by attempt {record.attempt}, whose executor "
                f"died before replying; its result was over {records.MAX_RECORDED_RESULT} "
                "bytes and was not kept",
            )
            return lost, kv
        if record.carried:
            kv.absorb(record.carried)
        return record.result, kv

    def _read_stale_fs(self, fs: FsSession) -> bool:
        """Whether the fs state a failed run read had already changed."""
        if not fs.used:
            return False
        try:
            return not fs.txn.abort(self.store).ok
        except Exception:
            return False

    def _failed(self, error: BaseException, options: m.FunctionOptions) -> m.ErrorInfo:
        """The reply to a call whose function raised ``error``."""
        return errors.encode_remote(
            error,
            limit=self.max_payload,
            retry_on=options.retry_on,
            skip_frames=1,  # the frame of ``runs``, which the driver threw ``error`` into
        )


def _resolve_refs(
    kv: KVTransaction | ScopedKV, objects: ObjectStore | None, args: Any, kwargs: Any
) -> tuple[Any, Any]:
    """Arguments with each top-level ``Ref`` replaced by the value it names: an object of
    ``app.put`` from the executor's object cache, else a kv value through the invocation
    (a tenant's: in its namespace; it has no objects)."""

    def value(arg: Any) -> Any:
        if not isinstance(arg, Ref):
            return arg
        if not is_object(arg):
            return kv.get(arg.key)
        if objects is None:
            raise exc.ObjectNotFound(arg.key)
        return objects.get(arg)

    return tuple(value(a) for a in args), {k: value(v) for k, v in kwargs.items()}


@dataclass(frozen=True, slots=True)
class _Record:
    """The invocation record a commit writes, built only if it writes something."""

    key: str
    attempt: int
    result: bytes
    kv: KVTransaction
    carries: bool  # a DAG step before the sink: keep the kv state it hands on

    def encode(self) -> bytes:
        carried = self.kv.export() if self.carries else b""
        now_ms = time.time_ns() // 1_000_000
        return records.InvocationRecord.of(self.attempt, now_ms, self.result, carried).encode()
