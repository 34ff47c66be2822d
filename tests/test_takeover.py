"""Ordering when the layer takes a connection over from mitmproxy (issue #19, item 13).

With ``wsroute_message_hooks`` off the layer reads a routed socket's transports itself
(`RoutedWebsocketLayer._own_io`), but only once mitmproxy holds nothing it has read from
them: its stream's buffer is empty, and no event waits in the layer's paused queue; until
then it tries again after each of mitmproxy's events. Bytes mitmproxy read first must reach
the route first.

In-process: mitmproxy's connection handler is faked with a real `asyncio.StreamReader` on a
fake transport (`tests.layer_harness.Io`): bytes arrive on the transport's protocol (the
stream's, until the layer takes it over), and mitmproxy reads them out of the stream and hands
them over as events. End to end: a real mitmdump, and a server that writes its first messages
in the same TCP segment as its 101, then keeps writing.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import websocket
from mitmproxy.proxy import events
from mitmproxy.proxy.layers import websocket as wsl
from websockets.asyncio.client import connect
from wsproto.frame_protocol import Opcode

from mitm_wsroute.connection import PAGE, SERVER, Side
from tests.conftest import make_cert
from tests.layer_harness import INTERCEPT, MOCK, OWN, Harness, Sender
from tests.sockets import switching_protocols

# --- in-process ------------------------------------------------------------------------------

LIMIT = 1 << 20  # wsroute_max_message_size: no message here is too big


def frames(side: Side, messages: list[str | bytes]) -> bytes:
    """`messages` as a side's peer writes them (masked from the client)."""
    s = Sender(side, False)
    return b"".join(
        s.data(Opcode.TEXT if isinstance(m, str) else Opcode.BINARY, _raw(m), True)
        for m in messages
    )


def _raw(m: str | bytes) -> bytes:
    return m.encode() if isinstance(m, str) else m


def mitmproxy_reads_once(h: Harness, side: Side) -> bool:
    """mitmproxy's ``handle_connection`` takes one read (at most 64 KiB) out of the side's
    stream and hands it to the layer as an event; False if there was nothing to read."""
    data = h.ios[side].mitmproxy_reads()
    if data:
        h.feed(events.DataReceived(h.conn[side], data))
    return bool(data)


def test_bytes_in_mitmproxys_stream_go_first() -> None:
    # Three 30 KB messages wait in mitmproxy's stream when the socket starts: more than one
    # read of 64 KiB, so the layer must wait two reads before it takes the transport over.
    early = [bytes([i]) * 30_000 for i in range(3)]
    with Harness(io=OWN, start=False, limit=LIMIT) as h:
        h.ios[PAGE].arrive(frames(PAGE, early))
        h.start()
        assert not h.owned(PAGE) and h.layer.to_own  # mitmproxy holds data: not yet
        h.ios[PAGE].arrive(frames(PAGE, ["while mitmproxy reads"]))  # still into its stream
        assert not h.owned(PAGE)
        assert mitmproxy_reads_once(h, PAGE)
        assert not h.owned(PAGE), "taken over while mitmproxy's stream held unread bytes"
        assert h.got[PAGE] == early[:2]
        assert mitmproxy_reads_once(h, PAGE)
        assert h.owned(PAGE)  # its stream is empty now: the transport is the layer's
        assert h.ios[PAGE].reader._buffer == b""  # type: ignore[attr-defined]
        h.ios[PAGE].arrive(frames(PAGE, ["read by the layer", b"\x00binary"]))
        assert h.got[PAGE] == [*early, "while mitmproxy reads", "read by the layer", b"\x00binary"]
        assert [type(m) for m in h.got[PAGE]] == [bytes] * 3 + [str, str, bytes]


def test_events_in_the_paused_queue_go_first() -> None:
    # The start hook is not answered yet (the layer is paused): what mitmproxy reads in the
    # meantime waits in the layer's queue, and goes to the route before what the layer reads.
    with Harness(io=OWN, hold_start_hook=True, limit=LIMIT) as h:
        assert h.held and not h.owned(PAGE)
        for i in range(3):
            h.ios[PAGE].arrive(frames(PAGE, [f"queued {i}"]))
            assert mitmproxy_reads_once(h, PAGE)
        assert len(h.layer._paused_event_queue) == 3 and h.got[PAGE] == []
        h.ios[PAGE].arrive(frames(PAGE, ["in the stream"]))  # read by nobody yet
        h.release_hook()
        assert h.got[PAGE] == ["queued 0", "queued 1", "queued 2"]
        assert not h.owned(PAGE)  # its stream still holds a message
        assert mitmproxy_reads_once(h, PAGE)
        assert h.owned(PAGE)
        h.ios[PAGE].arrive(frames(PAGE, ["read by the layer"]))
        assert h.got[PAGE] == [
            "queued 0",
            "queued 1",
            "queued 2",
            "in the stream",
            "read by the layer",
        ]


