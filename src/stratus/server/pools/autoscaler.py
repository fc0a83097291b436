"""Per-function warm-pool sizing, after Knative's KPA: a state machine without I/O.

Theory of operation: each tick the coordinator samples every function's concurrency (calls
in flight plus calls queued) and feeds it as ``Observed``, reports pool sizes as
``PoolChanged``, then sends ``Tick``. On a tick the autoscaler averages the samples over two
windows, the *stable* window (60 s) and the *panic* window (6 s), and turns an average into
a pool size::

    desired = ceil(average concurrency / (target_concurrency * utilization))

with ``utilization`` 0.7, so a pool runs at 70 % of its target concurrency and has room for
a burst while new executors start. The life of one function's pool:

    mode      condition on a tick                             next      target follows
    -------   ---------------------------------------------   -------   -------------------
    stable    panic desired >= 2 x ready (200 %)              panic     panic window
    stable    otherwise                                       stable    stable window
    panic     panic condition seen within the stable window   panic     panic window, never
                                                                        below the target
    panic     no panic condition for a whole stable window    stable    stable window
    any       min_size 0, no call in flight or queued for     (same)    0 (scale to zero)
              the grace period (30 s), not panicking

Then, in this order: a move is limited to ``max_scale_up_rate`` times and
``1 / max_scale_down_rate`` of the current target per tick (scale to zero is exempt: it
only follows a grace period without calls); a function that still has a pool and saw calls
within the grace period keeps at least one executor; the size is clamped to the function's
``[min_size, max_size]``. There is no cap across functions here: executors are shared
between pools, and the scheduler holds the cluster to its number of executors.

``ScaleTo`` is emitted only when a function's target changes; every change and every panic
transition lands in ``history`` with its cause and the stimulus that led to it.

Where this departs from Knative: rate limits are relative to the current target, not to
the ready executors, so a shell that is slow to start or stop executors cannot make the
target bounce; and the scale-to-zero grace counts from the last sampled call, not from the
stable window draining, so an idle function releases its pool after 30 s.

The fate of one call at the door (run it now, queue it in the caller, or turn it away)
is ``QueuePolicy``'s, in ``stratus.client.admission``, where callers apply it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "Autoscaler",
    "Configure",
    "Observed",
    "PoolChanged",
    "ScaleTo",
    "Tick",
]

# --- configuration


@dataclass(frozen=True)
class FunctionLimits:
    """Bounds and target for one function's pool (set with `Configure`)."""

    min_size: int = 0  # 0 allows scale to zero
    max_size: int = 100
    target_concurrency: float = 100.0  # calls one executor should carry (Knative's default)

    def __post_init__(self) -> None:
        if not 0 <= self.min_size <= self.max_size:
            raise ValueError(f"need 0 <= min_size <= max_size, got {self}")
        if self.target_concurrency <= 0:
            raise ValueError("target_concurrency must be positive")


# --- events


@dataclass(frozen=True)
class Observed:
    """One concurrency sample of ``function``, taken by the shell each tick."""

    function: str
    in_flight: int
    queued: int
    stimulus_id: str = ""


@dataclass(frozen=True)
class Tick:
    """Time passed: re-evaluate every pool (the shell sends one every ~2 s)."""

    stimulus_id: str = ""


@dataclass(frozen=True)
class PoolChanged:
    """The shell's view of ``function``'s pool: executors ready and still starting."""

    function: str
    ready: int
    starting: int
    stimulus_id: str = ""


@dataclass(frozen=True)
class Configure:
    """Set or change a function's limits; takes effect on the next `Tick`.

    A function first seen in another event gets the `FunctionLimits` defaults.
    """

    function: str
    min_size: int
    max_size: int
    target_concurrency: float
    stimulus_id: str = ""


Event = Observed | Tick | PoolChanged | Configure


# --- instructions


@dataclass(frozen=True)
class ScaleTo:
    """Grow or shrink ``function``'s warm pool to ``size`` executors."""

    function: str
    size: int
    reason: str


Instruction = ScaleTo


@dataclass(frozen=True)
class Decision:
    """One entry of the autoscaler's history: what changed, when, and why."""

    at: float
    function: str
    size: int
    reason: str
    stimulus_id: str


@dataclass
class PoolState:
    """What the autoscaler knows about one function's pool."""

    limits: FunctionLimits
    last_busy: float  # last sample with a call in flight or queued
    target: int = 0
    ready: int = 0
    starting: int = 0
    panic_since: float | None = None
    last_panic_condition: float | None = None
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    @property
    def panicking(self) -> bool:
        return self.panic_since is not None


