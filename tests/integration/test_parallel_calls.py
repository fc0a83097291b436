"""Placement on a real cluster: blocking calls spread over a pool as it grows, and a call
held for an executor busy with a call that waits for it still runs."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import stratus
from helpers import wait_until


def test_blocking_calls_run_in_parallel_once_the_pool_grows(tmp_path: Path) -> None:
    """Issue #11.2: four calls that sleep 1 s, from a pool scaled to zero that grows to
    the two executors of the cluster, used to run one after another on the first one.
    Each call records when it ran; two of them must have overlapped."""
    with stratus.connect(data_dir=tmp_path / "stratus", executors=2) as app:

        @app.function(max_instances=4)
        def nap(ctx: stratus.Context) -> tuple[float, float, int]:
            start = time.monotonic()  # CLOCK_MONOTONIC: one clock for the whole machine
            time.sleep(1.0)
            return start, time.monotonic(), os.getpid()

        futures = [nap.remote() for _ in range(4)]
        spans = [f.result(timeout=60) for f in futures]
    overlaps = [
        (a, b)
        for a, b in itertools.combinations(spans, 2)
        if a[0] < b[1] and b[0] < a[1]  # each began before the other ended
    ]
    assert overlaps, spans
    assert len({pid for _, _, pid in spans}) == 2


def test_a_held_call_reaches_an_executor_whose_running_call_waits_for_it(
    tmp_path: Path,
) -> None:
    """With one executor, ``listen`` runs there and waits for a message that only
    ``speak`` sends; ``speak`` is held in the caller (the executor is busy), and must
    still go out: an executor waiting in ``ctx.recv`` serves other calls."""
    with stratus.connect(data_dir=tmp_path / "stratus", executors=1) as app:

        @app.function(min_instances=1)
        def listen(ctx: stratus.Context) -> str:
            return str(ctx.recv(timeout=30))

        @app.function(min_instances=1)
        def speak(ctx: stratus.Context, to: str) -> None:
            ctx.send(to, "hello")

        listening = listen.remote()
        spoken = speak.remote(listening.invocation_id)
        assert listening.result(timeout=60) == "hello"
        spoken.result(timeout=60)


def test_held_calls_go_out_when_nobody_waits_on_a_future(app: stratus.App, tmp_path: Path) -> None:
    """Calls held in the caller are released by the background pump even if the caller
    never waits (fire and forget): each call leaves a file, watched without stratus."""

    @app.function
    def mark(ctx: stratus.Context, path: str) -> None:
        time.sleep(0.05)  # long enough that calls are held behind each other
        Path(path).touch()

    paths = [tmp_path / f"mark-{i}" for i in range(8)]
    futures = [mark.remote(str(p)) for p in paths]
    assert wait_until(lambda: all(p.exists() for p in paths), timeout=30)
    assert all(f.result(timeout=30) is None for f in futures)
