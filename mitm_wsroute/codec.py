"""One side of a WebSocket after its handshake (RFC 6455 §5 to §7, with permessage-deflate,
RFC 7692): the bytes its peer sends in, events out; messages, pings and closes in, bytes out.

Pure: this module imports neither mitmproxy nor asyncio. Every routed socket's frames, on every
path, are read and written here, and nowhere else.

Reading is linear in the bytes, however they are cut into reads: a data frame not all there
yet is handed over in pieces as it comes in (`Fragment`, like wsproto's events), and only the
start of a frame whose header, or whose control frame, is not complete waits (at most 139
bytes). Most messages come whole in one frame in one read: that case is one `Fragment` holding
the message, decoded as a whole (`bytes.decode`, one `inflate`). Text is checked for valid
UTF-8 as it comes (RFC 6455 §8.1: fail fast), compressed messages are never inflated past the
size limit, and every violation of the protocol fails the side with the code RFC 6455 §7.4.1
gives (`Failure`), after which nothing more is read.

Written here rather than taken from python-websockets' sans-I/O protocol or wsproto (which
mitmproxy uses), because they read a 32-byte message 3 and 10 times slower
(`bench/codec_speed.py`; docs/mitmproxy.md), and neither hands control of pings and closes to
its caller. wsproto stays in the tests, as the oracle this codec is compared with.
"""

from __future__ import annotations

import codecs
import enum
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .deflate import Deflate, ZlibError

__all__ = [
    "BINARY",
    "COMPRESS_FROM",
    "CONTINUATION",
    "TEXT",
    "Close",
    "Codec",
    "CodecState",
    "Failure",
    "Fragment",
    "Ping",
    "Pong",
    "encode",
    "unmask",
]

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN, RSV1 = 0x80, 0x40

PROTOCOL_ERROR, INVALID_DATA, MESSAGE_TOO_BIG = 1002, 1007, 1009
#: Smaller messages are written uncompressed, as Node's ws does (its default threshold): the
#: compressor's work buys nothing on them.
COMPRESS_FROM = 1024


def unmask_in_python(payload: bytes, key: bytes) -> bytes:
    """`payload` XOR the 4-byte `key`, repeated (RFC 6455 §5.3)."""
    n = len(payload)
    mask = int.from_bytes(key * (n >> 2) + key[: n & 3], "little")
    return (int.from_bytes(payload, "little") ^ mask).to_bytes(n, "little")


unmask: Callable[[bytes, bytes], bytes]
try:  # the same in C, 50 times faster for 64 KiB (websockets, a dependency, builds it)
    from websockets.speedups import apply_mask as unmask
except ImportError:  # a platform without the compiled module
    unmask = unmask_in_python


def encode(opcode: int, payload: bytes, key: bytes | None = None, fin: bool = True) -> bytes:
    """One frame: a server's (unmasked), or a client's masked with the 4-byte `key` (RFC 6455
    §5.3: a fresh random one per frame). `opcode` may carry RSV1 (a compressed message)."""
    b0 = opcode | FIN if fin else opcode
    n = len(payload)
    masked = 0x80 if key is not None else 0
    if n < 126:
        head = bytes((b0, masked | n))
    elif n < 65536:
        head = bytes((b0, masked | 126)) + n.to_bytes(2)
    else:
        head = bytes((b0, masked | 127)) + n.to_bytes(8)
    if key is None:
        return head + payload
    return head + key + unmask(payload, key)


# --- what the peer sent -------------------------------------------------------------------------


@dataclass(slots=True)
class Fragment:
    """A piece of a data message: a whole frame, or the part of one that has come so far (text
    as `str`, decoded as far as it goes; binary as `bytes`). A `messages.Piece`."""

    data: str | bytes
    frame_finished: bool = True
    message_finished: bool = True
    #: A piece of a compressed message: its payload as it came, before inflating
    #: (`Codec.relayed`); None for a message that came uncompressed.
    deflated: bytes | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """A close frame: its code (None: it had none, 1005) and reason."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The peer broke the protocol (1002), sent invalid data (1007) or too big a compressed
    message (1009): the side must be failed with that code. Nothing more is read."""

    code: int
    reason: str


type Event = Fragment | Ping | Pong | Close | Failure


class CodecState(enum.Enum):
    OPEN = "open"
    #: We sent a close frame; the peer's has not come.
    LOCAL_CLOSING = "local closing"
    #: The peer's close frame came; we have not sent ours.
    REMOTE_CLOSING = "remote closing"
    CLOSED = "closed"


