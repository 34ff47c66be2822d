"""End to end: intercept routes between python-websockets clients and a real upstream server,
for ws and wss, through mitmdump in regular, reverse and upstream mode."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import MESSAGE_HOOKS
from tests.sockets import no_leaks, raw_websocket_server

ROUTES = """
    import logging
    from mitm_wsroute import route_web_socket

    log = logging.getLogger("routes")

    @route_web_socket("**/plain")
    def plain(ws):
        ws.connect_to_server()

    @route_web_socket("**/server-on-close")
    def server_on_close(ws):
        server = ws.connect_to_server()
        def closed(code, reason):
            log.warning(f"server on_close {code} {reason!r}")
            ws.send(f"server closed with {code} {reason}")
        server.on_close(closed)
        def from_client(m):
            if m == "close-me":
                ws.close(code=4006, reason="later")
            else:
                server.send(m)
        ws.on_message(from_client)

    @route_web_socket("**/page-on-close")
    def page_on_close(ws):
        server = ws.connect_to_server()
        async def closed(code, reason):  # as written for playwright-python's async API
            log.warning(f"page on_close {code} {reason!r}")
            server.send("page-closed-goodbye")
            await server.close(code=4011, reason="translated")
        ws.on_close(closed)

    @route_web_socket("**/mirrored-on-close")
    def mirrored_on_close(ws):
        ws.connect_to_server()
        ws.on_close(lambda code, reason: log.warning(f"mirrored page on_close {code} {reason!r}"))

    @route_web_socket("**/route-closes")
    def route_closes(ws):
        server = ws.connect_to_server()
        def from_client(m):
            if m == "close-page":
                ws.close(code=4012, reason="page only")
            elif m == "close-server":
                server.close(code=1008, reason="policy")
            else:
                server.send(m)
        ws.on_message(from_client)

    @route_web_socket("**/close-with/*")
    def close_with(ws):
        server = ws.connect_to_server()
        code = int(ws.url.rsplit("/", 1)[1])
        ws.on_message(lambda m: server.close(code=code, reason=f"code {code}"))

    @route_web_socket("**/forbidden")
    def forbidden(ws):
        ws.connect_to_server()

    @route_web_socket("**/unreachable")
    def unreachable(ws):
        ws.connect_to_server()

    @route_web_socket("**/unreachable-degrade")
    def unreachable_degrade(ws):
        server = ws.connect_to_server()
        server.on_close(lambda code, reason: ws.send(f"upstream failed {code} {reason!r}"))

    @route_web_socket("**/forbidden-degrade")
    def forbidden_degrade(ws):
        server = ws.connect_to_server()
        server.on_close(lambda code, reason: ws.send(f"upstream failed {code} {reason!r}"))
