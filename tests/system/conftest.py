"""The directories the POSIX and program suites run in: a native temporary directory (the
reference), the benchmark's pass-through FUSE mount (FUSE itself, known to be right) and
a stratus volume mounted by ``stratus mount``. Each test gets a fresh, empty directory."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import fuse_mounts

KINDS = ["native", "passthrough", "stratus"]


@pytest.fixture(scope="session")
def passthrough_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("passthrough")
    with fuse_mounts.passthrough(base / "source", base / "mnt"):
        yield base / "mnt"


@pytest.fixture(scope="session")
def stratus_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("stratus-mount")
    with fuse_mounts.stratus("posix", base / "data", base / "mnt"):
        yield base / "mnt"


@pytest.fixture(params=KINDS)
def fs_root(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A fresh empty directory on the file system named by the test's parameter."""
    if request.param == "native":
        return tmp_path
    mount: Path = request.getfixturevalue(f"{request.param}_mount")
    root = mount / f"t-{uuid.uuid4().hex[:12]}"
    root.mkdir()
    return root
