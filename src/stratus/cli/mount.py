"""``stratus mount`` and ``stratus umount``: a volume as a FUSE file system.

``mount`` checks everything it can before mounting (the directory exists, is empty and
is not a mount point; the store opens; the volume exists) so that mistakes are reported
by the command itself. In the foreground it serves the mount until it is unmounted. By
default it starts itself again in the foreground as a detached process (its own session,
output to ``<data dir>/mount-<volume>.log``) and returns once the kernel shows the mount,
or fails with that process's last words if it ends first.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from stratus import _exceptions as exc
from stratus import config as cfg

MOUNT_TIMEOUT = 30.0  # seconds for a detached mount to appear


def mount(
    volume_name: str,
    directory: str,
    *,
    data_dir: str,
    store: str,
    foreground: bool,
    create: bool,
    cache_timeout: float,
    log_level: str,
) -> None:
    """Check, then serve in the foreground or start a detached server (module docstring)."""
    from stratus.fs import FsCache, Volumes
    from stratus.kv.open import open_store

    target = Path(directory).absolute()
    _check_mount_point(target)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    url = cfg.ClusterConfig(cluster_id="", key=b"", data_dir=data_dir, store=store).store_url
    try:
        opened = open_store(url)
        # Cached like an executor's: reads from memory, validated at each commit.
        volumes = Volumes(opened, cache=FsCache(opened))
        volume = volumes.create(volume_name, exist_ok=True) if create else None
        volume = volume or volumes.open(volume_name)
    except exc.VolumeNotFound as e:
        raise click.ClickException(f"{e} (--create makes it)") from e
    except exc.StratusError as e:
        raise click.ClickException(str(e)) from e
    if not foreground:
        _detach(volume_name, target, data_dir, store, cache_timeout, log_level)
        return

    from stratus.fs.fuse import serve

    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")
    try:
        serve(volume, str(target), cache_timeout=cache_timeout, ready=lambda: _ready(target))
    except RuntimeError as e:  # pyfuse3's report of a failed mount
        raise click.ClickException(f"cannot mount {target}: {e}") from e


def _ready(target: Path) -> None:
    click.echo(f"mounted at {target} (pid {os.getpid()})", err=True)


def _check_mount_point(target: Path) -> None:
    if not target.exists():
        raise click.ClickException(f"{target} does not exist")
    if not target.is_dir():
        raise click.ClickException(f"{target} is not a directory")
    if os.path.ismount(target):
        raise click.ClickException(f"{target} is already a mount point")
    if any(target.iterdir()):
        raise click.ClickException(f"{target} is not empty")


def _detach(
    volume_name: str,
    target: Path,
    data_dir: str,
    store: str,
    cache_timeout: float,
    log_level: str,
) -> None:
    log_path = Path(data_dir) / f"mount-{volume_name}.log"
    argv = [sys.executable, "-m", "stratus.cli", "mount", volume_name, str(target)]
    argv += ["--foreground", "--data-dir", data_dir, "--cache-timeout", str(cache_timeout)]
    argv += ["--log-level", log_level] + (["--store", store] if store else [])
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives this command and its terminal
        )
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not os.path.ismount(target):
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise click.ClickException(f"mount failed: {' / '.join(tail)}")
        if time.monotonic() > deadline:
            process.kill()
            raise click.ClickException(f"{target} was not mounted in {MOUNT_TIMEOUT:.0f} s")
        time.sleep(0.02)
    click.echo(f"volume {volume_name} mounted at {target} (pid {process.pid}, log {log_path})")


def umount(directory: str) -> None:
    """Unmount a stratus mount (its server then exits)."""
    target = Path(directory).absolute()
    if not os.path.ismount(target):
        raise click.ClickException(f"{target} is not mounted")
    done = subprocess.run(["fusermount3", "-u", str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(done.stderr.strip() or f"fusermount3 -u {target} failed")
