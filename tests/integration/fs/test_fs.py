"""The file system on a real cluster: ctx.fs inside functions, app.fs outside, one
transaction per invocation (with its kv writes), conflicts re-run, crashes leave nothing."""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import signal
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import stratus
from stratus.cli.main import cli
from stratus.lattice import GSet


def results(futures: list[stratus.Future[object]]) -> tuple[list[object], int]:
    """The results of the calls that committed, and how many gave up on conflicts."""
    done, conflicts = [], 0
    for future in futures:
        try:
            done.append(future.result(timeout=60))
        except stratus.ConflictError:
            conflicts += 1  # nothing it wrote is visible: the invariants must still hold
    return done, conflicts


def test_functions_and_the_client_share_volumes(app: stratus.App) -> None:
    @app.function
    def note(ctx: stratus.Context, text: str) -> list[str]:
        with ctx.fs.open("/notes.txt", "a") as f:
            f.write(text + "\n")
        ctx.fs.makedirs("/by/word", exist_ok=True)
        ctx.fs.path("/by/word", text).write_text(text)
        return sorted(ctx.fs.listdir("/by/word"))

    @app.function(volume="elsewhere")
    def other(ctx: stratus.Context) -> tuple[str, bytes]:
        ctx.fs.write_bytes("/mine", b"elsewhere")
        return ctx.fs.volume_name, ctx.fs.volume("default").read_bytes("/notes.txt")

    assert note.remote("hello").result(timeout=10) == ["hello"]
    assert note.remote("world").result(timeout=10) == ["hello", "world"]
    assert other.remote().result(timeout=10) == ("elsewhere", b"hello\nworld\n")
    assert {"default", "elsewhere"} <= set(app.fs.volumes.list())
    with app.fs.transaction() as fs:
        assert fs.read_bytes("/notes.txt") == b"hello\nworld\n"
        fs.write_bytes("/from-client", b"client")
    with app.fs.transaction(volume="elsewhere") as fs:
        assert fs.listdir("/") == ["mine"]

    @app.function
    def read_client_file(ctx: stratus.Context) -> str:
        return ctx.fs.path("/from-client").read_text()

    assert read_client_file.remote().result(timeout=10) == "client"


def test_fs_and_kv_writes_of_a_failed_invocation_leave_no_trace(app: stratus.App) -> None:
    @app.function(retries=0)
    def half_done(ctx: stratus.Context) -> None:
        ctx.kv.put("half-fs/kv", 1)
        ctx.fs.mkdir("/half")
        ctx.fs.write_bytes("/half/file", b"x")
        raise ValueError("after writing")

    with pytest.raises(stratus.RemoteError) as caught:
        half_done.remote().result(timeout=10)
    assert caught.value.remote_type == "builtins.ValueError"
    assert app.kv.get("half-fs/kv") is None
    with app.fs.transaction() as fs:
        assert not fs.exists("/half")


def test_fs_errors_reach_the_caller_with_their_errno(app: stratus.App) -> None:
    @app.function
    def missing(ctx: stratus.Context) -> bytes:
        return ctx.fs.read_bytes("/no/such/file")

    with pytest.raises(stratus.RemoteError) as caught:
        missing.remote().result(timeout=10)
    assert isinstance(caught.value.exception, FileNotFoundError)
    assert caught.value.exception.errno == 2


def test_money_transfers_never_change_the_total(app: stratus.App) -> None:
    accounts = 5
    with app.fs.transaction(volume="bank") as fs:
        fs.mkdir("/accounts")
        for i in range(accounts):
            fs.path(f"/accounts/{i}").write_text("100")

    @app.function(volume="bank")
    def transfer(ctx: stratus.Context, src: int, dst: int, amount: int) -> bool:
        source, target = ctx.fs.path(f"/accounts/{src}"), ctx.fs.path(f"/accounts/{dst}")
        balance = int(source.read_text())
        if balance < amount:
            return False
        source.write_text(str(balance - amount))
        target.write_text(str(int(target.read_text()) + amount))
        ctx.kv.merge("bank/transfers", GSet(frozenset({ctx.invocation_id})))
        return True

    @app.function(volume="bank")
    def audit(ctx: stratus.Context) -> int:
        return sum(int(p.read_text()) for p in ctx.fs.path("/accounts").iterdir())

    rng = random.Random(7)
    calls = []
    for _ in range(60):
        src, dst = rng.sample(range(accounts), 2)
        calls.append(transfer.remote(src, dst, rng.randint(1, 60)))
        if len(calls) % 10 == 0:
            calls.append(audit.remote())
    done, _ = results(calls)
    audits = [r for r in done if isinstance(r, int) and not isinstance(r, bool)]
    assert audits and all(total == 100 * accounts for total in audits)
    assert audit.remote().result(timeout=10) == 100 * accounts
    moved = sum(1 for r in done if r is True)
    assert len(app.kv.get("bank/transfers", frozenset())) == moved  # kv and fs: one commit


