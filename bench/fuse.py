"""FUSE benchmark: the small-file loop on the native file system, on a minimal pyfuse3
pass-through and on a stratus volume mounted with ``stratus mount``, in one run.

Run it with ``.venv/bin/python bench/fuse.py`` (``--quick`` for a short run, ``--tiny``
for the suite's smoke test; ``make bench-fuse``). It prints one JSON document on stdout and
writes it to ``bench/results/fuse.json`` (or ``$STRATUS_BENCH_RESULTS``); progress goes to
stderr. It needs FUSE (``/dev/fuse``,
``fusermount3``) and the ``fuse`` extra.

Set-up, under one temporary directory: ``native/`` on the machine's file system (ext4
here); ``passthrough/``, a mount of ``bench/fuse_passthrough.py`` mirroring a directory
of that file system (what FUSE and pyfuse3 cost by themselves, with the same 1 s
attribute and entry cache as the stratus mount); ``stratus/``, ``stratus mount`` of a
volume in the embedded store (SQLite, WAL, ``synchronous=NORMAL``: the default) in the
foreground, every FUSE request its own transaction.

What is measured (``time.perf_counter_ns`` around system calls, no Python file objects):

1. ``create_write_close``: ``open(O_CREAT|O_WRONLY|O_TRUNC)`` of a new name, ``write`` of
   4 KiB, ``close``.
2. ``open_read_close``: ``open(O_RDONLY)`` of one of those files, ``read`` of 4 KiB,
   ``close`` (every file read once per round; each read is checked, outside the timing).

Rounds alternate the order of the three targets (A B C, C B A, ...) and pool the samples
of each kind; each timed block starts after a short pause and a ``gc.collect()``. The
target (issue 4): stratus's open+read+close p50 within 1.5x of the pass-through's.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyfuse3

from _procs import wait_for_no_children
from _stats import (
    bench_main,
    check_targets,
    latency_summary,
    loadavg,
    ratio,
    results_path,
    run_header,
)

RESULTS = results_path("fuse")
PASSTHROUGH = Path(__file__).resolve().parent / "fuse_passthrough.py"
MOUNT_TIMEOUT = 60.0
KINDS = ("native", "passthrough", "stratus")
PAYLOAD = bytes(range(256)) * 16  # 4 KiB

TARGETS = {  # name: (path into the document, comparison, bound)
    "open_read_close_p50_vs_passthrough": (
        "ratios.stratus_over_passthrough.open_read_close_p50",
        "<=",
        1.5,
    ),
}


@dataclass(frozen=True)
class Settings:
    files: int = 300  # per round and kind
    rounds: int = 6
    settle_s: float = 0.1


QUICK = Settings(files=100, rounds=2)
TINY = Settings(files=10, rounds=2, settle_s=0.01)
LABELS = {
    "native": "native file system",
    "passthrough": "pyfuse3 pass-through",
    "stratus": "stratus mount",
}


def progress(text: str) -> None:
    print(f"[fuse] {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def serving(argv: list[str], mountpoint: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process serving ``mountpoint`` in the foreground, unmounted and reaped at exit."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(argv, stdout=sys.stderr, stderr=sys.stderr)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(mountpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not mount {mountpoint}")
            time.sleep(0.02)
        yield process
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        try:
            process.wait(timeout=MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def settle(settings: Settings) -> None:
    gc.collect()
    time.sleep(settings.settle_s)


def create_write_close(directory: Path, names: list[str]) -> list[int]:
    clock, samples = time.perf_counter_ns, []
    flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC
    for name in names:
        path = os.path.join(directory, name)
        start = clock()
        fd = os.open(path, flags, 0o644)
        os.write(fd, PAYLOAD)
        os.close(fd)
        samples.append(clock() - start)
    return samples


def open_read_close(directory: Path, names: list[str]) -> list[int]:
    clock, samples, wrong = time.perf_counter_ns, [], 0
    for name in names:
        path = os.path.join(directory, name)
        start = clock()
        fd = os.open(path, os.O_RDONLY)
        data = os.read(fd, len(PAYLOAD))
        os.close(fd)
        samples.append(clock() - start)
        wrong += data != PAYLOAD
    if wrong:
        raise RuntimeError(f"{directory}: {wrong} files read back wrong")
    return samples


def measure(roots: dict[str, Path], settings: Settings) -> dict[str, Any]:
    samples: dict[str, dict[str, list[int]]] = {
        kind: {"create_write_close": [], "open_read_close": []} for kind in roots
    }
    order = list(roots)
    for round_ in range(settings.rounds):
        progress(f"round {round_ + 1}/{settings.rounds}: {' '.join(order)}")
        for kind in order:
            directory = roots[kind] / f"r{round_}"
            directory.mkdir()
            names = [f"f{i:05d}" for i in range(settings.files)]
            settle(settings)
            samples[kind]["create_write_close"] += create_write_close(directory, names)
            settle(settings)
            samples[kind]["open_read_close"] += open_read_close(directory, names)
        order.reverse()
    return {
        kind: {op: latency_summary(values) for op, values in ops.items()}
        for kind, ops in samples.items()
    }


def stratus_over(results: dict[str, Any], base: str) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for op in ("create_write_close", "open_read_close"):
        for q in ("p50", "p99"):
            ours = results["stratus"][op][f"{q}_us"]
            doc[f"{op}_{q}"] = ratio(ours, results[base][op][f"{q}_us"])
    return doc


def table(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's rows: each operation on each target; per_s is one at a time
    (1 / mean), ratio is the row's p50 over the stratus mount's."""
    rows = []
    for op, what in (("create_write_close", "create + write 4 KiB + close"),
                     ("open_read_close", "open + read 4 KiB + close")):  # fmt: skip
        base = doc["results"]["stratus"][op]["p50_us"]
        for kind in KINDS:
            summary = doc["results"][kind][op]
            rows.append(
                {
                    "system": f"{LABELS[kind]}: {what}",
                    "p50_us": summary["p50_us"],
                    "p99_us": summary["p99_us"],
                    "per_s": round(1e6 / summary["mean_us"], 1),
                    "ratio": ratio(summary["p50_us"], base),
                }
            )
    return rows


