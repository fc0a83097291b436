"""Executors that cannot start (issue #10.10): callers hear why at once, not at their
deadline, and an unreachable store is waited out instead of crash-looping.

Real processes throughout: an embedded cluster on a real redis-server that the test
stops and starts again at the same address.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import redis_server
import stratus
from helpers import wait_until
from stratus.protocol import keys


class _Redis:
    """A redis-server at a fixed address that the test stops and starts again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = redis_server.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = redis_server.launch(self.directory, self.port)

    def stop(self) -> None:
        if self.process is not None:
            redis_server.stop(self.process)
            self.process = None


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[_Redis]:
    server = _Redis(tmp_path)
    server.start()
    yield server
    server.stop()


def _start_failure(fn: stratus.Function) -> stratus.ExecutorStartFailed:
    """Call ``fn`` and return its ExecutorStartFailed; a hang fails the test in 20 s."""
    with pytest.raises(stratus.ExecutorStartFailed) as failed:
        fn.remote().result(timeout=20)  # its own timeout is far longer: this is fast
    return failed.value


def _starting(app: stratus.App) -> list[tuple[str, int]]:
    return [(e.executor_id, e.pid) for e in app.status().executors if e.state == "starting"]


def test_with_redis_down_executors_wait_for_it_and_callers_fail_fast(
    tmp_path: Path, redis: _Redis
) -> None:
    with stratus.connect(data_dir=tmp_path / "stratus", store=redis.url, executors=1) as app:
        ping = app.function(name="ping", retries=0, timeout=300)(lambda ctx: os.getpid())
        first = ping.remote().result(timeout=30)
        redis.stop()
        with contextlib.suppress(ProcessLookupError):  # it may have gone with its store
            os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: not any(e.state == "ready" for e in app.status().executors))

        failure = _start_failure(ping)
        assert "cannot reach its store" in str(failure) and failure.function == "ping"
        # The replacement executor retries its store: later calls fail with later
        # attempts of the same process, and no other executor was started meanwhile.
        (starting,) = _starting(app)
        attempts = 0
        deadline = time.monotonic() + 30
        while attempts < 3 and time.monotonic() < deadline:
            attempts = int(re.findall(r"attempt (\d+)", str(_start_failure(ping)))[-1])
        assert attempts >= 3
        assert _starting(app) == [starting]
        assert [e.executor_id for e in app.status().executors] == [starting[0]]

        redis.start()

        def served() -> bool:
            try:
                return ping.remote().result(timeout=20) == starting[1]
            except stratus.ExecutorStartFailed:
                return False

        assert wait_until(served, timeout=30)  # by the executor that waited


def test_an_executor_that_cannot_start_fails_waiting_calls_with_its_error(
    tmp_path: Path,
) -> None:
    with stratus.connect(data_dir=tmp_path / "stratus", executors=2) as app:
        assert app._cluster is not None
        cluster_id = app._cluster.config.cluster_id
        logs = tmp_path / "stratus" / keys.LOGS_DIR
        logs.mkdir(parents=True, exist_ok=True)
        for n in range(1, 200):  # every executor's log file is a directory: it cannot start
            (logs / keys.log_name(cluster_id, f"x{n}")).mkdir()
        f = app.function(name="f")(lambda ctx, x=0: x + 1)  # no timeout: it would hang
        g = app.function(name="g")(lambda ctx, x: x * 2)
        failure = _start_failure(f)
        assert "IsADirectoryError" in str(failure) and "before it was ready" in str(failure)
        pipeline = app.dag("pipeline", f >> g)
        with pytest.raises(stratus.ExecutorStartFailed):
            pipeline.remote(1).result(timeout=20)