"""

Connect = Callable[..., Any]
# Playwright's "should work with server" scenario, as a user would run it
INTERCEPT_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "intercept_chat.py"
EXAMPLE = ("--set", f"wsroute_scripts={INTERCEPT_EXAMPLE}")


@pytest.fixture(params=["regular", "reverse", "upstream"])
async def via(request: pytest.FixtureRequest, mitmdump: Any, upstream: Any) -> Any:
    """``await via(tls)`` → (connect(path, **kw), upstream server, proxy process)."""
    mode = request.param

    async def make(tls: bool = False) -> tuple[Connect, Any, Any]:
        up = await upstream(tls=tls)
        if mode == "reverse":
            scheme = "https" if tls else "http"
            p = mitmdump(ROUTES, "--mode", f"reverse:{scheme}://127.0.0.1:{up.port}", *EXAMPLE)

            def conn(path: str, **kw: Any) -> Any:
                return connect(f"ws://127.0.0.1:{p.port}{path}", **kw)

            return conn, up, p
        if mode == "upstream":
            outer = mitmdump(None)
            p = mitmdump(ROUTES, "--mode", f"upstream:{outer.proxy}", *EXAMPLE)
        else:
            p = mitmdump(ROUTES, *EXAMPLE)

        def conn(path: str, **kw: Any) -> Any:
            return connect(up.url(path), proxy=p.proxy, ssl=p.ca() if tls else None, **kw)

        return conn, up, p

    return make


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed) as e:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    if e.value.rcvd is None:
        return 1006, None
    return e.value.rcvd.code, e.value.rcvd.reason


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_forwarding_and_rewriting(via: Any, tls: bool) -> None:
    conn, up, p = await via(tls)
    async with conn("/plain", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v1"  # the upstream's choice
        # the upstream's extensions too: permessage-deflate on both legs
        assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
        await ws.send("z" * 5000)
        assert await ws.recv() == "z" * 5000
        # compressed frames that span many reads (and TLS records), passed on as they came
        big = [random.Random(i).randbytes(100_000).hex() for i in range(2)]
        for m in (*big, *big):
            await ws.send(m)
        assert [await asyncio.wait_for(ws.recv(), 5) for _ in range(4)] == [*big, *big]
        await ws.send("text")
        await ws.send(b"\x00bin")
        assert [await ws.recv(), await ws.recv()] == ["text", b"\x00bin"]
    async with conn("/echo-intercepted") as ws:
        assert await ws.recv() == "fake"  # queued before the upstream opened, sent first
        for message, want in [("to-respond", "response"), ("to-modify", "modified again")]:
            await ws.send(message)
            assert await ws.recv() == want
        await ws.send("to-block")
        await ws.send("after")
        assert await ws.recv() == "after"
    assert "to-respond" not in up.received and "to-block" not in up.received
    assert up.received[:8] == ["z" * 5000, *big, *big, "text", b"\x00bin", "fake"]
    await no_leaks(p)


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_default_close_mirroring(via: Any, tls: bool) -> None:
    conn, up, p = await via(tls)
    async with conn("/plain") as ws:
        await ws.send("cmd:close:4001:bye")
        assert await closed_with(ws) == (4001, "bye")
    await asyncio.wait_for(up.closed.wait(), 5)
    up.closed.clear()
    async with conn("/plain") as ws:
        await ws.close(4003, "client bye")
    await asyncio.wait_for(up.closed.wait(), 5)
    assert (4003, "client bye") in up.closes
    await no_leaks(p)


async def test_a_mirrored_close_reaches_the_page_on_close_too(mitmdump: Any, upstream: Any) -> None:
    # Playwright: with no server on_close the upstream's close is mirrored to the client, and
    # then the page's own on_close runs with the same code and reason.
    up = await upstream()
    p = mitmdump(ROUTES)
    async with connect(up.url("/mirrored-on-close"), proxy=p.proxy) as ws:
        await ws.send("cmd:close:4012:upstream bye")
        assert await closed_with(ws) == (4012, "upstream bye")
    await p.async_wait_for(r"mirrored page on_close 4012 'upstream bye'")


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_server_abort_reaches_client_as_tcp_drop(via: Any, request: Any, tls: bool) -> None:
    conn, up, p = await via(tls)
    async with conn("/plain") as ws:
        await ws.send("cmd:abort")
        # no close frame, as the server gave none; in upstream mode the next proxy is a stock
        # mitmproxy, which turns the drop into a clean 1000 close (its layer mirrors
        # a dropped connection as a close frame)
        drop = (1000, "") if "upstream" in request.node.name else (1006, None)
        assert await closed_with(ws) == drop
    await no_leaks(p)


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_server_on_close_keeps_client_open(via: Any, tls: bool) -> None:
    conn, up, p = await via(tls)
    async with conn("/server-on-close") as ws:
        await ws.send("cmd:close:4005:gone")
        assert await ws.recv() == "server closed with 4005 gone"
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)  # answered by the proxy: the server is gone
        await ws.send("close-me")
        assert await closed_with(ws) == (4006, "later")
    await p.async_wait_for("server on_close 4005 'gone'")
    await no_leaks(p)


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_page_on_close_sends_last_words_then_closes_server(via: Any, tls: bool) -> None:
    conn, up, p = await via(tls)
    async with conn("/page-on-close") as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    assert ws.close_code == 1000  # the client's handshake completed
    await asyncio.wait_for(up.closed.wait(), 5)
    assert up.received[-1] == "page-closed-goodbye"
    assert up.closes == [(4011, "translated")]
    await p.async_wait_for("page on_close 1000 ''")
    await no_leaks(p)


@pytest.mark.parametrize(
    ("command", "close"), [("close-page", (4012, "page only")), ("close-server", (1008, "policy"))]
)
@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_route_close_of_one_side_mirrors_to_the_other(
    via: Any, tls: bool, command: str, close: tuple[int, str]
) -> None:
    conn, up, p = await via(tls)
    async with conn("/route-closes") as ws:
        await ws.send(command)
        assert await closed_with(ws) == close
    await asyncio.wait_for(up.closed.wait(), 5)
    assert up.closes == [close]
    await no_leaks(p)


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_upstream_refuses_upgrade(via: Any, tls: bool) -> None:
    conn, up, p = await via(tls)
    with pytest.raises(InvalidStatus) as e:
        async with conn("/forbidden"):
            pass
    assert e.value.response.status_code == 403
    async with conn("/forbidden-degrade") as ws:
        assert await ws.recv() == "upstream failed 1006 ''"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("mode", ["regular", "reverse", "upstream"])
@pytest.mark.parametrize("failure", ["refused", "refused-wss", "dns", "dns-wss", "tls"])
async def test_upstream_unreachable(mitmdump: Any, upstream: Any, failure: str, mode: str) -> None:
    up = await upstream(tls=True)
    target = {
        "refused": f"ws://127.0.0.1:{closed_port()}",
        "refused-wss": f"wss://127.0.0.1:{closed_port()}",
        "dns": "ws://nonexistent.invalid",
        "dns-wss": "wss://nonexistent.invalid",
        "tls": f"wss://127.0.0.1:{up.port}",  # a self-signed certificate, and no ssl_insecure
    }[failure]
    strict = ("--set", "ssl_insecure=false")
    if mode == "reverse":
        p = mitmdump(ROUTES, "--mode", "reverse:" + target.replace("ws", "http", 1), *strict)

        def conn(path: str) -> Any:
            return connect(f"ws://127.0.0.1:{p.port}{path}")
    else:
        if mode == "upstream":  # the next proxy is the one that fails to connect
            outer = mitmdump(None, *strict)
            p = mitmdump(ROUTES, "--mode", f"upstream:{outer.proxy}")
        else:
            p = mitmdump(ROUTES, *strict)

        def conn(path: str) -> Any:
            tls = p.ca() if target.startswith("wss") else None
            return connect(f"{target}{path}", proxy=p.proxy, ssl=tls)

    with pytest.raises(InvalidStatus) as e:
        async with conn("/unreachable"):
            pass
    assert e.value.response.status_code == 502
    async with conn("/unreachable-degrade") as ws:
        assert await ws.recv() == "upstream failed 1006 ''"
        await ws.send("anyone?")  # a mock now: no handler, dropped
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)
    assert up.accepted == 0
    await no_leaks(p)


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 3000, 4999])
async def test_route_close_codes_reach_both_parties_exactly(
    mitmdump: Any, upstream: Any, code: int
) -> None:
    up = await upstream()
    p = mitmdump(ROUTES)
    async with connect(up.url(f"/close-with/{code}"), proxy=p.proxy) as ws:
        await ws.send("now")
        assert await closed_with(ws) == (code, f"code {code}")
    await asyncio.wait_for(up.closed.wait(), 5)
    assert up.closes == [(code, f"code {code}")]


async def test_many_concurrent_intercepted_sockets(mitmdump: Any, upstream: Any) -> None:
    up = await upstream()
    p = mitmdump(ROUTES)

    async def client(i: int) -> None:
        async with connect(up.url("/plain"), proxy=p.proxy, open_timeout=60) as ws:
            for j in range(10):
                await ws.send(f"{i}-{j}")
                assert await ws.recv() == f"{i}-{j}"

    await asyncio.gather(*(client(i) for i in range(200)))
    assert up.accepted == 200
    await no_leaks(p)


# --- other addons on a routed socket ----------------------------------------------------------

OTHER_ADDON = """
import logging
from mitmproxy import ctx