def test_concurrent_appends_lose_nothing(app: stratus.App) -> None:
    @app.function(volume="appends")
    def append(ctx: stratus.Context, i: int) -> int:
        with ctx.fs.open("/log", "a") as f:
            f.write(f"{i}\n")
        return i

    done, _ = results([append.remote(i) for i in range(80)])
    assert len(done) > 40  # most commit; those that gave up wrote nothing
    with app.fs.transaction(volume="appends") as fs:
        lines = fs.read_bytes("/log").decode().split()
    assert sorted(map(int, lines)) == sorted(done)  # every committed append, exactly once


def test_a_reader_never_sees_half_a_rename(app: stratus.App) -> None:
    files = [f"d{i}/f{j}" for i in range(4) for j in range(5)]
    with app.fs.transaction(volume="trees") as fs:
        for name in files:
            fs.makedirs(f"/left/{os.path.dirname(name)}", exist_ok=True)
            fs.path("/left", name).write_text(name)

    @app.function(volume="trees")
    def flip(ctx: stratus.Context) -> None:
        if ctx.fs.exists("/left"):
            ctx.fs.rename("/left", "/right")
        else:
            ctx.fs.rename("/right", "/left")

    @app.function(volume="trees")
    def look(ctx: stratus.Context) -> tuple[list[str], list[str]]:
        roots = sorted(ctx.fs.listdir("/"))
        seen = [
            os.path.relpath(os.path.join(top, name), f"/{roots[0]}")
            for top, _, names in ctx.fs.walk(f"/{roots[0]}")
            for name in names
        ]
        return roots, sorted(seen)

    calls = []
    for i in range(60):
        calls.append(flip.remote() if i % 2 else look.remote())
    done, _ = results(calls)
    views = [r for r in done if r is not None]
    assert views
    for roots, seen in views:  # type: ignore[misc]
        assert roots in (["left"], ["right"]) and seen == sorted(files)


def test_a_function_that_raised_on_a_changed_state_is_run_again(app: stratus.App) -> None:
    @app.function(volume="rerun")
    def set_flag(ctx: stratus.Context) -> None:
        ctx.fs.write_bytes("/flag", b"set")

    @app.function(volume="rerun")
    def needs_flag(ctx: stratus.Context) -> str:
        if not ctx.fs.exists("/flag"):
            ctx.call("set_flag").result(timeout=20)  # commits while we still run
            raise RuntimeError("no flag")  # from a state that has changed: re-run, not this
        return "saw the flag"

    assert needs_flag.remote().result(timeout=30) == "saw the flag"


def test_a_conflict_reruns_the_invocation(app: stratus.App) -> None:
    @app.function(volume="rerun2")
    def bump(ctx: stratus.Context) -> None:
        path = ctx.fs.path("/n")
        path.write_text(str(int(path.read_text()) + 1) if path.exists() else "1")

    @app.function(volume="rerun2")
    def bump_twice(ctx: stratus.Context) -> int:
        path = ctx.fs.path("/n")
        value = int(path.read_text()) if path.exists() else 0
        if value < 2:
            ctx.call("bump").result(timeout=20)  # someone else changes what we read
        path.write_text(str(value + 10))
        return value

    assert bump_twice.remote().result(timeout=30) == 2  # runs on 0, on 1, then commits on 2
    with app.fs.transaction(volume="rerun2") as fs:
        assert fs.read_bytes("/n") == b"12"


