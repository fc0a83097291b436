"""A social network (post, reply, follow, timeline) under eventual and causal consistency.

Run it with ``.venv/bin/python bench/social.py`` (``--quick``, ``--tiny``). It prints one
JSON document on stdout and writes it to ``bench/results/social.json``.

The Cloudburst paper's consistency experiment at one-machine scale, built on the scenario
of ``tests/integration/test_causal.py``. Users (three per client) each follow the next
two. Client threads (in this process, each with its own stories, sharing one ``App``) run
stories, each on one embedded cluster (2 executors), with the same functions registered
twice (``consistency="eventual"`` and ``"causal"``, on separate keys), each function
kept warm on both executors (``min_instances=2``) before anything is timed:

1. two ``peek`` calls look for a post that is about to be written (as readers refreshing
   a thread do): each executor's cache may now hold "no such post";
2. ``post``: the author writes the post and appends it to their feed (one transaction);
3. ``post`` with a parent: the next user replies, which reads the parent first (a reply
   to a post its writer cannot see is refused and counted);
4. ``timeline``: the previous user, who follows both, reads the feeds of whom they
   follow, each feed's last 5 posts, and the parent of each reply;
5. every fifth story, the reader also ``follow``s a random user.

Anomalies, counted by the readers: a reply shown whose parent the reader cannot see, and
a feed entry whose post the reader cannot see. Under ``causal`` both must be zero (a read
returns versions at least as new as what the versions read depend on); under
``eventual`` an executor's cache may be stale for up to its refresh period. Throughput is
all calls (of every kind) per second over the clients; latencies per kind of call. The
two levels run in alternating rounds (E C, C E, ...) and the samples are pooled.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import stratus
from _procs import wait_for_no_children, wait_for_pools
from _stats import (
    bench_main,
    latency_summary,
    loadavg,
    ratio,
    results_path,
    run_header,
)
from _timing import alternating, settle
from stratus.lattice import GSet

RESULTS = results_path("social")
RESULT_TIMEOUT = 120.0
LEVELS = ("eventual", "causal")
KINDS = ("peek", "post", "reply", "timeline", "follow")


@dataclass(frozen=True)
class Settings:
    clients: int = 4
    rounds: int = 4  # per level
    stories_per_client: int = 40  # per round
    settle_s: float = 0.3


QUICK = Settings(rounds=2, stories_per_client=15)
TINY = replace(QUICK, clients=2, rounds=1, stories_per_client=2, settle_s=0.0)


# The functions; the same code registered under each level.


def peek(ctx: Any, key: str) -> bool:
    return ctx.kv.get(key) is not None


def add_to(ctx: Any, key: str, element: Any) -> None:
    """Add ``element`` to the grow-only set at ``key``: the union of what this invocation
    read and the element, merged with concurrent writes (siblings under causal)."""
    current = ctx.kv.get(key) or frozenset()
    ctx.kv.merge(key, GSet(frozenset(current) | {element}))


def post(ctx: Any, prefix: str, user: int, n: int, key: str, parent: str | None) -> bool:
    """Write post ``key`` (number ``n``) by ``user``, a reply when ``parent``; add it to
    the user's feed (in the same transaction)."""
    if parent is not None and ctx.kv.get(parent) is None:
        return False  # one cannot reply to what one cannot see
    ctx.kv.put(key, {"user": user, "parent": parent})
    add_to(ctx, f"{prefix}/feed/{user}", (n, key))
    return True


def follow(ctx: Any, prefix: str, user: int, other: int) -> None:
    add_to(ctx, f"{prefix}/follows/{user}", other)


def timeline(ctx: Any, prefix: str, user: int) -> tuple[int, int, int]:
    """Posts shown, replies whose parent is invisible, feed entries whose post is."""
    shown = orphan_replies = missing_posts = 0
    for other in sorted(ctx.kv.get(f"{prefix}/follows/{user}") or ()):
        for _n, key in sorted(ctx.kv.get(f"{prefix}/feed/{other}") or ())[-5:]:
            entry = ctx.kv.get(key)
            if entry is None:
                missing_posts += 1
                continue
            shown += 1
            if entry["parent"] is not None and ctx.kv.get(entry["parent"]) is None:
                orphan_replies += 1
    return shown, orphan_replies, missing_posts


# The workload.


class Tally:
    """What the clients of one level saw, added up under a lock."""

    def __init__(self) -> None:
        self.samples: dict[str, list[int]] = defaultdict(list)
        self.counts: Counter[str] = Counter()
        self.calls = 0
        self.busy_s = 0.0
        self.lock = threading.Lock()


