"""permessage-deflate for whole messages (`deflate`), against wsproto's extension as the oracle,
and the frames `frames` writes and reads with it."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode

from mitm_wsroute.deflate import deflate, inflate
from mitm_wsroute.frames import RSV1, TEXT, next_frame, whole

messages = st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=3000)), max_size=6)


def negotiated() -> PerMessageDeflate:
    ext = PerMessageDeflate()
    ext.finalize("permessage-deflate")
    return ext


@given(messages)
def test_what_wsproto_compresses_inflates_message_by_message(ms: list[str | bytes]) -> None:
    sender = FrameProtocol(client=False, extensions=[negotiated()])
    decompressor = zlib.decompressobj(-15)  # one stream: context takeover
    for m in ms:
        data = bytes(sender.send_data(m, fin=True))
        found = next_frame(data, 0, False, 1 << 20, rsv1=True)
        assert found is not None and found[0] is not None
        b0, payload, end = found
        assert end == len(data) and (b0 & 0x0F == TEXT) is isinstance(m, str)
        assert b0 & RSV1
        raw = m.encode() if isinstance(m, str) else m
        assert inflate(decompressor, payload, 0) == raw


@given(messages)
def test_what_it_deflates_wsproto_reads(ms: list[str | bytes]) -> None:
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    data = b"".join(whole(m, b"abcd", lambda payload: deflate(compressor, payload)) for m in ms)
    receiver = FrameProtocol(client=False, extensions=[negotiated()])
    receiver.receive_bytes(data)
    got = []
    for frame in receiver.received_frames():
        assert frame.opcode in (Opcode.TEXT, Opcode.BINARY) and frame.message_finished
        got.append(frame.payload)
    assert got == ms


def test_inflate_stops_past_the_limit() -> None:
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    bomb = deflate(compressor, b"\0" * 10_000_000)  # 10 MB in about 10 KB
    decompressor = zlib.decompressobj(-15)
    with pytest.raises(OverflowError, match="larger than 1000 bytes"):
        inflate(decompressor, bomb, 1000)
    assert inflate(zlib.decompressobj(-15), bomb, 10_000_000) == b"\0" * 10_000_000


def test_a_broken_stream_is_a_zlib_error() -> None:
    with pytest.raises(zlib.error):
        inflate(zlib.decompressobj(-15), b"\xff\xff\xff\xff", 0)
