"""The coordinator's lease as a state machine (server/lease.py), on a fake clock."""

from __future__ import annotations

import msgspec
import pytest

from stratus.protocol.lease import LeaseRecord
from stratus.server import lease as ls
from stratus.testing import FakeClock

DURATION = 8.0


def lease(address: str = "tcp://10.0.0.2:7070") -> ls.Lease:
    return ls.Lease(address=address, cluster_id="c2", duration=DURATION, holder="me")


def held_by_other(version: int = 7, **changes: object) -> ls.Observed:
    record = LeaseRecord("other", "tcp://10.0.0.1:7070", "c1", epoch=3, duration=DURATION)
    return ls.Observed(msgspec.structs.replace(record, **changes), version)


def claim(lease_: ls.Lease, clock: FakeClock, seen: ls.Observed) -> ls.Write:
    (write,) = lease_.handle(seen, clock())
    assert isinstance(write, ls.Write) and write.purpose == "claim"
    return write


def test_an_empty_store_is_claimed_at_once_as_epoch_one() -> None:
    clock, me = FakeClock(), lease()
    write = claim(me, clock, ls.Observed(None, 0))
    assert write.expected == 0 and write.record.epoch == 1
    assert write.record.address == "tcp://10.0.0.2:7070" and write.record.holder == "me"
    (serve,) = me.handle(ls.Written(True, 1, clock()), clock())
    assert serve == ls.Serve(1, "no coordinator held it")
    assert me.serving(clock())


def test_a_dead_holder_is_waited_out_then_taken_over_with_the_next_epoch() -> None:
    clock, me = FakeClock(), lease()
    (step,) = me.handle(held_by_other(), clock())
    assert isinstance(step, ls.Watch) and "tcp://10.0.0.1:7070" in step.reason
    while isinstance(step, ls.Watch):  # the version never changes: nobody renews
        assert clock() < DURATION
        clock.advance(step.at - clock())
        (step,) = me.handle(held_by_other(), clock())
    assert isinstance(step, ls.Write) and clock() == DURATION
    assert step.expected == 7 and step.record.epoch == 4
    assert me.handle(ls.Written(True, 8, clock()), clock())[0] == ls.Serve(
        4, "it was not renewed for 8.0 s"
    )


def test_a_live_holder_that_renews_refuses_the_contender() -> None:
    clock, me = FakeClock(), lease()
    me.handle(held_by_other(7), clock())
    clock.advance(2.0)
    (refuse,) = me.handle(held_by_other(8, renewals=1), clock())
    assert isinstance(refuse, ls.Refuse)
    assert refuse.address == "tcp://10.0.0.1:7070" and refuse.epoch == 3
    assert "renews it" in refuse.reason and not me.serving(clock())


@pytest.mark.parametrize(
    "seen", [held_by_other(released=True), ls.Observed(held_by_other().record, 7, holder_gone=True)]
)
def test_a_released_lease_or_a_holder_gone_from_this_host_is_claimed_at_once(
    seen: ls.Observed,
) -> None:
    write = claim(lease(), FakeClock(), seen)
    assert write.expected == 7 and write.record.epoch == 4


def test_of_two_contenders_the_one_that_loses_the_check_and_set_is_refused() -> None:
    clock, me = FakeClock(), lease()
    claim(me, clock, ls.Observed(None, 0))
    (refuse,) = me.handle(ls.Written(False, 0, clock()), clock())
    assert isinstance(refuse, ls.Refuse) and "took the lease first" in refuse.reason


def test_the_holder_renews_and_serves_only_until_its_deadline() -> None:
    clock, me = FakeClock(), lease()
    claim(me, clock, ls.Observed(None, 0))
    me.handle(ls.Written(True, 1, clock()), clock())
    assert me.handle(ls.Tick(), clock()) == []  # not due yet
    clock.advance(DURATION * ls.RENEW_FRACTION)
    (renew,) = me.handle(ls.Tick(), clock())
    assert isinstance(renew, ls.Write) and renew.purpose == "renew" and renew.expected == 1
    assert renew.record.renewals == 1 and renew.record.epoch == 1
    me.handle(ls.Written(True, 5, clock()), clock())  # the deadline moves on from its send
    assert me.deadline == clock() + DURATION * ls.SERVE_FRACTION
    # The store goes away: renewals fail, and past the deadline the holder stops serving,
    # a quarter of the lease before a contender that saw version 5 may take over.
    sent = clock()
    while me.phase == "held":
        clock.advance(0.5)
        for instruction in me.handle(ls.Tick(), clock()):
            if isinstance(instruction, ls.Write):
                me.handle(ls.StoreFailed("connection refused"), clock())
            else:
                assert isinstance(instruction, ls.Lose)
                assert "no renewal of the lease succeeded" in instruction.reason
    assert not me.serving(clock())
    assert clock() - sent <= DURATION * ls.SERVE_FRACTION + 0.5 < DURATION


def test_a_holder_whose_renewal_conflicts_lost_the_lease() -> None:
    clock, me = FakeClock(), lease()
    claim(me, clock, ls.Observed(None, 0))
    me.handle(ls.Written(True, 1, clock()), clock())
    clock.advance(DURATION)  # stopped (SIGSTOP) past its deadline, then resumed
    (lose,) = me.handle(ls.Tick(), clock())
    assert isinstance(lose, ls.Lose) and not me.serving(clock())

    other = lease()
    claim(other, clock, ls.Observed(None, 0))
    other.handle(ls.Written(True, 1, clock()), clock())
    clock.advance(DURATION * ls.RENEW_FRACTION)
    other.handle(ls.Tick(), clock())
    (lose,) = other.handle(ls.Written(False, 0, clock()), clock())
    assert isinstance(lose, ls.Lose) and "another coordinator took the lease" in lose.reason


def test_a_clean_stop_releases_the_lease_and_a_failed_claim_is_no_lease() -> None:
    clock, me = FakeClock(), lease()
    claim(me, clock, ls.Observed(None, 0))
    me.handle(ls.Written(True, 1, clock()), clock())
    (release,) = me.handle(ls.Release(), clock())
    assert isinstance(release, ls.Write) and release.record.released and release.expected == 1
    assert not me.serving(clock())

    other = lease()
    claim(other, clock, ls.Observed(None, 0))
    (lose,) = other.handle(ls.StoreFailed("timeout"), clock())
    assert isinstance(lose, ls.Lose) and "timeout" in lose.reason


def test_a_lease_lasts_a_positive_time() -> None:
    with pytest.raises(ValueError):
        ls.Lease(address="tcp://h:1", cluster_id="c", duration=0)