def test_the_last_queued_event_hands_the_connection_over() -> None:
    # Nothing waits in the stream when the hook is answered: the layer takes the transport
    # over at the end of the last queued event, not before it (nor never).
    with Harness(io=OWN, hold_start_hook=True, limit=LIMIT) as h:
        h.ios[PAGE].arrive(frames(PAGE, ["a", "b"]))
        assert mitmproxy_reads_once(h, PAGE)
        h.ios[PAGE].arrive(frames(PAGE, ["c"]))
        assert mitmproxy_reads_once(h, PAGE)
        h.release_hook()
        assert h.got[PAGE] == ["a", "b", "c"]
        assert h.owned(PAGE)
        h.ios[PAGE].arrive(frames(PAGE, ["d"]))
        assert h.got[PAGE] == ["a", "b", "c", "d"]


def test_a_frame_split_across_the_takeover() -> None:
    # mitmproxy reads the start of a frame; the rest comes once the layer reads itself.
    wire = frames(PAGE, ["before", "x" * 300, "after"])
    cut = len(frames(PAGE, ["before"])) + 5  # inside the second frame's header
    with Harness(io=OWN, start=False, limit=LIMIT) as h:
        h.ios[PAGE].arrive(wire[:cut])
        h.start()
        assert not h.owned(PAGE)
        assert mitmproxy_reads_once(h, PAGE)
        assert h.owned(PAGE) and h.got[PAGE] == ["before"]
        h.ios[PAGE].arrive(wire[cut:])
        assert h.got[PAGE] == ["before", "x" * 300, "after"]


def test_a_hook_while_the_queue_drains_keeps_the_connection_mitmproxys() -> None:
    # Another addon injects a message (``inject.websocket``) while the start hook waits: its
    # websocket_message hook pauses the layer again while the queue drains. What arrives then
    # must wait behind what was queued before it, so the transport stays mitmproxy's until
    # the queue is empty (taken over earlier, the layer would read it first).
    with Harness(io=OWN, hold_start_hook=True, limit=LIMIT) as h:
        h.ios[PAGE].arrive(frames(PAGE, ["a"]))
        assert mitmproxy_reads_once(h, PAGE)
        injected = websocket.WebSocketMessage(Opcode.TEXT, False, b"from an addon")
        h.feed(wsl.WebSocketMessageInjected(h.flow, injected))
        h.ios[PAGE].arrive(frames(PAGE, ["b"]))
        assert mitmproxy_reads_once(h, PAGE)
        h.hold_hooks = 1  # the injected message's hook waits too
        h.release_hook()
        assert h.got[PAGE] == ["a"] and len(h.held) == 1
        assert not h.owned(PAGE)
        h.receive(PAGE, frames(PAGE, ["c"]))  # arrives while the layer waits
        h.release_hook()
        assert h.owned(PAGE)
        h.receive(PAGE, frames(PAGE, ["d"]))
        assert h.got[PAGE] == ["a", "b", "c", "d"]
        assert h.peer_messages[PAGE] == ["from an addon"]


def test_a_read_waiting_for_its_turn_goes_first() -> None:
    # The server's first byte comes with the 101 and waits in the layer's queue while the start
    # hook runs; mitmproxy's handler reads the next bytes, but must wait for its turn to hand
    # them over (the hook's answer is being handled). Taken over then, the layer would read
    # what comes after them first: the message's bytes out of order (a text message failed
    # with 1007, found by Autobahn's 4.1.5 through mitmdump).
    wire = frames(SERVER, ["Hello, world!", "and after"])
    with Harness(mode=INTERCEPT, io=OWN, hold_start_hook=True, limit=LIMIT) as h:
        h.ios[SERVER].arrive(wire[:1])
        assert mitmproxy_reads_once(h, SERVER)  # queued: the layer waits for its hook
        h.ios[SERVER].arrive(wire[1:2])
        assert h.read_waits_its_turn(SERVER)
        h.release_hook()
        assert not h.owned(SERVER), "taken over while a read waited for its turn"
        h.hand_over()
        assert h.owned(SERVER)
        h.ios[SERVER].arrive(wire[2:])
        assert h.got[SERVER] == ["Hello, world!", "and after"]
        assert h.closes[SERVER] == []


