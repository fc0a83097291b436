"""Where a caller sends each call, and when: a state machine without I/O.

Theory of operation: an executor runs one call at a time; calls sent to a busy one wait
in its socket, where nothing can move them when the pool grows. So the caller sends a
call only to an executor with *room*, and holds the rest here, in order, per function,
until a reply frees room or the coordinator's push brings executors (`Demand` asks for
them, at most every ``demand_every`` s per function while calls wait).

Room on executor ``e`` for a call of ``f`` (``n``: calls this caller has in flight there):

- ``n == 0``: always (the hot path: one frame to an idle executor);
- else only if ``n < depth(f)`` and the call ``e`` runs now started less than
  ``budget`` s ago. ``depth(f)`` is how many of ``f``'s calls fit in ``budget`` at its
  measured time per call (the mean, over its recent replies, of the time each took past
  the previous reply from the same executor), at least 1, at most the function's
  ``concurrency``; 1 while nothing is measured. Short calls are thus pipelined (async
  throughput), long ones are spread over executors as they come, and a new executor
  gets the calls still held.

A call held ``overflow_after`` s without room (counted from the later of its arrival and
its pool's last growth) goes to the least loaded executor of its pool anyway, within
``concurrency``: the pool is not growing, and a held call must not wait for ever on an
executor whose running call waits for it (``ctx.recv``, nested calls re-enter the loop).
Past ``max_queued`` held calls a call is rejected (``Overloaded``), never dropped.

An ``async def`` function (``overlapping``) runs up to ``concurrency`` calls at once on
one executor's event loop: room there is simply ``n < concurrency``.

Among executors with room the least loaded wins; one this caller last sent the call's
``Ref`` keys to (so it caches them), or one the coordinator's hints say caches them
(``HintsChanged``: what executors report, so calls of every client go where a Ref is
cached, not only those of the client that put it), counts ``LOCALITY_BONUS`` calls less.
Executors that failed the invocation (``avoid``) are taken only when no other has room.
An executor client (``self_id``) counts itself busy (a call to itself runs nested in its
caller) and sends to itself only when its pool has no other executor and the cluster no
other, or when every executor is full.
Its calls are ``nested`` in running functions, which wait for them: they go out at once,
to an executor with room (up to ``concurrency``) or else to the least loaded one, where
it runs re-entrantly while that executor's own calls wait. Never held: a held nested call
could wait for calls that wait for it (``fib`` calling ``fib``: each executor's running
call waits on a call held by the other's, for ever).

A DAG goes out at once, each step to where its first upstream step went when that
executor is in the step's pool, else to the least loaded executor of it; it counts as
in flight on each step's executor until it settles. A step without an executor parks
the DAG until the pools change.

    call state   event                                 next       instructions
    ----------   -----------------------------------   --------   -------------------------
    (new)        Submit, room, nobody held before it   sent       Send
    (new)        Submit, no room                       held       Hold (+ SendDemand)
    (new)        Submit, max_queued held               (gone)     Overloaded
    held         Settled / PoolsChanged: room          sent       Send (several: one write)
    held         Tick, held overflow_after s           sent       Send (least loaded)
    held         Submit (a newer attempt)              held       Hold (keeps its place)
    sent         Settled (this attempt)                (gone)     Send for held calls
    sent         Submit (the same attempt: not sent)   per Submit
    sent         Submit (a newer attempt)              per Submit (the old attempt counts
                                                                  until it settles)
    sent         ExecutorLost                          sent       (the invocation re-sends)
    (dag)        SubmitDag, every step placed          sent       SendDag
    (dag)        SubmitDag, a step has no executor     parked     Hold, SendDemand
    parked       PoolsChanged                          per SubmitDag
    held, parked StartFailed, its pool empty           (gone)     Unplaceable
    any          Forget (the invocation ended)         (gone)
    (hints)      HintsChanged                          -          (Ref keys' homes updated)
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stratus.client.admission import QueuePolicy, Reject

# Seconds a call may wait behind calls already sent to one executor: about what a new
# executor takes to start, so holding such a call for the pool to grow could not make it
# start sooner.
BUDGET = 0.02
OVERFLOW_AFTER = 0.5  # s a call is held without room before it is sent anyway
DEMAND_EVERY = 0.05  # s between two Demands for one function
LOCALITY_BONUS = 4  # calls in flight an executor caching the Refs may have beyond others
REF_HOMES = 10_000  # Ref keys whose executor is remembered (and as many hinted keys)
_WINDOW = 64  # samples of a function's time per call that weigh as much as all older ones


# --- events and instructions: values, never changed once made (not ``frozen``: a frozen
# dataclass is built through ``object.__setattr__``, which costs about a microsecond per
# object, and a call makes four of them)


@dataclass(slots=True)
class Submit:
    """Place ``attempt`` of function call ``rid``."""

    rid: int
    function: str
    attempt: int = 1
    avoid: frozenset[str] = frozenset()
    refs: tuple[str, ...] = ()  # keys of its Ref arguments
    concurrency: int = 10_000  # calls in flight on one executor at most
    max_queued: int = 100_000  # calls of this function held here at most
    overlapping: bool = False  # an executor runs up to ``concurrency`` of them at once


@dataclass(slots=True)
class SubmitDag:
    """Place ``attempt`` of DAG call ``rid``: ``steps`` are (function, index of its first
    upstream step or -1)."""

    rid: int
    steps: tuple[tuple[str, int], ...]
    attempt: int = 1
    avoid: frozenset[str] = frozenset()


@dataclass(slots=True)
class Settled:
    """A reply to ``attempt`` of ``rid`` came back."""

    rid: int
    attempt: int


@dataclass(slots=True)
class Forget:
    """Invocation ``rid`` ended (done, failed or given up): hold it no longer."""

    rid: int


@dataclass(slots=True)
class ExecutorLost:
    executor_id: str


@dataclass(slots=True)
class PoolsChanged:
    """The live executors and functions' pools; ``complete``: every pool is listed (a
    function not listed has none), else only these changed (a ``Resolved`` reply)."""

    executors: frozenset[str]
    pools: Mapping[str, Sequence[str]]
    complete: bool = True


@dataclass(slots=True)
class HintsChanged:
    """The coordinator's hints: ``homes`` maps a Ref key to the executors that cache it
    (empty: none does any more); ``complete``: every key is listed, else only these."""

    homes: Mapping[str, Sequence[str]]
    complete: bool = False


@dataclass(slots=True)
class Tick:
    pass


@dataclass(slots=True)
class StartFailed:
    """No executor could start (the coordinator says why): calls that wait for an empty
    pool cannot be placed."""


Event = (
    Submit
    | SubmitDag
    | Settled
    | Forget
    | ExecutorLost
    | PoolsChanged
    | HintsChanged
    | Tick
    | StartFailed
)


# --- instructions


@dataclass(slots=True)
class Send:
    rid: int
    attempt: int
    executor_id: str


@dataclass(slots=True)
class SendDag:
    rid: int
    attempt: int
    executors: tuple[str, ...]  # one per step


@dataclass(slots=True)
class Hold:
    """The call waits in the caller (its deadline runs); ``cold``: its pool is empty."""

    rid: int
    attempt: int
    cold: bool


@dataclass(slots=True)
class SendDemand:
    function: str
    queued: int


@dataclass(slots=True)
class Overloaded:
    """Fail the call: too many calls of its function are held already."""

    rid: int
    attempt: int
    reason: str


@dataclass(slots=True)
class Unplaceable:
    """Fail the call with the start error: it waits for an executor and none could start."""

    rid: int
    attempt: int


Instruction = Send | SendDag | Hold | SendDemand | Overloaded | Unplaceable


# --- state


@dataclass(slots=True)
class _Dag:
    """A DAG call: parked or sent."""

    submit: SubmitDag
    executors: tuple[str, ...] = ()  # where its current attempt went, once sent


@dataclass(slots=True)
class _Function:
    pool: tuple[str, ...] = ()  # live executors only
    took: float = 0.0  # seconds its calls took (older ones decayed) ...
    calls: float = 0.0  # ... over this many calls
    # Held calls by rid, oldest first (an OrderedDict: a dict's first key is slow to
    # find once many have been taken from the front).
    held: OrderedDict[int, Submit] = field(default_factory=OrderedDict)
    grew_at: float = -math.inf
    demanded_at: float = -math.inf
    concurrency: int = 10_000
    overlapping: bool = False


@dataclass(slots=True)
class _Executor:
    inflight: int = 0
    busy_since: float = 0.0  # when the call it runs now (for this caller) began


class Placement:
    """One caller's placement of calls; see the module docstring.

    >>> p = Placement()
    >>> p.handle(PoolsChanged(frozenset({"e1"}), {"f": ["e1"]}), 0.0)
    []
    >>> p.handle(Submit(1, "f"), 0.0)
    [Send(rid=1, attempt=1, executor_id='e1')]
    >>> p.handle(Submit(2, "f"), 0.0)  # nothing measured yet: one call per executor
    [Hold(rid=2, attempt=1, cold=False), SendDemand(function='f', queued=1)]
    >>> p.handle(Settled(1, 1), 0.001)
    [Send(rid=2, attempt=1, executor_id='e1')]
    """

    def __init__(
        self,
        *,
        self_id: str | None = None,
        nested: bool = False,
        budget: float = BUDGET,
        overflow_after: float = OVERFLOW_AFTER,
        demand_every: float = DEMAND_EVERY,
    ) -> None:
        self.self_id = self_id
        self.nested = nested
        self.budget = budget
        self.overflow_after = overflow_after
        self.demand_every = demand_every
        self.executors: set[str] = set()
        self.functions: dict[str, _Function] = {}
        # Per function call, plain tuples, which the garbage collector stops tracking (a
        # burst keeps thousands, and each tracked object makes every collection longer):
        self._sent: dict[int, tuple[int, str, str]] = {}  # in flight: attempt, executor, fn
        self._held_at: dict[int, tuple[str, float]] = {}  # held: function, since when
        self._dags: dict[int, _Dag] = {}
        self.ref_homes: dict[str, str] = {}  # Ref key -> executor last sent it
        self.ref_hints: dict[str, frozenset[str]] = {}  # Ref key -> executors caching it
        self.wake_at = math.inf  # feed Tick at this time (or later)
        self._inflight: dict[str, _Executor] = {}
        self._stale: dict[tuple[int, int], tuple[str, ...]] = {}  # older attempts in flight
        self._holding: dict[str, None] = {}  # functions with held calls
        self._parked: dict[int, None] = {}  # DAG calls without an executor for a step
        # Why calls left the ordinary path (not every call: that would cost on the hot one)
        self.history: deque[str] = deque(maxlen=500)

    # ------------------------------------------------------------------ queries

    def pool(self, function: str) -> tuple[str, ...]:
        """The live executors of ``function``'s pool, as last heard."""
        fn = self.functions.get(function)
        return fn.pool if fn is not None else ()

    def in_flight(self, executor_id: str) -> int:
        """Calls this caller has in flight on ``executor_id``."""
        record = self._inflight.get(executor_id)
        return record.inflight if record is not None else 0

    def knows(self, rid: int) -> bool:
        """Whether call ``rid`` is held, parked or in flight here."""
        return rid in self._sent or rid in self._held_at or rid in self._dags

    def waiting(self) -> bool:
        """Whether any call is held or parked here."""
        return bool(self._holding or self._parked)

    def held(self, function: str) -> int:
        """Calls of ``function`` held here."""
        fn = self.functions.get(function)
        return len(fn.held) if fn is not None else 0

    # ------------------------------------------------------------------ events

    def handle(self, event: Event, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        match event:
            case Submit():
                self._submit(event, now, out)
            case Settled(rid, attempt):
                freed = self._settled(rid, attempt, now)
                if self._holding and freed:
                    if len(freed) == 1 and freed[0] != self.self_id:
                        self._release_on(freed[0], now, out)
                    else:
                        self._release(now, out)
            case Forget(rid):
                self._forget(rid)
            case SubmitDag():
                self._submit_dag(event, now, out)
            case PoolsChanged(executors, pools, complete):
                self._pools_changed(executors, pools, complete, now)
                self._release(now, out)
                parked, self._parked = self._parked, {}
                for rid in parked:
                    dag = self._dags.get(rid)
                    if dag is not None:
                        self._submit_dag(dag.submit, now, out)
            case ExecutorLost(executor_id):
                self._lost(executor_id)
            case HintsChanged(homes, complete):
                self._hints_changed(homes, complete)
            case Tick():
                self._tick(now, out)
            case StartFailed():
                self._start_failed(out)
        return out

    def _submit(self, submit: Submit, now: float, out: list[Instruction]) -> None:
        fn = self.functions.get(submit.function) or self._function(submit.function)
        fn.concurrency = submit.concurrency
        fn.overlapping = submit.overlapping
        sent = self._sent.pop(submit.rid, None)
        if sent is not None:
            attempt, executor_id, _ = sent
            if attempt == submit.attempt:  # its sending failed: nothing went out
                self._uncount(executor_id, now)
            else:  # abandoned: it counts until it settles or its executor is lost
                self._stale[(submit.rid, attempt)] = (executor_id,)
        if submit.rid in fn.held:  # a newer attempt keeps its place
            fn.held[submit.rid] = submit
            out.append(Hold(submit.rid, submit.attempt, not fn.pool))
            return
        if not fn.held:
            target = self._pick(fn, submit, now, overflow=False)
            if target is not None:
                self._send(submit, target, now, out)
                return
        queued = len(fn.held)
        if queued >= submit.max_queued:  # the policy's test, without building it per call
            rejected = QueuePolicy(submit.max_queued).hold_or_reject(queued)
            assert isinstance(rejected, Reject)
            reason = f"{submit.function}: {rejected.reason}; max_queued={submit.max_queued}"
            out.append(Overloaded(submit.rid, submit.attempt, reason))
            self.history.append(f"{now:.3f} call {submit.rid} overloaded: {reason}")
            return
        self._held_at[submit.rid] = (submit.function, now)
        fn.held[submit.rid] = submit
        self._holding[submit.function] = None
        out.append(Hold(submit.rid, submit.attempt, not fn.pool))
        self._demand(submit.function, fn, len(fn.held), now, out)
        overflow = now + self.overflow_after
        self.wake_at = min(self.wake_at, overflow, fn.demanded_at + self.demand_every)

    def _send(self, submit: Submit, target: str, now: float, out: list[Instruction]) -> None:
        self._sent[submit.rid] = (submit.attempt, target, submit.function)
        self._count(target, now)
        for key in submit.refs:
            self.ref_homes[key] = target
            if len(self.ref_homes) > REF_HOMES:
                del self.ref_homes[next(iter(self.ref_homes))]
        out.append(Send(submit.rid, submit.attempt, target))

    def _count(self, executor_id: str, now: float) -> None:
        record = self._inflight.get(executor_id)
        if record is None:
            record = self._inflight[executor_id] = _Executor()
        if record.inflight == 0:
            record.busy_since = now
        record.inflight += 1

    def _uncount(self, executor_id: str, now: float) -> float | None:
        """One call less on ``executor_id``; return how long it took since the executor
        began it, or None if unknown."""
        record = self._inflight.get(executor_id)
        if record is None or record.inflight == 0:
            return None
        took = now - record.busy_since
        record.inflight -= 1
        record.busy_since = now  # the next call in flight there, if any, begins now
        return took

    def _settled(self, rid: int, attempt: int, now: float) -> tuple[str, ...]:
        """Account for a reply; return the executors it leaves with more room."""
        sent = self._sent.get(rid)
        if sent is not None and sent[0] == attempt:
            del self._sent[rid]
            took = self._uncount(sent[1], now)
            fn = self.functions.get(sent[2])
            if took is not None and fn is not None:
                # A mean, not a moving average of samples: replies read together give
                # one long sample and many near zero.
                fn.took += took
                fn.calls += 1
                if fn.calls >= 2 * _WINDOW:
                    fn.took, fn.calls = fn.took / 2, fn.calls / 2
            return (sent[1],)
        dag = self._dags.get(rid)
        if dag is not None and dag.submit.attempt == attempt and dag.executors:
            del self._dags[rid]
            freed = dag.executors
        else:
            freed = self._stale.pop((rid, attempt), ())
        for e in freed:
            self._uncount(e, now)
        return freed

    def _replace_attempt(self, rid: int, dag: _Dag, attempt: int, now: float) -> None:
        """``dag`` is placed again: as the same attempt, its sending failed (nothing went
        out); as a newer one, the old one was abandoned."""
        if attempt != dag.submit.attempt:
            self._retire_attempt(rid, dag)
            return
        for e in dag.executors:
            self._uncount(e, now)
        dag.executors = ()

    def _retire_attempt(self, rid: int, dag: _Dag) -> None:
        """A newer attempt replaces the current one: the old one, if it went out, counts
        on its executors until it settles or they are lost."""
        if dag.executors:
            self._stale[(rid, dag.submit.attempt)] = dag.executors
            dag.executors = ()

    def _forget(self, rid: int) -> None:
        last = 0  # the invocation's latest attempt that we know of
        sent = self._sent.pop(rid, None)
        if sent is not None:
            last = sent[0]
            self._stale[(rid, last)] = (sent[1],)
        held = self._held_at.pop(rid, None)
        if held is not None:
            fn = self.functions[held[0]]
            last = max(last, fn.held.pop(rid).attempt)
            if not fn.held:
                self._holding.pop(held[0], None)
        dag = self._dags.pop(rid, None)
        if dag is not None:
            last = max(last, dag.submit.attempt)
            self._retire_attempt(rid, dag)
            self._parked.pop(rid, None)
        for attempt in range(1, last + 1):
            for e in self._stale.pop((rid, attempt), ()):
                record = self._inflight.get(e)
                if record is not None and record.inflight > 0:
                    record.inflight -= 1

    # ------------------------------------------------------------------ choosing

    def _depth(self, fn: _Function) -> int:
        if self.nested or fn.overlapping:
            return fn.concurrency
        if not fn.calls:
            return 1
        if fn.took <= 0:
            return fn.concurrency
        return max(1, min(fn.concurrency, int(self.budget * fn.calls / fn.took)))

    def _candidates(self, pool: tuple[str, ...]) -> tuple[str, ...]:
        if self.self_id is not None and pool == (self.self_id,):
            # A call to itself would run nested in its waiting caller: any other
            # executor of the cluster can run it too (it loads the code on demand).
            others = tuple(sorted(e for e in self.executors if e != self.self_id))
            return others or pool
        return pool

    def _pick(self, fn: _Function, submit: Submit, now: float, *, overflow: bool) -> str | None:
        """The executor with room for the call that is least loaded (locality counted),
        avoiding ``avoid`` when another has room; with ``overflow``, within
        ``concurrency`` only."""
        candidates = self._candidates(fn.pool)
        if not candidates:
            return None
        alone = candidates == (self.self_id,)
        depth = fn.concurrency if overflow else self._depth(fn)
        homes = self._homes(submit.refs) if submit.refs else None
        best: str | None = None
        best_key = (True, 0)
        for e in candidates:
            record = self._inflight.get(e)
            n = record.inflight if record is not None else 0
            if e == self.self_id:
                n += 1
            if n and not alone:
                if n >= depth:
                    continue
                if (
                    not overflow
                    and not self.nested
                    and not fn.overlapping
                    and record is not None
                    and now - record.busy_since > self.budget
                ):
                    continue  # its running call is long: do not queue behind it
            load = n - (LOCALITY_BONUS if homes is not None and e in homes else 0)
            key = (e in submit.avoid, load)
            if best is None or key < best_key:
                best, best_key = e, key
        if best is None and self.nested:  # never held (see the module docstring)
            return self._least_loaded(fn.pool, submit.avoid)
        return best

    def _homes(self, refs: tuple[str, ...]) -> set[str | None]:
        """The executors that cache some of ``refs``: where this caller sent them, and
        where the coordinator's hints say they are."""
        homes = {self.ref_homes.get(k) for k in refs}
        for k in refs:
            homes.update(self.ref_hints.get(k, ()))
        return homes

    def _least_loaded(self, pool: tuple[str, ...], avoid: frozenset[str]) -> str | None:
        candidates = self._candidates(pool)
        usable = [e for e in candidates if e not in avoid] or list(candidates)
        if not usable:
            return None
        busy = self.self_id
        return min(usable, key=lambda e: self.in_flight(e) + (e == busy))

    # ------------------------------------------------------------------ releasing

    def _release(self, now: float, out: list[Instruction], *, overflow: bool = False) -> None:
        """Send held calls, oldest first per function, while they find room."""
        for name in list(self._holding):
            fn = self.functions[name]
            while fn.held:
                rid = next(iter(fn.held))
                submit = fn.held[rid]
                late = overflow and now >= self._overflow_at(rid, fn)
                target = self._pick(fn, submit, now, overflow=late)
                if target is None:
                    break
                if late:
                    self.history.append(
                        f"{now:.3f} call {rid} of {name} held {self.overflow_after} s: sent "
                        f"to {target} with {self.in_flight(target)} in flight"
                    )
                del fn.held[rid]
                del self._held_at[rid]
                self._send(submit, target, now, out)
            if not fn.held:
                del self._holding[name]

    def _release_on(self, executor_id: str, now: float, out: list[Instruction]) -> None:
        """Send held calls to ``executor_id``, which a reply has just left with more
        room, oldest first, while it has room: a reply frees one place, so this is one
        look at one executor rather than a choice among all."""
        for name in list(self._holding):
            fn = self.functions[name]
            if executor_id not in fn.pool:
                continue
            depth = self._depth(fn)
            while fn.held:
                rid = next(iter(fn.held))
                submit = fn.held[rid]
                if executor_id in submit.avoid or not self._room(executor_id, fn, depth, now):
                    break  # the next reply or tick finds it a place
                del fn.held[rid]
                del self._held_at[rid]
                self._send(submit, executor_id, now, out)
            if not fn.held:
                del self._holding[name]

    def _room(self, executor_id: str, fn: _Function, depth: int, now: float) -> bool:
        record = self._inflight.get(executor_id)
        if record is None or record.inflight == 0:
            return True
        if record.inflight >= depth:
            return False
        return self.nested or fn.overlapping or now - record.busy_since <= self.budget

    def _overflow_at(self, rid: int, fn: _Function) -> float:
        return max(self._held_at[rid][1], fn.grew_at) + self.overflow_after

    def _tick(self, now: float, out: list[Instruction]) -> None:
        if now < self.wake_at:
            return
        self._release(now, out, overflow=True)
        wake = math.inf
        for name in self._holding:
            fn = self.functions[name]
            self._demand(name, fn, len(fn.held), now, out)
            overflow_at = self._overflow_at(next(iter(fn.held)), fn)
            wake = min(wake, fn.demanded_at + self.demand_every)
            if fn.pool:  # past it and still held: the pool is full, try again later
                wake = min(wake, max(overflow_at, now + self.demand_every))
        for rid in self._parked:
            for function, _ in self._dags[rid].submit.steps:
                fn = self._function(function)
                if not fn.pool:
                    self._demand(function, fn, 1, now, out)
                    wake = min(wake, fn.demanded_at + self.demand_every)
        self.wake_at = wake

    def _demand(
        self, name: str, fn: _Function, queued: int, now: float, out: list[Instruction]
    ) -> None:
        if now >= fn.demanded_at + self.demand_every:
            fn.demanded_at = now
            out.append(SendDemand(name, queued))

    # ------------------------------------------------------------------ DAGs

    def _submit_dag(self, submit: SubmitDag, now: float, out: list[Instruction]) -> None:
        dag = self._dags.get(submit.rid)
        if dag is not None:
            self._replace_attempt(submit.rid, dag, submit.attempt, now)
            dag.submit = submit
        else:
            dag = self._dags[submit.rid] = _Dag(submit)
        picks: list[str | None] = []
        for function, up in submit.steps:
            pool = self.pool(function)
            upstream = picks[up] if up >= 0 else None
            if upstream is not None and upstream in pool and upstream not in submit.avoid:
                picks.append(upstream)
            else:
                picks.append(self._least_loaded(pool, submit.avoid))
        if any(p is None for p in picks):
            cold = False
            self._parked[submit.rid] = None
            self.history.append(f"{now:.3f} dag call {submit.rid} parked: a step has no pool")
            for (function, _), pick in zip(submit.steps, picks, strict=True):
                if pick is None:
                    fn = self._function(function)
                    cold = cold or not fn.pool
                    self._demand(function, fn, 1, now, out)
                    self.wake_at = min(self.wake_at, fn.demanded_at + self.demand_every)
            out.append(Hold(submit.rid, submit.attempt, cold))
            return
        executors = tuple(p for p in picks if p is not None)
        dag.executors = executors
        for e in executors:
            self._count(e, now)
        out.append(SendDag(submit.rid, submit.attempt, executors))

    def _start_failed(self, out: list[Instruction]) -> None:
        for name in list(self._holding):
            fn = self.functions[name]
            if fn.pool:
                continue  # executors of its pool are running: they will take its calls
            for rid, submit in list(fn.held.items()):
                out.append(Unplaceable(rid, submit.attempt))
                self._forget(rid)
        for rid in list(self._parked):
            dag = self._dags.get(rid)
            if dag is not None:
                out.append(Unplaceable(rid, dag.submit.attempt))
                self._forget(rid)

    # ------------------------------------------------------------------ pools

    def _function(self, name: str) -> _Function:
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = _Function()
        return fn

    def _pools_changed(
        self,
        executors: frozenset[str],
        pools: Mapping[str, Sequence[str]],
        complete: bool,
        now: float,
    ) -> None:
        if complete:
            for gone in self.executors - executors:
                self._lost(gone)
            self.executors = set(executors)
        else:
            self.executors |= executors
        names = set(self.functions) | set(pools) if complete else set(pools)
        for name in names:
            fn = self._function(name)
            pool = tuple(e for e in pools.get(name, ()) if e in self.executors)
            if not set(pool) <= set(fn.pool):
                fn.grew_at = now  # held calls wait for the new executors a while longer
            fn.pool = pool

    def _hints_changed(self, homes: Mapping[str, Sequence[str]], complete: bool) -> None:
        if complete:
            self.ref_hints = {}
        for key, executors in homes.items():
            self.ref_hints.pop(key, None)  # re-inserted last: the newest is kept longest
            if executors:
                self.ref_hints[key] = frozenset(executors)
        while len(self.ref_hints) > REF_HOMES:
            del self.ref_hints[next(iter(self.ref_hints))]

    def _lost(self, executor_id: str) -> None:
        if executor_id in self.executors:
            self.history.append(f"executor {executor_id} lost")
        self.executors.discard(executor_id)
        self._inflight.pop(executor_id, None)
        for fn in self.functions.values():
            if executor_id in fn.pool:
                fn.pool = tuple(e for e in fn.pool if e != executor_id)
        for key in [k for k, v in self._stale.items() if executor_id in v]:
            del self._stale[key]
