"""Pickling of arguments, results and code, with the cluster's size limit.

Plain ``pickle`` is several times faster than cloudpickle for ordinary data, so it is
tried first; objects that plain pickle refers to by a name the executor cannot import
(anything from ``__main__``, lambdas, closures) are pickled by value with cloudpickle.
"""

from __future__ import annotations

import pickle
import sys
import sysconfig
from typing import Any

import cloudpickle

from stratus._exceptions import PayloadTooLarge, SerializationError
from stratus.protocol import code

DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024


def dumps(obj: Any, *, limit: int, what: str = "value") -> bytes:
    """Pickle ``obj``; raise ``SerializationError`` or ``PayloadTooLarge``."""
    try:
        data = pickle.dumps(obj, protocol=5)
        if b"__main__" in data:
            data = cloudpickle.dumps(obj, protocol=5)
    except Exception:
        try:
            data = cloudpickle.dumps(obj, protocol=5)
        except Exception as e:
            raise SerializationError(f"cannot pickle {what}: {type(e).__name__}: {e}") from e
    return _within(data, limit, what)


def dumps_code(obj: Any, *, limit: int, defined_by: Any = None) -> bytes:
    """Pickle code with the module of ``defined_by`` (default: ``obj``) by value: executors
    need not import it, and re-registering after an edit ships the edited code."""
    module = _user_module(obj if defined_by is None else defined_by)
    try:
        if module is not None:
            cloudpickle.register_pickle_by_value(module)
        data = code.dumps(obj)  # file names and source lines kept for tracebacks
    except Exception as e:
        raise SerializationError(f"cannot pickle {obj!r}: {type(e).__name__}: {e}") from e
    finally:
        if module is not None:
            cloudpickle.unregister_pickle_by_value(module)
    return _within(data, limit, "function code")


_HINTS = {
    "arguments": ": use app.put(value) and pass the Ref",
    "result": ": return ctx.put(value), a Ref the caller reads with app.get(ref)",
    "value": ": put large objects with app.put(value) and pass the Ref",
}  # how to send what is too large for a frame (docs/store.md, "Large objects")


def _within(data: bytes, limit: int, what: str) -> bytes:
    if len(data) > limit:
        raise PayloadTooLarge(
            f"{what} of {len(data)} bytes exceeds the limit of {limit} bytes"
            + _HINTS.get(what, ""),
            size=len(data),
            limit=limit,
        )
    return data


def loads(data: bytes, *, what: str = "value") -> Any:
    """Unpickle ``data`` that arrived in a verified frame; raise ``SerializationError``."""
    try:
        return pickle.loads(data)
    except Exception as e:
        raise SerializationError(f"cannot unpickle {what}: {type(e).__name__}: {e}") from e


_INSTALLED = tuple(p for p in {sysconfig.get_path("stdlib"), sysconfig.get_path("purelib")} if p)


def _user_module(obj: Any) -> Any:
    """The module defining ``obj`` if it is the user's own code (not stdlib, not installed)."""
    name = getattr(obj, "__module__", None)
    if not isinstance(name, str) or name == "__main__" or name.partition(".")[0] == "stratus":
        return None
    module = sys.modules.get(name)
    if module is None:
        return None
    path = getattr(module, "__file__", None) or ""
    if not path or path.startswith(_INSTALLED):
        return None
    return module
