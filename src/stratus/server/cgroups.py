"""Each executor and every process it starts, in one group that is killed and limited.

Theory of operation: the fork server puts every executor it forks in a group of its
own, before the executor runs any code, so that everything the executor starts (a
``subprocess``, a daemon that double-forks and calls ``setsid``) stays in it. When the
executor exits, for whatever reason (a timeout, a kill by the coordinator, a crash, the
end of the cluster), the fork server kills the whole group and removes it. Two kinds of
group, chosen once per process by :func:`detect`:

- **cgroups** (Linux, writable by us, usually as root): a cluster cgroup
  ``stratus-<cluster id>-<fork server pid>`` beside the fork server's own cgroup in
  each usable hierarchy, with one child per executor. The cgroup v2 hierarchy (even
  without controllers) gives ``cgroup.kill``, which kills every member at once, whatever
  it forked meanwhile. The memory controller (v2, else v1) caps the executor group's
  memory with swap off (:meth:`ExecutorGroup.limit_memory`), counting what
  ``RLIMIT_DATA`` does not: shared and file-backed pages. The pids controller (v2, else
  v1) caps the number of tasks, so a fork bomb cannot outrun the kill.
- **process groups** (no writable cgroup): the executor calls ``setsid`` and the fork
  server, a child subreaper, kills the group; descendants that left it (``setsid``) are
  re-parented to the fork server and killed when an executor exits
  (:func:`kill_orphans`). There is no memory cap beyond ``RLIMIT_DATA`` then.

Memory over the limit: v1 stops the group's tasks instead of killing one
(``oom_kill_disable``) and signals an eventfd; v2 throttles them at ``memory.high``
(the limit) and notifies ``memory.events``; the fork server then raises the limit by
:data:`HEADROOM` and sends the executor :data:`OVER_MEMORY`, whose handler reports
``MemoryLimitExceeded`` to the caller and exits. A group still over the raised limit
is killed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("stratus.cgroups")

#: The signal the fork server sends an executor whose group went over its memory limit.
OVER_MEMORY = signal.SIGUSR2
#: Added to a group's limit when it is reached, so the executor can report and exit.
HEADROOM = 64 * 2**20
#: Tasks (processes and threads) an executor group may hold at once.
PIDS_MAX = 4096
#: Set to ``off`` to contain executors with process groups even where cgroups work.
DISABLE_VARIABLE = "STRATUS_CGROUPS"
_REMOVE_WAIT = 1.0  # seconds for killed members to leave before a group is removed


@dataclass(frozen=True)
class Hierarchy:
    """A cgroup hierarchy where we may create groups under ``base``."""

    base: Path  # the fork server's own cgroup in this hierarchy
    v2: bool
    memory: bool
    pids: bool


@dataclass(frozen=True)
class Support:
    """What this machine offers: the hierarchies we can use (empty: process groups)."""

    hierarchies: tuple[Hierarchy, ...] = ()

    @property
    def cgroups(self) -> bool:
        return bool(self.hierarchies)

    @property
    def memory(self) -> bool:
        """Whether executor groups get a memory limit."""
        return any(h.memory for h in self.hierarchies)

    def describe(self) -> str:
        if not self.hierarchies:
            return "process groups (no writable cgroup)"
        parts = []
        for h in self.hierarchies:
            controllers = "+".join(_controllers(h)) or "-"
            parts.append(f"{'v2' if h.v2 else 'v1'} {h.base} {controllers}")
        return "cgroups: " + ", ".join(parts)


def detect(proc: Path = Path("/proc/self")) -> Support:
    """Find the cgroup hierarchies this process may create groups in (none: fallback).
    ``STRATUS_CGROUPS=off`` in the environment asks for process groups."""
    if os.environ.get(DISABLE_VARIABLE, "").lower() in ("off", "0", "no"):
        return Support()
    try:
        memberships = _memberships(proc / "cgroup")
        mounts = _mounts(proc / "mountinfo")
    except OSError:
        return Support()
    found: list[Hierarchy] = []
    v2_memory = v2_pids = False
    for fstype, mount, root, _ in mounts:
        if fstype != "cgroup2" or "" not in memberships:
            continue
        base = _join(mount, root, memberships[""])
        if base is None or not _writable(base):
            continue
        enabled = _enable_v2(base, ("memory", "pids"))
        v2_memory, v2_pids = "memory" in enabled, "pids" in enabled
        found.append(Hierarchy(base, v2=True, memory=v2_memory, pids=v2_pids))
        break
    for fstype, mount, root, options in mounts:
        if fstype != "cgroup":
            continue
        want_memory = "memory" in options and not v2_memory
        want_pids = "pids" in options and not v2_pids
        if not (want_memory or want_pids):
            continue
        name = "memory" if want_memory else "pids"
        base = _join(mount, root, memberships.get(name, "/"))
        if base is not None and _writable(base):
            found.append(Hierarchy(base, v2=False, memory=want_memory, pids=want_pids))
    return Support(tuple(found))


class ClusterGroups:
    """The cluster's groups: one per executor, under ``stratus-<cluster>-<owner>`` in
    each hierarchy, where ``owner`` is the fork server's pid. Creating them also removes
    the groups of clusters whose fork server is gone (killed with its coordinator by
    SIGKILL): what their executors started is killed then."""

    def __init__(
        self, cluster_id: str, support: Support, owner: int = 0, *, create: bool = True
    ) -> None:
        self.support = support
        name = f"stratus-{cluster_id}-{owner or os.getpid()}"
        self.roots = [h.base / name for h in support.hierarchies]
        if not create:
            return
        for h in support.hierarchies:
            for root in h.base.glob("stratus-*-*"):
                if root.name != name and root.is_dir() and _abandoned(root):
                    log.warning("removing the cgroup %s of a cluster that is gone", root)
                    _kill_tree(root)
        for root, h in zip(self.roots, support.hierarchies, strict=True):
            with contextlib.suppress(FileExistsError):
                root.mkdir()
            if h.v2:  # the executor groups get the controllers of their parent
                _enable_v2(root, _controllers(h))

    def create(self, executor_id: str) -> ExecutorGroup:
        """A new, empty group for ``executor_id`` (call before forking it)."""
        dirs = []
        for root in self.roots:
            path = root / executor_id
            with contextlib.suppress(FileExistsError):
                path.mkdir()
            dirs.append(path)
        group = ExecutorGroup(executor_id, tuple(zip(dirs, self.support.hierarchies, strict=True)))
        group.setup()
        return group

    def kill_all(self) -> None:
        """Kill every process of every executor group and remove the groups."""
        for root in self.roots:
            _kill_tree(root)


def _kill_tree(root: Path) -> None:
    """Kill the processes of ``root``'s child groups, then remove them and ``root``."""
    with contextlib.suppress(OSError):
        for child in root.iterdir():
            if child.is_dir():
                _kill_dir(child)
    with contextlib.suppress(OSError):
        for child in root.iterdir():
            if child.is_dir():
                _remove(child, time.monotonic() + _REMOVE_WAIT)
    with contextlib.suppress(OSError):
        root.rmdir()


