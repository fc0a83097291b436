"""A write that returned survives SIGKILL of the writer; a transaction is all or nothing.

A child process writes (single puts, or 8-key transactions of 4 KiB values) through a
durable store and prints each acknowledged version on stdout after the call returned.
The parent reads a random number of acknowledgements, SIGKILLs the child at a random
point of the writes that follow, reads what was still in the pipe, then reopens the
store: every acknowledged write must be there with its version, the writes must form an
unbroken prefix of the child's sequence (no transaction half applied), and the store must
still accept writes (LMDB's writer lock, SQLite's WAL recovered from the dead owner).

SIGKILL tests the crash of a process, not of the machine: the page cache survives it,
so this proves atomicity and that nothing is acknowledged before it reached the OS.
Surviving a power loss relies on fsync (``synchronous="FULL"``, ``sync=True``), which a
test cannot observe on a VM.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stratus.store import Entry, LMDBStore, SQLiteStore, Store

TXN_KEYS = 8

CHILD = """
import sys
import time
from stratus.store import LMDBStore, Put, SQLiteStore, Transaction

kind, path, mode = sys.argv[1:4]
merge = lambda old, new: new
store = (
    SQLiteStore(path + "/store.db", merge, synchronous="FULL")
    if kind == "sqlite"
    else LMDBStore(path + "/env", merge, sync=True)
)
print("ready", flush=True)
for i in range(1_000_000):
    if mode == "puts":
        version = store.put(f"k{i:07d}", b"%d" % i * 50)
        print(i, version, flush=True)
    else:
        writes = [Put(f"t{i:07d}/{j}", bytes([j]) * 4096) for j in range(8)]
        result = store.commit(Transaction(reads={}, writes=writes))
        assert result.ok
        print(i, *(result.versions[w.key] for w in writes), flush=True)
"""


def open_store(kind: str, path: Path) -> Store:
    if kind == "sqlite":
        return SQLiteStore(path / "store.db", lambda old, new: new, synchronous="FULL")
    return LMDBStore(path / "env", lambda old, new: new, sync=True)


def kill_midway(kind: str, path: Path, mode: str, seed: int) -> list[list[int]]:
    """Run the child until it acknowledged a random number of writes, SIGKILL it after a
    random pause, and return every acknowledgement it printed: ``[index, version...]``.

    The parent reads acknowledgements in lock-step with the child, so without the pause
    the kill would always land at the start of the next write. The pause (up to about two
    writes' time) only spreads the kill point across the write; no assertion depends on
    timing: every kill point must leave a consistent store.
    """
    rng = random.Random(seed)
    acks_before_kill = rng.randrange(1, 200)
    pause = rng.uniform(0, 0.003)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    with child:
        try:
            assert child.stdout.readline() == b"ready\n", child.stderr.read()
            lines = [child.stdout.readline() for _ in range(acks_before_kill)]
            time.sleep(pause)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        lines += child.stdout.readlines()  # printed before it died: acknowledged too
        assert child.returncode == -signal.SIGKILL, child.stderr.read()
    # A line cut by the kill was never a complete acknowledgement.
    return [[int(n) for n in line.split()] for line in lines if line.endswith(b"\n")]


@pytest.mark.parametrize("kind", ["sqlite", "lmdb"])
@pytest.mark.parametrize("seed", range(6))
def test_acknowledged_puts_survive_sigkill(kind: str, seed: int, tmp_path: Path) -> None:
    acks = kill_midway(kind, tmp_path, "puts", seed)
    assert [i for i, _ in acks] == list(range(len(acks)))
    with open_store(kind, tmp_path) as store:
        for i, version in acks:
            assert store.get(f"k{i:07d}") == Entry(b"%d" % i * 50, version)
        present = store.keys("k")
        # Versions are the child's sequence; at most the write in flight got in beyond.
        assert present == [f"k{i:07d}" for i in range(len(present))]
        assert len(acks) <= len(present) <= len(acks) + 1
        assert store.last_version() == len(present)
        assert store.put("after", b"") == len(present) + 1


@pytest.mark.parametrize("kind", ["sqlite", "lmdb"])
@pytest.mark.parametrize("seed", range(6))
def test_transactions_are_all_or_nothing_after_sigkill(
    kind: str, seed: int, tmp_path: Path
) -> None:
    acks = kill_midway(kind, tmp_path, "commits", seed)
    with open_store(kind, tmp_path) as store:
        for i, *versions in acks:
            assert versions == list(range(i * TXN_KEYS + 1, (i + 1) * TXN_KEYS + 1))
            keys = [f"t{i:07d}/{j}" for j in range(TXN_KEYS)]
            assert store.get_many(keys) == {
                key: Entry(bytes([j]) * 4096, version)
                for j, (key, version) in enumerate(zip(keys, versions, strict=True))
            }
        present = store.keys("t")
        txns = len(present) // TXN_KEYS
        assert present == [f"t{i:07d}/{j}" for i in range(txns) for j in range(TXN_KEYS)]
        assert len(acks) <= txns <= len(acks) + 1
        assert store.last_version() == txns * TXN_KEYS
        assert store.changes(0, limit=10_000).keys[-1:] == (
            [(f"t{txns - 1:07d}/7", txns * TXN_KEYS)] if txns else []
        )
        assert store.put("after", b"") == txns * TXN_KEYS + 1


@pytest.mark.parametrize("kind", ["sqlite", "lmdb"])
@pytest.mark.parametrize("seed", range(3))
def test_a_killed_writer_blocks_no_other_process(kind: str, seed: int, tmp_path: Path) -> None:
    # The parent keeps its store open across the kill: LMDB's robust writer mutex and
    # SQLite's file locks (and our flock) must come back from a holder that died.
    with open_store(kind, tmp_path) as store:
        store.put("parent", b"before")
        acks = kill_midway(kind, tmp_path, "commits", seed)
        seen = store.last_version()
        assert seen in (1 + len(acks) * TXN_KEYS, 1 + (len(acks) + 1) * TXN_KEYS)
        after = store.put("parent", b"after")
        # LMDB: a writer killed between writing its meta page and publishing it leaves
        # readers on the previous snapshot until the next writer recovers the lock; the
        # transaction in flight then appears, whole. So `after` may be past `seen + 1`.
        txns = len(store.keys("t")) // TXN_KEYS
        assert len(acks) <= txns <= len(acks) + 1
        assert after == 1 + txns * TXN_KEYS + 1
        assert store.get(f"t{len(acks) - 1:07d}/7") == Entry(bytes([7]) * 4096, acks[-1][-1])
