"""The codec (`codec`, `deflate`) against wsproto as the oracle: what it reads from any byte
stream cut into any reads, what it writes, and permessage-deflate with each parameter."""

from __future__ import annotations

import random
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import wsproto.events as wse
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from mitm_wsroute.codec import (
    CLOSED,
    LOCAL_CLOSING,
    OPEN,
    REMOTE_CLOSING,
    Close,
    Codec,
    Failure,
    Fragment,
    Ping,
    Pong,
    unmask,
    unmask_in_python,
)
from mitm_wsroute.connection import PAGE, SERVER
from mitm_wsroute.deflate import Deflate, negotiated, relayable
from tests.layer_harness import FixedPerMessageDeflate, oracle
from tests.test_read_paths import pieces, streams, wire

messages = st.one_of(st.text(max_size=300), st.binary(max_size=70_000))


def client_frame(message: str | bytes, fin: bool = True) -> bytes:
    """A frame as wsproto's client writes it (masked, random key)."""
    return bytes(FrameProtocol(client=True, extensions=[]).send_data(message, fin))


def server_frame(message: str | bytes) -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(message, True))


def wsproto_reads(data: bytes, client: bool, extension: Any = None) -> list[Any]:
    """The events wsproto's server (or client) reads from `data`, messages joined."""
    conn = Connection(
        ConnectionType.CLIENT if client else ConnectionType.SERVER,
        extensions=[extension] if extension else None,
    )
    conn.receive_data(data)
    out: list[Any] = []
    parts: list[Any] = []
    for ev in conn.events():
        if isinstance(ev, wse.Message):
            parts.append(ev.data)
            if ev.message_finished:
                out.append("".join(parts) if isinstance(ev.data, str) else b"".join(parts))
                parts = []
        elif isinstance(ev, wse.Ping | wse.Pong):
            out.append((type(ev).__name__,))
        elif isinstance(ev, wse.CloseConnection):
            out.append((int(ev.code), ev.reason))
    return out


def joined(events: list[Any]) -> list[Any]:
    """The codec's events, messages joined, as `wsproto_reads` puts them."""
    out: list[Any] = []
    parts: list[Any] = []
    for ev in events:
        if isinstance(ev, Fragment):
            parts.append(ev.data)
            if ev.message_finished:
                out.append("".join(parts) if isinstance(ev.data, str) else b"".join(parts))
                parts = []
        elif isinstance(ev, Ping | Pong):
            out.append((type(ev).__name__,))
        elif isinstance(ev, Close):
            out.append((1005 if ev.code is None else ev.code, ev.reason))
        else:
            assert isinstance(ev, Failure)
            out.append(ev.code)
    return out


def read(codec: Codec, reads: list[bytes]) -> list[Any]:
    events: list[Any] = []
    for data in reads:
        events += codec.receive(data)
    return events


# --- the oracle: random streams, random reads ------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from([PAGE, SERVER]), st.booleans())
def test_reads_what_wsproto_reads(data: st.DataObject, side: Any, compressed: bool) -> None:
    items, terminal = data.draw(streams)
    stream = wire(side, items, terminal, compressed)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=20))))
    codec = Codec(side is PAGE, Deflate() if compressed else None)
    events = read(codec, [p for p in pieces(stream, tuple(c for c in cuts if c < len(stream)))])
    want = oracle(stream, side, compressed, 0)
    got = joined(events)
    messages = [m for m in got if isinstance(m, str | bytes)]
    assert messages == want.messages
    assert all(type(a) is type(b) for a, b in zip(messages, want.messages, strict=True))
    pings = [ev.payload for ev in events if isinstance(ev, Ping)]
    assert pings == want.all_pings[: len(pings)] and len(pings) >= len(want.pings)
    last = events[-1] if events else None
    if want.close == (1006, ""):  # a protocol error, or the stream just ends
        if want.peer_close is None:
            assert not isinstance(last, Close | Failure)
        else:
            assert isinstance(last, Failure) and last.code == want.peer_close
    else:
        assert isinstance(last, Close)
        assert (last.code, last.reason) == (
            want.close if want.close != (None, None) else (None, "")
        )
    assert (not codec.head and not codec.left) or not codec.reading or last is None


