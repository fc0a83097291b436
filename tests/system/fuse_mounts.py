"""Real FUSE mounts for the system tests: a process that serves a mount point, started
and always unmounted again, and ``renameat2`` for the flags Python's ``os`` lacks."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
PASSTHROUGH = REPO / "bench" / "fuse_passthrough.py"
STRATUS = [sys.executable, "-m", "stratus.cli"]
MOUNT_TIMEOUT = 30.0  # seconds: a cold Python start on a loaded 2-core machine

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: os.PathLike[str] | str, new: os.PathLike[str] | str, flags: int) -> None:
    """``rename`` with Linux's ``renameat2`` flags; raises ``OSError`` as ``os`` does."""
    AT_FDCWD = -100
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old), None, str(new))


def unmount(mountpoint: Path) -> None:
    """Unmount if mounted; lazily when busy, so a failed test never leaves it behind."""
    if os.path.ismount(mountpoint):
        done = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)


@contextlib.contextmanager
def serving(argv: Sequence[str], mountpoint: Path) -> Iterator[subprocess.Popen[str]]:
    """Run ``argv`` (a process that mounts ``mountpoint`` and serves it in the foreground)
    until the mount is up; unmount and reap it afterwards, whatever happened."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until(
            lambda: os.path.ismount(mountpoint) or process.poll() is not None,
            timeout=MOUNT_TIMEOUT,
        )
        if not os.path.ismount(mountpoint):
            process.kill()
            raise AssertionError(f"{argv} did not mount {mountpoint}:\n{process.communicate()[0]}")
        yield process
    finally:
        unmount(mountpoint)
        try:
            out, _ = process.communicate(timeout=MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        if out:
            print(out)


def passthrough(
    source: Path, mountpoint: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    """The benchmark's pass-through file system mirroring ``source`` at ``mountpoint``."""
    source.mkdir(parents=True, exist_ok=True)
    return serving([sys.executable, str(PASSTHROUGH), str(source), str(mountpoint)], mountpoint)


def stratus(
    volume: str, data_dir: Path, mountpoint: Path, *options: str
) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    """``stratus mount --foreground`` of ``volume`` (created if missing) at ``mountpoint``."""
    argv = [*STRATUS, "mount", volume, str(mountpoint), "--data-dir", str(data_dir)]
    return serving([*argv, "--create", "--foreground", "--log-level", "INFO", *options], mountpoint)


def conflicting(
    store_path: Path, mountpoint: Path, control: Path, *, deadline: float = 0.0
) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    """``conflicting_mount.py``: a stratus mount whose next commits (as many as the file
    ``control`` says) meet a real conflict; requests re-run for ``deadline`` seconds."""
    script = Path(__file__).with_name("conflicting_mount.py")
    argv = [sys.executable, str(script), str(store_path), str(mountpoint), str(control)]
    return serving([*argv, str(deadline)], mountpoint)


def append_line(path: Path, line: str) -> bool:
    """Append ``line`` with one ``write`` system call: True once it is in the file, False
    (and nothing written) if the call failed. Not ``open(path, "a").write(line)``: after a
    failed flush, Python's buffered file keeps its buffer and writes it again at close,
    so a line reported failed could still be written."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
