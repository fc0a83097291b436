"""The ``stratus`` command against real ``stratus up`` processes: finding the cluster from
anywhere, ``run`` / ``invoke``, and a restart that keeps functions, DAGs and the key."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stratus
from helpers import wait_until
from stratus_up import STRATUS, Server

pytestmark = pytest.mark.system


Up = Server  # a stratus up that can be stopped and started again on the same port


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    server = Up(tmp_path / "data")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()
        print(server.output)


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``stratus ARGS`` in ``cwd`` (somewhere else than the server's directory)."""
    return subprocess.run(
        [*STRATUS, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def test_commands_find_the_cluster_from_another_directory(up: Up, elsewhere: Path) -> None:
    status = cli("status", "--json", cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    assert up.address in status.stderr and str(up.data_dir) in status.stderr
    assert "config.toml" in status.stderr  # says how it found the cluster
    assert not (elsewhere / ".stratus").exists()


def test_without_any_cluster_a_command_fails_and_says_how_to_name_one(elsewhere: Path) -> None:
    for args in (["status"], ["volume", "list"], ["invoke", "f"]):
        done = cli(*args, cwd=elsewhere)
        assert done.returncode != 0 and "stratus up" in done.stderr, done.stderr
    assert not (elsewhere / ".stratus").exists()


def test_address_from_the_environment(up: Up, elsewhere: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STRATUS_ADDRESS", up.address)
    monkeypatch.setenv("STRATUS_KEY_FILE", str(up.data_dir / "key"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(elsewhere / "no-config"))
    done = cli("status", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "$STRATUS_ADDRESS" in done.stderr


def test_volumes_are_made_in_the_clusters_store_wherever_the_command_runs(
    up: Up, elsewhere: Path
) -> None:
    created = cli("volume", "create", "shared", cwd=elsewhere)
    assert created.returncode == 0, created.stderr
    assert str(up.data_dir / "state.db") in created.stderr
    listed = cli("volume", "list", "--data-dir", str(up.data_dir), cwd=elsewhere)
    assert listed.stdout.split() == ["shared"]
    with stratus.connect(up.address, data_dir=up.data_dir) as app:
        fs = app.lookup  # the server's own functions see the same volume

        @app.function(volume="shared")
        def has_root(ctx: stratus.Context) -> bool:
            return bool(ctx.fs.exists("/"))

        assert fs("has_root").remote().result(timeout=30) is True


def test_logs_of_an_unknown_function_fail(up: Up, elsewhere: Path) -> None:
    done = cli("logs", "nosuch", cwd=elsewhere)
    assert done.returncode != 0 and "nosuch" in done.stderr


def test_status_shows_wall_clock_times(up: Up, elsewhere: Path) -> None:
    before = time.time()
    with stratus.connect(up.address, data_dir=up.data_dir) as app:
        app.function(name="timed")(lambda ctx: 1).remote().result(timeout=30)
    done = cli("status", "--json", cwd=elsewhere)
    pool = next(p for p in json.loads(done.stdout)["pools"] if p["function"] == "timed")
    assert before - 1 <= pool["changed_at"] <= time.time() + 1
    table = cli("status", cwd=elsewhere).stdout
    assert time.strftime("%Y-%m-%d", time.localtime(pool["changed_at"])) in table


def test_piped_tables_are_not_cut(up: Up, elsewhere: Path) -> None:
    name = "a_function_whose_name_is_much_longer_than_a_terminal_column_allows_" + "x" * 40
    with stratus.connect(up.address, data_dir=up.data_dir) as app:
        app.function(name=name)(lambda ctx: 1).remote().result(timeout=30)
    assert wait_until(lambda: name in cli("usage", "--period", "all", cwd=elsewhere).stdout, 30)
    assert name in cli("status", cwd=elsewhere).stdout


def test_run_a_function_from_a_file_then_invoke_it(up: Up, elsewhere: Path) -> None:
    (elsewhere / "helper.py").write_text("def twice(x):\n    return 2 * x\n")
    (elsewhere / "job.py").write_text(
        textwrap.dedent(
            """
            from helper import twice

            def add(ctx, a, b=0):
                return twice(a) + b

            def fails(ctx):
                raise ValueError("nope")

            def slow(ctx):
                import time
                time.sleep(5)

            if __name__ == "__main__":
                raise SystemExit("the __main__ block must not run")
            """
        )
    )
    run = cli("run", "job.py::add", "20", "2", cwd=elsewhere)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "42" and up.address in run.stderr
    assert cli("run", "job.py::add", "-1", cwd=elsewhere).stdout.strip() == "-2"
    assert cli("invoke", "add", "[1, 2]", cwd=elsewhere).stdout.strip() == "4"
    assert cli("invoke", "add", '{"a": 3, "b": 1}', cwd=elsewhere).stdout.strip() == "7"
    assert cli("invoke", "add", "5", cwd=elsewhere).stdout.strip() == "10"
    failed = cli("run", "job.py::fails", cwd=elsewhere)
    assert failed.returncode != 0
    assert "ValueError: nope" in failed.stderr and "Traceback" in failed.stderr
    late = cli("run", "job.py::slow", "--timeout", "0.5", cwd=elsewhere)
    assert late.returncode != 0 and "no result in time" in late.stderr, late.stderr
    missing = cli("invoke", "nosuch", cwd=elsewhere)
    assert missing.returncode != 0 and "nosuch" in missing.stderr
    bad = cli("invoke", "add", "{not json", cwd=elsewhere)
    assert bad.returncode != 0 and "not JSON" in bad.stderr
    for target in ("job.py", "job.py::nothere", "gone.py::add"):
        done = cli("run", target, cwd=elsewhere)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr


def test_a_restart_keeps_functions_dags_and_the_key(up: Up, tmp_path: Path) -> None:
    key = (up.data_dir / "key").read_text()
    with stratus.connect(up.address, data_dir=up.data_dir) as app:

        @app.function
        def incr(ctx: stratus.Context, x: int) -> int:
            return x + 1

        @app.function
        def square(ctx: stratus.Context, x: int) -> int:
            return x * x

        app.function(name="incr", timeout=20.0)(lambda ctx, x: x + 100)  # version 2
        app.dag("pipeline", incr >> square)
        assert app.lookup("pipeline").remote(3).result(timeout=30) == 103**2
    up.stop()

    # Meanwhile someone without the key writes a function into the store.
    from stratus.kv.open import open_store
    from stratus.protocol import keys
    from stratus.server.saved_registry import SavedFunction, sign

    forged_key = keys.registry_function("evil", 1)
    forged = sign(b"x" * 32, forged_key, SavedFunction("evil", 1, b"\x80\x04N.", incr.options))
    with open_store(f"sqlite:{up.data_dir / 'state.db'}") as store:
        store.put(forged_key, forged)

    up.start()
    assert (up.data_dir / "key").read_text() == key
    with stratus.connect(up.address, data_dir=up.data_dir) as app:  # the same key file
        assert app.lookup("incr").remote(1).result(timeout=30) == 101
        assert app.lookup("pipeline").remote(3).result(timeout=30) == 103**2
        (info,) = [f for f in app.status().functions if f.name == "incr"]
        assert info.version == 2 and info.options.timeout == 20.0
        assert app.function(name="incr")(lambda ctx, x: x).version == 3
        with pytest.raises(stratus.FunctionNotFound):
            app.lookup("evil")
    up.stop()
    assert "registry entry refused" in up.output and "evil" in up.output
