"""stratus: a stateful serverless platform for Python.

>>> import stratus
>>> app = stratus.connect()          # an embedded cluster on this machine
>>> @app.function
... def square(ctx, x):
...     return x * x
>>> square.remote(4).result()
16
"""

from stratus._exceptions import (
    AccessDenied,
    ClusterClosed,
    ConfigurationError,
    ConflictError,
    ConnectionFailed,
    ExecutorLost,
    ExecutorStartFailed,
    ForgedValue,
    FunctionNotFound,
    InvocationError,
    InvocationTimeout,
    MemoryLimitExceeded,
    NoCapacity,
    ObjectCorrupt,
    ObjectExists,
    ObjectNotFound,
    Overloaded,
    PayloadTooLarge,
    ProtocolError,
    QuotaExceeded,
    RemoteError,
    ReservedKey,
    ResultLost,
    SerializationError,
    StoreFull,
    StoreUnavailable,
    StratusError,
    StreamInterrupted,
    TenantNotFound,
    UnsupportedFunction,
    VolumeExists,
    VolumeNotFound,
)
from stratus._version import __version__ as __version__
from stratus.client.app import App, connect
from stratus.client.future import Future
from stratus.client.handles import Dag, Function
from stratus.client.stream import Stream
from stratus.client.tenant import TenantApp
from stratus.client.usage import Prices, Usage, UsageRow
from stratus.config import AutoscalingConfig
from stratus.kv.ref import Ref
from stratus.server import Context

__all__ = [
    "AccessDenied",
    "App",
    "AutoscalingConfig",
    "ClusterClosed",
    "ConfigurationError",
    "ConflictError",
    "ConnectionFailed",
    "Context",
    "Dag",
    "ExecutorLost",
    "ExecutorStartFailed",
    "ForgedValue",
    "Function",
    "FunctionNotFound",
    "Future",
    "InvocationError",
    "InvocationTimeout",
    "MemoryLimitExceeded",
    "NoCapacity",
    "ObjectCorrupt",
    "ObjectExists",
    "ObjectNotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Prices",
    "ProtocolError",
    "QuotaExceeded",
    "Ref",
    "RemoteError",
    "ReservedKey",
    "ResultLost",
    "SerializationError",
    "StoreFull",
    "StoreUnavailable",
    "StratusError",
    "Stream",
    "StreamInterrupted",
    "TenantApp",
    "TenantNotFound",
    "UnsupportedFunction",
    "Usage",
    "UsageRow",
    "VolumeExists",
    "VolumeNotFound",
    "connect",
]