@given(st.lists(messages, max_size=5), st.integers(1, 300))
def test_any_reads_of_whole_messages(ms: list[str | bytes], size: int) -> None:
    data = b"".join(client_frame(m) for m in ms)
    reads = [data[i : i + size] for i in range(0, len(data), size)]
    assert joined(read(Codec(True), reads)) == ms == wsproto_reads(data, client=False)


def test_a_frame_in_many_small_reads_is_read_as_it_comes() -> None:
    # linear in the reads: the frame's payload is handed over as it comes, never kept and
    # parsed again; at most the start of a header waits
    frame = client_frame(b"\x07" * 200_000) + client_frame("next")
    codec, got = Codec(True), []
    for i in range(0, len(frame), 64):
        got += codec.receive(frame[i : i + 64])
        assert len(codec.head) < 14
    assert joined(got) == [b"\x07" * 200_000, "next"]
    assert sum(1 for ev in got if isinstance(ev, Fragment)) > 3000


@given(messages, st.binary(min_size=4, max_size=4))
def test_writes_what_wsproto_reads(m: str | bytes, key: bytes) -> None:
    assert Codec(True).message(m) == server_frame(m)  # a server's: unmasked
    assert wsproto_reads(Codec(False).message(m), client=False) == [m]  # a client's: masked


@given(st.lists(st.text(min_size=1, max_size=20), min_size=2, max_size=5))
def test_writes_a_message_in_its_frames(parts: list[str]) -> None:
    frames = Codec(True).fragmented(list(parts))
    conn = Connection(ConnectionType.CLIENT)
    conn.receive_data(frames)
    got = [ev.data for ev in conn.events() if isinstance(ev, wse.TextMessage)]
    assert got == parts


@pytest.mark.parametrize("unmask", [unmask, unmask_in_python])
@given(payload=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4))
def test_unmask(unmask: Callable[[bytes, bytes], bytes], payload: bytes, key: bytes) -> None:
    masked = unmask(payload, key)
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert unmask(masked, key) == payload


@pytest.mark.parametrize(
    ("what", "data", "code"),
    [
        ("an unmasked client frame", b"\x81\x02hi", 1002),
        ("a 2-byte length under 126", b"\x82\xfe\x00\x05\0\0\0\0hello", 1002),
        (
            "an 8-byte length under 65536",
            b"\x82\xff" + struct.pack("!Q", 5) + b"\0\0\0\0hello",
            1002,
        ),
        ("an 8-byte length with its top bit", b"\x82\xff" + b"\x80" + b"\0" * 7, 1002),
        ("RSV1 without deflate", b"\xc1\x80\0\0\0\0", 1002),
        ("a reserved opcode", b"\x8b\x80\0\0\0\0", 1002),
        ("a fragmented ping", b"\x09\x80\0\0\0\0", 1002),
        ("a stray continuation", b"\x80\x80\0\0\0\0", 1002),
        ("invalid UTF-8", b"\x81\x82\0\0\0\0\xc3\x28", 1007),
        ("a close code 1005", b"\x88\x82\0\0\0\0\x03\xed", 1002),
        ("a close code 1014 is fine, 1015 not", b"\x88\x82\0\0\0\0\x03\xf7", 1002),
    ],
)
def test_protocol_errors(what: str, data: bytes, code: int) -> None:
    codec = Codec(True)
    assert joined(codec.receive(data + client_frame("after"))) == [code], what
    assert codec.receive(client_frame("more")) == []  # nothing more is read


def test_invalid_utf8_fails_as_soon_as_it_comes() -> None:
    # RFC 6455 §8.1: fail fast, in a frame not all there yet (Autobahn 6.4.3)
    frame = b"\x81\x8a\0\0\0\0" + "κό".encode() + b"\xf4\x90\x80\x80"
    assert joined(Codec(True).receive(frame[:-2])) == [1007]


def test_close_handshake_states() -> None:
    ours = Codec(True)
    assert ours.state is OPEN
    ours.close(1000, "bye")
    assert ours.state is LOCAL_CLOSING
    events = ours.receive(client_frame("late") + b"\x88\x82\0\0\0\0\x03\xe8")
    assert joined(events) == ["late", (1000, "")] and ours.state is LOCAL_CLOSING
    ours.receive_close()
    assert ours.state is CLOSED
    theirs = Codec(True)
    assert theirs.receive(b"\x88\x80\0\0\0\0") == [Close(None, "")]
    theirs.receive_close()
    assert theirs.state is REMOTE_CLOSING
    assert theirs.close(None) == b"\x88\x00" and theirs.state is CLOSED


