"""Compressed messages passed on as they came (`Codec.relayed`): an intercept writes a message
that the other side's peer compressed without inflating and deflating it again, while both
compressed streams stay the same; a message consumed, dropped, changed or sent by the route
makes them differ, and from then on the proxy compresses itself. The peer (wsproto, with the
same permessage-deflate parameters) must read every message right either way: a relayed
message after the streams differ would refer to text that peer never saw."""

from __future__ import annotations

import itertools
import random
import zlib
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import Opcode

from mitm_wsroute.codec import COMPRESS_FROM, RSV1, TEXT, encode
from mitm_wsroute.connection import PAGE, SERVER, Side
from mitm_wsroute.deflate import relayable
from tests.layer_harness import DEFLATE, EVENTS, INTERCEPT, MOCK, OWN, Harness, Sender

#: Messages that share most of their text: each compressed one refers to the ones before.
TEXTS = [f'{"{"}"user": "alice", "seq": {i}, "note": "{"hello " * 40}"{"}"}' for i in range(60)]

FORWARD, CONSUME, CONSUME_AND_SEND, HOOK_CHANGES = "forward", "consume", "consume+send", "hook"


def intercept(hooks: bool = False, io: str = EVENTS) -> Harness:
    h = Harness(mode=INTERCEPT, path=DEFLATE, hooks=hooks, limit=0, io=io)
    for side in (PAGE, SERVER):
        h.connection.handlers[side].message = None  # forwarded unless a step says otherwise
    return h


