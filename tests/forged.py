"""Forged store values for the tests of the seal: pickles that would act when loaded."""

from __future__ import annotations

import os
import pickle
from typing import Any


class _MakesDirectory:
    """Unpickling this calls ``os.mkdir(path)``: a stand-in for arbitrary code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


def trap(path: str | os.PathLike[str]) -> bytes:
    """A pickle that creates the directory ``path`` if anything ever loads it."""
    return pickle.dumps(_MakesDirectory(os.fspath(path)), protocol=5)


def forged_register(payload: bytes, *, tag: bytes = b"\0" * 32) -> bytes:
    """An LWW register whose value is an envelope around ``payload`` with a made-up tag,
    as someone who can write to the store but has no cluster key would write it."""
    import msgspec

    envelope = msgspec.msgpack.Ext(1, tag + payload)
    return msgspec.msgpack.encode(["lww2", 2**40, 0, "forger", envelope])
