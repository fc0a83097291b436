"""Objects larger than a frame: ``app.put(obj) -> Ref``, stored in chunks, cached by executors.

Theory of operation
-------------------
``put`` turns an object into a *payload*: a ``bytes``-like object is its own payload (no
copy through pickle), anything else is pickled. The payload is cut into chunks of
``CHUNK_BYTES`` written under ``keys.object_chunk(chunks_id, n)`` (a fresh random
``chunks_id`` per put), a few chunks per store commit so that no commit holds the whole
object; then one commit writes the *manifest* under ``keys.object_manifest(name)``, if
that key names no object (else ``ObjectExists``: objects are immutable). The manifest is
what makes the object exist, so a put that dies half way leaves only chunks nobody
names (see docs/store.md for their lifetime). A ``Ref`` to the object names the manifest
key, so the client's placement sends calls with it to the executor that last got it.

The manifest holds the object's size, kind, chunk count and a *tag*: HMAC-SHA256, under a
key derived from the cluster key, over the manifest's fields (name included) and the
payload. A reader gets the manifest, then the chunks, checks their lengths and the tag,
and only then unpickles: a missing, truncated or forged chunk (or a manifest copied to
another name) is ``ObjectCorrupt``, and nothing is loaded that the cluster did not write.
So the payload is a sealed value, as docs/reliability.md asks of every stored object.

``ObjectStore.get`` reads the manifest on every call (one small store read: a deleted
object is ``ObjectNotFound`` at once) and keeps verified payloads in an LRU cache bounded
in bytes, keyed by the manifest's store version: a warm executor reads a 100 MB object's
chunks once. The cache holds payloads, not objects: each call unpickles its own copy, so
a function that mutates its argument cannot change what the next call sees (a ``bytes``
payload is immutable and passed as is).

``delete`` removes the manifest and the chunks in one commit.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from stratus._exceptions import (
    ConfigurationError,
    ObjectCorrupt,
    ObjectExists,
    ObjectNotFound,
    SerializationError,
)
from stratus.kv.ref import Ref
from stratus.protocol import keys, serialization
from stratus.store.base import Delete, Put, Store, Transaction

CHUNK_BYTES = 1 << 20
"""Bytes of one chunk (the last may be shorter)."""

CHUNKS_PER_COMMIT = 16
"""Chunks written per store commit: bounds what one commit (a Redis script) carries."""

DEFAULT_CACHE_BYTES = 256 << 20
"""What an executor's object cache holds at most (it counts against the memory_mb of the
functions it runs); a larger object is read on every use."""

LABEL = b"stratus: objects in chunks, v1"
MAX_NAME = 512

Kind = Literal["bytes", "pickle"]


class Manifest(msgspec.Struct, frozen=True, array_like=True, tag="object1"):
    """What the manifest key holds: where the chunks are and the tag of the payload."""

    chunks_id: str
    kind: Kind
    size: int
    chunk_bytes: int
    chunks: int
    tag: bytes

    def header(self, name: str) -> bytes:
        """The fields the tag covers besides the payload (the tag itself excluded)."""
        fields = (name, self.chunks_id, self.kind, self.size, self.chunk_bytes, self.chunks)
        return msgspec.msgpack.encode(fields)


_manifest_decoder = msgspec.msgpack.Decoder(Manifest)


@dataclass(frozen=True, slots=True)
class ObjectStatistics:
    """What an ``ObjectStore`` did: cache hits and misses, chunks read, bytes cached."""

    hits: int
    misses: int
    chunk_reads: int
    cached_bytes: int
    cached_objects: int


class ObjectStore:
    """Puts, gets and deletes chunked objects in ``store``, sealed with ``cluster_key``.

    >>> objects = ObjectStore(store, cluster_key)
    >>> ref = objects.put(b"x" * 100_000_000)
    >>> len(objects.get(ref))
    100000000
    """

    def __init__(
        self,
        store: Store,
        cluster_key: bytes,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if not isinstance(cluster_key, bytes) or not cluster_key:
            raise TypeError("an ObjectStore needs the cluster key (non-empty bytes)")
        if chunk_bytes < 1 or cache_bytes < 0:
            raise ConfigurationError("chunk_bytes must be >= 1 and cache_bytes >= 0")
        self.store = store
        self._key = hmac.digest(cluster_key, LABEL, "sha256")
        self._chunk_bytes = chunk_bytes
        self._capacity = cache_bytes
        self._cache: OrderedDict[tuple[str, int], tuple[Kind, bytes]] = OrderedDict()
        self._cached_bytes = 0
        self._hits = self._misses = self._chunk_reads = 0

    def put(self, obj: Any, *, name: str | None = None) -> Ref:
        """Store ``obj`` and return the ``Ref`` that names it; ``ObjectExists`` if ``name``
        names an object already, ``SerializationError`` if it cannot be pickled."""
        if name is not None:
            _check_name(name)
        kind, payload = _payload(obj)
        chunks_id = secrets.token_hex(16)
        name = chunks_id if name is None else name
        step = self._chunk_bytes
        chunks = max(1, -(-len(payload) // step))
        view = memoryview(payload)
        for first in range(0, chunks, CHUNKS_PER_COMMIT):
            writes = [
                Put(keys.object_chunk(chunks_id, n), bytes(view[n * step : (n + 1) * step]))
                for n in range(first, min(first + CHUNKS_PER_COMMIT, chunks))
            ]
            self.store.commit(Transaction(reads={}, writes=writes))
        unsigned = Manifest(chunks_id, kind, len(payload), step, chunks, b"")
        manifest = msgspec.structs.replace(unsigned, tag=self._tag(name, unsigned, payload))
        key = keys.object_manifest(name)
        seen = self.store.get(key)
        result = None
        if seen.value is None:  # absent, or deleted: validate that it still is
            txn = Transaction(
                reads={key: seen.version}, writes=[Put(key, msgspec.msgpack.encode(manifest))]
            )
            result = self.store.commit(txn)
        if result is None or not result.ok:
            self._delete_chunks(chunks_id, chunks)
            raise ObjectExists(name)
        return Ref(key)

    def get(self, ref: Ref) -> Any:
        """The object ``ref`` names: ``ObjectNotFound`` if it was deleted, ``ObjectCorrupt``
        if its chunks fail their tag, ``SerializationError`` if it cannot be unpickled."""
        name = object_name(ref)
        key = keys.object_manifest(name)
        entry = self.store.get(key)
        if entry.value is None:
            raise ObjectNotFound(name)
        cached = self._cache.get((key, entry.version))
        if cached is not None:
            self._hits += 1
            self._cache.move_to_end((key, entry.version))
            kind, payload = cached
        else:
            self._misses += 1
            kind, payload = self._read(name, entry.value)
            self._remember((key, entry.version), kind, payload)
        if kind == "bytes":
            return payload
        try:
            return pickle.loads(payload)  # its tag verified: the cluster wrote it
        except Exception as e:
            raise SerializationError(f"cannot unpickle object {name!r}: {e}") from e

    def delete(self, ref: Ref) -> None:
        """Remove the object ``ref`` names, chunks and all; ``ObjectNotFound`` if none."""
        name = object_name(ref)
        key = keys.object_manifest(name)
        entry = self.store.get(key)
        if entry.value is None:
            raise ObjectNotFound(name)
        manifest = self._manifest(name, entry.value)
        chunk_keys = [keys.object_chunk(manifest.chunks_id, n) for n in range(manifest.chunks)]
        txn = Transaction(
            reads={key: entry.version}, writes=[Delete(k) for k in (key, *chunk_keys)]
        )
        if not self.store.commit(txn).ok:  # deleted (or deleted and put again) meanwhile
            raise ObjectNotFound(name)

    def cached_refs(self, limit: int) -> list[str]:
        """The keys (``Ref.key``) of the objects whose payloads are cached here, most
        recently used first, at most ``limit``: what an executor reports for locality."""
        out: list[str] = []
        for key, _ in reversed(self._cache):
            if len(out) >= limit:
                break
            if key not in out:  # two versions of one name: once
                out.append(key)
        return out

    def statistics(self) -> ObjectStatistics:
        return ObjectStatistics(
            self._hits, self._misses, self._chunk_reads, self._cached_bytes, len(self._cache)
        )

    # ------------------------------------------------------------------------ internals

    def _read(self, name: str, stored: bytes) -> tuple[Kind, bytes]:
        manifest = self._manifest(name, stored)
        chunk_keys = [keys.object_chunk(manifest.chunks_id, n) for n in range(manifest.chunks)]
        parts: list[bytes] = []
        for first in range(0, len(chunk_keys), CHUNKS_PER_COMMIT):  # bounded read batches
            batch = chunk_keys[first : first + CHUNKS_PER_COMMIT]
            entries = self.store.get_many(batch)
            self._chunk_reads += len(batch)
            for n, k in enumerate(batch, first):
                value = entries[k].value
                expected = min(manifest.chunk_bytes, manifest.size - n * manifest.chunk_bytes)
                if value is None or len(value) != max(expected, 0):
                    raise ObjectCorrupt(
                        f"object {name!r}: chunk {n} of {manifest.chunks} is "
                        + ("missing" if value is None else f"{len(value)} bytes, not {expected}")
                    )
                parts.append(value)
        payload = b"".join(parts)
        if not hmac.compare_digest(self._tag(name, manifest, payload), manifest.tag):
            raise ObjectCorrupt(
                f"object {name!r} does not match its tag: a chunk or its manifest was written "
                "by someone without the cluster key; it was not loaded"
            )
        return manifest.kind, payload

    def _manifest(self, name: str, stored: bytes) -> Manifest:
        try:
            manifest = _manifest_decoder.decode(stored)
        except msgspec.DecodeError as e:
            raise ObjectCorrupt(f"object {name!r}: its manifest is malformed: {e}") from None
        step, size = manifest.chunk_bytes, manifest.size
        if step < 1 or size < 0 or manifest.chunks != max(1, -(-size // step)):
            raise ObjectCorrupt(f"object {name!r}: its manifest's sizes do not add up")
        return manifest

    def _tag(self, name: str, manifest: Manifest, payload: bytes) -> bytes:
        mac = hmac.new(self._key, manifest.header(name), hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def _remember(self, key: tuple[str, int], kind: Kind, payload: bytes) -> None:
        if len(payload) > self._capacity:
            return
        self._cache[key] = (kind, payload)
        self._cached_bytes += len(payload)
        while self._cached_bytes > self._capacity:
            _, (_, dropped) = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)

    def _delete_chunks(self, chunks_id: str, chunks: int) -> None:
        writes = [Delete(keys.object_chunk(chunks_id, n)) for n in range(chunks)]
        self.store.commit(Transaction(reads={}, writes=writes))


def is_object(ref: Ref) -> bool:
    """Whether ``ref`` names an object of ``app.put`` (else it names a kv key)."""
    return ref.key.startswith(keys.OBJECTS)


def object_name(ref: Ref) -> str:
    """The name of the object ``ref`` names; ``ConfigurationError`` for a kv key's Ref."""
    if not isinstance(ref, Ref) or not is_object(ref):
        raise ConfigurationError(f"{ref!r} is not a Ref returned by put()")
    return ref.key[len(keys.OBJECTS) :]


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ConfigurationError(f"an object's key is a str of 1-{MAX_NAME} characters")


def _payload(obj: Any) -> tuple[Kind, bytes]:
    if isinstance(obj, bytes | bytearray | memoryview):
        return "bytes", bytes(obj)
    if isinstance(obj, Ref):
        raise ConfigurationError("put() of a Ref: pass the Ref itself")
    try:
        return "pickle", serialization.dumps(obj, limit=1 << 62, what="object")
    except SerializationError:
        raise
    except Exception as e:  # pickling a huge object may fail in odd ways (MemoryError)
        raise SerializationError(f"cannot pickle object: {type(e).__name__}: {e}") from e
