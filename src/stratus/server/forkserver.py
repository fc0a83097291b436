"""The fork server: a pre-imported process that forks executors in milliseconds.

The coordinator forks it once, before it starts any thread, over a private socket pair.
Because it has already imported stratus, its dependencies and the user's ``preload``
modules, a forked executor starts with all of them loaded. A spawn request may name more
modules (a function's ``preload``): the fork server imports them first and keeps them,
so they cost once and every later executor starts with them too. It reports each
executor's pid, and each exit (from SIGCHLD), back to the coordinator.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import select
import signal
import socket
import sys

from stratus.config import ClusterConfig
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec, FrameReader
from stratus.server import lifeline

log = logging.getLogger("stratus.forkserver")


def start(config: ClusterConfig) -> tuple[int, socket.socket]:
    """Fork the fork server; return its pid and the coordinator's end of the pair."""
    ours, theirs = socket.socketpair()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        ours.close()
        code = 1
        try:
            lifeline.die_with_parent(parent)
            _serve(config, theirs)
            code = 0
        except BaseException:
            log.exception("fork server failed")
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


def _serve(config: ClusterConfig, sock: socket.socket) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _preload(config.preload)
    import stratus.server.executor  # noqa: F401  (warm: every executor needs it)

    # What is loaded now is shared by every executor: keep the collector away from it,
    # so collections stay cheap and do not copy shared pages on write.
    gc.freeze()

    codec = Codec(config.key, m.ToForkServer, max_frame=1 << 16)
    reader = FrameReader(codec.max_frame)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, str] = {}
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _ in events:
            if fd == wake_r:
                _drain(wake_r)
                for pid, status in _reap():
                    executor_id = children.pop(pid, "")
                    sock.sendall(codec.encode(m.ExecutorExited(executor_id, pid, status)))
                continue
            data = sock.recv(1 << 16)
            if not data:
                return  # the coordinator is gone; executors die with us (PDEATHSIG)
            for frame in reader.feed(data):
                request = codec.decode(frame)
                if _preload([n for n in request.preload if n not in sys.modules]):
                    gc.freeze()
                pid = _fork_executor(config, request.executor_id, [sock.fileno(), wake_r, wake_w])
                children[pid] = request.executor_id
                sock.sendall(codec.encode(m.ExecutorSpawned(request.executor_id, pid)))


def _preload(names: list[str]) -> bool:
    """Import ``names``; a module that fails is logged and skipped. True if any were."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            log.exception("cannot preload %s", name)
    return bool(names)


def _fork_executor(config: ClusterConfig, executor_id: str, close: list[int]) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        lifeline.die_with_parent(parent)
        from stratus.server.executor import Executor

        Executor(config, executor_id).run()
        code = 0
    except BaseException:
        log.exception("executor %s failed", executor_id)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap() -> list[tuple[int, int]]:
    exited: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        if pid == 0:
            return exited
        exited.append((pid, os.waitstatus_to_exitcode(status)))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
