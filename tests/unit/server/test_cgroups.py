"""cgroups.detect: which hierarchies a machine gives us, read from a fake /proc and
fake cgroup mounts in a temporary directory (the real ones: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratus.server import cgroups


def _machine(tmp_path: Path, cgroup: str, mounts: list[tuple[str, str, str]]) -> Path:
    """A /proc/self with ``cgroup`` as its membership file and ``mounts`` as
    (fstype, directory under tmp_path, super options); each mount gets the files of
    an empty cgroup at the membership's path."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    lines = []
    for n, (fstype, directory, options) in enumerate(mounts):
        mount = tmp_path / directory
        lines.append(f"{30 + n} 20 0:{n} / {mount} rw,relatime - {fstype} cgroup {options}")
    (proc / "mountinfo").write_text("\n".join(lines) + "\n")
    return proc


def _cgroup_dir(path: Path, controllers: str = "") -> None:
    path.mkdir(parents=True)
    (path / "cgroup.procs").write_text("")
    (path / "cgroup.controllers").write_text(controllers)
    (path / "cgroup.subtree_control").write_text("")


def test_hybrid_v2_for_killing_and_v1_for_memory_and_pids(tmp_path: Path) -> None:
    """This project's VMs: a v2 hierarchy without controllers, v1 memory and pids."""
    proc = _machine(
        tmp_path,
        "9:pids:/\n4:memory:/sandbox/abc\n0::/\n",
        [
            ("cgroup2", "unified", "rw"),
            ("cgroup", "memory", "rw,memory"),
            ("cgroup", "pids", "rw,pids"),
            ("cgroup", "cpu", "rw,cpu"),
        ],
    )
    _cgroup_dir(tmp_path / "unified", "hugetlb")
    _cgroup_dir(tmp_path / "memory" / "sandbox" / "abc")
    _cgroup_dir(tmp_path / "pids")
    support = cgroups.detect(proc)
    assert support.hierarchies == (
        cgroups.Hierarchy(tmp_path / "unified", v2=True, memory=False, pids=False),
        cgroups.Hierarchy(tmp_path / "memory/sandbox/abc", v2=False, memory=True, pids=False),
        cgroups.Hierarchy(tmp_path / "pids", v2=False, memory=False, pids=True),
    )
    assert support.cgroups and support.memory


def test_pure_v2_with_delegated_controllers_needs_no_v1(tmp_path: Path) -> None:
    proc = _machine(
        tmp_path,
        "0::/user.slice/stratus\n",
        [("cgroup2", "fs", "rw,nsdelegate"), ("cgroup", "memory", "rw,memory")],
    )
    _cgroup_dir(tmp_path / "fs" / "user.slice" / "stratus", "cpu memory pids")
    _cgroup_dir(tmp_path / "memory")
    support = cgroups.detect(proc)
    assert support.hierarchies == (
        cgroups.Hierarchy(tmp_path / "fs/user.slice/stratus", v2=True, memory=True, pids=True),
    )


def test_no_cgroup_mount_means_process_groups(tmp_path: Path) -> None:
    proc = _machine(tmp_path, "0::/\n", [])
    support = cgroups.detect(proc)
    assert not support.cgroups and not support.memory
    assert support.describe().startswith("process groups")


def test_our_cgroup_missing_under_the_mount_is_not_used(tmp_path: Path) -> None:
    """A membership path that is not below the mount (another namespace) is skipped."""
    proc = _machine(tmp_path, "0::/elsewhere\n", [("cgroup2", "unified", "rw")])
    _cgroup_dir(tmp_path / "unified")
    assert not cgroups.detect(proc).cgroups


def test_the_environment_can_ask_for_process_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _machine(tmp_path, "0::/\n", [("cgroup2", "unified", "rw")])
    _cgroup_dir(tmp_path / "unified")
    assert cgroups.detect(proc).cgroups
    monkeypatch.setenv(cgroups.DISABLE_VARIABLE, "off")
    assert not cgroups.detect(proc).cgroups
