"""The layer's retention of messages in the flow (a property), and route calls from other
threads handed to the loop that owns the socket."""

from __future__ import annotations

import asyncio
import gc
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import exceptions, websocket
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import websocket as wsl
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketData
from wsproto.frame_protocol import Opcode

from mitm_wsroute import layer
from mitm_wsroute.addon_hooks import MessageHooks, message_hooks
from mitm_wsroute.codec import Codec
from mitm_wsroute.connection import (
    PAGE,
    SERVER,
    CallHandler,
    Close,
    CloseSide,
    Error,
    RoutedConnection,
    Send,
    StartCloseTimer,
    State,
)
from mitm_wsroute.layer import RoutedWebsocketLayer
from mitm_wsroute.route import WebSocketRoute
from tests.layer_harness import EVENTS, INTERCEPT, OWN, Harness, Sender


@given(
    sizes=st.lists(st.integers(0, 9), max_size=300),
    keep=st.integers(0, 50),
    budget=st.integers(1, 40),
)
def test_retention_is_bounded_and_keeps_the_newest(
    sizes: list[int], keep: int, budget: int
) -> None:
    flow = SimpleNamespace(websocket=SimpleNamespace(messages=[]))
    layer = SimpleNamespace(flow=flow, keep_messages=keep, kept_bytes=0, keep_bytes=budget)
    for i, size in enumerate(sizes):
        message = websocket.WebSocketMessage(Opcode.BINARY, True, bytes([i % 256]) * size)
        RoutedWebsocketLayer._keep(layer, message)  # type: ignore[arg-type]
    kept = flow.websocket.messages
    if keep == 0 or not sizes:
        assert len(kept) == len(sizes)
        return
    assert kept[-1].content == bytes([(len(sizes) - 1) % 256]) * sizes[-1]  # the newest, always
    assert len(kept) < 2 * keep
    assert len(kept) == 1 or sum(len(m.content) for m in kept) <= 2 * budget
    assert layer.kept_bytes == sum(len(m.content) for m in kept)
    every = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    assert [m.content for m in kept] == every[len(every) - len(kept) :]  # the newest, in order


# --- route calls from any thread: handed to the loop that owns the socket -------------------------


