"""End to end: what a route sends to a peer that does not read stays bounded
(``wsroute_max_buffer``, `buffered_amount`, `drain()`), and forwarding through handlers keeps
mitmproxy's back-pressure. ws and wss, with permessage-deflate as python-websockets offers it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.sockets import raw_upgrade, raw_websocket_server

ROUTES = """
    import asyncio, os
    from mitm_wsroute import route_web_socket

    @route_web_socket("**/flood")
    def flood(ws):
        async def push(m):  # never waits for the client: a bug the proxy must survive
            chunk = os.urandom(65536)  # does not compress: permessage-deflate keeps its size
            while True:
                ws.send(chunk)
                await asyncio.sleep(0)
        ws.on_message(push)

    @route_web_socket("**/paced")
    def paced(ws):
        async def push(m):
            peak = 0
            for i in range(int(m)):
                ws.send(i.to_bytes(4, "big") + os.urandom(65532))
                peak = max(peak, ws.buffered_amount)
                await ws.drain()
            ws.send(f"done, peak {peak}")
        ws.on_message(push)

    @route_web_socket("**/echo")
    def echo(ws):
        ws.on_message(ws.send)

    @route_web_socket("**/relay")
    def relay(ws):  # forwarding written as handlers
        server = ws.connect_to_server()
        ws.on_message(lambda m: server.send(m))
        server.on_message(lambda m: ws.send(m))
"""

LIMIT = 2 * 1024 * 1024


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def echo_works(p: Any) -> None:
    async with connect("ws://chat.invalid/echo", proxy=p.proxy) as ws:
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), 5) == "still here"


async def test_a_client_that_stops_reading_fails_its_socket_not_the_proxy(mitmdump: Any) -> None:
    p = mitmdump(ROUTES, "--set", f"wsroute_max_buffer={LIMIT}")
    before = rss_mib(p.proc.pid)
    reader, writer, head = await raw_upgrade(p.port, "http://chat.invalid/flood")
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(b"\x81\x82\0\0\0\0go")  # "go", masked with a zero key; then never read
    m = await p.async_wait_for(r"over wsroute_max_buffer", timeout=20)
    assert "routes0.py:flood" in m.string and "1011" in m.string  # names the route
    await echo_works(p)  # every other socket carries on
    assert rss_mib(p.proc.pid) - before < 64  # the limit, not the flood, bounds the memory
    # the stalled client's connection was aborted: what it reads now ends
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        while True:
            await asyncio.wait_for(reader.readexactly(1 << 20), 10)
    writer.close()


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_a_python_websockets_client_that_stops_reading(
    mitmdump: Any, upstream: Any, tls: bool
) -> None:
    # python-websockets stops reading once 16 messages wait in its queue (max_queue)
    up = await upstream(tls=tls)
    p = mitmdump(ROUTES, "--set", f"wsroute_max_buffer={LIMIT}")
    host = up.url("/flood")  # only its scheme and port matter: a mock never connects
    async with connect(host, proxy=p.proxy, ssl=p.ca() if tls else None) as ws:
        assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        await ws.send("go")
        await p.async_wait_for(r"over wsroute_max_buffer", timeout=20)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert up.accepted == 0
    await echo_works(p)


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_drain_paces_a_route_to_a_slow_client(
    mitmdump: Any, upstream: Any, tls: bool
) -> None:
    up = await upstream(tls=tls)
    p = mitmdump(ROUTES, "--set", f"wsroute_max_buffer={LIMIT}")
    count = 300  # 19 MiB: far more than the limit and the kernel's buffers hold
    async with connect(
        up.url("/paced"), proxy=p.proxy, ssl=p.ca() if tls else None, max_queue=4
    ) as ws:
        await ws.send(str(count))
        await asyncio.sleep(1)  # a slow client: reads nothing for a second, then all
        for i in range(count):
            message = await asyncio.wait_for(ws.recv(), 10)
            assert message[:4] == i.to_bytes(4, "big")
        done = await asyncio.wait_for(ws.recv(), 10)
    peak = int(done.split()[-1])
    assert 0 < peak <= LIMIT
    assert "over wsroute_max_buffer" not in p.output


async def test_forwarding_through_handlers_stops_reading_a_client_when_the_server_stalls(
    mitmdump: Any,
) -> None:
    server, port = await raw_websocket_server(then_send=b"", read=False)
    p = mitmdump(ROUTES, "--set", f"wsroute_max_buffer={LIMIT}")
    sent = 0
    try:
        async with connect(f"ws://127.0.0.1:{port}/relay", proxy=p.proxy, compression=None) as ws:

            async def flood() -> None:
                nonlocal sent
                chunk = b"y" * 65536
                while True:
                    await ws.send(chunk)  # waits while the proxy does not read
                    sent += len(chunk)

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(flood(), 3)
            ws.transport.abort()
    finally:
        server.close()
    # the proxy stopped reading the client: what got through is what the kernel buffers hold
    assert sent < 64 * 1024 * 1024
    assert "over wsroute_max_buffer" not in p.output  # back-pressure, not the limit
    await echo_works(p)