def websocket_message(flow):
    m = flow.websocket.messages[-1]
    if m.content == b"rewrite-me":
        m.content = b"rewritten"
    elif m.content == b"drop-me":
        m.drop()
    elif m.content == b"inject":
        ctx.master.commands.call("inject.websocket", flow, True, b"from another addon")
"""

HANDLED = """
    import logging
    from mitm_wsroute import route_web_socket

    @route_web_socket("**/handled")
    def handled(ws):
        server = ws.connect_to_server()
        def on_message(m):
            logging.warning(f"route saw {m!r}")
            server.send(m)
        ws.on_message(on_message)

    @route_web_socket("/relative")
    def relative(ws):
        ws.send(f"relative route for {ws.url}")
"""


async def test_other_addons_change_drop_and_inject_on_routed_sockets(
    mitmdump: Any, upstream: Any
) -> None:
    # Forwarded messages are what other addons made of them; a handler gets the message as it
    # arrived (the route decides first, then the websocket_message hook runs).
    up = await upstream()
    p = mitmdump(ROUTES + HANDLED, *MESSAGE_HOOKS, other_addon=OTHER_ADDON)
    async with connect(up.url("/plain"), proxy=p.proxy) as ws:
        for m in ("drop-me", "rewrite-me", "inject"):
            await ws.send(m)
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
        # the upstream's echoes of what it got, and inject.websocket's message to the client
        assert sorted(got) == ["from another addon", "inject", "rewritten"]
        assert got.index("rewritten") < got.index("inject")
    assert up.received[:2] == ["rewritten", "inject"]  # "drop-me" never reached the upstream
    async with connect(up.url("/handled"), proxy=p.proxy) as ws:
        await ws.send("rewrite-me")
        # the echo is changed on its way back (forwarded, no server-side handler)
        assert await asyncio.wait_for(ws.recv(), 5) == "rewritten"
    await p.async_wait_for(r"route saw 'rewrite-me'")  # the handler got it as it arrived...
    assert up.received[-1] == "rewrite-me"  # ...and sent that on


async def test_base_url_resolves_relative_routes(mitmdump: Any) -> None:
    p = mitmdump(HANDLED, "--set", "wsroute_base_url=https://app.invalid/")
    async with connect("wss://app.invalid/relative", proxy=p.proxy, ssl=p.ca()) as ws:
        assert (
            await asyncio.wait_for(ws.recv(), 5) == "relative route for wss://app.invalid/relative"
        )
    with pytest.raises(InvalidStatus) as e:  # another origin: not routed, no such upstream
        async with connect("ws://app.invalid/relative", proxy=p.proxy):
            pass
    assert e.value.response.status_code == 502


INTERCEPTING_ADDON = """
import asyncio, logging

