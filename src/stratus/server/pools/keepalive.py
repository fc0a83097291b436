"""When to keep a function warm, unload it, and warm it again: a state machine without I/O.

This is the hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., ATC 2020).
Theory of operation: the shell reports each invocation's start (``Invoked``) and end
(``Finished``) and sends ``Tick`` as time passes. Per function the policy keeps a histogram
of *idle times*, from the end of one invocation to the start of the next (a function with
calls in flight is never idle), in bins of ``bin_width`` (1 minute) over ``hist_range``
(4 hours). From it come two windows, both counted from the end of the last invocation
(percentiles are of the idle times within the range):

- ``pre_warm``: the 5th percentile of idle times (lower edge of its bin) less a 10 % margin.
  Until then the next call is unlikely, so the function is unloaded and warmed again then.
- ``keep_alive``: how long to stay warm after that, up to the 99th percentile of idle times
  (upper edge of its bin) plus a 10 % margin.

The histogram is *representative*, and used, only if all of these hold (otherwise: no
pre-warm, a fixed keep-alive of 10 minutes):

1. at least ``min_samples`` (10) idle times were seen;
2. at most ``max_out_of_range`` (50 %) of them were longer than ``hist_range`` (the paper
   forecasts such functions with ARIMA; this module falls back instead);
3. the coefficient of variation (population std / mean) of the in-range bin counts is at
   least ``min_cv`` (2.0): counts spread evenly over the bins mean there is no pattern to
   learn (a single full bin of 240 has a CV of about 15; equal counts have 0).

The life of one function:

    state      event                        next       instructions
    --------   --------------------------   --------   ------------------------------
    any        Invoked                      busy       (the call loads it if unloaded)
    busy       Finished (last in flight)    warm       KeepWarm(until)   [pre_warm == 0]
    busy       Finished (last in flight)    waiting    Unload, then PreWarm due later
    waiting    Tick (pre-warm time)         warm       PreWarm(at), KeepWarm(until)
    warm       Tick (past keep-alive)       unloaded   Unload
    waiting    Tick (past keep-alive too)   unloaded   (the pre-warm was missed: none)

Every decision lands in ``history`` with its cause and stimulus.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

# --- events


@dataclass(frozen=True)
class Invoked:
    """A call of ``function`` started."""

    function: str
    stimulus_id: str = ""


@dataclass(frozen=True)
class Finished:
    """A call of ``function`` ended."""

    function: str
    stimulus_id: str = ""


@dataclass(frozen=True)
class Tick:
    """Time passed."""

    stimulus_id: str = ""


Event = Invoked | Finished | Tick


# --- instructions


@dataclass(frozen=True)
class KeepWarm:
    """Keep ``function`` loaded (its warm pool at least one) until ``until``."""

    function: str
    until: float


@dataclass(frozen=True)
class Unload:
    """``function`` is idle: let its pool scale to zero."""

    function: str


@dataclass(frozen=True)
class PreWarm:
    """Load ``function`` again now, due at ``at``, ahead of its next expected call."""

    function: str
    at: float


Instruction = KeepWarm | Unload | PreWarm


@dataclass(frozen=True)
class Windows:
    """A function's windows, in seconds from the end of its last call.

    Unloaded for ``pre_warm``, then warm for ``keep_alive``; ``source`` says whether they
    came from the histogram or from the fixed fallback, and why.
    """

    pre_warm: float
    keep_alive: float
    source: str


@dataclass(frozen=True)
class Note:
    """One entry of the policy's history."""

    at: float
    function: str
    what: str
    stimulus_id: str


class Phase(Enum):
    BUSY = "busy"
    WARM = "warm"
    WAITING = "waiting"  # unloaded, a pre-warm is due
    UNLOADED = "unloaded"


