"""A server's claim on a real store (server/takeover.py): the key check and the lease."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratus import _exceptions as exc
from stratus.kv.open import open_store
from stratus.protocol import keys
from stratus.protocol.lease import leased_address
from stratus.server.takeover import LeaseKeeper, check_key, this_host
from stratus.store.base import Store

KEY, OTHER = b"k" * 32, b"o" * 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:{tmp_path / 'state.db'}") as opened:
        yield opened


def keeper(store: Store, address: str, duration: float = 5.0) -> LeaseKeeper:
    return LeaseKeeper(store, KEY, address=address, cluster_id="c", duration=duration)


def test_the_first_server_sets_the_key_check_and_another_key_is_refused(store: Store) -> None:
    check_key(store, KEY, "c1", "sqlite:x")
    check_key(store, KEY, "c2", "sqlite:x")  # the same key, a later server: fine
    assert KEY.hex() not in repr(store.get(keys.KEY_CHECK).value)  # a proof, not the key
    with pytest.raises(exc.WrongClusterKey, match=r"set up by cluster c1 .* another cluster key"):
        check_key(store, OTHER, "c3", "sqlite:x")
    store.put(keys.KEY_CHECK, b"\xc1garbage")
    with pytest.raises(exc.WrongClusterKey, match="malformed"):
        check_key(store, KEY, "c4", "sqlite:x")


def test_a_released_lease_is_taken_at_once_with_the_next_epoch(store: Store) -> None:
    first = keeper(store, "tcp://10.0.0.1:7070")
    assert first.acquire() == 1 and first.serving()
    assert leased_address(store, KEY) == "tcp://10.0.0.1:7070"
    assert leased_address(store, OTHER) == ""  # not signed with that key: not followed
    first.release()
    assert not first.serving() and leased_address(store, KEY) == ""
    second = keeper(store, "tcp://10.0.0.2:7070")
    assert second.acquire() == 2
    assert leased_address(store, KEY) == "tcp://10.0.0.2:7070"


def test_a_holder_gone_from_this_host_is_taken_over_at_once(store: Store) -> None:
    if not this_host():
        pytest.skip("this machine's boot id and namespaces cannot be read (/proc)")
    dead = subprocess.Popen(["true"])
    dead.wait()
    first = keeper(store, "tcp://10.0.0.1:7070", duration=3600.0)
    first.lease.pid = dead.pid  # as if that process had held it, and died
    assert first.acquire() == 1
    assert keeper(store, "tcp://10.0.0.2:7070", duration=3600.0).acquire() == 2


def test_a_live_holder_that_renews_refuses_a_second_coordinator(store: Store) -> None:
    first = keeper(store, "tcp://10.0.0.1:7070")
    first.acquire()
    lost: list[str] = []
    first.start(lost.append)
    try:
        with pytest.raises(exc.CoordinatorActive, match="renews it") as refused:
            keeper(store, "tcp://10.0.0.2:7070").acquire()
        assert refused.value.address == "tcp://10.0.0.1:7070" and refused.value.epoch == 1
        assert first.serving() and lost == []
    finally:
        first.release()
