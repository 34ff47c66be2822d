"""Engine.IO v4 and Socket.IO v5 packets (the protocol of Socket.IO v3/v4 clients), in and out.

Pure: this module imports neither mitmproxy nor asyncio. It turns WebSocket frames and HTTP
long-polling bodies into packets and back; `SocketIORoute` (socketio_route.py) decides what to
do with them.

Engine.IO v4 (https://socket.io/docs/v4/engine-io-protocol/): a packet is a type digit and its
data; over a WebSocket one packet per frame, a binary frame being a message packet of bytes; over
long-polling several packets in one body, separated by ``\\x1e``, binary ones as ``b`` + base64.
Socket.IO v5 (https://socket.io/docs/v4/socket-io-protocol/): inside a message packet, a type
digit, for binary packets the count of attachments and ``-``, the namespace and ``,`` when it is
not ``/``, the ack id, then JSON; each attachment follows as a binary message packet, and stands in
the JSON as ``{"_placeholder": true, "num": N}``.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EIO",
    "SIO",
    "BinaryDecoder",
    "Packet",
    "SocketIOEvent",
    "decode_eio",
    "decode_payload",
    "decode_sio",
    "encode_eio",
    "encode_payload",
    "encode_sio",
    "event_of",
    "find_event",
    "open_packet",
]


class EIO(enum.IntEnum):
    """Engine.IO v4 packet types."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class SIO(enum.IntEnum):
    """Socket.IO v5 packet types."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


#: The separator of packets in a long-polling body (Engine.IO v4).
SEPARATOR = "\x1e"


# --- Engine.IO -----------------------------------------------------------------------------


def encode_eio(kind: EIO, data: str | bytes = "") -> str | bytes:
    """One packet as a WebSocket frame: text ``<type><data>``; a binary message as its bytes."""
    if isinstance(data, bytes):
        if kind is not EIO.MESSAGE:
            raise ValueError(f"only message packets carry binary data, not {kind.name}")
        return data
    return f"{int(kind)}{data}"


def decode_eio(frame: str | bytes) -> tuple[EIO, str | bytes]:
    """A WebSocket frame as ``(type, data)``.

    Raises:
        ValueError: an empty frame or an unknown type.
    """
    if isinstance(frame, bytes | bytearray | memoryview):
        return EIO.MESSAGE, bytes(frame)
    if not frame or not frame[0].isdigit():
        raise ValueError(f"not an Engine.IO packet: {frame[:40]!r}")
    try:
        kind = EIO(int(frame[0]))
    except ValueError:
        raise ValueError(f"unknown Engine.IO packet type {frame[0]!r}") from None
    return kind, frame[1:]


def encode_payload(packets: Iterable[tuple[EIO, str | bytes]]) -> str:
    """Packets as one long-polling body."""
    parts = []
    for kind, data in packets:
        if isinstance(data, bytes):
            parts.append("b" + base64.b64encode(data).decode("ascii"))
        else:
            parts.append(f"{int(kind)}{data}")
    return SEPARATOR.join(parts)


def decode_payload(body: str) -> list[tuple[EIO, str | bytes]]:
    """A long-polling body as packets.

    Raises:
        ValueError: an empty body, a bad packet, or bad base64.
    """
    if not body:
        raise ValueError("empty Engine.IO payload")
    packets: list[tuple[EIO, str | bytes]] = []
    for part in body.split(SEPARATOR):
        if part.startswith("b"):
            try:
                packets.append((EIO.MESSAGE, base64.b64decode(part[1:], validate=True)))
            except ValueError as e:
                raise ValueError(f"bad base64 in an Engine.IO payload: {e}") from None
        else:
            packets.append(decode_eio(part))
    return packets


def open_packet(sid: str, upgrades: list[str], ping_interval: float, ping_timeout: float) -> str:
    """The data of the open packet a server sends first (times in milliseconds)."""
    return json.dumps(
        {
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": round(ping_interval * 1000),
            "pingTimeout": round(ping_timeout * 1000),
            "maxPayload": 1_000_000,
        },
        separators=(",", ":"),
    )


# --- Socket.IO -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Packet:
    """One Socket.IO packet, attachments put back in place (`data` holds `bytes` there)."""

    type: SIO
    namespace: str = "/"
    data: Any = None
    id: int | None = None


def encode_sio(packet: Packet) -> list[str | bytes]:
    """The Engine.IO message data of a packet: its text, then one item per attachment. An
    EVENT or ACK whose data holds bytes goes out as BINARY_EVENT or BINARY_ACK."""
    attachments: list[bytes] = []
    data = _deconstruct(packet.data, attachments) if packet.data is not None else None
    kind = packet.type
    if attachments and kind is SIO.EVENT:
        kind = SIO.BINARY_EVENT
    elif attachments and kind is SIO.ACK:
        kind = SIO.BINARY_ACK
    text = str(int(kind))
    if kind in (SIO.BINARY_EVENT, SIO.BINARY_ACK):
        text += f"{len(attachments)}-"
    if packet.namespace != "/":
        text += packet.namespace + ","
    if packet.id is not None:
        text += str(packet.id)
    if data is not None:
        text += json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return [text, *attachments]


def _deconstruct(data: Any, attachments: list[bytes]) -> Any:
    if isinstance(data, bytes | bytearray | memoryview):
        attachments.append(bytes(data))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(data, list | tuple):
        return [_deconstruct(item, attachments) for item in data]
    if isinstance(data, dict):
        return {key: _deconstruct(value, attachments) for key, value in data.items()}
    return data


def decode_sio(text: str) -> tuple[Packet, int]:
    """A packet's text as the packet (placeholders still in) and its count of attachments.

    Raises:
        ValueError: not a Socket.IO v5 packet.
    """
    if not text or not text[0].isdigit():
        raise ValueError(f"not a Socket.IO packet: {text[:40]!r}")
    try:
        kind = SIO(int(text[0]))
    except ValueError:
        raise ValueError(f"unknown Socket.IO packet type {text[0]!r}") from None
    i, attachments = 1, 0
    if kind in (SIO.BINARY_EVENT, SIO.BINARY_ACK):
        dash = text.find("-", i)
        if dash < 0 or not text[i:dash].isdigit():
            raise ValueError(
                f"a binary Socket.IO packet without its attachment count: {text[:40]!r}"
            )
        attachments, i = int(text[i:dash]), dash + 1
        if attachments > 1000:
            raise ValueError(f"too many attachments ({attachments})")
    namespace = "/"
    if text.startswith("/", i):
        comma = text.find(",", i)
        end = len(text) if comma < 0 else comma
        namespace, i = text[i:end], (end + 1 if comma >= 0 else end)
    start = i
    while i < len(text) and text[i].isdigit():
        i += 1
    ack_id = int(text[start:i]) if i > start else None
    data: Any = None
    if i < len(text):
        try:
            data = json.loads(text[i:])
        except ValueError as e:
            raise ValueError(f"bad JSON in a Socket.IO packet: {e}") from None
    _check(kind, data, ack_id)
    return Packet(kind, namespace, data, ack_id), attachments


def _check(kind: SIO, data: Any, ack_id: int | None) -> None:
    if kind in (SIO.EVENT, SIO.BINARY_EVENT):
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise ValueError("a Socket.IO event without a name")
    elif kind in (SIO.ACK, SIO.BINARY_ACK):
        if ack_id is None or not isinstance(data, list):
            raise ValueError("a Socket.IO ack without an id or arguments")
    elif kind is SIO.CONNECT and data is not None and not isinstance(data, dict):
        raise ValueError("a Socket.IO connect whose payload is not an object")


def _reconstruct(data: Any, attachments: list[bytes]) -> Any:
    if isinstance(data, dict):
        if data.get("_placeholder") is True and "num" in data:
            num = data["num"]
            if not isinstance(num, int) or not 0 <= num < len(attachments):
                raise ValueError(f"a placeholder for a missing attachment: {num!r}")
            return attachments[num]
        return {key: _reconstruct(value, attachments) for key, value in data.items()}
    if isinstance(data, list):
        return [_reconstruct(item, attachments) for item in data]
    return data


@dataclass(slots=True)
class BinaryDecoder:
    """Socket.IO packets from one peer's Engine.IO message data, in order: a binary packet is
    complete once its attachments came."""

    pending: Packet | None = None
    expected: int = 0
    attachments: list[bytes] = field(default_factory=list)

    @property
    def waiting(self) -> bool:
        """A binary packet waits for attachments."""
        return self.pending is not None

    def feed(self, data: str | bytes) -> Packet | None:
        """The packet `data` completes, or None while attachments are still to come.

        Raises:
            ValueError: a malformed packet, text while attachments are due, or bytes when
                none are.
        """
        if isinstance(data, bytes):
            if self.pending is None:
                raise ValueError("a binary Engine.IO message with no Socket.IO packet before it")
            self.attachments.append(data)
            if len(self.attachments) < self.expected:
                return None
            pending, attachments = self.pending, self.attachments
            self.pending, self.attachments, self.expected = None, [], 0
            return _complete(pending, attachments)
        if self.pending is not None:
            raise ValueError("a Socket.IO packet while attachments of another were due")
        packet, count = decode_sio(data)
        if count == 0:
            return _complete(packet, []) if packet.type > SIO.CONNECT_ERROR else packet
        self.pending, self.expected = packet, count
        return None


def _complete(packet: Packet, attachments: list[bytes]) -> Packet:
    kind = {SIO.BINARY_EVENT: SIO.EVENT, SIO.BINARY_ACK: SIO.ACK}.get(packet.type, packet.type)
    return Packet(kind, packet.namespace, _reconstruct(packet.data, attachments), packet.id)


def event_of(packet: Packet) -> tuple[str, list[Any]] | None:
    """An event packet's name and arguments, else None."""
    if packet.type is not SIO.EVENT:
        return None
    return packet.data[0], list(packet.data[1:])


