"""``app.put(obj) -> Ref``: objects larger than a frame, in chunks, cached by executors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import msgspec
import pytest

import stratus
from stratus.kv.open import open_store
from stratus.objects import Manifest, object_name
from stratus.protocol import keys
from stratus.store.base import Store

MAX_PAYLOAD = 4 << 20


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stratus.App]:
    """One executor (every call runs on the same one) and frames of at most 4 MiB."""
    data_dir = tmp_path_factory.mktemp("stratus")
    with stratus.connect(data_dir=data_dir, executors=1, max_payload=MAX_PAYLOAD) as app:
        yield app


@pytest.fixture
def store(app: stratus.App) -> Iterator[Store]:
    """The cluster's store, opened beside it, to look at and damage the chunks."""
    opened = open_store(app.store_url)
    yield opened
    opened.close()


def chunk_keys(store: Store, ref: stratus.Ref) -> list[str]:
    """The keys of the chunks of the object ``ref`` names, from its manifest."""
    manifest = msgspec.msgpack.decode(store.get(ref.key).value or b"", type=Manifest)
    return [keys.object_chunk(manifest.chunks_id, n) for n in range(manifest.chunks)]


def summary(data: bytes | list[int]) -> tuple[int, str]:
    raw = data if isinstance(data, bytes) else repr(data).encode()
    return len(data), hashlib.sha256(raw).hexdigest()


@pytest.fixture(scope="module")
def measure(app: stratus.App) -> stratus.Function:
    @app.function(memory_mb=1024)
    def measure(ctx: stratus.Context, data: bytes | list[int]) -> tuple[int, str, str]:
        raw = data if isinstance(data, bytes) else repr(data).encode()
        return len(data), hashlib.sha256(raw).hexdigest(), ctx.executor_id

    return measure  # type: ignore[no-any-return]


def test_a_50_mb_object_is_read_once_by_a_warm_executor(
    app: stratus.App, store: Store, measure: stratus.Function
) -> None:
    data = os.urandom(50 << 20)
    ref = app.put(data)
    size, digest, first = measure.remote(ref).result(timeout=60)
    assert (size, digest) == summary(data)
    # Only the manifest stays: an executor that read the chunks again would fail.
    chunks = chunk_keys(store, ref)
    assert len(chunks) == 50 and all(store.get(k).value for k in chunks)
    for key in chunks:
        store.delete(key)
    size, digest, second = measure.remote(ref).result(timeout=60)
    assert (size, digest, second) == (*summary(data), first)


def test_a_list_travels_as_a_ref_and_comes_back_from_app_get(
    app: stratus.App, measure: stratus.Function
) -> None:
    data = list(range(1_000_000))  # ~5 MB pickled: over a frame
    ref = app.put(data, key="numbers")
    assert object_name(ref) == "numbers"
    assert measure.remote(ref).result(timeout=60)[:2] == summary(data)
    assert measure.remote(data=ref).result(timeout=60)[:2] == summary(data)
    assert app.get(ref) == data
    with pytest.raises(stratus.ObjectExists):
        app.put([1], key="numbers")


@pytest.mark.parametrize("damage", ["forged", "truncated"])
def test_a_damaged_chunk_is_refused_with_a_typed_error(
    app: stratus.App, store: Store, measure: stratus.Function, damage: str
) -> None:
    ref = app.put(os.urandom(3 << 20))
    victim = chunk_keys(store, ref)[1]
    good = store.get(victim).value or b""
    store.put(victim, bytes(len(good)) if damage == "forged" else good[: len(good) // 2])
    with pytest.raises(stratus.ObjectCorrupt, match=r"was not loaded|chunk 1"):
        measure.remote(ref).result(timeout=60)
    with pytest.raises(stratus.ObjectCorrupt):
        app.get(ref)


def test_a_deleted_object_is_not_found(app: stratus.App, measure: stratus.Function) -> None:
    ref = app.put(b"short-lived" * 1000)
    assert measure.remote(ref).result(timeout=60)[0] == 11_000
    app.delete(ref)
    with pytest.raises(stratus.ObjectNotFound):
        measure.remote(ref).result(timeout=60)  # the executor's cached copy is not used
    with pytest.raises(stratus.ObjectNotFound):
        app.get(ref)


def test_payload_too_large_says_to_put_the_value(
    app: stratus.App, measure: stratus.Function
) -> None:
    big = b"x" * (MAX_PAYLOAD + 1)
    with pytest.raises(stratus.PayloadTooLarge, match=r"use app\.put\(value\) and pass the Ref"):
        measure.remote(big)
    assert measure.remote(app.put(big)).result(timeout=60)[0] == len(big)


def test_a_result_over_a_frame_is_returned_as_a_ref_by_ctx_put(app: stratus.App) -> None:
    @app.function
    def make(ctx: stratus.Context, n: int, put: bool) -> bytes | stratus.Ref:
        data = bytes(range(256)) * (n // 256)
        return ctx.put(data) if put else data

    with pytest.raises(stratus.PayloadTooLarge, match=r"ctx\.put\(value\)"):
        make.remote(MAX_PAYLOAD, False).result(timeout=60)
    ref = make.remote(MAX_PAYLOAD, True).result(timeout=60)
    assert isinstance(ref, stratus.Ref)
    assert app.get(ref) == bytes(range(256)) * (MAX_PAYLOAD // 256)


def test_a_remote_app_without_the_store_url_is_told_what_put_needs(app: stratus.App) -> None:
    with (
        stratus.connect(app.address, key=app._key) as remote,
        pytest.raises(stratus.ConfigurationError, match="store=URL"),
    ):
        remote.put(b"x")
