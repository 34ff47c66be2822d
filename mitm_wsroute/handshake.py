"""The HTTP side of a WebSocket handshake (RFC 6455 §4): what the client asked, what we answer."""

from __future__ import annotations

from mitmproxy import http
from wsproto.utilities import generate_accept_token, split_comma_header

__all__ = ["accept", "is_websocket_upgrade", "requested_protocols"]


def is_websocket_upgrade(request: http.Request) -> bool:
    """An RFC 6455 §4.1 opening handshake that mitmproxy would upgrade."""
    return (
        request.headers.get("upgrade", "").lower() == "websocket"
        and request.headers.get("sec-websocket-version", "") == "13"
        and "sec-websocket-key" in request.headers
    )


def requested_protocols(request: http.Request) -> list[str]:
    """The subprotocols of ``Sec-WebSocket-Protocol`` (all header lines), in order."""
    values = request.headers.get_all("sec-websocket-protocol")
    return [p for v in values for p in split_comma_header(v.encode())]


def accept(request: http.Request, protocols: list[str]) -> http.Response:
    """The 101 a mock answers with: the first requested subprotocol, no extension (as
    Playwright's mock: ``protocols[0]``, ``extensions == ''``)."""
    key = request.headers["sec-websocket-key"].encode()
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": generate_accept_token(key).decode(),
    }
    if protocols:
        headers["Sec-WebSocket-Protocol"] = protocols[0]
    response = http.Response.make(101, b"", headers)
    del response.headers["content-length"]
    return response
