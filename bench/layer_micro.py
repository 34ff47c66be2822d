"""The routed layer alone against mitmproxy's own `WebsocketLayer`: µs per 32 B message.

No sockets and no addons: events go straight into the layer and its hooks are answered at
once, so this isolates what our per-message Python costs over mitmproxy's (an intercept
without handlers, client to server). Used by run.py; runs alone too.

Timings on a shared machine move by 20 % from one run to the next, so `compare` interleaves
the two layers and takes the median of per-pair ratios. ``--instructions`` counts CPU
instructions instead, under valgrind's callgrind: the same count on every run, whatever else
the machine does (the difference of two run lengths, so start-up cancels out).
"""

from __future__ import annotations

import gc
import re
import statistics
import subprocess
import sys
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
    gc.collect()
    gc.disable()  # a collection landing in one run only would swamp the difference
    try:
        t = time.perf_counter()
        for _ in range(n):
            feed(lay, events.DataReceived(lay.context.client, frame))
            if len(messages) > 2000:  # what the routed layer does itself, for a fair comparison
                del messages[:-1000]
        return (time.perf_counter() - t) / n * 1e6
    finally:
        gc.enable()


def compare(runs: int = 9) -> tuple[float, float, float]:
    """Median µs per message of mitmproxy's layer and ours, and the median of the ratios of
    back-to-back runs (mitmproxy's time / ours: above 1 means ours is faster)."""
    stock, ours = [], []
    for _ in range(runs):
        stock.append(us_per_message(False))
        ours.append(us_per_message(True))
    ratio = statistics.median(s / o for s, o in zip(stock, ours, strict=True))
    return statistics.median(stock), statistics.median(ours), ratio


def instructions_per_message(route: bool) -> int:
    """CPU instructions per message, counted by callgrind (about a minute per layer)."""

    def count(n: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, __file__, "--run", str(int(route)), str(n)],
            capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "0"},
        ).stderr  # fmt: skip
        return int(re.search(r"Collected : (\d+)", out).group(1))  # type: ignore[union-attr]

    return (count(3000) - count(1000)) // 2000


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        us_per_message(sys.argv[2] == "1", int(sys.argv[3]))
    elif sys.argv[1:2] == ["--instructions"]:
        stock, ours = instructions_per_message(False), instructions_per_message(True)
        print(f"instructions per message: mitmproxy's layer {stock:,}, routed layer {ours:,}")
    else:
        stock, ours, ratio = compare()
        print(f"mitmproxy's layer {stock:.1f} µs, routed layer {ours:.1f} µs, ratio {ratio:.2f}")