class Network:
    """The functions of one level, its key prefix, and the users' follow graph."""

    def __init__(self, app: stratus.App, level: str, users: int) -> None:
        self.level, self.prefix, self.users = level, level[0], users
        self.fns = {
            # On both executors (min_instances): a stale cache needs another executor.
            f.__name__: app.function(
                f, name=f"social-{f.__name__}-{level}", consistency=level, min_instances=2
            )
            for f in (peek, post, follow, timeline)
        }
        wait_for_pools(app, [fn.name for fn in self.fns.values()], 2)
        self.ids = itertools.count()
        for user in range(users):
            for step in (1, 2):
                self.call("follow", self.prefix, user, (user + step) % users)

    def call(self, name: str, *args: Any) -> Any:
        return self.fns[name].remote(*args).result(timeout=RESULT_TIMEOUT)

    def story(self, client: int, k: int, rng: random.Random, tally: Tally) -> None:
        clock = time.perf_counter_ns
        author = (3 * client + k) % self.users
        replier, reader = (author + 1) % self.users, (author - 1) % self.users
        n = next(self.ids)
        post_key, reply_key = f"{self.prefix}/post/{n}", f"{self.prefix}/reply/{n}"
        steps: list[tuple[str, str, tuple[Any, ...]]] = [
            ("peek", "peek", (post_key,)),
            ("peek", "peek", (post_key,)),
            ("post", "post", (self.prefix, author, 2 * n, post_key, None)),
            ("reply", "post", (self.prefix, replier, 2 * n + 1, reply_key, post_key)),
            ("timeline", "timeline", (self.prefix, reader)),
        ]
        if k % 5 == 4:
            steps.append(("follow", "follow", (self.prefix, reader, rng.randrange(self.users))))
        seen: dict[str, list[int]] = defaultdict(list)
        counts: Counter[str] = Counter()
        for kind, fn, args in steps:
            start = clock()
            result = self.call(fn, *args)
            seen[kind].append(clock() - start)
            if kind == "reply" and not result:
                counts["replies_refused"] += 1
            elif kind == "timeline":
                shown, orphans, missing = result
                counts["posts_shown"] += shown
                counts["reply_without_its_post"] += orphans
                counts["feed_entry_without_its_post"] += missing
                counts["timelines_with_an_anomaly"] += bool(orphans or missing)
        with tally.lock:
            for kind, values in seen.items():
                tally.samples[kind] += values
            tally.counts.update(counts)
            tally.counts["stories"] += 1
            tally.calls += len(steps)


def run_round(network: Network, settings: Settings, round_: int, tally: Tally) -> None:
    """The clients run their stories at once; the wall time counts for throughput."""

    def client(c: int) -> None:
        rng = random.Random(1000 * round_ + c)
        for k in range(settings.stories_per_client):
            network.story(c, round_ * settings.stories_per_client + k, rng, tally)

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(settings.clients) as pool:
        list(pool.map(client, range(settings.clients)))
    tally.busy_s += time.perf_counter() - start


def progress(message: str) -> None:
    print(f"social.py: {message}", file=sys.stderr, flush=True)


def run(settings: Settings, mode: str) -> dict[str, Any]:
    clock_start = time.perf_counter_ns()
    doc = run_header("social", mode)
    doc["settings"] = asdict(settings)
    users = 3 * settings.clients
    doc["clients"] = f"{settings.clients} threads in one client process, sharing one App"
    tallies = {level: Tally() for level in LEVELS}
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stratus-social-")))
        app = stratus.connect(data_dir=base / "stratus", executors=2)
        stack.callback(app.close)
        networks = {level: Network(app, level, users) for level in LEVELS}
        for round_ in range(settings.rounds):
            for level in alternating(LEVELS, round_):
                progress(f"round {round_ + 1}/{settings.rounds}: {level}")
                settle(settings.settle_s)
                run_round(networks[level], settings, round_, tallies[level])
    doc["leftover_processes"] = wait_for_no_children(timeout=15.0)
    doc["levels"] = {}
    for level, tally in tallies.items():
        doc["levels"][level] = {
            "calls": tally.calls,
            "calls_per_s": round(tally.calls / tally.busy_s) if tally.busy_s else None,
            "stories_per_s": round(tally.counts["stories"] / tally.busy_s, 1)
            if tally.busy_s
            else None,
            "counts": dict(tally.counts),
            "anomalies": tally.counts["reply_without_its_post"]
            + tally.counts["feed_entry_without_its_post"],
            "latency": {
                kind: latency_summary(tally.samples[kind], cdf=True)
                for kind in KINDS
                if tally.samples[kind]
            },
        }
    eventual, causal = doc["levels"]["eventual"], doc["levels"]["causal"]
    doc["ratios_causal_over_eventual"] = {
        "throughput": ratio(causal["calls_per_s"], eventual["calls_per_s"]),
        **{
            f"{kind}_p50": ratio(
                causal["latency"][kind]["p50_us"], eventual["latency"][kind]["p50_us"]
            )
            for kind in ("post", "reply", "timeline")
        },
    }
    doc["load"]["loadavg_end"] = loadavg()
    doc["duration_s"] = round((time.perf_counter_ns() - clock_start) / 1e9, 1)
    return doc


def main(argv: Sequence[str] | None = None) -> None:
    settings = {"full": Settings(), "quick": QUICK, "tiny": TINY}
    bench_main(__doc__, RESULTS, settings, run, peers=False, argv=argv)


if __name__ == "__main__":
    main()
