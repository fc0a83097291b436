"""The executor's asyncio loop, stepped by a real reactor (no executor around it)."""

from __future__ import annotations

import asyncio
import threading
import time

from stratus.server.eventloop import SteppedLoop
from stratus.transport.reactor import Reactor


def run_until(reactor: Reactor, done: threading.Event | asyncio.Future[object]) -> None:
    deadline = time.monotonic() + 10
    while not (done.is_set() if isinstance(done, threading.Event) else done.done()):
        assert time.monotonic() < deadline, "the reactor never finished the task"
        reactor.run_once(0.5)


def test_tasks_sleep_concurrently_woken_by_the_reactors_timers() -> None:
    reactor = Reactor()
    stepped = SteppedLoop(reactor)
    spans: list[tuple[float, float]] = []

    async def nap() -> None:
        started = time.monotonic()
        await asyncio.sleep(0.2)
        spans.append((started, time.monotonic()))

    async def all_naps() -> None:
        await asyncio.gather(*(nap() for _ in range(10)))

    run_until(reactor, stepped.spawn(all_naps()))
    assert len(spans) == 10
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # all ran at once
    stepped.close()
    reactor.close()


def test_a_wake_from_another_thread_steps_the_loop() -> None:
    """A nested call's Future completes in the reactor's thread, but any thread may
    call ``call_soon_threadsafe``: the loop's fd wakes the reactor's poll."""
    reactor = Reactor()
    stepped = SteppedLoop(reactor)
    value: asyncio.Future[int] = stepped.loop.create_future()

    async def wait() -> int:
        return await value

    task = stepped.spawn(wait())
    reactor.run_once(0)  # the task waits now
    threading.Timer(0.05, stepped.loop.call_soon_threadsafe, (value.set_result, 7)).start()
    run_until(reactor, task)
    assert task.result() == 7
    stepped.close()
    reactor.close()


def test_a_task_that_blocks_in_the_reactor_does_not_step_the_loop_again() -> None:
    """A sync wait inside a task re-enters the reactor: the loop is not re-entered (which
    asyncio refuses), and the other tasks go on once the blocking one yields."""
    reactor = Reactor()
    stepped = SteppedLoop(reactor)
    order: list[str] = []

    async def other() -> None:
        order.append("other ran")

    async def blocker() -> None:
        stepped.spawn(other())
        for _ in range(3):  # a sync wait: rounds of the reactor, inside this task
            reactor.run_once(0.01)
        order.append("blocker done")
        await asyncio.sleep(0)

    task = stepped.spawn(blocker())
    run_until(reactor, task)
    done = threading.Event()
    stepped.loop.call_soon(done.set)
    run_until(reactor, done)
    assert order == ["blocker done", "other ran"]
    stepped.close()
    reactor.close()