OPEN, LOCAL_CLOSING, REMOTE_CLOSING, CLOSED = CodecState

#: Close codes a peer may send (RFC 6455 §7.4, IANA's registry): 1004 to 1006 and 1015 never
#: travel in a frame.
_SENDABLE = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)))


_WHOLE = frozenset((FIN | TEXT, FIN | BINARY))
_WHOLE_OR_COMPRESSED = _WHOLE | {FIN | RSV1 | TEXT, FIN | RSV1 | BINARY}


class _MaskKeys(threading.local):
    """Random bytes for masking keys, taken 4 at a time: one ``getrandom`` call per 1,024
    frames instead of one per frame (a system call costs more than the rest of writing a small
    frame). Per thread: the test API runs a proxy per thread."""

    keys = b""
    at = 0


_mask_keys = _MaskKeys()


def _mask_key() -> bytes:
    """A fresh masking key from the system's CSPRNG (RFC 6455 §5.3: unpredictable)."""
    pool = _mask_keys
    at = pool.at
    if at >= len(pool.keys):
        pool.keys, at = os.urandom(4096), 0
    pool.at = at + 4
    return pool.keys[at : at + 4]


def _utf8() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")()


class Codec:
    """One side's frames. `server`: the proxy plays the server on this side (it faces the
    client), so frames in are masked and frames out are not, and the other way round.
    `deflate`: permessage-deflate as negotiated. `max_size`: the most bytes a compressed message
    inflates to (0: no limit); `messages.Reassembly` checks every message's size."""

    __slots__ = (
        "compressed",
        "deflate",
        "fin",
        "head",
        "key",
        "left",
        "max_size",
        "offset",
        "opcode",
        "reading",
        "relay",
        "room",
        "server",
        "state",
        "text",
        "whole",
    )

    def __init__(self, server: bool, deflate: Deflate | None = None, max_size: int = 0):
        self.server = server
        self.deflate = deflate
        self.max_size = max_size
        self.state = OPEN
        #: What this side's peer inflates is what the other side's peer deflated, message for
        #: message (each compressed message it sent was written here as it came, and our own
        #: compressor never wrote here): so the next one may be too (`relayed`). The layer
        #: turns it off when one is not; writing one compressed ourselves turns it off.
        self.relay = deflate is not None
        #: First bytes of a frame that is a whole message, valid unless a message is under way.
        self.whole = _WHOLE if deflate is None else _WHOLE_OR_COMPRESSED
        self.reading = True  # until a close frame or a failure: then the rest is ignored
        #: The start of a frame whose header (or whole control frame) is not all there.
        self.head = bytearray()
        # the data frame being read in pieces: payload bytes still to come, its mask key,
        # how far into the key the next byte is, and whether it ends its message
        self.left = 0
        self.key = b""
        self.offset = 0
        self.fin = False
        # the message being read: its opcode (0 between messages), whether it is compressed,
        # the UTF-8 decoder of a text message read in pieces, and what it may still inflate to
        self.opcode = 0
        self.compressed = False
        self.text: codecs.IncrementalDecoder | None = None
        self.room = 0

    # --- reading ---------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray) -> list[Event]:
        """What `data`, the next bytes from the peer, holds."""
        out: list[Event] = []
        if not self.reading:
            return out
        if type(data) is not bytes:  # mitmproxy may hand over a bytearray: payloads are bytes
            data = bytes(data)
        if self.left:
            data = self._rest_of_frame(data, out)
        if self.head:
            self.head += data
            data = bytes(self.head)
            self.head.clear()
        pos, end, masked = 0, len(data), self.server
        while pos < end and self.reading:
            if end - pos < 2:
                break
            b0, b1 = data[pos], data[pos + 1]
            length, start = b1 & 0x7F, pos + 2
            if length > 125:
                size = 2 if length == 126 else 8
                if end < start + size:
                    break
                length = int.from_bytes(data[start : start + size])
                start += size
                if length < (126 if size == 2 else 65536) or length >> 63:
                    return self._fail(out, PROTOCOL_ERROR, "payload length not minimal")
            if bool(b1 & 0x80) is not masked:
                wrong = "unmasked frame from a client" if masked else "masked frame from a server"
                return self._fail(out, PROTOCOL_ERROR, wrong)
            opcode = b0 & 0x0F
            if (self.opcode or b0 not in self.whole) and (why := self._invalid(b0, length)):
                return self._fail(out, PROTOCOL_ERROR, why)
            key = b""
            if masked:
                key = data[start : start + 4]
                start += 4
            stop = start + length
            if stop > end:
                if opcode >= CLOSE or end < start:
                    break  # a control frame waits until it is whole
                # a data frame: what has come of it now, the rest as it comes
                payload = data[start:end]
                if masked:
                    payload = unmask(payload, key)
                self.left, self.key, self.offset = stop - end, key, len(payload)
                self.fin = bool(b0 & FIN)
                self._data(b0, payload, False, out)
                return out
            payload = data[start:stop]
            if masked:
                payload = unmask(payload, key)
            pos = stop
            if opcode >= CLOSE:
                self._control(opcode, payload, out)
            elif b0 & FIN and opcode:  # a whole message in one frame: most are
                deflated = None
                try:
                    if b0 & RSV1:
                        deflated, payload = payload, self._inflate(payload, opcode, True)
                    message = payload.decode() if opcode == TEXT else payload
                except UnicodeDecodeError:
                    return self._fail(out, INVALID_DATA, "invalid UTF-8 in a text message")
                except (OverflowError, ZlibError) as e:
                    return self._inflate_failed(out, e)
                out.append(Fragment(message, True, True, deflated))
            else:
                self.fin = bool(b0 & FIN)
                self._data(b0, payload, True, out)
        if pos < end and self.reading:
            self.head += memoryview(data)[pos:]
        return out

    def _invalid(self, b0: int, length: int) -> str | None:
        """What is wrong with a frame's first byte (and its length) here, if anything."""
        opcode, rsv = b0 & 0x0F, b0 & 0x70
        if opcode >= CLOSE:
            if opcode > PONG:
                return f"reserved opcode {opcode}"
            if not b0 & FIN:
                return "fragmented control frame"
            if length > 125:
                return "control frame over 125 bytes"
            return "reserved bits set" if rsv else None
        if opcode > BINARY:
            return f"reserved opcode {opcode}"
        if opcode == CONTINUATION:
            if not self.opcode:
                return "continuation frame without a message"
            return "reserved bits set" if rsv else None
        if self.opcode:
            return "new message before the last one ended"
        if rsv != RSV1 or self.deflate is None:
            return "reserved bits set" if rsv else None
        return None

    def _rest_of_frame(self, data: bytes, out: list[Event]) -> bytes:
        """The next piece of a data frame read in pieces; returns what comes after it."""
        n = min(self.left, len(data))
        payload, data = data[:n], data[n:]
        if self.server:
            turn = self.offset & 3
            key = self.key[turn:] + self.key[:turn]
            payload = unmask(payload, key)
            self.offset += n
        self.left -= n
        self._data(CONTINUATION, payload, not self.left, out)
        return data if self.reading else b""

    def _data(self, b0: int, payload: bytes, frame_done: bool, out: list[Event]) -> None:
        """A piece of a data message: a frame's first byte (CONTINUATION for a frame's later
        pieces), a payload, and whether the frame is complete."""
        opcode = b0 & 0x0F
        if opcode:  # the first frame of a message
            self.opcode, self.compressed = opcode, bool(b0 & RSV1)
            self.text = _utf8() if opcode == TEXT else None
            self.room = self.max_size * (4 if opcode == TEXT else 1)  # characters: up to 4 bytes
        done = frame_done and self.fin
        deflated = payload if self.compressed else None
        try:
            if deflated is not None:
                payload = self._inflate(payload, self.opcode, done)
            chunk = payload if self.text is None else self.text.decode(payload, done)
        except UnicodeDecodeError:
            self._fail(out, INVALID_DATA, "invalid UTF-8 in a text message")
            return
        except (OverflowError, ZlibError) as e:
            self._inflate_failed(out, e)
            return
        out.append(Fragment(chunk, frame_done, done, deflated))
        if done:
            self.opcode, self.text = 0, None

    def _inflate(self, payload: bytes, opcode: int, last: bool) -> bytes:
        assert self.deflate is not None
        if not self.max_size:
            return self.deflate.inflate(payload, 0, last)
        if self.opcode == 0:  # a whole message: its own budget
            self.room = self.max_size * (4 if opcode == TEXT else 1)
        data = self.deflate.inflate(payload, self.room, last)
        self.room -= len(data)
        return data

    def _inflate_failed(self, out: list[Event], e: Exception) -> list[Event]:
        if isinstance(e, OverflowError):  # the limit, whatever was left of it for this piece
            return self._fail(out, MESSAGE_TOO_BIG, f"message larger than {self.max_size} bytes")
        return self._fail(out, INVALID_DATA, f"invalid compressed data ({e})")

    def _control(self, opcode: int, payload: bytes, out: list[Event]) -> None:
        if opcode == PING:
            out.append(Ping(payload))
        elif opcode == PONG:
            out.append(Pong(payload))
        elif len(payload) == 1:
            self._fail(out, PROTOCOL_ERROR, "close frame with a 1-byte payload")
        else:
            code = int.from_bytes(payload[:2]) if payload else None
            if code is not None and code not in _SENDABLE:
                self._fail(out, PROTOCOL_ERROR, f"invalid close code {code}")
                return
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(out, INVALID_DATA, "invalid UTF-8 in a close reason")
                return
            self.reading = False  # RFC 6455 §5.5.1: nothing comes after a close frame
            out.append(Close(code, reason))

    def receive_close(self) -> None:
        """The peer's close frame (a `Close` event) is handled, in its turn among the events
        before it: now the close handshake moves on."""
        self.state = CLOSED if self.state is LOCAL_CLOSING else REMOTE_CLOSING

    def _fail(self, out: list[Event], code: int, reason: str) -> list[Event]:
        self.fail()
        out.append(Failure(code, reason))
        return out

    def fail(self) -> None:
        """The side fails (a `Failure`, or the proxy's own size limit): read nothing more."""
        self.reading = False
        self.head.clear()
        self.left = 0

    # --- writing ---------------------------------------------------------------------------

    def _key(self) -> bytes | None:
        return None if self.server else _mask_key()

    def message(
        self, data: str | bytes, compress: bool = True, payload: bytes | None = None
    ) -> bytes:
        """A message, in one frame: compressed with permessage-deflate if it has
        `COMPRESS_FROM` bytes or more (RFC 7692 §6: a message may go uncompressed), unless not
        `compress`. `payload`: `data` as bytes (text in UTF-8), when the caller has it."""
        if isinstance(data, str):
            opcode = TEXT
            if payload is None:
                payload = data.encode()
        else:
            opcode, payload = BINARY, data
        if compress and self.deflate is not None and len(payload) >= COMPRESS_FROM:
            payload, opcode = self.deflate.deflate_one(payload), opcode | RSV1
            self.relay = False
        return encode(opcode, payload, self._key())

    def relayed(self, text: bool, deflated: list[bytes]) -> bytes:
        """A message that the other side's peer compressed (`Fragment.deflated`), written as
        it came, frame for frame, without inflating and deflating it again: only while
        `relay`."""
        assert self.relay and self.deflate is not None
        return self._frames((TEXT if text else BINARY) | RSV1, deflated)

    def fragmented(self, pieces: list[str | bytes], compress: bool = True) -> bytes:
        """A message in one frame per piece (the framing it came with), compressed with
        permessage-deflate unless not `compress`."""
        opcode = TEXT if isinstance(pieces[0], str) else BINARY
        payloads = [p.encode() if isinstance(p, str) else p for p in pieces]
        if compress and self.deflate is not None:
            payloads, opcode = self.deflate.deflate(payloads), opcode | RSV1
            self.relay = False
        return self._frames(opcode, payloads)

    def _frames(self, opcode: int, payloads: list[bytes]) -> bytes:
        if len(payloads) == 1:  # per message: most come in one frame
            return encode(opcode, payloads[0], self._key())
        last = len(payloads) - 1
        return b"".join(
            encode(CONTINUATION if i else opcode, p, self._key(), i == last)
            for i, p in enumerate(payloads)
        )

    def ping(self, payload: bytes) -> bytes:
        return encode(PING, payload, self._key())

    def pong(self, payload: bytes) -> bytes:
        return encode(PONG, payload, self._key())

    def close(self, code: int | None, reason: str = "") -> bytes:
        """Our close frame (`code` None: without a code, 1005); after it, nothing is sent."""
        payload = b"" if code is None else code.to_bytes(2) + reason.encode()
        self.state = CLOSED if self.state is REMOTE_CLOSING else LOCAL_CLOSING
        return encode(CLOSE, payload, self._key())
