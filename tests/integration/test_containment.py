"""Nothing a function starts outlives its executor, and memory_mb holds (issue #10.8, #10.9).

Each test starts real processes from a function: a ``sleep`` child and a daemon that
double-forks and leaves the session, both tagged with a unique argument, and looks for
them in /proc/*/cmdline after the executor ended. Both containments are tested: cgroups
(where this machine lets us) and process groups (``STRATUS_CGROUPS=off``).
"""

from __future__ import annotations

import itertools
import mmap
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratus
from helpers import alive, wait_until
from stratus.server import cgroups

_tags = itertools.count(1)


def _tagged() -> str:
    """A sleep length no other process on this machine uses: our processes' mark."""
    return f"{7000 + os.getpid() % 1000}.{next(_tags):04d}"


def _running(tag: str) -> list[int]:
    """The pids of live (not zombie) processes whose command line holds ``tag``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if tag.encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(name))
    return found


def _start_sleepers(tag: str) -> int:
    """In a function: a sleep child, and a daemon (double fork + setsid) that escapes the
    executor's session. Returns the executor's pid."""
    subprocess.Popen(["sleep", tag])
    subprocess.Popen(["setsid", "sh", "-c", f"sleep {tag} & exit 0"]).wait()
    return os.getpid()


@pytest.fixture(params=["cgroups", "process-groups"])
def contained_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[stratus.App]:
    if request.param == "cgroups" and not cgroups.detect().cgroups:
        pytest.skip("no writable cgroup hierarchy on this machine")
    previous = os.environ.get(cgroups.DISABLE_VARIABLE)
    if request.param == "process-groups":
        os.environ[cgroups.DISABLE_VARIABLE] = "off"
    try:
        with stratus.connect(data_dir=tmp_path / "stratus", executors=2) as app:
            yield app
    finally:
        if previous is None:
            os.environ.pop(cgroups.DISABLE_VARIABLE, None)
        else:
            os.environ[cgroups.DISABLE_VARIABLE] = previous


def test_sigkill_of_the_executor_kills_what_its_function_started(
    contained_app: stratus.App,
) -> None:
    tag = _tagged()
    spawn = contained_app.function(name="spawn")(lambda ctx, tag: _start_sleepers(tag))
    executor = spawn.remote(tag).result(timeout=30)
    assert wait_until(lambda: len(_running(tag)) == 2), _running(tag)
    os.kill(executor, signal.SIGKILL)
    assert wait_until(lambda: not _running(tag)), f"survivors: {_running(tag)}"


def test_a_timed_out_call_leaves_no_process_behind(contained_app: stratus.App) -> None:
    tag = _tagged()

    def start_and_hang(ctx: stratus.Context, tag: str) -> None:
        _start_sleepers(tag)
        while True:
            signal.pause()

    hang = contained_app.function(name="hang", timeout=1, retries=0)(start_and_hang)
    with pytest.raises(stratus.InvocationTimeout):
        hang.remote(tag).result(timeout=30)
    assert wait_until(lambda: not _running(tag)), f"survivors: {_running(tag)}"


def test_closing_the_cluster_leaves_no_process_behind(tmp_path: Path) -> None:
    tag = _tagged()
    with stratus.connect(data_dir=tmp_path / "stratus", executors=1) as app:
        spawn = app.function(name="spawn")(lambda ctx, tag: _start_sleepers(tag))
        spawn.remote(tag).result(timeout=30)
        assert wait_until(lambda: len(_running(tag)) == 2), _running(tag)
    assert wait_until(lambda: not _running(tag)), f"survivors: {_running(tag)}"


def test_sigkill_of_the_coordinator_leaves_no_process_behind(contained_app: stratus.App) -> None:
    """The fork server dies with the coordinator (SIGTERM from the kernel) and takes
    every executor group with it."""
    tag = _tagged()
    spawn = contained_app.function(name="spawn")(lambda ctx, tag: _start_sleepers(tag))
    spawn.remote(tag).result(timeout=30)
    assert wait_until(lambda: len(_running(tag)) == 2), _running(tag)
    assert contained_app._cluster is not None
    os.kill(contained_app._cluster.process.pid, signal.SIGKILL)
    assert wait_until(lambda: not _running(tag)), f"survivors: {_running(tag)}"


def test_an_executor_that_finished_a_call_keeps_running(contained_app: stratus.App) -> None:
    """Containment does not kill a live executor's children: only a dead one's."""
    tag = _tagged()
    spawn = contained_app.function(name="spawn")(lambda ctx, tag: _start_sleepers(tag))
    executor = spawn.remote(tag).result(timeout=30)
    assert wait_until(lambda: len(_running(tag)) == 2), _running(tag)
    again = spawn.remote(_tagged()).result(timeout=30)
    assert again == executor and len(_running(tag)) == 2


def _touch_shared(ctx: stratus.Context, size: int) -> str:
    """Map ``size`` bytes of shared anonymous memory (not in RLIMIT_DATA) and touch it."""
    shared = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS
    for offset in range(0, size, mmap.PAGESIZE):
        shared[offset] = 1
    return "touched"


@pytest.mark.skipif(not cgroups.detect().memory, reason="no memory cgroup controller for us")
def test_shared_memory_past_memory_mb_is_memory_limit_exceeded(fresh_app: stratus.App) -> None:
    hog = fresh_app.function(name="hog", memory_mb=256, retries=0, timeout=60)(_touch_shared)
    with pytest.raises(stratus.MemoryLimitExceeded, match="256 MB"):
        hog.remote(1 << 30).result(timeout=60)
    # The executor was replaced; the same function within its limit still runs.
    assert hog.remote(64 << 20).result(timeout=30) == "touched"


def _memset_shared(ctx: stratus.Context, size: int) -> str:
    """Like ``_touch_shared``, in one C call: no Python signal handler runs meanwhile."""
    import ctypes

    shared = mmap.mmap(-1, size)
    ctypes.memset(ctypes.addressof(ctypes.c_char.from_buffer(shared)), 1, size)
    return "touched"


@pytest.mark.skipif(not cgroups.detect().memory, reason="no memory cgroup controller for us")
def test_memory_past_the_limit_in_c_code_ends_the_call_too(fresh_app: stratus.App) -> None:
    """The executor cannot report from inside C code: its group is killed at the
    headroom, and the caller hears at once (here ExecutorLost: retries=0)."""
    hog = fresh_app.function(name="hog", memory_mb=256, retries=0, timeout=120)(_memset_shared)
    with pytest.raises((stratus.MemoryLimitExceeded, stratus.ExecutorLost)):
        hog.remote(1 << 30).result(timeout=60)


def _child_touches_shared(ctx: stratus.Context, size: int, tag: str) -> str:
    """A child process (not the executor) maps and touches ``size`` bytes."""
    program = (
        "import mmap, sys\n"
        f"m = mmap.mmap(-1, {size})\n"
        f"for i in range(0, {size}, mmap.PAGESIZE): m[i] = 1\n"
    )
    subprocess.run([sys.executable, "-c", program, tag], check=True)
    return "touched"


@pytest.mark.skipif(not cgroups.detect().memory, reason="no memory cgroup controller for us")
def test_memory_of_the_processes_a_function_starts_counts_too(fresh_app: stratus.App) -> None:
    tag = _tagged()
    hog = fresh_app.function(name="hog", memory_mb=256, retries=0, timeout=60)(
        _child_touches_shared
    )
    with pytest.raises(stratus.MemoryLimitExceeded):
        hog.remote(1 << 30, tag).result(timeout=60)
    assert wait_until(lambda: not _running(tag)), f"survivors: {_running(tag)}"


@pytest.mark.skipif(not cgroups.detect().cgroups, reason="no writable cgroup hierarchy")
def test_a_new_cluster_removes_the_groups_of_a_cluster_that_is_gone(tmp_path: Path) -> None:
    """A cluster SIGKILLed whole (coordinator and fork server at once) leaves its groups;
    the next fork server on the machine kills what is in them and removes them."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid plays the fork server of a cluster that is gone
    groups = cgroups.ClusterGroups("gone", cgroups.detect(), owner=gone.pid)
    tag = _tagged()
    left = subprocess.Popen(["sleep", tag], preexec_fn=groups.create("x1").enter)
    try:
        with stratus.connect(data_dir=tmp_path / "stratus", executors=1) as app:
            app.function(name="ping")(lambda ctx: 1).remote().result(timeout=30)
            assert wait_until(lambda: left.poll() is not None), "the leftover still runs"
        assert not any(root.exists() for root in groups.roots)
    finally:
        left.kill()
        left.wait()


def _touch_shared_pid(ctx: stratus.Context, size: int) -> int:
    _touch_shared(ctx, size)
    return os.getpid()


@pytest.mark.skipif(not cgroups.detect().memory, reason="no memory cgroup controller for us")
def test_the_reply_an_executor_sent_before_exiting_wins_over_the_news_of_its_exit(
    fresh_app: stratus.App,
) -> None:
    """The executor replies MemoryLimitExceeded, then exits; the coordinator then tells
    the caller it left. Both arrive before the caller reads either (nobody polls until
    ``result``): the reply must still be the answer, not ExecutorLost."""
    hog = fresh_app.function(name="hog", memory_mb=256, retries=0, max_instances=1)(
        _touch_shared_pid
    )
    executor = hog.remote(1 << 20).result(timeout=30)
    future = hog.remote(1 << 30)  # sent at once; nothing is read until result()
    assert wait_until(lambda: not alive(executor))
    news = fresh_app._client._coordinator.sock
    assert select.select([news], [], [], 10)[0], "the coordinator did not tell us"
    with pytest.raises(stratus.MemoryLimitExceeded):
        future.result(timeout=30)
