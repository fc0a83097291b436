"""``stratus usage``, ``stratus logs`` and ``/metrics`` against a ``stratus up`` server."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratus
from helpers import free_port, wait_until

pytestmark = pytest.mark.system

STRATUS = [sys.executable, "-m", "stratus.cli"]
_OPTIONS = ["--executors", "2", "--metrics"]


class Server:
    def __init__(self, data_dir: Path, metrics: str) -> None:
        self.data_dir = data_dir
        self.metrics = metrics
        self.address = f"tcp://127.0.0.1:{free_port()}"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*STRATUS, *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as reply:
            body: bytes = reply.read()
        return body.decode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data", f"127.0.0.1:{free_port()}")
    process = subprocess.Popen(
        [
            *STRATUS,
            "up",
            "--listen",
            s.address,
            "--data-dir",
            str(s.data_dir),
            *_OPTIONS,
            s.metrics,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_until(lambda: (s.data_dir / "server.json").exists(), timeout=30)
        yield s
    finally:
        process.terminate()
        print(process.communicate(timeout=30)[0])


def test_usage_logs_and_metrics_after_calls(server: Server) -> None:
    with stratus.connect(server.address, data_dir=server.data_dir) as app:

        @app.function(memory_mb=1024)
        def greet(ctx: stratus.Context, name: str) -> str:
            print(f"hello {name}")
            ctx.logger.info("greeted %s", name)
            return name

        @app.function
        def fail(ctx: stratus.Context) -> None:
            raise RuntimeError("down")

        futures = [greet.remote(f"n{i}") for i in range(7)]
        ids = [f.invocation_id for f in futures]
        assert [f.result(timeout=30) for f in futures] == [f"n{i}" for i in range(7)]
        with pytest.raises(stratus.RemoteError):
            fail.remote().result(timeout=30)

        assert wait_until(lambda: app.usage(period="all").total.calls == 8, timeout=30)
        assert app.status().metrics == server.metrics

    # stratus usage: the table, and the same totals as JSON
    table = server.cli("usage", "--period", "all")
    assert "greet" in table and "fail" in table and "total" in table
    assert "aws.amazon.com/lambda/pricing" in table
    data = json.loads(server.cli("usage", "--json", "--function", "greet"))
    (row,) = data["rows"]
    assert (row["function"], row["calls"], row["errors"]) == ("greet", 7, 0)
    assert data["total"]["gb_seconds"] == pytest.approx(row["billed_ms"] / 1000)  # 1 GB
    assert data["prices"]["per_gb_second"] == 0.0000166667
    cheap = json.loads(
        server.cli("usage", "--json", "--per-gb-second", "0", "--per-million-requests", "1")
    )
    assert cheap["total"]["cost"] == pytest.approx(8 / 1e6)

    # stratus logs: what greet printed and logged, per invocation
    out = server.cli("logs", "greet")
    for i in range(7):
        assert f"stdout: hello n{i}" in out
        assert f"INFO: greeted n{i}" in out
    one = server.cli("logs", "greet", "--invocation", ids[3])
    assert "hello n3" in one and "hello n4" not in one
    assert ids[3] in one

    # /metrics: counts arrive with the executors' next load report
    def counted() -> bool:
        text = server.scrape()
        return (
            'stratus_calls_total{function="greet"} 7.0' in text
            and 'stratus_errors_total{function="fail"} 1.0' in text
        )

    assert wait_until(counted, timeout=30)
    text = server.scrape()
    assert 'stratus_invocation_duration_seconds_count{function="greet"} 7.0' in text
    assert 'stratus_executors{state="warm"} 2.0' in text
    assert "stratus_cold_starts_total" in text


def test_logs_follow_prints_new_lines(server: Server) -> None:
    follow = subprocess.Popen(
        [*STRATUS, "logs", "echo", "--follow", "--data-dir", str(server.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with stratus.connect(server.address, data_dir=server.data_dir) as app:

            @app.function
            def echo(ctx: stratus.Context, text: str) -> None:
                print(text)

            echo.remote("first line").result(timeout=30)
            echo.remote("second line").result(timeout=30)
        assert follow.stdout is not None
        seen = [follow.stdout.readline(), follow.stdout.readline()]
        assert "stdout: first line" in seen[0]
        assert "stdout: second line" in seen[1]
    finally:
        follow.terminate()
        follow.communicate(timeout=10)
