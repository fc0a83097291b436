"""The life of one invocation as seen by its caller: a state machine without I/O.

Theory of operation: an invocation is sent (attempt 1) to the executors of its plan (one
for a function, one per step for a DAG) and waits. It ends when a reply for the *current*
attempt arrives. When an executor of the plan dies, or the caller's deadline (the
function's timeout plus a grace period for the executor to report it itself) passes, the
attempt is abandoned: the invocation is re-sent elsewhere while ``retries`` allow, else it
fails. Replies of abandoned attempts are ignored, which is safe because an attempt's
effects only become visible when it returns successfully. An executor that went away with
its coordinator (a server restart) *orphans* the attempt: it is re-sent without spending
a retry, since the call did not fail, the platform went away under it; its invocation
record keeps its effects to one.

A streamed generator call (``fn.remote_gen``) also gets its items, numbered from 0, before
its reply; each is delivered once, in order. Once one was delivered it is not re-sent:
a new attempt would yield them again, so an attempt that dies or times out fails it with
``StreamInterrupted`` instead (docs/architecture.md, "Async functions and generators").

    state     event                              next      instructions
    -------   --------------------------------   -------   ------------------------------
    running   Replied(current attempt)           done      Complete
    running   Failed(current, retryable)         running   Resend (if retries left)
    running   Failed(current, retryable)         failed    Reject (retries spent)
    running   Failed(current, not retryable)     failed    Reject
    running   ExecutorDied(in plan)              running   Resend / Reject(ExecutorLost)
    running   Orphaned(in plan)                  running   Resend (spends no retry)
    running   Tick(now >= deadline)              running   Kill, Resend / Reject(Timeout)
    running   Yielded(current, next index)       running   Deliver
    running   retry after an item was delivered  failed    Reject(StreamInterrupted)
    running   anything of an older attempt       running   (nothing)
    done/failed  anything                        same      (nothing)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from stratus.protocol.messages import ErrorInfo

#: Time an executor gets, past the function's timeout, to report the timeout itself
#: before the caller gives up on it and has it killed.
DEADLINE_GRACE = 2.0

#: Error kinds after which an invocation is re-sent: the attempt died or was stopped
#: by the platform, or the store could not take its commit for now (a stuck write lock,
#: whose holder the coordinator kills), so it may run again; its invocation record makes
#: sure its effects apply once (docs/reliability.md). A full store is not retried.
RETRYABLE = frozenset({"ExecutorLost", "InvocationTimeout", "StoreUnavailable", "StoreLockTimeout"})


class State(Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# --- events


@dataclass(frozen=True)
class Replied:
    attempt: int
    value: bytes


@dataclass(frozen=True)
class Failed:
    attempt: int
    error: ErrorInfo


@dataclass(frozen=True)
class ExecutorDied:
    executor_id: str


@dataclass(frozen=True)
class Orphaned:
    """The executor went away with the coordinator (the client is reconnecting)."""

    executor_id: str


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Yielded:
    """A streamed call's item ``index`` arrived."""

    attempt: int
    index: int


Event = Replied | Failed | ExecutorDied | Orphaned | Tick | Yielded


# --- instructions


@dataclass(frozen=True)
class Complete:
    value: bytes


@dataclass(frozen=True)
class Reject:
    error: ErrorInfo


@dataclass(frozen=True)
class Resend:
    attempt: int
    avoid: frozenset[str]


@dataclass(frozen=True)
class Kill:
    executor_id: str


@dataclass(frozen=True)
class Deliver:
    """Hand the item that just arrived to the caller."""


Instruction = Complete | Reject | Resend | Kill | Deliver


@dataclass(slots=True)
class Invocation:
    """One call (of a function or a DAG) from the caller's side."""

    invocation_id: str
    function: str
    timeout: float | None  # the whole plan's time budget; None: no limit
    retries: int
    attempt: int = 0
    state: State = State.RUNNING
    executors: frozenset[str] = frozenset()  # of the current attempt's plan
    deadline: float | None = None
    # Immutable defaults: one invocation per call, so no per-call containers until needed.
    avoid: frozenset[str] = frozenset()  # executors that failed this invocation
    log: tuple[str, ...] = ()  # why each attempt ended
    delivered: int = 0  # items of a streamed call handed to the caller

    def sent(self, attempt: int, executors: frozenset[str], now: float) -> None:
        """Record that ``attempt`` went out to ``executors``."""
        self.attempt = attempt
        self.executors = executors
        self.deadline = None if self.timeout is None else now + self.timeout + DEADLINE_GRACE

    def handle(self, event: Event, now: float) -> list[Instruction]:
        if self.state is not State.RUNNING:
            return []
        match event:
            case Replied(attempt, value) if attempt == self.attempt:
                self.state = State.DONE
                return [Complete(value)]
            case Failed(attempt, error) if attempt == self.attempt:
                if error.kind in RETRYABLE or error.retry:  # retry: the function's retry_on
                    self.avoid |= self.executors
                    return self._retry_or_fail(error)
                self.state = State.FAILED
                return [Reject(error)]
            case ExecutorDied(executor_id) if executor_id in self.executors:
                self.avoid |= {executor_id}
                lost = ErrorInfo(
                    "ExecutorLost",
                    f"executor {executor_id} died during attempt {self.attempt} "
                    "(had it committed, its effects are applied, once)",
                )
                return self._retry_or_fail(lost)
            case Orphaned(executor_id) if executor_id in self.executors and self.delivered:
                left = ErrorInfo(
                    "ExecutorLost", f"executor {executor_id} left with its coordinator"
                )
                return self._retry_or_fail(left)  # a stream is not re-run past its first item
            case Orphaned(executor_id) if executor_id in self.executors:
                # Not avoided: a restarted server may give a new executor the same name.
                self.log += (f"attempt {self.attempt}: {executor_id} left with its coordinator",)
                self.executors = frozenset()
                self.deadline = None
                return [Resend(self.attempt + 1, self.avoid)]
            case Tick() if self.deadline is not None and now >= self.deadline:
                kills: list[Instruction] = [Kill(e) for e in sorted(self.executors)]
                self.avoid |= self.executors
                timeout = ErrorInfo(
                    "InvocationTimeout", f"no reply within the timeout of {self.timeout} s"
                )
                return kills + self._retry_or_fail(timeout)
            case Yielded(attempt, index) if attempt == self.attempt and index == self.delivered:
                self.delivered += 1
                return [Deliver()]
        return []

    def _retry_or_fail(self, error: ErrorInfo) -> list[Instruction]:
        self.log += (f"attempt {self.attempt}: {error.kind}: {error.message}",)
        if self.delivered:  # a new attempt would yield the items again
            self.state = State.FAILED
            if error.kind == "RemoteError":  # raised, though retry_on names it
                return [Reject(error)]
            interrupted = ErrorInfo(
                "StreamInterrupted",
                f"{error.kind} after {self.delivered} items were delivered: {error.message}",
            )
            return [Reject(interrupted)]
        if self.attempt <= self.retries:
            self.executors = frozenset()  # until the next attempt is sent
            self.deadline = None
            return [Resend(self.attempt + 1, self.avoid)]
        self.state = State.FAILED
        return [Reject(error)]
