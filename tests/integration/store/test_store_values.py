"""Values in a real Redis store: data, sealed objects, and forgeries written past stratus.

Whoever can write to Redis can put any bytes under a key. A pickle there must not run in
the coordinator (``app.kv``) or an executor (``ctx.kv``, ``Ref`` arguments): the read
fails with ``ForgedValue``, nothing is loaded, and the cluster serves on.
"""

from __future__ import annotations

import datetime
import fractions
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

import stratus
from forged import forged_register, trap
from stratus.kv.open import open_store


@pytest.fixture
def namespace() -> str:
    return f"values-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def app(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[stratus.App]:
    store = f"{redis_url}?namespace={namespace}"
    with stratus.connect(data_dir=tmp_path / "data", store=store, executors=2) as app:
        yield app


def forge(redis_url: str, namespace: str, key: str, value: bytes) -> None:
    """Overwrite ``key``'s bytes with redis-py, as anyone with access to Redis can."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.hset(f"{{{namespace}}}:values", key, value)
    finally:
        client.close()


OBJECTS: list[Any] = [
    (1, "a"),
    frozenset({1, 2}),
    fractions.Fraction(1, 3),
    datetime.date(2026, 12, 6),
    {1: "int key"},
    [1, (2, 3)],
]
DATA: list[Any] = [None, True, 7, 2.5, "text", b"bytes", [1, [2]], {"k": {"n": [None]}}]


def test_objects_and_data_keep_their_types_through_the_store(app: stratus.App) -> None:
    @app.function
    def store_all(ctx: stratus.Context, values: list[Any]) -> list[Any]:
        for i, value in enumerate(values):
            ctx.kv.put(f"v{i}", value)
        return values

    @app.function
    def read_all(ctx: stratus.Context, n: int) -> list[Any]:
        return [ctx.kv.get(f"v{i}") for i in range(n)]

    values = OBJECTS + DATA
    store_all.remote(values).result(timeout=30)
    in_function = read_all.remote(len(values)).result(timeout=30)
    through_app = [app.kv.get(f"v{i}") for i in range(len(values))]
    for got in (in_function, through_app):
        assert got == values
        assert [type(v) for v in got] == [type(v) for v in values]


def test_a_forged_value_is_refused_and_the_cluster_serves_on(
    app: stratus.App, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    ran = tmp_path / "forged pickle ran"
    app.kv.put("victim", "genuine")
    app.kv.put("neighbour", (1, "sealed"))
    forge(redis_url, namespace, "victim", forged_register(trap(ran)))

    with pytest.raises(stratus.ForgedValue):  # in the coordinator
        app.kv.get("victim")

    @app.function
    def read(ctx: stratus.Context, key: str) -> Any:
        return ctx.kv.get(key)

    @app.function
    def take(ctx: stratus.Context, value: Any) -> Any:
        return value

    with pytest.raises(stratus.ForgedValue):  # in an executor
        read.remote("victim").result(timeout=30)
    with pytest.raises(stratus.ForgedValue):  # a Ref argument
        take.remote(stratus.Ref("victim")).result(timeout=30)
    with pytest.raises(stratus.ForgedValue):  # a put merges with the forged bytes
        app.kv.put("victim", "overwritten")
    # A bare pickle in the layout of old releases, which loaded it.
    forge(redis_url, namespace, "old", msgspec.msgpack.encode(["lww", 1, 0, "n", trap(ran)]))
    with pytest.raises(stratus.StratusError, match="before values were sealed"):
        app.kv.get("old")
    with pytest.raises(stratus.StratusError, match="before values were sealed"):
        read.remote("old").result(timeout=30)
    assert not ran.exists()

    # The cluster serves on; the forged key is cleared by deleting it.
    assert read.remote("neighbour").result(timeout=30) == (1, "sealed")
    assert app.kv.get("neighbour") == (1, "sealed")
    app.kv.delete("victim")
    app.kv.put("victim", "restored")
    assert read.remote("victim").result(timeout=30) == "restored"
    assert not ran.exists()


def test_a_store_opened_without_the_key_cannot_seal_or_open_objects(
    app: stratus.App, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    app.kv.put("object", (1, 2))
    with open_store(f"{redis_url}?namespace={namespace}") as keyless:  # data only
        ran = tmp_path / "ran"
        keyless.put("planted", forged_register(trap(ran)))  # the full write path
        with pytest.raises(stratus.ForgedValue):
            app.kv.get("planted")
        with pytest.raises(stratus.SerializationError, match="cluster key"):
            keyless.merge("object", keyless.get("object").value or b"")
    assert app.kv.get("object") == (1, 2)
    assert not ran.exists()
