"""End to end, the extensions beyond Playwright: a real mitmdump with the addon, real clients
(python-websockets, its reconnecting ``connect()`` loop)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.client import backoff, process_exception
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from tests.sockets import no_leaks

ROUTES = """
    import logging
    from mitm_wsroute import route_web_socket

    log = logging.getLogger("routes")

    @route_web_socket("**/headers")
    def headers(ws):
        h = ws.request_headers
        ws.send(f"token={h.get_all('x-token')} joined={h['X-TOKEN']} ua={'user-agent' in h}")

    @route_web_socket("**/reject")
    def reject(ws):
        ws.reject(503, headers={"Retry-After": "1", "X-Why": "test"}, body=b"come back later")

    @route_web_socket("**/reject-intercept")
    def reject_intercept(ws):
        ws.reject(404)
        ws.connect_to_server()  # raises: the client has its answer

    @route_web_socket("**/reject-late")
    async def reject_late(ws):
        import asyncio
        ws.accept()
        await asyncio.sleep(0)
        try:
            ws.reject(503)
        except Exception as e:
            ws.send(f"{type(e).__name__}: {e}")

    attempts = {}

    def attempt(name):
        attempts[name] = attempts.get(name, 0) + 1
        return attempts[name]

    def echo(ws, m):
        if m == "drop-me":
            ws.drop()
        elif isinstance(m, str) and m.startswith("latency "):
            ws.set_latency(float(m.split()[1]))
        else:
            ws.send(m)

    @route_web_socket("**/flaky")
    def flaky(ws):
        n = attempt("flaky")
        if n <= 2:
            ws.reject(503, headers={"Retry-After": "0"}, body=f"busy {n}")
            return
        ws.send(f"welcome {n}")
        ws.on_message(lambda m: echo(ws, m))

    @route_web_socket("**/droppy")
    def droppy(ws):
        ws.send(f"welcome {attempt('droppy')}")
        ws.on_message(lambda m: echo(ws, m))

    @route_web_socket("**/accept-early")
    async def accept_early(ws):
        import asyncio
        ws.accept(protocol="chat.v2", headers=[("X-Mock", "1"), ("X-Mock", "2")])
        got = asyncio.Event()
        ws.on_message(lambda m: got.set())
        await got.wait()  # only the client can set it: it has its 101 already
        ws.send("the handler is still running")

    @route_web_socket("**/drop-at-once")
    def drop_at_once(ws):
        ws.send("last words")  # sent before the drop: goes out first
        ws.drop()

    @route_web_socket("**/accept-then-exit")
    async def accept_then_exit(ws):
        import asyncio
        ws.accept()
        await asyncio.sleep(0)
        raise SystemExit("a handler cannot stop the proxy")

    @route_web_socket("**/no-compression")
    def no_compression(ws):
        ws.accept(compression=False)
        ws.on_message(lambda m: echo(ws, m))

    @route_web_socket("**/intercept-drop*")
    def intercept_drop(ws):
        server = ws.connect_to_server()
        def on_message(m):
            if m == "drop-upstream":
                server.drop()
            elif isinstance(m, str) and m.startswith("latency "):
                server.set_latency(float(m.split()[1]))
            else:
                server.send(m)
        ws.on_message(on_message)
        if "hold" in ws.url:
            server.on_close(lambda code, reason: ws.send(f"upstream gone {code} {reason!r}"))

    @route_web_socket("**/drop-client-on-close")
    def drop_client_on_close(ws):
        # a page on_close would keep the upstream open; drop() still ends the client at once
        server = ws.connect_to_server()
        ws.on_close(lambda code, reason: log.warning(f"page on_close {code} {reason!r}"))
        ws.on_message(lambda m: ws.drop() if m == "drop-me" else server.send(m))
