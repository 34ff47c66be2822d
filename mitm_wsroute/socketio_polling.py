"""Engine.IO's HTTP long-polling transport, answered by the proxy for Socket.IO mocks.

The addon's request hook hands over ``GET``/``POST .../?EIO=4&transport=polling`` requests whose
``ws(s)://`` form a `route_socket_io` route matches. The handshake (no ``sid``) runs the route
handler: a mock answers with the open packet and keeps the session (socketio_route.py) under its
sid; an intercept lets the request go to the real server untouched, and waits for the client's
upgrade under the sid the server gave. With a ``sid`` of a mock session, a ``GET`` is held until
there is something to send (at most ``ping_interval + ping_timeout``), a ``POST`` carries the
client's packets in. A ``sid`` the proxy never gave passes through (it is a real server's).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from mitmproxy import http

from . import socketio_route
from .router import Router
from .socketio import EIO, decode_payload, encode_eio, encode_payload, open_packet
from .socketio_route import SocketIORoute, _Endpoint, _Session
from .urlmatch import websocket_url

__all__ = ["is_polling", "request", "response"]

logger = logging.getLogger(__name__)

#: Largest polling body a mock reads (Engine.IO's default maxPayload).
MAX_PAYLOAD = 1_000_000


def is_polling(req: http.Request) -> bool:
    """An Engine.IO long-polling request (cheap: most requests are not)."""
    return "EIO=" in req.path and "transport=polling" in req.path


async def request(
    flow: http.HTTPFlow, router: Router, on_error: Callable[[BaseException], None] | None
) -> None:
    """Answer a long-polling request of a mocked Socket.IO client (sets `flow.response`), or
    leave it alone."""
    req = flow.request
    url = websocket_url(req.scheme, req.pretty_host, req.port, req.path)
    route = router.find(url)
    if route is None or not isinstance(route.handler, _Endpoint):
        return
    endpoint = route.handler
    endpoint.on_error = on_error
    sid = req.query.get("sid")
    if req.method == "OPTIONS":
        flow.response = _answer(flow, 204, "")
        return
    if req.query.get("EIO") != "4":
        flow.response = _error(flow, 5, "Unsupported protocol version")
        return
    if sid is None:
        await _handshake(flow, endpoint, url, route.label)
        return
    session = socketio_route._sessions.get(sid)
    if session is None:
        if sid in socketio_route._recently_closed:
            flow.response = _error(flow, 1, "Session ID unknown")
        return  # not one of ours: a real server's session (an intercept's polling phase)
    _mark(flow, route.label, "mock")
    if req.method == "GET":
        await _get(flow, session)
    elif req.method == "POST":
        _post(flow, session)
    else:
        flow.response = _error(flow, 2, "Bad handshake method")


async def _handshake(flow: http.HTTPFlow, endpoint: _Endpoint, url: str, label: str) -> None:
    if flow.request.method != "GET":
        flow.response = _error(flow, 2, "Bad handshake method")
        return
    session = _Session(endpoint, url)
    session.transport = "polling"
    try:
        sio = await endpoint.start(session)
    except Exception as e:
        session.report(e)
        flow.response = _answer(flow, 500, "route handler failed")
        return
    if session.intercept:
        # The polling phase passes through; the upgrade finds this route by the server's sid.
        flow.metadata["wsroute_socketio"] = sio
        _mark(flow, label, "intercept")
        return
    _mark(flow, label, "mock")
    socketio_route._sessions[session.sid] = session
    data = open_packet(session.sid, ["websocket"], endpoint.ping_interval, endpoint.ping_timeout)
    session.queue.appendleft((EIO.OPEN, data))
    session.start_heartbeat()
    flow.response = _answer(flow, 200, _drain(session))


async def _get(flow: http.HTTPFlow, session: _Session) -> None:
    if session.polling_get:
        logger.warning(f"{session.label}: two polling GETs at once; session closed")
        session.close("transport error", send_close=False)
        flow.response = _error(flow, 3, "Bad request")
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + session.endpoint.ping_interval + session.endpoint.ping_timeout
    session.polling_get = True
    try:
        while (
            not session.queue
            and not session.closed
            and not session.upgrading
            and session.transport == "polling"
        ):
            session.wake.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(session.wake.wait(), remaining)
            except TimeoutError:
                break
    finally:
        session.polling_get = False
    if session.queue:
        flow.response = _answer(flow, 200, _drain(session))
    elif session.closed:
        flow.response = _answer(flow, 200, encode_eio(EIO.CLOSE))
    else:
        flow.response = _answer(flow, 200, encode_eio(EIO.NOOP))


def _post(flow: http.HTTPFlow, session: _Session) -> None:
    if session.closed:
        flow.response = _error(flow, 1, "Session ID unknown")
        return
    body = flow.request.get_text(strict=False) or ""
    if len(body) > MAX_PAYLOAD:
        session.malformed(ValueError(f"a polling body of {len(body)} characters"))
        flow.response = _error(flow, 3, "Bad request")
        return
    try:
        packets = decode_payload(body)
    except ValueError as e:
        session.malformed(e)
        flow.response = _error(flow, 3, "Bad request")
        return
    for kind, data in packets:
        try:
            result = session.receive_frame(encode_eio(kind, data), None)
        except Exception as e:
            session.report(e)
            continue
        if result is not None and asyncio.iscoroutine(result):
            session.spawn(result)
        if session.closed:
            break
    flow.response = _answer(flow, 200, "ok", "text/html")


def _drain(session: _Session) -> str:
    packets = list(session.queue)
    session.queue.clear()
    session.queued_bytes = 0
    return encode_payload(packets)


def response(flow: http.HTTPFlow) -> None:
    """An intercept's polling handshake came back from the server: keep its route for the
    client's upgrade, under the sid the server gave."""
    sio = flow.metadata.pop("wsroute_socketio", None)
    if not isinstance(sio, SocketIORoute) or flow.response is None:
        return
    text = flow.response.get_text(strict=False) or ""
    first = text.split("\x1e", 1)[0]
    try:
        sid = json.loads(first[1:])["sid"] if first.startswith("0") else None
    except (ValueError, KeyError, TypeError):
        sid = None
    if not isinstance(sid, str):
        logger.info(f"{sio.url}: no Engine.IO open packet from the server; not intercepted")
        return
    pending = socketio_route._intercepts
    pending[sid] = sio
    while len(pending) > socketio_route.MAX_PENDING_INTERCEPTS:
        pending.popitem(last=False)


def _mark(flow: http.HTTPFlow, label: str, mode: str) -> None:
    flow.comment = f"wsroute: {label} (Socket.IO long-polling)"
    flow.metadata["wsroute"] = {"url": flow.request.url, "route": label, "mode": mode}


def _answer(
    flow: http.HTTPFlow, status: int, body: str | bytes, kind: str = "text/plain; charset=UTF-8"
) -> http.Response:
    headers = {"Content-Type": kind, "Cache-Control": "no-store"}
    origin = flow.request.headers.get("origin")
    if origin:  # browsers: Engine.IO servers answer cross-origin polling like this
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        if flow.request.method == "OPTIONS":
            headers["Access-Control-Allow-Methods"] = "GET, POST"
            wanted = flow.request.headers.get("access-control-request-headers")
            if wanted:
                headers["Access-Control-Allow-Headers"] = wanted
    return http.Response.make(status, body, headers)


def _error(flow: http.HTTPFlow, code: int, message: str) -> http.Response:
    body = json.dumps({"code": code, "message": message})
    return _answer(flow, 400, body, "application/json")
