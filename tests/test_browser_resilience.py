"""A real browser page that reconnects, through the proxy: Debian's Chromium recovering from
`reject(503)`, `drop()` and `set_latency()` (driven by playwright-python, routed by mitmdump)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import async_playwright

from tests.test_browser import launch

ROUTES = """
    from mitm_wsroute import route_web_socket

    attempts = [0]

    @route_web_socket("ws://chat.invalid/reconnect")
    def reconnect(ws):
        attempts[0] += 1
        n = attempts[0]
        if n == 1:
            ws.reject(503, body="busy")
            return
        ws.send(f"welcome {n}")
        def on_message(m):
            if m == "drop-me":
                ws.drop()
            elif m.startswith("latency "):
                ws.set_latency(float(m.split()[1]))
            else:
                ws.send(m)
        ws.on_message(on_message)
"""

# An app's usual reconnect loop: on close, back off (doubling), then open a new socket.
RECONNECTING_PAGE = """
(url) => {
  window.log = [];
  window.received = [];
  let delay = 100, n = 0;
  function open() {
    const socket = new WebSocket(url);
    const i = ++n;
    window.ws = socket;
    socket.onopen = () => { log.push(`open ${i}`); delay = 100; };
    socket.onmessage = (e) => {
      log.push(`message ${i} ${e.data}`);
      received.push([e.data, performance.now()]);
    };
    socket.onclose = (e) => {
      log.push(`close ${i} ${e.code} ${e.wasClean}`);
      setTimeout(open, delay);
      delay *= 2;
    };
  }
  open();
}
"""


async def test_browser_page_reconnects_after_reject_and_drop_and_feels_latency(
    mitmdump: Any,
) -> None:
    proxy = mitmdump(ROUTES)
    async with async_playwright() as pw:
        browser = await launch(pw, proxy.proxy)
        try:
            page = await browser.new_page()
            await page.evaluate(RECONNECTING_PAGE, "ws://chat.invalid/reconnect")

            async def log_after(entry: str) -> list[str]:
                await page.wait_for_function(f"log.includes({entry!r})", timeout=10_000)
                return list(await page.evaluate("log"))

            # the 503 fails the handshake (1006, not clean); the page backs off and retries
            log = await log_after("message 2 welcome 2")
            assert log == ["close 1 1006 false", "open 2", "message 2 welcome 2"]
            await page.evaluate("ws.send('drop-me')")  # a drop: 1006 again, then a new socket
            log = await log_after("message 3 welcome 3")
            assert log[3:] == ["close 2 1006 false", "open 3", "message 3 welcome 3"]
            await page.evaluate("ws.send('echo')")  # the new socket works
            await log_after("message 3 echo")

            # latency: each echo comes back at least 0.3 s after it was sent, in order
            await page.evaluate("ws.send('latency 0.3')")
            sent = await page.evaluate(
                "() => ['a', 'b', 'c'].map((m) => { ws.send(m); return [m, performance.now()]; })"
            )
            await log_after("message 3 c")
            received = await page.evaluate("received.slice(-3)")
            assert [m for m, _ in received] == ["a", "b", "c"]
            for (m, t_sent), (_, t_received) in zip(sent, received, strict=True):
                assert t_received - t_sent >= 290, (m, t_received - t_sent)
        finally:
            await browser.close()
