"""A server's registry kept in its store, so that a restart keeps every function and DAG.

Theory of operation: each function version and each DAG is one entry under the platform's
registry keys (``protocol/keys.py``), written when it is registered, before the caller
hears it succeeded, and the coordinator reloads them all when it starts. A function's code
is a pickle, and loading a pickle runs code, so each entry is signed: an HMAC-SHA256 with
the cluster key over the entry's store key and its body. An entry that anyone without the
key wrote (or one written under another key, or copied to another name) is refused when
the registry is reloaded, logged, and never unpickled. That is why a server keeps its key
across restarts (``<data dir>/key``).

    entry   = msgpack [mac, body]
    body    = msgpack SavedFunction | SavedDag
    mac     = HMAC-SHA256(key, "stratus-registry\\0" + store key + "\\0" + body)
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import msgspec

from stratus._exceptions import ProtocolError
from stratus.protocol import keys
from stratus.protocol.messages import DagNode, FunctionOptions
from stratus.server.registry import FunctionVersion, Registry
from stratus.store.base import Store

log = logging.getLogger("stratus.registry")

_DOMAIN = b"stratus-registry\x00"


class SavedFunction(msgspec.Struct, frozen=True, tag="function"):
    name: str
    version: int
    code: bytes
    options: FunctionOptions


class SavedDag(msgspec.Struct, frozen=True, tag="dag"):
    name: str
    nodes: list[DagNode]


class _Entry(msgspec.Struct, frozen=True, array_like=True):
    mac: bytes
    body: bytes


_BODY = msgspec.msgpack.Decoder(SavedFunction | SavedDag)
_ENTRY = msgspec.msgpack.Decoder(_Entry)
_ENCODER = msgspec.msgpack.Encoder()


def _mac(key: bytes, store_key: str, body: bytes) -> bytes:
    message = _DOMAIN + store_key.encode() + b"\x00" + body
    return hmac.new(key, message, hashlib.sha256).digest()


def sign(key: bytes, store_key: str, saved: SavedFunction | SavedDag) -> bytes:
    """The stored bytes of ``saved`` at ``store_key``."""
    body = _ENCODER.encode(saved)
    return _ENCODER.encode(_Entry(_mac(key, store_key, body), body))


def verify(key: bytes, store_key: str, data: bytes) -> SavedFunction | SavedDag:
    """The entry stored at ``store_key``; ``ProtocolError`` if it is malformed or was not
    signed with ``key`` for this very store key."""
    try:
        entry = _ENTRY.decode(data)
    except msgspec.DecodeError:
        raise ProtocolError(f"registry entry {store_key!r} is malformed") from None
    if not hmac.compare_digest(entry.mac, _mac(key, store_key, entry.body)):
        raise ProtocolError(f"registry entry {store_key!r} is not signed with this cluster's key")
    try:
        return _BODY.decode(entry.body)
    except msgspec.DecodeError:
        raise ProtocolError(f"registry entry {store_key!r} has a malformed body") from None


class SavedRegistry:
    """Stores a coordinator's registry changes and reloads them (see the module doc)."""

    def __init__(self, store: Store, key: bytes) -> None:
        self.store = store
        self.key = key

    def save_function(self, entry: FunctionVersion) -> None:
        store_key = keys.registry_function(entry.name, entry.version)
        saved = SavedFunction(entry.name, entry.version, entry.code, entry.options)
        self.store.put(store_key, sign(self.key, store_key, saved))

    def save_dag(self, name: str, nodes: list[DagNode]) -> None:
        store_key = keys.registry_dag(name)
        self.store.put(store_key, sign(self.key, store_key, SavedDag(name, nodes)))

    def delete_dag(self, name: str) -> None:
        self.store.delete(keys.registry_dag(name))

    def load(self) -> tuple[Registry, list[str]]:
        """The stored registry, and a message for each entry refused."""
        registry, refused = Registry(), []
        dags: list[SavedDag] = []
        found = self.store.keys(keys.REGISTRY)
        for store_key, stored in self.store.get_many(found).items():
            if stored.value is None:
                continue  # deleted since it was listed
            try:
                saved = verify(self.key, store_key, stored.value)
            except ProtocolError as e:
                refused.append(str(e))
                continue
            if isinstance(saved, SavedDag):
                dags.append(saved)  # once every function is back
            else:
                registry.add(FunctionVersion(saved.name, saved.version, saved.code, saved.options))
        for dag in dags:
            try:
                registry.register_dag(dag.name, dag.nodes)
            except (ProtocolError, LookupError, ValueError) as e:
                refused.append(f"DAG {dag.name!r}: {e}")
        for message in refused:
            log.warning("registry entry refused: %s", message)
        return registry, refused
