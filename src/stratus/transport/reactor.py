"""A small poll(2) loop shared by clients, executors and the coordinator.

Theory of operation: the reactor owns sockets (listeners and framed connections) and
timers. ``run_once(timeout)`` waits for readiness, turns bytes into verified messages
queued on ``ready``, dispatches them to each connection's handler, runs due timers and
flushes what handlers wrote. Dispatch pops one message at a time, so a handler may call
``run_once`` again (an executor waiting for a nested call keeps serving), and the nested
loop continues where the outer one stopped.

The reactor has no thread of its own: whoever waits drives it, so a reply is read by the
thread that wants it, without a hand-off between threads. ``wake()`` is the only method
safe to call from another thread.

Hostile peers (docs/reliability.md): a connection accepted on a listener is a stranger
until its first frame passes the HMAC check. The ``Guard`` (transport/guard.py) gives
strangers a handshake deadline and a cap per listener, and pauses a listener that hits
the fd limit; a stranger's reads stop at its first frame (at most 64 KiB). Partial frames
of all connections together are held under ``ConnectionLimits.max_buffered``: past it, a
connection whose frame grows waits (its socket is not read) while one connection at a
time, the holder, may finish its frame, so the waiting always ends.
"""

from __future__ import annotations

import errno
import functools
import heapq
import itertools
import logging
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any

from stratus._exceptions import ConnectionFailed, ProtocolError
from stratus.protocol.framing import BadSignature, Codec, FrameReader
from stratus.transport import addresses
from stratus.transport import guard as gd

log = logging.getLogger("stratus.transport")

_READ = select.POLLIN | select.POLLPRI
_ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL
_RECV = 1 << 18
_RECENT = 0.005  # a reactor that saw I/O this recently spins before it sleeps
# What clients and executors spin for (``Reactor(spin=SPIN)``): about a round trip
# between two awake processes, far less than a wake-up on the other core.
SPIN = 0.0002

MessageHandler = Callable[["Connection", Any], None]
CloseHandler = Callable[["Connection"], None]


