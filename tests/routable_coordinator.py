"""A ``stratus up`` that takes node agents, on one machine: its store is a Redis on this
machine's routable address (the coordinator refuses nodes when the store is on loopback),
behind a random password kept off every command line."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import free_port, wait_until
from stratus.transport.addresses import routable_host

STRATUS = [sys.executable, "-m", "stratus.cli"]


def refusal() -> str:
    """Why this machine cannot run one, or ""."""
    if shutil.which("redis-server") is None:
        return "no redis-server"
    if routable_host().startswith("127."):
        return "no routable address: the coordinator refuses nodes with a loopback store"
    return ""


def stop(process: subprocess.Popen[str], timeout: float = 60) -> int | None:
    """SIGTERM, wait ``timeout``, SIGKILL: its exit status, None if it had to be killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return None


@contextlib.contextmanager
def serve(work: Path) -> Iterator[tuple[str, Path]]:
    """Redis and ``stratus up --executors 1`` in ``work``: yields (address, data dir)."""
    host, password, redis_port = routable_host(), secrets.token_hex(16), free_port()
    processes: list[subprocess.Popen[str]] = []
    try:
        (work / "redis.conf").write_text(f"requirepass {password}\n")
        redis = [shutil.which("redis-server") or "", str(work / "redis.conf")]
        redis += ["--port", str(redis_port), "--bind", host, "--save", "", "--appendonly", "no"]
        redis += ["--dir", str(work)]
        processes.append(subprocess.Popen(redis, stdout=subprocess.DEVNULL, text=True))
        data_dir, port = work / "coord", free_port()
        address = f"tcp://127.0.0.1:{port}"
        up = [*STRATUS, "up", "--listen", address, "--data-dir", str(data_dir)]
        up += ["--executors", "1", "--store", f"redis://:{password}@{host}:{redis_port}/0"]
        with open(work / "up.log", "w") as log:
            server = subprocess.Popen(up, stdout=log, stderr=subprocess.STDOUT, text=True)
        processes.append(server)
        started = lambda: (data_dir / "server.json").exists() or server.poll() is not None  # noqa: E731
        assert wait_until(started, timeout=60) and server.poll() is None, "stratus up failed"
        yield address, data_dir
    finally:
        for process in reversed(processes):
            stop(process)


@contextlib.contextmanager
def for_test(tmp_path_factory: pytest.TempPathFactory, what: str) -> Iterator[tuple[str, Path]]:
    """``serve`` for a test module's fixture (in a fresh directory named after ``what``);
    the test is skipped, with the reason, on a machine that cannot run one."""
    reason = refusal()
    if reason:
        pytest.skip(f"{what}: {reason}")
    with serve(tmp_path_factory.mktemp(what.replace(" ", "-").replace("'", ""))) as served:
        yield served
