"""A `WebsocketLayer` for routed sockets: where mitmproxy's events meet a socket's decisions.

mitmproxy 12 has no public way to answer a WebSocket without an upstream, to close one side
with a chosen code, or to keep one side open when the other closes (its layer mirrors every
close to both sides, mitmproxy issue 4711). So we subclass `WebsocketLayer` and install it by
rebinding ``mitmproxy.proxy.layers.websocket.WebsocketLayer``, which `HttpStream.flow_done`
looks up at call time. A flow without a route runs mitmproxy's own code, untouched.

For a routed flow the layer feeds what the wire says into the flow's `RoutedConnection` (which
decides), then carries out the commands it drains: data flows one way, wire → connection →
commands → wire. Calls that user code makes outside our events (from an async handler, later)
wake the layer with an injected `RouteWakeup` event, which `HttpLayer` routes by flow like
``inject.websocket``.

The layer also reads and writes a routed socket's connections itself, on their asyncio
transports, driving their TLS where they have it (`RoutedWebsocketLayer._own_io`), and calls
other addons' synchronous ``websocket_message`` and ``update`` hooks itself
(`addon_hooks.MessageHooks`); an addon with an async one leaves every message to mitmproxy's
machinery.

The rest is in files of its own: the frames (`codec`, `deflate`), reading the connections
(`own_io`, `transport`), the other addons' hooks (`addon_hooks`), and what is changed in
mitmproxy at start (`patches`: installing this layer, checking mitmproxy's internals).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mitmproxy import http, websocket
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import websocket as wsl
from mitmproxy.proxy.tunnel import TunnelState
from mitmproxy.proxy.utils import expect
from wsproto.frame_protocol import Opcode

from .addon_hooks import MessageHooks, WaitForResume
from .codec import (
    OPEN,
    REMOTE_CLOSING,
    Close,
    Codec,
    Failure,
    Fragment,
    Ping,
)
from .connection import (
    ABNORMAL_CLOSURE,
    MESSAGE_TOO_BIG,
    PAGE,
    SERVER,
    CallHandler,
    CloseSide,
    CloseTcp,
    Command,
    DropSide,
    End,
    Owner,
    RoutedConnection,
    Send,
    SetLatency,
    Side,
    StartCloseTimer,
    State,
    reported_code,
)
from .deflate import negotiated, relayable
from .latency import Outbox
from .messages import KEEP_BYTES, Piece, Reassembly, cut, trim
from .own_io import Reader, tls_of, why_not_own
from .transport import TlsTransport

__all__ = ["Observer", "RouteWakeup", "RoutedSocket", "RoutedWebsocketLayer", "routed_socket"]

logger = logging.getLogger(__name__)

# Hot-reloading the addon re-imports this module: always subclass mitmproxy's own class.
_ORIGINAL: type[wsl.WebsocketLayer] = getattr(wsl, "_wsroute_original", wsl.WebsocketLayer)

_NO_MESSAGE = websocket.WebSocketMessage(Opcode.TEXT, True, b"")


def _flow_message(
    data: str | bytes, from_client: bool, injected: bool = False
) -> websocket.WebSocketMessage:
    """A message for the flow: mitmproxy's `WebSocketMessage`, its attributes set here rather
    than by its constructor (which converts the opcode through the `Opcode` enum again: half
    of what making one costs, twice per echo). `patches.check_internals` checks that these
    are the attributes its constructor sets."""
    message = _new(_WS_MESSAGE)
    if isinstance(data, str):
        message.type, message.content = Opcode.TEXT, data.encode()
    else:
        message.type, message.content = Opcode.BINARY, data
    message.from_client = from_client
    message.timestamp = time.time()
    message.dropped = False
    message.injected = injected
    return message


def _text_or_bytes(message: websocket.WebSocketMessage) -> str | bytes:
    """What another addon made a message (or injected): its text, where what is no UTF-8 is
    replaced (U+FFFD), as mitmproxy's own layer sends it; or its bytes."""
    return message.content.decode(errors="replace") if message.is_text else message.content


_new = object.__new__
_WS_MESSAGE = websocket.WebSocketMessage

#: The clock of `set_latency()` (asyncio's, which runs the wake-ups; tests replace it).
clock = time.monotonic


class RouteWakeup(wsl.WebSocketMessageInjected):
    """Wakes a routed layer to carry out commands recorded while it was idle.

    A `WebSocketMessageInjected` so that `HttpLayer` routes it by flow, also for a mock, whose
    server connection mitmproxy never opened (it falls back to the client connection).
    """


class _DelayWakeup(commands.RequestWakeup):
    """A wake-up for what waits to be sent to one side (`set_latency`)."""

    def __init__(self, delay: float, side: Side) -> None:
        super().__init__(delay)
        self.side = side


#: What waits for a side: data or a TCP close to send, or the observer to tell.
_Delayed = commands.Command | Callable[[], None]


def _now(item: _Delayed) -> layer.CommandGenerator[None]:
    """Carry out what waited: yield a command, tell the observer."""
    if isinstance(item, commands.Command):
        yield item
    else:
        item()


#: Runs a user handler of a socket with its arguments; returns the task
#: that runs what an async handler returned, if any.
CallUser = Callable[
    [Callable[..., object], tuple[object, ...], "RoutedSocket"], "asyncio.Task[None] | None"
]


class Observer(Protocol):
    """Sees a routed socket as its client does (the test facade records it)."""

    def message(self, sent: bool, data: str | bytes) -> None:
        """A message the client sent (`sent`) or was sent."""

    def closed(self, code: int, reason: str) -> None:
        """The client's side ended: the close frame it sent or got, or 1006 for a drop."""


