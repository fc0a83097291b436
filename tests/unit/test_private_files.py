"""What a cluster keeps on disk is its owner's only (config.secure_data_dir)."""

from __future__ import annotations

import stat
from pathlib import Path

from stratus import config as cfg


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_open_data_dir_and_sqlite_files_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    files = [data / name for name in ("key", "state.db", "state.db-wal", "state.db-shm")]
    for path in [*files, data / "notes.txt"]:
        path.touch()
        path.chmod(0o644)
    cfg.secure_data_dir(cfg.ClusterConfig(cluster_id="c", key=bytes(32), data_dir=str(data)))
    assert mode(data) == 0o700
    assert [mode(path) for path in files] == [0o600] * 4
    assert mode(data / "notes.txt") == 0o644  # not ours to judge; the directory hides it


def test_a_store_outside_the_data_dir_is_tightened_too(tmp_path: Path) -> None:
    lmdb = tmp_path / "elsewhere.lmdb"
    lmdb.mkdir(mode=0o755)
    (lmdb / "data.mdb").touch()
    (lmdb / "data.mdb").chmod(0o644)
    config = cfg.ClusterConfig(
        cluster_id="c", key=bytes(32), data_dir=str(tmp_path / "new"), store=f"lmdb:{lmdb}"
    )
    cfg.secure_data_dir(config)
    assert mode(tmp_path / "new") == 0o700  # created private
    assert mode(lmdb) == 0o700 and mode(lmdb / "data.mdb") == 0o600
