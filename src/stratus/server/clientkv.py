"""``app.kv`` served by the coordinator: single reads and writes from outside functions.

Each request is its own atomic operation on the store (a function's ``ctx.kv`` is where
multi-key transactions live).
"""

from __future__ import annotations

from typing import Any

from stratus import _exceptions as exc
from stratus.kv import as_lattice
from stratus.kv.open import open_store
from stratus.lattice import HybridClock, Lattice, LatticeCodec
from stratus.protocol import errors, keys, serialization
from stratus.protocol import messages as m

_LIMIT = serialization.DEFAULT_MAX_PAYLOAD


class ClientKV:
    """``values`` is the cluster's codec: a forged stored value fails its request with
    ``ForgedValue`` and the coordinator serves on."""

    def __init__(self, url: str, values: LatticeCodec) -> None:
        # Opened at once: a store that cannot be reached stops the cluster at its start.
        self.values = values
        self.store = open_store(url, values)
        self._clock = HybridClock("coordinator")

    def handle(self, request: m.KvRead | m.KvWrite | m.KvList) -> Any:
        """The reply to one request; errors become ``RequestFailed``."""
        try:
            return self._handle(request)
        except exc.StratusError as e:
            return m.RequestFailed(request.rid, errors.encode(e))

    def _handle(self, request: m.KvRead | m.KvWrite | m.KvList) -> Any:
        match request:
            case m.KvRead(rid, key, lattice):
                entry = self.store.get(key)
                stored = None if entry.value is None else self.values.decode(entry.value)
                value = stored if lattice or stored is None else stored.value
                return m.KvValue(rid, serialization.dumps(value, limit=_LIMIT), entry.version)
            case m.KvWrite(rid, "delete", key):
                return m.KvWritten(rid, self.store.delete(key))
            case m.KvWrite(rid, op, key, value):
                given = serialization.loads(value, what="value")
                if op == "put" and isinstance(given, Lattice):
                    return m.KvWritten(rid, self.store.put(key, self.values.encode(given)))
                merged = as_lattice(given, self._clock)
                return m.KvWritten(rid, self.store.merge(key, self.values.encode(merged)))
            case m.KvList(rid, prefix):
                listed = self.store.keys(prefix)
                return m.KvKeys(rid, [k for k in listed if not keys.is_reserved(k)])
        raise exc.ProtocolError(f"unexpected kv request {request!r}")

    def close(self) -> None:
        self.store.close()
