"""The first call of a function whose pool starts from nothing, when threads run late;
and the code the cluster's processes run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import stratus
from stratus.protocol import messages as m


def test_a_push_read_before_the_caller_resumes_is_not_undone(
    fresh_app: stratus.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: on a loaded machine the coordinator's ``Resolved`` (pool empty, an
    executor starting) and its push (the executor joined the pool) were read together,
    and the asking thread, running later, put the empty pool back: the call then waited
    for a push that had already come, until its timeout. Here the asking thread is held
    until the push has been read, every time."""

    @fresh_app.function
    def one(ctx: stratus.Context) -> int:
        return 1

    client = fresh_app._client
    ask = client.request
    staged: list[m.Resolved] = []

    def late(build: Any, timeout: float = 30.0) -> Any:
        reply = ask(build, timeout)
        if isinstance(reply, m.Resolved) and not reply.pools.get("one"):
            # The thread that asked is descheduled while the push is read.
            deadline = time.monotonic() + 10.0
            with client.polling():
                while not client.placement.pool("one") and time.monotonic() < deadline:
                    client.pump(0.05)
            staged.append(reply)
        return reply

    monkeypatch.setattr(client, "request", late)
    assert one.remote().result(timeout=10) == 1
    assert staged, "the pool was not empty at the resolve: the race was not staged"


def test_executors_run_this_checkouts_code(app: stratus.App) -> None:
    """The coordinator, fork server and executors (forks of the coordinator) import the
    same stratus as the test, not another checkout's."""

    @app.function
    def where(ctx: stratus.Context) -> str:
        import stratus

        return stratus.__file__ or ""

    assert where.remote().result(timeout=30) == stratus.__file__


def test_a_caller_running_another_checkout_gets_a_clear_error(tmp_path: Path) -> None:
    """A caller that put another copy of stratus first on ``sys.path`` by hand would
    get a coordinator and executors running the copy its interpreter finds: refused."""
    other = tmp_path / "other"
    shutil.copytree(Path(stratus.__file__).parent, other / "stratus")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(other)!r})
        import stratus
        assert stratus.__file__.startswith({str(other)!r})
        try:
            stratus.connect(data_dir={str(tmp_path / "data")!r}, executors=1)
        except stratus.ConnectionFailed as e:
            print(e)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"imports stratus from {other / 'stratus'}" in done.stdout
