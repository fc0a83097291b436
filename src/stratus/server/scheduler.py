"""The executor pool and placement decisions: a state machine without I/O.

Theory of operation: the coordinator feeds events (an executor was spawned, said hello,
reported its load, exited; a placement was asked; time passed) and carries out the
instructions returned (spawn, kill, tell clients the executor set changed). The pool is
kept at ``pool_size`` live executors. An executor that does not say hello within
``start_timeout`` is killed and replaced. Executors that keep dying are replaced with a
growing delay, so a crash loop does not eat the machine.

    executor state   event              next        instructions
    --------------   ----------------   ---------   ----------------------------------
    (none)           (pool too small)   starting    Spawn
    starting         Ready              ready       ExecutorsChanged
    starting         Tick (too slow)    stopping    Kill
    ready            KillRequested      stopping    Kill
    any              Exited             (gone)      ExecutorsChanged (if was ready), Spawn

Placement: among ready executors that offer the requested resources, those that already
hold the function come first, then the least loaded; clients spread calls over that list.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from stratus.protocol.messages import ExecutorAddress, Resources


class ExecutorState(Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass
class ExecutorRecord:
    executor_id: str
    state: ExecutorState
    since: float
    address: ExecutorAddress | None = None
    pid: int = 0
    resources: Resources = Resources()
    inflight: int = 0
    served: int = 0
    loaded: frozenset[str] = frozenset()


# --- events


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Ready:
    address: ExecutorAddress
    pid: int
    resources: Resources


@dataclass(frozen=True)
class LoadReported:
    executor_id: str
    inflight: int
    served: int
    loaded: frozenset[str]


@dataclass(frozen=True)
class Exited:
    executor_id: str


@dataclass(frozen=True)
class KillRequested:
    executor_id: str
    reason: str


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Stop:
    pass


Event = Start | Ready | LoadReported | Exited | KillRequested | Tick | Stop


# --- instructions


@dataclass(frozen=True)
class Spawn:
    executor_id: str


@dataclass(frozen=True)
class Kill:
    executor_id: str
    reason: str


@dataclass(frozen=True)
class ExecutorsChanged:
    executors: tuple[ExecutorAddress, ...]


Instruction = Spawn | Kill | ExecutorsChanged


@dataclass
class Scheduler:
    pool_size: int
    offer: Resources = Resources()  # what each executor of the pool offers
    start_timeout: float = 10.0
    crash_window: float = 10.0  # deaths within this window count toward back-off
    executors: dict[str, ExecutorRecord] = field(default_factory=dict)
    stopping: bool = False
    _deaths: deque[float] = field(default_factory=deque)
    _respawn_at: float | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    history: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def handle(self, event: Event, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        match event:
            case Start():
                out += self._fill(now)
            case Ready(address, pid, resources):
                rec = self.executors.get(address.executor_id)
                if rec is None or rec.state is not ExecutorState.STARTING:
                    return [Kill(address.executor_id, "unexpected hello")]
                rec.state, rec.since = ExecutorState.READY, now
                rec.address, rec.pid, rec.resources = address, pid, resources
                self._note(f"{address.executor_id} ready (pid {pid})")
                out.append(self._changed())
            case LoadReported(executor_id, inflight, served, loaded):
                rec = self.executors.get(executor_id)
                if rec is not None:
                    rec.inflight, rec.served, rec.loaded = inflight, served, loaded
            case Exited(executor_id):
                rec = self.executors.pop(executor_id, None)
                if rec is None:
                    return []
                self._note(f"{executor_id} exited in state {rec.state.value}")
                if rec.state is ExecutorState.READY:
                    out.append(self._changed())
                if not self.stopping:
                    if rec.state is not ExecutorState.STOPPING:  # not killed on purpose
                        self._deaths.append(now)
                    out += self._fill(now)
            case KillRequested(executor_id, reason):
                rec = self.executors.get(executor_id)
                if rec is not None and rec.state is not ExecutorState.STOPPING:
                    was_ready = rec.state is ExecutorState.READY
                    rec.state, rec.since = ExecutorState.STOPPING, now
                    self._note(f"kill {executor_id}: {reason}")
                    out.append(Kill(executor_id, reason))
                    if was_ready:
                        out.append(self._changed())
            case Tick():
                for rec in list(self.executors.values()):
                    late = now - rec.since > self.start_timeout
                    if rec.state is ExecutorState.STARTING and late:
                        rec.state, rec.since = ExecutorState.STOPPING, now
                        self._note(f"kill {rec.executor_id}: no hello in {self.start_timeout} s")
                        out.append(Kill(rec.executor_id, "did not start in time"))
                out += self._fill(now)
            case Stop():
                self.stopping = True
                announce = bool(self.ready())
                for rec in self.executors.values():
                    if rec.state is not ExecutorState.STOPPING:
                        rec.state = ExecutorState.STOPPING
                        out.append(Kill(rec.executor_id, "cluster shutting down"))
                if announce:
                    out.append(self._changed())
        return out

    def place(self, request: Resources, function: str) -> list[ExecutorAddress]:
        """Ready executors able to host ``request``: warm ones first, then least loaded."""
        fits = [
            rec
            for rec in self.executors.values()
            if rec.state is ExecutorState.READY
            and rec.address is not None
            and _fits(request, rec.resources)
        ]
        fits.sort(key=lambda r: (function not in r.loaded, r.inflight, r.executor_id))
        return [r.address for r in fits if r.address is not None]

    def can_ever_host(self, request: Resources) -> bool:
        """Whether an executor of this pool could host ``request`` once ready."""
        return _fits(request, self.offer)

    def ready(self) -> list[ExecutorRecord]:
        return [r for r in self.executors.values() if r.state is ExecutorState.READY]

    def _fill(self, now: float) -> list[Instruction]:
        if self.stopping:
            return []
        while self._deaths and now - self._deaths[0] > self.crash_window:
            self._deaths.popleft()
        if self._respawn_at is not None and now < self._respawn_at:
            return []
        live = sum(1 for r in self.executors.values() if r.state is not ExecutorState.STOPPING)
        missing = self.pool_size - live
        if missing <= 0:
            return []
        if self._respawn_at is None and len(self._deaths) > 2 * self.pool_size:
            # A crash loop: wait before the next spawn, longer the more deaths we saw.
            self._respawn_at = now + min(5.0, 0.1 * len(self._deaths))
            self._note(f"crash loop: next spawn in {self._respawn_at - now:.1f} s")
            return []
        self._respawn_at = None
        out: list[Instruction] = []
        for _ in range(missing):
            executor_id = f"x{next(self._ids)}"
            self.executors[executor_id] = ExecutorRecord(
                executor_id, ExecutorState.STARTING, now, resources=self.offer
            )
            out.append(Spawn(executor_id))
        return out

    def _changed(self) -> ExecutorsChanged:
        ready = sorted(self.ready(), key=lambda r: (len(r.executor_id), r.executor_id))
        return ExecutorsChanged(tuple(r.address for r in ready if r.address is not None))

    def _note(self, line: str) -> None:
        self.history.append(line)


def _fits(request: Resources, offer: Resources) -> bool:
    return (
        request.cpu <= offer.cpu
        and request.memory_mb <= offer.memory_mb
        and request.gpus <= offer.gpus
    )