#: What happens around a takeover: bytes arrive on a side's transport, mitmproxy takes a read
#: out of a side's stream, the start hook is answered, the layer's wake-ups run.
actions = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.sampled_from([PAGE, SERVER])),
        st.tuples(st.just("read"), st.sampled_from([PAGE, SERVER])),
        st.tuples(st.just("take"), st.sampled_from([PAGE, SERVER])),
        st.tuples(st.just("hand"), st.none()),
        st.tuples(st.just("release"), st.none()),
        st.tuples(st.just("wakeups"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    mode=st.sampled_from([MOCK, INTERCEPT]),
    hold=st.booleans(),
    sizes=st.lists(st.sampled_from([0, 1, 5, 125, 126, 3000, 40_000]), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 20), min_size=1, max_size=12),
    actions=actions,
)
def test_whatever_the_order_of_reads_and_takeover_messages_keep_theirs(
    mode: str, hold: bool, sizes: list[int], cuts: list[int], actions: list[Any]
) -> None:
    """Each side's messages, cut into pieces that arrive whenever, read by mitmproxy
    whenever (and handed over at once, or after other events), with the start hook answered
    whenever: the route gets them all, in order."""
    sides = [PAGE] if mode == MOCK else [PAGE, SERVER]
    sent = {
        side: [(f"{side}{i}:" + "t" * n) if i % 2 else bytes([i]) * n for i, n in enumerate(sizes)]
        for side in sides
    }
    pending = {}
    for side in sides:
        wire = frames(side, sent[side])
        step = max(1, len(wire) // (sum(cuts) or 1))
        parts, pos = [], 0
        for c in cuts:
            parts.append(wire[pos : pos + c * step])
            pos += c * step
        parts.append(wire[pos:])
        pending[side] = [p for p in parts if p]
    with Harness(mode=mode, io=OWN, hold_start_hook=hold, limit=LIMIT) as h:

        def waits(side: Side) -> bool:  # a read of that side waits for its turn
            return any(s == side for s, _ in h.waiting)

        for what, side in actions:
            if side is not None and side not in sides:
                continue
            if what == "arrive" and pending[side]:
                h.ios[side].arrive(pending[side].pop(0))
            elif what in ("read", "take") and not h.owned(side) and not waits(side):
                if what == "read":
                    mitmproxy_reads_once(h, side)
                else:  # read, but handed over later: its turn comes after other events
                    h.read_waits_its_turn(side)
            elif what == "hand" and h.waiting:
                h.hand_over()
            elif what == "release" and h.held:
                h.release_hook()
            elif what == "wakeups":
                h.flush_injected()
        # then everything else: the hook answered, the rest arrives, mitmproxy reads its
        # stream dry after each arrival (as its handler does), the wake-ups run
        if h.held:
            h.release_hook()
        while h.waiting:
            h.hand_over()
        for side in sides:
            while mitmproxy_reads_once(h, side):
                pass
            for part in pending[side]:
                h.receive(side, part)
        h.flush_injected()
        for side in sides:
            assert h.owned(side), f"the layer never took the {side} over"
            assert h.got[side] == sent[side]
            assert [type(m) for m in h.got[side]] == [type(m) for m in sent[side]]
            assert h.closes[side] == []


# --- end to end ------------------------------------------------------------------------------

HOOKS_OFF = ("--set", "wsroute_message_hooks=false")

ROUTES = """
    from mitm_wsroute import route_web_socket

    @route_web_socket("**/forward")
    def forward(ws):
        ws.connect_to_server()

    @route_web_socket("**/types")
    def types(ws):
        # the route's server-side handler sees each message: the client is told its type
        server = ws.connect_to_server()
        server.on_message(lambda m: ws.send(f"{type(m).__name__}:{len(m)}"))
"""


def server_frame(payload: bytes, opcode: int, fin: bool = True) -> bytes:
    n = len(payload)
    if n < 126:
        size = bytes([n])
    elif n < 65536:
        size = b"\x7e" + struct.pack("!H", n)
    else:
        size = b"\x7f" + struct.pack("!Q", n)
    return bytes([(0x80 if fin else 0) | opcode]) + size + payload


def burst(start: int, count: int) -> tuple[list[str | bytes], bytes]:
    """`count` messages from number `start` on (text, binary, one in three frames, some over
    125 and 65535 bytes), and their frames as the server writes them."""
    messages: list[str | bytes] = []
    wire = b""
    for i in range(start, start + count):
        kind = i % 4
        if kind == 0:
            m: str | bytes = f"text {i}"
            wire += server_frame(m.encode(), 1)
        elif kind == 1:
            m = bytes([i % 256]) * (200 if i % 8 == 1 else 70_000)
            wire += server_frame(m, 2)
        elif kind == 2:  # fragmented, a ping between its frames
            m = f"frag {i} ".encode() * 3
            wire += (
                server_frame(m[:4], 2, fin=False)
                + server_frame(b"ping", 9)
                + server_frame(m[4:10], 0, fin=False)
                + server_frame(m[10:], 0)
            )
        else:
            m = "é" * 100 + str(i)
            wire += server_frame(m.encode(), 1)
        messages.append(m)
    return messages, wire


async def greeting_server(rounds: int) -> tuple[asyncio.Server, int, list[str | bytes]]:
    """A server whose 101 and first messages go out in one write; then it keeps writing
    bursts of messages (one write each) and reads until the peer goes."""
    first, head_frames = burst(0, 6)
    expected = list(first)
    later = []
    for r in range(rounds):
        ms, wire = burst(6 + 6 * r, 6)
        expected += ms
        later.append(wire)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        writer.write(switching_protocols(head) + head_frames)
        for wire in later:
            await asyncio.sleep(0)  # may come in the same read as what came before, or not
            writer.write(wire)
        await answer_close(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], expected


async def answer_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the client's frames (pongs, then its close, answered), then close."""
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n >= 126:
                n = int.from_bytes(await reader.readexactly(2 if n == 126 else 8))
            await reader.readexactly(4 + n)  # masked
            if b0 & 0x0F == 8:
                writer.write(b"\x88\x02\x03\xe8")
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    writer.close()


@pytest.mark.parametrize("hooks", [False, True], ids=["hooks_off", "hooks_on"])
async def test_messages_in_the_same_segment_as_the_101_come_first_and_in_order(
    mitmdump: Any, hooks: bool
) -> None:
    server, port, expected = await greeting_server(rounds=5)
    p = mitmdump(ROUTES, "--set", f"wsroute_message_hooks={str(hooks).lower()}")
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/forward", proxy=p.proxy, max_size=None, compression=None
        ) as ws:
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in expected]
            assert got == expected
            assert [type(m) for m in got] == [type(m) for m in expected]
    finally:
        server.close()
    if not hooks:
        await p.async_wait_for(r"the layer reads and writes the server's connection itself")
    assert "routed socket has crashed" not in p.output


