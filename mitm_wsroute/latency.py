"""`DelayLine`: what is sent to one side of a routed socket, held back by a latency, in order.

Pure: this module imports neither mitmproxy nor asyncio. The adapter pushes what it would send
(with the time, from a monotonic clock) and asks for a wake-up when told; at the wake-up it
asked for last it pops what is due (earlier wake-ups it asked for are stale: ignore them).
"""

from __future__ import annotations

from collections import deque

__all__ = ["DelayLine"]

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
