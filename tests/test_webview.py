"""mitmweb's views of WebSocket messages (mitmproxy's own contentview registry, as mitmweb and
the console call it): a routed socket's consumed and sent messages labelled, Socket.IO packets
and GraphQL over WebSocket messages decoded."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from mitmproxy import contentviews
from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from mitm_wsroute import webview


@pytest.fixture(autouse=True)
def _views() -> Iterator[None]:
    webview.register()
    webview.register()  # once: a second call adds nothing
    names = [contentviews.registry[n].name for n in contentviews.registry]
    assert names.count("Socket.IO packet") == names.count("GraphQL over WebSocket") == 1
    with taddons.context():  # the registry reads mitmproxy's options
        yield


def shown(flow: object, content: str | bytes, **kw: bool) -> tuple[str, str | None]:
    text = isinstance(content, str)
    message = WebSocketMessage(
        Opcode.TEXT if text else Opcode.BINARY,
        True,
        content.encode() if isinstance(content, str) else content,
        **kw,
    )
    result = contentviews.prettify_message(message, flow)  # type: ignore[arg-type]
    return result.text, result.view_name


def socket_io_flow() -> object:
    flow = tflow.twebsocketflow()
    flow.request.path = "/socket.io/?EIO=4&transport=websocket"
    return flow


def test_socket_io_packets_decoded() -> None:
    flow = socket_io_flow()
    assert shown(flow, '42["chat","hi",{"a":1}]') == (
        'EVENT \'chat\' namespace /\n[\n  "hi",\n  {\n    "a": 1\n  }\n]',
        "Socket.IO packet",
    )
    assert shown(flow, '42/admin,17["whoami"]')[0] == "EVENT 'whoami' namespace /admin ack 17\n[]"
    assert shown(flow, "43/admin,17[5]")[0] == "ACK namespace /admin ack 17\n[\n  5\n]"
    assert shown(flow, '451-["up",{"_placeholder":true,"num":0}]')[0].startswith(
        "BINARY_EVENT 'up' namespace / 1 binary attachment\n"
    )
    assert shown(flow, b"\x00\x01")[0].startswith("binary attachment, 2 bytes")
    open_ = shown(flow, '0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000}')
    assert open_[0].startswith("OPEN\n{\n") and json.loads(open_[0][5:])["sid"] == "x"
    assert shown(flow, "2")[0] == "PING" and shown(flow, "3probe")[0] == "PONG probe"
    assert shown(flow, "40")[0] == "CONNECT namespace /"
    # not Socket.IO after all: mitmproxy falls back to its raw view, saying why
    assert shown(flow, "hello")[1] == "Raw"


def test_graphql_messages_decoded() -> None:
    flow = tflow.twebsocketflow()
    assert flow.response is not None
    flow.response.headers["Sec-WebSocket-Protocol"] = "graphql-transport-ws"
    subscribe = {
        "id": "1",
        "type": "subscribe",
        "payload": {"query": "subscription Count($to: Int!) { count(to: $to) }",
                    "variables": {"to": 3}},
    }  # fmt: skip
    assert shown(flow, json.dumps(subscribe)) == (
        'subscribe id 1 Count\n{\n  "to": 3\n}\n---\n'
        "subscription Count($to: Int!) { count(to: $to) }",
        "GraphQL over WebSocket",
    )
    next_ = {"id": "1", "type": "next", "payload": {"data": {"count": 1}}}
    assert shown(flow, json.dumps(next_))[0] == (
        'next id 1\n{\n  "data": {\n    "count": 1\n  }\n}'
    )
    assert shown(flow, '{"type":"connection_ack"}')[0] == "connection_ack"
    flow.response.headers["Sec-WebSocket-Protocol"] = "chat"  # another protocol: not ours
    assert shown(flow, json.dumps(next_))[1] != "GraphQL over WebSocket"


def test_routed_message_labelled_then_decoded() -> None:
    flow = socket_io_flow()
    flow.metadata["wsroute"] = {"route": "routes.py:chat"}
    text, view = shown(flow, '42["chat","hi"]', injected=True)
    assert view == "WebSocket route"
    assert text == "[sent by the route]\nEVENT 'chat' namespace /\n[\n  \"hi\"\n]"
    text, _ = shown(flow, "2", dropped=True)
    assert text == "[consumed by the route: not forwarded]\nPING"
