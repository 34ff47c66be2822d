"""A Chromium page with the socket.io client chats through the proxy: with a route_socket_io
mock, and with python-socketio's server, intercepted with one event rewritten.

For the mock, the page and socket.io-client's own browser bundle (``dist/socket.io.min.js`` from
tests/node/node_modules) come from a small HTTP server on 127.0.0.1; the page's Socket.IO
server, on another origin, exists nowhere: the mock answers its long-polling (cross-origin, so
with CORS) and its WebSocket. For the intercept, python-socketio's server serves the page and
the bundle itself. Debian's Chromium, driven by playwright-python, every request through
WsRouteProxy (loopback included).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from mitm_wsroute.testing import WsRouteProxy
from tests.app_servers import SocketIOServerThread
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_socketio_e2e import chat_mock
from tests.test_socketio_node import shout

NODE_MODULES = Path(__file__).resolve().parent / "node" / "node_modules"
BUNDLE = NODE_MODULES / "socket.io-client" / "dist" / "socket.io.min.js"
PAGE = b"""<!doctype html>
<title>chat</title>
<script src="/socket.io.min.js"></script>
"""

#: The page's chat, as the steps of tests/node/socketio_chat.js: each line it saw.
CHAT = """
async ([url, transports]) => {
  const log = [];
  const options = { reconnection: false, ...(transports ? { transports } : {}) };
  const socket = io(url, options);
  const next = (s, event) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event}`)), 10000);
    s.once(event, (...args) => { clearTimeout(timer); resolve(args); });
  });
  socket.io.on("open", () => log.push(`open ${socket.io.engine.transport.name}`));
  await Promise.race([
    next(socket, "connect"),
    next(socket, "connect_error").then(([e]) => { throw e; }),
  ]);
  log.push("connect");
  const chat = next(socket, "chat");
  socket.emit("chat", "hi");
  log.push(`chat ${(await chat).join(" ")}`);
  log.push(`add ${await socket.timeout(5000).emitWithAck("add", 2, 3)}`);
  const [data, length] = await new Promise((resolve, reject) =>
    socket.timeout(5000).emit("reverse", new Uint8Array([0, 1, 2]), (e, ...values) =>
      e ? reject(e) : resolve(values)));
  log.push(`reverse ${Array.from(new Uint8Array(data))} ${length}`);
  socket.once("question", (text, ack) => { log.push(`question ${text}`); ack("Ada"); });
  const hello = next(socket, "hello");
  socket.emit("ask");
  log.push(`hello ${(await hello).join(" ")}`);
  const admin = io(`${url}/admin`, { ...options, auth: { token: "secret" } });
  await next(admin, "connect");
  log.push(`admin ${await admin.timeout(5000).emitWithAck("whoami")}`);
  if (socket.io.engine.transport.name !== "websocket") {
    await new Promise((resolve) => socket.io.engine.once("upgrade", resolve));
  }
  log.push(`transport ${socket.io.engine.transport.name}`);
  const closed = next(socket, "disconnect");
  socket.disconnect();
  log.push(`disconnect ${(await closed)[0]}`);
  return log;
}
"""


class _Site(BaseHTTPRequestHandler):
    #: The paths asked for, in order.
    paths: list[str] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        if self.path == "/socket.io.min.js":
            body, kind = BUNDLE.read_bytes(), "text/javascript"
        elif self.path == "/":
            body, kind = PAGE, "text/html"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The page and the bundle, served on 127.0.0.1: the page's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(
    "transports",
    [
        pytest.param(None, id="polling-then-upgrade"),
        pytest.param(["websocket"], id="websocket-only"),
    ],
)
def test_page_chats_with_a_socket_io_mock(
    browser: Browser, proxy: WsRouteProxy, site: str, transports: list[str] | None, scheme: str
) -> None:
    proxy.route_socket_io("**/socket.io/**", chat_mock)
    context = browser.new_context(proxy=proxy.playwright_proxy, ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(site)
        log = page.evaluate(CHAT, [f"{scheme}://chat.example.com", transports])
    finally:
        context.close()
    assert log == [
        "open websocket" if transports else "open polling",
        "connect",
        "chat echo hi",
        "add 5",
        "reverse 2,1,0 3",
        "question name?",
        "hello Ada",
        "admin admin",
        "transport websocket",
        "disconnect io client disconnect",
    ]
    sock = proxy.wait_for_web_socket("**/socket.io/**")
    assert sock.routed == "mock"
    assert sock.url.startswith(f"{scheme.replace('http', 'ws')}://chat.example.com/socket.io/")
    assert sock.wait_for_event("whoami", "/admin", direction="sent").id is not None
    assert proxy.handler_errors == []
    assert "/socket.io.min.js" in _Site.paths
    assert not [p for p in _Site.paths if p.startswith("/socket.io/")]  # the mock answered


#: A chat with the page's own origin, from the upgrade on (the intercept's events).
INTERCEPTED_CHAT = """
async () => {
  const log = [];
  const socket = io({ reconnection: false });
  const next = (s, event) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event}`)), 10000);
    s.once(event, (...args) => { clearTimeout(timer); resolve(args); });
  });
  socket.io.on("open", () => log.push(`open ${socket.io.engine.transport.name}`));
  await next(socket, "connect");
  if (socket.io.engine.transport.name !== "websocket") {
    await new Promise((resolve) => socket.io.engine.once("upgrade", resolve));
  }
  log.push(`transport ${socket.io.engine.transport.name}`);
  const chat = next(socket, "chat");
  socket.emit("chat", "hi");
  log.push(`chat ${(await chat).join(" ")}`);
  log.push(`add ${await socket.timeout(5000).emitWithAck("add", 2, 3)}`);
  socket.disconnect();
  return log;
}
"""


def test_page_of_a_socket_io_server_intercepted(browser: Browser, proxy: WsRouteProxy) -> None:
    """The page's default client long-polls python-socketio's server through the proxy
    untouched, then upgrades; from there the route rewrites the server's "chat"."""
    pages = {
        "/": (PAGE, "text/html"),
        "/socket.io.min.js": (BUNDLE.read_bytes(), "text/javascript"),
    }
    server = SocketIOServerThread(pages=pages)
    try:
        proxy.route_socket_io("**/socket.io/**", shout)
        context = browser.new_context(proxy=proxy.playwright_proxy)
        try:
            page = context.new_page()
            page.goto(server.url + "/")
            log = page.evaluate(INTERCEPTED_CHAT)
        finally:
            context.close()
    finally:
        server.stop()
    assert log == ["open polling", "transport websocket", "chat SERVER SAYS HI", "add 5"]
    sock = proxy.wait_for_web_socket("**/socket.io/**")
    assert sock.routed == "intercept"
    assert proxy.handler_errors == []
