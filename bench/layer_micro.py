"""The routed layer alone against mitmproxy's own `WebsocketLayer`: µs per 32 B message.

No sockets and no addons: events go straight into the layer and its hooks are answered at
once, so this isolates what our per-message Python costs over mitmproxy's (an intercept
without handlers, client to server). Used by run.py; runs alone too.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import wsproto
import wsproto.events as wse
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketData

from mitm_wsroute import layer as routed
from mitm_wsroute.connection import Connection
from mitm_wsroute.route import WebSocketRoute


def make(route: bool) -> layer.Layer:
    flow = tflow.twebsocketflow(messages=False)
    flow.websocket = WebSocketData()
    options = SimpleNamespace(
        wsroute_max_message_size=1 << 27, wsroute_keep_messages=1000, wsroute_message_hooks=True
    )
    cls = routed._ORIGINAL
    if route:
        connection = Connection("ws://example.com/ws", [])
        WebSocketRoute(connection).connect_to_server()
        routed.routed_socket(flow, routed.RoutedSocket(connection, lambda h, a, u: h(*a), print))
        cls = routed.RoutedWebsocketLayer
    context = Context(flow.client_conn, options)  # type: ignore[arg-type]
    context.server = flow.server_conn
    return cls(context, flow)


def feed(lay: layer.Layer, event: events.Event) -> None:
    pending = [event]
    while pending:
        for command in lay.handle_event(pending.pop(0)):
            if isinstance(command, commands.StartHook):
                pending.append(events.HookCompleted(command))


def us_per_message(route: bool, n: int = 20000) -> float:
    lay = make(route)
    feed(lay, events.Start())
    frame = wsproto.Connection(wsproto.ConnectionType.CLIENT).send(wse.TextMessage("x" * 32))
    messages = lay.flow.websocket.messages  # type: ignore[attr-defined]
    t = time.perf_counter()
    for _ in range(n):
        feed(lay, events.DataReceived(lay.context.client, frame))
        if len(messages) > 2000:  # what the routed layer does itself, for a fair comparison
            del messages[:-1000]
    return (time.perf_counter() - t) / n * 1e6


def best_of(route: bool, runs: int = 5) -> float:
    return min(us_per_message(route) for _ in range(runs))


if __name__ == "__main__":
    print(f"mitmproxy's layer: {best_of(False):.1f} µs, routed layer: {best_of(True):.1f} µs")
