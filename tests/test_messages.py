"""The message bookkeeping of a routed socket: reassembly, original framing, size limit
(properties and floods)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mitm_wsroute.messages import FRAME_COST, JOINED_PIECES, KEPT_FRAMES, Reassembly
from mitm_wsroute.messages import cut as message_cut


@dataclass(frozen=True)
class Piece:
    """A piece of a message as the codec hands it over."""

    data: str | bytes
    frame_finished: bool = True
    message_finished: bool = True
    deflated: bytes | None = None


def cut_at(data: Any, cuts: list[int]) -> list[Any]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


messages = st.one_of(st.text(max_size=200), st.binary(max_size=200))
cuts = st.lists(st.integers(0, 10_000), max_size=6)


@given(message=messages, frame_cuts=cuts, chunk_cuts=cuts)
def test_reassembly_and_original_framing(
    message: Any, frame_cuts: list[int], chunk_cuts: list[int]
) -> None:
    frames = cut_at(message, frame_cuts)
    r = Reassembly()
    result = None
    for fi, frame in enumerate(frames):
        chunks = cut_at(frame, chunk_cuts)
        for ci, chunk in enumerate(chunks):
            last_chunk = ci == len(chunks) - 1
            assert result is None
            result = r.add(Piece(chunk, last_chunk, last_chunk and fi == len(frames) - 1), limit=0)
    assert result == message
    one_piece = len(frames) == 1 and len(cut_at(message, chunk_cuts)) == 1
    assert r.frame_sizes == ([] if one_piece else [len(f) for f in frames])  # kept when needed
    assert message_cut(message, r.frame_sizes) == (frames if len(frames) > 1 else [message])


@given(frames=st.lists(st.tuples(st.binary(max_size=50), st.binary(max_size=50)), min_size=1,
                       max_size=6),
       chunk_cuts=cuts)  # fmt: skip
def test_a_compressed_message_is_kept_as_it_came_frame_for_frame(
    frames: list[tuple[bytes, bytes]], chunk_cuts: list[int]
) -> None:
    # Each frame: (what it inflates to, its payload as it came), the payload read in pieces.
    r = Reassembly()
    for fi, (data, deflated) in enumerate(frames):
        pieces = cut_at(deflated, chunk_cuts)
        for ci, piece in enumerate(pieces):
            last = ci == len(pieces) - 1
            result = r.add(Piece(data if last else b"", last, last and fi == len(frames) - 1,
                                 piece), limit=0)  # fmt: skip
    assert result == b"".join(data for data, _ in frames)
    assert r.deflated == [deflated for _, deflated in frames]
    assert r.add(Piece(b"next, uncompressed"), 0) == b"next, uncompressed"
    assert r.deflated == []


def test_a_compressed_message_is_kept_as_it_came_up_to_twice_the_limit() -> None:
    r = Reassembly()
    for deflated, kept in ((b"z" * 200, True), (b"z" * 201, False)):
        r.add(Piece(b"", True, False, deflated[:50]), 100)
        assert r.add(Piece(b"x" * 90, True, True, deflated[50:]), 100) == b"x" * 90
        assert r.deflated == ([deflated[:50], deflated[50:]] if kept else [])
        assert r.deflated_chunks.items == []  # not kept once past it, nor after the message


def test_a_message_partly_uncompressed_is_not_kept_as_it_came() -> None:
    r = Reassembly()  # not something a codec hands over: nothing to pass on as it came
    r.add(Piece(b"a", True, False, b"za"), 0)
    assert r.add(Piece(b"b", True, True, None), 0) == b"ab"
    assert r.deflated == []


@given(sizes=st.lists(st.integers(0, 50), min_size=1, max_size=10), limit=st.integers(1, 200))
def test_size_limit_checked_while_the_message_grows(sizes: list[int], limit: int) -> None:
    r = Reassembly()
    total = 0
    for i, size in enumerate(sizes):
        last = i == len(sizes) - 1
        total += size + (0 if last else FRAME_COST)  # each frame's header but the last's counts
        event = b"x" * size, True, last
        if total > limit:
            with pytest.raises(OverflowError, match=f"larger than {limit} bytes"):
                r.add(Piece(*event), limit)
            assert r.chunks.items == [] and r.size == 0  # nothing of it is kept
            return
        r.add(Piece(*event), limit)
    assert total <= limit


def test_many_empty_frames_are_bounded_and_cost_no_memory() -> None:
    # 100,000 empty continuation frames: they count against the limit (1009 as for size)...
    r = Reassembly()
    with pytest.raises(OverflowError, match="larger than 100000 bytes"):
        for _ in range(100_000):
            r.add(Piece(b"", True, False), 100_000)
    assert r.chunks.items == [] and r.frame_sizes == []
    # ...and without a limit they keep nothing but a count.
    for _ in range(100_000):
        assert r.add(Piece(b"", True, False), 0) is None
    assert r.chunks.items == [] and len(r.frame_sizes) <= KEPT_FRAMES
    assert r.add(Piece(b"end", True, True), 0) == b"end"


def test_a_message_of_many_small_frames_is_joined_as_it_arrives() -> None:
    r = Reassembly()
    for i in range(10_000):
        r.add(Piece("é", True, False), 0)
        assert len(r.chunks.items) <= JOINED_PIECES + i // JOINED_PIECES
    assert r.add(Piece("!", True, True), 0) == "é" * 10_000 + "!"
    assert r.frame_sizes == []  # more frames than KEPT_FRAMES: forwarded as one


@given(message=st.binary(max_size=200), frame_cuts=cuts, chunk_cuts=cuts)
def test_binary_messages_are_bytes_whatever_the_codec_hands_over(
    message: bytes, frame_cuts: list[int], chunk_cuts: list[int]
) -> None:
    # wsproto hands over binary payloads as bytearray; handlers must get exactly bytes.
    frames = cut_at(message, frame_cuts)
    r = Reassembly()
    out = []
    for f, frame in enumerate(frames):
        chunks = cut_at(frame, chunk_cuts)
        for c, chunk in enumerate(chunks):
            last_chunk = c == len(chunks) - 1
            piece = Piece(bytearray(chunk), last_chunk, last_chunk and f == len(frames) - 1)
            got = r.add(piece, 0)
            if got is not None:
                out.append(got)
    assert out == [message] and type(out[0]) is bytes
