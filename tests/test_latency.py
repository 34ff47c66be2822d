"""The delay line of `set_latency()`: order, due times, wake-ups, the size bound."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mitm_wsroute.latency import DelayLine, Outbox


def test_items_wait_their_latency_and_one_wake_up_at_a_time() -> None:
    line: DelayLine[str] = DelayLine()
    assert not line.active
    line.latency = 0.3
    assert line.active
    assert line.push(10.0, "a", 1) == pytest.approx(0.3)  # wake me in 0.3 s
    assert line.push(10.1, "b", 1) is None  # the pending wake-up comes first
    assert line.pop_due(10.2) == ([], pytest.approx(0.1))  # early: nothing yet
    assert line.pop_due(10.3) == (["a"], pytest.approx(0.1))
    assert line.pop_due(10.4) == (["b"], None)
    assert line.timer is None and len(line) == 0


def test_lowering_the_latency_never_reorders() -> None:
    line: DelayLine[str] = DelayLine()
    line.latency = 1.0
    line.push(0.0, "slow", 1)
    line.latency = 0.0
    assert line.active  # something still waits: what comes now waits behind it
    assert line.push(0.1, "fast", 1) is None
    assert line.pop_due(1.0) == (["slow", "fast"], None)
    assert not line.active


def test_past_the_limit_is_an_overflow_and_nothing_is_added() -> None:
    line: DelayLine[str] = DelayLine(limit=10)
    line.latency = 1.0
    line.push(0.0, "a", 6)
    with pytest.raises(OverflowError, match="more than 10 bytes waiting"):
        line.push(0.0, "b", 5)
    assert line.size == 6 and len(line) == 1
    assert line.clear() == ["a"]
    assert (line.size, line.latency, line.active) == (0, 0.0, False)


def test_a_sooner_item_after_clear_asks_for_an_earlier_wake_up() -> None:
    line: DelayLine[str] = DelayLine()
    line.latency = 5.0
    line.push(0.0, "a", 1)
    line.clear()
    line.latency = 0.5
    assert line.push(1.0, "b", 1) == pytest.approx(0.5)  # the 5 s wake-up is stale now


@given(
    steps=st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 0.5), st.booleans()), min_size=1, max_size=30
    )
)
def test_order_kept_and_nothing_leaves_early(steps: list[tuple[float, float, bool]]) -> None:
    line: DelayLine[int] = DelayLine()
    now, out, pushed = 0.0, [], {}
    for i, (latency, dt, wake) in enumerate(steps):
        now += dt
        line.latency = latency
        line.push(now, i, 1)
        pushed[i] = now + latency
        if wake:
            due, _ = line.pop_due(now)
            assert all(pushed[d] <= now + 0.001 for d in due)
            out += due
    due, wait = line.pop_due(now + 10)
    assert wait is None
    assert out + due == list(range(len(steps)))


def test_outbox_closes_the_client_after_the_server_and_ends_last() -> None:
    box: Outbox[str] = Outbox()
    box.lines[0].latency = box.lines[1].latency = 1.0
    assert box.push(1, 0.0, "to server", 9) == 1.0
    assert not box.close_client("close client")  # held: something waits for the server
    assert not box.end() and not box.may_end
    assert box.due(1, 1.0) == (["to server"], None, "close client")
    assert box.push(0, 1.0, "close client", 0) == 1.0  # through the client's line in turn
    assert not box.may_end
    assert box.due(0, 2.0) == (["close client"], None, None)
    assert box.may_end


def test_outbox_lets_the_client_close_and_end_at_once_when_nothing_waits() -> None:
    box: Outbox[str] = Outbox()
    assert box.close_client("close") and box.end() and not box.end_pending


def test_outbox_drops_what_waited_for_a_side_past_its_limit() -> None:
    """Past the limit the side fails (1009): what waited for it never goes, nor does its
    latency hold the close frame; the other side's line is untouched."""
    box: Outbox[str] = Outbox(limit=10)
    box.set_latency(0, 1.0)
    box.set_latency(1, 1.0)
    box.push(0, 0.0, "a", 6)
    box.push(1, 0.0, "to server", 6)
    with pytest.raises(OverflowError):
        box.push(0, 0.0, "b", 5)
    assert not box.waits(0)  # the close frame goes at once
    assert box.due(0, 5.0) == ([], None, None)
    assert box.due(1, 5.0) == (["to server"], None, None)


def test_outbox_forgets_a_side_whose_connection_is_gone() -> None:
    box: Outbox[str] = Outbox()
    box.set_latency(1, 1.0)
    box.push(1, 0.0, "lost", 4)
    assert not box.close_client("close client")
    box.forget(1)
    assert not box.waits(1)
    assert box.due(1, 0.0) == ([], None, "close client")  # the stale wake-up releases it
