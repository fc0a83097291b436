"""The fork server: a pre-imported process that forks executors in milliseconds.

The coordinator forks it once, before it starts any thread, over a private socket pair.
Because it has already imported stratus, its dependencies and the user's ``preload``
modules, a forked executor starts with all of them loaded. A spawn request may name more
modules (a function's ``preload``): the fork server imports them first and keeps them,
so they cost once and every later executor starts with them too. It reports each
executor's pid, and each exit (from SIGCHLD), back to the coordinator.

Each executor runs in a group of its own (``cgroups``): a cgroup where the machine lets
us, else its own session. When it exits, the fork server kills what is left in the
group, so nothing a function started outlives its executor; and when the fork server
itself ends (the coordinator closed the socket, or died: SIGTERM), it kills them all.
It also turns a group's memory event into the executor's ``MemoryLimitExceeded``.
A spawn request that names GPUs sets the executor's ``CUDA_VISIBLE_DEVICES`` to them.

What a forked child runs is ``run_executor``, given by the node's entry point
(``stratus._node``), which wires the executor to the client SDK for nested calls.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stratus.config import ClusterConfig
from stratus.protocol import messages as m
from stratus.protocol.framing import Codec, FrameReader
from stratus.server import cgroups, lifeline

log = logging.getLogger("stratus.forkserver")

GPUS_VARIABLE = "CUDA_VISIBLE_DEVICES"  # the GPUs an executor may use (docs/scaling.md)

# Runs one executor in a forked child, until it is done: (config, executor id, its group).
RunExecutor = Callable[[ClusterConfig, str, "cgroups.ExecutorGroup | None"], None]


def start(
    config: ClusterConfig, run_executor: RunExecutor, *, close: tuple[int, ...] = ()
) -> tuple[int, socket.socket]:
    """Fork the fork server; return its pid and the parent's end of the pair. ``close``:
    the parent's descriptors that it and its executors must not hold (a node agent's
    link: the coordinator must see it close when the agent dies)."""
    ours, theirs = socket.socketpair()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        ours.close()
        for fd in close:
            os.close(fd)
        code = 1
        try:
            # SIGTERM, not SIGKILL: its handler kills the executors' groups first.
            lifeline.die_with_parent(parent, signal.SIGTERM)
            _ForkServer(config, theirs, run_executor).serve()
            code = 0
        except BaseException:
            log.exception("fork server failed")
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


@dataclass
class _Child:
    executor_id: str
    group: cgroups.ExecutorGroup | None
    errors: int  # read end of a pipe where it writes what it raised, if it fails
    watch: int | None = None  # its group's memory-event descriptor


class _ForkServer:
    def __init__(
        self, config: ClusterConfig, sock: socket.socket, run_executor: RunExecutor
    ) -> None:
        self.config = config
        self.run_executor = run_executor
        self.sock = sock
        self.codec = Codec(config.key, m.ToForkServer, max_frame=1 << 16)
        self.children: dict[int, _Child] = {}
        self.watches: dict[int, int] = {}  # memory-event descriptor -> executor pid
        self.leftovers: list[cgroups.ExecutorGroup] = []  # killed, not yet removable
        self.poller = select.poll()
        # Descendants that outlive their parent come to us: reaped, and killed with
        # their executor's group (or, without cgroups, by kill_orphans).
        cgroups.set_child_subreaper()
        support = cgroups.detect()
        self.groups: cgroups.ClusterGroups | None = None
        if support.cgroups:
            try:
                self.groups = cgroups.ClusterGroups(config.cluster_id, support)
            except OSError as e:
                log.warning("cannot create the cluster's cgroups, using process groups: %s", e)
        contained = support.describe() if self.groups else "process groups"
        log.info("executors are contained by %s", contained)

    def serve(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when we stop
        signal.signal(signal.SIGTERM, self._on_term)
        _preload(self.config.preload)
        import stratus.server.executor  # noqa: F401  (warm: every executor needs it)

        # What is loaded now is shared by every executor: keep the collector away from it,
        # so collections stay cheap and do not copy shared pages on write.
        gc.freeze()

        reader = FrameReader(self.codec.max_frame)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poller.register(self.sock.fileno(), select.POLLIN)
        self.poller.register(self.wake_r, select.POLLIN)
        try:
            while True:
                try:
                    events = self.poller.poll(100 if self.leftovers else None)
                except InterruptedError:
                    continue
                self.leftovers = [g for g in self.leftovers if not g.remove()]
                for fd, _ in events:
                    if fd == self.wake_r:
                        _drain(self.wake_r)
                        self._reap()
                    elif fd in self.watches:
                        self._on_memory_event(fd)
                    else:
                        data = self.sock.recv(1 << 16)
                        if not data:
                            return  # the coordinator is gone
                        for frame in reader.feed(data):
                            self._spawn(self.codec.decode(frame))
        finally:
            self._kill_all()

    def _spawn(self, request: m.SpawnExecutor) -> None:
        if _preload([n for n in request.preload if n not in sys.modules]):
            gc.freeze()
        group = None
        if self.groups is not None:
            try:
                group = self.groups.create(request.executor_id)
            except OSError as e:
                log.warning("no cgroup for executor %s: %s", request.executor_id, e)
        errors, error_w = os.pipe()
        os.set_blocking(errors, False)
        others = [c.errors for c in self.children.values()]
        close = [self.sock.fileno(), self.wake_r, self.wake_w, errors, *self.watches, *others]
        pid = _fork_executor(self.run_executor, self.config, request, group, close, error_w)
        os.close(error_w)
        child = self.children[pid] = _Child(request.executor_id, group, errors)
        if group is not None:
            try:
                child.watch = group.memory_events()
            except OSError as e:
                log.warning("no memory events for executor %s: %s", request.executor_id, e)
            if child.watch is not None:
                self.watches[child.watch] = pid
                self.poller.register(child.watch, select.POLLIN | select.POLLPRI)
        self.sock.sendall(self.codec.encode(m.ExecutorSpawned(request.executor_id, pid)))

    def _reap(self) -> None:
        for pid, status in _exited():
            child = self.children.pop(pid, None)
            if child is None:
                continue  # an orphaned descendant of an executor: reaped, nothing to tell
            self._contain(pid, child)
            error = b""
            with contextlib.suppress(OSError):
                error = os.read(child.errors, select.PIPE_BUF)
            os.close(child.errors)
            text = error.decode(errors="replace")
            message = m.ExecutorExited(child.executor_id, pid, status, text)
            self.sock.sendall(self.codec.encode(message))

    def _contain(self, pid: int, child: _Child) -> None:
        """Kill whatever the exited executor ``pid`` left running, and forget its group."""
        if child.watch is not None:
            self.poller.unregister(child.watch)
            del self.watches[child.watch]
            os.close(child.watch)
        if child.group is not None:
            child.group.kill()
            if not child.group.remove():
                self.leftovers.append(child.group)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # its session's group outlives it
        cgroups.kill_orphans(set(self.children))

    def _on_memory_event(self, fd: int) -> None:
        pid = self.watches[fd]
        child = self.children[pid]
        group = child.group
        assert group is not None
        # Consume the event: v1's eventfd is read; v2's memory.events is read from the
        # start, which re-arms its notification (an eventfd cannot seek).
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):
            os.read(fd, 4096)
        if not group.over_memory():
            return
        if group.raised:  # it did not stop at the headroom: no report, just a kill
            log.warning("executor %s went past its memory headroom: killed", child.executor_id)
            group.kill()
            return
        # Signal first: it is pending when the stopped task resumes.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, cgroups.OVER_MEMORY)
        group.raise_limit()

    def _on_term(self, signum: int, frame: Any) -> None:
        self._kill_all()
        os._exit(0)

    def _kill_all(self) -> None:
        """Leave no executor, and nothing an executor started, behind."""
        for pid, child in list(self.children.items()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if child.group is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        if self.groups is not None:
            self.groups.kill_all()
        cgroups.kill_orphans(set())


def _preload(names: list[str]) -> bool:
    """Import ``names``; a module that fails is logged and skipped. True if any were."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            log.exception("cannot preload %s", name)
    return bool(names)


def _fork_executor(
    run_executor: RunExecutor,
    config: ClusterConfig,
    request: m.SpawnExecutor,
    group: cgroups.ExecutorGroup | None,
    close: list[int],
    errors: int,
) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    executor_id = request.executor_id
    code = 1
    try:
        # Before anything of the user's runs (the executor waits for it before it
        # serves), what the executor starts must land in its group.
        os.setsid()
        if group is not None:
            group.enter_soon()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        lifeline.die_with_parent(parent)
        if request.gpus is not None:
            # Its own GPUs only; none at all ("") for a function that asked for none, so
            # it cannot take one that another executor holds.
            os.environ[GPUS_VARIABLE] = ",".join(request.gpus)
        run_executor(config, executor_id, group)
        code = 0
    except BaseException as e:
        log.exception("executor %s failed", executor_id)
        with contextlib.suppress(OSError):  # for the coordinator, if it was not ready yet
            os.write(errors, f"{type(e).__name__}: {e}".encode()[: select.PIPE_BUF])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _exited() -> list[tuple[int, int]]:
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
