"""What a routed socket does with whole messages: reassembly from pieces, with the size limit,
the original framing, and how many messages a flow keeps.

Pure: this module imports neither mitmproxy nor asyncio; `layer.py` feeds it.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from typing import Protocol, cast

__all__ = [
    "FRAME_COST",
    "JOINED_PIECES",
    "KEEP_BYTES",
    "KEPT_FRAMES",
    "Piece",
    "Reassembly",
    "cut",
    "trim",
]

#: Each frame of a fragmented message but its last counts this much against
#: ``wsroute_max_message_size`` besides its payload (the smallest frame header, RFC 6455 §5.2),
#: so that a message of many tiny or empty frames is bounded too.
FRAME_COST = 2
#: A message's original framing is kept (and forwarded frame for frame) up to this many frames;
#: a message in more frames is forwarded as one.
KEPT_FRAMES = 1024
#: The pieces of a message are joined in groups of this many as they arrive, so that a message of
#: many small pieces takes memory for its bytes, not for its pieces.
JOINED_PIECES = 1024


class Piece(Protocol):
    """A piece of a message as the codec hands it over (`codec.Fragment`)."""

    @property
    def data(self) -> str | bytes | bytearray: ...
    @property
    def frame_finished(self) -> bool: ...
    @property
    def message_finished(self) -> bool: ...
    @property
    def deflated(self) -> bytes | None: ...


def _join(chunks: list[str | bytes | bytearray]) -> str | bytes:
    if isinstance(chunks[0], str):
        return "".join(cast(list[str], chunks))
    return b"".join(cast(list[bytes], chunks))


@dataclass(slots=True)
class _Chunks:
    """The pieces of a message, kept so that joining them is linear (mitmproxy's ``bytes +=``
    is quadratic: 26 s for 64 MiB), joined in groups of `JOINED_PIECES` as they arrive."""

    items: list[str | bytes | bytearray] = field(default_factory=list)
    #: `items[:joined]` are groups of pieces joined already.
    joined: int = 0
    size: int = 0

    def add(self, data: str | bytes | bytearray) -> None:
        if not data:
            return
        self.size += len(data)
        items = self.items
        items.append(data)
        if len(items) - self.joined >= JOINED_PIECES:
            items[self.joined :] = [_join(items[self.joined :])]
            self.joined += 1

    def take(self, empty: str | bytes) -> str | bytes:
        """All of it, joined (`empty` if nothing came); forgets it."""
        out = _join(self.items) if self.items else empty
        self.clear()
        return out

    def clear(self) -> None:
        self.items.clear()
        self.joined = self.size = 0


@dataclass(slots=True)
class Reassembly:
    """A message being received from its pieces, its size checked as it grows. A compressed
    message's payload as it came is kept too (up to twice the limit), to be passed on as it
    came (`Codec.relayed`)."""

    chunks: _Chunks = field(default_factory=_Chunks)
    #: The sizes of the frames of the last message, when it came in several (and not too many).
    frame_sizes: list[int] = field(default_factory=list)
    frame: int = 0
    #: Payload so far, and `FRAME_COST` per frame.
    size: int = 0
    pieces: int = 0
    framing_kept: bool = True
    #: The last message's payload as it came compressed, a piece per frame as `frame_sizes`
    #: (one if they were not kept); empty if it came uncompressed or was too big to keep.
    deflated: list[bytes] = field(default_factory=list)
    #: Of the message being received: its compressed payload so far, the sizes of its frames
    #: and of the current one so far (as `frame_sizes` and `frame`), and whether it is kept.
    deflated_chunks: _Chunks = field(default_factory=_Chunks)
    deflated_sizes: list[int] = field(default_factory=list)
    deflated_frame: int = 0
    deflated_kept: bool = True

    def add(self, piece: Piece, limit: int, relay: bool = True) -> str | bytes | None:
        """Add a piece (of a frame: the codec hands them over as they arrive); the whole
        message once it is complete. `OverflowError` past `limit` bytes (characters for text;
        each frame of a fragmented message but the last counts `FRAME_COST` more), which
        forgets the message: its rest is never stored. Without `relay` (nothing is passed on
        as it came), a compressed payload is not kept."""
        data, deflated = piece.data, piece.deflated
        if not self.pieces and piece.message_finished:  # one piece: most messages
            if limit and len(data) > limit:
                raise OverflowError(f"message larger than {limit} bytes")
            self.deflated = [] if deflated is None else [deflated]
            # a `bytearray` (wsproto's binary payloads) is copied: handlers get `bytes`, whichever
            # path read the message
            return bytes(data) if isinstance(data, bytearray) else data
        self.pieces += 1
        self.size += len(data)
        self.frame += len(data)
        if self.deflated_kept and relay and deflated is not None:
            self.deflated_chunks.add(deflated)
            self.deflated_frame += len(deflated)
            self.deflated_kept = not limit or self.deflated_chunks.size <= 2 * limit
        else:
            self.deflated_kept = False
        if not self.deflated_kept:  # uncompressed, not to be relayed, or too big
            self.deflated_chunks.clear()
        message_finished = piece.message_finished
        if piece.frame_finished:
            if not message_finished:
                self.size += FRAME_COST
            if self.framing_kept and len(self.frame_sizes) < KEPT_FRAMES:
                self.frame_sizes.append(self.frame)
                self.deflated_sizes.append(self.deflated_frame)
            else:  # too many frames to keep their sizes: forwarded as one
                self.framing_kept = False
                self.frame_sizes.clear()
                self.deflated_sizes.clear()
            self.frame = self.deflated_frame = 0
        if limit and self.size > limit:
            self._forget()
            self.frame_sizes.clear()
            raise OverflowError(f"message larger than {limit} bytes")
        self.chunks.add(data)
        if not message_finished:
            return None
        message = self.chunks.take("" if isinstance(data, str) else b"")
        self.deflated = []
        if self.deflated_kept:
            deflated = cast(bytes, self.deflated_chunks.take(b""))
            self.deflated = cast(list[bytes], cut(deflated, self.deflated_sizes))
        self._forget()
        return message

    def _forget(self) -> None:
        self.chunks.clear()
        self.deflated_chunks.clear()
        self.deflated_sizes.clear()
        self.frame = self.deflated_frame = self.size = self.pieces = 0
        self.framing_kept = self.deflated_kept = True


def cut(message: str | bytes, sizes: list[int]) -> list[str | bytes]:
    """`message` cut into pieces of the given sizes (its original frames), or whole when the
    sizes do not add up to it."""
    if len(sizes) <= 1 or sum(sizes) != len(message):
        return [message]
    out, offset = [], 0
    for size in sizes:
        out.append(message[offset : offset + size])
        offset += size
    return out


#: With ``wsroute_keep_messages``, the content a flow keeps at most (big messages count more).
KEEP_BYTES = 16 * 1024 * 1024


class _Kept(Protocol):
    @property
    def content(self) -> Sized: ...


def trim(messages: list[_Kept], keep: int, budget: int) -> int:
    """Drop the oldest of `messages` so that at most `keep` stay, holding at most `budget`
    bytes of content, but always the newest. Returns the content size of what stays."""
    first = max(0, len(messages) - keep)
    kept = sum(len(m.content) for m in messages[first:])
    while kept > budget and first < len(messages) - 1:
        kept -= len(messages[first].content)
        first += 1
    del messages[:first]
    return kept
