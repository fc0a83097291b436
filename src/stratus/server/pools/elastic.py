"""One size per warm pool, from the autoscaler and the keep-alive policy: no I/O.

Theory of operation: every tick the coordinator turns its executors' load reports into
one ``Load`` per function (calls finished and seconds spent running them over the
tick, calls running and queued now) and the scheduler's count of each pool's executors
(``PoolChanged``), then sends ``Tick``. ``Elastic`` feeds them to its
two state machines and combines their answers:

- the `Autoscaler` gets ``Observed(in_flight, queued)`` with ``in_flight`` the larger of
  the calls running now and the busy seconds over the tick's length (Little's law, so a
  stream of calls far shorter than a tick still counts), rounded up;
- the `KeepAlivePolicy` sees a function's *busy periods*: ``Invoked`` when a tick finds it
  busy after an idle one, ``Finished`` when it goes idle, so idle times are measured
  between busy periods with the tick as resolution. Its ``KeepWarm`` and ``PreWarm`` hold
  a pool at one executor until the keep-alive ends; ``Unload`` drops that hold.

    pool size = clamp(max(autoscaler target, 1 if held warm else 0), max_instances)

``min_instances`` is the autoscaler's minimum. ``Demand`` (a caller holds calls that the
function's pool cannot take) is sampled and decided at once instead of on the next tick:
for an empty pool that is the path of the first call after scale to zero; for a full one,
a burst grows the pool while its calls are still waiting. ``Resize`` is emitted only when
a size changes, with the reason of the decision.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from stratus.config import AutoscalingConfig
from stratus.protocol.messages import FunctionLoad
from stratus.server.pools import autoscaler as ks
from stratus.server.pools import keepalive as ka

# --- events


@dataclass(frozen=True)
class Configure:
    """A function was registered (again) with these pool bounds."""

    function: str
    min_instances: int
    max_instances: int


@dataclass(frozen=True)
class Load:
    """``function`` over the last tick: calls finished, seconds busy; running and queued now."""

    function: str
    calls: int
    busy: float
    running: int
    queued: int


@dataclass(frozen=True)
class Demand:
    """A caller holds ``queued`` calls that ``function``'s pool cannot take."""

    function: str
    queued: int


@dataclass(frozen=True)
class PoolChanged:
    """The scheduler's count of ``function``'s executors, ready and starting: a burst
    panics the autoscaler when it wants twice the executors that are ready."""

    function: str
    ready: int
    starting: int


@dataclass(frozen=True)
class Tick:
    stimulus_id: str = ""


Event = Configure | Load | Demand | PoolChanged | Tick


# --- instructions


@dataclass(frozen=True)
class Resize:
    """``function``'s warm pool should hold ``size`` executors."""

    function: str
    size: int
    reason: str


@dataclass
class _Function:
    max_instances: int = 100
    load: Load | None = None  # this tick's, if any
    busy: bool = False
    hold_until: float | None = None
    target: int = 0  # the autoscaler's
    reason: str = ""  # the autoscaler's
    size: int = 0  # last emitted
    why: str = ""  # for the size now
    changed_at: float = 0.0  # when ``size`` last changed