def test_sigkill_during_a_commit_leaves_all_or_nothing(
    fresh_app: stratus.App, tmp_path: Path
) -> None:
    @fresh_app.function(volume="crash", retries=0)
    def write_many(ctx: stratus.Context, batch: int, files: int) -> None:
        import sys
        import time

        main, invoking = threading.get_ident(), sys._getframe()
        while invoking.f_code.co_name != "_invoke":  # the executor's frame running us
            invoking = invoking.f_back  # type: ignore[assignment]

        def kill_inside_commit() -> None:
            # Wait until the executor's main thread is inside the store's commit of this
            # invocation, a random while longer (the kill lands at different points of the
            # commit), then SIGKILL the executor; stop if that commit has finished.
            polls_inside = random.Random(batch).randrange(0, 40, 4)
            while True:
                frame, names, ours = sys._current_frames().get(main), [], False
                while frame is not None:  # (f_locals of another thread's frame is unsafe)
                    names.append(frame.f_code.co_name)
                    ours = ours or frame is invoking
                    frame = frame.f_back
                if not ours:
                    return  # committed (or failed) before we saw the commit
                if "commit" in names and (polls_inside := polls_inside - 1) < 0:
                    (tmp_path / f"killed-{batch}").write_text(" ".join(names))
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.0001)

        ctx.fs.mkdir(f"/batch-{batch}")
        for i in range(files):
            ctx.fs.write_bytes(f"/batch-{batch}/{i}", bytes([batch]) * 4096)
        sys.setswitchinterval(0.0001)
        threading.Thread(target=kill_inside_commit, daemon=True).start()

    killed = []
    for batch in range(4):
        try:
            write_many.remote(batch, 300).result(timeout=60)
        except stratus.ExecutorLost:
            killed.append(batch)
            assert "commit" in (tmp_path / f"killed-{batch}").read_text()
    assert killed  # at least one kill landed inside a commit
    with fresh_app.fs.transaction(volume="crash") as fs:
        for batch in range(4):
            if batch not in killed:
                assert fs.exists(f"/batch-{batch}")
            if fs.exists(f"/batch-{batch}"):  # all of it, or (above) none of it
                names = fs.listdir(f"/batch-{batch}")
                assert sorted(names, key=int) == [str(i) for i in range(300)]
                expected = bytes([batch]) * 4096
                assert all(fs.read_bytes(f"/batch-{batch}/{n}") == expected for n in names)


def test_volumes_from_the_client_and_the_cli(app: stratus.App) -> None:
    volumes = app.fs.volumes
    volumes.create("scratch")
    with pytest.raises(stratus.VolumeExists):
        volumes.create("scratch")
    assert "scratch" in volumes.list()
    volumes.delete("scratch")
    assert "scratch" not in volumes.list()
    with pytest.raises(stratus.VolumeNotFound):
        volumes.delete("scratch")

    @app.function
    def other_volume(ctx: stratus.Context) -> bool:
        return ctx.fs.volume("never-made").exists("/")

    with pytest.raises(stratus.RemoteError) as caught:
        other_volume.remote().result(timeout=10)
    assert isinstance(caught.value.exception, stratus.VolumeNotFound)
    with pytest.raises(stratus.ConfigurationError):
        app.function(volume="../up")(lambda ctx: None)

    store = ["--store", app._store_url]
    runner = CliRunner()
    assert runner.invoke(cli, ["volume", "create", "cli-made", *store]).exit_code == 0
    listed = runner.invoke(cli, ["volume", "list", *store])
    assert "cli-made" in listed.output.split()
    assert "cli-made" in app.fs.volumes.list()
    assert runner.invoke(cli, ["volume", "delete", "cli-made", *store]).exit_code == 0
    again = runner.invoke(cli, ["volume", "delete", "cli-made", *store])
    assert again.exit_code == 1 and "no volume named" in again.output


def test_client_run_retries_conflicts(app: stratus.App) -> None:
    def bump(fs: stratus.fs.FileSystem) -> int:  # type: ignore[name-defined]
        path = fs.path("/count")
        value = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(value))
        return value

    def bump_or_give_up(_: int) -> int | None:
        try:
            return app.fs.run(bump, volume="client-run", attempts=10)
        except stratus.ConflictError:
            return None  # wrote nothing

    with cf.ThreadPoolExecutor(4) as pool:
        values = [v for v in pool.map(bump_or_give_up, range(12)) if v is not None]
    assert values and sorted(values) == list(range(1, len(values) + 1))  # no lost update
    with app.fs.transaction(volume="client-run") as fs:
        assert fs.read_bytes("/count") == str(len(values)).encode()


def test_each_dag_step_commits_its_own_fs_writes(app: stratus.App) -> None:
    @app.function(volume="dag")
    def produce(ctx: stratus.Context, x: int) -> int:
        ctx.fs.write_bytes(f"/step-{x}", b"produced")
        return x

    @app.function(volume="dag")
    def consume(ctx: stratus.Context, x: int) -> bytes:
        return ctx.fs.read_bytes(f"/step-{x}")  # the upstream step has committed

    pipeline = app.dag("fs-pipeline", produce >> consume)
    assert pipeline.remote(3).result(timeout=20) == b"produced"


def test_functions_use_the_fs_on_a_redis_store(redis_url: str, tmp_path: Path) -> None:
    store = f"{redis_url.rstrip('/')}?namespace=fs-{os.getpid()}-{tmp_path.name}"
    with stratus.connect(data_dir=tmp_path / "stratus", executors=2, store=store) as app:

        @app.function
        def append(ctx: stratus.Context, i: int) -> None:
            with ctx.fs.open("/log", "a") as f:
                f.write(f"{i}\n")

        done, _ = results([append.remote(i) for i in range(20)])
        with app.fs.transaction() as fs:
            assert len(fs.read_bytes("/log").split()) == len(done) > 0
        assert "default" in app.fs.volumes.list()
