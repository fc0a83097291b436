"""The write lock of an embedded store, taken with a deadline.

Theory of operation: the processes sharing a SQLite file or an LMDB environment queue for
its writes on an exclusive ``flock`` of a lock file. A write holds it for milliseconds, so a
process that cannot get it within ``timeout`` seconds is facing a stuck holder (stopped by
SIGSTOP, paused in a debugger, swapped out): it gives up with :class:`StoreLockTimeout`,
which names the holders' process ids, instead of waiting forever. Whoever owns those
processes (the coordinator owns its executors) may kill them: the kernel releases a dead
process's ``flock`` at once.

    try           lock                 next
    ------------  -------------------  -------------------------------------------------
    first         free                 held
    first         taken                poll after a pause (``backoff.LOCK``: <= 2 ms)
    later         free                 held
    later         taken, time left     poll again
    later         taken, deadline      StoreLockTimeout(holders): nothing was written

Polling costs a little latency under contention (a freed lock is seen within 2 ms) where a
blocking ``flock`` would be woken at once; but a blocking ``flock`` cannot time out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from stratus import backoff
from stratus._exceptions import StoreLockTimeout

DEFAULT_LOCK_TIMEOUT = 10.0
"""Seconds a write waits for another process's write before :class:`StoreLockTimeout`."""


class WriterLock:
    """An exclusive ``flock`` on ``path`` (created if missing), taken within ``timeout``."""

    def __init__(self, path: str, timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block (released by the kernel if this process dies)."""
        self.acquire()
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreLockTimeout` after ``timeout`` seconds."""
        if self._try():
            return
        start = time.monotonic()
        lost = 0
        while True:
            lost += 1
            elapsed = time.monotonic() - start
            if elapsed >= self.timeout:
                raise StoreLockTimeout(self.path, self.timeout, self.holders())
            pause = backoff.LOCK.pause(lost, elapsed) or 0.0
            time.sleep(min(pause, self.timeout - elapsed))
            if self._try():
                return

    def _try(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def holders(self) -> list[int]:
        """The ids of the processes holding the lock, from ``/proc/locks`` (Linux)."""
        return flock_holders(os.fstat(self.fd).st_ino)

    def close(self) -> None:
        os.close(self.fd)


def flock_holders(inode: int) -> list[int]:
    """The processes holding a ``flock`` on the file of ``inode`` (empty if unknown)."""
    try:
        with open("/proc/locks") as table:
            lines = table.readlines()
    except OSError:
        return []
    holders: list[int] = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:56789 0 EOF"; waiters have "->" after "1:".
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5].rsplit(":", 1)[-1] == str(inode):
            holders.append(int(fields[4]))
    return sorted(set(holders))