@dataclass
class Elastic:
    """Pool sizes for every function; see the module docstring.

    >>> e = Elastic(AutoscalingConfig(tick=1.0))
    >>> e.handle(Configure("f", 0, 4), 0.0)
    []
    >>> e.handle(Demand("f", 1), 0.5)
    [Resize(function='f', size=2, reason='stable window: 1.0 concurrent')]
    """

    config: AutoscalingConfig = field(default_factory=AutoscalingConfig)
    scaler: ks.Autoscaler = field(init=False)
    keepalive: ka.KeepAlivePolicy = field(init=False)
    functions: dict[str, _Function] = field(default_factory=dict)
    last_tick: float | None = None
    history: deque[str] = field(default_factory=lambda: deque(maxlen=500))

    def __post_init__(self) -> None:
        c = self.config
        self.scaler = ks.Autoscaler(
            stable_window=c.stable_window,
            panic_window=c.panic_window,
            scale_to_zero_grace=c.scale_to_zero_grace,
            utilization=c.utilization,
        )
        learned = c.keep_alive == "hybrid"
        self.keepalive = ka.KeepAlivePolicy(
            bin_width=c.idle_bin,
            hist_range=c.idle_range,
            fixed_keep_alive=c.fixed_keep_alive,
            # "fixed": the histogram is never representative enough to be used.
            min_samples=10 if learned else 2**62,
        )

    def handle(self, event: Event, now: float) -> list[Resize]:
        match event:
            case Configure(function, min_instances, max_instances):
                fn = self._function(function)
                fn.max_instances = max_instances
                # One call at a time per executor: the target concurrency is 1.
                self.scaler.handle(ks.Configure(function, min_instances, max_instances, 1.0), now)
                self._apply_scaler(self.scaler.handle(ks.Tick(f"configure {function}"), now))
                return self._decide(now)
            case Load(function):
                self._function(function).load = event
            case PoolChanged(function, ready, starting):
                self.scaler.handle(ks.PoolChanged(function, ready, starting), now)
            case Demand(function, queued):
                fn = self._function(function)
                self.scaler.handle(ks.Observed(function, 0, queued, "demand"), now)
                self._busy(function, fn, True, now, "demand")
                # Calls wait in a caller (for an empty pool: the cold path): decide now,
                # not on the next tick.
                self._apply_scaler(self.scaler.handle(ks.Tick("demand"), now))
                return self._decide(now)
            case Tick(stimulus_id):
                return self._tick(now, stimulus_id)
        return []

    def sizes(self) -> dict[str, tuple[int, str, float]]:
        """Every function's pool size, the reason for it, and when it last changed."""
        return {
            name: (fn.size, fn.why, fn.changed_at) for name, fn in sorted(self.functions.items())
        }

    def _function(self, name: str) -> _Function:
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = _Function()
        return fn

    def _tick(self, now: float, stimulus_id: str) -> list[Resize]:
        interval = self.config.tick if self.last_tick is None else max(now - self.last_tick, 1e-3)
        self.last_tick = now
        for name, fn in sorted(self.functions.items()):
            load, fn.load = fn.load, None
            running, queued, calls, busy = 0, 0, 0, 0.0
            if load is not None:
                running, queued, calls, busy = load.running, load.queued, load.calls, load.busy
            in_flight = max(running, math.ceil(busy / interval - 1e-9))
            if calls and not in_flight:
                in_flight = 1
            self.scaler.handle(ks.Observed(name, in_flight, queued, stimulus_id), now)
            self._busy(name, fn, in_flight + queued > 0, now, stimulus_id)
        self._apply_scaler(self.scaler.handle(ks.Tick(stimulus_id), now))
        self._apply_keepalive(self.keepalive.handle(ka.Tick(stimulus_id), now))
        return self._decide(now)

    def _busy(self, name: str, fn: _Function, busy: bool, now: float, stimulus_id: str) -> None:
        if busy and not fn.busy:
            self._apply_keepalive(self.keepalive.handle(ka.Invoked(name, stimulus_id), now))
        elif fn.busy and not busy:
            self._apply_keepalive(self.keepalive.handle(ka.Finished(name, stimulus_id), now))
        fn.busy = busy

    def _apply_scaler(self, instructions: list[ks.Instruction]) -> None:
        for scale in instructions:
            fn = self._function(scale.function)
            fn.target, fn.reason = scale.size, scale.reason

    def _apply_keepalive(self, instructions: list[ka.Instruction]) -> None:
        for instruction in instructions:
            fn = self._function(instruction.function)
            match instruction:
                case ka.KeepWarm(_, until):
                    fn.hold_until = until
                case ka.Unload():
                    fn.hold_until = None
                case ka.PreWarm():
                    pass  # the KeepWarm that follows sets the hold

    def _decide(self, now: float) -> list[Resize]:
        out: list[Resize] = []
        for name, fn in sorted(self.functions.items()):
            held = fn.hold_until is not None and now < fn.hold_until
            size, reason = fn.target, fn.reason
            if held and size == 0:
                size, reason = 1, f"kept warm until {fn.hold_until:.1f}"
            size = min(size, fn.max_instances)
            fn.why = reason
            if size != fn.size:
                fn.size, fn.changed_at = size, now
                self.history.append(f"{now:.3f} {name} -> {size}: {reason}")
                out.append(Resize(name, size, reason))
        return out


@dataclass
class LoadBook:
    """Executors' cumulative load reports turned into one `Load` per function per tick.

    Reports carry totals since each executor started; the book keeps the last one per
    executor and adds up the differences until ``loads()`` takes them.
    """

    last: dict[str, dict[str, FunctionLoad]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)

    def report(self, executor_id: str, functions: dict[str, FunctionLoad]) -> None:
        before = self.last.get(executor_id, {})
        for name, now in functions.items():
            prev = before.get(name)
            self.calls[name] = self.calls.get(name, 0) + now.calls - (prev.calls if prev else 0)
            self.busy[name] = self.busy.get(name, 0.0) + now.busy - (prev.busy if prev else 0.0)
        self.last[executor_id] = dict(functions)

    def forget(self, executor_id: str) -> None:
        self.last.pop(executor_id, None)

    def loads(self) -> list[Load]:
        """Each function's load since the previous call (running and queued: as last
        reported)."""
        running: dict[str, int] = {}
        queued: dict[str, int] = {}
        for functions in self.last.values():
            for name, load in functions.items():
                running[name] = running.get(name, 0) + load.running
                queued[name] = queued.get(name, 0) + load.queued
        names = sorted(set(self.calls) | set(running))
        out = [
            Load(
                n,
                self.calls.get(n, 0),
                self.busy.get(n, 0.0),
                running.get(n, 0),
                queued.get(n, 0),
            )
            for n in names
        ]
        self.calls.clear()
        self.busy.clear()
        return out