class Connection:
    """One framed, signed, non-blocking stream to a peer."""

    def __init__(self, reactor: Reactor, sock: socket.socket, codec: Codec, *, name: str) -> None:
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.codec = codec
        self.name = name
        self.peer_id = ""  # set by the handshake
        self.closed = False
        self.rejected = 0  # frames dropped for a bad signature or schema
        self.verified = False  # a frame signed with the cluster key has arrived
        self.stranger = False  # accepted on a listener and not verified yet: guarded
        self.on_message: MessageHandler = _ignore
        self.on_close: CloseHandler = _ignore_close
        self._reader = FrameReader(codec.max_frame, first_frame=reactor.limits.first_frame)
        self._counted = 0  # bytes of a partial frame in the reactor's total
        self._paused = False  # not read until the reactor's buffer budget allows
        self._out = bytearray()
        self._want_write = False

    def __repr__(self) -> str:
        return f"<Connection {self.name} peer={self.peer_id or '?'}>"

    def send(self, message: Any, *, flush: bool = True) -> None:
        """Queue a message; with ``flush`` write it now if the socket takes it."""
        if self.closed:
            return
        self._out += self.codec.encode(message)
        self.reactor._active_at = time.perf_counter()
        if flush:
            self.flush()
        else:
            self.reactor._dirty.add(self)

    def flush(self) -> None:
        out = self._out
        while out and not self.closed:
            try:
                sent = self.sock.send(out)
            except BlockingIOError:
                break
            except OSError:
                self.close()
                return
            del out[:sent]
        want = bool(out) and not self.closed
        if want != self._want_write:
            self._want_write = want
            self.reactor._modify(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reactor._forget(self)
        with suppress(OSError):
            self.sock.close()
        self.on_close(self)

    def _on_readable(self) -> None:
        reader = self._reader
        # Before its first frame is verified, a peer's bytes are read no further than that
        # frame can reach: a stranger never has more than first_frame bytes buffered.
        size = _RECV if self.verified else max(1, min(_RECV, reader.limit + 4 - reader.buffered))
        try:
            n = self.sock.recv_into(self.reactor._rbuf, size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if not n:
            self.close()
            return
        try:
            frames = reader.feed(self.reactor._rview[:n])
        except ProtocolError as e:
            self._complain(f"closing {self!r}: {e}")
            self.close()
            return
        self.reactor._account(self)
        for frame in frames:
            try:
                message = self.codec.decode(frame)
            except BadSignature as e:
                self.rejected += 1
                if not self.verified:  # a stranger: hang up
                    self._complain(f"closing {self!r}: {e}")
                    self.close()
                    return
                log.warning("dropped a frame from %r: %s", self, e)
                continue
            except ProtocolError as e:  # signed by a peer, but not a message we take
                self._verify()
                self.rejected += 1
                log.warning("dropped a frame from %r: %s", self, e)
                continue
            if not self.verified:
                self._verify()
            self.reactor.ready.append((self, message))

    def _verify(self) -> None:
        self.verified = True
        if self.stranger:
            self.stranger = False
            self.reactor._guard_event(gd.Authenticated(self.fd))

    def _complain(self, message: str) -> None:
        """Log a refusal: plainly for a peer with the key, rate limited for a stranger."""
        if self.verified:
            log.warning("%s", message)
        else:
            self.reactor._guard_event(gd.Noted("stranger", message))


class Reactor:
    """poll(2) over listeners and connections, a timer heap and a wake-up pipe.

    ``spin`` seconds of busy polling precede a blocking wait while the reactor has been
    active recently: on a 2-core VM a process woken on the other core pays 50-90 us,
    several times the cost of a whole request/reply between two processes that are
    awake, so a brief spin after activity is the cheapest way to answer fast. An idle
    reactor never spins.
    """

    def __init__(self, *, spin: float = 0.0, limits: gd.ConnectionLimits | None = None) -> None:
        self.spin = spin
        self.limits = limits if limits is not None else gd.ConnectionLimits()
        self.guard = gd.Guard(self.limits)
        self._guard_due: float | None = None  # when the guard's timer fires next
        self._accept_paused: set[int] = set()  # listeners backing off after EMFILE
        self._buffered = 0  # bytes of partial frames, all connections together
        self._holder: Connection | None = None  # may read past the budget: see the top
        self._waiting: deque[Connection] = deque()  # paused until the budget allows
        # One receive buffer for all connections: a fresh 256 KiB bytes per recv() costs
        # an mmap and munmap each time.
        self._rbuf = bytearray(_RECV)
        self._rview = memoryview(self._rbuf)
        self._active_at = 0.0
        self._poll = select.poll()
        self._conns: dict[int, Connection] = {}
        self._listeners: dict[int, tuple[socket.socket, Callable[[socket.socket], None]]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._dirty: set[Connection] = set()
        self.ready: deque[tuple[Connection, Any]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll.register(self._wake_r, _READ)
        self._polling = False
        self._watched_fds: dict[int, Callable[[], None]] = {}
        self._readable: dict[int, Callable[[], None]] = {}

    # --- sockets

    def add_connection(self, sock: socket.socket, codec: Codec, *, name: str) -> Connection:
        conn = Connection(self, sock, codec, name=name)
        self._conns[conn.fd] = conn
        self._poll.register(conn.fd, _READ)
        return conn

    def connect(self, address: str, codec: Codec, hello: Any, *, timeout: float) -> Connection:
        """Connect and send ``hello``; the reply arrives through the loop like any other."""
        conn = self.add_connection(addresses.connect(address, timeout), codec, name=address)
        conn.send(hello)
        return conn

    def connect_and_wait(
        self, address: str, codec: Codec, hello: Any, *, timeout: float
    ) -> tuple[Connection, Any]:
        """Connect, send ``hello`` and block for the peer's first reply, outside the loop:
        a wrong key or a dead peer is reported here rather than as a later hang."""
        sock, reply, rest = handshake(address, codec, hello, timeout=timeout)
        return self.adopt(sock, codec, address, rest), reply

    def adopt(self, sock: socket.socket, codec: Codec, name: str, rest: list[Any]) -> Connection:
        """Add a socket that passed ``handshake`` (``rest``: what came after its reply)."""
        conn = self.add_connection(sock, codec, name=name)
        conn.verified = True
        self.ready.extend((conn, message) for message in rest)
        return conn

    def listen(self, address: str, on_accept: Callable[[socket.socket], None]) -> str:
        """Listen on ``address``; ``on_accept`` gets each new (tuned) socket."""
        sock, bound = addresses.listen(address)
        self._listeners[sock.fileno()] = (sock, on_accept)
        self._poll.register(sock.fileno(), _READ)
        return bound

    def watch_fd(self, fd: int, on_eof: Callable[[], None]) -> None:
        """Call ``on_eof`` when ``fd`` (a pipe nobody writes to) reaches end of file."""
        self._watched_fds[fd] = on_eof
        self._poll.register(fd, _READ)

    def watch_readable(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable`` whenever ``fd`` (someone else's socket) has data; the
        callback must consume it, or ``unwatch`` the fd."""
        self._readable[fd] = on_readable
        self._poll.register(fd, _READ)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (from ``watch_readable``)."""
        if self._readable.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def _modify(self, conn: Connection) -> None:
        if conn.fd in self._conns:
            mask = (0 if conn._paused else _READ) | (select.POLLOUT if conn._want_write else 0)
            self._poll.modify(conn.fd, mask)
            if self._polling:  # another thread is in poll(): make it see the new mask
                self.wake()

    def _forget(self, conn: Connection) -> None:
        if self._conns.pop(conn.fd, None) is not None:
            self._poll.unregister(conn.fd)
        self._dirty.discard(conn)
        if conn.stranger:
            conn.stranger = False
            self._guard_event(gd.Closed(conn.fd))
        if conn._paused:
            conn._paused = False
            self._waiting.remove(conn)
        self._buffered -= conn._counted
        conn._counted = 0
        if conn is self._holder:
            self._holder = None
        self._resume_readers()

    # --- the buffer budget

    def _account(self, conn: Connection) -> None:
        """Count ``conn``'s partial frame in the total; pause it if the total is too big."""
        buffered = conn._reader.buffered
        delta = buffered - conn._counted
        if not delta:
            return
        conn._counted = buffered
        self._buffered += delta
        if delta < 0:  # a frame completed: its bytes went to the handlers
            if conn is self._holder:
                self._holder = None
            self._resume_readers()
        elif (
            self._buffered > self.limits.max_buffered
            and conn is not self._holder
            and not conn._paused  # a paused one read on POLLHUP: it already waits
        ):
            if self._holder is None:
                self._holder = conn  # one reader may always finish its frame: no deadlock
            else:
                conn._paused = True
                self._waiting.append(conn)
                self._modify(conn)

    def _resume_readers(self) -> None:
        while self._waiting and (
            self._buffered <= self.limits.max_buffered or self._holder is None
        ):
            conn = self._waiting.popleft()
            if self._buffered > self.limits.max_buffered:
                self._holder = conn
            conn._paused = False
            self._modify(conn)

    # --- the guard against strangers

    def _guard_event(self, event: gd.Event) -> None:
        for instruction in self.guard.handle(event, time.monotonic()):
            match instruction:
                case gd.Drop(fd, reason):
                    conn = self._conns.get(fd)
                    if conn is not None and conn.stranger:
                        log.debug("closing %r: %s", conn, reason)
                        conn.close()
                case gd.PauseAccepting(fd):
                    if fd in self._listeners and fd not in self._accept_paused:
                        self._accept_paused.add(fd)
                        self._poll.unregister(fd)
                case gd.ResumeAccepting(fd):
                    if fd in self._accept_paused:
                        self._accept_paused.discard(fd)
                        self._poll.register(fd, _READ)
                case gd.Log(message):
                    log.warning("%s", message)
        due = self.guard.next_wakeup()
        if due is not None and (self._guard_due is None or due < self._guard_due):
            self._guard_due = due
            tick: Callable[[], None] = functools.partial(self._guard_tick, due)
            heapq.heappush(self._timers, (due, next(self._seq), tick))

    def _guard_tick(self, due: float) -> None:
        if due != self._guard_due:
            return  # superseded by an earlier timer, which has re-armed the guard
        self._guard_due = None
        self._guard_event(gd.Tick())

    # --- timers and wake-ups

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), callback))

    def wake(self) -> None:
        """Interrupt a ``run_once`` blocked in poll. Safe from any thread."""
        with suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    # --- the loop

    def run_once(
        self, timeout: float | None, lock: AbstractContextManager[Any] | None = None
    ) -> None:
        """Wait up to ``timeout`` seconds (None: no limit) for I/O, then handle it.

        With ``lock``, everything but the wait in poll(2) happens while holding it, so
        other threads may send while this one waits.
        """
        guard = lock if lock is not None else nullcontext()
        with guard:
            self.flush()
            if self.ready:
                timeout = 0.0
            if self._timers:
                delay = max(0.0, self._timers[0][0] - time.monotonic())
                timeout = delay if timeout is None else min(timeout, delay)
            self._polling = True
        try:
            events = self._wait(timeout)
        except InterruptedError:
            events = []
        finally:
            self._polling = False
        with guard:
            for fd, mask in events:
                conn = self._conns.get(fd)
                if conn is not None:
                    if mask & select.POLLOUT:
                        conn.flush()
                    if mask & (_READ | _ERR) and not conn.closed:
                        conn._on_readable()
                elif fd == self._wake_r:
                    self._drain_wake()
                elif fd in self._listeners:
                    self._accept(fd)
                elif fd in self._readable:
                    self._readable[fd]()
                elif fd in self._watched_fds:
                    self._check_eof(fd)
            self.dispatch()
            self._run_timers()
            self.flush()

    def _wait(self, timeout: float | None) -> list[tuple[int, int]]:
        poll = self._poll.poll
        if timeout == 0:
            return poll(0)
        now = time.perf_counter()
        if self.spin and now - self._active_at < _RECENT:
            until = now + (self.spin if timeout is None else min(self.spin, timeout))
            while True:
                events = poll(0)
                if events:
                    self._active_at = time.perf_counter()
                    return events
                now = time.perf_counter()
                if now >= until:
                    break
                os.sched_yield()  # a peer waiting for this core runs now, not after the spin
            if timeout is not None:
                timeout = max(0.0, timeout - self.spin)
        events = poll(-1 if timeout is None else int(timeout * 1000 + 0.999))
        if events:
            self._active_at = time.perf_counter()
        return events

    def dispatch(self) -> None:
        ready = self.ready
        while ready:
            conn, message = ready.popleft()
            if not conn.closed:
                conn.on_message(conn, message)

    def flush(self) -> None:
        while self._dirty:
            self._dirty.pop().flush()

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            callback()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _check_eof(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._poll.unregister(fd)
            self._watched_fds.pop(fd)()

    def _accept(self, fd: int) -> None:
        sock, on_accept = self._listeners[fd]
        while fd not in self._accept_paused:
            try:
                new, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # Out of descriptors or memory, the listener stays readable: back off
                # rather than spin on it (and log at most once per interval).
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._guard_event(gd.AcceptFailed(fd, str(e)))
                return
            addresses.tune(new)
            on_accept(new)
            conn = self._conns.get(new.fileno())
            if conn is not None and conn.sock is new and not conn.verified:
                conn.stranger = True
                self._guard_event(gd.Accepted(conn.fd, fd))

    def close(self) -> None:
        if self._wake_r < 0:
            return
        for conn in list(self._conns.values()):
            conn.on_close = _ignore_close
            conn.close()
        for fd, (sock, _) in list(self._listeners.items()):
            if fd not in self._accept_paused:
                self._poll.unregister(fd)
            sock.close()
        self._accept_paused.clear()
        self._listeners.clear()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1


def _ignore(conn: Connection, message: Any) -> None:
    log.debug("no handler for %r from %r", message, conn)


def _ignore_close(conn: Connection) -> None:
    pass


def handshake(
    address: str, codec: Codec, hello: Any, *, timeout: float
) -> tuple[socket.socket, Any, list[Any]]:
    """Connect, send ``hello`` and block for the first reply, touching no reactor (so
    another thread may do it while one polls): the tuned socket, the reply, and any
    messages that came with it. ``ConnectionFailed`` when the peer is away or hangs up."""
    sock = addresses.connect(address, timeout)
    reader = FrameReader(codec.max_frame)
    try:
        sock.settimeout(timeout)
        sock.sendall(codec.encode(hello))
        frames: list[memoryview] = []
        while not frames:
            data = sock.recv(_RECV)
            if not data:
                raise ConnectionFailed(f"{address} hung up: does it have our cluster key?")
            frames = reader.feed(data)
        reply, *rest = (codec.decode(frame) for frame in frames)
    except (OSError, ProtocolError) as e:
        sock.close()
        raise ConnectionFailed(f"no handshake with {address}: {e}") from e
    addresses.tune(sock)
    return sock, reply, rest
