"""The kv store on a real cluster: ctx.kv inside functions, app.kv outside, atomic
commits at return, serializable re-runs, DAG writes committed at the sink."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
from pathlib import Path

import pytest

import stratus
from stratus.lattice import Counter, GSet


def test_app_kv_round_trip(app: stratus.App) -> None:
    assert app.kv.get("nothing", "default") == "default"
    version = app.kv.put("greeting", {"text": "hello"})
    assert version > 0 and app.kv.get("greeting") == {"text": "hello"}
    app.kv.merge("tags", GSet(frozenset({"a"})))
    app.kv.merge("tags", GSet(frozenset({"b"})))
    assert app.kv.get("tags") == frozenset({"a", "b"})
    assert isinstance(app.kv.get_lattice("tags"), GSet)
    assert "greeting" in app.kv.keys("gree")
    app.kv.delete("greeting")
    assert app.kv.get("greeting") is None and "greeting" not in app.kv.keys(prefix="")


def test_function_reads_and_writes_and_client_sees_it(app: stratus.App) -> None:
    @app.function
    def visit(ctx: stratus.Context, user: str) -> int:
        seen = ctx.kv.get(f"visits/{user}", 0) + 1
        ctx.kv.put(f"visits/{user}", seen)
        assert ctx.kv.get(f"visits/{user}") == seen  # reads see own writes
        return int(seen)

    assert [visit.remote("ann").result(timeout=10) for _ in range(3)] == [1, 2, 3]
    assert app.kv.get("visits/ann") == 3


def test_writes_of_a_failed_invocation_leave_no_trace(app: stratus.App) -> None:
    @app.function(retries=0)
    def half_done(ctx: stratus.Context, crash: bool) -> None:
        ctx.kv.put("half/a", 1)
        ctx.kv.put("half/b", 2)
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)
        raise ValueError("after writing")

    with pytest.raises(stratus.RemoteError):
        half_done.remote(False).result(timeout=10)
    with pytest.raises(stratus.ExecutorLost):
        half_done.remote(True).result(timeout=20)
    assert app.kv.keys("half/") == []


def test_counter_increments_from_many_calls(app: stratus.App) -> None:
    @app.function(consistency="serializable")
    def bump(ctx: stratus.Context) -> None:
        current = ctx.kv.get_lattice("bumps") or Counter()
        ctx.kv.merge("bumps", Counter.delta(ctx.executor_id, 1, base=current))

    futures = [bump.remote() for _ in range(100)]
    for f in futures:
        f.result(timeout=30)
    assert app.kv.get("bumps") == 100


def test_serializable_transfers_keep_the_total(app: stratus.App) -> None:
    accounts = [f"acct/{i}" for i in range(4)]
    for key in accounts:
        app.kv.put(key, 100)

    @app.function(consistency="serializable")
    def transfer(ctx: stratus.Context, src: str, dst: str, amount: int) -> bool:
        balance = ctx.kv.get(src)
        if balance < amount:
            return False
        ctx.kv.put(src, balance - amount)
        ctx.kv.put(dst, ctx.kv.get(dst) + amount)
        return True

    moves = [(accounts[i % 4], accounts[(i * 7 + 1) % 4], 1 + i % 13) for i in range(200)]
    moves = [(s, d, a) for s, d, a in moves if s != d]
    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(lambda m: transfer.remote(*m).result(timeout=60), m) for m in moves]
        outcomes = [f.result() for f in futures]
    assert any(outcomes)
    assert sum(app.kv.get(key) for key in accounts) == 400


def test_serializable_gives_up_with_conflict_error(app: stratus.App) -> None:
    @app.function(consistency="serializable", retries=0)
    def always_conflicts(ctx: stratus.Context) -> None:
        ctx.kv.get("contended")
        app_kv_put = ctx.call("meddle").result()  # another invocation changes what we read
        ctx.kv.put("never", app_kv_put)

    @app.function
    def meddle(ctx: stratus.Context) -> int:
        ctx.kv.put("contended", os.urandom(4))
        return 1

    with pytest.raises(stratus.ConflictError):
        always_conflicts.remote().result(timeout=30)
    assert app.kv.get("never") is None


def test_dag_writes_commit_at_the_sink(app: stratus.App) -> None:
    @app.function
    def stage_one(ctx: stratus.Context, x: int) -> int:
        ctx.kv.put("dag/one", x)
        return x + 1

    @app.function
    def stage_two(ctx: stratus.Context, x: int) -> int:
        assert ctx.kv.get("dag/one") == x - 1  # the upstream step's write is visible
        ctx.kv.put("dag/two", x)
        if x > 100:
            raise RuntimeError("sink fails")
        return x * 2

    dag = app.dag("kv-dag", stage_one >> stage_two)
    assert dag.remote(1).result(timeout=10) == 4
    assert (app.kv.get("dag/one"), app.kv.get("dag/two")) == (1, 2)
    with pytest.raises(stratus.RemoteError):
        dag.remote(500).result(timeout=10)
    assert (app.kv.get("dag/one"), app.kv.get("dag/two")) == (1, 2)


def test_refs_are_resolved_by_the_executor_and_stick_to_it(app: stratus.App) -> None:
    app.kv.put("arrays/1", list(range(10)))
    app.kv.put("arrays/2", list(range(100)))
    app.kv.put("scale", 2)

    @app.function
    def total(ctx: stratus.Context, *parts: list[int], scale: int = 1) -> tuple[int, int]:
        return sum(sum(p) for p in parts) * scale, os.getpid()

    refs = (stratus.Ref("arrays/1"), stratus.Ref("arrays/2"))
    results = [total.remote(*refs, scale=stratus.Ref("scale")).result(timeout=10) for _ in range(5)]
    assert {value for value, _ in results} == {(45 + 4950) * 2}
    assert len({pid for _, pid in results}) == 1  # every call went where the keys are cached
    with pytest.raises(TypeError):
        stratus.Ref("")


def test_invocations_exchange_messages(app: stratus.App) -> None:
    @app.function(timeout=30)
    def ping_pong(ctx: stratus.Context, rounds: int) -> list[str]:
        partner = ctx.call("ponger", ctx.invocation_id, rounds)
        partner_id = ctx.recv(timeout=10)  # the partner says who it is first
        heard = []
        for i in range(rounds):
            ctx.send(partner_id, f"ping {i}")
            heard.append(ctx.recv(timeout=10))
        partner.result()
        return heard

    @app.function(timeout=30)
    def ponger(ctx: stratus.Context, caller: str, rounds: int) -> None:
        ctx.send(caller, ctx.invocation_id)
        for _ in range(rounds):
            ctx.send(caller, ctx.recv(timeout=10).replace("ping", "pong"))

    assert ping_pong.remote(3).result(timeout=30) == ["pong 0", "pong 1", "pong 2"]


def test_recv_times_out(app: stratus.App) -> None:
    @app.function
    def lonely(ctx: stratus.Context) -> str:
        try:
            ctx.recv(timeout=0.1)
        except TimeoutError:
            return "nobody wrote"
        return "unexpected"

    assert lonely.remote().result(timeout=10) == "nobody wrote"


@pytest.mark.parametrize("store", ["lmdb", "sqlite"])
def test_a_cluster_serves_state_from_each_embedded_store(tmp_path: Path, store: str) -> None:
    # LMDB allows one environment per process: executors must not inherit the coordinator's.
    url = f"{store}:{tmp_path / 'state'}"
    with stratus.connect(data_dir=tmp_path / "data", store=url, executors=2) as app:

        @app.function(consistency="serializable")
        def bump(ctx: stratus.Context, key: str) -> int:
            count = int(ctx.kv.get(key, 0)) + 1
            ctx.kv.put(key, count)
            return count

        assert [bump.remote("k").result(timeout=30) for _ in range(3)] == [1, 2, 3]
        assert app.kv.get("k") == 3
