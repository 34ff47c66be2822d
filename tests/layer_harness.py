"""The real layer driven in-process, on each of its read paths, for tests that compare what a
route sees with what wsproto reads from the same bytes (`test_read_paths`, `test_takeover`).

As in `test_layer_machine`: the layer gets mitmproxy's events (hooks answered at once) and its
commands are carried out here. For the own-I/O path, mitmproxy's connection handler is faked
with real asyncio streams on fake transports, so `RoutedWebsocketLayer._own_io` takes the
transports over as it would in mitmdump; data then comes in by ``data_received`` on the
transport's protocol, and what the layer writes comes out of ``write``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import wsproto
import wsproto.events as wse
from mitmproxy import connection as mconnection
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.test import tflow
from mitmproxy.websocket import WebSocketData
from wsproto.connection import ConnectionState
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, RsvBits

from mitm_wsroute import layer, own_io
from mitm_wsroute.connection import PAGE, SERVER, RoutedConnection, Side
from mitm_wsroute.messages import FRAME_COST
from mitm_wsroute.route import WebSocketRoute

#: The extensions: none, or permessage-deflate negotiated (both sides).
FAST, DEFLATE = "plain", "deflate"
COMPRESSED = (DEFLATE,)
#: Who reads the connections: mitmproxy (its events), or the layer itself (`_own_io`).
EVENTS, OWN = "events", "own"
MOCK, INTERCEPT = "mock", "intercept"


def deflate(header: str = "permessage-deflate") -> PerMessageDeflate:
    """permessage-deflate as mitmproxy finalizes it from a 101's header (both directions)."""
    ext = PerMessageDeflate()
    ext.finalize(header)
    return ext


def _control(proto: Any) -> bool:
    """The frame wsproto's decoder is reading is a control frame."""
    header = getattr(proto, "header", None)
    return header is not None and header.opcode.iscontrol()


class FixedPerMessageDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, but a control frame between the fragments of a compressed
    message (RFC 6455 §5.4 allows pings there) no longer ends its decompression: wsproto 1.2
    then reads the rest as uncompressed, failing text with 1007 and corrupting binary (its
    pull request 205). Control frames are never compressed (RFC 7692 §6.1)."""

    def frame_inbound_header(
        self, proto: Any, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(False, False, False)
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if _control(proto):
            return data
        return super().frame_inbound_payload_data(proto, data)

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if _control(proto):
            return None
        return super().frame_inbound_complete(proto, fin)


def fixed_deflate() -> PerMessageDeflate:
    """`deflate`, without wsproto 1.2's bug with a ping between compressed fragments (the
    oracle; the codec reads such messages right: `test_codec`)."""
    ext = deflate()
    ext.__class__ = FixedPerMessageDeflate
    return ext


class Sender:
    """Writes frames as a side's peer does: masked for the client, compressed with deflate;
    also frames no codec writes (invalid UTF-8, fragments cut inside a character)."""

    def __init__(self, side: Side, compressed: bool, header: str = "permessage-deflate") -> None:
        self.proto = FrameProtocol(
            client=side is PAGE, extensions=[deflate(header)] if compressed else []
        )

    def data(self, opcode: Opcode, payload: bytes, fin: bool) -> bytes:
        return bytes(self.proto._serialize_frame(opcode, payload, fin))

    def ping(self, payload: bytes) -> bytes:
        return bytes(self.proto.ping(payload))

    def pong(self, payload: bytes) -> bytes:
        return bytes(self.proto.pong(payload))

    def close(self, code: int | None, reason: str | None) -> bytes:
        return bytes(self.proto.close(code, reason))


@dataclass
class Expected:
    """What a route should see of one side's byte stream, read by wsproto."""

    messages: list[str | bytes] = field(default_factory=list)
    #: What the side's on_close gets: ``(code, reason)``; reason None to check the code only.
    close: tuple[int | None, str | None] | None = None
    #: The close frame the peer gets from the proxy (its code), if any.
    peer_close: int | None = None
    #: The pings before the stream's end (or its failure): each is answered (in a mock).
    pings: list[bytes] = field(default_factory=list)
    all_pings: list[bytes] = field(default_factory=list)


