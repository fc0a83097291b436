"""``Redial``: the thread that finds a lost coordinator again, with a fake dial."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from stratus._exceptions import ConnectionFailed
from stratus.backoff import Backoff
from stratus.client.reconnect import Follow, Redial

FAST = Backoff(first=0.001, cap=0.001, deadline=None)


class Outcome:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.back: list[Any] = []
        self.gave_up: list[str] = []

    def on_back(self, sock: Any, reply: Any, rest: list[Any]) -> None:
        self.back.append(reply)
        self.done.set()

    def on_give_up(self, last_error: str) -> None:
        self.gave_up.append(last_error)
        self.done.set()


def refusing(times: int, timeouts: list[float]) -> Any:
    def dial(timeout: float) -> tuple[Any, Any, list[Any]]:
        timeouts.append(timeout)
        if len(timeouts) <= times:
            raise ConnectionFailed(f"refused, try {len(timeouts)}")
        return object(), "welcome", []

    return dial


def redial(dial: Any, window: float, outcome: Outcome) -> Redial:
    r = Redial(
        dial,
        window,
        on_back=outcome.on_back,
        on_give_up=outcome.on_give_up,
        name="t",
        backoff=FAST,
    )
    r.start()
    return r


def test_it_tries_again_until_answered_then_calls_back_once() -> None:
    outcome, timeouts = Outcome(), []
    r = redial(refusing(3, timeouts), 30.0, outcome)
    assert outcome.done.wait(10)
    assert outcome.back == ["welcome"] and outcome.gave_up == [] and r.tries == 4
    assert all(0 < t <= 5.0 for t in timeouts)  # each try bounded, by the window too


def test_it_gives_up_at_the_end_of_the_window_with_the_last_error() -> None:
    outcome, timeouts = Outcome(), []
    redial(refusing(10**9, timeouts), 0.2, outcome)
    assert outcome.done.wait(10)
    assert outcome.back == [] and outcome.gave_up == [f"refused, try {len(timeouts)}"]
    assert all(t <= 0.2 for t in timeouts)


def test_stopped_it_calls_nothing_back_and_closes_a_late_answer() -> None:
    outcome = Outcome()
    answered, release = threading.Event(), threading.Event()
    a, b = socket.socketpair()

    def dial(timeout: float) -> tuple[Any, Any, list[Any]]:
        answered.set()
        release.wait(10)
        return a, "welcome", []

    r = redial(dial, 30.0, outcome)
    assert answered.wait(10)
    r.stop()
    release.set()
    r._thread.join(10)
    assert not r._thread.is_alive() and not outcome.done.is_set()
    assert a.fileno() == -1  # closed
    b.close()


def test_follow_dials_the_address_it_had_then_the_one_the_store_names() -> None:
    tried: list[str] = []

    def handshake_at(address: str, timeout: float) -> str:
        tried.append(address)
        if address != "tcp://10.0.0.2:7070":
            raise ConnectionFailed(f"{address} refused")
        return "welcome"

    follow = Follow("tcp://10.0.0.1:7070", lambda: "tcp://10.0.0.2:7070")
    assert follow.dial(handshake_at, 1.0) == "welcome"
    assert tried == ["tcp://10.0.0.1:7070", "tcp://10.0.0.2:7070"]
    assert follow.address == "tcp://10.0.0.2:7070"  # from now on, the one that answered
    assert follow.dial(handshake_at, 1.0) == "welcome" and tried[-1] == "tcp://10.0.0.2:7070"

    lost = Follow("tcp://10.0.0.1:7070", lambda: "")  # the store names none: the old error
    with pytest.raises(ConnectionFailed, match=r"10\.0\.0\.1"):
        lost.dial(handshake_at, 1.0)
    assert lost.address == "tcp://10.0.0.1:7070"
