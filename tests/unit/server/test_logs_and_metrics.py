"""Per-invocation log files and the Prometheus collector, without a cluster."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from prometheus_client import generate_latest

from stratus.protocol import messages as m
from stratus.protocol.metering import LATENCY_BUCKETS
from stratus.server import logs
from stratus.server.metrics import Metrics


def call(invocation: str, function: str = "f") -> m.Call:
    return m.Call(1, invocation, function, 1, b"", 1, None, "c1")


class Running:
    """Stands for the executor's stack: which call is running, if any."""

    def __init__(self) -> None:
        self.call: m.Call | None = None

    def __call__(self) -> m.Call | None:
        return self.call


def test_prints_of_an_invocation_become_its_lines(tmp_path: Path) -> None:
    running = Running()
    out = logs.InvocationLogs(str(tmp_path), "cl", "x1", running)
    saved = sys.stdout, sys.stderr
    try:
        out.install()
        print("before any invocation")  # not captured
        running.call = call("c1.1")
        print("hello", 1)
        print("two\nlines", end="")  # the unfinished line is written when the call ends
        sys.stderr.write("oops\n")
        logging.getLogger("stratus.fn.f").info("from the logger")
        out.end_invocation()
        running.call = call("c1.2", "g")
        print("other function")
        running.call = None
    finally:
        sys.stdout, sys.stderr = saved
        fn_logger = logging.getLogger("stratus.fn")
        fn_logger.handlers.clear()
        fn_logger.propagate = True
        out.close()
    lines, cursor = logs.read(tmp_path / "logs", function="f")
    assert [(x.invocation_id, x.stream, x.text) for x in lines] == [
        ("c1.1", "stdout", "hello 1"),
        ("c1.1", "stdout", "two"),
        ("c1.1", "stderr", "oops"),
        ("c1.1", "INFO", "from the logger"),
        ("c1.1", "stdout", "lines"),
    ]
    assert [x.text for x in logs.read(tmp_path / "logs", invocation_id="c1.2")[0]] == [
        "other function"
    ]
    assert logs.read(tmp_path / "logs", function="f", cursor=cursor)[0] == []


def test_a_cursor_reads_only_new_lines_and_rotation_bounds_a_file(tmp_path: Path) -> None:
    running = Running()
    running.call = call("c1.1")
    out = logs.InvocationLogs(str(tmp_path), "cl", "x1", running, max_bytes=2000)
    directory = tmp_path / "logs"
    out.write("stdout", "first")
    first, cursor = logs.read(directory)
    assert [x.text for x in first] == ["first"]
    for i in range(50):
        out.write("stdout", f"line {i}")
    new, cursor = logs.read(directory, cursor=cursor)
    assert new  # rotated in between: the new file is read from its start
    assert (directory / "cl-x1.jsonl.1").exists()
    assert (directory / "cl-x1.jsonl").stat().st_size <= 2000 + 200
    last, _ = logs.read(directory, limit=3)
    assert [x.text for x in last] == ["line 47", "line 48", "line 49"]
    out.close()


def test_prune_deletes_the_oldest_files_first(tmp_path: Path) -> None:
    for i in range(4):
        path = tmp_path / f"c-x{i}.jsonl"
        path.write_bytes(b"x" * 100)
        os.utime(path, ns=(i * 10**9, i * 10**9))
    logs.prune(tmp_path, budget=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c-x2.jsonl", "c-x3.jsonl"]


def test_metrics_add_up_the_executors_reports() -> None:
    metrics = Metrics()
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[0], buckets[-1] = 3, 1
    report = m.FunctionMetrics("f", 4, 1, 1, 1, buckets, 400.5)
    metrics.add([report])
    metrics.add([report])
    metrics.set_pool(starting=1, warm=2, busy=1, queued=5)
    text = generate_latest(metrics.registry).decode()
    assert 'stratus_calls_total{function="f"} 8.0' in text
    assert 'stratus_errors_total{function="f"} 2.0' in text
    assert 'stratus_cold_starts_total{function="f"} 2.0' in text
    assert (
        f'stratus_invocation_duration_seconds_bucket{{function="f",le="{LATENCY_BUCKETS[0]}"}} 6.0'
        in text
    )
    assert 'stratus_invocation_duration_seconds_bucket{function="f",le="+Inf"} 8.0' in text
    assert 'stratus_invocation_duration_seconds_sum{function="f"} 801.0' in text
    assert 'stratus_executors{state="busy"} 1.0' in text
    assert "stratus_queue_length 5.0" in text
