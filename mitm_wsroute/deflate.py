"""permessage-deflate (RFC 7692): a side's negotiated parameters and its zlib streams.

Pure: this module imports neither mitmproxy nor asyncio. `Deflate` is what `codec.Codec`
compresses and decompresses a side's messages with; `negotiated` reads its parameters from the
``Sec-WebSocket-Extensions`` of the 101 response.

The streams are zlib-ng's (``zlib_ng``, the API of Python's `zlib`): it compresses 64 KiB of
text about 1.8x as fast as the system's zlib 1.2 (and inflates somewhat faster), as Node's
zlib (Chromium's) does for Mockttp; its output is plain deflate, which any peer inflates.
"""

from __future__ import annotations

from collections.abc import Iterable

from zlib_ng import zlib_ng as zlib

__all__ = ["TAIL", "Deflate", "ZlibError", "negotiated", "relayable"]

#: What inflating an invalid stream raises (zlib_ng's stub calls it an instance: it is a class).
ZlibError: type[Exception] = zlib.error  # type: ignore[assignment]

#: RFC 7692 §7.2.1: a compressed message is sent without the 4 bytes that end a sync flush,
#: and the receiver appends them again (§7.2.2).
TAIL = b"\x00\x00\xff\xff"


class Deflate:
    """One side's permessage-deflate: a decompressor for what its peer sends and a compressor
    for what is sent to it, each kept from message to message (context takeover, §7.1.1)
    unless the side's parameters reset it after every message. ``out_*``: what we compress
    with (our window's bits, at most as agreed; whether we reset after each message), ``in_*``:
    what the peer compresses with."""

    __slots__ = ("_compressor", "_decompressor", "in_bits", "in_reset", "out_bits", "out_reset")

    def __init__(
        self,
        out_bits: int = 15,
        in_reset: bool = False,
        out_reset: bool = False,
        in_bits: int = 15,
    ):
        # zlib cannot compress with an 8-bit window: 9 bits is what zlib itself uses then.
        # Inflating with a window larger than the peer's is always valid: 15 bits.
        self.out_bits = max(out_bits, 9)
        self.in_bits = in_bits
        self.in_reset = in_reset
        self.out_reset = out_reset
        self._decompressor: zlib._Decompress | None = None
        self._compressor: zlib._Compress | None = None

    def inflate(self, payload: bytes, limit: int, last: bool = True) -> bytes:
        """Decompress a piece of a message (with `last`, its end).

        Raises:
            OverflowError: more than `limit` bytes come out (0: no limit); what is past it is
                never decompressed.
            ZlibError: `payload` is not a valid deflate stream.
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-15)
        if last:
            payload += TAIL
            if self.in_reset:
                self._decompressor = None
        if not limit:
            return decompressor.decompress(payload)
        data = decompressor.decompress(payload, limit + 1)
        if len(data) > limit:
            self._decompressor = None  # the message is refused: so is the stream
            raise OverflowError(f"message larger than {limit} bytes")
        return data

    def deflate_one(self, data: bytes) -> bytes:
        """One message, compressed in one piece (`deflate`)."""
        compressor = self._compressor
        if compressor is None or self.out_reset:
            return self.deflate((data,))[0]
        return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]

    def deflate(self, pieces: Iterable[bytes]) -> list[bytes]:
        """The pieces of one message, compressed (§7.2.1: a sync flush at the end, without its
        last 4 bytes); an empty message is one empty deflate block (§7.2.3.6)."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.out_bits
            )
        out = [compressor.compress(piece) for piece in pieces]
        out[-1] = (out[-1] + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        if self.out_reset:
            self._compressor = None
        return out


def negotiated(extensions: str, server: bool) -> Deflate | None:
    """The `Deflate` of a side, from the ``Sec-WebSocket-Extensions`` the 101 response agreed
    on; None without permessage-deflate. `server`: the proxy plays the server on that side
    (it faces the client). RFC 7692 §7.1: the ``client_*`` parameters govern what the client
    compresses, the ``server_*`` ones what the server compresses."""
    for extension in extensions.split(","):
        name, *params = (p.strip() for p in extension.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        values: dict[str, str] = {}
        for param in params:
            key, _, value = (x.strip().strip('"') for x in param.partition("="))
            values[key.lower()] = value
        ours, theirs = ("server", "client") if server else ("client", "server")
        return Deflate(
            out_bits=_bits(values.get(f"{ours}_max_window_bits")),
            in_reset=f"{theirs}_no_context_takeover" in values,
            out_reset=f"{ours}_no_context_takeover" in values,
            in_bits=_bits(values.get(f"{theirs}_max_window_bits")),
        )
    return None


def _bits(value: str | None) -> int:
    """A ``*_max_window_bits`` value: 8 to 15 (§7.1.2); absent, empty or invalid: 15."""
    return int(value) if value and value.isdigit() and 8 <= int(value) <= 15 else 15


def relayable(source: Deflate | None, target: Deflate | None) -> bool:
    """Whether a message that the `source` side's peer compressed may be written to the
    `target` side's peer as it came: the target's peer inflates it with what it agreed on for
    us, so the source's peer must have compressed within that (a window no larger, and no
    context kept across messages if the target's peer may forget it). Both sides agreed on
    the same parameters unless another addon changed the 101 that the client got."""
    return (
        source is not None
        and target is not None
        and source.in_bits <= target.out_bits
        and (source.in_reset or not target.out_reset)
    )
