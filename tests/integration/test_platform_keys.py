"""The platform's own keys (the file system's, metering's) stay out of the user's kv."""

from __future__ import annotations

import pytest

import stratus
from stratus.fs import keys as fs_keys
from stratus.lattice import GSet
from stratus.protocol import keys


def test_the_file_systems_prefix_is_a_platform_prefix() -> None:
    assert fs_keys.ROOT == keys.FS and keys.FS in keys.PLATFORM
    assert keys.is_reserved(fs_keys.volume_record("default"))
    assert not keys.is_reserved("fsx") and not keys.is_reserved("my/fs/key")


def write_a_file(app: stratus.App) -> None:
    @app.function
    def save(ctx: stratus.Context) -> None:
        with ctx.fs.open("/note.txt", "w") as f:
            f.write("hello")

    save.remote().result(timeout=10)


def test_listings_leave_the_file_systems_keys_out(app: stratus.App) -> None:
    write_a_file(app)
    app.kv.put("user-key", 1)

    @app.function
    def listing(ctx: stratus.Context, prefix: str) -> list[str]:
        return ctx.kv.keys(prefix)

    assert app.kv.keys() == ["user-key"] and app.kv.keys("fs/") == []
    assert listing.remote("").result(timeout=10) == ["user-key"]
    assert listing.remote("fs/").result(timeout=10) == []
    app.kv.delete("user-key")


@pytest.mark.parametrize("op", ["put", "merge", "delete"])
def test_app_kv_refuses_to_write_a_platform_key(app: stratus.App, op: str) -> None:
    write_a_file(app)
    key = fs_keys.volume_record("default")
    with pytest.raises(stratus.ReservedKey, match="belongs to the stratus platform"):
        if op == "delete":
            app.kv.delete(key)
        else:
            getattr(app.kv, op)(key, GSet(frozenset({1})))
    assert "default" in app.fs.volumes.list()  # the volume is intact


@pytest.mark.parametrize("consistency", ["eventual", "causal", "serializable"])
def test_ctx_kv_refuses_to_write_a_platform_key(app: stratus.App, consistency: str) -> None:
    write_a_file(app)

    @app.function(name=f"clobber_{consistency}", consistency=consistency)
    def clobber(ctx: stratus.Context, key: str) -> None:
        ctx.kv.put(key, "oops")

    with pytest.raises(stratus.RemoteError) as caught:
        clobber.remote(fs_keys.volume_record("default")).result(timeout=10)
    error = caught.value
    assert error.remote_type == "stratus._exceptions.ReservedKey"
    assert isinstance(error.exception, stratus.ReservedKey)
    assert "ctx.kv.put(key" in error.remote_traceback  # the user's line

    @app.function
    def read_note(ctx: stratus.Context) -> str:
        with ctx.fs.open("/note.txt") as f:
            return str(f.read())

    assert read_note.remote().result(timeout=10) == "hello"