# --- permessage-deflate ------------------------------------------------------------------------

PARAMS = [
    "permessage-deflate",
    "permessage-deflate; client_no_context_takeover",
    "permessage-deflate; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits=9; server_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
    "client_max_window_bits=12; server_max_window_bits=11",
]


def wsproto_deflate(header: str, fixed: bool = False) -> PerMessageDeflate:
    ext = FixedPerMessageDeflate() if fixed else PerMessageDeflate()
    ext.finalize(header)
    return ext


@pytest.mark.parametrize("header", PARAMS)
@given(ms=st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=3000)), max_size=6))
def test_deflate_both_ways_with_each_parameter(header: str, ms: list[str | bytes]) -> None:
    # the client's messages, compressed by wsproto's client, read by our server side
    client = FrameProtocol(client=True, extensions=[wsproto_deflate(header)])
    data = b"".join(bytes(client.send_data(m, True)) for m in ms)
    assert joined(Codec(True, negotiated(header, server=True)).receive(data)) == ms
    # ours, as a server, read by wsproto's client; and as a client, read by wsproto's server
    server = Codec(True, negotiated(header, server=True))
    data = b"".join(server.message(m) for m in ms)
    assert wsproto_reads(data, True, wsproto_deflate(header)) == ms
    ours = Codec(False, negotiated(header, server=False))
    data = b"".join(ours.fragmented([m[:3], m[3:]]) if len(m) > 3 else ours.message(m) for m in ms)
    assert wsproto_reads(data, False, wsproto_deflate(header)) == ms


def test_negotiated_parameters() -> None:
    assert negotiated("x-other", server=True) is None
    d = negotiated(PARAMS[-1], server=True)
    assert d is not None and (d.out_bits, d.in_reset, d.out_reset) == (11, True, True)
    d = negotiated("permessage-deflate; client_max_window_bits=8", server=False)
    assert d is not None and d.out_bits == 9  # zlib's smallest: it cannot compress with 8


def test_negotiated_reads_the_peers_parameters_too() -> None:
    header = "permessage-deflate; client_max_window_bits=12; server_max_window_bits=10"
    d = negotiated(header, server=True)
    assert d is not None and (d.out_bits, d.in_bits) == (10, 12)
    d = negotiated(header, server=False)
    assert d is not None and (d.out_bits, d.in_bits) == (12, 10)
    for bad in ("16", "7", "x", ""):  # not a window: 15, as when absent
        d = negotiated(f"permessage-deflate; server_max_window_bits={bad}", server=True)
        assert d is not None and d.out_bits == 15


#: Random messages, each sent twice: the copy is the whole next message, at a distance of 100
#: bytes (any window), then just over 2^9, 2^10, ... 2^14 bytes (within the next window, less
#: zlib's 262-byte lookahead). A copy fails a decompressor whose window is too small, or that
#: forgets between messages. (Within one message zlib inflates a distance past its window
#: while the output is in one piece: only a copy from an earlier message tells.)
PROBES = [m for n in (100, 700, 1500, 3000, 6000, 12000, 24000) for m in [random.randbytes(n)] * 2]
SIDES = [*PARAMS, "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"]


