"""The state machine of one routed WebSocket: Playwright's forwarding and close rules.

Pure: this module imports neither mitmproxy nor asyncio. The adapter (`layer.py`) feeds it what
happened on the wire through the ``receive_*()`` methods; the route objects (`route.py`) record
what user code asked for through `send`, `close` and `connect_to_server`. Both only append
`Command` values, which the adapter drains with `commands_to_execute()` and carries out in order.
The one exception is the hot path: `receive_message` returns where to forward the message.

The rules are Playwright's (`client/network.ts`, class `WebSocketRoute`):

- a message goes to the `on_message` handler of the side it came from if one is set; otherwise
  it is forwarded to the other side when that side is open, else dropped;
- a close from a side (the peer's close frame, a dropped connection, or the route's own
  ``close()`` on that side) goes to that side's `on_close` handler if one is set; otherwise the
  other side is closed with the same code and reason.

Every side is in one `State` (what the route sees) and one `Wire` state (its TCP connection
and closing handshake). The page side is the client of the proxy; the server side is the
upstream, and stays `State.NONE` and `Wire.NONE` for a mock (a route that never called
`connect_to_server`).

The closing handshake (RFC 6455 §7.1): a side we send a close frame to keeps its TCP connection
until its peer's close frame arrives or `StartCloseTimer` runs out (then the close counts as
clean for the peer); a side that failed (§7.1.7) or whose peer left is closed at once. The
server's TCP connection closes before the client's, which goes last, and `End` follows it.

Beyond Playwright, the route handler may answer the client's upgrade itself (`Opening`:
`accept()` a mock now, or `reject()` it with an HTTP response), a route may `drop()` a side (a
close with 1006 and the same rule: its TCP connection closes without a close frame) and set a
side's latency (a `SetLatency` command: the adapter holds what is sent to that side, closes
included, and tells the connection only when they went out).

A `Watcher` (the live console) may be set: it sees every message before the rules do, may
hold a side's messages (and that side's close) back and hand them on later, in order
(`release`, `release_close`), and is told what routes send and how the socket closes.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .headers import Headers, HeadersLike, header_fields

__all__ = [
    "ABNORMAL_CLOSURE",
    "INTERNAL_ERROR",
    "NO_STATUS",
    "Accept",
    "CallHandler",
    "Close",
    "CloseHandler",
    "CloseSide",
    "CloseTcp",
    "Command",
    "DropSide",
    "End",
    "Error",
    "Message",
    "MessageHandler",
    "Opening",
    "Owner",
    "Reject",
    "RoutedConnection",
    "Send",
    "SetLatency",
    "Side",
    "StartCloseTimer",
    "State",
    "Watcher",
    "Wire",
    "check_close",
    "check_latency",
    "check_message",
    "reported_code",
]

logger = logging.getLogger(__name__)

Message = str | bytes
MessageHandler = Callable[[Message], Any]
CloseHandler = Callable[[int | None, str | None], Any]

#: RFC 6455 §7.4.1: "designated for use in applications expecting a status code to indicate that
#: the connection was closed abnormally". Never sent in a frame; mirrored as a dropped connection.
ABNORMAL_CLOSURE = 1006
#: RFC 6455 §7.4.1: a message too big to process.
MESSAGE_TOO_BIG = 1009
#: RFC 6455 §7.4.1: "an unexpected condition that prevented it from fulfilling the request".
INTERNAL_ERROR = 1011
#: RFC 6455 §7.1.5: the code reported for a close frame without one.
NO_STATUS = 1005


def reported_code(code: int | None) -> int:
    """A close code as a browser's ``CloseEvent`` reports it (and mitmproxy's flow records
    it): 1005 for a close frame without one."""
    return NO_STATUS if code is None else code


#: ``wsroute_max_buffer``: bytes a route may have waiting for one side before that side fails.
DEFAULT_MAX_BUFFER = 64 * 1024 * 1024


def _nothing_written(side: Side) -> int:
    return 0


class Error(Exception):
    """Playwright's `Error`: raised for API misuse, with Playwright's own texts."""


class Side(enum.IntEnum):
    """The two legs of a routed socket. (An `IntEnum`: its hash is int's, cheap per message.)"""

    #: The client of the proxy (Playwright's "page").
    PAGE = 0
    #: The upstream WebSocket server.
    SERVER = 1

    @property
    def other(self) -> Side:
        return SERVER if self is PAGE else PAGE

    def __str__(self) -> str:
        return self.name.lower()


PAGE = Side.PAGE
SERVER = Side.SERVER


class State(enum.IntEnum):
    """What one side of a routed socket is doing."""

    #: Server side of a mock: never connected, never will be.
    NONE = 0
    #: Page side: the route handler runs, no 101 sent yet. Server side: `connect_to_server` was
    #: called, the upstream has not answered yet. Sends queue up and go out when the side opens.
    CONNECTING = 1
    OPEN = 2
    #: Closed as far as the route is concerned: by its peer, by the route, or by a dropped
    #: connection. Nothing is sent or forwarded to it any more.
    CLOSED = 3


_DONE = (State.NONE, State.CLOSED)


class Wire(enum.IntEnum):
    """One side's TCP connection and its closing handshake (RFC 6455 §7.1)."""

    #: No TCP connection: a mock's server side, or an upstream that failed.
    NONE = 0
    #: Connected; no close frame went out to it.
    OPEN = 1
    #: Our close frame went out; waiting for the peer's, with a close timer running.
    CLOSING = 2
    #: The handshake is over (the peer answered or closed first, the side failed, its peer
    #: left, or the timer ran out): its TCP connection closes when it is that side's turn.
    DONE = 3
    #: TCP connection closed.
    CLOSED = 4


_GONE = (Wire.NONE, Wire.CLOSED)


class Opening(enum.IntEnum):
    """How the route answers the client's opening handshake (its HTTP upgrade request)."""

    #: The route handler runs: `reject()`, `accept()` and `connect_to_server()` may still decide.
    HANDLER = 0
    #: `accept()` was called: the client gets a mock's 101 now, whatever the handler does next.
    ACCEPTED = 1
    #: `reject()` was called: the client gets that HTTP response; the socket never opens.
    REJECTED = 2
    #: The handler returned (or raised) without either: a mock's 101, or the upstream's answer.
    RETURNED = 3


#: `accept()`'s default protocol: the first one the client asked for (as Playwright's mock).
FIRST_PROTOCOL: Any = ...


@dataclass(frozen=True, slots=True)
class Accept:
    """A mock's 101, as `accept()` asked for it."""

    #: The subprotocol to answer with (one the client asked for), or None for none.
    protocol: str | None
    headers: tuple[tuple[str, str], ...] = ()
    #: Accept permessage-deflate (RFC 7692) when the client offers it.
    compression: bool = True


@dataclass(frozen=True, slots=True)
class Reject:
    """The HTTP response `reject()` answers the upgrade with."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Close:
    """A close as handlers see it: ``(None, None)`` for an empty close payload."""

    code: int | None = None
    reason: str | None = None


# --- commands: what the adapter must do, in order ------------------------------------------------
# Values, never changed once recorded; not frozen, because frozen dataclasses are slower to make
# and some are made per message.


@dataclass(slots=True)
class Send:
    """Send a new message (text for `str`, binary for `bytes`) to a side."""

    to: Side
    message: Message


@dataclass(slots=True)
class CloseSide:
    """Send one side our close frame (the close handshake starts or ends)."""

    side: Side
    close: Close


@dataclass(frozen=True, slots=True)
class DropSide:
    """End one side without a close frame: its peer sees an abnormal closure (1006). Its TCP
    connection closes at once (`CloseTcp`)."""

    side: Side


@dataclass(slots=True)
class CallHandler:
    """Run a user handler (it may return an awaitable, which the adapter schedules)."""

    handler: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class StartCloseTimer:
    """Start the close timer of a side that was sent a close frame: when it runs out, tell
    `RoutedConnection.receive_close_timeout`. One per closing handshake."""

    side: Side


@dataclass(frozen=True, slots=True)
class CloseTcp:
    """Close a side's TCP connection; with `abort`, at once, dropping what was not written yet
    (its peer stopped reading: `RoutedConnection.receive_overflow`)."""

    side: Side
    abort: bool = False


@dataclass(frozen=True, slots=True)
class End:
    """Both sides' TCP connections are closed: the socket is over (`RoutedConnection.first_close`
    says how it ended). The last command."""


@dataclass(slots=True)
class SetLatency:
    """From now on, hold everything sent to a side for `seconds` (0: no longer), keeping order."""

    to: Side
    seconds: float


Command = Send | CloseSide | DropSide | CallHandler | StartCloseTimer | CloseTcp | End | SetLatency


def check_close(code: int | None, reason: str | None) -> Close:
    """Validate a close requested by a route.

    Raises:
        ValueError: the code may not be sent on the wire (RFC 6455 §7.4: 1000-1003, 1007-1014
            and 3000-4999 may), the reason is longer than 123 UTF-8 bytes (§5.5: a control
            frame's payload is at most 125 bytes), or a reason comes without a code.
    """
    if code is None:
        if reason:
            raise ValueError(f"close reason {reason!r} needs a code, e.g. close(code=1000, ...)")
        return Close()
    if isinstance(code, bool) or not isinstance(code, int):
        raise ValueError(f"close code must be an int, not {type(code).__name__}")
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(
            f"close code {code} cannot be sent; use 1000-1003, 1007-1014 or 3000-4999 "
            "(1005, 1006 and 1015 are reserved for reporting, RFC 6455 section 7.4.1)"
        )
    reason = reason or ""
    if not reason.isascii():
        _check_utf8(reason, "close()")
    if len(reason.encode()) > 123:
        raise ValueError(f"close reason is {len(reason.encode())} UTF-8 bytes; at most 123 fit")
    return Close(code, reason)


def check_latency(seconds: object) -> float:
    """`seconds` as a latency, checked.

    Raises:
        ValueError: not a number, negative, or not finite.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"set_latency() takes seconds as a number, not {seconds!r}")
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError(
            f"set_latency({seconds}): the latency must be 0 or more seconds "
            "(0 removes it; to stop traffic, drop() or close() the side)"
        )
    return float(seconds)


