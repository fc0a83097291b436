"""Errors on the wire: ``ErrorInfo``, and the one pair that encodes and decodes it (no I/O).

Whoever sends a failure (an executor's ``Failure``, the coordinator's or the kv
server's ``RequestFailed``, the caller's own invocation state machine) builds it with
``encode`` (an error stratus raised) or ``encode_remote`` (the user's function raised);
the caller turns it back into an exception with ``decode``. ``kind`` is the name of a
class of ``stratus._exceptions``; ``KINDS`` maps every one of them, and a test checks
that none is missing.

A remote exception travels as its type's name, its message, its formatted traceback and,
when it pickles, the exception itself; ``decode`` raises it as a ``RemoteError`` that is
also of the original type when that type could be unpickled on the caller's side
(``except KeyError`` catches a remote ``KeyError``). Its message and traceback are cut to
``MESSAGE_CHARS`` and ``TRACEBACK_CHARS``, keeping both ends, and a ``RemoteError`` that
passes through a function (a nested call's failure, re-raised) travels with its
callee's message and original exception, its traceback holding the rest: each level
would otherwise carry its callee's text and pickle in its own, and 2,000 nested levels
of that grow to gigabytes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, Literal, get_args

import msgspec

from stratus import _exceptions as exc
from stratus.protocol import serialization

ErrorKind = Literal[
    "AccessDenied",
    "BadSignature",
    "ClusterClosed",
    "ConfigurationError",
    "ConflictError",
    "ConnectionFailed",
    "CoordinatorActive",
    "ExecutorLost",
    "ExecutorStartFailed",
    "ForgedValue",
    "FunctionNotFound",
    "InvocationError",
    "InvocationTimeout",
    "LatticeDecodeError",
    "LatticeError",
    "LatticeTypeError",
    "LatticeValueError",
    "MemoryLimitExceeded",
    "MergeContention",
    "NoCapacity",
    "ObjectCorrupt",
    "ObjectExists",
    "ObjectNotFound",
    "Overloaded",
    "PayloadTooLarge",
    "QuotaExceeded",
    "ProtocolError",
    "RemoteError",
    "ReservedKey",
    "ResultLost",
    "SerializationError",
    "StoreClosed",
    "StoreFull",
    "StoreLockTimeout",
    "StoreUnavailable",
    "StratusError",
    "StreamInterrupted",
    "TenantNotFound",
    "UnsupportedFunction",
    "VolumeExists",
    "VolumeNotFound",
    "WrongClusterKey",
]


class ErrorInfo(msgspec.Struct, frozen=True, gc=False):
    """A failure sent back to a caller. ``kind`` names the stratus exception class."""

    kind: ErrorKind
    message: str
    remote_type: str = ""
    traceback: str = ""
    exception: bytes = b""  # the pickled original exception, when it could be pickled
    retry: bool = False  # the function's ``retry_on`` names it: another attempt may run
    step: str = ""  # the function of the DAG step that failed; "" outside a DAG
    step_index: int = -1  # its position in the DAG's node list; -1 outside a DAG


def _kinds() -> dict[str, type[exc.StratusError]]:
    kinds: dict[str, type[exc.StratusError]] = {}
    for name in get_args(ErrorKind):
        cls = getattr(exc, name)
        assert issubclass(cls, exc.StratusError), name
        kinds[name] = cls
    return kinds


KINDS: dict[str, type[exc.StratusError]] = _kinds()
"""Every wire kind and its exception class."""


# ---------------------------------------------------------------------------- encoding

MESSAGE_CHARS = 8_192
TRACEBACK_CHARS = 65_536


def _cut(text: str, most: int) -> str:
    """``text`` if it has at most ``most`` characters, else its two ends."""
    if len(text) <= most:
        return text
    half = most // 2
    return f"{text[:half]}\n... {len(text) - 2 * half} characters left out ...\n{text[-half:]}"


def encode(error: exc.StratusError) -> ErrorInfo:
    """The ``ErrorInfo`` of an error stratus itself raised (not the user's function)."""
    return ErrorInfo(kind_of(type(error)), _message(error))


def encode_remote(
    error: BaseException,
    *,
    limit: int,
    retry_on: tuple[str, ...] = (),
    skip_frames: int = 0,
) -> ErrorInfo:
    """The ``ErrorInfo`` of an exception the user's code raised. ``skip_frames`` leaves
    the platform's own frames (those above the user's function) out of the traceback;
    ``retry_on`` names (``module.QualName``, see ``type_name``) the exception types
    after which the caller may try again; a subclass of one counts too."""
    tb = error.__traceback__
    for _ in range(skip_frames):
        if tb is None or tb.tb_next is None:
            break
        tb = tb.tb_next
    original, message = error, str(error)
    if isinstance(error, exc.RemoteError):  # a nested call's failure, passing through
        message = str(error.args[0]) if error.args else ""  # its traceback has the rest
        while isinstance(original, exc.RemoteError) and original.exception is not None:
            original = original.exception
    return ErrorInfo(
        "RemoteError",
        _cut(message, MESSAGE_CHARS),
        remote_type=type_name(type(error)),
        traceback=_cut(
            "".join(traceback.format_exception(type(error), error, tb)), TRACEBACK_CHARS
        ),
        exception=_pickled(original, limit),
        retry=bool(retry_on) and any(type_name(k) in retry_on for k in type(error).__mro__),
    )


def type_name(cls: type) -> str:
    """``module.QualName``: how ``retry_on`` and ``remote_type`` name an exception type."""
    return f"{cls.__module__}.{cls.__qualname__}"


def in_step(info: ErrorInfo, step: str, step_index: int) -> ErrorInfo:
    """``info`` marked as the failure of DAG step ``step_index`` (function ``step``)."""
    return msgspec.structs.replace(info, step=step, step_index=step_index)


def kind_of(cls: type[BaseException]) -> ErrorKind:
    """The wire kind of an exception class: its own name, or its nearest stratus base's."""
    for base in cls.__mro__:
        if base.__name__ in KINDS and KINDS[base.__name__] is base:
            return base.__name__  # type: ignore[return-value]
    return "StratusError"


def _message(error: exc.StratusError) -> str:
    # Classes built from a name carry the name; ``decode`` rebuilds their message.
    named = exc.FunctionNotFound | exc.VolumeNotFound | exc.VolumeExists | exc.TenantNotFound
    if isinstance(error, named | exc.ObjectNotFound | exc.ObjectExists):
        return error.name
    if isinstance(error, exc.ReservedKey):
        return error.key
    return str(error.args[0]) if error.args else ""


def _pickled(error: BaseException | None, limit: int) -> bytes:
    if error is None:
        return b""
    try:
        return serialization.dumps(error, limit=limit, what="exception")
    except exc.StratusError:
        return b""


# ---------------------------------------------------------------------------- decoding


def decode(info: ErrorInfo, invocation_id: str = "", function: str = "") -> exc.StratusError:
    """The exception an ``ErrorInfo`` stands for, tied to its invocation if any."""
    step: dict[str, Any] = {"step": info.step, "step_index": info.step_index} if info.step else {}
    if info.kind == "RemoteError":
        original = _unpickled(info.exception)
        return exc.new_remote_error(
            None if original is None else type(original),
            info.message,
            remote_type=info.remote_type,
            remote_traceback=info.traceback,
            exception=original,
            invocation_id=invocation_id,
            function=function,
            **step,
        )
    cls = KINDS.get(info.kind, exc.StratusError)
    if issubclass(cls, exc.InvocationError):
        message = (
            f"{info.message} (DAG step {info.step_index}: {info.step})" if step else info.message
        )
        return cls(message, invocation_id=invocation_id, function=function, **step)
    build = _BUILDERS.get(cls)
    if build is not None:
        return build(info.message)
    try:
        return cls(info.message)
    except TypeError:  # a constructor of other arguments: the message is what we have
        error = cls.__new__(cls)
        Exception.__init__(error, info.message)
        return error


_BUILDERS: dict[type[exc.StratusError], Callable[[str], exc.StratusError]] = {
    exc.FunctionNotFound: exc.FunctionNotFound,
    exc.VolumeNotFound: exc.VolumeNotFound,
    exc.VolumeExists: exc.VolumeExists,
    exc.ObjectNotFound: exc.ObjectNotFound,
    exc.ObjectExists: exc.ObjectExists,
    exc.ReservedKey: exc.ReservedKey,
    exc.TenantNotFound: exc.TenantNotFound,
}


def _unpickled(data: bytes) -> BaseException | None:
    if not data:
        return None
    try:
        original = serialization.loads(data, what="exception")
    except exc.SerializationError:
        return None  # its class is not importable here: a plain RemoteError then
    return original if isinstance(original, BaseException) else None
