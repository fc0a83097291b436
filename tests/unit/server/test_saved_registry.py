"""The registry a server keeps in its store: reloaded whole, signed, forgeries refused."""

from __future__ import annotations

import pytest

from stratus._exceptions import ProtocolError
from stratus.kv.open import open_store
from stratus.protocol import keys
from stratus.protocol.messages import DagNode, FunctionOptions
from stratus.server.registry import Registry
from stratus.server.saved_registry import SavedFunction, SavedRegistry, sign, verify
from stratus.store.base import Store

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
OPTIONS = FunctionOptions(timeout=5.0, retries=0, min_instances=1)


@pytest.fixture
def store() -> Store:
    return open_store("memory:")


def saved_with(store: Store, *names: str) -> tuple[SavedRegistry, Registry]:
    saved, registry = SavedRegistry(store, KEY), Registry()
    for name in names:
        entry = registry.next_version(name, f"code of {name}".encode(), OPTIONS)
        saved.save_function(entry)
        registry.add(entry)
    return saved, registry


def test_functions_versions_and_dags_come_back(store: Store) -> None:
    saved, registry = saved_with(store, "f", "f", "g")
    registry.register_dag("pipe", [DagNode("f", []), DagNode("g", [0])])
    saved.save_dag("pipe", registry.dags["pipe"])
    loaded, refused = SavedRegistry(store, KEY).load()
    assert refused == []
    assert [v.version for v in loaded.functions["f"]] == [1, 2]
    assert loaded.latest("g").code == b"code of g" and loaded.latest("g").options == OPTIONS
    assert loaded.dags == {"pipe": [DagNode("f", []), DagNode("g", [0])]}
    assert loaded.next_version("f", b"", OPTIONS).version == 3


def test_a_deleted_dag_stays_deleted(store: Store) -> None:
    saved, _ = saved_with(store, "f")
    saved.save_dag("d", [DagNode("f", [])])
    saved.delete_dag("d")
    assert SavedRegistry(store, KEY).load()[0].dags == {}


def test_an_entry_signed_with_another_key_is_refused(store: Store) -> None:
    saved_with(store, "good")
    forged_key = keys.registry_function("evil", 1)
    forged = SavedFunction("evil", 1, b"any pickle", OPTIONS)
    store.put(forged_key, sign(OTHER_KEY, forged_key, forged))
    loaded, refused = SavedRegistry(store, KEY).load()
    assert list(loaded.functions) == ["good"]
    assert len(refused) == 1 and "not signed with this cluster's key" in refused[0]


def test_a_signed_entry_moved_to_another_name_is_refused(store: Store) -> None:
    saved_with(store, "f")
    genuine = store.get(keys.registry_function("f", 1)).value
    assert genuine is not None
    store.put(keys.registry_function("f", 2), genuine)  # replayed as a newer version
    loaded, refused = SavedRegistry(store, KEY).load()
    assert [v.version for v in loaded.functions["f"]] == [1] and len(refused) == 1


def test_tampered_and_malformed_entries_are_refused(store: Store) -> None:
    store_key = keys.registry_function("f", 1)
    data = bytearray(sign(KEY, store_key, SavedFunction("f", 1, b"code", OPTIONS)))
    data[-1] ^= 1  # a bit of the body
    with pytest.raises(ProtocolError, match="not signed"):
        verify(KEY, store_key, bytes(data))
    with pytest.raises(ProtocolError, match="malformed"):
        verify(KEY, store_key, b"\x93garbage")


def test_a_dag_whose_function_was_refused_is_refused_too(store: Store) -> None:
    saved, _ = saved_with(store, "f")
    saved.save_dag("d", [DagNode("f", [])])
    store.put(keys.registry_function("f", 1), b"not signed")
    loaded, refused = SavedRegistry(store, KEY).load()
    assert loaded.dags == {} and len(refused) == 2


def test_versions_after_a_refused_one_are_still_found(store: Store) -> None:
    saved_with(store, "f", "f", "f")
    store.put(keys.registry_function("f", 2), b"not signed")
    loaded, _ = SavedRegistry(store, KEY).load()
    assert loaded.get("f", 3).version == 3 and loaded.latest("f").version == 3
    assert loaded.next_version("f", b"", OPTIONS).version == 4
