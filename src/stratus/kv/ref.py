"""``Ref``: an argument that names a kv key; the executor passes the value instead."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to the kv value at ``key``, resolved by the executor from its cache.

    Only the key travels with the call; the value is read where the function runs, as
    part of the invocation's reads. Calls with the same references go, when they can, to
    the executor that already holds them.

    >>> total.remote(stratus.Ref("arrays/1"), stratus.Ref("arrays/2"))
    """

    key: str

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"Ref needs a non-empty str key, got {self.key!r}")
