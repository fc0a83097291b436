"""Random sequences of file operations applied to a volume and to a local temporary
directory must give the same results and the same errno (Hypothesis stateful testing)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from stratus.fs import FileSystem, FsSession, Volumes
from stratus.kv.values import merge_encoded
from stratus.store import MemoryStore

PATHS = st.sampled_from(["a", "b", "c", "a/b", "a/c", "b/a", "a/b/c", "c/a/b", "a/", "b/"])
DATA = st.binary(max_size=24)
OFFSETS = st.sampled_from([0, 3, 65530, 65536, 131070])  # across the 64 KiB chunks


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except OSError as e:
        return "error", e.errno


def kind(mode: int) -> str:
    return "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "file"


class VolumeMatchesLocalDirectory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="stratus-diff-")
        self.store = MemoryStore(merge_encoded)
        self.volumes = Volumes(self.store)
        self.session = FsSession(self.volumes, "diff")
        self.fs: FileSystem = self.session.fs

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.store.close()

    def local(self, path: str) -> str:
        return os.path.join(self.root, path)

    def same(self, local: Callable[[], Any], volume: Callable[[], Any]) -> None:
        expected, got = outcome(local), outcome(volume)
        assert got == expected, (expected, got)

    @rule()
    def commit_and_continue(self) -> None:
        self.session.finish()
        assert self.session.txn.commit(self.store).ok
        self.session = FsSession(self.volumes, "diff")
        self.fs = self.session.fs

    @rule(path=PATHS, mode=st.sampled_from(["wb", "ab", "xb", "r+b"]), data=DATA, at=OFFSETS)
    def write(self, path: str, mode: str, data: bytes, at: int) -> None:
        def write_with(opener: Callable[..., Any], target: str) -> int:
            with opener(target, mode) as f:
                if mode == "r+b":
                    f.seek(at)
                return int(f.write(data))

        self.same(
            lambda: write_with(open, self.local(path)), lambda: write_with(self.fs.open, path)
        )

    @rule(path=PATHS)
    def read(self, path: str) -> None:
        def read_with(opener: Callable[..., Any], target: str) -> bytes:
            with opener(target, "rb") as f:
                return bytes(f.read())

        self.same(lambda: read_with(open, self.local(path)), lambda: read_with(self.fs.open, path))

    @rule(path=PATHS, at=OFFSETS, size=st.integers(0, 70000))
    def read_range(self, path: str, at: int, size: int) -> None:
        def read_with(opener: Callable[..., Any], target: str) -> bytes:
            with opener(target, "rb") as f:
                f.seek(at)
                return bytes(f.read(size))

        self.same(lambda: read_with(open, self.local(path)), lambda: read_with(self.fs.open, path))

    @rule(path=PATHS, length=OFFSETS)
    def truncate(self, path: str, length: int) -> None:
        self.same(
            lambda: os.truncate(self.local(path), length), lambda: self.fs.truncate(path, length)
        )

    @rule(path=PATHS)
    def mkdir(self, path: str) -> None:
        self.same(lambda: os.mkdir(self.local(path)), lambda: self.fs.mkdir(path))

    @rule(path=PATHS)
    def rmdir(self, path: str) -> None:
        self.same(lambda: os.rmdir(self.local(path)), lambda: self.fs.rmdir(path))

    @rule(path=PATHS)
    def unlink(self, path: str) -> None:
        self.same(lambda: os.unlink(self.local(path)), lambda: self.fs.unlink(path))

    @rule(src=PATHS, dst=PATHS)
    def rename(self, src: str, dst: str) -> None:
        src, dst = src.rstrip("/"), dst.rstrip("/")
        self.same(
            lambda: os.rename(self.local(src), self.local(dst)), lambda: self.fs.rename(src, dst)
        )

    @rule(src=PATHS, dst=PATHS)
    def link(self, src: str, dst: str) -> None:
        self.same(lambda: os.link(self.local(src), self.local(dst)), lambda: self.fs.link(src, dst))

    @rule(pointee=st.sampled_from(["a", "b", "b/../a", "a/b", "x"]), path=PATHS)
    def symlink(self, pointee: str, path: str) -> None:
        self.same(
            lambda: os.symlink(pointee, self.local(path)), lambda: self.fs.symlink(pointee, path)
        )

    @rule(path=PATHS)
    def readlink(self, path: str) -> None:
        self.same(lambda: os.readlink(self.local(path)), lambda: self.fs.readlink(path))

    @rule(path=PATHS)
    def listdir(self, path: str) -> None:
        self.same(lambda: sorted(os.listdir(self.local(path))), lambda: self.fs.listdir(path))

    @rule(path=PATHS, follow=st.booleans())
    def stat(self, path: str, follow: bool) -> None:
        def summary(st: os.stat_result) -> tuple[Any, ...]:
            if stat.S_ISDIR(st.st_mode):
                return ("dir",)  # a directory's size and link count are the host's own
            return (kind(st.st_mode), st.st_size, st.st_nlink)

        self.same(
            lambda: summary(os.stat(self.local(path), follow_symlinks=follow)),
            lambda: summary(self.fs.stat(path, follow_symlinks=follow)),
        )

    @rule(path=PATHS)
    def exists(self, path: str) -> None:
        self.same(lambda: os.path.exists(self.local(path)), lambda: self.fs.exists(path))


def test_a_volume_behaves_like_a_local_directory() -> None:
    run_state_machine_as_test(
        VolumeMatchesLocalDirectory,
        settings=settings(
            max_examples=300,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