def _abandoned(root: Path) -> bool:
    """Whether ``root`` (``stratus-<cluster>-<owner pid>``) belongs to a dead fork server."""
    owner = root.name.rpartition("-")[2]
    if not owner.isdigit():
        return False
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class ExecutorGroup:
    """One executor's group: the executor enters it at fork, it is killed at its exit."""

    def __init__(self, executor_id: str, dirs: tuple[tuple[Path, Hierarchy], ...]) -> None:
        self.executor_id = executor_id
        self.dirs = dirs
        self.memory_mb = 0  # the limit in force, 0: none
        self.raised = False  # the limit was raised by HEADROOM once: next time, kill
        self._memory = next(((d, h) for d, h in dirs if h.memory), None)
        self._entering: Future[None] | None = None

    def setup(self) -> None:
        for path, h in self.dirs:
            if h.pids:
                _write(path / "pids.max", str(PIDS_MAX))
            if h.memory and h.v2:
                _write(path / "memory.swap.max", "0", missing_ok=True)
            elif h.memory:
                _write(path / "memory.oom_control", "1")  # stop the tasks, don't kill one
                _write(path / "memory.swappiness", "0", missing_ok=True)

    def enter(self) -> None:
        """Move the calling process into the group."""
        for path, _ in self.dirs:
            _write(path / "cgroup.procs", "0")

    def enter_soon(self) -> None:
        """``enter`` on a thread of its own: the executor's start-up goes on meanwhile,
        and calls ``entered`` before it serves (nothing of the user's runs before).

        Why: the first move into a cgroup after a quiet while waits for an RCU grace
        period in the kernel (the cgroup threadgroup rwsem): 8-10 ms of a cold start on
        these VMs (docs/autoscaling.md). What the start-up allocates before the move stays
        charged to the fork server's group (v1 moves no charges)."""
        entered: Future[None] = Future()

        def run() -> None:
            try:
                self.enter()
            except BaseException as e:
                entered.set_exception(e)
            else:
                entered.set_result(None)

        self._entering = entered
        threading.Thread(target=run, name="stratus-cgroup", daemon=True).start()

    def entered(self) -> None:
        """Wait until ``enter_soon`` is done; raise what it raised."""
        if self._entering is not None:
            self._entering.result()

    def limit_memory(self, memory_mb: int) -> bool:
        """Cap the group at ``memory_mb`` (0: no cap), swap included. False if the
        machine has no memory controller for us or the group already holds more."""
        if self._memory is None:
            return False
        path, h = self._memory
        limit = memory_mb * 2**20 if memory_mb else 0
        try:
            if h.v2:
                text = str(limit) if limit else "max"
                _write(path / "memory.max", str(limit + HEADROOM) if limit else "max")
                _write(path / "memory.high", text)
            else:
                _set_v1_limit(path, limit or -1)
        except OSError as e:
            log.warning("cannot limit %s to %d MB: %s", self.executor_id, memory_mb, e)
            return False
        self.memory_mb, self.raised = memory_mb, False
        return True

    def memory_events(self) -> int | None:
        """A file descriptor that becomes readable (v1) or signals POLLPRI (v2) when the
        group reaches its memory limit; None without a memory controller."""
        if self._memory is None:
            return None
        path, h = self._memory
        if h.v2:
            return os.open(path / "memory.events", os.O_RDONLY | os.O_CLOEXEC)
        event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        control = os.open(path / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _write(path / "cgroup.event_control", f"{event} {control}")
        finally:
            os.close(control)
        return event

    def over_memory(self) -> bool:
        """Whether the group is at its limit now (after a memory event). Read from the
        group's files: the limit is set by the executor, in another process."""
        if self._memory is None:
            return False
        path, h = self._memory
        try:
            if h.v2:
                high = (path / "memory.high").read_text().strip()
                current = int((path / "memory.current").read_text())
                return high != "max" and current >= int(high)
            # Stopped at the limit in force now: a notification of the episode before the
            # limit was raised can arrive late, while the group is still marked.
            if "under_oom 1" not in (path / "memory.oom_control").read_text():
                return False
            usage = int((path / "memory.usage_in_bytes").read_text())
            return usage >= int((path / "memory.limit_in_bytes").read_text()) - HEADROOM // 2
        except (OSError, ValueError):
            return False

    def raise_limit(self) -> None:
        """Let a stopped (v1) or throttled (v2) group go on for the executor to report."""
        assert self._memory is not None
        path, h = self._memory
        self.raised = True
        with contextlib.suppress(OSError, ValueError):
            if h.v2:  # memory.max is HEADROOM above it already
                _write(path / "memory.high", "max")
            else:
                limit = int((path / "memory.limit_in_bytes").read_text())
                _set_v1_limit(path, limit + HEADROOM)

    def kill(self) -> None:
        """SIGKILL every process in the group, whatever it forked meanwhile."""
        if self.dirs:
            _kill_dir(self.dirs[0][0])

    def remove(self) -> bool:
        """Remove the group once its killed members are gone (False: still busy)."""
        return all(_remove(path, time.monotonic()) for path, _ in self.dirs)


# ---------------------------------------------------------------- the process-group fallback


def set_child_subreaper() -> None:
    """Make orphaned descendants children of this process (so they can be reaped)."""
    import ctypes

    pr_set_child_subreaper = 36
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1)


