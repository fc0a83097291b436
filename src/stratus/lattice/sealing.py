"""The seal on user objects kept in the store: a pickle is only loaded if the cluster made it.

Anyone who can write to the store (Redis is a network service) must not be able to run
code in the coordinator or an executor, and loading a pickle runs code. So values that
MessagePack holds exactly are stored as plain data (``stratus.lattice.encoding``), and
any other object is pickled inside an *envelope*::

    tag (32 bytes: HMAC-SHA256 of the pickle) || pickle

The HMAC key is derived from the cluster key, ``HMAC-SHA256(cluster key, LABEL)``, so it
differs from the key that signs frames (a frame's MAC never verifies an envelope, nor the
reverse). :meth:`ValueSeal.open` checks the tag in constant time before it unpickles, and
raises :class:`~stratus._exceptions.ForgedValue` for an envelope made without the key.

What the seal does not promise: a writer to the store can still delete values, roll one
back, or copy a sealed value from one key to another (the tag covers the value, not where
it is stored). Those lose or move data the cluster wrote; they run no code.
"""

from __future__ import annotations

import hmac
import pickle
from typing import Any

from stratus._exceptions import ForgedValue
from stratus._mac import Mac
from stratus.lattice.base import LatticeDecodeError, pickled

LABEL = b"stratus: seal of user objects in the store, v1"
TAG_BYTES = 32


class ValueSeal:
    """Seals and opens user objects with a key derived from the cluster key.

    >>> seal = ValueSeal(b"k" * 32)
    >>> seal.open(seal.seal((1, 2)))
    (1, 2)
    """

    __slots__ = ("_mac",)

    def __init__(self, cluster_key: bytes) -> None:
        if not isinstance(cluster_key, bytes) or not cluster_key:
            raise TypeError("a ValueSeal needs the cluster key (non-empty bytes)")
        self._mac = Mac(hmac.digest(cluster_key, LABEL, "sha256"))

    def __repr__(self) -> str:
        return "ValueSeal(<key>)"  # never the key itself

    def seal(self, obj: Any) -> bytes:
        """The envelope of ``obj`` (its ``pickle``, protocol 5, as ties compare it);
        :class:`~stratus._exceptions.SerializationError` if it cannot be pickled."""
        data = pickled(obj)
        return self._mac.tag(data) + data

    def open(self, envelope: bytes | memoryview) -> Any:
        """The object sealed in ``envelope``, after its tag is verified.

        Raises :class:`ForgedValue` if the tag is missing or wrong (nothing is unpickled),
        and :class:`~stratus.lattice.LatticeDecodeError` if a genuine pickle fails to load
        (a class the process cannot import).
        """
        raw = bytes(envelope)  # one copy: slicing bytes is cheaper than memoryviews here
        if len(raw) < TAG_BYTES:
            raise ForgedValue("a sealed value is shorter than its tag")
        data = raw[TAG_BYTES:]
        if not self._mac.verify(data, raw[:TAG_BYTES]):
            raise ForgedValue(
                "a sealed value in the store does not carry this cluster's seal: it was "
                "written by someone without the cluster key, and was not loaded"
            )
        try:
            return pickle.loads(data)
        except Exception as e:
            raise LatticeDecodeError(f"a sealed value does not unpickle: {e!r}") from e
