"""Use mitm_wsroute from a test: a real proxy in one line, routes from the test, and what every
client sent and got.

    from mitm_wsroute.testing import WsRouteProxy

    with WsRouteProxy() as proxy:                  # real mitmproxy + the addon, 127.0.0.1
        proxy.route_web_socket("wss://api.example.com/feed", lambda ws: ws.on_message(ws.send))
        subprocess.run(["my-app", "--once"], env={**os.environ, **proxy.env}, check=True)
        sock = proxy.wait_for_web_socket("**/feed")
        assert sock.wait_for_message("subscribe", direction="sent").payload == "subscribe"

This is the sync API (methods that wait block); `mitm_wsroute.testing.async_api` has the same
names as coroutines. The pytest plugin gives both as fixtures (`wsroute`, `async_wsroute`).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mitm_wsroute.graphql_ws import Operation, OperationMatch
from mitm_wsroute.socketio import SocketIOEvent
from mitm_wsroute.urlmatch import URLMatch

from ._base import DEFAULT_TIMEOUT, ProxyBase, SocketBase, ValueBox
from ._records import Message, MessageMatch

__all__ = ["Message", "WebSocket", "WsRouteProxy"]


class WebSocket(SocketBase):
    """The client's view of one WebSocket that went through the proxy (Playwright's
    `WebSocket`): its URL, handshake, messages both ways and close, with waits."""

    __slots__ = ()

    def wait_for_message(
        self,
        match: MessageMatch | None = None,
        *,
        direction: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Message:
        """The first message after the one a wait on this socket returned last (already seen
        or still to come) that matches: an exact payload, an `re.Pattern` searched in text
        messages, or a predicate on the payload; `direction` ``"sent"`` (client to proxy) or
        ``"received"``.

        Raises:
            TimeoutError: none came within `timeout` seconds (it names the last messages).
        """
        return self._record.hub.wait(*self._message_check(match, direction, timeout), timeout)

    def wait_for_close(self, timeout: float = DEFAULT_TIMEOUT) -> WebSocket:
        """Wait until the client's socket is closed; returns this socket."""
        return self._record.hub.wait(*self._close_check(timeout), timeout)

    def wait_for_operation(
        self, name: OperationMatch, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Operation:
        """The first GraphQL operation the client started (``subscribe``, legacy ``start``)
        after the one this wait returned last, already seen or still to come, named `name`
        (or for which that predicate on the `Operation` is true).

        Raises:
            TimeoutError: none came within `timeout` seconds (it names the last messages).
        """
        return self._record.hub.wait(*self._operation_check(name, timeout), timeout)

    def wait_for_event(
        self,
        name: str,
        namespace: str = "/",
        *,
        direction: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SocketIOEvent:
        """The first Socket.IO event `name` in `namespace` on this socket after the one this
        wait returned last, already seen or still to come: its `args` (binary attachments as
        bytes), `direction` (``"sent"``: from the client) and ack `id`. A default client's
        events before its upgrade went by HTTP long-polling and are not on the socket.

        Raises:
            TimeoutError: none came within `timeout` seconds (it names the last messages).
        """
        check = self._socketio_event_check(name, namespace, direction, timeout)
        return self._record.hub.wait(*check, timeout)

    def on(self, event: str, callback: Callable[[Any], Any]) -> None:
        """Call `callback` for Playwright's events: ``"framesent"`` and ``"framereceived"``
        (with the payload), ``"close"`` (with this socket). Listeners run in order on a thread
        of their own (not the proxy's, which they can never hold up); an exception in one is
        logged."""
        if event == "close":
            self._record.on(event, lambda _: callback(self))
        else:
            self._record.on(event, callback)

    @contextmanager
    def expect_event(
        self,
        event: str,
        predicate: Callable[[Any], bool] | None = None,
        timeout: float | None = None,
    ) -> Iterator[ValueBox[Any]]:
        """A block after which ``.value`` is the first `event` in it (a payload for frames,
        this socket for ``"close"``) that satisfies `predicate`."""
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        check, fail = self._event_check(event, predicate, timeout)
        box: ValueBox[Any] = ValueBox()
        yield box
        (value,) = self._record.hub.wait(check, fail, timeout)
        box.set(self if event == "close" else value)


class WsRouteProxy(ProxyBase[WebSocket]):
    """A real mitmproxy with the addon, listening on `host` (127.0.0.1) and `port` (0: a free
    one), running on a thread and event loop of its own; route handlers run there.

    Args:
        mode: mitmproxy's proxy mode (``regular``, ``reverse:https://host``, ...).
        scripts: route scripts loaded as with ``wsroute_scripts`` (a test's routes win).
        options: any mitmproxy or ``wsroute_*`` option, e.g. ``{"ssl_insecure": True}``.
        confdir: mitmproxy's configuration folder (its CA); None: a private temporary one,
            removed at stop.

    Use it as a context manager, or `start()` and `stop()`.
    """

    _socket_class = WebSocket

    def start(self) -> WsRouteProxy:
        """Start the proxy; returns when it listens.

        Raises:
            ValueError: an unknown or invalid option.
            RuntimeError: it could not start (e.g. the port is taken), with mitmproxy's reason.
        """
        self._engine.start()
        return self

    def stop(self) -> None:
        """Stop the proxy: close its connections and its thread, remove its temporary CA."""
        self._engine.stop()

    def __enter__(self) -> WsRouteProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_web_socket(
        self, url: URLMatch | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> WebSocket:
        """The first socket matching `url` (a glob, `re.Pattern` or predicate; None: any) that
        no earlier `wait_for_web_socket` returned, already seen or still to come.

        Raises:
            TimeoutError: none came within `timeout` seconds (it names the URLs seen).
        """
        self._engine.check_running()
        record = self._engine.hub.wait(*self._socket_check(url, timeout), timeout)
        return self._view(record)

    @contextmanager
    def expect_web_socket(
        self, url: URLMatch | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Iterator[ValueBox[WebSocket]]:
        """Playwright's ``page.expect_websocket``: after the block, ``.value`` is the first
        socket matching `url` that opened inside it."""
        self._engine.check_running()
        check, fail = self._new_socket_check(url, timeout)
        box: ValueBox[WebSocket] = ValueBox()
        yield box
        box.set(self._view(self._engine.hub.wait(check, fail, timeout)))