def compressed_frame(sender: Sender, text: str, frames: int = 1) -> bytes:
    """`text` as `sender` writes it, in `frames` frames."""
    data = text.encode()
    step = -(-len(data) // frames)
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    return b"".join(
        sender.data(Opcode.CONTINUATION if i else Opcode.TEXT, part, i == len(parts) - 1)
        for i, part in enumerate(parts)
    )


def receive_in_reads(h: Harness, side: Side, data: bytes, cuts: list[int]) -> None:
    """`data` from `side`'s peer, as reads cut at the given offsets (modulo its length)."""
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for a, b in itertools.pairwise(edges):
        if b > a:
            h.receive(side, data[a:b])


def test_forwarded_messages_are_relayed_and_read_right() -> None:
    h = intercept()
    client, server = Sender(PAGE, True), Sender(SERVER, True)
    for i, text in enumerate(TEXTS[:20]):
        h.receive(PAGE, compressed_frame(client, text))
        h.receive(SERVER, compressed_frame(server, text.upper()))
        assert h.peer_messages[SERVER][i] == text and h.peer_messages[PAGE][i] == text.upper()
    for side in (PAGE, SERVER):
        codec = h.layer.codecs[side]
        assert codec.relay and codec.deflate is not None
        assert codec.deflate._compressor is None  # never compressed anything itself


@pytest.mark.parametrize("io", [EVENTS, OWN])
@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("side", [PAGE, SERVER])
def test_messages_read_in_pieces_are_relayed_too(side: Side, frames: int, io: str) -> None:
    # A big compressed frame comes in several reads (a TLS record holds 16 KiB): it is still
    # written as it came, frame for frame, and so are the messages after it, whoever reads.
    h = intercept(io=io)
    sender = Sender(side, True)
    texts = [f"{i}: " + random.Random(i).randbytes(20_000).hex() for i in range(4)]
    for text in texts:
        data = compressed_frame(sender, text, frames)
        receive_in_reads(h, side, data, list(range(0, len(data), 4096)))
    assert h.peer_messages[side.other] == texts
    assert h.peer_framing[side.other] == [frames] * len(texts)  # frame for frame
    assert h.layer.reassembly[side].deflated == []  # nothing of it kept once passed on
    codec = h.layer.codecs[side.other]
    assert codec.relay and codec.deflate is not None
    assert codec.deflate._compressor is None  # never compressed anything itself


@pytest.mark.parametrize("mode", [MOCK, INTERCEPT])
def test_only_an_intercept_keeps_a_compressed_payload_as_it_came(mode: str) -> None:
    h = Harness(mode=mode, path=DEFLATE, limit=0)
    frame = compressed_frame(Sender(PAGE, True), random.Random(0).randbytes(20_000).hex())
    h.receive(PAGE, frame[: len(frame) // 2])  # half of it: a message under way
    kept = h.layer.reassembly[PAGE].deflated_chunks.size
    assert (kept > 0, h.layer.codecs[SERVER].relay) == (mode == INTERCEPT,) * 2


@pytest.mark.parametrize("side", [PAGE, SERVER])
def test_a_message_too_big_to_keep_as_it_came_is_compressed_again(side: Side) -> None:
    # Its compressed payload, padded with empty blocks, is over twice the size limit (which
    # its text is not): the proxy compresses it itself, and the ones after it.
    h = Harness(mode=INTERCEPT, path=DEFLATE, hooks=False, limit=1000)
    h.connection.handlers[side].message = None
    sender = Sender(side, True)
    compressor = zlib.compressobj(wbits=-15)
    empty_block = b"\x00\x00\x00\xff\xff"  # stored, no bytes: after a sync flush, aligned
    padded = compressor.compress(b"x" * 900) + compressor.flush(zlib.Z_SYNC_FLUSH)
    padded += empty_block * 500
    assert len(padded) > 2000 and padded.endswith(b"\x00\x00\xff\xff")
    frame = encode(TEXT | RSV1, padded[:-4], b"\x01\x02\x03\x04" if side is PAGE else None)
    receive_in_reads(h, side, frame, [len(frame) // 2])
    receive_in_reads(h, side, compressed_frame(sender, "after"), [])
    assert h.peer_messages[side.other] == ["x" * 900, "after"]
    assert not h.layer.codecs[side.other].relay


#: (the client's 101, the upstream's): the same, or made to differ by another addon.
UPSTREAM_12 = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
HEADERS = [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate", UPSTREAM_12),  # the client got 15-bit windows
    ("permessage-deflate; server_max_window_bits=10", "permessage-deflate"),
    ("", UPSTREAM_12),  # the client got no deflate
    ("permessage-deflate", ""),  # the client got deflate, the upstream has none
    # the upstream may forget between the client's messages, the client was not told to
    ("permessage-deflate", "permessage-deflate; client_no_context_takeover"),
]  # fmt: skip
#: Messages that refer to the one three before, 4.5 KiB back: beyond a 12-bit window.
FAR = [f"{i}: " + random.Random(i % 3).randbytes(1100).hex() for i in range(30)]


@settings(max_examples=25, deadline=None)
@given(steps=st.lists(st.sampled_from([FORWARD] * 4 + [CONSUME, CONSUME_AND_SEND, HOOK_CHANGES]),
                      min_size=1, max_size=30),
       far=st.booleans(), frames=st.integers(1, 3),
       cuts=st.lists(st.integers(0, 10_000), max_size=3))  # fmt: skip
@pytest.mark.parametrize("side", [PAGE, SERVER])
@pytest.mark.parametrize("headers", HEADERS)
def test_every_message_is_read_right_whatever_the_route_does(
    headers: tuple[str, str], side: Side, steps: list[str], far: bool, frames: int,
    cuts: list[int],
) -> None:  # fmt: skip
    # Each side's peer reads with what it agreed on (wsproto): a message is passed on as it
    # came only while that is right, whatever came before it, in however many frames and
    # reads it came.
    h = Harness(mode=INTERCEPT, path=DEFLATE, hooks=True, limit=0, extensions=headers)
    for each in (PAGE, SERVER):
        h.connection.handlers[each].message = None  # forwarded unless a step says otherwise
    sender = Sender(side, bool(headers[side]), headers[side] or "permessage-deflate")
    relay = h.layer.codecs[side.other].relay
    assert relay is relayable(h.layer.codecs[side].deflate, h.layer.codecs[side.other].deflate)
    expected: list[str] = []
    changed: set[int] = set()

    class ChangeSome:  # another addon's websocket_message hook
        def websocket_message(self, flow: Any) -> None:
            message = flow.websocket.messages[-1]
            if (
                message.from_client is (side is PAGE)
                and len(flow.websocket.messages) - 1 in changed
            ):
                message.content = b"changed " + message.content

    from mitm_wsroute.addon_hooks import message_hooks

    h.socket.hooks = message_hooks(SimpleNamespace(chain=[ChangeSome()]), skip=None)
    for i, step in enumerate(steps):
        text = (FAR if far else TEXTS)[i]
        handlers = h.connection.handlers[side]
        if step == FORWARD:
            handlers.message = None
            expected.append(text)
        elif step == CONSUME:
            handlers.message = lambda m: None
        elif step == CONSUME_AND_SEND:
            reply = "route: " + text[::-1] * (1 + i % 3)  # some over COMPRESS_FROM
            handlers.message = lambda m, reply=reply: h.route[side.other].send(reply)
            expected.append(reply)
        else:
            handlers.message = None
            changed.add(len(h.flow.websocket.messages))
            expected.append("changed " + text)
        receive_in_reads(h, side, compressed_frame(sender, text, frames), cuts)
    assert h.peer_messages[side.other] == expected
    assert h.layer.codecs[side.other].relay is (relay and all(s == FORWARD for s in steps))


def test_the_proxy_compresses_only_messages_worth_it() -> None:
    h = intercept()
    h.connection.handlers[PAGE].message = lambda m: h.route[SERVER].send(m)  # not relayed
    client = Sender(PAGE, True)
    for text in ("small", "x" * COMPRESS_FROM):
        h.receive(PAGE, compressed_frame(client, text))
    assert h.peer_messages[SERVER] == ["small", "x" * COMPRESS_FROM]
    # the first went uncompressed (RSV1 clear), the second compressed
    assert not h.layer.codecs[SERVER].relay


@pytest.mark.parametrize("side", [PAGE, SERVER])
def test_uncompressed_messages_keep_the_streams_the_same(side: Any) -> None:
    h = intercept()
    sender = Sender(side, False)  # a peer that sends some messages uncompressed
    for text in TEXTS[:5]:
        h.receive(side, sender.data(Opcode.TEXT, text.encode(), True))
    assert h.layer.codecs[side.other].relay
    assert h.peer_messages[side.other] == TEXTS[:5]
