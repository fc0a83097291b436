"""The kv store over HTTP: values as JSON, versions as ETags (the Dapr state API's shape).

A value written over HTTP is a plain JSON value, stored as an LWW register like
``app.kv.put`` stores it, so Python and HTTP callers share keys. A read returns the
register's value, or the lattice's value converted to JSON (sets as arrays). The ETag
is the key's store version: ``If-Match`` makes a write conditional on it, validated by the
store in the same atomic commit as the write (HTTP 412 when it changed).

Every method takes the caller's ``prefix``: "" for the operator, ``keys.tenant_prefix``
for a tenant, whose key ``k`` is stored as ``prefix + k``. The key a caller names is
checked before the prefix is added (never a platform key, so never another tenant's),
and listings strip it again: a tenant cannot name, see or list a key outside its own.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from stratus._exceptions import ConfigurationError
from stratus.gateway.errors import HTTPProblem
from stratus.kv.values import as_lattice
from stratus.lattice import HybridClock, Lattice, LatticeCodec
from stratus.protocol import keys
from stratus.store.base import Delete, Put, Store, Transaction, Write, check_key


class Upsert(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="upsert", tag_field="operation"
):
    """Write ``value`` at ``key`` (in ``POST /v1/kv:transaction``), only if the key's
    version is still ``etag`` when one is given."""

    key: str
    value: Any
    etag: str | None = None


class Remove(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="delete", tag_field="operation"
):
    """Delete ``key``, only if its version is still ``etag`` when one is given."""

    key: str
    etag: str | None = None


Operation = Upsert | Remove


class TransactionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    operations: list[Operation]


class BulkGetRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keys: list[str]


MAX_OPERATIONS = 100
"""The most keys one bulk get or transaction may name."""

MAX_KEY_CHARS = 256
"""The longest key over HTTP, in characters (4 bytes each at most: within the store's 1 KiB)."""


def check_user_key(key: str) -> str:
    if keys.is_reserved(key):
        raise HTTPProblem(403, "ReservedKey", f"{key!r} belongs to the platform")
    if len(key) > MAX_KEY_CHARS:
        raise HTTPProblem(400, "BadKey", f"keys are at most {MAX_KEY_CHARS} characters")
    try:
        check_key(key)
    except ConfigurationError as e:
        raise HTTPProblem(400, "BadKey", str(e)) from None
    return key


ETAG_PATTERN = r'^(\*|(W/)?"?[0-9]{1,18}"?)$'
"""An ETag as a caller may send it: ``"12"``, ``12``, ``W/"12"`` or ``*`` (any version)."""
_ETAG = re.compile(ETAG_PATTERN)


def parse_etag(etag: str | None) -> int | None:
    """The version an ``If-Match`` or ``etag`` names; None for ``*`` or no ETag."""
    if etag is None or etag == "*":
        return None
    if not _ETAG.match(etag):
        raise HTTPProblem(400, "BadETag", f"an ETag is a version number, not {etag!r}")
    return int(etag.removeprefix("W/").strip('"'))


def etag_of(version: int) -> str:
    return f'"{version}"'


class KVGateway:
    """Blocking store calls behind the HTTP handlers (they run them in a thread pool)."""

    def __init__(self, store: Store, values: LatticeCodec) -> None:
        self._store = store
        self._values = values
        self._clock = HybridClock("gateway")

    def get(self, key: str, prefix: str = "") -> tuple[Any, int]:
        """The JSON-ready value and version of ``key``; version 0 when absent."""
        entry = self._store.get(prefix + check_user_key(key))
        if entry.value is None:
            return None, entry.version
        return _plain(self._values.decode(entry.value)), entry.version

    def get_many(self, names: list[str], prefix: str = "") -> list[dict[str, Any]]:
        if len(names) > MAX_OPERATIONS:
            raise HTTPProblem(413, "TooManyKeys", f"at most {MAX_OPERATIONS} keys per request")
        entries = self._store.get_many([prefix + check_user_key(k) for k in names])
        items = []
        for key in names:
            entry = entries[prefix + key]
            if entry.value is not None:
                value = _plain(self._values.decode(entry.value))
                items.append({"key": key, "value": value, "etag": etag_of(entry.version)})
        return items

    def put(self, key: str, value: Any, if_match: int | None, prefix: str = "") -> int:
        """Write ``value``; with ``if_match``, only if the version is still that (0: absent)."""
        ops: list[Operation] = [Upsert(key, value, None if if_match is None else str(if_match))]
        return self.transact(ops, prefix)[key]

    def delete(self, key: str, if_match: int | None, prefix: str = "") -> int:
        ops: list[Operation] = [Remove(key, None if if_match is None else str(if_match))]
        return self.transact(ops, prefix)[key]

    def transact(self, operations: list[Operation], prefix: str = "") -> dict[str, int]:
        """All operations at once or none; 412 if an ``etag`` no longer matches."""
        if not operations or len(operations) > MAX_OPERATIONS:
            raise HTTPProblem(400, "BadTransaction", f"1 to {MAX_OPERATIONS} operations")
        reads: dict[str, int] = {}
        writes: list[Write] = []
        for op in operations:
            key = prefix + check_user_key(op.key)
            expected = parse_etag(op.etag)
            if expected is not None:
                reads[key] = expected
            match op:
                case Upsert(value=value):
                    register = as_lattice(_checked_value(value), self._clock)
                    writes.append(Put(key, self._values.encode(register)))
                case Remove():
                    writes.append(Delete(key))
        result = self._store.commit(Transaction(reads, writes))
        if not result.ok:
            raise HTTPProblem(
                412, "PreconditionFailed", f"changed since read: {', '.join(result.conflicts)}"
            )
        return {k[len(prefix) :]: v for k, v in result.versions.items()}

    def keys(self, wanted: str, prefix: str = "") -> list[str]:
        """The caller's keys that start with ``wanted``."""
        if not prefix:
            return [k for k in self._store.keys(wanted) if not keys.is_reserved(k)]
        return [k[len(prefix) :] for k in self._store.keys(prefix + wanted)]


def _checked_value(value: Any) -> Any:
    if value is None:
        raise HTTPProblem(400, "BadValue", "null is not a value; DELETE the key instead")
    return value


def _plain(lattice: Lattice) -> Any:
    """What a JSON reader gets for a stored lattice: what ``app.kv.get`` returns."""
    return lattice.value


def now_ms() -> int:
    return time.time_ns() // 1_000_000
