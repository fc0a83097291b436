"""Pickling of values with the cloudpickle fallback and the payload size limit."""

from __future__ import annotations

import pickle
import sys
import threading
from dataclasses import dataclass

import pytest

from stratus._exceptions import PayloadTooLarge, SerializationError
from stratus.protocol.serialization import DEFAULT_MAX_PAYLOAD, dumps, loads

LIMIT = DEFAULT_MAX_PAYLOAD


@dataclass
class Point:
    x: int
    y: int


def round_trip(obj: object) -> object:
    return loads(dumps(obj, limit=LIMIT))


@pytest.mark.parametrize(
    "value",
    [None, 42, 3.5, "text", b"\x00bytes", [1, [2, 3]], {"a": (1, 2)}, {1, 2}, Point(1, 2)],
    ids=repr,
)
def test_plain_values_round_trip(value: object) -> None:
    assert round_trip(value) == value


def test_plain_values_use_plain_pickle() -> None:
    assert dumps({"a": [1, 2]}, limit=LIMIT) == pickle.dumps({"a": [1, 2]}, protocol=5)


def test_lambda_round_trips() -> None:
    square = round_trip(lambda x: x * x)
    assert square(7) == 49  # type: ignore[operator]


def test_closure_round_trips_with_its_captured_values() -> None:
    offset = 10

    def add(x: int) -> int:
        return x + offset

    assert round_trip(add)(5) == 15  # type: ignore[operator]


def test_function_defined_in_main_round_trips_by_value() -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("def triple(x):\n    return 3 * x\n", namespace)
    assert round_trip(namespace["triple"])(4) == 12  # type: ignore[operator]


def test_importable_main_function_is_shipped_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # Plain pickle succeeds by reference to __main__.triple, which an executor cannot import.
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("def triple(x):\n    return 3 * x\n", namespace)
    monkeypatch.setattr(sys.modules["__main__"], "triple", namespace["triple"], raising=False)
    data = dumps(namespace["triple"], limit=LIMIT)
    monkeypatch.undo()
    assert not hasattr(sys.modules["__main__"], "triple")
    assert loads(data)(4) == 12


def test_unpicklable_value_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot pickle argument"):
        dumps(threading.Lock(), limit=LIMIT, what="argument")


def test_value_over_the_limit_raises_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        dumps(b"x" * 1000, limit=100, what="result")
    assert info.value.limit == 100
    assert info.value.size > 1000
    assert "result" in str(info.value)


def test_value_of_exactly_the_limit_is_accepted() -> None:
    size = len(pickle.dumps(b"x" * 1000, protocol=5))
    assert len(dumps(b"x" * 1000, limit=size)) == size


def test_garbage_raises_serialization_error_on_loads() -> None:
    with pytest.raises(SerializationError, match="cannot unpickle result"):
        loads(b"not a pickle", what="result")