def oracle(wire: bytes, side: Side, compressed: bool, limit: int) -> Expected:
    """What wsproto reads from `wire` (the bytes a side's peer sent), as the route should see
    it: whole messages (text as `str`, binary as `bytes`) up to the first one over `limit`
    (payload, characters for text, and `FRAME_COST` per frame but the last: the proxy's rule),
    which fails the side with 1009; a protocol error fails it as ``(1006, "")`` to the route
    and with wsproto's code to the peer; a close frame is the route's close, echoed."""
    reader = wsproto.Connection(
        wsproto.ConnectionType.SERVER if side is PAGE else wsproto.ConnectionType.CLIENT,
        extensions=[fixed_deflate()] if compressed else None,
    )
    reader.receive_data(wire)
    out = Expected()
    chunks: list[Any] = []
    size = 0
    ended = False
    for ev in reader.events():
        if isinstance(ev, wse.Ping):
            out.all_pings.append(bytes(ev.payload))
            if not ended:
                out.pings.append(bytes(ev.payload))
        if ended:
            continue
        if isinstance(ev, wse.Message):
            chunks.append(ev.data)
            size += len(ev.data)
            if ev.frame_finished and not ev.message_finished:
                size += FRAME_COST
            if limit and size > limit:
                out.close, out.peer_close, ended = (1009, None), 1009, True
                continue
            if ev.message_finished:
                if isinstance(ev.data, str):
                    out.messages.append("".join(chunks))
                else:
                    out.messages.append(b"".join(bytes(c) for c in chunks))
                chunks, size = [], 0
        elif isinstance(ev, wse.CloseConnection):
            ended = True
            if reader.state is ConnectionState.OPEN:  # wsproto's ParseFailed: a protocol error
                out.close, out.peer_close = (1006, ""), int(ev.code)
            else:
                code = int(ev.code)
                out.peer_close = code
                out.close = (None, None) if code == 1005 else (code, ev.reason or "")
    if not ended:  # the stream ends without a close: the test drops the connection
        out.close = (1006, "")
    return out


def reply(message: str | bytes) -> str | bytes:
    """What a `Harness` with `replies` sends back for a message."""
    return "re:" + message if isinstance(message, str) else b"re:" + message


class FakeTransport(asyncio.Transport):
    """A connection's transport: what the layer (or mitmproxy) writes goes to `sink`."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        super().__init__()
        self.sink = sink
        self.protocol: asyncio.BaseProtocol | None = None
        self.closing = False
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing, "written after it was closed"
        self.sink(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0  # what is written goes to the sink at once

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Io:
    """One connection as mitmproxy's handler holds it: a stream reader and writer on a
    `FakeTransport`, whose protocol is the stream's until the layer takes it over."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: Callable[[bytes], None]) -> None:
        self.loop = loop
        self.transport = FakeTransport(sink)
        self.reader = asyncio.StreamReader(loop=loop)
        self.protocol = asyncio.StreamReaderProtocol(self.reader, loop=loop)
        self.transport.set_protocol(self.protocol)
        self.protocol.connection_made(self.transport)
        self.writer = asyncio.StreamWriter(self.transport, self.protocol, self.reader, loop)

    def arrive(self, data: bytes) -> None:
        """Bytes from the network: to whoever owns the transport's protocol now."""
        self.transport.get_protocol().data_received(data)  # type: ignore[attr-defined]

    def mitmproxy_reads(self) -> bytes:
        """What mitmproxy's ``handle_connection`` takes out of the stream in one read."""
        if not self.reader._buffer:  # type: ignore[attr-defined]
            return b""
        return self.loop.run_until_complete(self.reader.read(65535))


