"""Processes and memory of the systems under test: which processes a cluster is made of,
their RSS and PSS, and whether any outlived the run. psutil when installed, else /proc."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # fall back to reading /proc
    psutil = None

PROCESS_INFO = "psutil" if psutil is not None else "/proc"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    rss: int  # bytes
    cmdline: tuple[str, ...]
    started: float  # seconds since the epoch


def process_table() -> dict[int, Proc]:
    return _table_psutil() if psutil is not None else _table_proc()


def _table_psutil() -> dict[int, Proc]:
    assert psutil is not None
    table = {}
    attrs = ["pid", "ppid", "memory_info", "cmdline", "create_time"]
    for process in psutil.process_iter(attrs):
        info = process.info
        if info["memory_info"] is None:  # gone or not ours to read
            continue
        table[info["pid"]] = Proc(
            info["pid"],
            info["ppid"],
            info["memory_info"].rss,
            tuple(info["cmdline"] or ()),
            info["create_time"],
        )
    return table


def _table_proc() -> dict[int, Proc]:
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # the process is gone
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields 3.. of proc(5)
        rss_kb = next((int(ln.split()[1]) for ln in status.splitlines() if ln[:6] == "VmRSS:"), 0)
        pid = int(entry.name)
        table[pid] = Proc(
            pid,
            int(fields[1]),
            rss_kb * 1024,
            tuple(arg.decode(errors="replace") for arg in cmdline.split(b"\0")[:-1]),
            boot + int(fields[19]) / ticks,
        )
    return table


def pss_bytes(pid: int) -> int | None:
    """Proportional set size (shared pages split between their users), Linux only."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def descendants(table: dict[int, Proc], root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = defaultdict(list)
    for proc in table.values():
        children[proc.ppid].append(proc.pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children[pid])
    return sorted(found)


def short_name(cmdline: Sequence[str]) -> str:
    """``raylet``, ``ray::IDLE``, ``-m stratus._node``, ``dashboard.py``..."""
    if not cmdline:
        return "?"
    program = os.path.basename(cmdline[0])
    if not program.startswith("python"):
        return program
    args = list(cmdline[1:])
    if "-m" in args[:-1]:
        return "-m " + args[args.index("-m") + 1]
    script = next((a for a in args if not a.startswith("-")), program)
    return os.path.basename(script)


def memory_report(table: dict[int, Proc], pids: Sequence[int]) -> dict[str, Any]:
    procs = [table[pid] for pid in pids if pid in table]
    pss = {p.pid: pss_bytes(p.pid) for p in procs}
    mb = 2**20
    return {
        "total_rss_mb": round(sum(p.rss for p in procs) / mb, 1),
        "total_pss_mb": (
            round(sum(v for v in pss.values() if v) / mb, 1) if all(pss.values()) else None
        ),
        "processes": [
            {
                "pid": p.pid,
                "name": short_name(p.cmdline),
                "rss_mb": round(p.rss / mb, 1),
                "pss_mb": round(pss[p.pid] / mb, 1) if pss[p.pid] else None,
            }
            for p in procs
        ],
    }


def stratus_cluster(table: dict[int, Proc], executor_pids: set[int]) -> tuple[int, list[int]]:
    """The coordinator (our child running stratus._node) whose tree holds these executors."""
    for proc in table.values():
        if proc.ppid == os.getpid() and "stratus._node" in proc.cmdline:
            tree = descendants(table, proc.pid)
            if executor_pids <= set(tree):
                return proc.pid, tree
    raise RuntimeError(f"no stratus coordinator among our children runs executors {executor_pids}")


def ray_processes(table: dict[int, Proc], exclude: set[int], since: float) -> tuple[list[int], int]:
    """Ray's processes: our descendants outside ``exclude`` (and other than ourselves), plus
    processes started since ``since`` whose command line names Ray. Also the count of those
    found only by the second rule (re-parented away from us)."""
    ours = set(descendants(table, os.getpid())) - exclude - {os.getpid()}
    named = {
        p.pid
        for p in table.values()
        if p.started >= since
        and p.pid not in exclude | {os.getpid()}
        and any(a.startswith("ray::") or "/ray/" in a for a in p.cmdline[:3])
    }
    return sorted(ours | named), len(named - ours)


def our_children() -> list[int]:
    """Our child processes, except multiprocessing's resource tracker: started by Dask's
    spawned workers, it stays until this interpreter exits, by design."""
    return [
        p.pid
        for p in process_table().values()
        if p.ppid == os.getpid() and not any("resource_tracker" in a for a in p.cmdline)
    ]


def wait_for_no_children(timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := our_children()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_for_pools(
    app: Any, functions: Sequence[str], size: int, timeout: float = 60.0
) -> set[int]:
    """Wait until each function's warm pool has ``size`` ready executors (pinned, code
    pushed), so that no cold start falls inside a timed block; the pids of those executors.
    The coordinator decides a new ``min_instances`` on its next tick, hence the wait."""
    deadline = time.monotonic() + timeout
    while True:
        ready = [e for e in app.status().executors if e.state == "ready"]
        pools = {f: {e.pid for e in ready if f in e.pinned} for f in functions}
        if all(len(pids) >= size for pids in pools.values()):
            return set().union(*pools.values())
        if time.monotonic() > deadline:
            raise RuntimeError(f"warm pools not at {size} after {timeout} s: {pools}")
        time.sleep(0.02)
