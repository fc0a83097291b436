"""Errors as HTTP: a status code and a JSON body naming the stratus error type.

Every error response is ``{"error": {"type": "FunctionNotFound", "message": "..."}}``
(plus ``remote_type`` and ``traceback`` when a function raised), so an HTTP caller can
branch on the same names a Python caller catches.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from stratus import _exceptions as exc
from stratus.lattice.base import LatticeError


class HTTPProblem(Exception):
    """An error the gateway itself answers with (bad JSON, a failed precondition...)."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_


# Most specific first: the first class an error is an instance of gives its status.
_STATUS: list[tuple[type[BaseException], int]] = [
    (exc.FunctionNotFound, 404),
    (exc.VolumeNotFound, 404),
    (exc.VolumeExists, 409),
    (exc.ObjectNotFound, 404),
    (exc.ObjectExists, 409),
    (exc.PayloadTooLarge, 413),
    (exc.Overloaded, 429),
    (exc.NoCapacity, 503),
    (exc.ConflictError, 409),
    (exc.InvocationTimeout, 504),
    (exc.ExecutorLost, 503),
    (exc.MemoryLimitExceeded, 502),
    (exc.RemoteError, 502),  # the function raised: the upstream failed, not the gateway
    (exc.InvocationError, 502),
    (exc.ClusterClosed, 503),
    (exc.ConnectionFailed, 503),
    (exc.ConfigurationError, 400),
    (exc.SerializationError, 400),
    (LatticeError, 400),
    (exc.StratusError, 500),
]


def status_of(error: BaseException) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def body_of(error: BaseException) -> dict[str, Any]:
    message = str(error.args[0]) if isinstance(error, exc.RemoteError) else str(error)
    detail: dict[str, Any] = {"type": type(error).__name__, "message": message}
    if isinstance(error, HTTPProblem):
        detail["type"] = error.type
    if isinstance(error, exc.RemoteError):
        detail["remote_type"] = error.remote_type
        detail["traceback"] = error.remote_traceback
    if isinstance(error, exc.InvocationError):
        detail["invocation_id"] = error.invocation_id
    return {"error": detail}


def response_of(error: BaseException) -> JSONResponse:
    status = error.status if isinstance(error, HTTPProblem) else status_of(error)
    return JSONResponse(body_of(error), status_code=status)