def kill_orphans(keep: set[int]) -> list[int]:
    """SIGKILL this process's children not in ``keep`` (descendants of executors that
    were re-parented to us), and the process groups they lead; return their pids."""
    me, killed = os.getpid(), []
    for pid in _pids():
        if pid in keep or pid == me:
            continue
        stat = _stat(pid)
        if stat is None or stat[0] != me:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        if stat[1] == pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    return killed


# ---------------------------------------------------------------- files


def _kill_dir(path: Path) -> None:
    kill = path / "cgroup.kill"
    if kill.exists():
        with contextlib.suppress(OSError):
            _write(kill, "1")
            return
    # No cgroup.kill (v1 only): kill what is listed until nothing is, for a moment.
    deadline = time.monotonic() + _REMOVE_WAIT
    while time.monotonic() < deadline:
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.001)


def _remove(path: Path, deadline: float) -> bool:
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                return False
        time.sleep(0.002)


def _set_v1_limit(path: Path, limit: int) -> None:
    """v1 wants memsw >= limit at every step: raise memsw first, lower it last."""
    memsw = path / "memory.memsw.limit_in_bytes"
    current = int((path / "memory.limit_in_bytes").read_text())
    grow = limit == -1 or limit > current
    if grow and memsw.exists():
        _write(memsw, str(limit))
    _write(path / "memory.limit_in_bytes", str(limit))
    if not grow and memsw.exists():
        _write(memsw, str(limit))


