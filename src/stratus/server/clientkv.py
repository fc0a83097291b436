"""``app.kv`` served by the coordinator: single reads and writes from outside functions.

Theory of operation
-------------------
Each request is its own atomic operation on the store (a function's ``ctx.kv`` is where
multi-key transactions live). The store is worked on by one thread of its own, never by
the coordinator's loop: a write that waits for a lock, a slow disk or a Redis server must
not stop the cluster from scheduling and answering. The loop hands requests over with
:meth:`ClientKV.submit`; the worker writes a byte on a pipe when replies are ready, and
the loop, which watches the pipe (:meth:`ClientKV.fileno`), sends them
(:meth:`ClientKV.replies`).

    request outcome                                reply
    --------------------------------------------   -----------------------------------------
    done                                           KvValue / KvWritten / KvKeys
    bad input, a full disk, a store error          RequestFailed with the error's kind
    the write lock stayed taken (StoreLockTimeout) ``on_stuck(holders)`` kills the holders it
                                                   owns (the coordinator's executors); if it
                                                   did, the request is tried once more

Every write waits at most the store's lock deadline, so every request is answered.
Another thread purges expired invocation records (``collect_records``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from stratus import _exceptions as exc
from stratus.kv import as_lattice
from stratus.kv.counters import CounterWriters
from stratus.kv.open import open_store
from stratus.lattice import Counter, HybridClock, Lattice, LatticeCodec
from stratus.protocol import errors, keys, serialization
from stratus.protocol import messages as m
from stratus.store import records

log = logging.getLogger("stratus.coordinator")

_LIMIT = serialization.DEFAULT_MAX_PAYLOAD

Request = m.KvRead | m.KvWrite | m.KvList


class ClientKV:
    """``app.kv`` requests, answered by a worker thread (see the module docstring).

    ``on_stuck(pids)`` is called (on the worker thread) with the processes holding the
    store's write lock past its deadline; it kills those it owns and says whether it did.
    """

    def __init__(
        self,
        url: str,
        values: LatticeCodec,
        *,
        on_stuck: Callable[[list[int]], bool] | None = None,
        retention: float = records.DEFAULT_RETENTION,
    ) -> None:
        # Opened at once: a store that cannot be reached stops the cluster at its start.
        self.values = values
        self.store = open_store(url, values)
        self._clock = HybridClock("coordinator")
        self._counters = CounterWriters("coordinator")
        self._on_stuck = on_stuck
        self.retention = retention
        self._requests: queue.SimpleQueue[tuple[Any, Request] | None] = queue.SimpleQueue()
        self._done: deque[tuple[Any, Any]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._worker = threading.Thread(target=self._work, name="stratus-clientkv", daemon=True)
        self._worker.start()
        self._collector: threading.Thread | None = None

    # ------------------------------------------------------------------ the loop's side

    def fileno(self) -> int:
        """Readable when replies are ready."""
        return self._wake_r

    def submit(self, conn: Any, request: Request) -> None:
        """Queue ``request``; its reply comes out of :meth:`replies` with ``conn``."""
        self._requests.put((conn, request))

    def collect_records(self) -> None:
        """Purge the invocation records older than ``retention``, on a thread of its own
        (a pass lists every record: ``app.kv`` requests must not wait for it); nothing if
        the previous pass is still running."""
        if self._collector is None or not self._collector.is_alive():
            self._collector = threading.Thread(
                target=self._collect, name="stratus-records", daemon=True
            )
            self._collector.start()

    def replies(self) -> list[tuple[Any, Any]]:
        """The ``(conn, reply)`` pairs ready, without blocking."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        ready: list[tuple[Any, Any]] = []
        while self._done:
            ready.append(self._done.popleft())
        return ready

    def handle(self, request: Request) -> Any:
        """The reply to one request, on the caller's thread; errors become
        ``RequestFailed``."""
        try:
            try:
                return self._handle(request)
            except exc.StoreLockTimeout as e:
                if self._on_stuck is None or not self._on_stuck(e.holders):
                    raise
                log.warning("killed the stuck holders of the store's write lock: %s", e.holders)
                return self._handle(request)  # their lock died with them
        except exc.StratusError as e:
            return m.RequestFailed(request.rid, errors.encode(e))

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        while (item := self._requests.get()) is not None:
            conn, request = item
            try:
                reply = self.handle(request)
            except Exception as e:  # a bug must not kill the worker: answer, log
                log.exception("app.kv request %r failed", request)
                reply = m.RequestFailed(request.rid, m.ErrorInfo("StratusError", repr(e)))
            self._done.append((conn, reply))
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    def _collect(self) -> None:
        now_ms = time.time_ns() // 1_000_000
        try:
            deleted = records.collect(self.store, keys.INVOCATIONS, now_ms, self.retention)
        except exc.StratusError as e:
            log.warning("collecting invocation records failed: %s", e)
            return
        if deleted:
            log.info("deleted %d expired invocation records", deleted)

    def _handle(self, request: Request) -> Any:
        match request:
            case m.KvRead(rid, key, lattice):
                entry = self.store.get(key)
                stored = None if entry.value is None else self.values.decode(entry.value)
                value = stored if lattice or stored is None else stored.value
                return m.KvValue(rid, serialization.dumps(value, limit=_LIMIT), entry.version)
            case m.KvWrite(rid, "delete", key):
                return m.KvWritten(rid, self.store.delete(key))
            case m.KvWrite(rid, "incr", key, value):
                return m.KvWritten(rid, self._incr(key, serialization.loads(value, what="value")))
            case m.KvWrite(rid, op, key, value):
                given = serialization.loads(value, what="value")
                if op == "put" and isinstance(given, Lattice):
                    return m.KvWritten(rid, self.store.put(key, self.values.encode(given)))
                merged = as_lattice(given, self._clock)
                return m.KvWritten(rid, self.store.merge(key, self.values.encode(merged)))
            case m.KvList(rid, prefix):
                listed = self.store.keys(prefix)
                return m.KvKeys(rid, [k for k in listed if not keys.is_reserved(k)])
        raise exc.ProtocolError(f"unexpected kv request {request!r}")

    def _incr(self, key: str, n: Any) -> int:
        if not isinstance(n, int) or isinstance(n, bool):
            raise exc.ConfigurationError(f"incr adds an int, not {type(n).__name__}")
        writer = self._counters.lease()
        delta = Counter.delta(writer, n, base=self._counters.base(writer, key))
        try:
            version = self.store.merge(key, self.values.encode(delta))
        except (exc.StoreLockTimeout, exc.StoreFull):
            self._counters.release(writer, {}, False)  # refused before writing anything
            raise
        except BaseException:
            self._counters.release(writer, {}, None)  # it may have been written
            raise
        self._counters.release(writer, {key: delta}, True)
        return version

    def close(self) -> None:
        self._requests.put(None)
        self._worker.join(timeout=5.0)
        if self._collector is not None:
            self._collector.join(timeout=5.0)
        self.store.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