def check_message(message: object) -> Message:
    """`message` as it is sent: `str` (a text frame) as is, any bytes-like object (`bytes`,
    `bytearray`, `memoryview`: a binary frame) copied into `bytes` now, so that changing the
    buffer after the call changes nothing.

    Raises:
        TypeError: `message` is neither text nor bytes-like.
        ValueError: the text cannot be encoded in UTF-8 (a lone surrogate, e.g. ``"\\ud800"``).
    """
    if type(message) is str:
        if not message.isascii():  # per message: most are ASCII, which always encodes
            _check_utf8(message, "send()")
        return message
    if type(message) is bytes:
        return message
    if isinstance(message, str):  # a subclass of str
        _check_utf8(message, "send()")
        return str(message)
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    raise TypeError(
        f"send() takes str or a bytes-like object (bytes, bytearray, memoryview), "
        f"not {type(message).__name__}"
    )


def _check_utf8(text: str, call: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{call}: the text cannot be sent as UTF-8 (RFC 6455 section 5.6): "
            f"{text[e.start : e.end]!r} at index {e.start} is a lone surrogate; "
            "send bytes, or text without lone surrogates"
        ) from None


@dataclass(frozen=True, slots=True)
class Owner:
    """The one thread that reads and writes a connection, and how to hand it a call.

    Set by the adapter: `thread` is the owner's ``threading.get_ident()``; ``call_soon(fn,
    *args)`` runs ``fn(*args)`` on that thread later, in call order, from any thread, and raises
    `RuntimeError` when it cannot (the owner's loop is closed).
    """

    thread: int
    call_soon: Callable[..., object]


