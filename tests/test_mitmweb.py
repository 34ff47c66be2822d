"""mitmweb, as a user sees it in a browser: routed flows marked per kind, commented with their
route, and the messages a route consumed or sent labelled as such (real mitmweb, real Chromium).
The screenshots land in ``test-artifacts/``."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright
from websockets.sync.client import connect

from tests.test_browser import CHROMIUM_ARGS as ARGS
from tests.test_cli import COMMAND, start

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ROUTES = """
from mitm_wsroute import route_socket_io, route_web_socket

@route_web_socket("**/mock")
def mock_chat(ws):
    ws.send("hello from the route")
    ws.on_message(lambda m: ws.send(f"echo {m}"))

@route_socket_io("**/socket.io/**")
def sio_chat(sio):
    sio.on("chat", lambda text: sio.emit("chat", f"echo {text}"))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mitmweb(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """mitm-wsroute --web with one mock route; (proxy URL, web UI URL)."""
    routes = tmp_path / "routes.py"
    routes.write_text(textwrap.dedent(ROUTES))
    web_port = free_port()
    proc, url = start(
        COMMAND, "--web", str(routes), "-p", "0", "--listen-host", "127.0.0.1", "--",
        "--set", f"confdir={tmp_path}", "--set", f"web_port={web_port}",
        "--set", "web_open_browser=false", "--set", "web_password=test-token",
    )  # fmt: skip
    yield url, f"http://127.0.0.1:{web_port}/?token=test-token"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        yield browser.new_page(viewport={"width": 1200, "height": 600})
        browser.close()


def test_routed_flows_in_mitmweb(mitmweb: tuple[str, str], page: Page) -> None:
    proxy, web = mitmweb
    with connect("ws://chat.invalid/mock", proxy=proxy) as c:
        assert c.recv(5) == "hello from the route"
        c.send("hi")
        assert c.recv(5) == "echo hi"

    page.goto(web)
    row = page.locator("tr", has_text="http://chat.invalid/mock")
    row.locator(".marker", has_text="🎭").wait_for()  # the mock's marker in the flow list
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "mitmweb-flow-list.png")

    row.locator("td.col-path").click()
    page.locator("nav a", has_text="Comment").click()
    assert "wsroute: routes.py:mock_chat" in page.locator(".flow-detail").inner_text()
    page.locator("nav a", has_text="WebSocket").click()
    messages = page.locator(".websocket pre")
    messages.nth(2).wait_for()
    assert messages.all_inner_texts() == [
        "[sent by the route]\nhello from the route",
        "[consumed by the route: not forwarded]\nhi",
        "[sent by the route]\necho hi",
    ]
    page.screenshot(path=ARTIFACTS / "mitmweb-websocket-tab.png")


def test_socket_io_packets_decoded_in_mitmweb(mitmweb: tuple[str, str], page: Page) -> None:
    proxy, web = mitmweb
    url = "ws://chat.invalid/socket.io/?EIO=4&transport=websocket"
    with connect(url, proxy=proxy) as c:
        assert c.recv(5).startswith('0{"sid":')
        c.send("40")
        assert c.recv(5).startswith('40{"sid":')
        c.send('42["chat","hi"]')
        assert c.recv(5) == '42["chat","echo hi"]'

    page.goto(web)
    page.locator("tr", has_text="/socket.io/").locator("td.col-path").click()
    page.locator("nav a", has_text="WebSocket").click()
    messages = page.locator(".websocket pre")
    messages.nth(4).wait_for()
    shown = messages.all_inner_texts()
    assert shown[0].startswith("[sent by the route]\nOPEN\n{")
    assert shown[1:] == [
        "[consumed by the route: not forwarded]\nCONNECT namespace /",
        shown[2],  # CONNECT namespace / with the session id, as JSON
        "[consumed by the route: not forwarded]\nEVENT 'chat' namespace /\n[\n  \"hi\"\n]",
        "[sent by the route]\nEVENT 'chat' namespace /\n[\n  \"echo hi\"\n]",
    ]
    assert shown[2].startswith("[sent by the route]\nCONNECT namespace /\n{")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "mitmweb-socket-io.png")
