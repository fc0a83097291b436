"""No stratus process outlives its owner, however the owner ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import stratus
from helpers import alive, cluster_pids, wait_until

_OWNER = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path[:0] = {paths!r}
    import stratus
    from helpers import cluster_pids
    app = stratus.connect(data_dir={data_dir!r}, executors=2)
    f = app.function(name="ping", min_instances=2)(lambda ctx: os.getpid())
    f.remote().result(timeout=10)
    print(json.dumps(cluster_pids(app)), flush=True)
    {ending}
    """
)


def _run_owner(tmp_path: Path, ending: str) -> tuple[subprocess.Popen[str], list[int]]:
    script = _OWNER.format(paths=sys.path, data_dir=str(tmp_path), ending=ending)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    with owner.stdout:
        pids = json.loads(owner.stdout.readline())
    assert len(pids) >= 3  # coordinator, fork server, executors
    return owner, pids


def test_close_stops_every_process(tmp_path: Path) -> None:
    app = stratus.connect(data_dir=tmp_path, executors=2)
    app.function(name="ping")(lambda ctx: 1).remote().result(timeout=10)
    pids = cluster_pids(app)
    assert len(pids) >= 3 and all(alive(p) for p in pids)  # coordinator, fork server, executors
    app.close()
    assert not any(alive(p) for p in pids)
    with pytest.raises(stratus.ClusterClosed):
        app.function(name="late")(lambda ctx: 1)


def test_with_block_stops_every_process(tmp_path: Path) -> None:
    with stratus.connect(data_dir=tmp_path, executors=1) as app:
        pids = cluster_pids(app)
    assert not any(alive(p) for p in pids)


def test_sigkill_of_the_owner_leaves_no_process_behind(tmp_path: Path) -> None:
    owner, pids = _run_owner(tmp_path, "time.sleep(60)")
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert wait_until(lambda: not any(alive(p) for p in pids))


def test_interpreter_exit_without_close_stops_the_cluster(tmp_path: Path) -> None:
    owner, pids = _run_owner(tmp_path, "pass")
    assert owner.wait(timeout=30) == 0
    assert wait_until(lambda: not any(alive(p) for p in pids))


def test_killing_the_coordinator_takes_the_executors_and_tells_the_client(
    tmp_path: Path,
) -> None:
    app = stratus.connect(data_dir=tmp_path, executors=2)
    ping = app.function(name="ping")(lambda ctx: os.getpid())
    ping.remote().result(timeout=10)
    pids = cluster_pids(app)
    os.kill(pids[0], signal.SIGKILL)
    assert wait_until(lambda: not any(alive(p) for p in pids))
    with pytest.raises(stratus.ClusterClosed):
        ping.remote().result(timeout=10)
    app.close()


def test_data_dir_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    with stratus.connect(data_dir=data_dir, executors=1):
        assert data_dir.is_dir()


def test_a_bad_store_fails_connect_at_once_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(stratus.ConfigurationError):
        stratus.connect(data_dir=tmp_path, store="bogus:")
    with pytest.raises(stratus.ConnectionFailed, match="Redis store"):
        stratus.connect(data_dir=tmp_path, store="redis://127.0.0.1:1/0")
