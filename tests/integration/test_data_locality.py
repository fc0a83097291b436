"""Data locality across clients: a client that never sent a Ref anywhere sends its calls
to the executor that caches it, from the coordinator's hints (real processes, sockets)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import stratus

DEADLINE = 30.0  # s any wait below may take at most


@pytest.fixture
def app(tmp_path: Path) -> Iterator[stratus.App]:
    with stratus.connect(data_dir=tmp_path / "data", executors=2) as app:
        yield app


def wait_until(app: stratus.App, condition: Callable[[], bool], what: str) -> None:
    """Drive ``app``'s I/O (the coordinator's pushes) until ``condition()`` holds."""
    client = app._client
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        with client.polling():
            client.pump(0.02)


def test_a_second_client_sends_calls_with_a_ref_where_it_is_cached(
    app: stratus.App, tmp_path: Path
) -> None:
    @app.function(min_instances=2)
    def where(ctx: stratus.Context, data: bytes = b"", gate: str = "") -> str:
        deadline = time.monotonic() + DEADLINE
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)  # held until the test opens the gate
        return ctx.executor_id

    placement = app._client.placement
    where.remote().result(timeout=DEADLINE)
    wait_until(app, lambda: len(placement.pool("where")) == 2, "two warm executors")
    ref = app.put(os.urandom(2 << 20))

    # A: one call holds the first executor, so the call with the Ref goes to the other.
    gate = tmp_path / "gate"
    held = where.remote(gate=str(gate))
    home = where.remote(ref).result(timeout=DEADLINE)
    gate.touch()
    first = held.result(timeout=DEADLINE)
    assert home != first

    # B: another client; it never sent the Ref, and left alone it would pick ``first``.
    with stratus.connect(app.address, key=app._key) as other:
        where_b = other.lookup("where")
        assert where_b.remote().result(timeout=DEADLINE) == first  # no Ref: the default
        hints = other._client.placement.ref_hints
        wait_until(other, lambda: home in hints.get(ref.key, ()), "the hint for the Ref")
        assert other._client.placement.ref_homes == {}
        landed = [where_b.remote(ref).result(timeout=DEADLINE) for _ in range(5)]
        assert landed == [home] * 5
        assert where_b.remote().result(timeout=DEADLINE) == first  # still the default
