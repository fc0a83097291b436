"""Conflicts on a real mount: a write answered EIO leaves nothing, a line counted as
failed is never in the file, and conflicts are re-run (with pauses) until a deadline.

``conflicting_mount.py`` makes the mount's next commits meet a real conflict (another
writer's new version of a key they read) as many times as a control file says."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import fuse_mounts

pytestmark = pytest.mark.system


def mounted(tmp_path: Path, deadline: float) -> Iterator[tuple[Path, Path]]:
    mnt, control = tmp_path / "mnt", tmp_path / "conflicts"
    with fuse_mounts.conflicting(tmp_path / "state.db", mnt, control, deadline=deadline):
        (mnt / "log").write_text("")
        yield mnt, control


@pytest.fixture
def one_run(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A mount whose requests run once: one conflict is one EIO."""
    yield from mounted(tmp_path, 0.0)


@pytest.fixture
def backing_off(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A mount that re-runs conflicts (with a deadline generous for a loaded machine)."""
    yield from mounted(tmp_path, 60.0)


def test_a_write_answered_eio_leaves_nothing(one_run: tuple[Path, Path]) -> None:
    mnt, control = one_run
    fd = os.open(mnt / "log", os.O_WRONLY | os.O_APPEND)
    try:
        control.write_text("1")
        with pytest.raises(OSError) as info:
            os.write(fd, b"failed\n")
        assert info.value.errno == errno.EIO
        assert control.read_text() == "0"  # the conflict was met
        assert os.write(fd, b"kept\n") == 5
    finally:
        os.close(fd)
    assert (mnt / "log").read_bytes() == b"kept\n"


def test_a_line_counted_as_failed_is_not_in_the_file(one_run: tuple[Path, Path]) -> None:
    # The flaky failure: the stress test counted a line as failed on EIO, but wrote it
    # through Python's buffered file, which wrote it again at close.
    mnt, control = one_run
    control.write_text("1")
    assert not fuse_mounts.append_line(mnt / "log", "mount 5\n")
    assert fuse_mounts.append_line(mnt / "log", "mount 6\n")
    assert (mnt / "log").read_text() == "mount 6\n"


def test_a_buffered_file_writes_its_buffer_again_after_eio(one_run: tuple[Path, Path]) -> None:
    # Why append_line uses os.write: CPython keeps the bytes of a failed flush and
    # writes them again at close (the mount answered the first write EIO, wrote nothing).
    mnt, control = one_run
    f = open(mnt / "log", "a")  # noqa: SIM115 (closed by hand, after the failed flush)
    f.write("mount 5\n")
    control.write_text("1")
    with pytest.raises(OSError):
        f.flush()
    assert (mnt / "log").read_text() == ""
    f.close()
    assert (mnt / "log").read_text() == "mount 5\n"


def test_conflicts_are_re_run_past_five_runs(backing_off: tuple[Path, Path]) -> None:
    mnt, control = backing_off
    control.write_text("8")  # more conflicts in a row than the 5 runs functions get
    assert fuse_mounts.append_line(mnt / "log", "kept\n")
    assert control.read_text() == "0"
    assert (mnt / "log").read_text() == "kept\n"