@dataclass(eq=False)
class RoutedSocket:
    """What the layer needs for one routed flow, set up by the addon before the 101.

    A routed socket is three objects: its `RoutedConnection` (the pure core, which decides),
    this (the socket as the addon and route code reach it: wake-ups, handler calls, tasks,
    the test API's observer), and the `RoutedWebsocketLayer` that mitmproxy makes for the flow
    once the 101 went out (the wire: codecs, the connections, what waits to be written). This
    one cannot be the layer: the route's handler runs in the ``request`` hook, before mitmproxy
    makes the layer, and a socket it rejects there never gets one. It keeps the
    flow weakly, because `_routed` is keyed by the flow and must not keep it alive.
    """

    connection: RoutedConnection
    #: Runs a user handler: logs its exceptions, schedules what it returns if awaitable.
    call_user: CallUser
    #: Hands an event to mitmproxy's connection handler (``Proxyserver.inject_event``).
    inject: Callable[[events.MessageInjected[Any]], None]
    #: The flow, weakly: the flow is the key of `_routed`, which must not keep it alive.
    flow: Callable[[], http.HTTPFlow | None] = lambda: None
    #: An intercept's ``Sec-WebSocket-Extensions`` as the upstream's 101 had it, before other
    #: addons' ``response`` hooks (None: a mock, or not answered yet).
    upstream_extensions: str | None = None
    #: The layer is handling an event: it drains the connection's commands at its end.
    busy: bool = False
    #: A `RouteWakeup` is scheduled or on its way; later commands ride with it.
    wakeup_pending: bool = False
    layer_started: bool = field(default=False)
    observer: Observer | None = None
    #: Tells other addons that the flow changed (mitmproxy's ``update`` hook).
    on_update: Callable[[http.HTTPFlow], None] | None = None
    #: Tells other addons soon (coalesced) that the flow has new route-sent messages.
    update_soon: Callable[[http.HTTPFlow], None] | None = None
    #: Tasks of async handlers still running; cancelled when the socket ends.
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Runs a callable after the current one, on the proxy's loop (``loop.call_soon``); set by
    #: `routed_socket` (at once when there is no running loop, as in layer tests).
    schedule: Callable[[Callable[[], None]], object] = lambda fn: fn()
    #: mitmproxy's ``proxyserver`` addon, whose connection handlers own the sockets' streams
    #: (`RoutedWebsocketLayer._own_io`); None: the layer never reads or writes them itself.
    proxyserver: object | None = None
    #: The proxy's event loop (set by `routed_socket`), where `drain()` waits.
    loop: asyncio.AbstractEventLoop | None = None
    #: The other addons' ``websocket_message`` and ``update`` hooks, when the layer may call
    #: them itself (all synchronous); None: each message goes through mitmproxy's machinery.
    hooks: MessageHooks | None = None

    def wake(self) -> None:
        """Called by the connection for every command recorded, on the proxy's thread: wakes
        an idle layer once per burst. The wake-up runs after the caller's current step (a task
        up to its next ``await``), so a burst of sends is carried out by one layer event, and
        user code never runs the layer from inside a route call."""
        if self.busy or self.wakeup_pending or not self.layer_started:
            return  # the layer drains at the end of the event it is handling, or at start
        self.wakeup_pending = True
        self.schedule(self._inject_wakeup)

    def _inject_wakeup(self) -> None:
        if not self.inject_wakeup():
            self.wakeup_pending = False  # never stay pending: a later command must wake it again

    def inject_wakeup(self) -> bool:
        """Send the layer a `RouteWakeup`; False if the socket is gone."""
        flow = self.flow()
        try:
            if flow is None:
                raise ValueError("the flow is gone")
            self.inject(RouteWakeup(flow, _NO_MESSAGE))
        except Exception as e:  # ValueError: "Flow is not from a live connection."
            logger.debug(f"{self.connection.url}: cannot wake the layer ({e}); socket gone?")
            return False
        return True


_routed: weakref.WeakKeyDictionary[http.HTTPFlow, RoutedSocket] = weakref.WeakKeyDictionary()


def routed_socket(flow: http.HTTPFlow, socket: RoutedSocket | None = None) -> RoutedSocket | None:
    """Attach `socket` to `flow` (when given) and return what is attached."""
    if socket is not None:
        socket.flow = weakref.ref(flow)
        socket.connection.wakeup = socket.wake
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (layer tests): wake-ups are injected at once
            pass
        else:  # the proxy's loop owns the socket; route calls from other threads go through it
            socket.loop = loop
            socket.schedule = loop.call_soon
            socket.connection.owner = Owner(threading.get_ident(), loop.call_soon_threadsafe)
        _routed[flow] = socket
    return _routed.get(flow)


def _weakly[T](method: Callable[[Side], T], gone: T) -> Callable[[Side], T]:
    """`method` of an object that it does not keep alive: `gone` once that object is."""
    ref = weakref.WeakMethod(method)

    def call(side: Side) -> T:
        bound = ref()
        return gone if bound is None else bound(side)

    return call


