"""Objects benchmark: ``app.put`` of a large object, and its first and warm resolves.

Why: values over a frame (``max_payload``) travel as ``app.put(obj) -> Ref``; an
executor reads the object's chunks once, then serves it from its cache. This measures
what that costs and what the cache saves.

What: an embedded cluster with one executor (SQLite store, in a temporary directory).
For each round: ``app.put`` of SIZE MB of random bytes (chunks written, manifest last),
then a call that returns ``len(data)`` with the Ref: the first resolve reads and
verifies the chunks (HMAC-SHA256 over the payload), the second finds the payload in the
executor's cache. The trivial call without a Ref is timed too, as the floor. Times are
wall clock around ``app.put`` and ``fn.remote(ref).result()``; medians over the rounds.

How: ``.venv/bin/python bench/objects.py [--size-mb 50] [--rounds 5]``; one JSON
document to stdout. A run of 5 rounds of 50 MB takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import stratus


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mb << 20
    times: dict[str, list[float]] = {"put": [], "first": [], "second": [], "no_ref": []}
    with (
        tempfile.TemporaryDirectory() as data_dir,
        stratus.connect(data_dir=data_dir, executors=1) as app,
    ):

        @app.function(memory_mb=2048)
        def length(ctx: stratus.Context, data: bytes) -> int:
            return len(data)

        length.remote(b"").result(timeout=30)  # warm the executor
        for _ in range(args.rounds):
            data = os.urandom(size)
            start = time.perf_counter()
            ref = app.put(data)
            times["put"].append(time.perf_counter() - start)
            for what in ("first", "second"):
                start = time.perf_counter()
                assert length.remote(ref).result(timeout=60) == size
                times[what].append(time.perf_counter() - start)
            start = time.perf_counter()
            length.remote(b"").result(timeout=30)
            times["no_ref"].append(time.perf_counter() - start)
            app.delete(ref)
    medians_ms = {k: round(statistics.median(v) * 1000, 2) for k, v in times.items()}
    print(json.dumps({"size_mb": args.size_mb, "rounds": args.rounds, "median_ms": medians_ms}))


if __name__ == "__main__":
    main()
