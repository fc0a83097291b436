"""Checks made when a function is registered, before anything is sent to the cluster.

A function the executors could not call would otherwise be accepted and then fail on
every call: so its shape is checked here, with ``UnsupportedFunction`` naming the fix,
and its kind (plain, ``async def``, generator, async generator) is told to executors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from stratus._exceptions import ConfigurationError, UnsupportedFunction
from stratus.protocol.errors import type_name
from stratus.protocol.messages import FunctionKind

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def check_callable(target: Callable[..., Any]) -> FunctionKind:
    """Raise ``UnsupportedFunction`` unless executors can call ``target`` (a function,
    or a class whose ``__call__`` serves calls) as ``target(ctx, *args, **kwargs)``;
    return how they run it."""
    if isinstance(target, type):
        what, call = f"class {target.__qualname__}: __call__", target.__call__
        skip = 1  # self
    else:
        what, call, skip = f"function {getattr(target, '__qualname__', target)!r}", target, 0
    _check_signature(what, call, skip)
    return function_kind(call)


def function_kind(call: Callable[..., Any]) -> FunctionKind:
    """``async`` for an ``async def``, ``generator`` / ``async_generator`` for functions
    that yield, else ``plain``."""
    if inspect.isasyncgenfunction(call):
        return "async_generator"
    if inspect.iscoroutinefunction(call):
        return "async"
    if inspect.isgeneratorfunction(call):
        return "generator"
    return "plain"


def _check_signature(what: str, call: Callable[..., Any], skip: int) -> None:
    try:
        parameters = list(inspect.signature(call).parameters.values())[skip:]
    except (TypeError, ValueError):  # no signature to inspect (a builtin): let it be
        return
    first = parameters[0] if parameters else None
    if first is None or (first.kind not in _POSITIONAL and first.kind is not first.VAR_POSITIONAL):
        raise UnsupportedFunction(
            f"{what} must take the Context as its first positional parameter: "
            "def f(ctx, ...), then call f.remote(...) without it"
        )


def retry_on_names(
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[str, ...]:
    """The names that ``FunctionOptions.retry_on`` carries for exception types."""
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise ConfigurationError(f"retry_on takes exception classes, not {t!r}")
    return tuple(type_name(t) for t in types)