def websocket_message(flow):
    m = flow.websocket.messages[-1]
    if m.from_client and m.content == b"hold":
        flow.intercept()
        def resume():
            logging.warning("resuming the flow")
            flow.resume()
        asyncio.get_running_loop().call_later(0.2, resume)
"""


async def test_an_intercepted_routed_flow_waits_for_resume(mitmdump: Any, upstream: Any) -> None:
    up = await upstream()
    p = mitmdump(HANDLED, *MESSAGE_HOOKS, other_addon=INTERCEPTING_ADDON)
    async with connect(up.url("/handled"), proxy=p.proxy) as ws:
        await ws.send("hold")
        assert await asyncio.wait_for(ws.recv(), 5) == "hold"
    await p.async_wait_for(r"route saw 'hold'")
    lines = list(p.lines)
    resumed = next(i for i, line in enumerate(lines) if "resuming the flow" in line)
    assert resumed < next(i for i, line in enumerate(lines) if "route saw 'hold'" in line)


TYPES = """
    from mitm_wsroute import route_web_socket

    @route_web_socket("**/types")
    def types(ws):
        # Playwright's pass-through example, telling the client which type each handler got
        server = ws.connect_to_server()
        def from_server(m):
            ws.send(m)
            ws.send(f"server gave {type(m).__name__}")
        def from_client(m):
            ws.send(f"client gave {type(m).__name__}")
            server.send(m)
        server.on_message(from_server)
        ws.on_message(from_client)
