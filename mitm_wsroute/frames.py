"""The common frames of RFC 6455 §5, read and written without a codec: whole data messages.

Most messages travel as one frame: FIN set, no reserved bits (but RSV1 where permessage-deflate
compressed it), text or binary. `next_frame` reads such a frame and stops at anything else (a
control frame, a fragment, another extension's bit, a non-minimal length, a frame over a size),
which the codec then reads as usual, errors included; of a frame not all there yet, it says so.
`next_whole` decodes its message on a side without extensions; `whole` writes one.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["RSV1", "TEXT", "frame_size", "next_frame", "next_whole", "unmask", "whole"]

_TEXT, _BINARY = 0x1, 0x2
#: A frame's first byte: the text opcode (its low 4 bits), and RSV1, which permessage-deflate
#: sets on a compressed message (RFC 7692 §6).
TEXT, RSV1 = _TEXT, 0x40


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


def next_frame(
    data: bytes, pos: int, masked: bool, max_length: int, rsv1: bool = False
) -> tuple[int, bytes, int] | tuple[None, int] | None:
    """The whole single-frame data message at `pos` of `data`: its first byte (FIN, RSV1 and
    the opcode), its payload (unmasked) and where the next frame starts; ``(None, pos)`` if
    such a frame starts there but is not all there yet; None if the frame there is anything
    else (RSV1 is allowed with `rsv1`: a message compressed by permessage-deflate), or its
    payload is over `max_length` bytes. `masked`: the frame must be masked (a client's), else
    it must not be (a server's)."""
    n = len(data)
    if n - pos < 2:
        return None, pos
    b0, b1 = data[pos], data[pos + 1]
    opcode = b0 & 0x0F
    if (b0 & 0xF0 != 0x80 and not (rsv1 and b0 & 0xF0 == 0xC0)) or (
        opcode != _TEXT and opcode != _BINARY
    ):
        return None  # not final, a reserved bit, or not a data frame
    if bool(b1 & 0x80) is not masked:
        return None
    length = b1 & 0x7F
    start = pos + 2
    if length == 126:
        if n < start + 2:
            return None, pos
        length = int.from_bytes(data[start : start + 2])
        start += 2
        if length < 126:
            return None  # not minimal: the codec refuses it
    elif length == 127:
        if n < start + 8:
            return None, pos
        length = int.from_bytes(data[start : start + 8])
        start += 8
        if length < 65536 or length >> 63:
            return None
    if length > max_length:
        return None
    if masked:
        key = data[start : start + 4]
        start += 4
    end = start + length
    if end > n:
        return None, pos  # not all there yet
    payload = data[start:end]
    if masked:
        payload = unmask(payload, key)
    return b0, payload, end


def next_whole(
    data: bytes, pos: int, masked: bool, max_length: int
) -> tuple[str | bytes | None, int] | None:
    """`next_frame` on a side without extensions, its message decoded: `str` for text (None
    for invalid UTF-8, which the codec then reads and refuses), `bytes` for binary."""
    found = next_frame(data, pos, masked, max_length)
    if found is None or found[0] is None:
        return found
    b0, payload, end = found
    if b0 & 0x0F == _BINARY:
        return payload, end
    try:
        return payload.decode(), end
    except UnicodeDecodeError:
        return None


def frame_size(data: bytes | bytearray) -> int:
    """The size of the whole frame that starts `data` (header, mask key and payload), once its
    header is all there; 0 until then. So that the start of a frame is kept until the rest has
    come, instead of being read again at every read (`next_whole` on a frame in many reads)."""
    n = len(data)
    if n < 2:
        return 0
    b1 = data[1]
    length, head = b1 & 0x7F, 2 + (4 if b1 & 0x80 else 0)
    if length == 126:
        if n < 4:
            return 0
        length, head = int.from_bytes(data[2:4]), head + 2
    elif length == 127:
        if n < 10:
            return 0
        length, head = int.from_bytes(data[2:10]), head + 8
    return head + length


def whole(
    message: str | bytes,
    key: bytes | None = None,
    compress: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """`message` as one frame: unmasked (a server's), or masked with the 4-byte `key` (a
    client's, RFC 6455 §5.3: a fresh random key per frame); with `compress`, its payload
    compressed and RSV1 set (permessage-deflate, RFC 7692 §6)."""
    if isinstance(message, str):
        payload, b0 = message.encode(), 0x80 | _TEXT
    else:
        payload, b0 = message, 0x80 | _BINARY
    if compress is not None:
        payload, b0 = compress(payload), b0 | 0x40
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
