"""The HTTP side of a WebSocket handshake (RFC 6455 §4): what the client asked, what we answer."""

from __future__ import annotations

import base64
import hashlib

from mitmproxy import http

from .connection import Accept, Reject
from .headers import Headers

__all__ = [
    "accept",
    "is_websocket_upgrade",
    "negotiate_deflate",
    "reject",
    "request_headers",
    "requested_protocols",
]


def is_websocket_upgrade(request: http.Request) -> bool:
    """An RFC 6455 §4.1 opening handshake that mitmproxy would upgrade."""
    return (
        request.headers.get("upgrade", "").lower() == "websocket"
        and request.headers.get("sec-websocket-version", "") == "13"
        and "sec-websocket-key" in request.headers
    )


def split_comma_header(value: str) -> list[str]:
    """The comma-separated items of a header value, stripped, empty ones left out."""
    return [item.strip() for item in value.split(",") if item.strip()]


def accept_token(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def requested_protocols(request: http.Request) -> list[str]:
    """The subprotocols of ``Sec-WebSocket-Protocol`` (all header lines), in order."""
    values = request.headers.get_all("sec-websocket-protocol")
    return [p for v in values for p in split_comma_header(v)]


def request_headers(request: http.Request) -> Headers:
    """The request's header fields, as sent (a copy)."""
    return Headers(request.headers.items(multi=True))  # type: ignore[no-untyped-call]


#: zlib cannot compress with an 8-bit window (RFC 7692 §7.1.2 allows 8 to 15).
_WINDOW_BITS = range(9, 16)


def negotiate_deflate(offers: list[str]) -> str | None:
    """The ``Sec-WebSocket-Extensions`` value a server answers with to a client's
    permessage-deflate offers (RFC 7692 §5 and §7.1), or None to decline.

    The first valid offer wins, with the client's own parameters: the no-context-takeover
    flags and the window sizes it asked for. An offer with an unknown, repeated or invalid
    parameter is declined (§5.1), and so is a window the proxy cannot use (8 bits).
    """
    for offer in offers:
        name, *params = (p.strip() for p in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        answer, seen = ["permessage-deflate"], set()
        for param in params:
            key, _, value = (x.strip().strip('"') for x in param.partition("="))
            key = key.lower()
            if key in seen:
                break
            seen.add(key)
            if key in ("server_no_context_takeover", "client_no_context_takeover") and not value:
                answer.append(key)
            elif key == "server_max_window_bits" and value.isdigit() and int(value) in _WINDOW_BITS:
                answer.append(f"{key}={int(value)}")
            elif key == "client_max_window_bits" and not value:
                pass  # §7.1.2.2: the client may use any window; we decompress with 15 bits
            elif key == "client_max_window_bits" and value.isdigit() and int(value) in _WINDOW_BITS:
                answer.append(f"{key}={int(value)}")
            else:
                break
        else:
            return "; ".join(answer)
    return None


def accept(
    request: http.Request, protocols: list[str], answer: Accept | None = None
) -> http.Response:
    """The 101 a mock answers with: by default (as Playwright's mock) the first requested
    subprotocol, and permessage-deflate when the client offers it (as a real server would)."""
    if answer is None:
        answer = Accept(protocols[0] if protocols else None)
    key = request.headers["sec-websocket-key"]
    fields = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_token(key)),
    ]
    if answer.protocol is not None:
        fields.append(("Sec-WebSocket-Protocol", answer.protocol))
    if answer.compression:
        # proxy: Playwright's mock answers with no extension; real servers accept
        # permessage-deflate, and a mock should look like the server the client talks to.
        offers = request.headers.get_all("sec-websocket-extensions")
        extension = negotiate_deflate([o for v in offers for o in split_comma_header(v)])
        if extension is not None:
            fields.append(("Sec-WebSocket-Extensions", extension))
    response = http.Response.make(101, b"", _encoded([*fields, *answer.headers]))
    del response.headers["content-length"]
    return response


def reject(answer: Reject) -> http.Response:
    """The HTTP response `reject()` asked for (its Content-Length is always the body's)."""
    return http.Response.make(answer.status, answer.body, _encoded(list(answer.headers)))


def _encoded(fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in fields]
