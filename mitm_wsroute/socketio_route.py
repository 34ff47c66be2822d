"""`route_socket_io`: a Socket.IO server (mock) or a Socket.IO-aware intercept, per client.

A Socket.IO route is a WebSocket route whose handler speaks Engine.IO v4 / Socket.IO v5
(socketio.py has the packets). One `_Session` per client carries the Engine.IO session over
either transport: a routed WebSocket, or HTTP long-polling (socketio_polling.py, called by the
addon's request hook), and upgrades from the second to the first. User handlers get a
`SocketIORoute` per namespace.

This module uses the proxy's event loop for the heartbeat timers and async handlers (asyncio is
imported when a session starts, so that importing the package stays pure); it does not import
mitmproxy.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import parse_qs, urlsplit

from .route import WebSocketRoute
from .router import registrar, script_collector
from .scripts import user_traceback
from .socketio import (
    EIO,
    SIO,
    BinaryDecoder,
    Packet,
    decode_eio,
    encode_eio,
    encode_sio,
    open_packet,
)
from .urlmatch import URLMatch

if TYPE_CHECKING:
    import asyncio

__all__ = ["SocketIOHandler", "SocketIORoute", "SocketIOServer", "route_socket_io"]

logger = logging.getLogger(__name__)

SocketIOHandler = Callable[["SocketIORoute"], Any]
EventHandler = Callable[..., Any]

#: What may wait for a polling client that does not poll, per session, before it is dropped.
MAX_QUEUED_PACKETS = 10_000
MAX_QUEUED_BYTES = 16 * 1024 * 1024
#: Ack ids the route itself uses in an intercept, far above a client's or a server's own.
INTERCEPT_ACK_BASE = 1_000_000_000
#: Sessions of intercepts whose polling phase passed through, by the real server's sid, kept
#: until the upgrade comes (at most this many, the oldest forgotten first).
MAX_PENDING_INTERCEPTS = 1000

#: Live mock sessions by sid (one event loop: the proxy's).
_sessions: dict[str, _Session] = {}
_intercepts: OrderedDict[str, SocketIORoute] = OrderedDict()


def query(url: str) -> dict[str, str]:
    """The first value of each query parameter of `url`."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class _Namespace:
    __slots__ = ("events", "on_connect", "on_disconnect", "server_events")

    def __init__(self) -> None:
        self.events: dict[str, EventHandler] = {}
        self.server_events: dict[str, EventHandler] = {}
        self.on_connect: Callable[[str, Any], Any] | None = None
        self.on_disconnect: Callable[[str, str], Any] | None = None


