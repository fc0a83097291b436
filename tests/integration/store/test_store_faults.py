"""Store faults on a real cluster: a stopped lock holder, a full disk.

No lock without a deadline: an executor stopped (SIGSTOP) while holding the store's write
lock must not stop the cluster's writes; the coordinator kills it. A full disk is a typed
``StoreFull`` to the writer, and reads keep working.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stratus
from stratus.store.lock import flock_holders

LOCK_TIMEOUT = 1.0


def wait_for(condition: Any, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or condition}")


def stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "T"
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def app(tmp_path: Path, db: Path) -> Iterator[stratus.App]:
    store = f"sqlite:{db}?lock_timeout={LOCK_TIMEOUT}"
    with stratus.connect(data_dir=tmp_path / "stratus", executors=2, store=store) as app:
        yield app


def test_an_executor_stopped_holding_the_write_lock_is_killed_and_writes_go_on(
    app: stratus.App, db: Path
) -> None:
    lock_path = f"{db}.writer-lock"

    @app.function(retries=0)
    def hold_the_lock(ctx: Any) -> None:
        fd = os.open(lock_path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.kill(os.getpid(), signal.SIGSTOP)  # stuck, holding the lock

    app.kv.put("before", 1)
    held = hold_the_lock.remote()
    inode = os.stat(lock_path).st_ino
    holder = wait_for(
        lambda: [p for p in flock_holders(inode) if stopped(p)], what="a stopped holder"
    )[0]
    started = time.monotonic()
    app.kv.put("during", 2)  # waits the lock deadline, the holder is killed, then it writes
    assert time.monotonic() - started < 10 * LOCK_TIMEOUT
    assert app.kv.get("during") == 2
    wait_for(lambda: not alive(holder), what="the holder's death")
    with pytest.raises(stratus.ExecutorLost):
        held.result(timeout=30)

    @app.function
    def write(ctx: Any, x: int) -> int:
        ctx.kv.put("after", x)
        return x

    assert write.remote(3).result(timeout=30) == 3
    assert app.kv.get("after") == 3


def test_a_call_whose_commit_meets_a_stopped_lock_holder_gets_through(
    app: stratus.App, db: Path
) -> None:
    lock_path = f"{db}.writer-lock"

    @app.function
    def write(ctx: Any, x: int) -> int:
        ctx.kv.incr("writes", x)
        return x

    @app.function(retries=0)
    def hold_the_lock(ctx: Any) -> None:
        fd = os.open(lock_path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.kill(os.getpid(), signal.SIGSTOP)

    assert write.remote(1).result(timeout=30) == 1
    held = hold_the_lock.remote()
    inode = os.stat(lock_path).st_ino
    holder = wait_for(
        lambda: [p for p in flock_holders(inode) if stopped(p)], what="a stopped holder"
    )[0]
    # Its commit times out on the lock; its executor reports the holder, which is killed;
    # the call is retried (nothing was written) and gets through, applied once.
    assert write.remote(2).result(timeout=30) == 2
    wait_for(lambda: not alive(holder), what="the holder's death")
    assert app.kv.get("writes") == 3
    with pytest.raises(stratus.ExecutorLost):
        held.result(timeout=30)


def test_a_lock_held_by_another_program_is_a_typed_error_and_the_cluster_keeps_serving(
    app: stratus.App, db: Path
) -> None:
    app.kv.put("k", 1)  # the store exists

    @app.function
    def read(ctx: Any) -> Any:
        return ctx.kv.get("k")

    assert read.remote().result(timeout=30) == 1  # warm: opening a store writes its schema
    fd = os.open(f"{db}.writer-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # not an executor: the coordinator may not kill us
        with pytest.raises(stratus.StoreUnavailable, match="write lock"):
            app.kv.put("k", 2)
        assert read.remote().result(timeout=30) == 1  # calls and reads go on
        assert app.kv.get("k") == 1
    finally:
        os.close(fd)
    app.kv.put("k", 3)
    assert app.kv.get("k") == 3


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root), unmounted at the end."""
    path.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def test_a_full_disk_is_store_full_and_reads_keep_working(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small") as small:
        store = f"sqlite:{small}/store.db"
        with stratus.connect(data_dir=tmp_path / "stratus", executors=1, store=store) as app:
            app.kv.put("kept", "yes")

            @app.function
            def fill(ctx: Any, i: int) -> None:
                ctx.kv.put(f"blob/{i}", os.urandom(256 * 1024))

            with pytest.raises(stratus.StoreFull):  # from app.kv
                for i in range(100):
                    app.kv.put(f"big/{i}", os.urandom(256 * 1024))
            with pytest.raises(stratus.StoreFull):  # from a function's commit
                for i in range(100):
                    fill.remote(i).result(timeout=30)
            assert app.kv.get("kept") == "yes"  # reads keep working

            @app.function
            def read(ctx: Any) -> Any:
                return ctx.kv.get("kept")

            assert read.remote().result(timeout=30) == "yes"


def test_a_redis_store_out_of_memory_is_store_full_and_reads_keep_working(
    redis_url: str,
) -> None:
    import redis

    from stratus.kv.values import merge_encoded
    from stratus.store.redis_store import RedisStore

    admin = redis.Redis.from_url(redis_url)
    with RedisStore(redis_url, merge_encoded, namespace="full-test") as store:
        store.put("kept", b"yes")
        admin.config_set("maxmemory", 1)  # noeviction (the default): writes are refused
        try:
            with pytest.raises(stratus.StoreFull, match="full"):
                store.put("more", b"x")
            assert store.get("kept").value == b"yes"
        finally:
            admin.config_set("maxmemory", 0)
        store.put("more", b"x")  # room again
    admin.close()
