"""Compressed messages passed on as they came (`Codec.relayed`): an intercept writes a message
that the other side's peer compressed without inflating and deflating it again, while both
compressed streams stay the same; a message consumed, dropped, changed or sent by the route
makes them differ, and from then on the proxy compresses itself. The peer (wsproto, with the
same permessage-deflate parameters) must read every message right either way: a relayed
message after the streams differ would refer to text that peer never saw."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import Opcode

from mitm_wsroute.codec import COMPRESS_FROM
from mitm_wsroute.connection import PAGE, SERVER
from tests.layer_harness import DEFLATE, INTERCEPT, Harness, Sender

#: Messages that share most of their text: each compressed one refers to the ones before.
TEXTS = [f'{"{"}"user": "alice", "seq": {i}, "note": "{"hello " * 40}"{"}"}' for i in range(60)]

FORWARD, CONSUME, CONSUME_AND_SEND, HOOK_CHANGES = "forward", "consume", "consume+send", "hook"


def intercept(hooks: bool = False) -> Harness:
    h = Harness(mode=INTERCEPT, path=DEFLATE, hooks=hooks, limit=0)
    for side in (PAGE, SERVER):
        h.connection.handlers[side].message = None  # forwarded unless a step says otherwise
    return h


def compressed_frame(sender: Sender, text: str) -> bytes:
    return sender.data(Opcode.TEXT, text.encode(), True)


def test_forwarded_messages_are_relayed_and_read_right() -> None:
    h = intercept()
    client, server = Sender(PAGE, True), Sender(SERVER, True)
    for i, text in enumerate(TEXTS[:20]):
        h.receive(PAGE, compressed_frame(client, text))
        h.receive(SERVER, compressed_frame(server, text.upper()))
        assert h.peer_messages[SERVER][i] == text and h.peer_messages[PAGE][i] == text.upper()
    for side in (PAGE, SERVER):
        codec = h.layer.codecs[side]
        assert codec.relay and codec.deflate is not None
        assert codec.deflate._compressor is None  # never compressed anything itself


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([FORWARD] * 4 + [CONSUME, CONSUME_AND_SEND, HOOK_CHANGES]),
                min_size=1, max_size=30))  # fmt: skip
def test_every_message_is_read_right_whatever_the_route_does(steps: list[str]) -> None:
    h = intercept(hooks=True)
    client = Sender(PAGE, True)
    expected: list[str] = []
    changed: set[int] = set()

    class ChangeSome:  # another addon's websocket_message hook
        def websocket_message(self, flow: Any) -> None:
            message = flow.websocket.messages[-1]
            if message.from_client and len(flow.websocket.messages) - 1 in changed:
                message.content = b"changed " + message.content

    from mitm_wsroute.addon_hooks import message_hooks

    h.socket.hooks = message_hooks([ChangeSome()], skip=None)
    for i, step in enumerate(steps):
        text = TEXTS[i]
        page = h.connection.handlers[PAGE]
        if step == FORWARD:
            page.message = None
            expected.append(text)
        elif step == CONSUME:
            page.message = lambda m: None
        elif step == CONSUME_AND_SEND:
            reply = "route: " + text[::-1] * (1 + i % 3)  # some over COMPRESS_FROM
            page.message = lambda m, reply=reply: h.route[SERVER].send(reply)
            expected.append(reply)
        else:
            page.message = None
            changed.add(len(h.flow.websocket.messages))
            expected.append("changed " + text)
        h.receive(PAGE, compressed_frame(client, text))
    assert h.peer_messages[SERVER] == expected
    assert h.layer.codecs[SERVER].relay is all(s == FORWARD for s in steps)


def test_the_proxy_compresses_only_messages_worth_it() -> None:
    h = intercept()
    h.connection.handlers[PAGE].message = lambda m: h.route[SERVER].send(m)  # not relayed
    client = Sender(PAGE, True)
    for text in ("small", "x" * COMPRESS_FROM):
        h.receive(PAGE, compressed_frame(client, text))
    assert h.peer_messages[SERVER] == ["small", "x" * COMPRESS_FROM]
    # the first went uncompressed (RSV1 clear), the second compressed
    assert not h.layer.codecs[SERVER].relay


@pytest.mark.parametrize("side", [PAGE, SERVER])
def test_uncompressed_messages_keep_the_streams_the_same(side: Any) -> None:
    h = intercept()
    sender = Sender(side, False)  # a peer that sends some messages uncompressed
    for text in TEXTS[:5]:
        h.receive(side, sender.data(Opcode.TEXT, text.encode(), True))
    assert h.layer.codecs[side.other].relay
    assert h.peer_messages[side.other] == TEXTS[:5]
