"""What a test sees of the proxy: the sockets it carried, their messages and closes, and waits
on them, shared by the sync and the async API.

The proxy's thread writes these records; the test's thread (or event loop) reads and waits.
One `Hub` per proxy guards them with a condition variable: sync waits block on it, async waits
are woken through their own loop. A wait's check runs under the hub's lock, so that finding a
match and moving a cursor past it is one step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from mitm_wsroute.urlmatch import URLMatch, compile_url_match

if TYPE_CHECKING:
    from mitm_wsroute.route import WebSocketRoute

__all__ = [
    "EVENTS",
    "Direction",
    "Hub",
    "Message",
    "MessageMatch",
    "SocketRecord",
    "check_direction",
    "event_check",
    "message_matcher",
    "url_matcher",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Direction = Literal["sent", "received"]
#: What `wait_for_message` looks for: an exact payload, a pattern searched in text messages, or
#: a predicate on the payload.
MessageMatch = str | bytes | re.Pattern[str] | Callable[[str | bytes], bool]
EVENTS = ("framesent", "framereceived", "close")


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a socket as its client saw it."""

    payload: str | bytes
    #: ``"sent"``: from the client to the proxy; ``"received"``: from the proxy to the client.
    direction: Direction
    #: When the proxy saw it (``time.time()``).
    timestamp: float

    def __repr__(self) -> str:
        return f"<{self.direction} {_short(self.payload)}>"


def _short(payload: str | bytes, size: int = 60) -> str:
    text = repr(payload)
    return text if len(text) <= size else text[: size - 3] + "..."


def describe_messages(messages: list[Message], last: int = 5) -> str:
    if not messages:
        return "no messages"
    shown = ", ".join(f"{m.direction} {_short(m.payload)}" for m in messages[-last:])
    return f"last messages: {shown}" if len(messages) > last else f"messages: {shown}"


#: What the listeners' thread runs: callbacks for a socket's event, with their argument.
type _Event = tuple[SocketRecord, list[Callable[[Any], None]], Any]


