"""A small social network under eventual and causal consistency.

Users post, others reply (a reply is written after reading the post), and readers load
timelines: each reply, then the post it answers. Under ``causal`` no reader may ever see
a reply without its post; under ``eventual`` an executor's cache may still hold "no such
post" when the reply arrives, and the run reports how often that happened.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
from collections.abc import Iterator

import pytest

import stratus


@pytest.fixture(scope="module")
def network(app: stratus.App) -> Iterator[dict[str, dict[str, stratus.Function]]]:
    levels: dict[str, dict[str, stratus.Function]] = {}
    for level in ("eventual", "causal"):

        def peek(ctx: stratus.Context, post: str) -> bool:
            return ctx.kv.get(post) is not None

        def post(ctx: stratus.Context, key: str, text: str) -> None:
            ctx.kv.put(key, text)

        def reply(ctx: stratus.Context, post_key: str, key: str, text: str) -> bool:
            if ctx.kv.get(post_key) is None:
                return False
            ctx.kv.put(key, {"post": post_key, "text": text})
            return True

        def timeline(ctx: stratus.Context, replies: list[str]) -> tuple[int, int]:
            shown = anomalies = 0
            for key in replies:
                answer = ctx.kv.get(key)
                if answer is None:
                    continue
                shown += 1
                if ctx.kv.get(answer["post"]) is None:
                    anomalies += 1  # a reply to a post the reader cannot see
            return shown, anomalies

        levels[level] = {
            f.__name__: app.function(f, name=f"{f.__name__}-{level}", consistency=level)
            for f in (peek, post, reply, timeline)
        }
    yield levels


def _run(fns: dict[str, stratus.Function], prefix: str, rounds: int) -> tuple[int, int]:
    counter = itertools.count()

    def user(_: int) -> tuple[int, int]:
        shown = anomalies = 0
        for _ in range(rounds):
            n = next(counter)
            post_key, reply_key = f"{prefix}/post/{n}", f"{prefix}/reply/{n}"
            # Both executors look at the post before it exists: their caches say "absent".
            for f in [fns["peek"].remote(post_key) for _ in range(2)]:
                f.result(timeout=30)
            fns["post"].remote(post_key, "hello").result(timeout=30)
            fns["reply"].remote(post_key, reply_key, "hi").result(timeout=30)
            s, a = fns["timeline"].remote([reply_key]).result(timeout=30)
            shown, anomalies = shown + s, anomalies + a
        return shown, anomalies

    with cf.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(user, range(4)))
    return sum(s for s, _ in results), sum(a for _, a in results)


def test_causal_readers_never_see_a_reply_without_its_post(
    network: dict[str, dict[str, stratus.Function]],
) -> None:
    eventual_shown, eventual_anomalies = _run(network["eventual"], "e", rounds=25)
    causal_shown, causal_anomalies = _run(network["causal"], "c", rounds=25)
    print(
        f"\nsocial network, 100 timelines each: eventual showed {eventual_shown} replies "
        f"with {eventual_anomalies} anomalies; causal showed {causal_shown} with "
        f"{causal_anomalies}"
    )
    assert causal_shown > 0  # the check ran on real replies
    assert causal_anomalies == 0