class Watcher(Protocol):
    """Watches one socket's messages and closes, and may hold a side's messages back (the live
    console, `console.py`). Set as `RoutedConnection.watcher`; None (the default) costs one test
    per message."""

    def receive(self, side: Side, message: Message) -> Side | None:
        """A message from a side, instead of the rules: decides with `RoutedConnection.deliver`
        now, or holds it and hands it on later with `RoutedConnection.release`."""

    def hold_close(self, side: Side, close: Close) -> bool:
        """A side's peer closed: True to hold that close behind the messages of that side held
        back (handed on later with `RoutedConnection.release_close`)."""

    def sent(self, to: Side, message: Message) -> None:
        """A route sent a message to a side."""

    def closed(self, side: Side, close: Close) -> None:
        """A side closed (as the route sees it)."""

    def ended(self) -> None:
        """The socket is over (`End`)."""


@dataclass(slots=True)
class _Handlers:
    message: MessageHandler | None = None
    close: CloseHandler | None = None


@dataclass(eq=False)
class RoutedConnection:
    """One routed WebSocket, both sides.

    Args:
        url: the normalised ws(s) URL the route matched.
        protocols: the subprotocols the client asked for, in order.
    """

    url: str
    protocols: list[str]
    #: The client's upgrade request headers.
    request_headers: Headers = field(default_factory=Headers)
    opening: Opening = Opening.HANDLER
    #: What `accept()` or `reject()` asked for, once called.
    answer: Accept | Reject | None = None
    states: dict[Side, State] = field(
        default_factory=lambda: {PAGE: State.CONNECTING, SERVER: State.NONE}
    )
    handlers: dict[Side, _Handlers] = field(
        default_factory=lambda: {PAGE: _Handlers(), SERVER: _Handlers()}
    )
    #: The client's TCP connection exists from the start; the upstream's once it answered.
    wires: dict[Side, Wire] = field(default_factory=lambda: {PAGE: Wire.OPEN, SERVER: Wire.NONE})
    #: `End` was recorded.
    ended: bool = False
    #: The first close on this socket and whether the client sent it (else the server or the
    #: route did), as mitmproxy's `websocket_end` reports it.
    first_close: tuple[bool, Close] | None = None
    #: Called whenever a command is recorded, so that an idle adapter can wake up to drain it.
    wakeup: Callable[[], None] | None = None
    #: The thread that owns this connection (None: whichever thread calls). Route calls from
    #: other threads are handed to it (see `route.py`); nothing else touches the state there.
    owner: Owner | None = None
    #: The route that took the socket, for the log (``script.py:handler``).
    route: str = ""
    #: The live console's view of this socket, when it watches (`Watcher`).
    watcher: Watcher | None = None
    #: Bytes that may wait to be sent to one side (`buffered_amount`) before the side fails
    #: (`receive_overflow`); 0 for no limit.
    max_buffer: int = DEFAULT_MAX_BUFFER
    #: Bytes the adapter holds for a side, not yet written to the network (set by the adapter).
    written: Callable[[Side], int] = _nothing_written
    #: ``await drain(side)``: set by the adapter; None: nothing to wait for.
    drainer: Callable[[Side], Any] | None = None
    _commands: list[Command] = field(default_factory=list)
    _warned: set[Side] = field(default_factory=set)
    #: Bytes of `Send` commands recorded and not drained yet, by side.
    _pending: list[int] = field(default_factory=lambda: [0, 0])
    #: Sides that failed because their peer stopped reading (`receive_overflow`): their TCP
    #: connection is aborted, and nothing more is written to them.
    aborted: set[Side] = field(default_factory=set)

    # --- what user code asks for (through route.py) -----------------------------------------------

    def connect_to_server(self) -> None:
        if self.states[SERVER] is not State.NONE:
            raise Error("Already connected to the server")
        if self.opening in (Opening.ACCEPTED, Opening.REJECTED):
            what = (
                "accept() made this socket a mock"
                if self.opening is Opening.ACCEPTED
                else "reject() already answered the client"
            )
            raise Error(f"connect_to_server() cannot follow: {what}")
        if self.states[PAGE] is not State.CONNECTING:
            # proxy: the 101 of a mock is already sent; there is no upstream handshake to add.
            raise Error(
                "connect_to_server must be called before the route handler returns "
                f"(the page side is {self.states[PAGE].name.lower()})"
            )
        self.states[SERVER] = State.CONNECTING

    def reject(self, status: int, headers: HeadersLike | None, body: bytes | str) -> None:
        """Answer the upgrade with an HTTP response; the socket never opens, no upstream."""
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(
                f"reject() status must be an HTTP status from 200 to 599, not {status!r} "
                "(to open the socket, return from the handler or call accept())"
            )
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):
            raise ValueError(f"reject() body must be bytes or str, not {type(body).__name__}")
        answer = Reject(status, header_fields(headers), body)
        self._check_opening(
            "reject()",
            "the server answers the upgrade; call reject() instead of connect_to_server(), or "
            "close() the client later",
        )
        self.states[PAGE] = State.CLOSED
        self._commands.clear()  # sends made before: the socket never opens
        self._answer(Opening.REJECTED, answer)

    def accept(self, protocol: str | None, headers: HeadersLike | None, compression: bool) -> None:
        """Answer the upgrade of a mock with a 101 now (the handler may go on)."""
        if protocol is FIRST_PROTOCOL:
            protocol = self.protocols[0] if self.protocols else None
        elif protocol is not None and protocol not in self.protocols:
            raise ValueError(
                f"accept(protocol={protocol!r}): the client did not ask for it; pass one of "
                f"{self.protocols}, or None to answer without a subprotocol"
            )
        answer = Accept(protocol, header_fields(headers), bool(compression))
        self._check_opening(
            "accept()",
            "accept() is for mocks; the client gets the server's 101, with the server's "
            "subprotocol and extensions",
        )
        self._answer(Opening.ACCEPTED, answer)

    def _answer(self, opening: Opening, answer: Accept | Reject) -> None:
        self.opening, self.answer = opening, answer
        self._notify()

    def _check_opening(self, call: str, if_connected: str) -> None:
        """Raise unless the route handler runs and has neither answered nor connected."""
        if self.opening is Opening.HANDLER:
            if self.states[SERVER] is not State.NONE:
                raise Error(f"{call} cannot follow connect_to_server(): {if_connected}")
            return
        if self.opening is Opening.RETURNED:
            raise Error(
                f"{call} must be called in the route handler, before it returns; the client "
                "has its answer by now: close() or drop() it instead"
            )
        done = "accept()" if self.opening is Opening.ACCEPTED else "reject()"
        raise Error(f"{call} cannot follow {done}: the client has its answer already")

    def handler_returned(self) -> None:
        """The route handler returned or raised: what it did not decide is decided now."""
        if self.opening is Opening.HANDLER:
            self.opening = Opening.RETURNED

    def drop(self, side: Side) -> None:
        """End a side's TCP connection without a close frame, then act as if it had dropped."""
        if self.states[side] in _DONE:
            logger.debug(f"{self.url}: drop() of the {side} ignored, already closed")
            return
        close = Close(ABNORMAL_CLOSURE, "")
        self._close_side(side, close)
        self._closed(side, close, by_peer=False)
        if side is PAGE:
            # The client's TCP connection ends now, also when a page `on_close` keeps the
            # upstream open. proxy: mitmproxy tears the upstream down with its client, so the
            # server is told first, as when the client's connection is lost.
            self._server_going_away(wait=False)
        self._advance()

    def set_latency(self, side: Side, seconds: float) -> None:
        """Hold everything sent to a side for `seconds` from now on; 0 for no delay."""
        seconds = check_latency(seconds)
        if self.states[side] in _DONE:
            logger.debug(f"{self.url}: set_latency() of the {side} ignored, it is closed")
            return
        self._emit(SetLatency(side, seconds))

    def send(self, to: Side, message: Message) -> None:
        message = check_message(message)
        state = self.states[to]
        if state in (State.OPEN, State.CONNECTING):
            self._emit(Send(to, message))
            if self.watcher is not None:
                self.watcher.sent(to, message)
            pending = self._pending[to] = self._pending[to] + len(message)
            if pending > self.max_buffer > 0:
                self.receive_overflow(to, pending + self.written(to))
        else:
            # proxy: Playwright drops these silently; users asked for feedback (#34280, #36304).
            # Once per side at warning level: a push loop that outlives its socket must not
            # flood the log.
            what = "never connected" if state is State.NONE else "closed"
            level = logging.DEBUG if to in self._warned else logging.WARNING
            self._warned.add(to)
            logger.log(level, f"{self.url}: send() to the {to} ignored, that side is {what}")

    def buffered_amount(self, side: Side) -> int:
        """Bytes sent to a side (by a route, or forwarded) not yet written to the network:
        characters for text the route sent that the adapter has not taken yet."""
        return self._pending[side] + self.written(side)

    def drain(self, side: Side) -> Any:
        """An awaitable that is done once what waits for a side is below the low-water mark
        (the adapter's `drainer`); done at once without an adapter."""
        return None if self.drainer is None else self.drainer(side)

    def close(self, side: Side, code: int | None = None, reason: str | None = None) -> None:
        """Close one side, then act as if that side had closed (its `on_close`, or the mirror)."""
        close = check_close(code, reason)
        if self.states[side] in (State.NONE, State.CLOSED):
            logger.debug(f"{self.url}: close() of the {side} ignored, already closed")
            return
        self._close_side(side, close)
        self._closed(side, close, by_peer=False)
        self._advance()

    # --- what happened on the wire (through layer.py and addon.py) -----------------------------

    def receive_open(self) -> None:
        """The client got its 101 (and, when connected, the upstream gave its own)."""
        if self.states[PAGE] is State.CONNECTING:
            self.states[PAGE] = State.OPEN
        if self.states[SERVER] is State.CONNECTING:
            self.states[SERVER] = State.OPEN
            self.wires[SERVER] = Wire.OPEN
        self._advance()

    def receive_handler_error(self, error: BaseException) -> None:
        """The route handler raised: accept the client and close it with 1011 (internal error)
        and a reason naming the exception type; never connect upstream."""
        self.handler_returned()
        if self.states[SERVER] is State.CONNECTING:
            self.states[SERVER] = State.NONE
        reason = f"route handler raised {type(error).__name__}".encode()[:123].decode(
            errors="ignore"
        )
        if self.states[PAGE] is State.OPEN:  # after accept(), the handler went on and raised
            self.close(PAGE, 1011, reason)
            return
        if self.states[PAGE] is not State.CONNECTING:
            return  # the handler closed the page itself before it raised
        self.states[PAGE] = State.CLOSED
        close = Close(1011, reason)
        self.first_close = self.first_close or (False, close)
        self._close_side(PAGE, close)

    def receive_upstream_failed(self) -> bool:
        """The upstream handshake failed. Returns whether the route takes over the client.

        With a server-side `on_close` the handler gets ``(1006, "")`` and the client is accepted
        and served by the route; without one, the client's handshake fails as it would without
        the proxy.
        """
        if self.states[SERVER] is not State.CONNECTING:
            raise Error(
                f"no upstream handshake to fail (server side is {self.states[SERVER].name})"
            )
        self.states[SERVER] = State.CLOSED
        on_close = self.handlers[SERVER].close
        if on_close is None:
            self.states[PAGE] = State.CLOSED
            return False
        self._emit(CallHandler(on_close, (ABNORMAL_CLOSURE, "")))
        return True

    def receive_message(self, side: Side, message: Message) -> Side | None:
        """A complete message arrived from a side's peer. Returns the side to forward it to,
        unchanged (and with its framing), or None when a handler gets it or it is dropped.

        Per message, so a return value rather than a recorded command.
        """
        if self.states[side] is not State.OPEN:
            return None
        if self.watcher is not None:
            return self.watcher.receive(side, message)
        on_message = self.handlers[side].message
        if on_message is not None:
            self._emit(CallHandler(on_message, (message,)))
            return None
        if self.states[side.other] is State.OPEN:
            return side.other
        return None  # a mock, or the other side is gone; Playwright drops it silently.

    def deliver(self, side: Side, message: Message) -> Side | None:
        """`receive_message`'s rules without the watcher: for the watcher itself."""
        on_message = self.handlers[side].message
        if on_message is not None:
            self._emit(CallHandler(on_message, (message,)))
            return None
        if self.states[side.other] is State.OPEN:
            return side.other
        return None

    def release(self, side: Side, message: Message) -> Side | None:
        """A message from a side that the watcher held goes on now, by the same rules, as if it
        had just arrived; one to forward is sent as a `Send`. Returns where it went, as
        `receive_message`; None also when that side closed meanwhile (it is dropped)."""
        if self.states[side] is not State.OPEN:
            return None
        to = self.deliver(side, message)
        if to is not None:
            self._emit(Send(to, message))
            pending = self._pending[to] = self._pending[to] + len(message)
            if pending > self.max_buffer > 0:
                self.receive_overflow(to, pending + self.written(to))
        return to

    def release_close(self, side: Side, close: Close) -> None:
        """A close from a side's peer that the watcher held (`Watcher.hold_close`) is handled
        now, as `receive_close` would have."""
        if self.states[side] is State.OPEN:
            self._closed(side, close, by_peer=True)
        self._advance()

    def receive_close(self, side: Side, code: int | None, reason: str | None) -> None:
        """A side's peer sent a close frame (``(None, None)`` if empty; the adapter answers it,
        which ends that side's closing handshake), or 1006: its connection dropped."""
        if self.wires[side] is Wire.CLOSING:
            logger.debug(f"{self.url}: the {side} answered our close frame")
        if self.wires[side] in (Wire.OPEN, Wire.CLOSING):
            self.wires[side] = Wire.DONE
        if self.states[side] is State.OPEN:
            close = Close(code, reason if code is not None else None)
            if self.watcher is None or not self.watcher.hold_close(side, close):
                self._closed(side, close, by_peer=True)
        self._advance()

    def receive_connection_lost(self, side: Side) -> None:
        """A side's peer ended its TCP connection, perhaps long after its close handshake.

        proxy: mitmproxy cannot keep an upstream connection once the client's connection is gone,
        so an upstream left open by a page `on_close` handler is closed with 1001 (going away).
        """
        if self.wires[side] in (Wire.OPEN, Wire.CLOSING):
            self.wires[side] = Wire.DONE  # no handshake to wait for; our end closes in turn
        if self.states[side] is State.OPEN:
            self._closed(side, Close(ABNORMAL_CLOSURE, ""), by_peer=True)
        if side is PAGE:
            self._server_going_away(wait=True)
        self._advance()

    def _server_going_away(self, wait: bool) -> None:
        """The client's connection ends while the server side is still open (a page `on_close`
        kept it): close the server with 1001 (going away). With `wait`, its closing handshake
        runs as usual; without, its TCP connection closes right after the close frame."""
        if self.states[SERVER] not in (State.OPEN, State.CONNECTING):
            return
        self.states[SERVER] = State.CLOSED
        self._close_side(SERVER, Close(1001, "client connection gone"), timer=wait)
        if not wait and self.wires[SERVER] is Wire.CLOSING:
            self.wires[SERVER] = Wire.DONE

    def receive_failure(self, side: Side, code: int, reason: str) -> None:
        """The proxy fails a side's WebSocket connection (RFC 6455 §7.1.7): its peer broke the
        protocol (the codec's 1002 or 1007) or sent a message over the size limit (1009).

        That side is sent a close frame with `code` and its TCP connection closes at once,
        without waiting for an answer. The route sees a protocol failure as an abnormal
        closure, ``(1006, "")``, mirrored as a dropped connection: what the other side would see
        without the proxy. A message too big is the proxy's own limit: the route sees that
        1009 close, mirrored as a close frame.
        """
        if self.wires[side] is Wire.OPEN:
            self._emit(CloseSide(side, Close(code, reason)))
        if self.wires[side] in (Wire.OPEN, Wire.CLOSING):
            self.wires[side] = Wire.DONE
        if self.states[side] is State.OPEN:
            close = Close(code, reason) if code == MESSAGE_TOO_BIG else Close(ABNORMAL_CLOSURE, "")
            self._closed(side, close, by_peer=True)
        self._advance()

    def receive_overflow(self, side: Side, size: int) -> None:
        """More than `max_buffer` bytes wait to be sent to a side: its peer does not read what
        a route sends it. The side fails: its TCP connection is aborted (a close frame would
        wait behind what is not read) and what waits for it is dropped; the route sees
        ``(1011, reason)`` and the close rule applies (mirrored as a 1011 close frame). Every
        other socket carries on."""
        if side in self.aborted or self.wires[side] in _GONE:
            return
        logger.error(
            f"{self.url}: route {self.route or '?'}: {size} bytes wait to be sent to the {side}, "
            f"over wsroute_max_buffer ({self.max_buffer}): the {side} does not read; failing "
            f"the socket with {INTERNAL_ERROR}. A route that sends in a loop should await "
            "ws.drain() (or watch ws.buffered_amount)"
        )
        self.aborted.add(side)
        self._commands = [c for c in self._commands if not (isinstance(c, Send) and c.to is side)]
        self._pending[side] = 0
        self._close_side(side, Close(ABNORMAL_CLOSURE, ""))  # no close frame: TCP aborted
        if self.states[side] in (State.OPEN, State.CONNECTING):
            self._closed(side, Close(INTERNAL_ERROR, "send buffer full"), by_peer=False)
        if side is PAGE:  # the client's connection goes now: so does the upstream's
            self._server_going_away(wait=False)
            if self.wires[SERVER] is Wire.CLOSING:
                self.wires[SERVER] = Wire.DONE
        self._advance()

    def receive_close_timeout(self, side: Side) -> None:
        """The close timer of a side ran out (`StartCloseTimer`): its peer never answered our
        close frame. Its TCP connection closes in turn; the peer sees an unclean close."""
        if self.wires[side] is Wire.CLOSING:
            logger.debug(f"{self.url}: the {side} did not answer our close frame in time")
            self.wires[side] = Wire.DONE
            self._advance()

    def receive_injected(self, to: Side) -> bool:
        """Another addon injects a message to a side (mitmproxy's ``inject.websocket``).
        Returns whether it goes out: only to a side that is open."""
        if self.states[to] is State.OPEN:
            return True
        logger.warning(f"{self.url}: cannot inject a WebSocket message: the {to} side is closed")
        return False

    def ping_goes_to(self, side: Side) -> Side | None:
        """Where a ping from a side's peer goes: the side to forward it to, or None: the proxy
        answers it itself, because nobody else is there (RFC 6455 §5.5.2). Pongs go the same
        way, and are not answered."""
        return side.other if self.states[side.other] is State.OPEN else None

    def _emit(self, command: Command) -> None:
        self._commands.append(command)
        if self.wakeup is not None:
            self.wakeup()

    def _notify(self) -> None:
        if self.wakeup is not None:
            self.wakeup()

    def commands_to_execute(self) -> list[Command]:
        """Drain the commands recorded so far, oldest first."""
        commands, self._commands = self._commands, []
        self._pending[0] = self._pending[1] = 0
        return commands

    @property
    def has_commands(self) -> bool:
        return bool(self._commands)

    @property
    def both_closed(self) -> bool:
        """Both sides are closed (or the server side never existed)."""
        return self.states[PAGE] is State.CLOSED and self.states[SERVER] in _DONE

    # --- the one close rule -----------------------------------------------------------------------

    def _closed(self, side: Side, close: Close, by_peer: bool) -> None:
        self.states[side] = State.CLOSED
        if self.watcher is not None:
            self.watcher.closed(side, close)
        if self.first_close is None:
            self.first_close = (by_peer and side is PAGE, close)
        on_close = self.handlers[side].close
        if on_close is not None:
            self._emit(CallHandler(on_close, (close.code, close.reason)))
        elif self.states[side.other] in (State.OPEN, State.CONNECTING):
            self.states[side.other] = State.CLOSED
            self._close_side(side.other, close)
            # Playwright reports a mirrored close to that side's own handler too, afterwards
            # (`_apiClosePage` fires `onClosePage`, and closing the server fires
            # `onCloseServer`): it learns that its side closed, and why.
            mirrored = self.handlers[side.other].close
            if mirrored is not None:
                self._emit(CallHandler(mirrored, (close.code, close.reason)))

    # --- the closing handshake and the TCP connections (RFC 6455 §7.1) ----------------------------

    def _close_side(self, side: Side, close: Close, timer: bool = True) -> None:
        """Send a side our close frame and start its close timer (unless not `timer`); for
        1006, no frame: its TCP connection closes at once (`_advance`)."""
        drop = close.code == ABNORMAL_CLOSURE
        self._emit(DropSide(side) if drop else CloseSide(side, close))
        wire = self.wires[side]
        if drop:
            if wire in (Wire.OPEN, Wire.CLOSING):
                self.wires[side] = Wire.DONE
        elif wire is Wire.OPEN:
            self.wires[side] = Wire.CLOSING
            if timer:
                self._emit(StartCloseTimer(side))

    def _advance(self) -> None:
        """Close the TCP connections the route is done with, once their handshake is over: the
        server's first, the client's last (mitmproxy tears down every server connection with
        its client's; closed the other way round, the server socket is left in CLOSE-WAIT).
        Then `End`."""
        if self.ended:
            return
        wires = self.wires
        if wires[SERVER] is Wire.DONE and self.states[SERVER] in _DONE:
            wires[SERVER] = Wire.CLOSED
            self._emit(CloseTcp(SERVER, SERVER in self.aborted))
        if not self.both_closed or wires[SERVER] not in _GONE:
            return
        if wires[PAGE] is Wire.DONE:
            wires[PAGE] = Wire.CLOSED
            self._emit(CloseTcp(PAGE, PAGE in self.aborted))
        if wires[PAGE] is Wire.CLOSED:
            self.ended = True
            self._emit(End())
            if self.watcher is not None:
                self.watcher.ended()
