"""``ctx.kv_now``: writes every invocation sees at once, outside the transaction."""

from __future__ import annotations

import uuid

import pytest

import stratus
from stratus.lattice import Counter


def poll(ctx: stratus.Context, key: str) -> object:
    """``key``'s value once someone puts it; None after 30 s."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (value := ctx.kv_now.get(key)) is not None:
            return value
        time.sleep(0.005)
    return None


def test_a_put_is_seen_by_another_running_invocation(app: stratus.App) -> None:
    key = f"now/{uuid.uuid4().hex}"

    @app.function
    def announce_then_wait(ctx: stratus.Context, key: str) -> object:
        ctx.kv_now.put(key, ctx.invocation_id)
        return poll(ctx, f"{key}/answer/{ctx.invocation_id}")  # answered by who saw it

    @app.function
    def find_and_answer(ctx: stratus.Context, key: str) -> object:
        waiting = poll(ctx, key)
        ctx.kv_now.put(f"{key}/answer/{waiting}", "seen")
        return waiting

    waiting = announce_then_wait.remote(key)
    assert find_and_answer.remote(key).result(timeout=60) == waiting.invocation_id
    assert waiting.result(timeout=60) == "seen"
    assert app.kv.get(key) == waiting.invocation_id


def test_a_put_now_stays_when_the_function_fails(app: stratus.App) -> None:
    key = f"now/{uuid.uuid4().hex}"

    @app.function(retries=0)
    def put_then_fail(ctx: stratus.Context, key: str) -> None:
        ctx.kv_now.put(key, "kept")
        ctx.kv.put(key + "/buffered", "dropped")
        raise ValueError("after the put")

    with pytest.raises(stratus.RemoteError):
        put_then_fail.remote(key).result(timeout=30)
    assert app.kv.get(key) == "kept" and app.kv.get(key + "/buffered") is None


def test_reads_in_the_transaction_see_a_put_now(app: stratus.App) -> None:
    key = f"now/{uuid.uuid4().hex}"
    app.kv.put(key, "old")

    @app.function
    def overwrite(ctx: stratus.Context, key: str) -> tuple[str, str]:
        before = ctx.kv.get(key)  # cached
        ctx.kv_now.put(key, "new")
        ctx.kv_now.merge(key + "/n", Counter.delta("w", 2))
        return before, ctx.kv.get(key)

    assert overwrite.remote(key).result(timeout=30) == ("old", "new")
    assert app.kv.get(key + "/n") == 2


def test_platform_keys_are_refused(app: stratus.App) -> None:
    @app.function(retries=0)
    def sneaky(ctx: stratus.Context) -> None:
        ctx.kv_now.put("\x00stratus/registry/fn/x/0000000001", b"forged")

    with pytest.raises(stratus.RemoteError, match="ReservedKey"):
        sneaky.remote().result(timeout=30)
