"""The frames read and written without a codec (`frames`), against wsproto as the oracle."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
import wsproto.events as wse
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.frame_protocol import FrameProtocol

from mitm_wsroute.frames import frame_size, next_whole, unmask, unmask_in_python, whole

messages = st.one_of(st.text(max_size=300), st.binary(max_size=70_000))


def client_frame(message: str | bytes, fin: bool = True) -> bytes:
    """A frame as wsproto's client writes it (masked, random key)."""
    proto = FrameProtocol(client=True, extensions=[])
    return bytes(proto.send_data(message, fin))


def server_frame(message: str | bytes) -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(message, True))


def wsproto_reads(data: bytes, client: bool) -> list[str | bytes]:
    """The whole messages wsproto's server (or client) reads from `data`."""
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    conn.receive_data(data)
    return [ev.data for ev in conn.events() if isinstance(ev, wse.Message)]


LIMIT = 1 << 20


def read_all(data: bytes, masked: bool) -> tuple[list[str | bytes], int]:
    found: list[str | bytes] = []
    pos = 0
    while (r := next_whole(data, pos, masked, LIMIT)) is not None and r[0] is not None:
        message, pos = r
        found.append(message)
    return found, pos


@given(st.lists(messages, max_size=5))
def test_reads_what_wsproto_reads_from_a_client(ms: list[str | bytes]) -> None:
    data = b"".join(client_frame(m) for m in ms)
    assert read_all(data, masked=True) == (ms, len(data))
    assert wsproto_reads(data, client=False) == ms


@given(st.lists(messages, max_size=5))
def test_reads_what_wsproto_reads_from_a_server(ms: list[str | bytes]) -> None:
    data = b"".join(server_frame(m) for m in ms)
    assert read_all(data, masked=False) == (ms, len(data))


@given(messages)
def test_writes_what_wsproto_writes(m: str | bytes) -> None:
    assert whole(m) == server_frame(m)
    assert wsproto_reads(whole(m), client=True) == [m]


@given(messages, st.binary(min_size=4, max_size=4))
def test_writes_a_masked_frame_as_a_client(m: str | bytes, key: bytes) -> None:
    frame = whole(m, key)
    assert wsproto_reads(frame, client=False) == [m]
    assert next_whole(frame, 0, masked=True, max_length=LIMIT) == (m, len(frame))


@pytest.mark.parametrize("unmask", [unmask, unmask_in_python])
@given(payload=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4))
def test_unmask(unmask: Callable[[bytes, bytes], bytes], payload: bytes, key: bytes) -> None:
    masked = unmask(payload, key)
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert unmask(masked, key) == payload


@given(messages, st.integers(min_value=1, max_value=40))
def test_a_frame_not_all_there_is_said_so(m: str | bytes, cut: int) -> None:
    data = client_frame(m)
    part = data[: max(0, len(data) - cut)]
    assert next_whole(b"x" + part, 1, masked=True, max_length=LIMIT) == (None, 1)


def test_a_frame_over_the_size_is_left_to_the_codec() -> None:
    # the codec hands a big frame over piece by piece: a size limit applies before it is all in
    data = client_frame(b"x" * 100)
    assert next_whole(data, 0, masked=True, max_length=100) == (b"x" * 100, len(data))
    assert next_whole(data, 0, masked=True, max_length=99) is None
    assert next_whole(data[:10], 0, masked=True, max_length=99) is None


@pytest.mark.parametrize(
    ("what", "data"),
    [
        ("a fragment", client_frame("part", fin=False)),
        ("a ping", b"\x89\x80\0\0\0\0"),
        ("a close", b"\x88\x82\0\0\0\0\x03\xe8"),
        ("a continuation", b"\x80\x80\0\0\0\0"),
        ("a reserved bit (deflate)", b"\xc1\x80\0\0\0\0"),
        ("an unmasked client frame", b"\x81\x02hi"),
        ("a 2-byte length under 126", b"\x82\xfe\x00\x05\0\0\0\0hello"),
        ("an 8-byte length under 65536", b"\x82\xff" + struct.pack("!Q", 5) + b"\0\0\0\0hello"),
        ("invalid UTF-8", b"\x81\x82\0\0\0\0\xc3\x28"),
    ],
)
def test_anything_else_is_left_to_the_codec(what: str, data: bytes) -> None:
    assert next_whole(data, 0, masked=True, max_length=LIMIT) is None, what


def test_a_masked_frame_from_a_server_is_left_to_the_codec() -> None:
    assert next_whole(client_frame("hi"), 0, masked=False, max_length=LIMIT) is None


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("key", [None, b"abcd"])
def test_frame_size_once_the_header_is_there(size: int, key: bytes | None) -> None:
    frame = whole(b"x" * size, key)
    lengths = len(frame) - size - (4 if key else 0)  # the header up to the mask key
    for cut in range(lengths):
        assert frame_size(frame[:cut]) == 0  # the length is not all there yet
    assert frame_size(frame[:lengths]) == len(frame)
    assert frame_size(bytearray(frame)) == len(frame)