class RoutedWebsocketLayer(_ORIGINAL):  # type: ignore[misc,valid-type]
    """mitmproxy's `WebsocketLayer`, with Playwright's semantics for routed flows."""

    socket: RoutedSocket | None
    #: Each side's frames, and its connection, by `Side`.
    codecs: tuple[Codec, Codec]
    conns: tuple[Any, Any]

    def __init__(self, context: Context, flow: http.HTTPFlow) -> None:
        super().__init__(context, flow)
        self.socket = _routed.get(flow)
        self.reassembly = {PAGE: Reassembly(), SERVER: Reassembly()}
        #: The close timers running, by the wake-up each asked for.
        self.close_timers: dict[commands.RequestWakeup, Side] = {}
        #: What waits to be sent to each side, once a route called `set_latency()`.
        self.delays: Outbox[_Delayed] | None = None
        self.delay_timers: list[_DelayWakeup | None] = [None, None]  # the latest, by side
        if self.socket is not None:  # read once: options are slow to read per message
            self.close_timeout: float = context.options.wsroute_close_timeout_ms / 1000
            self.max_message_size: int = context.options.wsroute_max_message_size
            self.keep_messages: int = context.options.wsroute_keep_messages
            self.kept_bytes = 0
            self.keep_bytes = KEEP_BYTES
            self.message_hooks: bool = context.options.wsroute_message_hooks
            self.route_sent = False  # a route-sent message was recorded in this event
        #: The transports the layer reads and writes itself (`_own_io`), by `id` of connection.
        self.transports: dict[int, asyncio.Transport | TlsTransport] = {}
        #: What waits for mitmproxy's event machinery, oldest first (`_fast_receive`).
        self.backlog: collections.deque[_Backlogged] = collections.deque()
        self.backlog_wakeup = False  # a `RouteWakeup` for the backlog is on its way
        self.write_paused: set[Side] = set()  # sides whose transport's buffer is full
        #: mitmproxy's handler of this client's connections, once the layer owns one of them.
        self.handler: Any = None
        #: The streams the sides' data is written to, and their transports, once looked up
        #: (`_writer`).
        self.out: list[asyncio.StreamWriter | None] = [None, None]
        self.out_transports: list[asyncio.WriteTransport | None] = [None, None]
        #: `drain()` calls waiting for the commands recorded before them to be carried out.
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.to_own = False  # a connection waits to become the layer's (`_own_io`)
        self.ended = False

    @expect(events.Start)
    def start(self, event: events.Event) -> layer.CommandGenerator[None]:
        yield from super().start(event)  # wsproto connections, websocket_start hook
        if self.socket is None:
            self._handle_event = super().relay_messages  # unrouted: mitmproxy's code, as is
            return
        connection = self.socket.connection
        assert self.flow.response is not None
        # What the client got (another addon may have changed the 101), and the upstream's own.
        extensions = self.flow.response.headers.get("Sec-WebSocket-Extensions", "")
        upstream = self.socket.upstream_extensions
        if upstream is None:
            upstream = extensions
        elif upstream != extensions:
            logger.info(
                f"{connection.url}: the client got extensions {extensions!r}, the upstream "
                f"agreed on {upstream!r}: each side's messages are compressed as it agreed"
            )
        limit = self.max_message_size
        page = Codec(True, negotiated(extensions, server=True), limit)
        server = Codec(False, negotiated(upstream, server=False), limit)
        if connection.states[SERVER] is State.CONNECTING:  # an intercept: relayed both ways?
            page.relay = relayable(server.deflate, page.deflate)
            server.relay = relayable(page.deflate, server.deflate)
        else:  # a mock: nothing to pass on
            page.relay = server.relay = False
        self.codecs = (page, server)
        self.conns = (self.context.client, self.context.server)
        self.socket.layer_started = True
        # weakly: `_routed` holds the connection as long as the flow lives, the layer the flow
        connection.written = _weakly(self._written, 0)
        connection.drainer = _weakly(self._drainer, None)
        connection.receive_open()
        self.socket.busy = True
        yield from self._drain()
        self.socket.busy = False
        if not self.message_hooks or self.socket.hooks is not None:
            self._own_io()

    _handle_event = start

    @expect(
        events.DataReceived, events.ConnectionClosed, wsl.WebSocketMessageInjected, events.Wakeup
    )
    def relay_messages(self, event: events.Event) -> layer.CommandGenerator[None]:
        """An event from mitmproxy: after what waits in the backlog, if anything (`_own_io`)."""
        if self.backlog:
            yield from self._flush_backlog()
            if self.ended:
                return
        yield from self._relay(event)
        if self.to_own:
            self._own_io()

    def _relay(self, event: events.Event) -> layer.CommandGenerator[None]:
        assert self.socket is not None
        self.socket.busy = True
        # This event drains every command: a wake-up on its way is not needed any more, and one
        # that got lost (its flow was being torn down) must not leave the socket deaf.
        self.socket.wakeup_pending = False
        if isinstance(event, events.ConnectionEvent):  # the common case first: this is per message
            side = PAGE if event.connection is self.context.client else SERVER
            yield from self._receive(side, event)
        elif isinstance(event, RouteWakeup):
            yield from self._drain_and_update()
        elif isinstance(event, events.Wakeup):
            if isinstance(event.command, _DelayWakeup):
                yield from self._due(event.command)
            elif event.command in self.close_timers:
                side = self.close_timers.pop(event.command)
                logger.debug(f"{self.socket.connection.url}: the {side}'s close timer ran out")
                self.socket.connection.receive_close_timeout(side)
        else:
            assert isinstance(event, wsl.WebSocketMessageInjected)
            if self.socket.connection.has_commands:  # what the route sent before goes first
                yield from self._drain()
            yield from self._injected(event.message)
        if self.socket.connection.has_commands:
            yield from self._drain()
        if self.route_sent:
            # Route-sent messages fire no websocket_message hook: an update hook tells other
            # addons (mitmweb) about them; coalesced, since a reply per message is common.
            self.route_sent = False
            if self.message_hooks and self.socket.update_soon is not None:
                self.socket.update_soon(self.flow)
        self.socket.busy = False

    def _drain_and_update(self) -> layer.CommandGenerator[None]:
        """Carry out what route code recorded outside our events (a task, another thread); if
        it sent messages, tell other addons (mitmweb shows them at once): no
        ``websocket_message`` hook fires for route-sent messages."""
        assert self.socket is not None and self.flow.websocket is not None
        messages = self.flow.websocket.messages
        newest = messages[-1] if messages else None
        yield from self._drain()
        if messages and messages[-1] is not newest and self.socket.on_update is not None:
            self.socket.on_update(self.flow)
            self.route_sent = False

    def _receive(self, side: Side, event: events.ConnectionEvent) -> layer.CommandGenerator[None]:
        assert self.socket is not None
        connection = self.socket.connection
        codec = self.codecs[side]
        if isinstance(event, events.DataReceived):
            reassembly, limit = self.reassembly[side], self.max_message_size
            for ev in codec.receive(event.data):
                if connection.has_commands:
                    # What the route sent for what came before goes first, before this
                    # event's own frames (a close's echo, a pong): as if each came in a read
                    # of its own.
                    yield from self._drain()
                if isinstance(ev, Fragment):  # per message: first
                    data = ev.data
                    if (
                        ev.message_finished
                        and not reassembly.pieces
                        and (not limit or len(data) <= limit)
                        and connection.states[side] is State.OPEN
                    ):  # a whole message in one frame, the common case: `_piece`, inline
                        deflated = None if ev.deflated is None else [ev.deflated]
                        yield from self._message(side, data, deflated)
                    elif not (yield from self._piece(side, ev)):
                        return  # the side failed (1009): what came after it gets no answer
                elif isinstance(ev, Close):
                    yield from self._close_received(side, ev)
                elif isinstance(ev, Failure):
                    logger.info(f"{connection.url}: failing the {side}: {ev.code} {ev.reason}")
                    connection.receive_failure(side, ev.code, ev.reason[:123])
                else:  # a ping or a pong: forwarded, or a ping answered
                    to = connection.ping_goes_to(side)
                    ping = isinstance(ev, Ping)
                    if to is not None:
                        out = self.codecs[to]
                        frame = out.ping(ev.payload) if ping else out.pong(ev.payload)
                        yield from self._out(commands.SendData(self.conns[to], frame), data=True)
                    elif ping and codec.state is OPEN:
                        frame = codec.pong(ev.payload)
                        yield from self._out(commands.SendData(self.conns[side], frame), data=True)
            return
        codec.fail()  # the connection ended: our end closes when the connection says (CloseTcp)
        if self.delays is not None:
            self.delays.forget(side)
        if side is PAGE:
            self._observe((ABNORMAL_CLOSURE, ""))
        connection.receive_connection_lost(side)

    def _piece(self, side: Side, piece: Piece) -> layer.CommandGenerator[bool]:
        """A piece of a message from `side`: the message once it is whole. False if it made
        the message too big: the side failed, and the codec reads no more."""
        assert self.socket is not None
        connection = self.socket.connection
        if connection.states[side] is not State.OPEN:
            return True  # the route closed this side: what it still sends is dropped
        try:
            relay = self.codecs[side.other].relay  # its compressed payload may be passed on
            message = self.reassembly[side].add(piece, self.max_message_size, relay)
        except OverflowError as e:
            logger.info(f"{connection.url}: failing the {side}: 1009 {e}")
            self.codecs[side].fail()
            connection.receive_failure(side, 1009, str(e))  # RFC 6455 §7.4.1: too big
            yield from self._drain()
            return False
        if message is not None:
            reassembly = self.reassembly[side]  # its compressed payload: taken, not kept on
            deflated, reassembly.deflated = reassembly.deflated or None, []
            if deflated is None and self.codecs[side].compressed:  # too big to keep as it came:
                self.codecs[side.other].relay = False  # the other side's stream differs now
            yield from self._message(side, message, deflated)
        return True

    def _close_received(self, side: Side, close: Close) -> layer.CommandGenerator[None]:
        """The peer's close frame: echoed at once unless ours went first (RFC 6455 §5.5.1)."""
        assert self.socket is not None
        # proxy: Playwright keeps a page that closed CLOSING until the upstream's close is
        # done, and gives it the upstream's code; here each peer's close is answered at once.
        codec = self.codecs[side]
        codec.receive_close()
        if codec.state is REMOTE_CLOSING:
            frame = codec.close(close.code, close.reason)
            yield from self._out(commands.SendData(self.conns[side], frame))
        if side is PAGE:
            self._observe((reported_code(close.code), close.reason))
        self.socket.connection.receive_close(side, close.code, close.reason)

    def _keep(self, message: websocket.WebSocketMessage) -> None:
        """Keep the message in the flow, and of them at most the newest ``wsroute_keep_messages``
        holding at most `KEEP_BYTES` of content (but always the newest message)."""
        assert self.flow.websocket is not None
        messages = self.flow.websocket.messages
        messages.append(message)
        keep = self.keep_messages
        if not keep:
            return
        self.kept_bytes += len(message.content)
        # Trimmed in batches, when either bound is exceeded twice over: amortised O(1).
        if len(messages) >= 2 * keep or self.kept_bytes > 2 * self.keep_bytes:
            self.kept_bytes = trim(messages, keep, self.keep_bytes)

    def _message(
        self, side: Side, data: str | bytes, deflated: list[bytes] | None = None
    ) -> layer.CommandGenerator[None]:
        """A whole message from `side`: kept in the flow, shown to other addons, then forwarded
        or handed to the route, as the connection decides. Per message: keep it lean.

        `deflated`: the message came compressed (permessage-deflate), its frames' payloads so.
        Passed on unchanged, it is written as it came (`Codec.relayed`) while the other side's
        compressed stream is the same as this side's; anything else makes them differ."""
        assert self.socket is not None
        connection = self.socket.connection
        message = _flow_message(data, side is PAGE)
        content = message.content
        self._keep(message)
        if side is PAGE and self.socket.observer is not None:
            self.socket.observer.message(True, data)  # what the client sent
        reassembly = self.reassembly[side]
        frame_sizes = reassembly.frame_sizes
        if frame_sizes:
            reassembly.frame_sizes = []

        to = connection.receive_message(side, data)
        if to is None:
            message.drop()  # consumed by a handler, or dropped by the rules: show it in mitmweb
        if self.message_hooks:  # other addons may modify or drop it
            hooks = self.socket.hooks
            if hooks is None:
                yield wsl.WebsocketMessageHook(self.flow)  # through mitmproxy's machinery
            elif hooks.call(self.flow):
                yield WaitForResume(self.flow)  # an addon intercepted the flow
        if connection.has_commands:  # the handler to call, then what it sent (an echo)
            yield from self._drain()
        if to is None or message.dropped or connection.states[to] is not State.OPEN:
            if deflated is not None:
                self.codecs[side.other].relay = False
            return
        codec = self.codecs[to]
        payload: bytes | None = content
        if message.content is not content:  # modified by another addon
            payload = None
            data = _text_or_bytes(message)
            frame_sizes = []
            if deflated is not None:
                codec.relay = False
                deflated = None
        if deflated is not None and codec.relay:
            frames = codec.relayed(isinstance(data, str), deflated)
        else:  # as it came: compressed (unless the streams are still the same) or not
            compress = deflated is not None or not codec.relay
            if len(frame_sizes) <= 1:  # per message: most come in one frame
                frames = codec.message(data, compress, payload)
            else:
                frames = codec.fragmented(cut(data, frame_sizes), compress)
        if self.delays is None and self.socket.observer is None:
            yield commands.SendData(self.conns[to], frames)  # per message: the common case
        else:
            yield from self._send(to, data, frames)

    def _injected(self, message: websocket.WebSocketMessage) -> layer.CommandGenerator[None]:
        """``inject.websocket`` from another addon: a message to the client or the server."""
        assert self.socket is not None and self.flow.websocket is not None
        to = SERVER if message.from_client else PAGE
        if not self.socket.connection.receive_injected(to):
            return
        self._keep(message)
        yield wsl.WebsocketMessageHook(self.flow)
        if not message.dropped:
            data = _text_or_bytes(message)
            yield from self._send(to, data)

    def _drain(self) -> layer.CommandGenerator[None]:
        assert self.socket is not None
        connection = self.socket.connection
        while connection.has_commands:
            for command in connection.commands_to_execute():
                if type(command) is CallHandler:  # per message in an echo: no generator
                    self._call(command)
                else:
                    yield from self._execute(command)
        if self.drain_waiters:  # what they waited for went out
            for waiter in self.drain_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.drain_waiters.clear()

    # --- what waits to be written: `buffered_amount`, `drain()`, ``wsroute_max_buffer`` ---------

    def _writer(self, side: Side) -> asyncio.StreamWriter | None:
        """The TCP stream a side's bytes are written to (under TLS too: mitmproxy encrypts
        before it writes), from mitmproxy's connection handler; None for a mock's server."""
        writer = self.out[side]
        if writer is None:
            assert self.socket is not None
            if self.handler is None:
                proxyserver = self.socket.proxyserver
                self.handler = getattr(proxyserver, "connections", {}).get(self.context.client.id)
            io = getattr(self.handler, "transports", {}).get(self.conns[side])
            found = getattr(io, "writer", None)
            if isinstance(found, asyncio.StreamWriter):
                writer = self.out[side] = found
                self.out_transports[side] = found.transport
        return writer

    def _written(self, side: Side) -> int:
        """Bytes written to a side's transport that the network has not taken yet."""
        transport = self.out_transports[side]
        if transport is None:
            if self._writer(side) is None:
                return 0
            transport = self.out_transports[side]
            assert transport is not None
        return transport.get_write_buffer_size()

    def _drainer(self, side: Side) -> asyncio.Future[None]:
        """`WebSocketRoute.drain()`: a future of the caller's loop, done once `_drained`."""
        assert self.socket is not None
        drained = self._drained(side)
        loop = self.socket.loop
        try:
            caller = asyncio.get_running_loop()
        except RuntimeError:
            caller = None
        if loop is None or caller is loop:
            return asyncio.ensure_future(drained)
        # another thread's loop (the test API's): run it on the proxy's, await it there
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drained, loop), loop=caller)

    async def _drained(self, side: Side) -> None:
        """Return once what waits for `side` is under the transport's high-water mark, else
        once it went below the low-water mark (asyncio's flow control: 64 and 16 KiB by
        default), or the side is gone."""
        assert self.socket is not None
        connection = self.socket.connection
        writer = self._writer(side)
        if writer is None or self.ended:
            return
        transport = writer.transport
        if (
            connection.has_commands
            and connection.buffered_amount(side) > (transport.get_write_buffer_limits()[1])
        ):
            waiter = asyncio.get_running_loop().create_future()
            self.drain_waiters.append(waiter)
            self.socket.wake()
            await waiter  # the sends recorded before went to the transport
        if transport.is_closing() or self._written(side) <= transport.get_write_buffer_limits()[1]:
            return
        try:
            await writer.drain()  # asyncio's flow control, also with `_Reader` as its protocol
        except ConnectionError:
            pass  # the side is gone: nothing waits any more

    def _call(self, command: CallHandler) -> None:
        """Call a route's handler; an async one's task runs until it returns or the socket
        ends."""
        assert self.socket is not None
        task = self.socket.call_user(command.handler, command.args, self.socket)
        if isinstance(task, asyncio.Task) and not task.done():
            self.socket.tasks.add(task)
            task.add_done_callback(self.socket.tasks.discard)

    def _execute(self, command: Command) -> layer.CommandGenerator[None]:
        """Carry out a command of the connection (but `CallHandler`: `_call`)."""
        assert self.socket is not None and self.flow.websocket is not None
        if isinstance(command, Send):
            data, to = command.message, command.to
            connection = self.socket.connection
            if to in connection.aborted:
                return  # its peer stopped reading: nothing more goes to it
            self.route_sent = True
            message = _flow_message(data, to is SERVER, injected=True)
            self._keep(message)
            codec = self.codecs[to]
            if self.delays is not None or self.socket.observer is not None:
                yield from self._send(to, data)
            elif codec.state is OPEN:  # per route-sent message: `_send`, inline
                yield commands.SendData(self.conns[to], codec.message(data, True, message.content))
            if connection.max_buffer and (size := self._written(to)) > (
                connection.max_buffer
            ):  # per route-sent message: `_written` is kept cheap
                connection.receive_overflow(to, size)
        elif isinstance(command, DropSide):  # no close frame: its TCP connection closes (CloseTcp)
            if command.side is PAGE:
                yield from self._observe_later((ABNORMAL_CLOSURE, ""))
        elif isinstance(command, CloseSide):
            code, reason = command.close.code, command.close.reason or ""
            yield from self._close_frame(command.side, code, reason)
        elif isinstance(command, StartCloseTimer):
            wakeup = commands.RequestWakeup(self.close_timeout)
            self.close_timers[wakeup] = command.side
            # with a latency, the timer starts when the close frame went out
            yield from self._out(wakeup, command.side)
        elif isinstance(command, CloseTcp):
            logger.debug(
                f"{self.socket.connection.url}: closing the {command.side}'s TCP connection"
            )
            if command.abort and (writer := self._writer(command.side)) is not None:
                writer.transport.abort()  # what it holds would never be read: drop it now
            close = commands.CloseConnection(self.conns[command.side])
            if command.side is SERVER or self.delays is None or self.delays.close_client(close):
                yield from self._out(close)
        elif isinstance(command, SetLatency):
            if self.delays is None:
                self.delays = Outbox(self.max_message_size)
            self.delays.set_latency(command.to, command.seconds)
        else:
            assert isinstance(command, End)
            if self.delays is None or self.delays.end():
                yield from self._end()

    def _end(self) -> layer.CommandGenerator[None]:
        """Both TCP connections are closed: tell mitmproxy and other addons how it ended."""
        assert self.socket is not None and self.flow.websocket is not None
        connection = self.socket.connection
        if connection.first_close is not None:
            by_client, close = connection.first_close
            self.flow.websocket.closed_by_client = by_client
            self.flow.websocket.close_code = reported_code(close.code)
            self.flow.websocket.close_reason = close.reason or ""
        self.flow.websocket.timestamp_end = time.time()
        self._handle_event = self._after_end
        self.ended = True
        self.socket.busy = False
        # Async handlers still running (a push loop, say) end with their socket.
        for task in list(self.socket.tasks):
            task.cancel()
        yield wsl.WebsocketEndHook(self.flow)
        self.flow.live = False

    def _send(
        self, to: Side, data: str | bytes, frames: bytes | None = None
    ) -> layer.CommandGenerator[None]:
        """Send a message to a side, as `frames` when it was encoded already (a message passed
        on), else as the codec encodes it now (unless the side is closing). Every message to
        a side goes out here, once; the client's observer sees it when it went out."""
        assert self.socket is not None
        if frames is None:
            codec = self.codecs[to]
            if codec.state is not OPEN:
                return
            frames = codec.message(data)
        command = commands.SendData(self.conns[to], frames)
        if self.delays is None:  # per message: no latency, the common case
            yield command
            if to is PAGE and self.socket.observer is not None:
                self.socket.observer.message(False, data)
            return
        if (yield from self._out(command, data=True)) and to is PAGE:  # not dropped (1009)
            yield from self._observe_later(None, data)

    def _close_frame(
        self, side: Side, code: int | None, reason: str, now: bool = False
    ) -> layer.CommandGenerator[None]:
        """Send a side our close frame, if its codec may still send one: behind what waits for
        that side (`set_latency`), or `now`. Every close frame the proxy sends goes out here,
        except the echo of a peer's close (`_close_received`); the client's observer sees it
        when it went out."""
        codec = self.codecs[side]
        if codec.state is not OPEN and codec.state is not REMOTE_CLOSING:
            return
        command = commands.SendData(self.conns[side], codec.close(code, reason))
        if now:
            yield command
        else:
            yield from self._out(command)
        if side is PAGE:
            close = (reported_code(code), reason)
            if now:
                self._observe(close)
            else:
                yield from self._observe_later(close)

    def _observe(self, close: tuple[int, str] | None, data: str | bytes = b"") -> None:
        """Tell the observer, if any, what the client was sent: `data`, or a `close`."""
        call = self._observation(close, data)
        if call is not None:
            call()

    def _observe_later(
        self, close: tuple[int, str] | None, data: str | bytes = b""
    ) -> layer.CommandGenerator[None]:
        """`_observe`, once what the client still waits for (`set_latency`) went out."""
        call = self._observation(close, data)
        if call is not None:
            yield from self._out(call, PAGE)

    def _observation(
        self, close: tuple[int, str] | None, data: str | bytes
    ) -> Callable[[], None] | None:
        assert self.socket is not None
        observer = self.socket.observer
        if observer is None:
            return None
        if close is None:
            return functools.partial(observer.message, False, data)
        return functools.partial(observer.closed, *close)

    def _out(
        self, item: _Delayed, side: Side | None = None, data: bool = False
    ) -> layer.CommandGenerator[bool]:
        """Send a frame, close TCP, start a close timer or tell the observer (for `side`) now,
        or, when that side has a latency or something waiting, behind what waits
        (`set_latency`). The `data` frames (messages and pings) count against the size limit;
        the rest never fails it. False if it was dropped: too much waited, and the side failed
        (1009)."""
        if self.delays is None:
            yield from _now(item)
            return True
        if side is None:
            assert isinstance(item, commands.SendData | commands.CloseConnection)
            side = PAGE if item.connection is self.context.client else SERVER
        if not self.delays.waits(side):
            yield from _now(item)
            return True
        size = len(item.data) if data and isinstance(item, commands.SendData) else 0
        try:
            wait = self.delays.push(side, clock(), item, size)
        except OverflowError as e:
            # Bounded like a message: past wsroute_max_message_size waiting, the side is
            # closed with 1009 (message too big), as for a message that large, and what
            # waited for it is dropped (`Outbox.push`). The 1009 close frame goes out now, so
            # nothing sent later in this event can precede it.
            assert self.socket is not None
            logger.warning(f"{self.socket.connection.url}: set_latency: {e} for the {side}")
            reason = "too much waiting (set_latency)"
            if self.codecs[side].state is OPEN:
                yield from self._close_frame(side, MESSAGE_TOO_BIG, reason, now=True)
            self.socket.connection.receive_failure(side, MESSAGE_TOO_BIG, reason)
            return False
        if wait is not None:
            yield from self._delay_timer(side, wait)
        return True

    def _delay_timer(self, side: Side, wait: float) -> layer.CommandGenerator[None]:
        timer = self.delay_timers[side] = _DelayWakeup(wait, side)
        yield timer

    def _due(self, timer: _DelayWakeup) -> layer.CommandGenerator[None]:
        """A delay line's wake-up: send what is due (stale wake-ups change nothing)."""
        if self.delays is None or timer is not self.delay_timers[timer.side]:
            return
        due, wait, released = self.delays.due(timer.side, clock())
        for item in due:
            yield from _now(item)
        if wait is not None:
            yield from self._delay_timer(timer.side, wait)
            return
        if released is not None:  # the client's TCP close, after the server's
            assert isinstance(released, commands.CloseConnection)
            yield from self._out(released)
        if self.delays.may_end:
            yield from self._end()

    def _after_end(self, event: events.Event) -> layer.CommandGenerator[None]:
        # Late events (a close timer, data after the end) change nothing; what `_end` yields
        # from a read of our own waits in the backlog.
        yield from self._flush_backlog()

    # --- reading and writing the connections directly ---------------------------------------------

    def _own_io(self) -> None:
        """Read and write this socket's connections here (unless an addon's message hook needs
        mitmproxy's machinery: `RoutedSocket.hooks`).

        mitmproxy hands every read to the top of its layer stack (a task, a lock, every layer
        down to ours) and every frame we send back up it, one write each: most of what a routed
        message costs once no hook runs. Here, each connection's asyncio transport gets
        `_Reader` as its protocol: data goes straight to `_relay`, and the frames it yields go
        straight to the transports, one write per transport and read. Anything else it yields
        (closing a connection, a timer, a hook), and all that comes after it, goes through
        mitmproxy's machinery as before (`backlog`), and so does the end of a stream.

        A connection becomes the layer's once mitmproxy holds nothing read from it that the
        layer has not had (its stream's buffer is empty, no event waits in the layer's queue,
        its TLS holds no decrypted bytes, and no read of mitmproxy's waits for its turn to be
        handed over): until then, this is tried again after each of mitmproxy's events
        (`to_own`). Under TLS, the layer decrypts and encrypts with the
        connection's own TLS object (`TlsTransport`). Not through an upstream proxy, nor
        under layers it does not know (`_why_not_own`)."""
        assert self.socket is not None
        url = self.socket.connection.url
        self.to_own = False
        if self.handler is None:  # the first time
            proxyserver = self.socket.proxyserver
            handler = getattr(proxyserver, "connections", {}).get(self.context.client.id)
            why = why_not_own(self.context, handler)
            if why:
                logger.debug(f"{url}: mitmproxy reads and writes the socket ({why})")
                return
            self.handler = handler
        for side in (PAGE, SERVER):
            conn = self.conns[side]
            io = self.handler.transports.get(conn)
            if io is None or id(conn) in self.transports:
                continue  # no such connection (a mock's server), or ours already
            reader, writer = io.reader, io.writer
            if not (
                isinstance(reader, asyncio.StreamReader)
                and isinstance(writer, asyncio.StreamWriter)
                and isinstance(writer.transport.get_protocol(), asyncio.StreamReaderProtocol)
            ):
                logger.debug(
                    f"{url}: mitmproxy reads and writes the {side} (not an asyncio stream)"
                )
                continue
            buffered = reader._buffer  # type: ignore[attr-defined]
            if buffered or self._paused is not None or self._paused_event_queue:
                self.to_own = True  # mitmproxy still holds data from it: after that
                continue
            if self.handler._server_event_lock._waiters:
                # mitmproxy's handler hands its connections' reads over one event at a time:
                # a read from this one may wait for its turn (behind the event being handled
                # now). It would come after what the layer reads itself: after that event.
                self.to_own = True
                continue
            tls = tls_of(self.context, conn)
            if tls is not None and (tls.tunnel_state is not TunnelState.OPEN or tls.tls.pending()):
                self.to_own = True  # its handshake is not over, or it holds decrypted bytes
                continue
            transport = writer.transport
            assert isinstance(transport, asyncio.Transport)
            original = transport.get_protocol()
            assert isinstance(original, asyncio.StreamReaderProtocol)
            ours = transport if tls is None else TlsTransport(transport, tls.tls)
            transport.set_protocol(Reader(self, side, original, ours))
            self.transports[id(conn)] = ours
            if original._paused:  # type: ignore[attr-defined]  # full: read no more until drained
                self.write_paused.add(side)
            logger.debug(f"{url}: the layer reads and writes the {side}'s connection itself")
        if self.write_paused:
            self._pause_reading(True)

    def _fast_receive(self, event: events.DataReceived | events.ConnectionClosed) -> None:
        """Data read from a connection (`_own_io`), or the end of its TLS stream: handled at
        once, unless something waits for mitmproxy's machinery, or the layer waits for a hook
        (mitmproxy queues its events then): it waits behind that."""
        assert self.socket is not None
        if self.ended:
            return
        self.handler.timeout_watchdog.register_activity()  # per read, as mitmproxy: idle timeout
        if self.backlog or self._paused is not None or self.socket.busy:
            self.backlog.append(event)
            self._wake_for_backlog()
            return
        try:
            self._run(self._relay(event))
        except Exception:
            self.socket.busy = False
            logger.exception(f"{self.socket.connection.url}: the routed socket has crashed")

    def _run(self, generator: layer.CommandGenerator[None]) -> None:
        """Carry out what `_relay` yields for a read (`_fast_receive`): frames to a
        connection the layer writes itself go out at once, one write per transport; anything
        else, and all after it, waits in `backlog` for mitmproxy."""
        backlog = self.backlog
        transports = self.transports
        out: dict[asyncio.Transport | TlsTransport, list[bytes]] = {}
        try:
            command = next(generator)
            while True:
                if (
                    isinstance(command, commands.SendData)
                    and not backlog
                    and (transport := transports.get(id(command.connection))) is not None
                ):
                    chunks = out.get(transport)
                    if chunks is None:
                        out[transport] = [command.data]
                    else:
                        chunks.append(command.data)
                elif command.blocking:
                    backlog.append(_Resume(command, generator))  # the rest of this event too
                    break
                else:
                    backlog.append(command)
                command = next(generator)
        except StopIteration:
            pass
        for transport, chunks in out.items():
            if not transport.is_closing():
                transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if backlog:
            self._wake_for_backlog()

    def _wake_for_backlog(self) -> None:
        if self.backlog_wakeup:
            return
        assert self.socket is not None
        self.backlog_wakeup = True
        socket = self.socket

        def inject() -> None:
            if not socket.inject_wakeup():
                self.backlog_wakeup = False

        socket.schedule(inject)

    def _flush_backlog(self) -> layer.CommandGenerator[None]:
        """What waits for mitmproxy's machinery, in order, as part of the event it handles."""
        assert self.socket is not None
        self.backlog_wakeup = False
        backlog = self.backlog
        while backlog:
            item = backlog.popleft()
            if isinstance(item, commands.Command):
                yield item
            elif isinstance(item, _Resume):
                yield from item.commands()
            elif not self.ended:  # data after the end changes nothing
                yield from self._relay(item)

    def _write_paused(self, side: Side, paused: bool) -> None:
        """A transport's write buffer filled up or drained: like mitmproxy, read from none of
        the socket's connections while any of them cannot take more."""
        was = bool(self.write_paused)
        if paused:
            self.write_paused.add(side)
        else:
            self.write_paused.discard(side)
        if bool(self.write_paused) != was:
            self._pause_reading(not was)

    def _pause_reading(self, pause: bool) -> None:
        for transport in self.transports.values():
            if transport.is_closing():
                continue
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()


@dataclass
class _Resume:
    """The rest of an event that yielded a blocking command (a hook) outside mitmproxy's
    machinery (`_run`): carried out, from that command on, as part of a later event."""

    command: commands.Command
    rest: layer.CommandGenerator[None]

    def commands(self) -> layer.CommandGenerator[None]:
        reply = yield self.command
        while True:
            try:
                command = self.rest.send(reply)
            except StopIteration:
                return
            reply = yield command


#: What waits in a layer's backlog: a command, the rest of an event, or data read.
_Backlogged = commands.Command | _Resume | events.DataReceived | events.ConnectionClosed