def _write(path: Path, text: str, *, missing_ok: bool = False) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _enable_v2(path: Path, controllers: tuple[str, ...]) -> set[str]:
    """Enable ``controllers`` for ``path``'s children, as far as allowed; return those on
    (a cgroup with processes of its own may not: the "no internal processes" rule)."""
    try:
        available = set((path / "cgroup.controllers").read_text().split())
    except OSError:
        return set()
    enabled = set()
    for c in controllers:
        if c not in available:
            continue
        try:
            _write(path / "cgroup.subtree_control", f"+{c}")
            enabled.add(c)
        except OSError:
            pass
    return enabled


def _controllers(h: Hierarchy) -> tuple[str, ...]:
    return tuple(c for c, on in (("memory", h.memory), ("pids", h.pids)) if on)


def _memberships(path: Path) -> dict[str, str]:
    """Controller name ("" for v2) -> our cgroup path, from /proc/self/cgroup."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        _, controllers, cgroup = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = cgroup
    return found


def _mounts(path: Path) -> list[tuple[str, Path, str, set[str]]]:
    """(fstype, mount point, root, super options) of each cgroup mount."""
    found = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        fstype = fields[sep + 1]
        if fstype in ("cgroup", "cgroup2"):
            options = set(fields[sep + 3].split(","))
            found.append((fstype, Path(fields[4]), fields[3], options))
    return found


def _join(mount: Path, root: str, cgroup: str) -> Path | None:
    """Where our cgroup ``cgroup`` is under a mount of the hierarchy's ``root``."""
    if cgroup.startswith(root):
        cgroup = cgroup[len(root) :]
    path = mount / cgroup.lstrip("/")
    return path if path.is_dir() else None


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path / "cgroup.procs", os.W_OK)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[2])
