"""``app.kv``: the kv store from outside functions, with the names ``ctx.kv`` has."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stratus._exceptions import ConfigurationError
from stratus.protocol import keys, serialization
from stratus.protocol import messages as m

if TYPE_CHECKING:
    from stratus.client.client import Client


class KV:
    """Each call is one atomic operation on the cluster's store, through the coordinator.

    >>> app.kv.put("greeting", "hello")
    >>> app.kv.get("greeting")
    'hello'
    >>> app.kv.merge("tags", stratus.lattice.GSet(frozenset({"a"})))
    """

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key`` (plain values unwrapped from their LWW register)."""
        reply = self._client.request(lambda rid: m.KvRead(rid, key))
        value = serialization.loads(reply.value)
        return default if reply.version == 0 or value is None else value

    def get_lattice(self, key: str) -> Any:
        """The lattice stored at ``key``, or None."""
        reply = self._client.request(lambda rid: m.KvRead(rid, key, True))
        return serialization.loads(reply.value)

    def put(self, key: str, value: Any) -> int:
        """Set ``key`` (a plain value is an LWW register; a lattice replaces); its version."""
        return self._write("put", key, value)

    def merge(self, key: str, value: Any) -> int:
        """Merge a lattice into ``key``; returns the new version."""
        return self._write("merge", key, value)

    def delete(self, key: str) -> int:
        return self._write("delete", key, None)

    def incr(self, key: str, n: int = 1) -> None:
        """Add ``n`` (negative: subtract) to the counter at ``key``, created at 0; read
        it with ``get(key)``, an ``int``. Concurrent increments all count.

        >>> app.kv.incr("visits")
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise ConfigurationError(f"incr adds an int, not {type(n).__name__}")
        self._write("incr", key, n)

    def keys(self, prefix: str = "") -> list[str]:
        reply = self._client.request(lambda rid: m.KvList(rid, prefix))
        keys: list[str] = reply.keys
        return keys

    def _write(self, op: Any, key: str, value: Any) -> int:
        keys.check_user_key(key)  # the platform's keys: a clear error, not a broken store
        blob = serialization.dumps(value, limit=self._client.max_payload, what="value")
        reply = self._client.request(lambda rid: m.KvWrite(rid, op, key, blob))
        version: int = reply.version
        return version
