"""``Ref``: an argument that names a kv key; the executor passes the value instead."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to the kv value at ``key``, resolved by the executor from its cache.

    Only the key travels with the call; the value is read where the function runs, as
    part of the invocation's reads. Calls with the same references go, when they can, to
    the executor that already holds them. ``app.put(obj)`` returns a Ref to an object
    stored in chunks (its key is the object's manifest, under the platform's keys), which
    the executor reads from its object cache instead (``stratus.objects``).

    >>> total.remote(stratus.Ref("arrays/1"), stratus.Ref("arrays/2"))
    >>> total.remote(app.put(list(range(10_000_000))))
    """

    key: str

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"Ref needs a non-empty str key, got {self.key!r}")
