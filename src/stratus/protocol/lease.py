"""A server's two records in its store that let another host take its coordinator over.

Theory of operation (docs/scaling.md, "A coordinator on another host"): the registry is
already in the store (``server/saved_registry.py``); what a successor on another host
still needs is the cluster key and where agents and clients should find it.

- The **key** is never stored: anyone who can write the store could then sign frames and
  seal values, and run code in every executor. Each coordinator host is given the key out
  of band (``$STRATUS_KEY``, ``--key-file``, a Kubernetes Secret), and the store keeps a
  *key check*: an HMAC of a fixed text under the key, which proves nothing about the key
  to a reader without it, and which a coordinator started with another key cannot match
  (``WrongClusterKey``).
- The **lease** names the coordinator that serves the store: its advertised address, its
  epoch (1 for the first, one more at each takeover) and what a successor needs to judge
  whether it lives. It is signed with the key, so a writer of the store without the key
  cannot send agents and clients elsewhere. ``server/lease.py`` decides when it is taken,
  renewed and lost; clients and agents only read it.

    key check  = msgpack KeyCheck(HMAC-SHA256(key, "stratus key check v1"), cluster id, time)
    lease      = msgpack [mac, body], body = msgpack LeaseRecord
    mac        = HMAC-SHA256(key, "stratus-lease\\0" + body)
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from stratus._exceptions import ProtocolError
from stratus.protocol import keys
from stratus.store.base import Store

_KEY_CHECK_TEXT = b"stratus key check v1"
_LEASE_DOMAIN = b"stratus-lease\x00"


class KeyCheck(msgspec.Struct, frozen=True):
    """What the store keeps of the cluster key: a proof of it, and who set the store up."""

    mac: bytes
    cluster_id: str  # the coordinator that wrote it first (for messages)
    created: float  # wall-clock seconds (for messages)


class LeaseRecord(msgspec.Struct, frozen=True):
    """The coordinator that holds the store's lease (see the module doc)."""

    holder: str  # a random id of the coordinator process
    address: str  # where node agents and clients reach it
    cluster_id: str
    epoch: int  # 1 for the store's first coordinator, one more at each takeover
    duration: float  # s: a successor waits this long without seeing a renewal
    host: str = ""  # its machine's boot id and pid namespace: a successor there can look
    pid: int = 0
    renewals: int = 0  # one more at each renewal: every renewal changes the key's version
    released: bool = False  # its holder stopped cleanly: a successor may start at once


class _Sealed(msgspec.Struct, frozen=True, array_like=True):
    mac: bytes
    body: bytes


_ENCODER = msgspec.msgpack.Encoder()
_KEY_CHECK = msgspec.msgpack.Decoder(KeyCheck)
_SEALED = msgspec.msgpack.Decoder(_Sealed)
_LEASE = msgspec.msgpack.Decoder(LeaseRecord)


def key_proof(key: bytes) -> bytes:
    """The key check's HMAC of ``key``."""
    return hmac.new(key, _KEY_CHECK_TEXT, hashlib.sha256).digest()


def encode_key_check(check: KeyCheck) -> bytes:
    return _ENCODER.encode(check)


def decode_key_check(data: bytes) -> KeyCheck:
    """The stored key check; ``ProtocolError`` if it is malformed."""
    try:
        return _KEY_CHECK.decode(data)
    except msgspec.DecodeError:
        raise ProtocolError(f"the store's key check ({keys.KEY_CHECK!r}) is malformed") from None


def seal(key: bytes, record: LeaseRecord) -> bytes:
    """The stored bytes of ``record``."""
    body = _ENCODER.encode(record)
    return _ENCODER.encode(_Sealed(_lease_mac(key, body), body))


def unseal(key: bytes, data: bytes) -> LeaseRecord:
    """The lease in ``data``; ``ProtocolError`` if it is malformed or not signed with
    ``key``."""
    try:
        sealed = _SEALED.decode(data)
        if not hmac.compare_digest(sealed.mac, _lease_mac(key, sealed.body)):
            raise ProtocolError("the coordinator's lease is not signed with this cluster's key")
        return _LEASE.decode(sealed.body)
    except msgspec.DecodeError:
        raise ProtocolError("the coordinator's lease is malformed") from None


def read_lease(store: Store, key: bytes) -> tuple[LeaseRecord | None, int]:
    """The store's lease and its version: ``(None, 0)`` when there is none, ``(None, v)``
    when the stored one is deleted, malformed or signed with another key."""
    entry = store.get(keys.COORDINATOR_LEASE)
    if entry.value is None:
        return None, entry.version
    try:
        return unseal(key, entry.value), entry.version
    except ProtocolError:
        return None, entry.version


def leased_address(store: Store, key: bytes) -> str:
    """Where the coordinator that holds ``store``'s lease is reached, or "" (no lease, a
    released one, or one not signed with ``key``): how agents and clients follow it."""
    record, _ = read_lease(store, key)
    return record.address if record is not None and not record.released else ""


def _lease_mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _LEASE_DOMAIN + body, hashlib.sha256).digest()
