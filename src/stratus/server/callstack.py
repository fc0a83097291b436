"""The executor's stack of running invocations: how deep they nest, and their timeouts.

An executor runs one plain invocation at a time, but a function that waits for a nested
call re-enters the executor's loop, which runs other calls on top of it (``fib`` calling
``fib``: hundreds deep). Each level is ~11 Python frames and ~0.4 KB of C stack, so the
executor raises Python's recursion limit to ``RECURSION_LIMIT`` and its C stack's soft
limit to ``STACK_BYTES`` (``deepen``), and answers a call that would nest past
``MAX_NESTED`` with a ``RecursionError`` rather than start it: a limit reached inside the
platform's own code would lose the call it was starting.

A plain invocation past its timeout is stopped by SIGALRM, armed lazily (``alarm_by``): a
timer due sooner is left alone, and a finished call's timer is never cancelled; when it
rings for nothing, ``expired`` re-arms it for what still runs. Two ``setitimer`` calls per
invocation cost ~1.3 us; this makes it one per timeout period.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from stratus.protocol import errors
from stratus.protocol import messages as m
from stratus.server.metering import Running
from stratus.transport.reactor import Connection

MAX_NESTED = 2_000  # plain invocations on one executor's stack
RECURSION_LIMIT = 30_000  # MAX_NESTED levels of ~11 frames, plus room for the user's
STACK_BYTES = 64 << 20  # C stack the main thread may grow to: the limit's C recursion fits


@dataclass
class Active:
    """An invocation running here (on the stack, or an ``async def``'s task)."""

    call: m.Call
    deadline: float | None
    conn: Connection | None  # where its reply goes (None: a DAG step with no caller yet)
    metered: Running

    def failure(self, kind: errors.ErrorKind, message: str) -> m.Failure:
        call = self.call
        error = m.ErrorInfo(kind, message)
        if call.plan is not None:
            error = errors.in_step(error, call.function, call.node)
        return m.Failure(call.rid, call.attempt, error)

    def timeout_reply(self) -> m.Failure:
        call = self.call
        return self.failure("InvocationTimeout", f"{call.function} ran past its {call.timeout} s")

    def last_words(self, failure: m.Failure) -> None:
        """Send ``failure`` at once, blocking: from a signal handler, before the
        executor exits."""
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.setblocking(True)
                self.conn.sock.sendall(self.conn.codec.encode(failure))


class CallStack:
    """The plain invocations running here, innermost last."""

    def __init__(self) -> None:
        self._running: list[Active] = []
        self._alarm_at: float | None = None  # monotonic time SIGALRM is set for

    def __len__(self) -> int:
        return len(self._running)

    def __iter__(self) -> Iterator[Active]:
        return iter(self._running)

    @property
    def top(self) -> Active | None:
        return self._running[-1] if self._running else None

    @property
    def full(self) -> bool:
        """Whether one more would nest past ``MAX_NESTED``."""
        return len(self._running) >= MAX_NESTED

    def push(self, active: Active) -> None:
        self._running.append(active)
        self._alarm_by(active.deadline)

    def pop(self) -> None:
        self._running.pop()  # its alarm, if it was the soonest, rings for nothing

    def expired(self, now: float) -> list[Active]:
        """After SIGALRM: the invocations past their deadline; none, and the alarm is
        set again for those still running."""
        self._alarm_at = None
        past = [a for a in self._running if a.deadline is not None and a.deadline <= now]
        if not past:
            deadlines = [a.deadline for a in self._running if a.deadline is not None]
            self._alarm_by(min(deadlines, default=None))
        return past

    def _alarm_by(self, deadline: float | None) -> None:
        if deadline is not None and (self._alarm_at is None or deadline < self._alarm_at):
            self._alarm_at = deadline
            signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))


def too_deep(call: m.Call, executor_id: str, limit: int) -> m.ErrorInfo:
    """The reply to a call that would nest past ``MAX_NESTED``: a recursion through
    nested calls that does not end, as Python reports one."""
    error = RecursionError(
        f"{call.function}: calls nested {MAX_NESTED} deep on executor {executor_id}, its "
        "limit (a recursion through ctx.call that does not end?)"
    )
    return errors.encode_remote(error, limit=limit)


def deepen() -> None:
    """Room for invocations nested ``MAX_NESTED`` deep. The main thread's stack grows on
    demand up to RLIMIT_STACK, read when it grows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != resource.RLIM_INFINITY and soft < STACK_BYTES:
        wanted = STACK_BYTES if hard == resource.RLIM_INFINITY else min(STACK_BYTES, hard)
        resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