class Hub:
    """The lock, the wake-ups and the waits of one proxy's records, and the thread that runs
    the test's event listeners (never the proxy's thread: a listener that blocks or waits must
    not stop the proxy)."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self._watchers: set[Callable[[], None]] = set()
        #: The proxy's thread, where a blocking wait would wait for itself.
        self.proxy_thread: int | None = None
        self._events: queue.SimpleQueue[_Event | None] = queue.SimpleQueue()
        self._event_thread: threading.Thread | None = None

    def emit(self, record: SocketRecord, callbacks: list[Callable[[Any], None]], arg: Any) -> None:
        """Call `callbacks` with `arg` on the listeners' thread, in the order of `emit` calls,
        unless `record` is detached by then."""
        if self._event_thread is None:
            self._event_thread = threading.Thread(
                target=self._run_listeners, name="wsroute test listeners", daemon=True
            )
            self._event_thread.start()
        self._events.put((record, callbacks, arg))

    def _run_listeners(self) -> None:
        while (item := self._events.get()) is not None:
            record, callbacks, arg = item
            for callback in callbacks:
                if record.detached:
                    break  # the test that listened is over
                try:
                    callback(arg)
                except Exception:
                    logger.exception("a WebSocket event listener of the test failed")

    def close(self) -> None:
        """End the listeners' thread once it has run what is queued."""
        if self._event_thread is not None:
            self._events.put(None)
            self._event_thread.join(5)
            self._event_thread = None

    def changed(self) -> None:
        """Wake every waiter. Call with `lock` held."""
        self.lock.notify_all()
        for wake in list(self._watchers):
            try:
                wake()
            except RuntimeError as e:  # its event loop is closed: an async test ended mid-wait
                self._watchers.discard(wake)
                logger.debug(f"a wait of the async test API is dropped: {e}")

    def wait(self, check: Callable[[], T | None], fail: Callable[[], str], timeout: float) -> T:
        """Block until `check()` (run under the lock) returns a value; `TimeoutError(fail())`."""
        if threading.get_ident() == self.proxy_thread:
            raise RuntimeError(
                "a blocking wait on the proxy's own thread (in a route handler?) would stop the "
                "proxy; use the async API (mitm_wsroute.testing.async_api) in an async handler"
            )
        found: list[T] = []

        def ready() -> bool:
            value = check()
            if value is None:
                return False
            found.append(value)
            return True

        with self.lock:
            if not self.lock.wait_for(ready, timeout):
                raise TimeoutError(fail())
        return found[0]

    async def async_wait(
        self, check: Callable[[], T | None], fail: Callable[[], str], timeout: float
    ) -> T:
        """`wait`, without blocking the caller's event loop."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        deadline = loop.time() + timeout
        with self.lock:
            self._watchers.add(wake)
        try:
            while True:
                event.clear()
                with self.lock:
                    value = check()
                if value is not None:
                    return value
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(fail())
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            with self.lock:
                self._watchers.discard(wake)


def message_matcher(match: MessageMatch | None) -> Callable[[str | bytes], bool]:
    """`match` as a predicate on payloads (see `MessageMatch`)."""
    if match is None:
        return lambda payload: True
    if isinstance(match, str | bytes):
        return lambda payload: payload == match
    if isinstance(match, re.Pattern):
        pattern = match
        return lambda payload: isinstance(payload, str) and pattern.search(payload) is not None
    if callable(match):
        return match
    raise TypeError(f"match must be a payload, an re.Pattern or a callable, not {match!r}")


def url_matcher(url: URLMatch | None, base_url: str | None) -> Callable[[str], bool]:
    """A glob, pattern or predicate (as for routes) as a predicate; None matches every URL."""
    if url is None or url == "":
        return lambda u: True
    return compile_url_match(url, base_url)


def check_direction(direction: str | None) -> None:
    if direction not in (None, "sent", "received"):
        raise ValueError(f"direction must be 'sent', 'received' or None, not {direction!r}")


@dataclass(eq=False)
class SocketRecord:
    """One WebSocket that reached the proxy, as its client saw it (written by the proxy thread).

    Messages are kept up to `max_messages` and `max_bytes` of payload; past that the oldest
    are forgotten (logged once), and positions stay absolute.
    """

    hub: Hub
    url: str
    request_headers: list[tuple[str, str]]
    routed: Literal["mock", "intercept"] | None
    route: WebSocketRoute | None
    max_messages: int
    max_bytes: int
    protocol: str | None = None
    #: Its place among every socket the proxy recorded (0 for the first).
    seq: int = 0
    messages: list[Message] = field(default_factory=list)
    #: How many messages were forgotten from the front of `messages`.
    forgotten: int = 0
    kept_bytes: int = 0
    close: tuple[int, str] | None = None
    #: Client messages a HAR replay had no recorded match for (it sent no reply).
    unmatched: list[str | bytes] = field(default_factory=list)
    #: `wait_for_message`'s cursor: the absolute position after the message it returned last.
    cursor: int = 0
    #: `wait_for_event`'s cursor: the absolute position after the Socket.IO event it returned.
    event_cursor: int = 0
    #: `wait_for_operation`'s cursor: the position after the GraphQL operation it returned last.
    operation_cursor: int = 0
    #: Callbacks per event, called on the proxy's thread.
    listeners: dict[str, list[Callable[[Any], None]]] = field(
        default_factory=lambda: {e: [] for e in EVENTS}
    )
    #: The API objects made for it, by class (one per API, so that a socket stays one object).
    views: dict[type, Any] = field(default_factory=dict)
    #: `detach` ran (the proxy was reset): the test no longer sees this socket.
    detached: bool = False

    # --- written by the proxy thread (the layer's observer, or the recorder's hooks) -----------

    def message(self, sent: bool, data: str | bytes) -> None:
        """The client sent (`sent`) or got a message."""
        message = Message(data, "sent" if sent else "received", time.time())
        with self.hub.lock:
            if self.close is not None:
                return
            self.messages.append(message)
            self.kept_bytes += len(data)
            if len(self.messages) > self.max_messages or self.kept_bytes > self.max_bytes:
                self._forget()
            self.hub.changed()
        self._emit("framesent" if sent else "framereceived", data)

    def closed(self, code: int, reason: str) -> None:
        """The client's socket ended: the close frame it sent or got, or 1006 for a drop."""
        with self.hub.lock:
            if self.close is not None:
                return
            self.close = (code, reason)
            self.hub.changed()
        self._emit("close", None)

    def opened(self, protocol: str | None) -> None:
        with self.hub.lock:
            self.protocol = protocol

    def _forget(self) -> None:
        if not self.forgotten:
            logger.warning(
                f"{self.url}: the test record keeps {self.max_messages} messages and "
                f"{self.max_bytes} bytes of a socket; forgetting the oldest (options "
                "wsroute_record_messages, wsroute_record_bytes)"
            )
        drop = 0
        while drop < len(self.messages) - 1 and (
            len(self.messages) - drop > self.max_messages or self.kept_bytes > self.max_bytes
        ):
            self.kept_bytes -= len(self.messages[drop].payload)
            drop += 1
        del self.messages[:drop]
        self.forgotten += drop

    def _emit(self, event: str, arg: Any) -> None:
        callbacks = self.listeners[event]
        if callbacks:
            self.hub.emit(self, list(callbacks), arg)

    def detach(self) -> None:
        """Let the test go of this socket: its listeners are removed, and those already on
        their way are not called."""
        with self.hub.lock:
            self.detached = True
            self.listeners = {e: [] for e in EVENTS}

    # --- read by the test (checks run under the hub's lock) -------------------------------------

    def snapshot(self) -> list[Message]:
        with self.hub.lock:
            return list(self.messages)

    def next_message(
        self, start: int, matches: Callable[[str | bytes], bool], direction: str | None
    ) -> tuple[int, Message] | None:
        """The first message at absolute position >= `start` that matches, with its position."""
        for i in range(max(start, self.forgotten), self.forgotten + len(self.messages)):
            message = self.messages[i - self.forgotten]
            if (direction is None or message.direction == direction) and matches(message.payload):
                return i, message
        return None

    def end(self) -> int:
        """The absolute position after the newest message."""
        return self.forgotten + len(self.messages)

    def describe(self) -> str:
        state = "open" if self.close is None else f"closed with {self.close[0]} {self.close[1]!r}"
        return f"{self.url} ({state}; {describe_messages(self.messages)})"

    def on(self, event: str, callback: Callable[[Any], None]) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; WebSocket events are {', '.join(EVENTS)}")
        with self.hub.lock:
            self.listeners[event].append(callback)

    def remove_listener(self, event: str, callback: Callable[[Any], None]) -> None:
        with self.hub.lock:
            if callback in self.listeners.get(event, []):
                self.listeners[event].remove(callback)


def event_check(
    record: SocketRecord, event: str, start: int, predicate: Callable[[Any], bool] | None
) -> Callable[[], tuple[Any] | None]:
    """A check for the first `event` at or after message position `start` (the close: once)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; WebSocket events are {', '.join(EVENTS)}")
    if event == "close":
        return lambda: (None,) if record.close is not None else None
    direction = "sent" if event == "framesent" else "received"
    matches = predicate or (lambda payload: True)

    def check() -> tuple[Any] | None:
        found = record.next_message(start, matches, direction)
        return None if found is None else (found[1].payload,)

    return check