class Harness:
    """One routed socket: a mock (page side only) or an intercept (both sides), whose route
    records what each side's on_message and on_close get."""

    def __init__(
        self,
        *,
        mode: str = MOCK,
        path: str = FAST,
        io: str = EVENTS,
        hooks: bool = False,
        limit: int = 150,
        hold_start_hook: bool = False,
        start: bool = True,
        extensions: tuple[str, str] | None = None,
        replies: bool = False,
    ) -> None:
        """`extensions`: the ``Sec-WebSocket-Extensions`` the client's 101 had and the
        upstream's ("" for none), when another addon made them differ; else what `path`
        says for both. `replies`: each side's ``on_message`` also sends `reply(message)`
        back to that side at once, as an echo does."""
        self.mode, self.path, self.io, self.hooks = mode, path, io, hooks
        options = SimpleNamespace(
            wsroute_max_message_size=limit,
            wsroute_keep_messages=0,
            wsroute_message_hooks=hooks,
            wsroute_close_timeout_ms=5000,
        )
        self.flow = tflow.twebsocketflow(messages=False)
        self.flow.websocket = None
        assert self.flow.response is not None
        if extensions is None:
            extensions = ("permessage-deflate",) * 2 if path in COMPRESSED else ("", "")
        if extensions[PAGE]:
            self.flow.response.headers["Sec-WebSocket-Extensions"] = extensions[PAGE]
        self.connection = RoutedConnection("ws://example.com/ws", [])
        self.route: dict[Side, WebSocketRoute] = {PAGE: WebSocketRoute(self.connection)}
        sides = [PAGE]
        if mode == INTERCEPT:
            self.route[SERVER] = self.route[PAGE].connect_to_server()
            sides.append(SERVER)
        self.sides = sides
        self.got: dict[Side, list[Any]] = {PAGE: [], SERVER: []}
        self.closes: dict[Side, list[tuple[Any, Any]]] = {PAGE: [], SERVER: []}
        self.replies = replies
        for side in sides:
            self.route[side].on_message(self._handler(side))
            self.route[side].on_close(
                lambda code, reason, side=side: self.closes[side].append((code, reason))
            )
        self.injected: list[events.Event] = []
        socket = layer.RoutedSocket(self.connection, lambda h, a, url: h(*a), self.injected.append)
        socket.upstream_extensions = extensions[SERVER] if mode == INTERCEPT else None
        layer.routed_socket(self.flow, socket)
        self.socket = socket
        self.flow.websocket = WebSocketData()
        ctx = Context(self.flow.client_conn, options)  # type: ignore[arg-type]
        ctx.server = self.flow.server_conn
        self.conn: dict[Side, mconnection.Connection] = {PAGE: ctx.client, SERVER: ctx.server}
        self.layer = layer.RoutedWebsocketLayer(ctx, self.flow)
        # the peers: what each side's client or server reads of what the proxy sends it
        self.peer = {
            side: wsproto.Connection(
                wsproto.ConnectionType.CLIENT if side is PAGE else wsproto.ConnectionType.SERVER,
                extensions=[deflate(extensions[side])] if extensions[side] else None,
            )
            for side in (PAGE, SERVER)
        }
        self.peer_messages: dict[Side, list[Any]] = {PAGE: [], SERVER: []}
        self.peer_partial: dict[Side, list[Any]] = {PAGE: [], SERVER: []}
        #: In how many pieces (frames, as the proxy writes whole ones) each message came.
        self.peer_framing: dict[Side, list[int]] = {PAGE: [], SERVER: []}
        self.peer_pings: dict[Side, list[bytes]] = {PAGE: [], SERVER: []}
        self.peer_pongs: dict[Side, list[bytes]] = {PAGE: [], SERVER: []}
        self.peer_closes: dict[Side, list[int]] = {PAGE: [], SERVER: []}
        self.tcp_closed: list[Side] = []
        self.held: list[commands.StartHook] = []  # hooks not answered yet (`hold_hooks`)
        #: How many of the next hooks to hold back (answered by `release_hook`).
        self.hold_hooks = 1 if hold_start_hook else 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ios: dict[Side, Io] = {}
        #: Reads mitmproxy's handler took that wait for their turn (`read_waits_its_turn`).
        self.waiting: list[tuple[Side, bytes]] = []
        if io == OWN:
            self.loop = asyncio.new_event_loop()
            handler = SimpleNamespace(
                transports={},
                timeout_watchdog=SimpleNamespace(register_activity=lambda: None),
                # whose waiters are reads waiting for their turn (`read_waits_its_turn`)
                _server_event_lock=asyncio.Lock(),
            )
            self.handler = handler
            for side in sides:
                io_ = Io(self.loop, lambda data, side=side: self.to_peer(side, data))
                self.ios[side] = io_
                handler.transports[self.conn[side]] = io_
            socket.proxyserver = SimpleNamespace(connections={ctx.client.id: handler})
            self.saved_own_io_ok = own_io.ok
            own_io.ok = True
        if start:
            self.start()

    def _handler(self, side: Side) -> Callable[[str | bytes], None]:
        got, route = self.got[side], self.route[side]
        if not self.replies:
            return got.append

        def on_message(message: str | bytes) -> None:
            got.append(message)
            route.send(reply(message))

        return on_message

    def start(self) -> None:
        """The 101 went out: mitmproxy starts the layer (the start hook answered at once, or
        held with `hold_start_hook`)."""
        self.feed(events.Start())
        if self.io == OWN and self.hooks:  # with hooks on the layer never does it by itself
            self.layer._own_io()

    def close(self) -> None:
        if self.loop is not None:
            own_io.ok = self.saved_own_io_ok
            self.loop.close()
            self.loop = None

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the proxy's side ---------------------------------------------------------------------

    def owned(self, side: Side) -> bool:
        """The layer reads this side's transport itself."""
        return id(self.conn[side]) in self.layer.transports

    def read_waits_its_turn(self, side: Side) -> bool:
        """mitmproxy's handler takes a read out of the side's stream while another event is
        being handled: it waits for the handler's lock, the data in hand, until `hand_over`
        (its reads of that side wait meanwhile). False if there was nothing to read."""
        assert self.loop is not None
        data = self.ios[side].mitmproxy_reads()
        if data:
            lock = self.handler._server_event_lock
            if lock._waiters is None:
                lock._waiters = collections.deque()
            lock._waiters.append(self.loop.create_future())
            self.waiting.append((side, data))
        return bool(data)

    def hand_over(self) -> None:
        """The read that waited longest for its turn goes to the layer."""
        side, data = self.waiting.pop(0)
        self.handler._server_event_lock._waiters.popleft()
        self.feed(events.DataReceived(self.conn[side], data))

    def feed(self, event: events.Event) -> None:
        """Run the layer on `event` as mitmproxy does, then on the events it injected."""
        pending = [event]
        while pending:
            for command in self.layer.handle_event(pending.pop(0)):
                if isinstance(command, commands.StartHook):
                    if self.hold_hooks:
                        self.hold_hooks -= 1
                        self.held.append(command)
                    else:
                        pending.append(events.HookCompleted(command))
                elif isinstance(command, commands.CloseConnection):
                    side = PAGE if command.connection is self.conn[PAGE] else SERVER
                    self.tcp_closed.append(side)
                    if side in self.ios:
                        self.ios[side].transport.close()
                elif isinstance(command, commands.SendData):
                    side = PAGE if command.connection is self.conn[PAGE] else SERVER
                    self.to_peer(side, command.data)
            if not pending:
                pending, self.injected[:] = list(self.injected), []

    def release_hook(self) -> None:
        """Answer the oldest hook held back (`hold_hooks`)."""
        self.feed(events.HookCompleted(self.held.pop(0)))

    def flush_injected(self) -> None:
        """The wake-ups the layer asked for (``call_soon``) run now."""
        while self.injected:
            self.feed(self.injected.pop(0))

    def receive(self, side: Side, data: bytes, flush: bool = True) -> None:
        """`data` read from a side's connection: by the layer itself if it owns the
        transport, else by mitmproxy (which hands it over as an event)."""
        if side in self.ios:
            io_ = self.ios[side]
            io_.arrive(data)
            if not self.owned(side):
                while chunk := io_.mitmproxy_reads():
                    self.feed(events.DataReceived(self.conn[side], chunk))
        else:
            self.feed(events.DataReceived(self.conn[side], data))
        if flush:
            self.flush_injected()

    def connection_lost(self, side: Side) -> None:
        """The peer ends its TCP connection (an end of stream: mitmproxy's event either way)."""
        if side not in self.tcp_closed:
            self.feed(events.ConnectionClosed(self.conn[side]))
        self.flush_injected()

    # --- the peers -------------------------------------------------------------------------------

    def to_peer(self, side: Side, data: bytes) -> None:
        assert side not in self.tcp_closed, f"data to the {side} after its TCP close"
        peer = self.peer[side]
        if peer.state is ConnectionState.CLOSED:
            assert not data, f"data to the {side} after its close frame: {data!r}"
            return
        peer.receive_data(data)
        for ev in peer.events():
            if isinstance(ev, wse.Message):
                self.peer_partial[side].append(ev.data)
                if ev.message_finished:
                    parts, self.peer_partial[side] = self.peer_partial[side], []
                    self.peer_framing[side].append(len(parts))
                    joined = "".join(parts) if isinstance(ev.data, str) else b"".join(parts)
                    self.peer_messages[side].append(joined)
            elif isinstance(ev, wse.Ping):
                self.peer_pings[side].append(bytes(ev.payload))
            elif isinstance(ev, wse.Pong):
                self.peer_pongs[side].append(bytes(ev.payload))
            elif isinstance(ev, wse.CloseConnection):
                assert peer.state is not ConnectionState.OPEN, f"bad frame to the {side}"
                self.peer_closes[side].append(int(ev.code))

    # --- checks ----------------------------------------------------------------------------------

    def check(self, side: Side, want: Expected) -> None:
        """The route saw of `side` what wsproto read: the same messages, of the same types,
        and the same close; the peer got the close frame wsproto's code calls for (and, with
        `replies`, every reply, in order)."""
        got = self.got[side]
        assert got == want.messages
        assert [type(m) for m in got] == [type(m) for m in want.messages], "str/bytes types"
        assert len(self.closes[side]) == 1, self.closes[side]
        code, reason = self.closes[side][0]
        assert want.close is not None
        assert code == want.close[0]
        if want.close[1] is not None:
            assert reason == want.close[1]
        if want.peer_close is None:
            assert self.peer_closes[side] == []
        else:
            assert self.peer_closes[side] == [want.peer_close]
        if self.replies:  # every reply went out, in order, before anything that came after
            assert self.peer_messages[side] == [reply(m) for m in got]
        if self.mode == MOCK and side is PAGE:  # the proxy answers each ping itself
            pongs = self.peer_pongs[side]
            assert pongs[: len(want.pings)] == want.pings
            assert pongs == want.all_pings[: len(pongs)]
