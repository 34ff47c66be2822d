"""Reading and writing a routed socket's connections in the layer, without mitmproxy's event
machinery (`layer.RoutedWebsocketLayer._own_io`): where it may (`why_not_own`), the TLS layer
whose connection it then drives (`tls_of`), and the asyncio protocol it puts on a connection's
transport (`Reader`). `own_io_problems` says what of mitmproxy's and asyncio's internals it
needs and finds missing; `install` (in `patches`) sets `ok` from it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from mitmproxy.connection import ConnectionState as ConnectionFlags
from mitmproxy.proxy import events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers import tls as tls_layers
from mitmproxy.proxy.layers.http import HttpClient, HttpLayer, HttpStream
from mitmproxy.proxy.layers.http._http1 import Http1Client

from .connection import Side
from .transport import TlsTransport

__all__ = ["Reader", "names_used", "own_io_problems", "tls_of", "why_not_own"]

#: Routed sockets may be read and written by their layer (`patches.install` checks).
ok = False


class Owner(Protocol):
    """The layer, as a `Reader` sees it."""

    conns: tuple[Any, Any]

    def _fast_receive(self, event: events.DataReceived | events.ConnectionClosed) -> None: ...
    def _write_paused(self, side: Side, paused: bool) -> None: ...


#: The layers that may sit above a routed socket whose connections the layer reads itself:
#: none of them changes the bytes but the client's TLS, which the layer then drives itself.
_PLAIN_LAYERS = (
    layer.NextLayer,
    modes.HttpProxy,
    modes.ReverseProxy,
    modes.TransparentProxy,
    modes.Socks5Proxy,
    HttpLayer,
    HttpStream,
    tls_layers.ClientTLSLayer,
    tls_layers.ServerTLSLayer,
)


def why_not_own(context: Context, handler: Any) -> str | None:
    """Why the layer must leave its connections to mitmproxy (`_own_io`), if it must."""
    if not ok:
        return "its internals differ: see the warning at start-up"
    if handler is None:
        return "no connection handler"
    if context.server.via is not None:
        return "upstream proxy"
    for above in context.layers[:-1]:
        if not isinstance(above, _PLAIN_LAYERS):
            return f"{type(above).__name__} layer"
    for conn in (context.client, context.server):
        if conn.tls and tls_of(context, conn) is None:
            return f"TLS of the {'client' if conn is context.client else 'server'} not found"
    return None


def tls_of(context: Context, conn: Any) -> tls_layers.TLSLayer | None:
    """The TLS layer of `conn`, a connection of the routed socket, if it has TLS: a layer
    above ours (a CONNECT tunnel's, reverse mode's), or for a server that the HTTP layer
    connected itself, the first of the layers it keeps for it (then directly over its HTTP/1
    layer, which passes a WebSocket's bytes on as they are)."""
    if not conn.tls:
        return None
    for above in context.layers:
        if isinstance(above, tls_layers.TLSLayer) and above.conn is conn:
            return above
    for above in reversed(context.layers):
        if isinstance(above, HttpLayer):
            first = above.connections.get(conn)
            if not isinstance(first, tls_layers.ServerTLSLayer) or first.conn is not conn:
                return None
            below: Any = first.child_layer
            if isinstance(below, HttpClient):
                below = getattr(below, "child_layer", None)
            return first if isinstance(below, Http1Client) else None
    return None


class Reader(asyncio.Protocol):
    """A routed socket's connection's protocol, in place of mitmproxy's stream reader
    (`layer.RoutedWebsocketLayer._own_io`): data goes to the layer at once (decrypted first, under
    TLS); the end of the stream and flow control also go on to mitmproxy's protocol, which
    handles them as before."""

    def __init__(
        self,
        owner: Owner,
        side: Side,
        original: asyncio.StreamReaderProtocol,
        transport: asyncio.Transport | TlsTransport,
    ) -> None:
        self.owner = owner
        self.side = side
        self.original = original
        self.tls = transport if isinstance(transport, TlsTransport) else None

    def data_received(self, data: bytes) -> None:
        conn = self.owner.conns[self.side]
        if self.tls is None:
            self.owner._fast_receive(events.DataReceived(conn, data))
            return
        data, closed = self.tls.decrypt(data)
        if data:
            self.owner._fast_receive(events.DataReceived(conn, data))
        if closed:
            # The peer's close_notify: mitmproxy's TLS layer, which saw it consumed, will not
            # report the end of the stream; the layer tells itself, as that layer would have.
            conn.state &= ~ConnectionFlags.CAN_READ
            self.owner._fast_receive(events.ConnectionClosed(conn))

    def eof_received(self) -> bool | None:
        return self.original.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.original.connection_lost(exc)

    def pause_writing(self) -> None:
        self.original.pause_writing()
        self.owner._write_paused(self.side, True)

    def resume_writing(self) -> None:
        self.original.resume_writing()
        self.owner._write_paused(self.side, False)


def names_used(function: object) -> tuple[str, ...]:
    """The global and attribute names `function`'s code refers to; none if it has no code."""
    code = getattr(function, "__code__", None)
    return tuple(getattr(code, "co_names", ()))


def own_io_problems() -> list[str]:
    """What `RoutedWebsocketLayer._own_io` needs of mitmproxy's connection handling and of
    asyncio's streams, and is missing here: while any is, mitmproxy reads every socket."""
    from mitmproxy.addons.proxyserver import Proxyserver
    from mitmproxy.proxy.server import ConnectionHandler, TimeoutWatchdog

    problems = []
    for function, names in (
        (ConnectionHandler.__init__, ("transports", "timeout_watchdog", "_server_event_lock")),
        (asyncio.Lock.__init__, ("_waiters",)),
        (Proxyserver.inject_event, ("connections",)),
        (layer.Layer.__init__, ("_paused", "_paused_event_queue")),
        (HttpLayer.__init__, ("connections",)),
        (asyncio.StreamReader.__init__, ("_buffer",)),
        (asyncio.streams.FlowControlMixin.__init__, ("_paused",)),
    ):
        used = names_used(function)
        problems += [f"{function.__qualname__} uses no {n}" for n in names if n not in used]
    if not issubclass(asyncio.StreamReaderProtocol, asyncio.streams.FlowControlMixin):
        problems.append("StreamReaderProtocol is no FlowControlMixin")
    for owner, name in (
        (TimeoutWatchdog, "register_activity"),
        (asyncio.Transport, "set_protocol"),
        (tls_layers.TLSLayer, "tls"),
        (tls_layers.TLSLayer, "tunnel_state"),
    ):
        if not hasattr(owner, name):
            problems.append(f"{owner.__name__}.{name} missing")
    return problems
