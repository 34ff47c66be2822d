"""Every read path of the layer against wsproto as the oracle (issue #19, item 14).

Random frame sequences (text and binary messages, fragmented or not, text cut inside a
character, pings and pongs between fragments, messages over ``wsroute_max_message_size``,
invalid UTF-8, protocol errors, a close frame or none) are written as a side's peer writes
them (masked from the client, compressed with permessage-deflate where negotiated), cut at
random read boundaries, and fed to the real layer on each of its read paths:

- ``events``: mitmproxy hands the layer what it reads, without extensions (``plain``) and with
  permessage-deflate negotiated (``deflate``);
- ``own``: the layer reads the transports itself (`_own_io`, `_fast_receive`, `_run`), with
  the message hooks off (as in mitmdump) and on, on both of the above, the wake-ups it
  asks for run at once or after later reads.

The route must see what wsproto (a server for the client's bytes, a client for the server's)
reads from the same bytes: the same messages, as exactly `str` and `bytes`, and the same
close (code); the peer gets the close frame wsproto's code calls for; in a mock each ping is
answered; and what the route's handler sends back for each message (as an echo does) reaches
the peer in order, before the close frame, however the reads were cut. A mock (the page side's
handlers), an intercept (both sides' handlers, their reads interleaved), and an intercept
without handlers, where the other side's peer must read the messages wsproto read.

Then one fixed stream of single-frame and fragmented messages, on every path: cut in two at
every offset, and in 1-byte reads.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import websocket
from mitmproxy.proxy.layers import websocket as wsl
from wsproto.frame_protocol import Opcode

from mitm_wsroute.addon_hooks import message_hooks
from mitm_wsroute.connection import PAGE, SERVER, Side
from tests.layer_harness import (
    COMPRESSED,
    DEFLATE,
    EVENTS,
    FAST,
    INTERCEPT,
    MOCK,
    OWN,
    Harness,
    Sender,
    oracle,
    reply,
)

PATHS = [FAST, DEFLATE]
SMALL_LIMIT = 150  # wsroute_max_message_size: many messages are over it
BIG_LIMIT = 100_000  # lets a message with an 8-byte length through


# --- frame sequences -------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    data: str | bytes
    #: Where the payload's bytes are cut into frames (text may be cut inside a character).
    cuts: tuple[int, ...] = ()
    #: A control frame (opcode, payload) after each frame but the last, or None.
    controls: tuple[tuple[Opcode, bytes] | None, ...] = ()


@dataclass(frozen=True)
class Control:
    opcode: Opcode
    payload: bytes


@dataclass(frozen=True)
class Close:
    code: int | None
    reason: str = ""


@dataclass(frozen=True)
class Raw:
    """Bytes that break the protocol (or end it), as the name says."""

    name: str


@dataclass(frozen=True)
class CloseMidMessage:
    """A close frame between the fragments of a message (legal: control frames may come
    between fragments); the message never completes."""

    first: bytes
    code: int


@dataclass(frozen=True)
class InvalidText:
    """A text message, fragmented, with bytes that are no UTF-8 at a character boundary."""

    text: str
    at: int
    bad: bytes
    cuts: tuple[int, ...]


texts = st.one_of(
    st.text(max_size=12),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(1, 60)),
)
binaries = st.one_of(
    st.binary(max_size=12),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=5), st.integers(1, 100)),
)
bigs = st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(65536, 66000))
controls = st.tuples(st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(["text"] * 5 + ["binary"] * 4 + ["big"]))
    data: str | bytes = draw(texts if kind == "text" else binaries if kind == "binary" else bigs)
    n = len(data.encode() if isinstance(data, str) else data)
    frames = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))  # most messages come in one frame
    cuts = tuple(
        sorted(draw(st.lists(st.integers(0, n), min_size=frames - 1, max_size=frames - 1)))
    )
    between = tuple(draw(st.lists(st.none() | controls, min_size=len(cuts), max_size=len(cuts))))
    return Message(data, cuts, between)


RAW_ERRORS = [
    "wrong mask",
    "reserved opcode",
    "rsv2",
    "fragmented ping",
    "stray continuation",
    "ping too long",
    "non-minimal length",
    "close 1004",
    "close 1006",
    "close 999",
    "close one byte",
    "close reason not utf-8",
    "new message inside a fragmented one",
]

terminals = st.one_of(
    st.none(),
    st.builds(
        Close,
        st.sampled_from([None, 1000, 1001, 1003, 1008, 1011, 3000, 4999]),
        st.sampled_from(["", "bye", "é" * 30]),
    ),
    st.builds(Raw, st.sampled_from(RAW_ERRORS)),
    st.builds(CloseMidMessage, st.binary(max_size=20), st.sampled_from([1000, 4000])),
    st.text(max_size=20).flatmap(
        lambda t: st.builds(
            InvalidText,
            st.just(t),
            st.integers(0, len(t)),
            st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"]),
            st.lists(st.integers(0, len(t.encode()) + 3), max_size=2).map(
                lambda c: tuple(sorted(c))
            ),
        )
    ),
)

Item = Message | Control
streams = st.tuples(
    st.lists(
        st.one_of(messages(), messages(), messages(), controls.map(lambda c: Control(*c))),
        max_size=10,
    ),
    terminals,
)


def frame(masked: bool, b0: int, payload: bytes, length: bytes | None = None) -> bytes:
    """A raw frame, masked with a zero key (the payload stays as it is) when `masked`."""
    if length is None:
        length = bytes([len(payload)]) if len(payload) < 126 else b"\x7e" + len(payload).to_bytes(2)
    head = bytes([b0]) + bytes([length[0] | (0x80 if masked else 0)]) + length[1:]
    return head + (b"\0\0\0\0" if masked else b"") + payload


def pieces(raw: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def wire(side: Side, items: list[Item], terminal: Any, compressed: bool) -> bytes:
    """The bytes a side's peer sends: `items`, then the terminal (a close, an error, or
    nothing)."""
    return b"".join(frames_of(side, items, terminal, compressed))


def frames_of(side: Side, items: list[Item], terminal: Any, compressed: bool) -> list[bytes]:
    """`wire`, frame by frame (an error of two frames as one)."""
    s = Sender(side, compressed)
    masked = side is PAGE
    out = []
    for item in items:
        if isinstance(item, Control):
            out.append(s.ping(item.payload) if item.opcode is Opcode.PING else s.pong(item.payload))
            continue
        text = isinstance(item.data, str)
        raw = item.data.encode() if isinstance(item.data, str) else item.data
        parts = pieces(raw, item.cuts)
        for i, part in enumerate(parts):
            opcode = (Opcode.TEXT if text else Opcode.BINARY) if i == 0 else Opcode.CONTINUATION
            out.append(s.data(opcode, part, i == len(parts) - 1))
            if i < len(parts) - 1 and (control := item.controls[i]) is not None:
                op, payload = control
                out.append(s.ping(payload) if op is Opcode.PING else s.pong(payload))
    t = terminal
    if isinstance(t, Close):
        out.append(s.close(t.code, t.reason if t.code is not None else None))
    elif isinstance(t, CloseMidMessage):
        out.append(s.data(Opcode.BINARY, t.first, False))
        out.append(s.close(t.code, ""))
    elif isinstance(t, InvalidText):
        raw = t.text[: t.at].encode() + t.bad + t.text[t.at :].encode()
        cuts = tuple(min(c, len(raw)) for c in t.cuts)
        parts = pieces(raw, cuts)
        for i, part in enumerate(parts):
            opcode = Opcode.TEXT if i == 0 else Opcode.CONTINUATION
            out.append(s.data(opcode, part, i == len(parts) - 1))
    elif isinstance(t, Raw):
        out.append(raw_error(t.name, masked, s))
    return [f for f in out if f]


def raw_error(name: str, masked: bool, s: Sender) -> bytes:
    close = 0x88
    return {
        "wrong mask": frame(not masked, 0x81, b"hi"),
        "reserved opcode": frame(masked, 0x83, b""),
        "rsv2": frame(masked, 0xA2, b"x"),
        "fragmented ping": frame(masked, 0x09, b""),
        "stray continuation": frame(masked, 0x80, b"x"),
        "ping too long": frame(masked, 0x89, b"p" * 126),
        "non-minimal length": frame(masked, 0x82, b"hello", b"\x7e\x00\x05"),
        "close 1004": frame(masked, close, (1004).to_bytes(2)),
        "close 1006": frame(masked, close, (1006).to_bytes(2)),
        "close 999": frame(masked, close, (999).to_bytes(2)),
        "close one byte": frame(masked, close, b"\x03"),
        "close reason not utf-8": frame(masked, close, (1000).to_bytes(2) + b"\xff"),
        "new message inside a fragmented one": s.data(Opcode.TEXT, b"start", False)
        + s.data(Opcode.BINARY, b"again", True),
    }[name]


# --- the property ----------------------------------------------------------------------------


#: An intercept without handlers: each message goes on to the other side's peer.
FORWARD = "forward"


def run(data: st.DataObject, mode: str, path: str, io: str, hooks: bool, limit: int) -> None:
    if mode == FORWARD:  # one side's peer writes; the other's reads what went on
        sides = [data.draw(st.sampled_from([PAGE, SERVER]), label="writes")]
    else:
        sides = [PAGE] if mode == MOCK else [PAGE, SERVER]
    wires = {}
    for side in sides:
        items, terminal = data.draw(streams, label=f"{side} frames")
        wires[side] = wire(side, items, terminal, path in COMPRESSED)
    expected = {side: oracle(wires[side], side, path in COMPRESSED, limit) for side in sides}
    reads: list[tuple[Side, bytes]] = []
    per_side: dict[Side, list[bytes]] = {}
    for side in sides:
        w = wires[side]
        cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(w) - 1)), max_size=12))))
        per_side[side] = [p for p in pieces(w, tuple(c for c in cuts if c < len(w))) if p]
    order = data.draw(st.lists(st.sampled_from(sides), min_size=sum(map(len, per_side.values()))))
    for side in order:  # interleaved; each side's reads in order
        if not per_side[side]:
            side = side.other if side.other in per_side else side
        if per_side[side]:
            reads.append((side, per_side[side].pop(0)))
    for side in sides:
        reads += [(side, p) for p in per_side[side]]
    flushes = data.draw(st.lists(st.booleans(), min_size=len(reads), max_size=len(reads)))
    forward = mode == FORWARD
    with Harness(
        mode=INTERCEPT if forward else mode, path=path, io=io, hooks=hooks, limit=limit,
        replies=not forward,
    ) as h:  # fmt: skip
        if forward:
            for side in (PAGE, SERVER):
                h.connection.handlers[side].message = None
        if io == OWN:
            assert all(h.owned(side) for side in sides), "the layer did not take the connections"
        for (side, chunk), flush in zip(reads, flushes, strict=True):
            h.receive(side, chunk, flush=flush or io == EVENTS)
        h.flush_injected()
        if forward:  # the other side's peer got what wsproto read, as `str` and `bytes`
            (side,) = sides
            want, got = expected[side].messages, h.peer_messages[side.other]
            assert got == want
            assert [type(m) for m in got] == [type(m) for m in want], "str/bytes types"
            return
        for side in reversed(sides):  # the server's connection ends first
            h.connection_lost(side)
        for side in sides:
            h.check(side, expected[side])


SETTINGS = settings(max_examples=250, deadline=None)


@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(
    data=st.data(),
    mode=st.sampled_from([MOCK, INTERCEPT, FORWARD]),
    hooks=st.booleans(),
    limit=st.sampled_from([SMALL_LIMIT, BIG_LIMIT]),
)
def test_mitmproxy_reads(
    path: str, data: st.DataObject, mode: str, hooks: bool, limit: int
) -> None:
    run(data, mode, path, EVENTS, hooks, limit)


@pytest.mark.parametrize("hooks", [False, True], ids=["hooks_off", "hooks_on"])
@SETTINGS
@given(
    data=st.data(),
    mode=st.sampled_from([MOCK, INTERCEPT, FORWARD]),
    path=st.sampled_from(PATHS),
    limit=st.sampled_from([SMALL_LIMIT, BIG_LIMIT]),
)
def test_the_layer_reads(
    hooks: bool, data: st.DataObject, mode: str, path: str, limit: int
) -> None:
    run(data, mode, path, OWN, hooks, limit)


# --- split reads, exhaustively ---------------------------------------------------------------

READERS = [(EVENTS, False), (EVENTS, True), (OWN, False), (OWN, True)]
READER_IDS = ["events-hooks_off", "events-hooks_on", "own-hooks_off", "own-hooks_on"]


def mixed(side: Side, compressed: bool, ending: str) -> bytes:
    """Single-frame and fragmented messages, control frames between fragments, a character
    cut between frames, one message over the limit in bytes but not in characters; then a
    close; or a message over the limit (`SMALL_LIMIT`) and what comes after it; or a
    protocol error the codec finds only if it reads the frame before it too.

    Compressed, no control frame comes between fragments: wsproto then reads the rest of the
    message as if uncompressed (python-hyper/wsproto pull request 205, open), and so does the
    layer; `test_read_paths` compares with wsproto, so it agrees there."""
    s = Sender(side, compressed)
    cut = "fragmént".encode()
    out = [
        s.data(Opcode.TEXT, b"hello", True),
        s.data(Opcode.BINARY, b"\x00\xff" * 10, True),
        s.data(Opcode.TEXT, cut[:6], False),  # inside the é
        b"" if compressed else s.ping(b"between"),
        s.data(Opcode.CONTINUATION, cut[6:], True),
        s.data(Opcode.BINARY, bytes(range(140)), True),
        s.data(Opcode.BINARY, b"one", False),
        b"" if compressed else s.pong(b"unasked"),
        s.data(Opcode.CONTINUATION, b"", False),
        s.data(Opcode.CONTINUATION, b"three", True),
        s.data(Opcode.TEXT, b"", True),
        s.data(Opcode.BINARY, b"", True),
        s.data(Opcode.TEXT, ("ü" * 100).encode(), True),  # 200 bytes, 100 characters
        s.ping(b""),
        s.data(Opcode.TEXT, b"after", True),
    ]
    if ending == "close":
        out.append(s.close(1000, "bye"))
    elif ending == "interleaved":  # a new message inside a fragmented one: 1002
        out += [
            s.data(Opcode.TEXT, b"start", False),
            s.data(Opcode.BINARY, b"again", True),
            s.close(1000, "too late"),
        ]
    else:
        out += [
            s.data(Opcode.BINARY, b"x" * 100, False),
            s.data(Opcode.CONTINUATION, b"y" * 100, True),  # 202 with its first frame's header
            s.ping(b"late"),
            s.data(Opcode.TEXT, b"dropped", True),
            s.close(4000, "late"),
        ]
    return b"".join(out)


def feed_reads(h: Harness, reads: list[tuple[Side, bytes]], flush: bool = True) -> None:
    for side, chunk in reads:
        h.receive(side, chunk, flush=flush)
    h.flush_injected()
    for side in reversed(h.sides):
        h.connection_lost(side)


@pytest.mark.parametrize(("io", "hooks"), [(EVENTS, False), (OWN, False)], ids=["events", "own"])
@pytest.mark.parametrize("path", PATHS)
def test_a_stream_split_in_two_at_every_offset(path: str, io: str, hooks: bool) -> None:
    # An intercept: the route reads both sides (their two reads interleaved), each cut at
    # the same offset; the client's ends in a protocol error, the server's too big a message.
    sides = [PAGE, SERVER]
    ending = {PAGE: "interleaved", SERVER: "too big"}
    wires = {side: mixed(side, path in COMPRESSED, ending[side]) for side in sides}
    expected = {side: oracle(wires[side], side, path in COMPRESSED, SMALL_LIMIT) for side in sides}
    assert len(expected[PAGE].messages) == len(expected[SERVER].messages) == 9
    assert expected[PAGE].close == (1006, "") and expected[SERVER].close == (1009, None)
    longest = max(len(w) for w in wires.values())
    for offset in range(longest + 1):
        reads = [
            (side, part)
            for i in (0, 1)
            for side in sides
            if (part := (wires[side][:offset], wires[side][offset:])[i])
        ]
        with Harness(
            mode=INTERCEPT, path=path, io=io, hooks=hooks, limit=SMALL_LIMIT, replies=True
        ) as h:
            feed_reads(h, reads)
            for side in sides:
                h.check(side, expected[side])


#: Who reads, and when the layer's wake-ups run (only the own-I/O path asks for them).
ONE_BYTE_READERS = [(io, hooks, True) for io, hooks in READERS] + [
    (OWN, hooks, False) for hooks in (False, True)
]


@pytest.mark.parametrize("ending", ["close", "too big", "interleaved"])
@pytest.mark.parametrize("mode", [MOCK, INTERCEPT])
@pytest.mark.parametrize(
    ("io", "hooks", "flush"),
    ONE_BYTE_READERS,
    ids=[*READER_IDS, "own-hooks_off-wakeups_late", "own-hooks_on-wakeups_late"],
)
@pytest.mark.parametrize("path", PATHS)
def test_a_stream_in_one_byte_reads(
    path: str, io: str, hooks: bool, flush: bool, mode: str, ending: str
) -> None:
    sides = [PAGE] if mode == MOCK else [PAGE, SERVER]
    wires = {side: mixed(side, path in COMPRESSED, ending) for side in sides}
    reads = [
        (side, wires[side][i : i + 1])
        for i in range(max(map(len, wires.values())))
        for side in sides
        if i < len(wires[side])
    ]
    with Harness(mode=mode, path=path, io=io, hooks=hooks, limit=SMALL_LIMIT, replies=True) as h:
        feed_reads(h, reads, flush)
        for side in sides:
            h.check(side, oracle(wires[side], side, path in COMPRESSED, SMALL_LIMIT))


@pytest.mark.parametrize("path", [DEFLATE])
@pytest.mark.parametrize("text", [True, False])
def test_a_ping_between_compressed_fragments(path: str, text: bool) -> None:
    # RFC 6455 §5.4 allows control frames between fragments; wsproto 1.2 then forgot that the
    # message was compressed (text failed with 1007, binary came out corrupted).
    message = "hello " * 20 + "world"
    raw = message.encode()
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    compressed = (compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    half = len(compressed) // 2

    def frame(b0: int, payload: bytes) -> bytes:  # a client's frame, masked with a zero key
        return bytes([b0, 0x80 | len(payload)]) + b"\0\0\0\0" + payload

    opcode = 0x1 if text else 0x2
    wire = (
        frame(0x40 | opcode, compressed[:half])  # RSV1, not final
        + frame(0x89, b"ping")
        + frame(0x80, compressed[half:])  # continuation, final
    )
    with Harness(path=path, limit=1000) as h:
        h.receive(PAGE, wire)
        assert h.got[PAGE] == [message if text else raw]
        assert h.closes[PAGE] == []
        assert h.peer_pongs[PAGE] == [b"ping"]  # a mock answers the ping itself


# --- what waits goes first -----------------------------------------------------------------------


@pytest.mark.parametrize("io", [EVENTS, OWN])
def test_what_a_route_sent_before_an_injected_message_goes_before_it(io: str) -> None:
    # A route sends from outside the layer's events (an async handler, another thread): the
    # message waits for the wake-up the layer asked for. Another addon's
    # ``inject.websocket`` that comes meanwhile goes after it.
    with Harness(io=io) as h:
        h.route[PAGE].send("from the route")
        assert h.injected, "the layer asked for a wake-up"
        wakeups, h.injected[:] = list(h.injected), []
        injected = websocket.WebSocketMessage(Opcode.TEXT, False, b"from an addon")
        h.feed(wsl.WebSocketMessageInjected(h.flow, injected))
        for wakeup in wakeups:
            h.feed(wakeup)
        assert h.peer_messages[PAGE] == ["from the route", "from an addon"]


# --- however the reads are cut, the same ------------------------------------------------------


def acting(h: Harness) -> None:
    """The route acts on each message from the client by its length: replies once or twice
    (in an intercept, the first goes to the server), not at all, or closes the client's side
    with a code of its own."""
    ws, got = h.route[PAGE], h.got[PAGE]
    first = ws if h.mode == MOCK else h.route[SERVER]

    def on_message(message: str | bytes) -> None:
        got.append(message)
        act = len(message) % 5
        if act == 4:
            ws.close(code=4000 + len(message) % 100, reason="enough")
        elif act == 3:
            first.send(message)
            ws.send(reply(message))
        elif act != 2:
            ws.send(reply(message))

    ws.on_message(on_message)


class Meddler:
    """Another addon's ``websocket_message`` hook: by each message's length, drops it,
    makes a text message no UTF-8, doubles it, or leaves it."""

    def websocket_message(self, flow: Any) -> None:
        message = flow.websocket.messages[-1]
        act = len(message.content) % 4
        if act == 0:
            message.drop()
        elif act == 1:
            message.content = b"\xff" + message.content
        elif act == 2:
            message.content *= 2


def outcome(h: Harness) -> tuple[Any, ...]:
    """Everything the route, the peers and the flow saw, and what the proxy closed."""
    assert h.flow.websocket is not None
    flow = [(m.from_client, m.type, m.content, m.dropped) for m in h.flow.websocket.messages]
    return flow, h.tcp_closed, *(
        (
            h.got[side], [type(m) for m in h.got[side]], h.closes[side], h.peer_messages[side],
            [type(m) for m in h.peer_messages[side]], h.peer_framing[side], h.peer_pings[side],
            h.peer_pongs[side], h.peer_closes[side],
        )
        for side in h.sides
    )  # fmt: skip


def acted(
    reads: list[tuple[Side, bytes]], flushes: list[bool], releases: list[int], late: bool,
    mode: str, path: str, io: str, hooks: bool, limit: int, meddle: bool,
) -> tuple[Any, ...]:  # fmt: skip
    """The `outcome` of `reads` through a routed socket: a mock or an intercept whose route
    is `acting`, or an intercept without handlers (`FORWARD`), under a `Meddler` with the
    hooks on if `meddle`. After each read, the wake-ups run (`flushes`) and, with `late`,
    some of mitmproxy's message hooks held back so far are answered (`releases`; the rest at
    the end); without, each is answered at once."""
    with Harness(
        mode=MOCK if mode == MOCK else INTERCEPT, path=path, io=io, hooks=hooks, limit=limit
    ) as h:
        if mode == FORWARD:
            for side in (PAGE, SERVER):
                h.connection.handlers[side].message = None
        else:
            acting(h)
        if hooks and meddle:
            h.socket.hooks = message_hooks(SimpleNamespace(chain=[Meddler()]), skip=None)
        if late:  # mitmproxy's hooks wait: the layer waits, what is read meanwhile too
            h.hold_hooks = 1_000_000
        for (side, chunk), now, release in zip(reads, flushes, releases, strict=True):
            h.receive(side, chunk, flush=now or io == EVENTS)
            for _ in range(min(release, len(h.held))):
                h.release_hook()
        h.hold_hooks = 0
        while h.held:
            h.release_hook()
        h.flush_injected()
        for side in reversed(h.sides):  # the server's connection ends first
            h.connection_lost(side)
        return outcome(h)


@SETTINGS
@given(
    data=st.data(),
    mode=st.sampled_from([MOCK, INTERCEPT, FORWARD]),
    path=st.sampled_from(PATHS),
    reader=st.sampled_from(READERS),
    limit=st.sampled_from([SMALL_LIMIT, BIG_LIMIT]),
    meddle=st.booleans(),
)
def test_a_route_acts_the_same_however_the_reads_are_cut(
    data: st.DataObject, mode: str, path: str, reader: tuple[str, bool], limit: int, meddle: bool
) -> None:
    # The client's stream, in one read on one read path and cut at random on the other
    # (wake-ups run at once or later; mitmproxy's message hooks answered at once or after
    # later reads): the route sees the same, the peers get the same messages, pongs and
    # closes, and the flow keeps the same messages, in the same order, as the route replies,
    # stays silent or closes (or, without handlers, as another addon's hook drops and changes
    # messages).
    io, hooks = reader
    items, terminal = data.draw(streams, label="frames")
    w = wire(PAGE, items, terminal, path in COMPRESSED)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(w) - 1)), max_size=12))))
    reads = [p for p in pieces(w, tuple(c for c in cuts if c < len(w))) if p]
    flushes = data.draw(st.lists(st.booleans(), min_size=len(reads), max_size=len(reads)))
    late = hooks and not meddle and data.draw(st.booleans(), label="hooks answered late")
    releases = data.draw(st.lists(st.integers(0, 3), min_size=len(reads), max_size=len(reads)))
    other = EVENTS if io == OWN else OWN
    reference = acted([(PAGE, w)], [True], [0], False, mode, path, other, hooks, limit, meddle)
    cut = [(PAGE, r) for r in reads]
    assert acted(cut, flushes, releases, late, mode, path, io, hooks, limit, meddle) == reference


@SETTINGS
@given(
    data=st.data(),
    mode=st.sampled_from([INTERCEPT, FORWARD]),
    path=st.sampled_from(PATHS),
    reader=st.sampled_from(READERS),
    limit=st.sampled_from([SMALL_LIMIT, BIG_LIMIT]),
    meddle=st.booleans(),
)
def test_an_intercept_acts_the_same_however_each_sides_reads_are_cut(
    data: st.DataObject, mode: str, path: str, reader: tuple[str, bool], limit: int, meddle: bool
) -> None:
    # Both peers write, their frames in one order. Each frame in a read of its own on one read
    # path, and each run of one side's frames in reads cut at random on the other (what one
    # side sent in between stays in between; mitmproxy's hooks answered at once or late):
    # the same for the route, the peers and the flow.
    io, hooks = reader
    frames = {
        side: frames_of(side, *data.draw(streams, label=f"{side} frames"), path in COMPRESSED)
        for side in (PAGE, SERVER)
    }
    order = data.draw(st.permutations([PAGE] * len(frames[PAGE]) + [SERVER] * len(frames[SERVER])))
    sequence = [(side, frames[side].pop(0)) for side in order]
    cut: list[tuple[Side, bytes]] = []
    for side, run in itertools.groupby(sequence, key=lambda item: item[0]):
        joined = b"".join(f for _, f in run)
        cuts = data.draw(st.lists(st.integers(1, max(1, len(joined) - 1)), max_size=4))
        cut += [(side, p) for p in pieces(joined, tuple(sorted(set(cuts)))) if p]
    flushes = data.draw(st.lists(st.booleans(), min_size=len(cut), max_size=len(cut)))
    late = hooks and not meddle and data.draw(st.booleans(), label="hooks answered late")
    releases = data.draw(st.lists(st.integers(0, 3), min_size=len(cut), max_size=len(cut)))
    other = EVENTS if io == OWN else OWN
    n = len(sequence)
    reference = acted(sequence, [True] * n, [0] * n, False, mode, path, other, hooks, limit, meddle)
    assert acted(cut, flushes, releases, late, mode, path, io, hooks, limit, meddle) == reference
