"""`WebSocketRoute`: Playwright's public object, as a thin view over one `RoutedConnection`.

Pure: this module imports neither mitmproxy nor asyncio. Every method only records intent on
the connection; the adapter carries it out.

One thread owns a connection (the proxy's event loop). A method called on any other thread
checks its arguments there, then hands the call to the owner (`Owner.call_soon`) and returns
at once; calls handed over run in call order, so each side gets its messages in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from threading import get_ident
from typing import Any

from .connection import (
    FIRST_PROTOCOL,
    PAGE,
    SERVER,
    CloseHandler,
    Error,
    Message,
    MessageHandler,
    Owner,
    RoutedConnection,
    Side,
    check_close,
    check_latency,
    check_message,
)
from .headers import Headers, HeadersLike

__all__ = ["WebSocketRoute"]


class _Closed:
    """What `close()` returns: awaitable, already done, so ``await ws.close()`` and a bare
    ``ws.close()`` both work (handlers written for playwright-python's async or sync API)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


class WebSocketRoute:
    """One routed WebSocket, seen from one side.

    The route handler gets the page side: `send` reaches the client, `close` closes the client,
    `on_message`/`on_close` handle what the client sends. `connect_to_server()` returns the
    server side, whose methods do the same towards the upstream server.

    By default a routed WebSocket does not connect to the server, so you can mock the entire
    WebSocket communication (Playwright's words for `connect_to_server`).

    `send`, `close`, `on_message` and `on_close` may be called from any thread and any task:
    off the proxy's thread they are handed to it, in call order, and return at once.
    """

    __slots__ = ("_connection", "_server", "_side")

    def __init__(self, connection: RoutedConnection, side: Side = PAGE) -> None:
        self._connection = connection
        self._side = side
        self._server: WebSocketRoute | None = None

    def __repr__(self) -> str:
        return f"<WebSocketRoute {self._side} {self.url}>"

    @property
    def url(self) -> str:
        """The ws(s) URL, normalised like a browser's (lowercase host, no default port)."""
        return self._connection.url

    @property
    def protocols(self) -> list[str]:
        """The subprotocols the client requested, in order (a copy)."""
        return list(self._connection.protocols)

    @property
    def request_headers(self) -> Headers:
        """The client's upgrade request headers (beyond Playwright): names case-insensitive,
        repeated fields kept (`Headers.get_all`). Same on the server side."""
        return self._connection.request_headers

    def reject(
        self, status: int = 403, *, headers: HeadersLike | None = None, body: bytes | str = b""
    ) -> None:
        """Answer the client's upgrade with this HTTP response instead of opening the socket
        (beyond Playwright). No upstream connection is made. Call it in the route handler,
        before it returns and before `connect_to_server()`.

        Raises:
            Error: on the server side, after the handler returned, after `accept()` or after
                `connect_to_server()`.
            ValueError: `status` is not 200-599, or a header cannot be sent.
        """
        self._in_handler("reject")
        self._connection.reject(status, headers, body)

    def accept(
        self,
        *,
        protocol: str | None = FIRST_PROTOCOL,
        headers: HeadersLike | None = None,
        compression: bool = True,
    ) -> None:
        """Send a mock's 101 now (beyond Playwright), with `protocol` (one the client asked
        for, or None for none; default: the first it asked for) and extra `headers`. With
        `compression` (the default) permessage-deflate is accepted when the client offers it,
        as a real server would; False declines it. Without `accept()`, a mock is accepted this
        way when the route handler returns. Call it in the route handler.

        Raises:
            Error: on the server side, after `connect_to_server()`, after the handler
                returned, or after `reject()`.
            ValueError: `protocol` is one the client did not ask for, or a header cannot be sent.
        """
        self._in_handler("accept")
        self._connection.accept(protocol, headers, compression)

    def drop(self) -> None:
        """End this side's TCP connection without a close frame (beyond Playwright): its peer
        sees an abnormal closure (1006). Then, as for a dropped connection, this side's
        `on_close` gets ``(1006, "")`` if set, else the other side is dropped too.

        Raises:
            Error: called on another thread after the proxy stopped.
        """
        owner = self._foreign_owner()
        if owner is None:
            self._connection.drop(self._side)
        else:
            self._hand_over(owner, "drop()", self._connection.drop, self._side)

    def set_latency(self, seconds: float) -> None:
        """Hold everything sent to this side (forwarded, sent by a route, closes too) for
        `seconds` before it goes out, keeping order (beyond Playwright). ``0`` removes it.
        What waits counts against ``wsroute_max_message_size``: past it, this side is closed
        with 1009 (message too big).

        Raises:
            ValueError: `seconds` is negative or not a finite number.
            Error: called on another thread after the proxy stopped.
        """
        owner = self._foreign_owner()
        if owner is None:
            self._connection.set_latency(self._side, seconds)
        else:
            seconds = check_latency(seconds)
            self._hand_over(
                owner, "set_latency()", self._connection.set_latency, self._side, seconds
            )

    def _in_handler(self, name: str) -> None:
        if self._side is SERVER:
            raise Error(
                f"{name}() must be called on the page-side WebSocketRoute: it answers the "
                "client's upgrade"
            )
        if self._foreign_owner() is not None:
            raise Error(f"{name}() must be called from the route handler, on the proxy's thread")

    def connect_to_server(self) -> WebSocketRoute:
        """Connect to the real server and return the server side of the route.

        Call it from the route handler, before it returns. Messages and closes are forwarded
        both ways by default; an `on_message`/`on_close` handler on a side takes that side over.

        Raises:
            Error: called twice (``Already connected to the server``), or on the server side.
        """
        if self._side is SERVER:
            raise Error("connectToServer must be called on the page-side WebSocketRoute")
        if self._foreign_owner() is not None:
            # proxy: Playwright's client has one thread; here only the route handler, which runs
            # on the proxy's thread, can still connect.
            raise Error(
                "connect_to_server must be called from the route handler, on the proxy's thread"
            )
        self._connection.connect_to_server()
        self._server = WebSocketRoute(self._connection, SERVER)
        return self._server

    def on_message(self, handler: MessageHandler) -> None:
        """Handle each message from this side (`str` for text, `bytes` for binary).

        Replaces an earlier handler and stops the default forwarding of this side's messages.
        An async handler is scheduled, not awaited before the next message.
        """
        self._set_handler("message", handler)

    def on_close(self, handler: CloseHandler) -> None:
        """Handle this side's close: ``handler(code, reason)``, ``(None, None)`` for no code.

        Replaces an earlier handler and stops the default mirroring of the close to the other
        side, which then stays open until a route closes it.
        """
        self._set_handler("close", handler)

    def send(self, message: Message) -> None:
        """Send a message to this side: `str` as a text frame, `bytes` (or any bytes-like
        object: `bytearray`, `memoryview`, copied at the call) as a binary frame.

        Never blocks; messages to one side go out in call order. Ignored (with a warning in the
        log) once that side is closed. What is not written yet counts in `buffered_amount`.

        Raises:
            TypeError: `message` is neither `str` nor bytes-like.
            ValueError: the text cannot be encoded in UTF-8 (a lone surrogate).
            Error: called on another thread after the proxy stopped.
        """
        connection = self._connection
        owner = connection.owner
        if owner is None or owner.thread == get_ident():  # per message: the common case first
            connection.send(self._side, message)
            return
        message = check_message(message)  # the caller's buffer is copied now, on its thread
        self._hand_over(owner, "send()", connection.send, self._side, message)

    @property
    def buffered_amount(self) -> int:
        """Bytes sent to this side and not yet written to the network (beyond Playwright; a
        browser's ``WebSocket.bufferedAmount``): what routes sent (text in characters until
        the proxy takes it) and what is forwarded to it. A peer that does not read makes it
        grow; past ``wsroute_max_buffer`` the socket fails with 1011."""
        return self._connection.buffered_amount(self._side)

    def drain(self) -> Any:
        """``await ws.drain()``: wait until what this side was sent is written out to below the
        low-water mark (beyond Playwright; python-websockets' and asyncio's ``drain``). Done at
        once while it is under the high-water mark, or when the side is closed or not open yet.
        A loop that sends should await it, so that a client that reads slowly slows the loop
        down instead of filling the proxy's memory. Works from the proxy's loop and, in the
        test API, from the test's own event loop."""
        done = self._connection.drain(self._side)
        return _Closed() if done is None else done

    def close(self, *, code: int | None = None, reason: str | None = None) -> _Closed:
        """Close this side, then, as if this side had closed: run its `on_close` handler if set,
        else close the other side with the same code and reason.

        Without a code the close frame is empty (a browser reports 1005). The close happens
        whether or not the result is awaited.

        Raises:
            ValueError: the code is not valid on the wire (1000-1003, 1007-1014, 3000-4999), the
                reason is over 123 UTF-8 bytes or cannot be encoded in UTF-8, or a reason comes
                without a code.
            Error: called on another thread after the proxy stopped.
        """
        # proxy: Playwright's page side accepts any code and its server side silently ignores
        # invalid ones; we refuse them at the call, where the mistake is.
        owner = self._foreign_owner()
        if owner is None:
            self._connection.close(self._side, code, reason)
        else:
            check_close(code, reason)
            self._hand_over(owner, "close()", self._connection.close, self._side, code, reason)
        return _Closed()

    # --- calls from other threads --------------------------------------------------------------

    def _foreign_owner(self) -> Owner | None:
        """The connection's owner when the caller runs on another thread, else None."""
        owner = self._connection.owner
        return None if owner is None or owner.thread == get_ident() else owner

    def _set_handler(self, kind: str, handler: Callable[..., Any]) -> None:
        handlers = self._connection.handlers[self._side]
        owner = self._foreign_owner()
        if owner is None:
            setattr(handlers, kind, handler)
        else:
            self._hand_over(owner, f"on_{kind}()", setattr, handlers, kind, handler)

    def _hand_over(self, owner: Owner, what: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            owner.call_soon(fn, *args)
        except RuntimeError as e:  # the owner's loop is closed: the proxy stopped
            raise Error(f"{what} on {self.url} not done: the proxy is not running ({e})") from e