"""


async def test_a_binary_message_in_the_same_read_as_the_101_reaches_handlers_as_bytes(
    mitmdump: Any,
) -> None:
    # A server that greets on accept: its first frame comes in the same TCP read as its 101.
    server, port = await raw_websocket_server(then_send=b"\x82\x03\x00hi" + b"\x81\x02ok")
    p = mitmdump(TYPES)
    try:
        async with connect(f"ws://127.0.0.1:{port}/types", proxy=p.proxy) as ws:
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(4)]
    finally:
        server.close()
    assert got == [b"\x00hi", "server gave bytes", "ok", "server gave str"]
    assert "failed" not in p.output


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_handlers_get_bytes_with_permessage_deflate(
    mitmdump: Any, upstream: Any, tls: bool
) -> None:
    # python-websockets offers and accepts permessage-deflate by default: wsproto decodes.
    up = await upstream(tls=tls)
    p = mitmdump(TYPES)
    async with connect(up.url("/types"), proxy=p.proxy, ssl=p.ca() if tls else None) as ws:
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        for message in (b"\x01\x02" * 100, "text " * 100, bytearray(b"\x03")):
            await ws.send(message)
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
            kind = "str" if isinstance(message, str) else "bytes"
            expected = message if isinstance(message, str) else bytes(message)
            assert got == [f"client gave {kind}", expected, f"server gave {kind}"]
    assert "failed" not in p.output


PER_SIDE = """
    from mitm_wsroute import route_web_socket

    @route_web_socket("**/relay/*")
    def relay(ws):
        ws.connect_to_server()

    @route_web_socket("**/handled/*")
    def handled(ws):
        server = ws.connect_to_server()
        ws.on_message(server.send)
        server.on_message(ws.send)

    @route_web_socket("**/mock/*")
    def mock(ws):
        ws.on_message(ws.send)
"""

#: Another addon changes the extensions of the client's 101, as the path's last part says:
#: none at all, or permessage-deflate with 15-bit windows both ways.
CHANGES_EXTENSIONS = """
def response(flow):
    if flow.response.status_code == 101 and flow.request.path.endswith("/none"):
        flow.response.headers.pop("Sec-WebSocket-Extensions", None)
    elif flow.response.status_code == 101 and flow.request.path.endswith("/wide"):
        flow.response.headers["Sec-WebSocket-Extensions"] = "permessage-deflate"
"""


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_each_side_keeps_the_permessage_deflate_it_agreed_on(
    mitmdump: Any, upstream: Any, tls: bool
) -> None:
    # The upstream agreed on 12-bit windows (python-websockets' server), or on no deflate; the
    # client got no deflate, or 15-bit windows. Each side's peer gets what it can read: written
    # on as it came only where that is valid, else inflated and compressed again (or not).
    # Each message is sent twice: the copy refers back to the first beyond a 12-bit window.
    messages: list[str | bytes] = []
    for m in (random.randbytes(6000), "text " * 2000, b"short"):
        messages += [m, m]
    p = mitmdump(PER_SIDE, *MESSAGE_HOOKS, other_addon=CHANGES_EXTENSIONS)
    for compression, change, route in (
        *((c, "none", r) for c in ("deflate", None) for r in ("relay", "handled", "mock")),
        *(("deflate", "wide", r) for r in ("relay", "handled", "mock")),
        *((None, "wide", r) for r in ("relay", "handled")),
    ):
        up = await upstream(tls=tls, compression=compression)
        url = up.url(f"/{route}/{change}")
        async with connect(url, proxy=p.proxy, ssl=p.ca() if tls else None, max_size=None) as ws:
            got = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert got == (None if change == "none" else "permessage-deflate"), url
            for m in messages:
                await ws.send(m)
            assert [await asyncio.wait_for(ws.recv(), 5) for _ in messages] == messages, url
        assert up.received == ([] if route == "mock" else messages), url
    agreed = "each side's messages are compressed as it agreed"
    await p.async_wait_for(agreed, count=6)  # printed at each start; read from a pipe
    assert "failed" not in p.output
    assert p.output.count(agreed) == 6