"""


@pytest.fixture
async def proxy(mitmdump: Any) -> Any:
    return mitmdump(ROUTES)


async def test_request_headers_repeated_and_case_insensitive(proxy: Any) -> None:
    async with connect(
        "ws://chat.invalid/headers",
        proxy=proxy.proxy,
        additional_headers=[("X-Token", "one"), ("x-token", "two")],
    ) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == (
            "token=['one', 'two'] joined=one, two ua=True"
        )


@pytest.mark.parametrize("path", ["/reject", "/reject-intercept"])
async def test_reject_answers_the_upgrade_without_upstream(
    proxy: Any, sentinel: Any, path: str
) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{sentinel.port}{path}", proxy=proxy.proxy):
            pass
    response = info.value.response
    if path == "/reject":
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1" and response.headers["X-Why"] == "test"
        assert response.body == b"come back later"
    else:
        assert response.status_code == 404
        await proxy.async_wait_for(r"connect_to_server\(\) cannot follow: reject\(\) already")
    assert sentinel.accepted == 0


async def test_reject_after_accept_raises_in_the_handler(proxy: Any) -> None:
    async with connect("ws://chat.invalid/reject-late", proxy=proxy.proxy) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == (
            "Error: reject() cannot follow accept(): the client has its answer already"
        )


def quick_backoff() -> Any:
    """python-websockets' own backoff, with delays short enough for a test."""
    return backoff(initial_delay=0.1, min_delay=0.2, max_delay=1.0, factor=1.5)


async def test_accept_answers_before_the_handler_returns(proxy: Any) -> None:
    async with connect(
        "ws://chat.invalid/accept-early", proxy=proxy.proxy, subprotocols=["chat.v1", "chat.v2"]
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response is not None and ws.response.headers.get_all("X-Mock") == ["1", "2"]
        await ws.send("go on")
        assert await asyncio.wait_for(ws.recv(), 5) == "the handler is still running"


async def test_mock_negotiates_permessage_deflate_like_a_server(proxy: Any) -> None:
    async with connect("ws://chat.invalid/droppy", proxy=proxy.proxy) as ws:
        assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
        await asyncio.wait_for(ws.recv(), 5)
        for m in ("z" * 5000, bytes(range(256)) * 40, "é" * 3000):
            await ws.send(m)
            assert await asyncio.wait_for(ws.recv(), 5) == m
    # the client's own parameters are kept
    deflate = ClientPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=10,
        client_max_window_bits=11,
    )
    async with connect("ws://chat.invalid/droppy", proxy=proxy.proxy, extensions=[deflate]) as ws:
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits=11"
        )
        await asyncio.wait_for(ws.recv(), 5)
        for m in ("y" * 5000, "y" * 5000):
            await ws.send(m)
            assert await asyncio.wait_for(ws.recv(), 5) == m


async def test_accept_compression_false_declines(proxy: Any) -> None:
    async with connect("ws://chat.invalid/no-compression", proxy=proxy.proxy) as ws:
        assert ws.protocol.extensions == []
        assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send("x" * 5000)
        assert await asyncio.wait_for(ws.recv(), 5) == "x" * 5000


async def test_reconnecting_client_recovers_from_drop(proxy: Any) -> None:
    seen: list[str] = []
    async for ws in connect(
        "ws://chat.invalid/droppy", proxy=proxy.proxy, reconnect_delays=quick_backoff
    ):
        try:
            seen.append(await asyncio.wait_for(ws.recv(), 5))
            if len(seen) == 1:
                await ws.send("drop-me")
                await asyncio.wait_for(ws.recv(), 5)
            await ws.send("still there?")
            seen.append(await asyncio.wait_for(ws.recv(), 5))
            break
        except ConnectionClosedError as e:
            assert e.rcvd is None and ws.close_code == 1006  # no close frame: abnormal
            seen.append("dropped")
            continue
    assert seen == ["welcome 1", "dropped", "welcome 2", "still there?"]
    await no_leaks(proxy)


async def test_reconnecting_client_backs_off_after_reject_503(proxy: Any) -> None:
    failures: list[tuple[float, int]] = []

    def record(exc: Exception) -> Exception | None:
        assert isinstance(exc, InvalidStatus)
        failures.append((time.monotonic(), exc.response.status_code))
        return process_exception(exc)  # python-websockets' own rule: 503 is retried

    async for ws in connect(
        "ws://chat.invalid/flaky",
        proxy=proxy.proxy,
        reconnect_delays=quick_backoff,
        process_exception=record,
    ):
        connected_at = time.monotonic()
        assert await asyncio.wait_for(ws.recv(), 5) == "welcome 3"
        await ws.send("up")
        assert await asyncio.wait_for(ws.recv(), 5) == "up"
        break
    assert [status for _, status in failures] == [503, 503]
    # it backed off before each retry: a random 0-0.1 s, then min_delay (0.2 s)
    assert connected_at - failures[1][0] >= 0.2


