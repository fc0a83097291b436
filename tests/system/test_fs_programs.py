"""Ordinary programs on a directory: ``cp -r``, ``tar``, ``git``, SQLite and
``python -m compileall``, run on a native directory, on the pass-through FUSE mount and
on a stratus volume mounted with ``stratus mount`` (see ``conftest.py``)."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def make_tree(root: Path, seed: int = 7) -> None:
    """Nested directories, files from empty to 200 KB, a symlink and a hard link."""
    rng = random.Random(seed)
    for d in ("a", "a/b", "a/b/c", "d", "empty"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i, size in enumerate((0, 1, 4096, 5000, 65_536, 200_000, 17)):
        path = root / ("a", "a/b", "a/b/c", "d")[i % 4] / f"file{i}.bin"
        path.write_bytes(rng.randbytes(size))
    os.chmod(root / "a" / "file0.bin", 0o751)
    os.symlink("../a/b/file1.bin", root / "d" / "link")
    os.link(root / "a" / "b" / "file1.bin", root / "d" / "hard")


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root``: kind, permission bits and content hash or link target."""
    entries: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                entries[rel] = ("file", stat.S_IMODE(st.st_mode), digest)
    return entries


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    source = tmp_path / "tree"
    make_tree(source)
    return source


def test_cp_r_in_and_out(fs_root: Path, tree: Path, tmp_path: Path) -> None:
    run("cp", "-a", tree, fs_root / "copy")
    assert snapshot(fs_root / "copy") == snapshot(tree)
    run("cp", "-r", fs_root / "copy", fs_root / "copy2")  # within the mount
    assert snapshot(fs_root / "copy2").keys() == snapshot(tree).keys()
    run("cp", "-a", fs_root / "copy", tmp_path / "back")
    assert snapshot(tmp_path / "back") == snapshot(tree)
    hard = os.stat(fs_root / "copy" / "d" / "hard")
    assert hard.st_nlink == 2  # cp -a keeps hard links
    assert hard.st_ino == os.stat(fs_root / "copy" / "a" / "b" / "file1.bin").st_ino


def test_tar_in_and_out(fs_root: Path, tree: Path, tmp_path: Path) -> None:
    archive = fs_root / "tree.tar"
    run("tar", "-cf", archive, "-C", tree, ".")
    (fs_root / "x").mkdir()
    run("tar", "-xpf", archive, "-C", fs_root / "x")
    assert snapshot(fs_root / "x") == snapshot(tree)
    run("tar", "-czf", tmp_path / "out.tgz", "-C", fs_root / "x", ".")
    (tmp_path / "out").mkdir()
    run("tar", "-xpzf", tmp_path / "out.tgz", "-C", tmp_path / "out")
    assert snapshot(tmp_path / "out") == snapshot(tree)
    listing = run("tar", "-tvf", archive)
    assert "file5.bin" in listing


def test_git_init_add_commit(fs_root: Path, tree: Path) -> None:
    repo = fs_root / "repo"
    run("cp", "-r", tree, repo)
    git = ("git", "-c", "user.name=Stratus Test", "-c", "user.email=test@example.invalid")
    run(*git, "init", "-q", cwd=repo)
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-q", "-m", "first", cwd=repo)
    (repo / "a" / "new.txt").write_text("second\n")
    (repo / "a" / "file0.bin").unlink()
    run(*git, "add", "-A", cwd=repo)
    run(*git, "commit", "-q", "-m", "second", cwd=repo)
    assert run("git", "status", "--porcelain", cwd=repo) == ""
    assert run("git", "log", "--format=%s", cwd=repo).split() == ["second", "first"]
    run("git", "fsck", "--strict", cwd=repo)
    run("git", "gc", "-q", cwd=repo)  # packs objects: renames and deletes many files
    assert run("git", "show", "HEAD:a/new.txt", cwd=repo) == "second\n"


def test_sqlite_create_and_query(fs_root: Path) -> None:
    path = fs_root / "db.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, owner TEXT, balance INT)")
        for batch in range(10):
            db.executemany(
                "INSERT INTO account (owner, balance) VALUES (?, ?)",
                [(f"owner-{batch}-{i}", i) for i in range(100)],
            )
            db.commit()  # each batch its own transaction, through the rollback journal
        db.execute("CREATE INDEX by_owner ON account (owner)")
    db.close()
    # A separate process reads what this one committed.
    script = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
        "print(db.execute('SELECT count(*), sum(balance) FROM account').fetchone());"
        "print(db.execute('PRAGMA integrity_check').fetchone()[0])"
    )
    out = run(sys.executable, "-c", script, path)
    assert out.split("\n")[:2] == ["(1000, 49500)", "ok"]
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("UPDATE account SET balance = balance + 1 WHERE owner LIKE 'owner-3-%'")
    db.close()
    out = run(sys.executable, "-c", script, path)
    assert out.split("\n")[:2] == ["(1000, 49600)", "ok"]


def test_python_compileall_and_import(fs_root: Path) -> None:
    package = fs_root / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.sub.mod import answer\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "mod.py").write_text("def answer():\n    return 42\n")
    run(sys.executable, "-m", "compileall", "-q", package)
    compiled = sorted(p.name for p in package.rglob("*.pyc"))
    tag = sys.implementation.cache_tag
    assert compiled == [f"__init__.{tag}.pyc", f"__init__.{tag}.pyc", f"mod.{tag}.pyc"]
    (package / "sub" / "mod.py").unlink()  # the import below must come from the .pyc
    code = "import sys; sys.path.insert(0, sys.argv[1]); import pkg; print(pkg.answer())"
    mod_pyc = package / "sub" / "__pycache__" / f"mod.{tag}.pyc"
    os.rename(mod_pyc, package / "sub" / "mod.pyc")  # a sourceless module
    assert run(sys.executable, "-c", code, fs_root).strip() == "42"
