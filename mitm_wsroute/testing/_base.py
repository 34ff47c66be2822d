"""What the sync and the async API share: everything but the waiting.

Each wait is built here as a check (run under the records' lock) and a failure text; the sync
API blocks on it, the async API awaits it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Self

from mitm_wsroute.cassettes import FILTER_HEADERS, BeforeRecordMessage, Match, Order, RecordMode
from mitm_wsroute.graphql_route import GraphQLHandler, graphql_route_handler
from mitm_wsroute.graphql_ws import (
    Operation,
    OperationMatch,
    operation_from_message,
    operation_matcher,
)
from mitm_wsroute.route import WebSocketRoute
from mitm_wsroute.router import RouteHandler
from mitm_wsroute.socketio import SocketIOEvent, find_event
from mitm_wsroute.socketio_route import SocketIOHandler, socket_io_registrar
from mitm_wsroute.urlmatch import URLMatch

from ._proxy import ProxyEngine
from ._records import (
    Message,
    MessageMatch,
    SocketRecord,
    check_direction,
    event_check,
    message_matcher,
    url_matcher,
)

__all__ = ["DEFAULT_TIMEOUT", "Check", "ProxyBase", "SocketBase", "ValueBox"]

DEFAULT_TIMEOUT = 5.0
#: A wait: what to look for (under the lock; None while not found) and what to say on timeout.
type Check[T] = tuple[Callable[[], T | None], Callable[[], str]]


class SocketBase:
    """The client's view of one WebSocket that went through the proxy (Playwright's
    `WebSocket`), without the waits."""

    __slots__ = ("_record",)

    def __init__(self, record: SocketRecord) -> None:
        self._record = record

    def __repr__(self) -> str:
        return f"<WebSocket {self._record.describe()}>"

    @property
    def url(self) -> str:
        """The ws(s) URL, normalised as routes see it."""
        return self._record.url

    @property
    def protocol(self) -> str | None:
        """The subprotocol the handshake settled on, or None."""
        return self._record.protocol

    @property
    def request_headers(self) -> dict[str, str]:
        """The client's upgrade request headers, names in lower case (repeated ones joined
        with ``, ``)."""
        headers: dict[str, str] = {}
        for name, value in self._record.request_headers:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    @property
    def routed(self) -> Literal["mock", "intercept"] | None:
        """How a route took the socket: ``"mock"``, ``"intercept"``, or None (passed through)."""
        return self._record.routed

    @property
    def route(self) -> WebSocketRoute | None:
        """The page-side `WebSocketRoute` of a routed socket (its `send` and `close` may be
        called from the test's thread), else None."""
        return self._record.route

    @property
    def unmatched_messages(self) -> list[str | bytes]:
        """Client messages that a HAR replay (`route_from_har`) found no recorded match for,
        and so sent no reply to."""
        with self._record.hub.lock:
            return list(self._record.unmatched)

    def is_closed(self) -> bool:
        return self._record.close is not None

    @property
    def close_code(self) -> int | None:
        """The close code the client saw (1005 for a close without code, 1006 for a dropped
        connection or a failed handshake); None while open."""
        close = self._record.close
        return None if close is None else close[0]

    @property
    def close_reason(self) -> str | None:
        close = self._record.close
        return None if close is None else close[1]

    @property
    def messages(self) -> list[Message]:
        """Every message so far, both directions, in the order the proxy saw them."""
        return self._record.snapshot()

    def _message_check(
        self, match: MessageMatch | None, direction: str | None, timeout: float
    ) -> Check[Message]:
        check_direction(direction)
        record, matches = self._record, message_matcher(match)

        def check() -> Message | None:
            found = record.next_message(record.cursor, matches, direction)
            if found is None:
                return None
            record.cursor = found[0] + 1
            return found[1]

        def fail() -> str:
            what = "message" + (f" {direction}" if direction else "")
            what += f" matching {match!r}" if match is not None else ""
            return f"no {what} within {timeout} s on {record.describe()}"

        return check, fail

    def _operation_check(self, name: OperationMatch, timeout: float) -> Check[Operation]:
        record, matches = self._record, operation_matcher(name)

        def is_operation(payload: str | bytes) -> bool:
            operation = operation_from_message(payload)
            return operation is not None and matches(operation)

        def check() -> Operation | None:
            found = record.next_message(record.operation_cursor, is_operation, "sent")
            if found is None:
                return None
            record.operation_cursor = found[0] + 1
            return operation_from_message(found[1].payload)

        def fail() -> str:
            return f"no GraphQL operation {name!r} within {timeout} s on {record.describe()}"

        return check, fail

    def _socketio_event_check(
        self, name: str, namespace: str, direction: str | None, timeout: float
    ) -> Check[SocketIOEvent]:
        check_direction(direction)
        record = self._record

        def check() -> SocketIOEvent | None:
            start = max(record.event_cursor, record.forgotten)
            messages = [
                (m.payload, m.direction) for m in record.messages[start - record.forgotten :]
            ]
            found = find_event(messages, name, namespace, direction)
            if found is None or found[1] is None:
                return None
            record.event_cursor = start + found[0] + 1
            return found[1]

        def fail() -> str:
            return (
                f"no Socket.IO event {name!r} in {namespace} within {timeout} s on "
                f"{record.describe()}"
            )

        return check, fail

    def _close_check[S: SocketBase](self: S, timeout: float) -> Check[S]:
        record = self._record

        def check() -> S | None:
            return self if record.close is not None else None

        return check, lambda: f"not closed within {timeout} s: {record.describe()}"

    def _event_check(
        self, event: str, predicate: Callable[[Any], bool] | None, timeout: float
    ) -> Check[tuple[Any]]:
        record = self._record
        with record.hub.lock:
            start = record.end()
        check = event_check(record, event, start, predicate)
        return check, lambda: f"no {event!r} event within {timeout} s on {record.describe()}"


class ProxyBase[S: SocketBase]:
    """A real mitmproxy with the addon, on its own thread and event loop, without the waits."""

    _socket_class: type[S]

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: str = "regular",
        scripts: Sequence[str | os.PathLike[str]] = (),
        options: dict[str, Any] | None = None,
        confdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._engine = ProxyEngine(
            host=host, port=port, mode=mode, scripts=scripts, options=options, confdir=confdir
        )

    @classmethod
    def _over(cls, other: ProxyBase[Any]) -> Self:
        """This API over the proxy of `other` (the pytest plugin's two fixtures share one)."""
        proxy = cls.__new__(cls)
        proxy._engine = other._engine
        return proxy

    def __repr__(self) -> str:
        where = f" {self._engine.url}" if self._engine.state == "running" else ""
        return f"<WsRouteProxy {self._engine.state}{where}>"

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the proxy's address for clients."""
        self._engine.check_running()
        return self._engine.url

    @property
    def host(self) -> str:
        return self._engine.host

    @property
    def port(self) -> int:
        self._engine.check_running()
        return self._engine.port

    @property
    def ca_cert(self) -> Path:
        """The PEM certificate of the proxy's CA, which clients must trust for ``wss://``."""
        self._engine.check_running()
        return self._engine.ca_cert

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point subprocess clients at the proxy and its CA:
        ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` (and lower-case twins), ``NO_PROXY=""``,
        ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``NODE_EXTRA_CA_CERTS``, ``CURL_CA_BUNDLE``."""
        self._engine.check_running()
        return self._engine.env()

    @property
    def playwright_proxy(self) -> dict[str, str]:
        """For ``browser.new_context(proxy=...)``; loopback too goes through the proxy."""
        return {"server": self.url, "bypass": "<-loopback>"}

    def route_web_socket(
        self, url: URLMatch, handler: RouteHandler | None = None
    ) -> Callable[[RouteHandler], RouteHandler] | None:
        """Route the WebSockets whose URL matches `url` to `handler`, as a route script's
        `route_web_socket` does; without `handler`, a decorator. These routes win over the
        scripts' routes; the last registered wins. Callable from any thread.

        Raises:
            ValueError: `url` is an invalid glob.
        """
        return self._engine.route(url, handler)

    def route_socket_io(
        self,
        url: URLMatch,
        handler: SocketIOHandler | None = None,
        *,
        namespace: str = "/",
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
    ) -> Callable[[SocketIOHandler], SocketIOHandler] | None:
        """Route the Socket.IO clients whose URL matches `url` to `handler`, as a route
        script's `route_socket_io` does (mocks answer long-polling too); without `handler`, a
        decorator. Callable from any thread."""
        engine = self._engine
        return socket_io_registrar(
            url,
            handler,
            engine.base_url,
            engine.wsroute.router.add,
            namespace,
            ping_interval,
            ping_timeout,
        )

    def route_graphql_ws(
        self, url: URLMatch, handler: GraphQLHandler | None = None
    ) -> Callable[[GraphQLHandler], GraphQLHandler] | None:
        """Route the GraphQL-over-WebSocket sockets whose URL matches `url` to `handler`, which
        gets a `GraphQLWsRoute`, as a route script's `route_graphql_ws` does; without
        `handler`, a decorator. Otherwise as `route_web_socket`.

        Raises:
            ValueError: `url` is an invalid glob.
        """

        def register(h: GraphQLHandler) -> GraphQLHandler:
            self._engine.route(url, graphql_route_handler(h))
            return h

        if handler is None:
            url_matcher(url, self._engine.base_url)  # an invalid glob raises here
            return register
        register(handler)
        return None

    def route_from_har(
        self,
        har: str | os.PathLike[str],
        *,
        url: URLMatch | None = None,
        not_found: Literal["abort", "fallback"] = "abort",
        update: bool = False,
        timing: Literal["none", "recorded"] = "none",
        record_mode: RecordMode | None = None,
        match: Match = "exact",
        order: Order = "sequential",
        allow_playback_repeats: bool = False,
        filter_headers: Iterable[str] = FILTER_HEADERS,
        filter_query: Iterable[str] = (),
        before_record_message: BeforeRecordMessage | None = None,
    ) -> None:
        """Serve the WebSockets whose URL matches `url` from the conversations recorded in the
        HAR file `har`, or record them into it (Playwright's ``route_from_har`` names, and
        vcrpy's record modes, matchers and filters; see `mitm_wsroute.route_from_har`). The
        proxy's ``wsroute_record_mode`` option, if set, wins over `record_mode`. Its route
        wins over the scripts' routes, like `route_web_socket`'s; `unroute_web_socket(url)`
        removes it. Recordings are written as each socket ends and at `stop()`. A client
        message that matches nothing (``record_mode="none"``) is in `handler_errors`.

        Raises:
            ValueError: `har` is not a HAR with WebSocket entries (the message says where), is
                missing when it is replayed, or an argument is invalid.
        """
        self._engine.route_from_har(
            har,
            url=url,
            not_found=not_found,
            update=update,
            timing=timing,
            record_mode=record_mode,
            match=match,
            order=order,
            allow_playback_repeats=allow_playback_repeats,
            filter_headers=filter_headers,
            filter_query=filter_query,
            before_record_message=before_record_message,
        )

    def unroute_web_socket(self, url: URLMatch, handler: RouteHandler | None = None) -> None:
        """Remove the routes registered here with `url` (and `handler`, if given). Live
        sockets keep their handlers."""
        self._engine.unroute(url, handler)

    def unroute_all(self) -> None:
        """Remove every route registered here (the scripts' routes stay)."""
        self._engine.unroute(None)

    @property
    def web_sockets(self) -> list[S]:
        """Every WebSocket that reached the proxy since start or `reset()`, routed or not, in
        handshake order."""
        with self._engine.hub.lock:
            records = list(self._engine.sockets)
        return [self._view(r) for r in records]

    @property
    def handler_errors(self) -> list[BaseException]:
        """Exceptions raised by route, `on_message` and `on_close` handlers since start or
        `reset()` (each also logged with its traceback)."""
        with self._engine.hub.lock:
            return list(self._engine.handler_errors)

    def reset(self) -> None:
        """`unroute_all()`, forget `web_sockets` and `handler_errors`, and let go of the
        sockets of the test before: routed ones still open are closed with 1001 (going away,
        as when a browser closes a page), and nothing of theirs (handler errors, events,
        sockets still opening) reaches the test after."""
        self._engine.reset()

    def _view(self, record: SocketRecord) -> S:
        view = record.views.get(self._socket_class)
        if view is None:
            view = record.views[self._socket_class] = self._socket_class(record)
        return view

    def _socket_check(self, url: URLMatch | None, timeout: float) -> Check[SocketRecord]:
        engine = self._engine
        matches = url_matcher(url, engine.base_url)

        def check() -> SocketRecord | None:
            for record in engine.sockets:
                if id(record) not in engine.returned and matches(record.url):
                    engine.returned.add(id(record))
                    return record
            return None

        return check, lambda: self._socket_failure(url, timeout)

    def _new_socket_check(self, url: URLMatch | None, timeout: float) -> Check[SocketRecord]:
        engine = self._engine
        matches = url_matcher(url, engine.base_url)
        with engine.hub.lock:
            start = engine.socket_total

        def check() -> SocketRecord | None:
            for record in engine.sockets:
                if record.seq >= start and matches(record.url):
                    return record
            return None

        return check, lambda: self._socket_failure(url, timeout)

    def _socket_failure(self, url: URLMatch | None, timeout: float) -> str:
        seen = ", ".join(r.url for r in self._engine.sockets) or "none"
        what = "WebSocket" + (f" matching {url!r}" if url is not None else "")
        return f"no {what} within {timeout} s; WebSockets seen: {seen}"


class ValueBox[T]:
    """`expect_*`'s result: `.value` once the block ended and the event came."""

    __slots__ = ("_set", "_value")

    def __init__(self) -> None:
        self._set = False
        self._value: T | None = None

    def set(self, value: T) -> None:
        self._value, self._set = value, True

    @property
    def value(self) -> T:
        if not self._set:
            raise RuntimeError("the value is there once the `with` block has ended")
        return self._value  # type: ignore[return-value]