class LoopThread:
    """A real event loop on a thread of its own, owning one routed socket whose layer is faked:
    each injected wake-up is handled on the loop, draining the connection like the layer does."""

    def __init__(self, connected: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connection = RoutedConnection("ws://h/ws", [])
        self.route = WebSocketRoute(self.connection)
        self.server = self.route.connect_to_server() if connected else None
        self.connection.receive_open()
        self.connection.commands_to_execute()
        self.injected = 0
        self.drained: list[Any] = []
        self.socket = layer.RoutedSocket(self.connection, lambda h, a, url: h(*a), self.inject)
        self.flow = tflow.twebsocketflow()
        self.on_loop(lambda: layer.routed_socket(self.flow, self.socket))
        self.socket.layer_started = True

    def inject(self, event: Any) -> None:
        assert isinstance(event, layer.RouteWakeup)
        self.injected += 1
        self.loop.call_soon(self.handle_wakeup)

    def handle_wakeup(self) -> None:  # what RoutedWebsocketLayer.relay_messages does
        self.socket.wakeup_pending = False
        self.drained += self.connection.commands_to_execute()

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the loop and wait for its result (and for what it scheduled)."""

        async def run() -> Any:
            result = fn()
            for _ in range(3):  # the wake-up it scheduled, then the event it injected
                await asyncio.sleep(0)
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def owner() -> Iterator[LoopThread]:
    t = LoopThread()
    yield t
    if not t.loop.is_closed():
        t.stop()


def test_sends_from_another_thread_keep_order_per_side(owner: LoopThread) -> None:
    assert owner.server is not None
    for i in range(1000):
        owner.route.send(f"p{i}")
        owner.server.send(b"s%d" % i)
    owner.on_loop(lambda: None)  # everything handed over before this ran before it
    pages = [c.message for c in owner.drained if c.to is PAGE]
    servers = [c.message for c in owner.drained if c.to is SERVER]
    assert pages == [f"p{i}" for i in range(1000)]
    assert servers == [b"s%d" % i for i in range(1000)]


def test_a_burst_on_the_loop_is_one_wakeup(owner: LoopThread) -> None:
    def burst() -> None:
        for i in range(100):
            owner.route.send(str(i))
        owner.route.close(code=4000, reason="bye")
        assert owner.drained == []  # not carried out inside the route call

    owner.on_loop(burst)
    assert owner.injected == 1
    assert owner.drained[:100] == [Send(PAGE, str(i)) for i in range(100)]
    assert owner.drained[100:] == [
        CloseSide(PAGE, Close(4000, "bye")),
        StartCloseTimer(PAGE),
        CloseSide(SERVER, Close(4000, "bye")),
        StartCloseTimer(SERVER),
    ]


def test_handlers_and_close_from_another_thread_come_in_call_order(owner: LoopThread) -> None:
    log: list[Any] = []
    owner.route.send("before")
    owner.route.on_close(lambda code, reason: log.append((code, reason)))
    owner.route.close(code=4001, reason="from a thread")
    owner.route.send("after")  # the page is closed by then: ignored
    owner.on_loop(lambda: None)
    assert owner.drained == [
        Send(PAGE, "before"),
        CloseSide(PAGE, Close(4001, "from a thread")),
        StartCloseTimer(PAGE),
        CallHandler(owner.connection.handlers[PAGE].close, (4001, "from a thread")),  # type: ignore[arg-type]
    ]
    assert owner.connection.states[SERVER] is State.OPEN  # the page's on_close took it over


def test_bad_arguments_raise_in_the_calling_thread(owner: LoopThread) -> None:
    with pytest.raises(TypeError, match=r"str or a bytes-like object .*, not int"):
        owner.route.send(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lone surrogate"):
        owner.route.send("\ud800")
    with pytest.raises(ValueError, match="close code 1006 cannot be sent"):
        owner.route.close(code=1006)
    with pytest.raises(Error, match="from the route handler, on the proxy's thread"):
        owner.route.connect_to_server()
    owner.on_loop(lambda: None)
    assert owner.drained == []


def test_a_buffer_sent_from_another_thread_is_copied_at_the_call(owner: LoopThread) -> None:
    buffer = bytearray(b"abc")
    owner.route.send(buffer)
    buffer[:] = b"XYZ"  # the caller reuses its buffer before the loop runs the send
    owner.on_loop(lambda: None)
    assert owner.drained == [Send(PAGE, b"abc")] and type(owner.drained[0].message) is bytes


def test_a_failed_wakeup_never_leaves_the_socket_deaf(owner: LoopThread) -> None:
    fail = [True]
    inject = owner.inject

    def flaky(event: Any) -> None:
        if fail.pop(0) if fail else False:
            raise ValueError("Flow is not from a live connection.")
        inject(event)

    owner.socket.inject = flaky
    owner.route.send("lost wake-up")
    owner.on_loop(lambda: None)
    assert owner.drained == [] and not owner.socket.wakeup_pending
    owner.route.send("next")  # wakes the layer again, which drains both
    owner.on_loop(lambda: None)
    assert owner.drained == [Send(PAGE, "lost wake-up"), Send(PAGE, "next")]


def test_a_call_after_the_proxy_stopped_is_a_clear_error(owner: LoopThread) -> None:
    owner.stop()
    with pytest.raises(Error, match=r"send\(\) on ws://h/ws not done: the proxy is not running"):
        owner.route.send("too late")
    with pytest.raises(Error, match=r"close\(\) on ws://h/ws not done"):
        owner.route.close()


# --- reading: a frame that comes in many reads -------------------------------------------------


def mock_layer() -> tuple[RoutedWebsocketLayer, list[Any]]:
    """A started layer of a mock whose page-side handler records what it gets."""
    flow = tflow.twebsocketflow(messages=False)
    flow.websocket = None
    connection = RoutedConnection("ws://h/ws", [])
    got: list[Any] = []
    WebSocketRoute(connection).on_message(got.append)
    layer.routed_socket(flow, layer.RoutedSocket(connection, lambda h, a, url: h(*a), print))
    flow.websocket = WebSocketData()
    options = SimpleNamespace(
        wsroute_max_message_size=0,
        wsroute_keep_messages=10,
        wsroute_message_hooks=True,
        wsroute_close_timeout_ms=5000,
    )
    ctx = Context(flow.client_conn, options)  # type: ignore[arg-type]
    ctx.server = flow.server_conn
    routed = RoutedWebsocketLayer(ctx, flow)
    feed(routed, events.Start())
    return routed, got


def feed(routed: RoutedWebsocketLayer, event: events.Event) -> None:
    """Run the layer on `event`, its hooks answered at once."""
    pending = [event]
    while pending:
        for command in routed.handle_event(pending.pop(0)):
            if isinstance(command, commands.StartHook):
                pending.append(events.HookCompleted(command))


def test_a_frame_in_many_small_reads() -> None:
    routed, got = mock_layer()
    client = Codec(server=False)  # writes as a client does: masked
    frame = client.message(b"\x07" * 200_000) + client.message("next")
    for i in range(0, len(frame), 64):
        feed(routed, events.DataReceived(routed.context.client, frame[i : i + 64]))
    assert got == [b"\x07" * 200_000, "next"] and type(got[0]) is bytes


# --- other addons' message hooks, called by the layer ----------------------------------------


def test_message_hooks_are_the_sync_handlers_in_chain_order() -> None:
    log: list[Any] = []

    class Sync:
        def websocket_message(self, flow: Any) -> None:
            log.append(("message", flow))

    class Halting:
        def websocket_message(self, flow: Any) -> None:
            raise exceptions.AddonHalt

        def update(self, flows: Any) -> None:
            log.append(("update", flows))

    class Nested:  # mitmproxy walks an addon's addons too
        def __init__(self) -> None:
            self.addons = [Sync()]

    class Ours:
        def websocket_message(self, flow: Any) -> None:
            raise AssertionError("skipped")

    ours = Ours()
    hooks = message_hooks(SimpleNamespace(chain=[ours, Nested(), Halting(), Sync()]), skip=ours)
    assert hooks is not None and len(hooks.message) == 3 and len(hooks.update) == 1
    flow = tflow.twebsocketflow()
    assert hooks.call(flow) is False
    # the halt stops the other message handlers; update runs, as in mitmproxy
    assert log == [("message", flow), ("update", [flow])]
    flow.intercept()
    assert hooks.call(flow) is True


def test_an_async_hook_leaves_messages_to_mitmproxy() -> None:
    class Async:
        async def update(self, flows: Any) -> None:
            pass

    class AsyncCall:
        async def __call__(self, flow: Any) -> None:
            pass

    class Holder:
        websocket_message = AsyncCall()

    assert message_hooks(SimpleNamespace(chain=[Async()]), skip=None) is None
    assert message_hooks(SimpleNamespace(chain=[Holder()]), skip=None) is None


@pytest.mark.parametrize("io", [EVENTS, OWN])
def test_text_an_addon_makes_no_utf8_goes_on_with_replacement_characters(io: str) -> None:
    # An intercept forwards what another addon's hook made of a text message, and sends what
    # one injects; bytes that are no UTF-8 are replaced (U+FFFD), as mitmproxy's own layer
    # does, rather than crashing the socket.
    class Garble:
        def websocket_message(self, flow: Any) -> None:
            flow.websocket.messages[-1].content = b"ok \xff\xfe ok"

    with Harness(mode=INTERCEPT, io=io, hooks=True) as h:
        for side in (PAGE, SERVER):
            h.connection.handlers[side].message = None
        h.socket.hooks = message_hooks(SimpleNamespace(chain=[Garble()]), skip=None)
        sender = Sender(PAGE, False)
        h.receive(PAGE, sender.data(Opcode.TEXT, b"hello", True))
        h.receive(PAGE, sender.data(Opcode.TEXT, b"again", True))
        assert h.peer_messages[SERVER] == ["ok \ufffd\ufffd ok"] * 2
        injected = websocket.WebSocketMessage(Opcode.TEXT, False, b"\xffto the client")
        h.feed(wsl.WebSocketMessageInjected(h.flow, injected))  # ``inject.websocket``
        assert h.peer_messages[PAGE] == ["\ufffdto the client"]
        assert h.peer_closes == {PAGE: [], SERVER: []}


def test_an_error_in_a_hook_is_logged_and_the_rest_run(caplog: pytest.LogCaptureFixture) -> None:
    seen = []

    def broken(flow: Any) -> None:
        raise ValueError("addon bug")

    hooks = MessageHooks((broken, seen.append), (broken,))
    hooks.call(tflow.twebsocketflow())
    assert len(seen) == 1 and "Addon error: addon bug" in caplog.text
    errors = [r for r in caplog.records if r.getMessage() == "Addon error: addon bug"]
    assert len(errors) == 2  # the message hook's, then the update hook's
    for record in errors:
        assert record.exc_info is not None
        frames = traceback.extract_tb(record.exc_info[2])
        assert frames[-1].name == "broken"  # the addon's own code, where it raised


def test_an_ended_socket_is_freed() -> None:
    # `_routed` holds a flow's socket (and so its connection) while the flow lives: nothing
    # the connection holds may keep the layer, which holds the flow, alive.
    routed, got = mock_layer()
    layer_ref, flow_ref = weakref.ref(routed), weakref.ref(routed.flow)
    feed(routed, events.ConnectionClosed(routed.context.client))
    assert routed.ended
    del routed
    gc.collect()
    assert layer_ref() is None and flow_ref() is None