@pytest.mark.parametrize("source", SIDES)
@pytest.mark.parametrize("target", SIDES)
@pytest.mark.parametrize("client_to_server", [True, False])
def test_relayable_is_when_the_target_inflates_what_the_source_compressed(
    source: str, target: str, client_to_server: bool
) -> None:
    # Each side agreed on its own header (another addon changed the client's 101): a message
    # the source side's peer compressed, written on as it came, is read by the target's peer
    # (wsproto, which inflates with the window and context it agreed on) when `relayable`;
    # when not, and the source's peer keeps its context, it is not.
    peer = FrameProtocol(client=client_to_server, extensions=[wsproto_deflate(source)])
    wire = b"".join(bytes(peer.send_data(m, True)) for m in PROBES)
    ours = Codec(client_to_server, negotiated(source, server=client_to_server))
    on = Codec(not client_to_server, negotiated(target, server=not client_to_server))
    assert ours.deflate is not None and on.deflate is not None
    deflated = [ev.deflated for ev in ours.receive(wire) if isinstance(ev, Fragment)]
    assert len(deflated) == len(PROBES) and None not in deflated
    relayed = b"".join(on.relayed(False, [d]) for d in deflated if d is not None)
    read = wsproto_reads(relayed, not client_to_server, wsproto_deflate(target))
    if relayable(ours.deflate, on.deflate):
        assert read == PROBES
    elif not ours.deflate.in_reset:
        assert read != PROBES
    assert relayable(ours.deflate, on.deflate) or source != target  # the same: as it came


def test_nothing_is_relayable_without_deflate_on_both_sides() -> None:
    assert not relayable(None, Deflate()) and not relayable(Deflate(), None)
    assert not relayable(None, None)


def test_a_ping_between_compressed_fragments() -> None:
    # RFC 6455 §5.4: control frames may come between fragments; wsproto 1.2 then stops
    # decompressing (its pull request 205). Compressed by zlib directly.
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    body = (compressor.compress(b"hello " * 50) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    first, rest = body[:10], body[10:]
    assert len(rest) < 126
    data = (
        bytes([0x42, 0x80 | len(first)]) + b"\0\0\0\0" + first
        + b"\x89\x80\0\0\0\0"
        + bytes([0x80, 0x80 | len(rest)]) + b"\0\0\0\0" + rest
    )  # fmt: skip
    assert joined(Codec(True, Deflate()).receive(data)) == [("Ping",), b"hello " * 50]


def test_the_limit_a_message_read_in_pieces_broke_is_the_limit() -> None:
    # The reason names the limit, not what was left of it for the piece that went past it:
    # the same close reason however the message fell into reads.
    body = Deflate().deflate([random.Random(0).randbytes(1500)])[0]  # about as big
    frame = bytes([0xC2, 126]) + len(body).to_bytes(2) + body
    codec = Codec(False, Deflate(), max_size=1000)
    first = codec.receive(frame[:200])
    assert [type(e) for e in first] == [Fragment]  # some of it, under the limit
    assert codec.receive(frame[200:]) == [Failure(1009, "message larger than 1000 bytes")]


def test_inflate_stops_past_the_limit() -> None:
    bomb = Deflate().deflate([b"\0" * 10_000_000])[0]  # 10 MB in about 10 KB
    frame = bytes([0xC2, 0xFF]) + len(bomb).to_bytes(8) + bomb
    frame = bytes([0xC2, 126]) + len(bomb).to_bytes(2) + bomb if len(bomb) < 65536 else frame
    codec = Codec(False, Deflate(), max_size=1000)
    assert codec.receive(frame) == [Failure(1009, "message larger than 1000 bytes")]
    assert joined(Codec(False, Deflate(), max_size=10_000_000).receive(frame)) == [
        b"\0" * 10_000_000
    ]


def test_a_broken_stream_is_1007() -> None:
    assert joined(Codec(False, Deflate()).receive(b"\xc2\x04\xff\xff\xff\xff")) == [1007]


def test_masking_keys_are_fresh_per_frame_and_thread() -> None:
    # taken from a pool of the system's random bytes: never the same key twice in a row of
    # frames, in any thread (the test API runs a proxy per thread)
    def keys(n: int) -> list[bytes]:
        client = Codec(server=False)
        return [client.message("x")[2:6] for _ in range(n)]

    found: list[bytes] = []
    threads = [threading.Thread(target=lambda: found.extend(keys(3000))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found += keys(3000)
    assert len(found) == 12_000 and all(len(k) == 4 for k in found)
    assert len(set(found)) > 11_950  # 4-byte keys: a few collide by chance, not by reuse


def test_payloads_are_bytes_whatever_the_reads_are() -> None:
    # mitmproxy hands over a bytearray in some reads (what came with the handshake)
    frames = client_frame(b"one") + client_frame(b"two", fin=False)
    events = Codec(True).receive(bytearray(frames))
    assert [type(ev.data) for ev in events if isinstance(ev, Fragment)] == [bytes, bytes]
