"""The guard against strangers, driven directly with explicit times (no sockets)."""

from __future__ import annotations

import pytest

from stratus._exceptions import ConfigurationError
from stratus.transport import guard as gd

LIMITS = gd.ConnectionLimits(
    handshake_timeout=2.0, max_strangers=3, accept_backoff=0.5, log_interval=10.0
)
LISTENER = 100


def drops(instructions: list[gd.Instruction]) -> list[int]:
    return [i.conn for i in instructions if isinstance(i, gd.Drop)]


def logs(instructions: list[gd.Instruction]) -> list[str]:
    return [i.message for i in instructions if isinstance(i, gd.Log)]


def test_a_silent_stranger_is_dropped_at_its_deadline_not_before() -> None:
    guard = gd.Guard(LIMITS)
    assert guard.handle(gd.Accepted(7, LISTENER), now=10.0) == []
    assert guard.next_wakeup() == 12.0
    assert drops(guard.handle(gd.Tick(), now=11.99)) == []
    out = guard.handle(gd.Tick(), now=12.0)
    assert drops(out) == [7]
    assert logs(out) == ["dropped 1 connection(s) silent past the handshake deadline"]
    assert guard.next_wakeup() is None


def test_an_authenticated_connection_has_no_deadline() -> None:
    guard = gd.Guard(LIMITS)
    guard.handle(gd.Accepted(7, LISTENER), now=0.0)
    assert guard.handle(gd.Authenticated(7), now=0.1) == []
    assert guard.handle(gd.Tick(), now=100.0) == []


def test_a_closed_stranger_is_forgotten_so_its_fd_can_be_reused() -> None:
    guard = gd.Guard(LIMITS)
    guard.handle(gd.Accepted(7, LISTENER), now=0.0)
    guard.handle(gd.Closed(7), now=1.0)
    guard.handle(gd.Accepted(7, LISTENER), now=1.5)  # the same fd, a new connection
    assert drops(guard.handle(gd.Tick(), now=2.0)) == []
    assert drops(guard.handle(gd.Tick(), now=3.5)) == [7]


def test_beyond_the_cap_the_oldest_stranger_of_that_listener_is_dropped() -> None:
    guard = gd.Guard(LIMITS)
    for fd, t in ((1, 0.0), (2, 0.1), (3, 0.2)):
        assert guard.handle(gd.Accepted(fd, LISTENER), now=t) == []
    guard.handle(gd.Accepted(50, LISTENER + 1), now=0.25)  # another listener's own cap
    out = guard.handle(gd.Accepted(4, LISTENER), now=0.3)
    assert drops(out) == [1]
    assert logs(out) == ["dropped 1 unauthenticated connection(s): too many at once"]
    assert list(guard.strangers) == [2, 3, 50, 4]


def test_the_deadline_of_the_oldest_remaining_stranger_is_the_next_wakeup() -> None:
    guard = gd.Guard(LIMITS)
    guard.handle(gd.Accepted(1, LISTENER), now=0.0)
    guard.handle(gd.Accepted(2, LISTENER), now=1.0)
    guard.handle(gd.Authenticated(1), now=1.0)
    assert guard.next_wakeup() == 3.0


def test_emfile_pauses_the_listener_for_the_backoff_then_resumes_it() -> None:
    guard = gd.Guard(LIMITS)
    out = guard.handle(gd.AcceptFailed(LISTENER, "[Errno 24] EMFILE"), now=5.0)
    assert out[0] == gd.PauseAccepting(LISTENER)
    assert logs(out) == ["cannot accept connections: [Errno 24] EMFILE; pausing accept"]
    assert guard.next_wakeup() == 5.5
    assert guard.handle(gd.Tick(), now=5.4) == []
    assert guard.handle(gd.Tick(), now=5.5) == [gd.ResumeAccepting(LISTENER)]
    assert guard.next_wakeup() is None


def test_log_lines_are_rate_limited_per_kind_and_count_what_was_left_out() -> None:
    guard = gd.Guard(LIMITS)
    failed = gd.AcceptFailed(LISTENER, "EMFILE")
    lines = [line for t in range(100) for line in logs(guard.handle(failed, now=t * 0.05))]
    assert len(lines) == 1  # 100 failures in 5 s: one line
    assert logs(guard.handle(gd.Noted("stranger", "bad signature"), now=5.0)) == ["bad signature"]
    [line] = logs(guard.handle(failed, now=10.0))
    assert line.endswith("(99 more like this in the last 10 s)")


@pytest.mark.parametrize(
    "field",
    [
        {"handshake_timeout": 0.0},
        {"accept_backoff": -1.0},
        {"max_strangers": 0},
        {"first_frame": 10},
        {"max_buffered": 1000},
    ],
)
def test_nonsense_limits_are_a_configuration_error(field: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        gd.ConnectionLimits(**field)  # type: ignore[arg-type]
