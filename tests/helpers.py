"""Helpers for tests that watch real processes."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import stratus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until true or ``timeout``: for effects in other processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def cluster_pids(app: stratus.App) -> list[int]:
    """The coordinator's pid and those of all its descendants (fork server, executors)."""
    assert app._cluster is not None
    root = app._cluster.process.pid
    pids, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        for child in _children(parent):
            pids.append(child)
            frontier.append(child)
    return pids


def _children(pid: int) -> list[int]:
    found = []
    for tid in os.listdir(f"/proc/{pid}/task") if os.path.exists(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found
