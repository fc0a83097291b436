"""A program written for Cloudburst, run on stratus with only its imports changed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from stratus.compat.cloudburst import (
    MULTI,
    NORMAL,
    CloudburstConnection,
    CloudburstReference,
)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudburstConnection]:
    data_dir = tmp_path_factory.mktemp("cloudburst")
    connection = CloudburstConnection("127.0.0.1", "127.0.0.1", local=True, data_dir=data_dir)
    yield connection
    connection.close()


def test_register_call_and_objects(cloud: CloudburstConnection) -> None:
    square = cloud.register(lambda lib, x: x * x, "square")
    assert square is not None and square(4).get() == 16
    assert cloud.exec_func("square", [5]).get() == 25
    assert cloud.put_object("greeting", "hello")
    assert cloud.get_object("greeting") == "hello"

    def shout(lib, key):  # type: ignore[no-untyped-def]
        return lib.get(key).upper()

    cloud.register(shout, "shout")
    assert cloud.exec_func("shout", ["greeting"]).get() == "HELLO"
    cloud.register(lambda lib, text: text + "!", "exclaim")
    assert cloud.exec_func("exclaim", [CloudburstReference("greeting")]).get() == "hello!"
    assert {"square", "shout", "exclaim"} <= set(cloud.list())
    assert cloud.list("sq") == ["square"]


def test_class_is_built_once_with_the_library(cloud: CloudburstConnection) -> None:
    class Model:
        def __init__(self, lib, offset):  # type: ignore[no-untyped-def]
            self.offset = offset
            self.built = lib.getid()

        def run(self, lib, x):  # type: ignore[no-untyped-def]
            return x + self.offset, self.built

    model = cloud.register((Model, [100]), "model")
    assert model is not None
    results = [model(i).get() for i in range(6)]
    assert [r[0] for r in results] == [100 + i for i in range(6)]
    assert len({r[1] for r in results}) <= 2  # one build per warm executor


def test_dag_argument_rules(cloud: CloudburstConnection) -> None:
    cloud.register(lambda lib, a, b: (a + b, a * b), "both")  # a tuple result is spread
    cloud.register(lambda lib, scale, s, p: scale * (s + p), "combine")
    ok, error = cloud.register_dag("pipeline", ["both", "combine"], [("both", "combine")])
    assert ok, error
    # Each function's own arguments first, then upstream results.
    future = cloud.call_dag("pipeline", {"both": [2, 3], "combine": [10]})
    assert future.get() == 10 * (5 + 6)
    assert cloud.call_dag(
        "pipeline", {"both": [1, 1], "combine": [1]}, direct_response=True, consistency=MULTI
    ) == 1 * (2 + 1)
    cloud.call_dag(
        "pipeline", {"both": [1, 2], "combine": [1]}, consistency=NORMAL, output_key="out"
    )
    assert cloud.get_object("out") == 5
    assert cloud.delete_dag("pipeline") and not cloud.delete_dag("pipeline")
    assert cloud.register_dag("bad", ["both", "nope"], [])[0] is False


def test_send_and_recv_between_invocations(cloud: CloudburstConnection) -> None:
    def listener(lib):  # type: ignore[no-untyped-def]
        import time

        for _ in range(1000):
            got = lib.recv()
            if got:
                return got[0][1]
            time.sleep(0.01)
        return None

    cloud.register(listener, "listener")
    cloud.register(lambda lib, dest: lib.send(dest, b"hello there"), "talker")
    heard = cloud.exec_func("listener", [])
    cloud.exec_func("talker", [heard.invocation_id]).get(timeout=30)
    assert heard.get(timeout=30) == b"hello there"


def test_invocations_meet_through_the_store(cloud: CloudburstConnection) -> None:
    """Cloudburst's rendezvous: the receiver puts its id, the sender polls for it and
    answers under a key named by that id, which the receiver polls. Puts are visible at
    once, so neither waits for the other to return (each gives up after 30 s, so a put
    that only shows at return fails the test instead of hanging it)."""

    def poll(lib, key):  # type: ignore[no-untyped-def]
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (value := lib.get(key)) is not None:
                return value
            time.sleep(0.005)
        return None

    def receiver(lib, name):  # type: ignore[no-untyped-def]
        lib.put(f"rendezvous/{name}", lib.getid())
        return poll(lib, f"reply/{lib.getid()}")

    def sender(lib, name):  # type: ignore[no-untyped-def]
        dest = poll(lib, f"rendezvous/{name}")
        if dest is not None:
            lib.put(f"reply/{dest}", "found you")
        return dest

    cloud.register(receiver, "receiver")
    cloud.register(sender, "sender")
    name = uuid.uuid4().hex  # the store may outlive this test run
    heard = cloud.exec_func("receiver", [name])
    sent_to = cloud.exec_func("sender", [name]).get(timeout=60)
    assert sent_to == heard.invocation_id
    assert heard.get(timeout=60) == "found you"
