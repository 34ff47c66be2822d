"""A real browser through the proxy: Debian's Chromium, driven by playwright-python.

Playwright only drives the browser here; the routing is done by mitmdump, as for a browser no
test framework drives.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Playwright, async_playwright

from tests.sockets import raw_websocket_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Headless in a container, and nothing but the test's own traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Playwright's "should work with server" scenario, as a user would run it
INTERCEPT_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "intercept_chat.py"
CLOSE_TIMEOUT_MS = 500

ROUTES = """
    import logging
    from mitm_wsroute import route_web_socket

    log = logging.getLogger("routes")

    @route_web_socket("ws://chat.invalid/browser")
    def mock(ws):
        log.warning(f"routed {ws.url} protocols={ws.protocols}")
        def on_message(m):
            if m == "close-me":
                ws.close(code=4001, reason="route says bye")
            else:
                ws.send(m)  # echo, text stays text and binary stays binary
        ws.on_message(on_message)
        ws.on_close(lambda code, reason: log.warning(f"page closed {code} {reason!r}"))

    @route_web_socket("**/plain")
    def plain(ws):
        ws.connect_to_server()

    @route_web_socket("**/server-then-page")
    def server_then_page(ws):
        server = ws.connect_to_server()
        server.on_close(lambda code, reason: log.warning(f"server on_close {code} {reason!r}"))
        def on_message(m):
            if m == "close-server":
                server.close(code=4000, reason="server first")
            elif m == "close-page":
                ws.close(code=4001, reason="page later")
        ws.on_message(on_message)
"""

OPEN = """
([url, protocols, binaryType]) => new Promise((resolve) => {
  const ws = new WebSocket(url, protocols);
  ws.binaryType = binaryType;
  window.ws = ws;
  window.log = [];
  ws.onopen = () => { log.push(`open ${ws.protocol}`); resolve(); };
  ws.onmessage = async (e) => {
    let d = e.data;
    if (d instanceof Blob) d = `blob ${new Uint8Array(await d.arrayBuffer())}`;
    else if (d instanceof ArrayBuffer) d = `arraybuffer ${new Uint8Array(d)}`;
    log.push(`message ${d}`);
  };
  ws.onerror = () => log.push("error");
  ws.onclose = (e) => { log.push(`close ${e.code} ${e.reason} ${e.wasClean}`); resolve(); };
})
"""


async def launch(pw: Playwright, proxy: str) -> Browser:
    """Debian's Chromium, headless, every request through `proxy` (loopback included)."""
    return await pw.chromium.launch(
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        proxy={"server": proxy, "bypass": "<-loopback>"},
    )


@pytest.fixture
async def page(mitmdump: Any) -> AsyncIterator[tuple[Page, Any]]:
    proxy = mitmdump(
        ROUTES,
        "--set",
        f"wsroute_scripts={INTERCEPT_EXAMPLE}",
        "--set",
        f"wsroute_close_timeout_ms={CLOSE_TIMEOUT_MS}",
    )
    async with async_playwright() as pw:
        browser = await launch(pw, proxy.proxy)
        try:
            yield await browser.new_page(), proxy
        finally:
            await browser.close()


async def wait_log(page: Page, n: int) -> list[str]:
    await page.wait_for_function(f"window.log.length >= {n}", timeout=10_000)
    return list(await page.evaluate("window.log"))


@pytest.mark.parametrize("binary_type", ["blob", "arraybuffer"])
async def test_browser_mock_echo_and_route_close(page: Any, binary_type: str) -> None:
    p, proxy = page
    await p.evaluate(OPEN, ["ws://chat.invalid/browser", ["chat.v2", "chat.v1"], binary_type])
    await p.evaluate("ws.send('hello'); ws.send(new Uint8Array([1, 2, 3]).buffer)")
    assert await wait_log(p, 3) == [
        "open chat.v2",
        "message hello",
        f"message {binary_type} 1,2,3",
    ]
    await p.evaluate("ws.send('close-me')")
    log = await wait_log(p, 4)
    assert log[3] == "close 4001 route says bye true"
    await proxy.async_wait_for(
        r"routed ws://chat.invalid/browser protocols=\['chat.v2', 'chat.v1'\]"
    )


async def test_browser_page_close_reaches_on_close(page: Any) -> None:
    p, proxy = page
    await p.evaluate(OPEN, ["ws://chat.invalid/browser", [], "blob"])
    await p.evaluate("ws.close(4002, 'page bye')")
    assert (await wait_log(p, 2))[1] == "close 4002 page bye true"
    await proxy.async_wait_for("page closed 4002 'page bye'")


async def test_browser_intercept_works_with_server(page: Any, upstream: Any) -> None:
    p, proxy = page
    up = await upstream()
    await p.evaluate(OPEN, [up.url("/echo-intercepted"), [], "blob"])
    assert await wait_log(p, 2) == ["open ", "message fake"]  # sent before the open, echoed
    await p.evaluate("for (const m of ['to-respond', 'to-block', 'to-modify', 'pass']) ws.send(m)")
    assert (await wait_log(p, 5))[2:] == [
        "message response",
        "message modified again",
        "message pass",
    ]
    assert up.received == ["fake", "modified", "pass"]


async def test_browser_sees_server_close_code(page: Any, upstream: Any) -> None:
    p, proxy = page
    up = await upstream()
    await p.evaluate(OPEN, [up.url("/plain"), [], "blob"])
    await p.evaluate("ws.send('cmd:close:1008:oops')")
    assert (await wait_log(p, 2))[1] == "close 1008 oops true"


async def test_browser_a_later_close_gets_its_own_closing_handshake(
    page: Any, upstream: Any
) -> None:
    # server.close() with a server on_close starts the server's close timer; a page close made
    # after that timer ran out still waits for Chromium's answer: a clean close.
    p, proxy = page
    up = await upstream()
    await p.evaluate(OPEN, [up.url("/server-then-page"), [], "blob"])
    await p.evaluate("ws.send('close-server')")
    await proxy.async_wait_for("server on_close 4000 'server first'")
    await proxy.async_wait_for("the server's close timer ran out")
    await p.evaluate("ws.send('close-page')")
    assert (await wait_log(p, 2))[1] == "close 4001 page later true"


@pytest.mark.parametrize(
    ("name", "bad_frame"),
    [
        ("reserved opcode", b"\x83\x01?"),
        ("invalid UTF-8 in text", b"\x81\x02\xff\xfe"),
        ("control frame over 125 bytes", b"\x89\x7e\x00\x7e" + b"p" * 126),
    ],
)
async def test_browser_sees_an_upstream_protocol_failure_as_a_drop(
    page: Any, name: str, bad_frame: bytes
) -> None:
    # Without the proxy, Chromium would fail the connection itself: 1006, not clean. Through
    # an intercepting route with no handlers it sees the same (the proxy drops the connection),
    # not a clean 1002 carrying the proxy's error text.
    p, proxy = page
    server, port = await raw_websocket_server(then_send=bad_frame)
    try:
        await p.evaluate(OPEN, [f"ws://127.0.0.1:{port}/plain", [], "blob"])
        # (Chromium adds an `error` event only when it finds the violation itself; for a
        # connection that drops it reports the close alone.)
        assert await wait_log(p, 2) == ["open ", "close 1006  false"], name
    finally:
        server.close()