def run(settings: Settings, mode: str, store: str) -> dict[str, Any]:
    clock_start = time.perf_counter_ns()
    doc = run_header("fuse", mode, pyfuse3=pyfuse3.__version__, sqlite=sqlite3.sqlite_version)
    doc["settings"] = asdict(settings)
    doc["payload_bytes"] = len(PAYLOAD)
    doc["stratus_store"] = store or "sqlite:<data_dir>/state.db (WAL, synchronous=NORMAL)"
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-fuse-")))
        roots = {kind: base / kind for kind in KINDS}
        roots["native"].mkdir()
        (base / "mirrored").mkdir()
        passthrough = [sys.executable, str(PASSTHROUGH), str(base / "mirrored")]
        stack.enter_context(
            serving([*passthrough, str(roots["passthrough"])], roots["passthrough"])
        )
        mount = [sys.executable, "-m", "stratus.cli", "mount", "bench", str(roots["stratus"])]
        mount += ["--data-dir", str(base / "data"), "--create", "--foreground"]
        mount += ["--store", store] if store else []
        stack.enter_context(serving(mount, roots["stratus"]))
        progress("mounted; measuring")
        doc["results"] = measure(roots, settings)
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["load"]["loadavg_end"] = loadavg()
    doc["ratios"] = {
        "note": "stratus / baseline; below 1 stratus is faster",
        "stratus_over_passthrough": stratus_over(doc["results"], "passthrough"),
        "stratus_over_native": stratus_over(doc["results"], "native"),
    }
    doc["targets"] = check_targets(doc, TARGETS)
    doc["table"] = table(doc)
    doc["duration_s"] = round((time.perf_counter_ns() - clock_start) / 1e9, 1)
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    options = {"store": "the stratus mount's store URL (default: SQLite in its data dir)"}
    bench_main(__doc__, RESULTS, settings, run, options=options, argv=argv)


if __name__ == "__main__":
    main()
