"""socketio.py: Engine.IO v4 and Socket.IO v5 packets, as transcripts (pure, no I/O)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mitm_wsroute.socketio import (
    EIO,
    SIO,
    BinaryDecoder,
    Packet,
    decode_eio,
    decode_payload,
    decode_sio,
    encode_eio,
    encode_payload,
    encode_sio,
    open_packet,
)


@pytest.mark.parametrize(
    ("frame", "packet"),
    [
        ("2", (EIO.PING, "")),
        ("2probe", (EIO.PING, "probe")),
        ("3probe", (EIO.PONG, "probe")),
        ("5", (EIO.UPGRADE, "")),
        ('40{"token":"x"}', (EIO.MESSAGE, '0{"token":"x"}')),
        (b"\x00\x01", (EIO.MESSAGE, b"\x00\x01")),
    ],
)
def test_engine_io_frames(frame: str | bytes, packet: tuple[EIO, str | bytes]) -> None:
    assert decode_eio(frame) == packet
    assert encode_eio(*packet) == frame


@pytest.mark.parametrize("frame", ["", "x", "9", "-1"])
def test_malformed_engine_io_frames(frame: str) -> None:
    with pytest.raises(ValueError):
        decode_eio(frame)


def test_polling_payload_round_trip() -> None:
    packets = [(EIO.OPEN, '{"sid":"a"}'), (EIO.MESSAGE, "40"), (EIO.MESSAGE, b"\xff\x00")]
    body = encode_payload(packets)
    assert body == '0{"sid":"a"}\x1e440\x1eb/wA='
    assert decode_payload(body) == packets


@pytest.mark.parametrize("body", ["", "b!!!", "4x\x1e", "z"])
def test_malformed_polling_payloads(body: str) -> None:
    with pytest.raises(ValueError):
        decode_payload(body)


def test_open_packet() -> None:
    assert open_packet("S", ["websocket"], 25.0, 20.0) == (
        '{"sid":"S","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,'
        '"maxPayload":1000000}'
    )


@pytest.mark.parametrize(
    ("packet", "text"),
    [
        (Packet(SIO.CONNECT, "/", {"sid": "x"}), '0{"sid":"x"}'),
        (Packet(SIO.CONNECT, "/admin"), "0/admin,"),
        (Packet(SIO.DISCONNECT, "/admin"), "1/admin,"),
        (Packet(SIO.EVENT, "/", ["chat", "hi", 1]), '2["chat","hi",1]'),
        (Packet(SIO.EVENT, "/admin", ["add", 1, 2], 12), '2/admin,12["add",1,2]'),
        (Packet(SIO.ACK, "/", [3], 12), "312[3]"),
        (
            Packet(SIO.CONNECT_ERROR, "/x", {"message": "Invalid namespace"}),
            '4/x,{"message":"Invalid namespace"}',
        ),
    ],
)
def test_socket_io_packets(packet: Packet, text: str) -> None:
    assert encode_sio(packet) == [text]
    assert decode_sio(text) == (packet, 0)


def test_binary_event_round_trip() -> None:
    packet = Packet(SIO.EVENT, "/", ["file", {"name": "a", "data": b"\x01\x02"}, b"\x03"], 7)
    parts = encode_sio(packet)
    assert parts == [
        '52-7["file",{"name":"a","data":{"_placeholder":true,"num":0}},'
        '{"_placeholder":true,"num":1}]',
        b"\x01\x02",
        b"\x03",
    ]
    decoder = BinaryDecoder()
    assert decoder.feed(parts[0]) is None
    assert decoder.waiting
    assert decoder.feed(parts[1]) is None
    assert decoder.feed(parts[2]) == packet
    assert not decoder.waiting


def test_binary_ack() -> None:
    parts = encode_sio(Packet(SIO.ACK, "/admin", [b"ok"], 3))
    assert parts == ['61-/admin,3[{"_placeholder":true,"num":0}]', b"ok"]
    decoder = BinaryDecoder()
    decoder.feed(parts[0])
    assert decoder.feed(parts[1]) == Packet(SIO.ACK, "/admin", [b"ok"], 3)


@pytest.mark.parametrize(
    "feed",
    [
        ["2[1]"],  # an event without a name
        ["2{}"],
        ["3[1]"],  # an ack without an id
        ['2["a"'],  # bad JSON
        ["9"],
        ["5x-[]"],
        [b"\x00"],  # an attachment with no packet
        ['51-["a",{"_placeholder":true,"num":0}]', '2["b"]'],  # text while one is due
        ['51-["a",{"_placeholder":true,"num":5}]', b"x"],  # no such attachment
        ['0"token"'],  # a connect whose payload is not an object
    ],
)
def test_malformed_socket_io_packets(feed: list[str | bytes]) -> None:
    decoder = BinaryDecoder()
    with pytest.raises(ValueError):
        for item in feed:
            decoder.feed(item)


def test_the_codec_and_the_package_import_neither_mitmproxy_nor_asyncio() -> None:
    code = (
        "import sys, mitm_wsroute, mitm_wsroute.socketio, mitm_wsroute.socketio_route; "
        "print(sorted({'mitmproxy', 'asyncio'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
