"""permessage-deflate (RFC 7692) for the whole messages the layer reads and writes itself.

Pure: this module imports neither mitmproxy nor asyncio. It compresses and decompresses one
message with the zlib streams it is given; the layer keeps those streams in the side's codec
(wsproto's ``PerMessageDeflate``), so that a message the codec reads or writes next continues
the same LZ77 window (context takeover, §7.1.1).
"""

from __future__ import annotations

import zlib
from typing import Protocol

__all__ = ["TAIL", "deflate", "inflate"]

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
