"""``stratus up`` as a long-lived server: many clients, the CLI, keys, shutdown."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratus
from helpers import alive, free_port, wait_until

pytestmark = pytest.mark.system

_STRATUS = [sys.executable, "-m", "stratus.cli"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A ``stratus up`` process on a free loopback port; yields (address, data dir)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [*_STRATUS, "up", "--listen", address, "--data-dir", str(data_dir), "--executors", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_until(lambda: (data_dir / "server.json").exists(), timeout=20)
        yield address, data_dir
    finally:
        if process.poll() is None:
            process.terminate()
        out, _ = process.communicate(timeout=20)
        print(out)


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_STRATUS, *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_many_clients_share_a_server(server: tuple[str, Path]) -> None:
    address, data_dir = server
    with stratus.connect(address, data_dir=data_dir) as owner:

        @owner.function
        def shout(ctx: stratus.Context, text: str) -> str:
            return text.upper()

    def client(i: int) -> list[str]:
        with stratus.connect(address, data_dir=data_dir) as app:
            fn = app.lookup("shout")
            return [fn.remote(f"c{i}-{j}").result(timeout=10) for j in range(50)]

    with cf.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(client, range(4)))
    assert results == [[f"C{i}-{j}" for j in range(50)] for i in range(4)]


def test_clients_in_other_processes(server: tuple[str, Path]) -> None:
    address, data_dir = server
    script = textwrap.dedent(
        f"""
        import stratus
        with stratus.connect({address!r}, data_dir={str(data_dir)!r}) as app:
            f = app.function(name="mul")(lambda ctx, a, b: a * b)
            print(f.remote(6, 7).result(timeout=10))
        """
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        for _ in range(3)
    ]
    assert [r.stdout.strip() for r in runs] == ["42"] * 3, [r.stderr for r in runs]


def test_key_from_environment_and_wrong_key(server: tuple[str, Path], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    address, data_dir = server
    key = (data_dir / "key").read_text().strip()
    assert oct((data_dir / "key").stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("STRATUS_KEY", key)
    with stratus.connect(address, data_dir="/nonexistent") as app:
        assert app.status().cluster_id
    monkeypatch.setenv("STRATUS_KEY", "00" * 32)
    with pytest.raises(stratus.ConnectionFailed):
        stratus.connect(address, data_dir="/nonexistent")


def test_status_and_down(server: tuple[str, Path]) -> None:
    address, data_dir = server
    with stratus.connect(address, data_dir=data_dir) as app:
        app.function(name="listed")(lambda ctx: 1).remote().result(timeout=10)
        pids = [e.pid for e in app.status().executors]
    status = _cli("status", "--json", data_dir=data_dir)
    assert status.returncode == 0, status.stderr
    reply = json.loads(status.stdout)
    assert reply["executors"] and [f["name"] for f in reply["functions"]] == ["listed"]
    assert [p["function"] for p in reply["pools"]] == ["listed"]
    table = _cli("status", data_dir=data_dir)
    assert "listed" in table.stdout and "ready" in table.stdout
    down = _cli("down", data_dir=data_dir)
    assert down.returncode == 0, down.stderr
    assert wait_until(lambda: not (data_dir / "server.json").exists(), timeout=20)
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout=20)


def test_cli_reports_a_missing_server_clearly(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "d")
    (tmp_path / "d" / "key").write_text("00" * 32)
    result = _cli("status", "--address", f"tcp://127.0.0.1:{free_port()}", data_dir=tmp_path / "d")
    assert result.returncode != 0 and "cannot reach a server" in result.stderr


def test_up_on_a_busy_port_fails_clearly(server: tuple[str, Path], tmp_path: Path) -> None:
    address, _ = server
    result = subprocess.run(
        [*_STRATUS, "up", "--listen", address, "--data-dir", str(tmp_path / "other")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "cannot listen" in result.stderr


@pytest.fixture
def redis_store(redis_url: str) -> str:
    return f"{redis_url.rstrip('/')}?namespace=up-{free_port()}"


def test_a_server_keeps_its_state_in_redis(tmp_path: Path, redis_store: str) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [*_STRATUS, "up", "--listen", address, "--data-dir", str(data_dir), "--store", redis_store],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_until(lambda: (data_dir / "server.json").exists(), timeout=20)
        with stratus.connect(address, data_dir=data_dir) as app:

            @app.function
            def remember(ctx: stratus.Context, text: str) -> None:
                ctx.kv.put("memo", text)

            remember.remote("in redis").result(timeout=10)
            assert app.kv.get("memo") == "in redis"
        from stratus.kv.open import open_store

        with open_store(redis_store) as store:  # straight from Redis, no stratus process
            assert store.get("memo").version > 0
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_up_with_an_unreachable_store_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *_STRATUS,
            "up",
            "--listen",
            f"tcp://127.0.0.1:{free_port()}",
            "--data-dir",
            str(tmp_path),
            "--store",
            "redis://127.0.0.1:1/0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "Redis store" in result.stderr
