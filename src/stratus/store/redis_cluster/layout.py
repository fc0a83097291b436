"""Where a Redis Cluster store keeps things: shards, their hash tags, key names, cursors.

A namespace is split into ``shards`` shards; shard ``i`` lives in one hash slot, the slot
of its tag ``{ns/i}``, so that a script may touch all of its keys::

    {ns/i}:values :feed :live :names :seq   as in redis_store (feed scores are versions)
    {ns/i}:locks     hash   key -> id of the prepared transaction that locked it
    {ns/i}:plocks    hash   "<txid>\\n<prefix>" -> prefix: prefixes read by a prepared one
    {ns/i}:txns      hash   txid -> its prepared writes on this shard (cmsgpack)
    {ns/i}:applied:<txid>   the base version a committed transaction took here (1 h)
    {ns/c}:decision:<txid>  b"c" or b"a": the decision, on the coordinator shard c (1 h)

A key's shard is ``crc32(key) % shards``, except the keys of one file-system volume
(``fs/v/<id>/...``), which all live on the shard of the volume prefix: a file-system
transaction touches one volume, so it is single-shard. A key's version is ``seq * shards +
shard``. No I/O here.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from stratus._exceptions import ConfigurationError

CURSOR_BITS = 64
"""Bits of each shard's sequence in a change-feed cursor."""


class ShardKeys(NamedTuple):
    """The Redis keys of one shard, in the order the scripts take them as ``KEYS``."""

    values: str
    feed: str
    live: str
    names: str
    seq: str
    locks: str
    plocks: str
    txns: str

    @classmethod
    def of(cls, namespace: str, index: int) -> ShardKeys:
        tag = "{" + f"{namespace}/{index}" + "}"
        names = ("values", "feed", "live", "names", "seq", "locks", "plocks", "txns")
        return cls(*(f"{tag}:{name}" for name in names))

    @property
    def tag(self) -> str:
        """``{ns/i}``: every key of the shard starts with it (one hash slot)."""
        return self.values.rsplit(":", 1)[0]

    def applied(self, txid: str) -> str:
        """The key of the base version that ``txid`` took on this shard."""
        return f"{self.tag}:applied:{txid}"

    def decision(self, txid: str) -> str:
        """The key of ``txid``'s decision (on its coordinator shard)."""
        return f"{self.tag}:decision:{txid}"


class Layout:
    """The shards of ``namespace`` and which of them holds a key or a prefix.

    >>> layout = Layout("ns", 4)
    >>> layout.shard_of("fs/v/7/a") == layout.shard_of("fs/v/7/b/c")
    True
    """

    __slots__ = ("keys", "namespace", "shards")

    def __init__(self, namespace: str, shards: int) -> None:
        if not isinstance(namespace, str) or not namespace or {"{", "}"} & set(namespace):
            raise ConfigurationError(
                f"a namespace is a non-empty str without braces: {namespace!r}"
            )
        if not 1 <= shards <= 1024:
            raise ConfigurationError(f"shards must be between 1 and 1024, not {shards}")
        self.namespace = namespace
        self.shards = shards
        self.keys = [ShardKeys.of(namespace, i) for i in range(shards)]

    def shard_of(self, key: str) -> int:
        """The shard of ``key``: a volume's keys share the shard of the volume prefix."""
        if key.startswith("fs/v/"):
            end = key.find("/", 5)
            if end != -1:
                key = key[: end + 1]
        return zlib.crc32(key.encode()) % self.shards

    def prefix_shard(self, prefix: str) -> int | None:
        """The one shard holding every key under ``prefix``, or None (all of them)."""
        if self.shards == 1:
            return 0
        if prefix.startswith("fs/v/") and prefix.find("/", 5) != -1:
            return self.shard_of(prefix)
        return None

    def group(self, keys: Iterable[str]) -> dict[int, list[str]]:
        """``keys`` by shard."""
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(self.shard_of(key), []).append(key)
        return groups

    def coordinator(self, txid: str) -> ShardKeys:
        """The coordinator shard of a transaction id (``"<shard>.<rest>"``)."""
        return self.keys[int(txid.split(".", 1)[0])]


def encode_cursor(seqs: Sequence[int]) -> int:
    """One int of every shard's sequence: the change-feed cursor."""
    return sum(seq << (CURSOR_BITS * i) for i, seq in enumerate(seqs))


def decode_cursor(cursor: int, shards: int) -> list[int]:
    """The shards' sequences packed in ``cursor``."""
    mask = (1 << CURSOR_BITS) - 1
    return [(cursor >> (CURSOR_BITS * i)) & mask for i in range(shards)]