@dataclass(frozen=True, slots=True)
class SocketIOEvent:
    """A Socket.IO event a client sent (``"sent"``) or got (``"received"``), attachments in
    place (the test API's `wait_for_event`)."""

    name: str
    args: list[Any]
    namespace: str
    direction: str
    #: Its ack id, when the sender asked for an ack.
    id: int | None = None


def find_event(
    messages: Sequence[tuple[str | bytes, str]],
    name: str,
    namespace: str,
    direction: str | None,
) -> tuple[int, SocketIOEvent | None] | None:
    """The first event `name` in `namespace` among WebSocket `messages` (payload, direction):
    its index and the event, or its index and None while its attachments are still to come.
    Messages that are not Socket.IO events are passed over."""
    for i, (payload, way) in enumerate(messages):
        if not isinstance(payload, str) or not payload.startswith("4"):
            continue
        if direction is not None and way != direction:
            continue
        try:
            packet, count = decode_sio(payload[1:])
        except ValueError:
            continue
        if packet.type not in (SIO.EVENT, SIO.BINARY_EVENT) or packet.namespace != namespace:
            continue
        if packet.data[0] != name:
            continue
        attachments = [p for p, w in messages[i + 1 :] if w == way and isinstance(p, bytes)]
        if len(attachments) < count:
            return i, None
        done = _complete(packet, attachments[:count])
        return i, SocketIOEvent(name, list(done.data[1:]), namespace, way, packet.id)
    return None
