"""Limits for peers that have not proved they hold the cluster key, and calm at the fd limit.

Theory of operation: a connection accepted on a listener is a *stranger* until its first
frame passes the HMAC check (``Authenticated``). A stranger has ``handshake_timeout``
seconds to get there; each listener holds at most ``max_strangers`` of them, and a new
one pushes out the oldest (a real client authenticates within a round trip of
connecting, so only a connection that sits silent is at risk). When ``accept`` fails for
lack of file descriptors the listener stops accepting for ``accept_backoff`` seconds
instead of spinning on a socket that stays readable. Log lines about strangers and
about the fd limit are rate limited: at most one per kind per ``log_interval``, with a
count of the ones left out.

``Guard`` does no I/O: the reactor feeds it events with the time and carries out the
instructions it returns.

============================  ===========================================================
event                         instructions
============================  ===========================================================
``Accepted(conn, listener)``  ``Drop`` of the listener's oldest stranger beyond the cap
``Authenticated(conn)``       none; the connection is no longer a stranger
``Closed(conn)``              none
``AcceptFailed(listener)``    ``PauseAccepting(listener)``, maybe a ``Log``
``Noted(kind, message)``      maybe a ``Log``
``Tick()``                    ``Drop`` of strangers past their deadline,
                              ``ResumeAccepting`` of listeners whose back-off ended
============================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from stratus._exceptions import ConfigurationError
from stratus.protocol.framing import FIRST_FRAME_LIMIT


class ConnectionLimits(msgspec.Struct, frozen=True):
    """What a listener tolerates from strangers, and how much the process buffers.

    Part of the frozen ``ClusterConfig`` (its ``connections`` field).
    """

    handshake_timeout: float = 5.0  # seconds a stranger has to send a signed first frame
    max_strangers: int = 64  # per listener; a new stranger pushes out the oldest
    first_frame: int = FIRST_FRAME_LIMIT  # the largest first frame, in bytes
    # Partial frames of all connections together; past this, readers wait their turn.
    max_buffered: int = 128 * 1024 * 1024
    accept_backoff: float = 0.5  # seconds without accepting after EMFILE or ENFILE
    log_interval: float = 10.0  # at most one log line per kind in this many seconds

    def __post_init__(self) -> None:
        if min(self.handshake_timeout, self.accept_backoff) <= 0 or self.log_interval < 0:
            raise ConfigurationError("connections: timeouts and intervals must be > 0")
        if self.max_strangers < 1 or self.first_frame < 64 or self.max_buffered < 1 << 20:
            raise ConfigurationError(
                "connections: max_strangers >= 1, first_frame >= 64 B, max_buffered >= 1 MiB"
            )


# --- events


@dataclass(frozen=True, slots=True)
class Accepted:
    conn: int  # the connection's file descriptor
    listener: int


@dataclass(frozen=True, slots=True)
class Authenticated:
    conn: int


@dataclass(frozen=True, slots=True)
class Closed:
    conn: int


@dataclass(frozen=True, slots=True)
class AcceptFailed:
    listener: int
    error: str


@dataclass(frozen=True, slots=True)
class Noted:
    """Something worth a log line, such as a stranger's bad frame."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Tick:
    pass


Event = Accepted | Authenticated | Closed | AcceptFailed | Noted | Tick


# --- instructions


@dataclass(frozen=True, slots=True)
class Drop:
    conn: int
    reason: str


@dataclass(frozen=True, slots=True)
class PauseAccepting:
    listener: int


@dataclass(frozen=True, slots=True)
class ResumeAccepting:
    listener: int


@dataclass(frozen=True, slots=True)
class Log:
    message: str


Instruction = Drop | PauseAccepting | ResumeAccepting | Log


class Guard:
    """The strangers of every listener, their deadlines, and listeners backing off."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        # conn -> (deadline, listener), oldest first: every deadline is accepted + timeout.
        self.strangers: dict[int, tuple[float, int]] = {}
        self.paused: dict[int, float] = {}  # listener -> when it accepts again
        self._logged: dict[str, float] = {}  # kind -> when its last line was written
        self._suppressed: dict[str, int] = {}  # kind -> lines left out since then

    def handle(self, event: Event, now: float) -> list[Instruction]:
        match event:
            case Accepted(conn, listener):
                self.strangers[conn] = (now + self.limits.handshake_timeout, listener)
                return self._enforce_cap(listener, now)
            case Authenticated(conn) | Closed(conn):
                self.strangers.pop(conn, None)
                return []
            case AcceptFailed(listener, error):
                self.paused[listener] = now + self.limits.accept_backoff
                message = f"cannot accept connections: {error}; pausing accept"
                return [PauseAccepting(listener), *self._log("accept", message, now)]
            case Noted(kind, message):
                return self._log(kind, message, now)
            case Tick():
                return self._expire(now)

    def next_wakeup(self) -> float | None:
        """When a ``Tick`` has work to do, or None while nothing is pending."""
        times = list(self.paused.values())
        if self.strangers:
            times.append(next(iter(self.strangers.values()))[0])
        return min(times, default=None)

    def _enforce_cap(self, listener: int, now: float) -> list[Instruction]:
        mine = [conn for conn, (_, lst) in self.strangers.items() if lst == listener]
        excess = mine[: max(0, len(mine) - self.limits.max_strangers)]
        out: list[Instruction] = []
        for conn in excess:
            del self.strangers[conn]
            out.append(Drop(conn, "too many unauthenticated connections"))
        if excess:
            message = f"dropped {len(excess)} unauthenticated connection(s): too many at once"
            out += self._log("strangers", message, now)
        return out

    def _expire(self, now: float) -> list[Instruction]:
        out: list[Instruction] = []
        for conn, (deadline, _) in list(self.strangers.items()):
            if deadline > now:
                break  # the rest are younger
            del self.strangers[conn]
            out.append(Drop(conn, "no signed frame before the handshake deadline"))
        if out:
            message = f"dropped {len(out)} connection(s) silent past the handshake deadline"
            out += self._log("strangers", message, now)
        for listener, until in list(self.paused.items()):
            if until <= now:
                del self.paused[listener]
                out.append(ResumeAccepting(listener))
        return out

    def _log(self, kind: str, message: str, now: float) -> list[Instruction]:
        last = self._logged.get(kind)
        if last is not None and now - last < self.limits.log_interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return []
        self._logged[kind] = now
        left_out = self._suppressed.pop(kind, 0)
        if left_out and last is not None:
            message += f" ({left_out} more like this in the last {now - last:.0f} s)"
        return [Log(message)]