async def test_the_route_gets_them_in_order_and_with_their_types(mitmdump: Any) -> None:
    server, port, expected = await greeting_server(rounds=5)
    p = mitmdump(ROUTES, *HOOKS_OFF)
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/types", proxy=p.proxy, max_size=None, compression=None
        ) as ws:
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in expected]
    finally:
        server.close()
    assert got == [f"{type(m).__name__}:{len(m)}" for m in expected]
    assert "routed socket has crashed" not in p.output


def compressed_burst(count: int) -> tuple[list[str | bytes], bytes]:
    """`count` messages, text and binary, each compressed in one frame (permessage-deflate,
    one compressor for all: context takeover), and their frames."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    messages: list[str | bytes] = []
    wire = b""
    for i in range(count):
        m: str | bytes = f"text {i} " * 20 if i % 2 else bytes([i]) * 300
        raw = m.encode() if isinstance(m, str) else m
        body = (compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        wire += server_frame(body, 0x40 | (1 if isinstance(m, str) else 2))  # RSV1
        messages.append(m)
    return messages, wire


async def trickling_server(
    tls: ssl.SSLContext | None = None, deflate: bool = False
) -> tuple[asyncio.Server, int, list[str | bytes]]:
    """A server whose 101 goes out with its first byte, then every other byte in a write of
    its own: mitmproxy reads them one at a time, around the takeover (Autobahn's 4.1.5)."""
    expected, wire = compressed_burst(6) if deflate else burst(0, 4)
    extensions = "permessage-deflate" if deflate else ""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        writer.write(switching_protocols(head, extensions) + wire[:1])
        for i in range(1, 300):  # the first messages, byte by byte; then the rest at once
            await asyncio.sleep(0.00001)
            writer.write(wire[i : i + 1])
        writer.write(wire[300:])
        await answer_close(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1], expected


@pytest.mark.parametrize("transport", ["ws", "wss", "wss+deflate"])
@pytest.mark.parametrize("hooks", [False, True], ids=["hooks_off", "hooks_on"])
async def test_bytes_that_trickle_in_around_the_takeover_keep_their_order(
    mitmdump: Any, hooks: bool, transport: str, tmp_path: Path
) -> None:
    scheme, deflate = transport.split("+")[0], transport.endswith("deflate")
    tls = None
    if scheme == "wss":  # the layer then drives mitmproxy's TLS connections itself
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(*make_cert(tmp_path))
    server, port, expected = await trickling_server(tls, deflate)
    p = mitmdump(ROUTES, "--set", f"wsroute_message_hooks={str(hooks).lower()}")
    try:
        for _ in range(5):  # each takeover races the bytes' reads differently
            async with connect(
                f"{scheme}://127.0.0.1:{port}/forward",
                proxy=p.proxy,
                max_size=None,
                compression="deflate" if deflate else None,
                ssl=p.ca() if tls else None,
            ) as ws:
                got = [await asyncio.wait_for(ws.recv(), 10) for _ in expected]
                assert got == expected
    finally:
        server.close()
    assert "failing the server" not in p.output
