"""What ``app.function`` refuses before anything is sent (``client/registration.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from stratus import ConfigurationError, UnsupportedFunction
from stratus.client.registration import check_callable, retry_on_names


def plain(ctx: Any, x: int) -> int:
    return x


def star(*args: Any) -> None:
    pass


def no_parameters() -> None:
    pass


def keyword_only(*, ctx: Any) -> None:
    pass


async def coroutine(ctx: Any) -> None:
    pass


async def async_generator(ctx: Any) -> Any:
    yield 1


def generator(ctx: Any) -> Any:
    yield 1


class Served:
    def __call__(self, ctx: Any, x: int) -> int:
        return x


class ServedWithoutCtx:
    def __call__(self) -> int:
        return 1


class ServedAsync:
    async def __call__(self, ctx: Any) -> int:
        return 1


@pytest.mark.parametrize(
    "target", [plain, star, Served, functools.partial(plain), len, lambda ctx: None], ids=repr
)
def test_callable_shapes_are_accepted(target: Callable[..., Any]) -> None:
    check_callable(target)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (no_parameters, "first positional parameter"),
        (keyword_only, "first positional parameter"),
        (ServedWithoutCtx, "first positional parameter"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_callables_the_executors_cannot_call_are_refused(
    target: Callable[..., Any], match: str
) -> None:
    with pytest.raises(UnsupportedFunction, match=match):
        check_callable(target)


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        (plain, "plain"),
        (Served, "plain"),
        (coroutine, "async"),
        (ServedAsync, "async"),
        (async_generator, "async_generator"),
        (generator, "generator"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_the_kind_of_a_callable_tells_executors_how_to_run_it(
    target: Callable[..., Any], kind: str
) -> None:
    assert check_callable(target) == kind


def test_async_callables_without_ctx_are_refused_too() -> None:
    async def no_ctx() -> None:
        pass

    with pytest.raises(UnsupportedFunction, match="first positional parameter"):
        check_callable(no_ctx)


def test_unsupported_function_is_a_configuration_and_type_error() -> None:
    assert issubclass(UnsupportedFunction, ConfigurationError)
    assert issubclass(UnsupportedFunction, TypeError)


def test_retry_on_takes_one_class_or_a_tuple_of_them() -> None:
    assert retry_on_names(OSError) == ("builtins.OSError",)
    assert retry_on_names((IOError, KeyError)) == ("builtins.OSError", "builtins.KeyError")
    with pytest.raises(ConfigurationError, match="retry_on"):
        retry_on_names((OSError, 3))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry_on"):
        retry_on_names(int)  # type: ignore[arg-type]
