"""A page in Chromium whose WebSocket the test mocks through the proxy (`proxy.playwright_proxy`).

Playwright only drives the browser here; any browser pointed at the proxy works the same.
Debian's Chromium (`/usr/bin/chromium`), as `make test` installs it.
"""

import pytest
from playwright.sync_api import sync_playwright

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

PAGE = """
() => new Promise((resolve) => {
  const ws = new WebSocket("wss://chat.example.com/room");
  const seen = [];
  ws.onopen = () => ws.send("hello");
  ws.onmessage = (e) => seen.push(e.data);
  ws.onclose = (e) => resolve([...seen, `close ${e.code} ${e.reason}`]);
})
"""


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        yield browser
        browser.close()


def test_page_talks_to_a_mocked_room(wsroute, browser):
    @wsroute.route_web_socket("wss://chat.example.com/room")
    def room(ws):
        ws.on_message(lambda m: [ws.send(f"echo {m}"), ws.close(code=4000, reason="bye")])

    context = browser.new_context(proxy=wsroute.playwright_proxy, ignore_https_errors=True)
    page = context.new_page()
    assert page.evaluate(PAGE) == ["echo hello", "close 4000 bye"]
    context.close()
    assert wsroute.wait_for_web_socket().wait_for_message(direction="sent").payload == "hello"
