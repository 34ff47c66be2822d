"""How mitmweb (and mitmproxy's console) shows the messages of a routed socket.

mitmproxy records a message a route consumed as dropped and one a route sent as injected, but
its WebSocket view does not say so. `RouteMessageView`, picked automatically for routed flows,
puts that on a first line, then shows the message as the best other view would.

`SocketIOView` and `GraphQLWsView` decode the packets of Socket.IO (Engine.IO v4) sockets and
of GraphQL over WebSocket (both protocols), routed or not: the packet's kind, namespace, event,
ack and operation ids on a first line, then its data as indented JSON.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import contentviews, http
from mitmproxy.contentviews import Contentview, Metadata
from mitmproxy.contentviews._view_raw import raw

from .graphql_ws import PROTOCOLS, operation_from_message
from .socketio import EIO, SIO, decode_eio, decode_sio

__all__ = ["GraphQLWsView", "RouteMessageView", "SocketIOView", "register"]

CONSUMED = "[consumed by the route: not forwarded]"
SENT = "[sent by the route]"


class RouteMessageView(Contentview):
    """A routed socket's message, with what the route did with it."""

    @property
    def name(self) -> str:
        return "WebSocket route"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        message, flow = metadata.websocket_message, metadata.flow
        if message is None or flow is None or "wsroute" not in flow.metadata:
            return -1
        return 10 if message.dropped or message.injected else -1

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        message = metadata.websocket_message
        line = SENT if message is not None and message.injected else CONSUMED
        return f"{line}\n{_best_other_view(data, metadata).prettify(data, metadata)}"


def _best_other_view(data: bytes, metadata: Metadata) -> Contentview:
    best: tuple[float, Contentview] = (0.0, raw)
    for name in contentviews.registry:
        view = contentviews.registry[name]
        if isinstance(view, RouteMessageView):
            continue
        try:
            priority = view.render_priority(data, metadata)
        except Exception:  # a broken view is mitmproxy's registry's to report
            continue
        if priority > best[0]:
            best = (priority, view)
    return best[1]


#: Above mitmproxy's own Socket.IO view (1), below `RouteMessageView`, which then uses these.
_PROTOCOL_PRIORITY = 2


def _websocket_flow(metadata: Metadata) -> http.HTTPFlow | None:
    flow = metadata.flow
    if metadata.websocket_message is None or not isinstance(flow, http.HTTPFlow):
        return None
    return flow if flow.websocket is not None else None


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


class SocketIOView(Contentview):
    """A Socket.IO (Engine.IO v4) packet: what it is, then its data."""

    @property
    def name(self) -> str:
        return "Socket.IO packet"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        flow = _websocket_flow(metadata)
        if flow is None or "/socket.io/" not in flow.request.path:
            return -1
        return _PROTOCOL_PRIORITY

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        message = metadata.websocket_message
        if message is not None and not message.is_text:
            return f"binary attachment, {len(data)} bytes\n{raw.prettify(data, metadata)}"
        kind, payload = decode_eio(data.decode())
        if kind is not EIO.MESSAGE:
            text = payload if isinstance(payload, str) else ""
            if kind is EIO.OPEN:
                return f"OPEN\n{_json(json.loads(text))}"
            return f"{kind.name} {text}".rstrip()
        assert isinstance(payload, str)
        packet, attachments = decode_sio(payload)
        head = [packet.type.name]
        data_: Any = packet.data
        if packet.type in (SIO.EVENT, SIO.BINARY_EVENT) and isinstance(data_, list) and data_:
            head.append(repr(data_[0]))
            data_ = data_[1:]
        head.append(f"namespace {packet.namespace}")
        if packet.id is not None:
            head.append(f"ack {packet.id}")
        if attachments:
            head.append(f"{attachments} binary attachment{'s' if attachments > 1 else ''}")
        body = "" if data_ is None else f"\n{_json(data_)}"
        return " ".join(head) + body


class GraphQLWsView(Contentview):
    """A GraphQL over WebSocket message (``graphql-transport-ws`` or the legacy ``graphql-ws``):
    its type, id and operation, then its payload (an operation's variables, then its query)."""

    @property
    def name(self) -> str:
        return "GraphQL over WebSocket"

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        flow = _websocket_flow(metadata)
        if flow is None or flow.response is None:
            return -1
        protocol = flow.response.headers.get("Sec-WebSocket-Protocol", "").strip()
        return _PROTOCOL_PRIORITY if protocol in PROTOCOLS else -1

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        message = json.loads(data)
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ValueError("not a GraphQL over WebSocket message")
        head = [message["type"]]
        if "id" in message:
            head.append(f"id {message['id']}")
        operation = operation_from_message(data.decode())
        if operation is not None:
            head.append(operation.operation_name or "(anonymous)")
            return f"{' '.join(head)}\n{_json(operation.variables)}\n---\n{operation.query}"
        payload = message.get("payload")
        return " ".join(head) + ("" if payload is None else f"\n{_json(payload)}")


def register() -> None:
    """Add the views to mitmproxy's registry (once)."""
    for view in (RouteMessageView, SocketIOView, GraphQLWsView):
        if not any(isinstance(contentviews.registry[n], view) for n in contentviews.registry):
            contentviews.add(view())
