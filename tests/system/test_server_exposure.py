"""``stratus up`` on all interfaces: what executors advertise, and what the data dir shows."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratus
from helpers import free_port, wait_until

pytestmark = pytest.mark.system

_STRATUS = [sys.executable, "-m", "stratus.cli"]


@pytest.fixture
def wildcard_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``stratus up --listen tcp://0.0.0.0:P --advertise 127.0.0.2``: yields (P, data dir)."""
    port, data_dir = free_port(), tmp_path / "data"
    process = subprocess.Popen(
        [
            *_STRATUS,
            "up",
            "--listen",
            f"tcp://0.0.0.0:{port}",
            "--advertise",
            "127.0.0.2",
            "--data-dir",
            str(data_dir),
            "--executors",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_until(lambda: (data_dir / "server.json").exists(), timeout=20)
        yield port, data_dir
    finally:
        if process.poll() is None:
            process.terminate()
        out, _ = process.communicate(timeout=20)
        print(out)


def test_executors_advertise_the_given_host_and_the_data_dir_is_private(
    wildcard_server: tuple[int, Path],
) -> None:
    port, data_dir = wildcard_server
    with stratus.connect(f"tcp://127.0.0.1:{port}", data_dir=data_dir) as app:
        echo = app.function(name="echo")(lambda ctx, x: x)
        assert echo.remote(5).result(timeout=30) == 5
        [executor] = app._client._executors.values()
        assert executor.tcp.startswith("tcp://127.0.0.2:")
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("key", "state.db"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


def test_advertising_a_wildcard_is_refused_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_STRATUS, "up", "--advertise", "0.0.0.0", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "cannot advertise '0.0.0.0'" in result.stderr
