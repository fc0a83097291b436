"""A private ``redis-server`` for the tests (and ``bench/store.py``): never the system's.

:func:`serve` starts one on a free loopback port with no persistence, in a directory of
its own, exports its URL in ``STRATUS_TEST_REDIS_URL`` (so that worker processes spawned
by a test find it through :func:`url`) and stops it on exit. A missing ``redis-server``
is an error, not a skip: ``make test`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

URL_VARIABLE = "STRATUS_TEST_REDIS_URL"
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def url() -> str:
    """The URL of the server :func:`serve` started (in this process or its parent)."""
    try:
        return os.environ[URL_VARIABLE]
    except KeyError:
        raise RuntimeError(f"no test Redis server: {URL_VARIABLE} is not set") from None


@contextlib.contextmanager
def serve(directory: Path, options: Sequence[str] = NO_PERSISTENCE) -> Iterator[str]:
    """Run a ``redis-server`` with ``options`` in ``directory``; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `make test` installs it (Debian)")
    for _ in range(3):  # the free port may be taken between probing and binding it
        port = _free_port()
        log = directory / f"redis-{port}.log"
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"]
        command += ["--dir", str(directory), "--logfile", str(log), *options]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            if _wait_ready(process, port):
                break
        except BaseException:
            _stop(process)
            raise
        _stop(process)
    else:
        text = log.read_text() if log.exists() else ""
        raise RuntimeError(f"redis-server did not start; its log:\n{text[-2000:]}")
    address = f"redis://127.0.0.1:{port}/0"
    previous = os.environ.get(URL_VARIABLE)
    os.environ[URL_VARIABLE] = address
    try:
        yield address
    finally:
        if previous is None:
            os.environ.pop(URL_VARIABLE, None)
        else:
            os.environ[URL_VARIABLE] = previous
        _stop(process)


def launch(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """Start a ``redis-server`` (no persistence) on ``port`` and wait until it answers;
    for tests that stop a server and start it again at the same address."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `make test` installs it (Debian)")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"]
    command += ["--dir", str(directory), "--logfile", str(directory / f"redis-{port}.log")]
    process = subprocess.Popen([*command, *NO_PERSISTENCE], stdin=subprocess.DEVNULL)
    try:
        if not _wait_ready(process, port):
            raise RuntimeError(f"redis-server did not start on port {port}")
    except BaseException:
        _stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server that :func:`launch` started."""
    _stop(process)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    return _free_port()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(process: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> bool:
    """True once the server answers PING; False if it exited (e.g. the port was taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return True
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer within {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
