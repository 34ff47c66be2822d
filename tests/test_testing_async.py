"""The test facade's async API: the same proxy, coroutine waits that never block the test's
event loop (the clients here run on that same loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from mitm_wsroute.testing.async_api import WebSocket, WsRouteProxy


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[WsRouteProxy]:
    async with WsRouteProxy() as p:
        yield p


async def test_waits_do_not_block_the_loop(proxy: WsRouteProxy) -> None:
    proxy.route_web_socket("**/chat", lambda ws: ws.on_message(lambda m: ws.send(f"re: {m}")))

    async def client() -> list[str | bytes]:
        await asyncio.sleep(0.05)  # starts after the waits below: they wait for what comes
        async with connect("ws://x.invalid/chat", proxy=proxy.url) as c:
            await c.send("one")
            got = [await c.recv()]
            await c.send("two")
            got.append(await c.recv())
            return got

    task = asyncio.ensure_future(client())
    sock = await proxy.wait_for_web_socket("**/chat")
    assert isinstance(sock, WebSocket) and sock.routed == "mock"
    assert (await sock.wait_for_message(direction="received")).payload == "re: one"
    assert (await sock.wait_for_message("two")).direction == "sent"
    assert await task == ["re: one", "re: two"]
    assert (await sock.wait_for_close()).close_code == 1000
    with pytest.raises(TimeoutError, match="no message"):
        await sock.wait_for_message("never", timeout=0.1)


async def test_expect_and_events_on_the_callers_loop(proxy: WsRouteProxy) -> None:
    proxy.route_web_socket("**/ev", lambda ws: ws.on_message(ws.send))
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, Any, bool]] = []

    async def on_close(ws: WebSocket) -> None:  # async listeners are scheduled as tasks
        seen.append(("close", ws.close_code, asyncio.get_running_loop() is loop))

    async with proxy.expect_web_socket("**/ev") as info:
        c = await connect("ws://x.invalid/ev", proxy=proxy.url)
    sock = await info.value
    sock.on("framereceived", lambda p: seen.append(("in", p, asyncio.get_running_loop() is loop)))
    sock.on("close", on_close)
    async with sock.expect_event("framereceived") as frame:
        await c.send(b"\x01")
        assert await c.recv() == b"\x01"
    assert await frame.value == b"\x01"
    async with sock.expect_event("close") as closed:
        await c.close()
    assert await closed.value is sock
    await asyncio.sleep(0)  # let the scheduled listeners run
    while len(seen) < 2:
        await asyncio.sleep(0.01)
    assert seen == [("in", b"\x01", True), ("close", 1000, True)]


async def test_fixture_twin_shares_the_sync_proxy(wsroute: Any, async_wsroute: Any) -> None:
    wsroute.route_web_socket("**/shared", lambda ws: ws.send("hi"))
    async with connect("ws://x.invalid/shared", proxy=async_wsroute.url) as c:
        assert await c.recv() == "hi"
    sock = await async_wsroute.wait_for_web_socket("**/shared")
    assert [s.url for s in wsroute.web_sockets] == [sock.url]


async def test_a_test_pushes_paced_by_drain_on_its_own_loop(proxy: WsRouteProxy) -> None:
    # route.send from the test's loop, awaited drain() runs on the proxy's and wakes this one
    proxy.route_web_socket("**/push", lambda ws: None)
    chunk = b"z" * 65536
    async with connect("ws://x.invalid/push", proxy=proxy.url, max_queue=4) as c:
        sock = await proxy.wait_for_web_socket("**/push")
        assert sock.route is not None
        route = sock.route
        peaks = []

        async def push() -> None:
            for _ in range(200):  # 12.5 MiB, more than the kernel's buffers hold
                route.send(chunk)
                await route.drain()
                peaks.append(route.buffered_amount)

        task = asyncio.ensure_future(push())
        for _ in range(200):
            assert await asyncio.wait_for(c.recv(), 10) == chunk
        await task
    assert max(peaks) < 1024 * 1024  # drain() kept it near asyncio's high-water mark
