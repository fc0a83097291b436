"""A mounted volume and functions of a running cluster working on the same files: what
one side commits, the other reads, and appends from both sides are never lost."""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import fuse_mounts
import stratus

pytestmark = pytest.mark.system


@pytest.fixture
def cluster_and_mount(tmp_path: Path) -> Iterator[tuple[stratus.App, Path]]:
    """An embedded cluster and its ``default`` volume mounted (no kernel cache)."""
    data_dir, mnt = tmp_path / "stratus", tmp_path / "mnt"
    with (
        stratus.connect(data_dir=data_dir, executors=2) as app,
        fuse_mounts.stratus("default", data_dir, mnt, "--cache-timeout", "0"),
    ):
        yield app, mnt


def test_programs_and_functions_share_files(cluster_and_mount: tuple[stratus.App, Path]) -> None:
    app, mnt = cluster_and_mount
    (mnt / "input").mkdir()
    (mnt / "input" / "numbers.csv").write_text("".join(f"{i}\n" for i in range(100)))

    @app.function
    def total(ctx: stratus.Context) -> int:
        numbers = [int(line) for line in ctx.fs.path("/input/numbers.csv").read_text().split()]
        ctx.fs.makedirs("/output", exist_ok=True)
        ctx.fs.path("/output/total.txt").write_text(f"{sum(numbers)}\n")
        return len(numbers)

    assert total.remote().result(timeout=30) == 100
    assert (mnt / "output" / "total.txt").read_text() == "4950\n"


def test_appends_from_functions_and_the_mount_are_all_kept(
    cluster_and_mount: tuple[stratus.App, Path],
) -> None:
    app, mnt = cluster_and_mount
    (mnt / "log").write_text("")

    @app.function
    def append(ctx: stratus.Context, line: str) -> None:
        with ctx.fs.open("/log", "a") as f:
            f.write(line)

    def from_mount(count: int) -> list[str]:
        # EIO (conflicts until the deadline): not written, not counted
        lines = [f"mount {i}\n" for i in range(count)]
        return [line for line in lines if fuse_mounts.append_line(mnt / "log", line)]

    with cf.ThreadPoolExecutor(1) as pool:
        mount_lines = pool.submit(from_mount, 40)
        futures = {f"fn {i}\n": append.remote(f"fn {i}\n") for i in range(40)}
        committed = list(mount_lines.result(timeout=120))
        for line, future in futures.items():
            try:
                future.result(timeout=60)
            except stratus.ConflictError:
                continue  # gave up: nothing of it may be visible
            committed.append(line)
    lines = (mnt / "log").read_text().splitlines(keepends=True)
    assert sorted(lines) == sorted(committed)  # none lost, none twice, none torn
    assert {line.split()[0] for line in committed} == {"fn", "mount"}  # both sides wrote
    assert os.stat(mnt / "log").st_size == sum(map(len, committed))