@dataclass
class Autoscaler:
    """Sizes every function's warm pool; see the module docstring for the rules.

    >>> scaler = Autoscaler()
    >>> scaler.handle(Configure("f", 1, 10, 10.0), 0.0)
    []
    >>> scaler.handle(Tick(), 2.0)
    [ScaleTo(function='f', size=1, reason='min size 1')]
    """

    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0  # panic when panic desired >= 200 % of ready executors
    utilization: float = 0.7
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace: float = 30.0
    pools: dict[str, PoolState] = field(default_factory=dict)
    history: deque[Decision] = field(default_factory=lambda: deque(maxlen=500))

    def handle(self, event: Event, now: float) -> list[Instruction]:
        match event:
            case Configure(function, min_size, max_size, target_concurrency, stimulus_id):
                limits = FunctionLimits(min_size, max_size, target_concurrency)
                pool = self._pool(function, now)
                pool.limits = limits
                self._note(now, function, pool.target, f"configured {limits}", stimulus_id)
            case Observed(function, in_flight, queued):
                pool = self._pool(function, now)
                pool.samples.append((now, in_flight + queued))
                if in_flight + queued > 0:
                    pool.last_busy = now
            case PoolChanged(function, ready, starting):
                pool = self._pool(function, now)
                pool.ready, pool.starting = ready, starting
            case Tick(stimulus_id):
                return self._tick(now, stimulus_id)
        return []

    def _pool(self, function: str, now: float) -> PoolState:
        pool = self.pools.get(function)
        if pool is None:
            pool = self.pools[function] = PoolState(FunctionLimits(), last_busy=now)
        return pool

    def _tick(self, now: float, stimulus_id: str) -> list[Instruction]:
        out: list[Instruction] = []
        for name in sorted(self.pools):
            pool = self.pools[name]
            size, reason = self._want(name, pool, now, stimulus_id)
            if size != pool.target:
                pool.target = size
                self._note(now, name, size, reason, stimulus_id)
                out.append(ScaleTo(name, size, reason))
        return out

    def _want(self, name: str, pool: PoolState, now: float, stimulus_id: str) -> tuple[int, str]:
        """The size ``pool`` should have, and why."""
        limits = pool.limits
        while pool.samples and pool.samples[0][0] <= now - self.stable_window:
            pool.samples.popleft()
        stable = _mean([c for _, c in pool.samples])
        panic = _mean([c for t, c in pool.samples if t > now - self.panic_window])
        per_executor = limits.target_concurrency * self.utilization
        stable_want = math.ceil(stable / per_executor)
        panic_want = math.ceil(panic / per_executor)

        if panic_want >= self.panic_threshold * max(1, pool.ready):
            pool.last_panic_condition = now
            if pool.panic_since is None:
                pool.panic_since = now
                why = f"panic: {panic:.1f} concurrent over {self.panic_window:g} s"
                self._note(now, name, pool.target, f"{why}, {pool.ready} ready", stimulus_id)
        elif (
            pool.panic_since is not None
            and pool.last_panic_condition is not None
            and now - pool.last_panic_condition >= self.stable_window
        ):
            pool.panic_since = None
            why = f"left panic: calm for {self.stable_window:g} s"
            self._note(now, name, pool.target, why, stimulus_id)

        if pool.panicking:
            want, reason = panic_want, f"panic window: {panic:.1f} concurrent"
            if want < pool.target:
                want, reason = pool.target, "panic: no scale-down"
        else:
            want, reason = stable_want, f"stable window: {stable:.1f} concurrent"

        base = max(1, pool.target)
        up_limit = math.ceil(self.max_scale_up_rate * base)
        down_limit = math.floor(base / self.max_scale_down_rate)
        if want > up_limit:
            want, reason = up_limit, f"{reason}; scale-up rate limit {up_limit}"
        elif want < pool.target and want < down_limit:
            want, reason = down_limit, f"{reason}; scale-down rate limit {down_limit}"

        idle_for = now - pool.last_busy
        if limits.min_size == 0 and not pool.panicking and idle_for >= self.scale_to_zero_grace:
            want, reason = 0, f"scale to zero: no calls for {idle_for:g} s"
        elif want == 0 and pool.target > 0:
            # Calls within the grace period: keep one executor warm until it ends.
            want, reason = 1, f"{reason}; holding 1 until {self.scale_to_zero_grace:g} s idle"

        if want < limits.min_size:
            want, reason = limits.min_size, f"min size {limits.min_size}"
        elif want > limits.max_size:
            want, reason = limits.max_size, f"{reason}; max size {limits.max_size}"
        return want, reason

    def _note(self, now: float, function: str, size: int, reason: str, stimulus_id: str) -> None:
        self.history.append(Decision(now, function, size, reason, stimulus_id))


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0
