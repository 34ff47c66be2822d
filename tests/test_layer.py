"""The layer's own bookkeeping: reassembly, framing, size limit, retention (properties)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import wsproto.events as wse
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import websocket
from wsproto.frame_protocol import Opcode

from mitm_wsroute.layer import RoutedWebsocketLayer, _frames, _Reassembly


def cut(data: Any, cuts: list[int]) -> list[Any]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


messages = st.one_of(st.text(max_size=200), st.binary(max_size=200))
cuts = st.lists(st.integers(0, 10_000), max_size=6)


@given(message=messages, frame_cuts=cuts, chunk_cuts=cuts)
def test_reassembly_and_original_framing(
    message: Any, frame_cuts: list[int], chunk_cuts: list[int]
) -> None:
    cls = wse.TextMessage if isinstance(message, str) else wse.BytesMessage
    frames = cut(message, frame_cuts)
    r = _Reassembly()
    result = None
    for fi, frame in enumerate(frames):
        chunks = cut(frame, chunk_cuts)
        for ci, chunk in enumerate(chunks):
            last_chunk = ci == len(chunks) - 1
            assert result is None
            result = r.add(
                cls(
                    chunk,
                    frame_finished=last_chunk,
                    message_finished=last_chunk and fi == len(frames) - 1,
                ),
                limit=0,
            )
    assert result == message
    one_piece = len(frames) == 1 and len(cut(message, chunk_cuts)) == 1
    assert r.frame_sizes == ([] if one_piece else [len(f) for f in frames])  # kept when needed
    out = _frames(message, r.frame_sizes)
    assert [e.data for e in out] == (frames if len(frames) > 1 else [message])
    assert [e.message_finished for e in out] == [False] * (len(out) - 1) + [True]


@given(sizes=st.lists(st.integers(1, 50), min_size=1, max_size=10), limit=st.integers(1, 200))
def test_size_limit_checked_while_the_message_grows(sizes: list[int], limit: int) -> None:
    r = _Reassembly()
    total = 0
    for i, size in enumerate(sizes):
        total += size
        event = wse.BytesMessage(b"x" * size, message_finished=i == len(sizes) - 1)
        if total > limit:
            with pytest.raises(OverflowError, match=f"larger than {limit} bytes"):
                r.add(event, limit)
            assert r.chunks == [] and r.size == 0  # nothing of it is kept
            return
        r.add(event, limit)
    assert total <= limit


@given(
    sizes=st.lists(st.integers(0, 9), max_size=300),
    keep=st.integers(0, 50),
    budget=st.integers(1, 40),
)
def test_retention_is_bounded_and_keeps_the_newest(
    sizes: list[int], keep: int, budget: int
) -> None:
    flow = SimpleNamespace(websocket=SimpleNamespace(messages=[]))
    layer = SimpleNamespace(flow=flow, keep_messages=keep, kept_bytes=0)
    with mock.patch("mitm_wsroute.layer.KEEP_BYTES", budget):
        for i, size in enumerate(sizes):
            message = websocket.WebSocketMessage(Opcode.BINARY, True, bytes([i % 256]) * size)
            RoutedWebsocketLayer._record(layer, message)  # type: ignore[arg-type]
    kept = flow.websocket.messages
    if keep == 0 or not sizes:
        assert len(kept) == len(sizes)
        return
    assert kept[-1].content == bytes([(len(sizes) - 1) % 256]) * sizes[-1]  # the newest, always
    assert len(kept) < 2 * keep
    assert len(kept) == 1 or sum(len(m.content) for m in kept) <= 2 * budget
    assert layer.kept_bytes == sum(len(m.content) for m in kept)
    every = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    assert [m.content for m in kept] == every[len(every) - len(kept) :]  # the newest, in order
