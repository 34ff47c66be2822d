"""`DelayLine`: what is sent to one side of a routed socket, held back by a latency, in order.

Pure: this module imports neither mitmproxy nor asyncio. The adapter pushes what it would send
(with the time, from a monotonic clock) and asks for a wake-up when told; at the wake-up it
asked for last it pops what is due (earlier wake-ups it asked for are stale: ignore them).
"""

from __future__ import annotations

from collections import deque

__all__ = ["DelayLine", "Outbox"]

#: Items due within this many seconds go out together (a timer may fire a little early).
SLACK = 0.001


class DelayLine[T]:
    """Items in the order they were pushed, each due `latency` seconds after its push, and
    never before an earlier one (so that a lowered latency keeps the order).

    Args:
        limit: how many bytes may wait at once, 0 for no limit (`push` raises past it).
    """

    __slots__ = ("_items", "latency", "limit", "size", "timer")

    def __init__(self, limit: int = 0) -> None:
        self._items: deque[tuple[float, T, int]] = deque()
        self.latency = 0.0
        self.limit = limit
        #: Bytes waiting.
        self.size = 0
        #: When the pending wake-up is due (the latest the adapter asked for), if any.
        self.timer: float | None = None

    @property
    def active(self) -> bool:
        """Whether what is sent now must wait: a latency is set, or something still waits."""
        return self.latency > 0 or bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def push(self, now: float, item: T, size: int) -> float | None:
        """Hold `item` (`size` bytes). Returns in how many seconds to wake up, or None when a
        wake-up is already pending.

        Raises:
            OverflowError: more than `limit` bytes would wait; nothing was added.
        """
        if self.limit and self.size + size > self.limit:
            raise OverflowError(f"more than {self.limit} bytes waiting")
        due = now + self.latency
        if self._items and self._items[-1][0] > due:
            due = self._items[-1][0]  # never overtake what waits
        self._items.append((due, item, size))
        self.size += size
        if self.timer is not None and self.timer <= due:
            return None  # the pending wake-up comes first
        self.timer = due
        return max(0.0, due - now)

    def pop_due(self, now: float) -> tuple[list[T], float | None]:
        """At a wake-up: the items due by `now`, oldest first, and in how many seconds to wake
        up again (None when nothing waits)."""
        self.timer = None
        due: list[T] = []
        while self._items and self._items[0][0] <= now + SLACK:
            _, item, size = self._items.popleft()
            self.size -= size
            due.append(item)
        if not self._items:
            return due, None
        self.timer = self._items[0][0]
        return due, max(0.0, self.timer - now)

    def clear(self) -> list[T]:
        """Forget what waits and the latency; returns what waited."""
        items = [item for _, item, _ in self._items]
        self._items.clear()
        self.size = 0
        self.latency = 0.0
        return items


class Outbox[T]:
    """What waits to go out to the client (`PAGE`, index 0) and the server (index 1) of one
    routed socket once a route called `set_latency()`, and the order of its last steps: the
    client's TCP close waits until nothing waits for the server (mitmproxy tears the server's
    connection down with its client's: closed first, the server would lose what waits), and
    the socket ends once nothing waits at all.

    The adapter `push`es what it would send and asks for the wake-ups it is told; at a
    wake-up it sends what `due` returns, then, if `due` released the client's held TCP close,
    pushes that in turn, then ends the socket if `may_end`.
    """

    __slots__ = ("end_pending", "held_close", "lines")

    def __init__(self, limit: int = 0) -> None:
        #: By side: the client's line, then the server's.
        self.lines: tuple[DelayLine[T], DelayLine[T]] = (DelayLine(limit), DelayLine(limit))
        #: The client's TCP close, held while something waits for the server.
        self.held_close: T | None = None
        #: The socket ended while something waited.
        self.end_pending = False

    def set_latency(self, side: int, seconds: float) -> None:
        """Hold what is sent to `side` from now on for `seconds` (0: no longer)."""
        self.lines[side].latency = seconds

    def waits(self, side: int) -> bool:
        """Whether what is sent to `side` now must go through its line."""
        return self.lines[side].active

    def push(self, side: int, now: float, item: T, size: int) -> float | None:
        """`DelayLine.push` on `side`'s line, bounded like a message: past the limit, what
        waited for `side` is dropped (the side fails: nothing is sent to it after its close
        frame) and its latency with it, so the close frame the adapter sends next goes out at
        once, and `OverflowError` is raised."""
        line = self.lines[side]
        try:
            return line.push(now, item, size)
        except OverflowError:
            line.clear()
            raise

    def forget(self, side: int) -> None:
        """`side`'s connection is gone: nothing that waits for it will reach it."""
        self.lines[side].clear()

    def close_client(self, close: T) -> bool:
        """The client's TCP close: True if it may go now (through the client's line); else it
        is held until nothing waits for the server (`due` releases it)."""
        if self.lines[1]:
            self.held_close = close
            return False
        return True

    def end(self) -> bool:
        """The socket is done: True if it may end now; else once nothing waits (`may_end`)."""
        if any(self.lines) or self.held_close is not None:
            self.end_pending = True
            return False
        return True

    def due(self, side: int, now: float) -> tuple[list[T], float | None, T | None]:
        """At `side`'s wake-up: what is due, in how many seconds to wake up again (None when
        nothing waits), and the client's TCP close, if it was held and may go now."""
        items, wait = self.lines[side].pop_due(now)
        released = None
        if wait is None and side == 1 and self.held_close is not None:
            released, self.held_close = self.held_close, None
        return items, wait, released

    @property
    def may_end(self) -> bool:
        """The socket ended while something waited, and nothing waits any more."""
        return self.end_pending and not any(self.lines) and self.held_close is None