async def test_latency_delays_everything_to_that_side_in_order(proxy: Any) -> None:
    async with connect("ws://chat.invalid/droppy", proxy=proxy.proxy) as ws:
        await asyncio.wait_for(ws.recv(), 5)
        start = time.monotonic()
        await ws.send("plain")
        assert await asyncio.wait_for(ws.recv(), 5) == "plain"
        plain_rtt = time.monotonic() - start
        await ws.send("latency 0.3")
        sent = {}
        for i in range(5):
            sent[f"m{i}"] = time.monotonic()
            await ws.send(f"m{i}")
        got = [(await asyncio.wait_for(ws.recv(), 5), time.monotonic()) for _ in range(5)]
        assert [m for m, _ in got] == ["m0", "m1", "m2", "m3", "m4"]  # order kept
        assert all(at - sent[m] >= 0.29 for m, at in got), (plain_rtt, got)
        await ws.send("latency 0")
        await ws.send("drop-me")  # a drop waits behind what waits too; nothing waits now
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    await no_leaks(proxy)


@pytest.mark.parametrize("hold", [False, True], ids=["mirrored", "on_close"])
async def test_server_drop_drops_the_upstream(proxy: Any, upstream: Any, hold: bool) -> None:
    up = await upstream()
    path = "/intercept-drop-hold" if hold else "/intercept-drop"
    async with connect(up.url(path), proxy=proxy.proxy) as ws:
        await ws.send("latency 0.2")  # what goes to the server waits, the drop too
        await ws.send("echo me")
        assert await asyncio.wait_for(ws.recv(), 5) == "echo me"
        await ws.send("drop-upstream")
        await asyncio.wait_for(up.closed.wait(), 5)
        assert up.closes == [(1006, "")]  # no close frame: an abnormal closure
        if hold:
            assert await asyncio.wait_for(ws.recv(), 5) == "upstream gone 1006 ''"
            await ws.send("nobody forwards this")
            await ws.close()
        else:
            with pytest.raises(ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1006
    await no_leaks(proxy)


async def test_drop_in_the_handler_ends_the_socket_after_its_101(proxy: Any) -> None:
    async with connect("ws://chat.invalid/drop-at-once", proxy=proxy.proxy) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "last words"
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1006
    await no_leaks(proxy)


def test_test_facade_latency_and_drop_from_the_test_thread() -> None:
    """`WsRouteProxy`: the route called from the test's thread; the records show what the
    client got, when it got it."""
    from websockets.sync.client import connect as sync_connect

    from mitm_wsroute.testing import WsRouteProxy

    with WsRouteProxy() as proxy:
        proxy.route_web_socket("**/echo", lambda ws: ws.on_message(ws.send))
        with sync_connect("ws://x.invalid/echo", proxy=proxy.url) as client:
            sock = proxy.wait_for_web_socket("**/echo")
            assert sock.route is not None
            sock.route.set_latency(0.3)
            client.send("slow")
            assert client.recv(5) == "slow"
            sent = sock.wait_for_message("slow", direction="sent")
            got = sock.wait_for_message("slow", direction="received")
            assert got.timestamp - sent.timestamp >= 0.29  # recorded when it went out
            sock.route.set_latency(0)
            sock.route.drop()
            with pytest.raises(ConnectionClosedError):
                client.recv(5)
            sock.wait_for_close()
            assert sock.close_code == 1006


async def test_handler_raising_after_accept_closes_the_client_1011(proxy: Any) -> None:
    for _ in range(2):  # the proxy lives on
        async with connect("ws://chat.invalid/accept-then-exit", proxy=proxy.proxy) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1011 and ws.close_reason == "route handler raised SystemExit"


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_drop_ends_the_client_at_once_with_a_page_on_close(
    proxy: Any, upstream: Any, tls: bool
) -> None:
    up = await upstream(tls=tls)
    async with connect(
        up.url("/drop-client-on-close"), proxy=proxy.proxy, ssl=proxy.ca() if tls else None
    ) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
        await ws.send("drop-me")
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 5)  # its TCP connection ended, no close frame
        assert ws.close_code == 1006
    await proxy.async_wait_for(r"page on_close 1006 ''")
    await asyncio.wait_for(up.closed.wait(), 5)
    assert up.closes == [(1001, "client connection gone")]  # told before mitmproxy tears it down
