"""permessage-deflate (RFC 7692) for the whole messages the layer reads and writes itself.

Pure: this module imports neither mitmproxy nor asyncio. `inflate` and `deflate` do one
message with the zlib streams they are given; `SideDeflate` keeps those streams in the side's
codec (wsproto's ``PerMessageDeflate``), so that a message the codec reads or writes next
continues the same LZ77 window (context takeover, §7.1.1). `FixedPerMessageDeflate` is
wsproto's extension with a bug fixed.
"""

from __future__ import annotations

import zlib
from typing import Any, Protocol

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, RsvBits

__all__ = ["TAIL", "FixedPerMessageDeflate", "SideDeflate", "deflate", "inflate"]

#: RFC 7692 §7.2.1: a compressed message is sent without the 4 bytes that end a sync flush,
#: and the receiver appends them again (§7.2.2).
TAIL = b"\x00\x00\xff\xff"


class _Decompress(Protocol):
    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...


class _Compress(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self, mode: int = zlib.Z_FINISH, /) -> bytes: ...


def inflate(decompressor: _Decompress, payload: bytes, limit: int) -> bytes:
    """The message `payload` holds, decompressed.

    Raises:
        OverflowError: it is over `limit` bytes (0: no limit); what is past it is never
            decompressed.
        zlib.error: `payload` is not a valid deflate stream.
    """
    if not limit:
        return decompressor.decompress(payload + TAIL)
    data = decompressor.decompress(payload + TAIL, limit + 1)
    if len(data) > limit:
        raise OverflowError(f"message larger than {limit} bytes")
    return data


def deflate(compressor: _Compress, data: bytes) -> bytes:
    """`data` compressed as one message (§7.2.1: a sync flush, without its last 4 bytes)."""
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _control(proto: Any) -> bool:
    """The frame wsproto's decoder is reading is a control frame."""
    header = getattr(proto, "header", None)
    return header is not None and header.opcode.iscontrol()


class FixedPerMessageDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, but a control frame between the fragments of a compressed
    message (RFC 6455 §5.4 allows pings there) no longer ends its decompression: wsproto 1.2
    then reads the rest as uncompressed, failing text with 1007 and corrupting binary (its
    pull request 205). Control frames are never compressed (RFC 7692 §6.1)."""

    def frame_inbound_header(
        self, proto: Any, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(False, False, False)
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if _control(proto):
            return data
        return super().frame_inbound_payload_data(proto, data)

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if _control(proto):
            return None
        return super().frame_inbound_complete(proto, fin)


class SideDeflate:
    """A side's permessage-deflate for the messages the layer reads and writes itself, with
    the zlib streams of the side's codec (wsproto's `PerMessageDeflate`: its ``_compressor``
    and ``_decompressor``), so that what the codec reads or writes next continues them."""

    __slots__ = ("ext", "in_bits", "in_reset", "out_bits", "out_reset")

    def __init__(self, ext: PerMessageDeflate, client: bool) -> None:
        self.ext = ext
        # RFC 7692 §7.1: the client's parameters govern what the client sends
        theirs, ours = ("server", "client") if client else ("client", "server")
        self.in_bits = int(getattr(ext, f"{theirs}_max_window_bits"))
        self.in_reset = bool(getattr(ext, f"{theirs}_no_context_takeover"))
        self.out_bits = int(getattr(ext, f"{ours}_max_window_bits"))
        self.out_reset = bool(getattr(ext, f"{ours}_no_context_takeover"))

    @classmethod
    def of(cls, proto: FrameProtocol) -> SideDeflate | None:
        """The side's deflate, if permessage-deflate is the one extension of its codec (whose
        class becomes `FixedPerMessageDeflate`: the same object, wsproto's bug fixed)."""
        extensions = proto.extensions
        if len(extensions) != 1 or not isinstance(extensions[0], PerMessageDeflate):
            return None
        if type(extensions[0]) is PerMessageDeflate:
            extensions[0].__class__ = FixedPerMessageDeflate
        return cls(extensions[0], proto.client)

    def inflate(self, payload: bytes, limit: int) -> bytes:
        ext = self.ext
        decompressor = ext._decompressor
        if decompressor is None:
            decompressor = ext._decompressor = zlib.decompressobj(-self.in_bits)
        try:
            return inflate(decompressor, payload, limit)
        finally:
            if self.in_reset:
                ext._decompressor = None

    def deflate(self, data: bytes) -> bytes:
        ext = self.ext
        compressor = ext._compressor
        if compressor is None:
            # wsproto's own settings, for one stream whichever of us writes
            compressor = ext._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.out_bits
            )
        try:
            return deflate(compressor, data)
        finally:
            if self.out_reset:
                ext._compressor = None
