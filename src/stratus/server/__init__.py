"""The server side: the coordinator, executors and what they are made of.

Its one public name is ``Context``, the first argument of every function, which
``stratus`` re-exports; every module inside is internal.
"""

from stratus.server.context import Context

__all__ = ["Context"]
