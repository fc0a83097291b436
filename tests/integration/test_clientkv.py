"""The coordinator's ``app.kv`` server (``ClientKV``) on a real SQLite file: answered off
the caller's thread, stuck lock holders handed to ``on_stuck``, expired records purged."""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stratus.kv.values import codec_for
from stratus.protocol import keys, serialization
from stratus.protocol import messages as m
from stratus.server.clientkv import ClientKV
from stratus.store import records

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""

VALUES = codec_for(b"k" * 32)


def reply_of(kv: ClientKV, timeout: float = 30.0) -> Any:
    """Wait for the worker's next reply on its pipe, as the coordinator's loop does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([kv.fileno()], [], [], deadline - time.monotonic())
        ready = kv.replies()
        if ready:
            [(conn, reply)] = ready
            assert conn == "conn"
            return reply
    raise AssertionError("no reply")


@contextlib.contextmanager
def holding(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding the store's write lock until it is killed or the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "store.db.writer-lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        try:
            yield proc
        finally:
            proc.kill()
            proc.wait(timeout=30)


def put(kv: ClientKV, key: str, value: Any) -> None:
    kv.submit("conn", m.KvWrite(1, "put", key, serialization.dumps(value, limit=1 << 20)))


def test_a_stuck_holder_is_handed_to_on_stuck_and_the_write_tried_again(
    tmp_path: Path,
) -> None:
    stuck: list[list[int]] = []
    killed: list[subprocess.Popen[str]] = []

    def on_stuck(pids: list[int]) -> bool:
        stuck.append(pids)
        killed[0].kill()  # the coordinator kills its executors like this
        killed[0].wait(timeout=30)
        return True

    kv = ClientKV(f"sqlite:{tmp_path / 'store.db'}?lock_timeout=0.3", VALUES, on_stuck=on_stuck)
    try:
        with holding(tmp_path) as holder:
            killed.append(holder)
            put(kv, "k", 1)
            assert isinstance(reply_of(kv), m.KvWritten)
            assert stuck == [[holder.pid]]
    finally:
        kv.close()


def test_a_holder_it_does_not_own_is_a_typed_failure_and_reads_still_answer(
    tmp_path: Path,
) -> None:
    kv = ClientKV(
        f"sqlite:{tmp_path / 'store.db'}?lock_timeout=0.3", VALUES, on_stuck=lambda p: False
    )
    try:
        with holding(tmp_path) as holder:
            put(kv, "k", 1)
            failed = reply_of(kv)
            assert isinstance(failed, m.RequestFailed)
            assert failed.error.kind == "StoreLockTimeout"  # a StoreUnavailable
            assert str(holder.pid) in failed.error.message
            kv.submit("conn", m.KvRead(2, "k"))
            assert reply_of(kv).version == 0
    finally:
        kv.close()


def test_expired_records_are_purged_and_fresh_ones_kept(tmp_path: Path) -> None:
    kv = ClientKV(f"sqlite:{tmp_path / 'store.db'}", VALUES, retention=60.0)
    try:
        now = time.time_ns() // 1_000_000
        old, new = keys.invocation_record("old"), keys.invocation_record("new")
        kv.store.put(old, records.InvocationRecord(1, now - 120_000, b"").encode())
        kv.store.put(new, records.InvocationRecord(1, now, b"").encode())
        kv.store.put("user", b"x")  # holds the last version
        kv.collect_records()
        deadline = time.monotonic() + 30
        while kv.store.get(old).version and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kv.store.get(old).version == 0  # purged: not even a tombstone
        assert records.read(kv.store, new) is not None
    finally:
        kv.close()