@dataclass
class IdleHistogram:
    """Idle times of one function: counts per bin, and how many fell beyond the range."""

    bin_width: float
    bins: list[int]
    out_of_range: int = 0

    @property
    def samples(self) -> int:
        return sum(self.bins) + self.out_of_range

    def add(self, idle: float) -> None:
        index = int(idle // self.bin_width)
        if index >= len(self.bins):
            self.out_of_range += 1
        else:
            self.bins[max(0, index)] += 1

    def percentile_bin(self, fraction: float) -> int:
        """Index of the bin holding the ``fraction`` quantile of the in-range samples."""
        rank = max(1, math.ceil(fraction * sum(self.bins)))
        seen = 0
        for index, count in enumerate(self.bins):
            seen += count
            if seen >= rank:
                return index
        return len(self.bins) - 1

    def coefficient_of_variation(self) -> float:
        mean = sum(self.bins) / len(self.bins)
        if mean == 0:
            return 0.0
        variance = sum((c - mean) ** 2 for c in self.bins) / len(self.bins)
        return math.sqrt(variance) / mean


@dataclass
class FunctionIdleState:
    histogram: IdleHistogram
    phase: Phase = Phase.UNLOADED
    in_flight: int = 0
    last_end: float | None = None
    prewarm_at: float | None = None
    warm_until: float | None = None


@dataclass
class KeepAlivePolicy:
    """The hybrid histogram policy; see the module docstring.

    >>> policy = KeepAlivePolicy()
    >>> policy.handle(Invoked("f"), 0.0)
    []
    >>> policy.handle(Finished("f"), 1.0)
    [KeepWarm(function='f', until=601.0)]
    """

    bin_width: float = 60.0
    hist_range: float = 4 * 3600.0
    head_percentile: float = 0.05
    tail_percentile: float = 0.99
    margin: float = 0.10
    min_samples: int = 10
    max_out_of_range: float = 0.5
    min_cv: float = 2.0
    fixed_keep_alive: float = 600.0
    functions: dict[str, FunctionIdleState] = field(default_factory=dict)
    history: deque[Note] = field(default_factory=lambda: deque(maxlen=500))

    def handle(self, event: Event, now: float) -> list[Instruction]:
        match event:
            case Invoked(function, stimulus_id):
                state = self._state(function)
                if state.in_flight == 0 and state.last_end is not None:
                    state.histogram.add(now - state.last_end)
                state.in_flight += 1
                if state.phase is not Phase.BUSY:
                    self._note(now, function, f"busy (was {state.phase.value})", stimulus_id)
                state.phase, state.prewarm_at, state.warm_until = Phase.BUSY, None, None
            case Finished(function, stimulus_id):
                state = self._state(function)
                if state.in_flight == 0:
                    return []  # a stray end: nothing was running
                state.in_flight -= 1
                if state.in_flight == 0:
                    return self._idle(function, state, now, stimulus_id)
            case Tick(stimulus_id):
                out: list[Instruction] = []
                for name in sorted(self.functions):
                    out += self._tick(name, self.functions[name], now, stimulus_id)
                return out
        return []

    def windows(self, function: str) -> Windows:
        """The current windows of ``function`` (the fallback for one never seen)."""
        state = self.functions.get(function)
        if state is None:
            return self._fallback("no idle times yet")
        hist = state.histogram
        total = hist.samples
        if total < self.min_samples:
            return self._fallback(f"{total} idle times < {self.min_samples}")
        if hist.out_of_range > self.max_out_of_range * total:
            return self._fallback(f"{hist.out_of_range} of {total} idle times out of range")
        cv = hist.coefficient_of_variation()
        if cv < self.min_cv:
            return self._fallback(f"bin counts CV {cv:.2f} < {self.min_cv:g}")
        head = hist.percentile_bin(self.head_percentile) * hist.bin_width
        tail = (hist.percentile_bin(self.tail_percentile) + 1) * hist.bin_width
        pre_warm = head * (1 - self.margin)
        until = tail * (1 + self.margin)
        return Windows(pre_warm, until - pre_warm, f"histogram of {total} idle times")

    def _fallback(self, why: str) -> Windows:
        return Windows(0.0, self.fixed_keep_alive, f"fixed keep-alive: {why}")

    def _state(self, function: str) -> FunctionIdleState:
        state = self.functions.get(function)
        if state is None:
            bins = [0] * max(1, math.ceil(self.hist_range / self.bin_width))
            state = self.functions[function] = FunctionIdleState(
                IdleHistogram(self.bin_width, bins)
            )
        return state

    def _idle(
        self, function: str, state: FunctionIdleState, now: float, stimulus_id: str
    ) -> list[Instruction]:
        state.last_end = now
        windows = self.windows(function)
        state.warm_until = now + windows.pre_warm + windows.keep_alive
        if windows.pre_warm > 0:
            state.phase, state.prewarm_at = Phase.WAITING, now + windows.pre_warm
            why = f"unload, pre-warm at {state.prewarm_at:g} ({windows.source})"
            self._note(now, function, why, stimulus_id)
            return [Unload(function)]
        state.phase = Phase.WARM
        why = f"warm until {state.warm_until:g} ({windows.source})"
        self._note(now, function, why, stimulus_id)
        return [KeepWarm(function, state.warm_until)]

    def _tick(
        self, function: str, state: FunctionIdleState, now: float, stimulus_id: str
    ) -> list[Instruction]:
        until = state.warm_until
        if until is None or state.phase not in (Phase.WAITING, Phase.WARM):
            return []
        if now >= until:
            missed = state.phase is Phase.WAITING
            state.phase, state.prewarm_at, state.warm_until = Phase.UNLOADED, None, None
            if missed:  # ticks too far apart: already unloaded, and the call did not come
                self._note(now, function, "pre-warm missed: past keep-alive", stimulus_id)
                return []
            self._note(now, function, "unload: past keep-alive", stimulus_id)
            return [Unload(function)]
        at = state.prewarm_at
        if state.phase is Phase.WAITING and at is not None and now >= at:
            state.phase, state.prewarm_at = Phase.WARM, None
            self._note(now, function, f"pre-warm, warm until {until:g}", stimulus_id)
            return [PreWarm(function, at), KeepWarm(function, until)]
        return []

    def _note(self, now: float, function: str, what: str, stimulus_id: str) -> None:
        self.history.append(Note(now, function, what, stimulus_id))