class _Session:
    """One client's Engine.IO session and Socket.IO namespaces (mock or intercept)."""

    def __init__(self, endpoint: _Endpoint, url: str, mock: bool = True) -> None:
        import asyncio  # here: a session exists only in a running proxy, and the package's
        # import stays free of asyncio (route scripts import it)

        self.endpoint = endpoint
        self.url = url
        self.sid = secrets.token_urlsafe(15)
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.namespaces: dict[str, _Namespace] = {}
        self.connected: dict[str, str] = {}  # namespace -> its Socket.IO sid
        self.waiting: dict[str, list[Packet]] = {}  # emits before the namespace connected
        self.acks: dict[int, Callable[..., Any]] = {}
        self.next_ack = 0 if mock else INTERCEPT_ACK_BASE
        self.server_acks: dict[int, Callable[..., Any]] = {}
        self.next_server_ack = INTERCEPT_ACK_BASE
        self.decoder = BinaryDecoder()
        self.server_decoder = BinaryDecoder()
        self.ws: WebSocketRoute | None = None
        self.server: WebSocketRoute | None = None
        self.transport = "websocket"
        self.closed = False
        self.intercept = not mock
        self.upgrading = False
        self.queue: deque[tuple[EIO, str | bytes]] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.polling_get = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._held_raw: list[str | bytes] = []
        self._held_server_raw: list[str | bytes] = []

    @property
    def label(self) -> str:
        return f"{self.url} (route {self.endpoint.label})"

    def ns(self, name: str) -> _Namespace:
        found = self.namespaces.get(name)
        if found is None:
            found = self.namespaces[name] = _Namespace()
        return found

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn` on the proxy's loop: now if this is its thread, else handed over."""
        if threading.get_ident() == self.thread:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    # --- out --------------------------------------------------------------------------------

    def send_eio(self, kind: EIO, data: str | bytes = "") -> None:
        if self.closed:
            return
        if self.transport == "websocket" and self.ws is not None:
            self.ws.send(encode_eio(kind, data))
            return
        self.queue.append((kind, data))
        self.queued_bytes += len(data)
        if len(self.queue) > MAX_QUEUED_PACKETS or self.queued_bytes > MAX_QUEUED_BYTES:
            logger.warning(f"{self.label}: the polling client reads nothing; session dropped")
            self.close("transport close", send_close=False)
            return
        self.wake.set()

    def send_sio(self, packet: Packet, to_server: bool = False) -> None:
        parts = encode_sio(packet)
        if to_server:
            assert self.server is not None
            for part in parts:
                self.server.send(encode_eio(EIO.MESSAGE, part))
            return
        for part in parts:
            self.send_eio(EIO.MESSAGE, part)

    def emit(
        self,
        namespace: str,
        event: str,
        args: tuple[Any, ...],
        callback: Callable[..., Any] | None,
        to_server: bool = False,
    ) -> None:
        ack_id = None
        if callback is not None:
            if to_server:
                ack_id, self.next_server_ack = self.next_server_ack, self.next_server_ack + 1
                self.server_acks[ack_id] = callback
            else:
                ack_id, self.next_ack = self.next_ack, self.next_ack + 1
                self.acks[ack_id] = callback
        packet = Packet(SIO.EVENT, namespace, [event, *args], ack_id)
        if to_server or self.server is not None or namespace in self.connected:
            self.send_sio(packet, to_server)
        else:  # the client has not connected to the namespace yet: sent once it has
            self.waiting.setdefault(namespace, []).append(packet)

    # --- heartbeat (mock) -------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        self._timer = self.loop.call_later(self.endpoint.ping_interval, self._ping)

    def _ping(self) -> None:
        self.send_eio(EIO.PING)
        self._timer = self.loop.call_later(self.endpoint.ping_timeout, self._ping_timeout)

    def _ping_timeout(self) -> None:
        logger.info(f"{self.label}: no pong within {self.endpoint.ping_timeout} s")
        self.close("ping timeout")

    def _pong(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.start_heartbeat()

    # --- in (mock) --------------------------------------------------------------------------

    def receive_frame(self, frame: str | bytes, ws: WebSocketRoute | None) -> Any:
        """One packet from the client (a WebSocket frame, or one packet of a polling body as
        a frame). Runs its handler: an awaitable result when that is async; what the handler
        raises is raised. A malformed packet disconnects the client, logged."""
        try:
            kind, data = decode_eio(frame)
            if kind is not EIO.MESSAGE:
                self.receive(kind, data, ws)
                return None
            packet = self.decoder.feed(data)
            if packet is not None and packet.type in (SIO.CONNECT_ERROR,):
                raise ValueError(f"a {packet.type.name} packet from the client")
        except ValueError as e:
            self.malformed(e)
            return None
        return None if packet is None else self.dispatch(packet)

    def receive(self, kind: EIO, data: str | bytes, ws: WebSocketRoute | None = None) -> None:
        """An Engine.IO packet other than a message from the client.

        Raises:
            ValueError: a packet a client does not send (the caller disconnects the client).
        """
        if kind is EIO.PONG:
            if ws is not None and ws is not self.ws:
                return None  # a probe's pong cannot come from a client
            self._pong()
        elif kind is EIO.PING:
            if data == "probe" and ws is not None:  # the upgrade probe (Engine.IO v4)
                ws.send(encode_eio(EIO.PONG, "probe"))
                self.upgrading = True
                self.wake.set()  # the held GET answers with a noop, so the client can go on
            else:
                raise ValueError(f"a ping from the client: {data!r}")
        elif kind is EIO.UPGRADE:
            if ws is None or not self.upgrading:
                raise ValueError("an upgrade packet without a probe before it")
            self.ws, self.transport, self.upgrading = ws, "websocket", False
            while self.queue:
                k, d = self.queue.popleft()
                ws.send(encode_eio(k, d))
            self.queued_bytes = 0
            self.wake.set()
        elif kind is EIO.CLOSE:
            self.close("client disconnect", send_close=False)
        elif kind is EIO.NOOP:
            pass
        else:
            raise ValueError(f"a {kind.name} packet from the client")
        return None

    def dispatch(self, packet: Packet) -> Any:
        ns = packet.namespace
        if packet.type is SIO.CONNECT:
            return self._connect(ns, packet.data)
        if ns not in self.connected:
            logger.info(f"{self.label}: a packet for {ns}, which is not connected; ignored")
            return None
        if packet.type is SIO.DISCONNECT:
            del self.connected[ns]
            return self._disconnected(ns, "client namespace disconnect")
        if packet.type is SIO.ACK:
            callback = self.acks.pop(packet.id or 0, None)
            return None if callback is None else callback(*packet.data)
        if packet.type is SIO.EVENT:
            return self._event(packet, self.ns(ns).events, to_server=False, mock=True)
        return None

    def _event(
        self,
        packet: Packet,
        handlers: dict[str, EventHandler],
        to_server: bool,
        mock: bool,
    ) -> Any:
        """Run the handler of an event packet; its result answers the sender's ack. Returns
        False when no handler has the event."""
        name, args = packet.data[0], packet.data[1:]
        fn = handlers.get(name)
        if fn is None:
            if mock:
                logger.info(f"{self.label}: no handler for event {name!r} on {packet.namespace}")
            return False
        result = fn(*args)
        if inspect.isawaitable(result):
            return self._ack_later(result, packet, to_server)
        self._ack(result, packet, to_server)
        return None

    async def _ack_later(self, result: Awaitable[Any], packet: Packet, to_server: bool) -> None:
        self._ack(await result, packet, to_server)

    def _ack(self, result: Any, packet: Packet, to_server: bool) -> None:
        if packet.id is None:
            return
        args = [] if result is None else list(result) if isinstance(result, tuple) else [result]
        self.send_sio(Packet(SIO.ACK, packet.namespace, args, packet.id), to_server)

    def _connect(self, ns: str, auth: Any) -> Any:
        if ns in self.connected:
            return None
        handlers = self.namespaces.get(ns)
        if handlers is None and ns != self.endpoint.namespace:
            self.send_sio(Packet(SIO.CONNECT_ERROR, ns, {"message": "Invalid namespace"}))
            return None
        fn = handlers.on_connect if handlers is not None else None
        if fn is None:
            self._accept(ns)
            return None
        try:
            result = fn(ns, auth)
        except Exception:
            self._refuse(ns)
            raise
        if inspect.isawaitable(result):
            return self._connect_later(ns, result)
        self._accept(ns) if result is not False else self._refuse(ns)
        return None

    async def _connect_later(self, ns: str, result: Awaitable[Any]) -> None:
        try:
            answer = await result
        except Exception:
            self._refuse(ns)
            raise
        self._accept(ns) if answer is not False else self._refuse(ns)

    def _accept(self, ns: str) -> None:
        sid = secrets.token_urlsafe(15)
        self.connected[ns] = sid
        self.send_sio(Packet(SIO.CONNECT, ns, {"sid": sid}))
        for packet in self.waiting.pop(ns, []):
            self.send_sio(packet)

    def _refuse(self, ns: str) -> None:
        self.send_sio(Packet(SIO.CONNECT_ERROR, ns, {"message": "Connection rejected by server"}))

    def _disconnected(self, ns: str, reason: str) -> Any:
        handlers = self.namespaces.get(ns)
        if handlers is not None and handlers.on_disconnect is not None:
            return handlers.on_disconnect(ns, reason)
        return None

    def disconnect(self, ns: str) -> None:
        if ns in self.connected:
            self.send_sio(Packet(SIO.DISCONNECT, ns))
            del self.connected[ns]
            self.run_user(self._disconnected, ns, "server namespace disconnect")

    def close(self, reason: str, send_close: bool = True) -> None:
        """End the session: the client's namespaces are disconnected with `reason`."""
        if self.closed:
            return
        if send_close:
            self.send_eio(EIO.CLOSE)
        self.closed = True
        _sessions.pop(self.sid, None)
        _forget_sid(self.sid)
        if self._timer is not None:
            self._timer.cancel()
        self.wake.set()
        if self.ws is not None and send_close:
            self.ws.close()
        for ns in list(self.connected):
            del self.connected[ns]
            self.run_user(self._disconnected, ns, reason)

    def run_user(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run user code outside a transport's handler: errors are logged, awaitables run."""
        try:
            result = fn(*args)
        except Exception as e:
            self.report(e)
            return
        if inspect.isawaitable(result):
            self.spawn(result)

    def spawn(self, result: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await result
            except Exception as e:
                self.report(e)

        task = self.loop.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def report(self, e: BaseException) -> None:
        logger.error(f"{self.label}: handler failed:\n{user_traceback(e, 'run')}")
        if self.endpoint.on_error is not None:
            self.endpoint.on_error(e)

    def malformed(self, e: ValueError, who: str = "client") -> None:
        """A packet that breaks the protocol: logged with the route named, and the client is
        disconnected (its WebSocket closed with 1002; a polling client gets a close packet)."""
        logger.warning(f"{self.label}: malformed packet from the {who}, disconnecting: {e}")
        if self.ws is not None and (self.server is not None or self.transport == "websocket"):
            self.ws.close(code=1002, reason="malformed Socket.IO packet")
            if self.server is not None:
                self.closed = True
                return
            self.close("parse error", send_close=False)
            return
        self.close("parse error")

    # --- a WebSocket transport (mock) -------------------------------------------------------

    def attach_ws(self, ws: WebSocketRoute, probe: bool) -> None:
        """Carry the session over `ws`: from the start (websocket-only clients) or, with
        `probe`, once the client upgrades from long-polling."""

        def on_message(frame: str | bytes) -> Any:
            if self.closed:
                return None
            return self.receive_frame(frame, ws)

        def on_close(code: int | None, reason: str | None) -> None:
            if probe and ws is not self.ws:
                return  # a probe that never upgraded: the session goes on polling
            self.close("transport close", send_close=False)

        ws.on_message(on_message)
        ws.on_close(on_close)
        if not probe:
            self.ws = ws


def _forget_sid(sid: str) -> None:
    _recently_closed[sid] = None
    while len(_recently_closed) > MAX_PENDING_INTERCEPTS:
        _recently_closed.popitem(last=False)


_recently_closed: OrderedDict[str, None] = OrderedDict()


class SocketIORoute:
    """One Socket.IO client, seen from one namespace (``"/"`` unless the route says another).

    `on(event, fn)` answers the client's events (fn gets the event's arguments; its return
    value, if not None, answers the client's ack, a tuple as several values); `emit(event,
    *args, callback=None)` sends one to the client; `of(namespace)` is the same client in
    another namespace. With `connect_to_server()` the route is an intercept: events that no
    `on` handler takes are forwarded.
    """

    __slots__ = ("_namespace", "_server", "_session")

    def __init__(self, session: _Session, namespace: str) -> None:
        self._session = session
        self._namespace = namespace
        self._server: SocketIOServer | None = None
        session.ns(namespace)

    def __repr__(self) -> str:
        return f"<SocketIORoute {self._namespace} {self._session.url}>"

    @property
    def url(self) -> str:
        """The ws(s) URL of the first request of this client (a polling one as ws(s))."""
        return self._session.url

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def web_socket(self) -> WebSocketRoute | None:
        """The raw `WebSocketRoute`: None while the client long-polls (before its upgrade)."""
        return self._session.ws

    def of(self, namespace: str) -> SocketIORoute:
        """This client in `namespace` (which then accepts connections)."""
        if not namespace.startswith("/"):
            raise ValueError(f"a namespace starts with '/': {namespace!r}")
        return SocketIORoute(self._session, namespace)

    def on(self, event: str, fn: EventHandler) -> None:
        """Handle the client's `event` in this namespace: ``fn(*args)``, sync or async; its
        return value, if not None, answers the client's ack (a tuple: several values)."""
        self._session.call(self._session.ns(self._namespace).events.__setitem__, event, fn)

    def on_connect(self, fn: Callable[[str, Any], Any]) -> None:
        """``fn(namespace, auth)`` when the client connects to this namespace; returning
        False or raising refuses it with a ``connect_error``."""
        self._session.ns(self._namespace).on_connect = fn

    def on_disconnect(self, fn: Callable[[str, str], Any]) -> None:
        """``fn(namespace, reason)`` when the client leaves this namespace, or is gone."""
        self._session.ns(self._namespace).on_disconnect = fn

    def emit(self, event: str, *args: Any, callback: Callable[..., Any] | None = None) -> None:
        """Send `event` with `args` (JSON values; bytes as binary attachments) to the client;
        `callback(*ack_args)` gets its ack. Before the client connected to the namespace, it
        waits for that. Never blocks."""
        self._session.call(self._session.emit, self._namespace, event, args, callback)

    def disconnect(self) -> None:
        """Disconnect the client from this namespace (``io server disconnect``)."""
        self._session.call(self._session.disconnect, self._namespace)

    def connect_to_server(self) -> SocketIOServer:
        """Connect to the real server (an intercept) and return its side. Call it in the
        route handler. Long-polling passes through untouched; events are seen from the
        client's WebSocket (its upgrade) on."""
        if self._server is None:
            session = self._session
            if session.ws is not None and session.server is None:
                session.server = session.ws.connect_to_server()
            self._server = SocketIOServer(session, self._namespace)
            session.intercept = True
        return self._server


class SocketIOServer:
    """The real server's side of an intercepted Socket.IO client: `on(event, fn)` takes the
    server's `event` (not forwarded; fn's return value answers the server's ack), `emit`
    sends an event to the server."""

    __slots__ = ("_namespace", "_session")

    def __init__(self, session: _Session, namespace: str) -> None:
        self._session = session
        self._namespace = namespace

    def of(self, namespace: str) -> SocketIOServer:
        return SocketIOServer(self._session, namespace)

    def on(self, event: str, fn: EventHandler) -> None:
        self._session.call(self._session.ns(self._namespace).server_events.__setitem__, event, fn)

    def emit(self, event: str, *args: Any, callback: Callable[..., Any] | None = None) -> None:
        self._session.call(self._session.emit, self._namespace, event, args, callback, True)


class _Endpoint:
    """The route handler `route_socket_io` registers: per client, a session and a
    `SocketIORoute` for the user's handler."""

    def __init__(
        self,
        handler: SocketIOHandler,
        namespace: str,
        ping_interval: float,
        ping_timeout: float,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"route handler must be callable, not {type(handler).__name__}")
        if not namespace.startswith("/"):
            raise ValueError(f"a namespace starts with '/': {namespace!r}")
        if not (ping_interval > 0 and ping_timeout > 0):
            raise ValueError("ping_interval and ping_timeout must be positive")
        self.handler = handler
        self.namespace = namespace
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.on_error: Callable[[BaseException], None] | None = None
        # registrar() names the route after these: the user's handler, not this object.
        self.__code__ = getattr(handler, "__code__", None)
        self.__qualname__ = str(getattr(handler, "__qualname__", type(handler).__name__))
        code = self.__code__
        self.label = f"{code.co_filename.rsplit('/', 1)[-1] if code else '?'}:{self.__qualname__}"

    async def start(self, session: _Session) -> SocketIORoute:
        sio = SocketIORoute(session, self.namespace)
        result = self.handler(sio)
        if inspect.isawaitable(result):
            await result
        return sio

    async def __call__(self, ws: WebSocketRoute) -> None:
        params = query(ws.url)
        if params.get("EIO") != "4":
            ws.reject(400, body='{"code":5,"message":"Unsupported protocol version"}')
            return
        sid = params.get("sid")
        if sid is not None:
            session = _sessions.get(sid)
            if session is not None and not session.closed and session.transport == "polling":
                session.attach_ws(ws, probe=True)
                return
            pending = _intercepts.pop(sid, None)
            if pending is not None:
                pending._session.ws = ws
                pending._session.transport = "websocket"
                pending._session.server = ws.connect_to_server()
                _intercept(pending._session)
                return
        session = _Session(self, ws.url)
        session.ws = ws
        await self.start(session)
        if session.intercept:
            if session.server is None:
                session.server = ws.connect_to_server()
            _intercept(session)
            return
        if sid is not None:
            ws.reject(400, body='{"code":1,"message":"Session ID unknown"}')
            return
        _sessions[session.sid] = session
        session.attach_ws(ws, probe=False)
        ws.send(
            encode_eio(
                EIO.OPEN, open_packet(session.sid, [], self.ping_interval, self.ping_timeout)
            )
        )
        session.start_heartbeat()


def _intercept(session: _Session) -> None:
    """Forward both ways, frame by frame, but for events an `on` handler takes."""
    ws, server = session.ws, session.server
    assert ws is not None and server is not None

    def side(from_client: bool) -> Callable[[str | bytes], Any]:
        decoder = session.decoder if from_client else session.server_decoder
        held = session._held_raw if from_client else session._held_server_raw
        target = server if from_client else ws

        def on_message(frame: str | bytes) -> Any:
            if session.closed:
                return None
            try:
                kind, data = decode_eio(frame)
                packet = decoder.feed(data) if kind is EIO.MESSAGE else None
            except ValueError as e:
                session.malformed(e, "client" if from_client else "server")
                target.close(code=1002, reason="malformed Socket.IO packet")
                return None
            if kind is not EIO.MESSAGE:
                target.send(frame)
                return None
            held.append(frame)
            if packet is None:
                return None  # attachments are still to come
            frames = list(held)
            held.clear()
            result = _intercepted(session, packet, from_client)
            if result is False:
                for f in frames:
                    target.send(f)
                return None
            return result

        return on_message

    ws.on_message(side(True))
    server.on_message(side(False))


def _intercepted(session: _Session, packet: Packet, from_client: bool) -> Any:
    """What a route does with a packet of an intercept: False to forward it."""
    ns = session.namespaces.get(packet.namespace)
    if packet.type is SIO.EVENT and ns is not None:
        handlers = ns.events if from_client else ns.server_events
        return session._event(packet, handlers, to_server=not from_client, mock=False)
    if packet.type is SIO.ACK:
        acks = session.server_acks if from_client is False else session.acks
        callback = acks.pop(packet.id or 0, None)
        if callback is not None:
            return callback(*packet.data)
    if packet.type is SIO.CONNECT and from_client and ns is not None and ns.on_connect:
        result = ns.on_connect(packet.namespace, packet.data)
        if result is False:
            session.send_sio(
                Packet(SIO.CONNECT_ERROR, packet.namespace, {"message": "Connection rejected"})
            )
            return None
        return False
    return False


@overload
def route_socket_io(
    url: URLMatch,
    handler: None = None,
    *,
    namespace: str = "/",
    ping_interval: float = 25.0,
    ping_timeout: float = 20.0,
) -> Callable[[SocketIOHandler], SocketIOHandler]: ...
@overload
def route_socket_io(
    url: URLMatch,
    handler: SocketIOHandler,
    *,
    namespace: str = "/",
    ping_interval: float = 25.0,
    ping_timeout: float = 20.0,
) -> None: ...
def route_socket_io(
    url: URLMatch,
    handler: SocketIOHandler | None = None,
    *,
    namespace: str = "/",
    ping_interval: float = 25.0,
    ping_timeout: float = 20.0,
) -> Callable[[SocketIOHandler], SocketIOHandler] | None:
    """Route the Socket.IO clients whose URL matches `url` (matched against the ``ws(s)://``
    URL, a polling request's ``http(s)://`` URL as its ``ws(s)://`` form) to `handler`,
    called with a `SocketIORoute` per client. Call it from a route script; without `handler`
    it is a decorator.

    A mock speaks Engine.IO v4 itself: the open packet, pings every `ping_interval` seconds
    (a client that does not answer within `ping_timeout` is disconnected), the upgrade probe,
    and HTTP long-polling, so that default clients (polling, then upgrade) and websocket-only
    clients both connect with no server behind the proxy.
    """
    collector = script_collector("route_socket_io")
    return socket_io_registrar(
        url,
        handler,
        collector.base_url,
        collector.routes.append,
        namespace,
        ping_interval,
        ping_timeout,
    )


def socket_io_registrar(
    url: URLMatch,
    handler: SocketIOHandler | None,
    base_url: str | None,
    add: Callable[[Any], None],
    namespace: str = "/",
    ping_interval: float = 25.0,
    ping_timeout: float = 20.0,
) -> Callable[[SocketIOHandler], SocketIOHandler] | None:
    def register(h: SocketIOHandler) -> SocketIOHandler:
        endpoint = _Endpoint(h, namespace, ping_interval, ping_timeout)
        registrar(url, endpoint, base_url, add)
        return h

    if handler is None:
        return register
    register(handler)
    return None
