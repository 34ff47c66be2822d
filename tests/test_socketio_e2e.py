"""route_socket_io end to end: python-socketio's own clients (sync and asyncio, default transports
and websocket-only, ws and wss) against a mock with no server anywhere, through WsRouteProxy and
through a real mitmdump, and an intercept of python-socketio's own server with one event
rewritten. Every wait is on an event; nothing sleeps to synchronise."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import socketio
from websockets.sync.client import connect

from mitm_wsroute import SocketIORoute
from mitm_wsroute.testing import WsRouteProxy
from tests.sockets import sync_client_tls

TRANSPORTS = [
    pytest.param(None, id="polling-then-upgrade"),
    pytest.param(["websocket"], id="websocket-only"),
]


def sync_client(proxy_url: str, ca: Path) -> socketio.Client:
    http = requests.Session()
    http.trust_env = False  # REQUESTS_CA_BUNDLE would win over `verify`
    http.proxies = {"http": proxy_url, "https": proxy_url}
    http.verify = str(ca)
    tls = sync_client_tls(ca)
    return socketio.Client(
        http_session=http,
        reconnection=False,
        websocket_extra_options={"sslopt": {"context": tls}},
    )


def async_http(proxy: WsRouteProxy) -> aiohttp.ClientSession:
    tls = ssl.create_default_context(cafile=str(proxy.ca_cert))
    return aiohttp.ClientSession(proxy=proxy.url, connector=aiohttp.TCPConnector(ssl=tls))


def async_client(http: aiohttp.ClientSession, proxy_url: str) -> socketio.AsyncClient:
    # aiohttp's ws_connect does not take the session's proxy: given again for the WebSocket.
    # wss: for ws:// aiohttp sends an absolute-form "GET ws://..." that mitmproxy refuses.
    return socketio.AsyncClient(
        http_session=http, reconnection=False, websocket_extra_options={"proxy": proxy_url}
    )


def chat_mock(sio: SocketIORoute) -> None:
    sio.on("chat", lambda text: sio.emit("chat", f"echo {text}"))
    sio.on("add", lambda a, b: a + b)
    sio.on("reverse", lambda data: (data[::-1], len(data)))  # binary in, two ack values out
    sio.on("ask", lambda: sio.emit("question", "name?", callback=lambda a: sio.emit("hello", a)))
    sio.on("leave", lambda: sio.disconnect())
    admin = sio.of("/admin")
    admin.on_connect(lambda ns, auth: (auth or {}).get("token") == "secret")
    admin.on("whoami", lambda: "admin")


def run_chat(client: socketio.Client, url: str, transports: list[str] | None) -> None:
    got: dict[str, threading.Event] = {}
    seen: dict[str, list[Any]] = {}

    def on(event: str, answer: Any = None) -> None:
        got[event] = threading.Event()

        def handler(*args: Any) -> Any:
            seen[event] = list(args)
            got[event].set()
            return answer

        client.on(event, handler)

    on("chat")
    on("question", answer="Ada")
    on("hello")
    client.connect(url, transports=transports, wait_timeout=10)
    client.emit("chat", "hi")
    assert got["chat"].wait(5) and seen["chat"] == ["echo hi"]
    assert client.call("add", (2, 3), timeout=5) == 5
    assert client.call("reverse", b"\x00\x01\x02", timeout=5) == (b"\x02\x01\x00", 3)
    client.emit("ask")
    assert got["hello"].wait(5) and seen["hello"] == ["Ada"]
    client.disconnect()


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("transports", TRANSPORTS)
def test_sync_client_against_a_mock(
    proxy: WsRouteProxy, transports: list[str] | None, scheme: str
) -> None:
    proxy.route_socket_io("**/socket.io/**", chat_mock)
    client = sync_client(proxy.url, proxy.ca_cert)
    run_chat(client, f"{scheme}://chat.example.com", transports)
    sock = proxy.wait_for_web_socket("**/socket.io/**")
    assert sock.routed == "mock"
    assert sock.url.startswith("wss://" if scheme == "https" else "ws://")
    if transports == ["websocket"]:  # else some events went by long-polling, before the upgrade
        assert sock.wait_for_event("add", direction="sent").args == [2, 3]
        assert sock.wait_for_event("reverse", direction="sent").args == [b"\x00\x01\x02"]
    assert proxy.handler_errors == []


async def test_asyncio_client_namespaces_and_heartbeats_over_wss(proxy: WsRouteProxy) -> None:
    """Pings every 0.2 s: the client answers them (heartbeats never reach handlers) and stays;
    a namespace with no handlers is refused, /admin checks the auth payload."""
    events: list[str] = []

    def handler(sio: SocketIORoute) -> None:
        chat_mock(sio)
        sio.on_disconnect(lambda ns, reason: events.append(f"{ns} {reason}"))
        sio.on("pings?", lambda: events.count("ping"))

    proxy.route_socket_io("wss://chat.example.com/socket.io/**", handler, ping_interval=0.2)
    async with async_http(proxy) as http:
        client = async_client(http, proxy.url)
        pong = asyncio.Event()
        client.on("chat", lambda text: pong.set())
        await client.connect("https://chat.example.com", namespaces=["/"], wait_timeout=10)
        for _ in range(3):  # each round trip spans pings answered in between
            pong.clear()
            await client.emit("chat", "x")
            await asyncio.wait_for(pong.wait(), 5)
        assert await client.call("add", (40, 2), timeout=5) == 42
        assert client.transport() == "websocket"
        await client.disconnect()
    for namespaces, auth in ((["/nope"], None), (["/admin"], {"token": "wrong"})):
        async with async_http(proxy) as http:
            client = async_client(http, proxy.url)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(
                    "https://chat.example.com", namespaces=namespaces, auth=auth, wait_timeout=5
                )
            await client.disconnect()
    async with async_http(proxy) as http:
        client = async_client(http, proxy.url)
        await client.connect(
            "https://chat.example.com",
            namespaces=["/admin"],
            auth={"token": "secret"},
            transports=["websocket"],
            wait_timeout=5,
        )
        assert await client.call("whoami", namespace="/admin", timeout=5) == "admin"
        await client.disconnect()


def test_route_script_mock_through_mitmdump(mitmdump: Any, tmp_path: Path) -> None:
    proc = mitmdump(
        "from mitm_wsroute import route_socket_io\n"
        "from tests.test_socketio_e2e import chat_mock\n"
        "route_socket_io('wss://chat.example.com/socket.io/**', chat_mock)\n"
    )
    for transports in (None, ["websocket"]):
        client = sync_client(proc.proxy, proc.confdir / "mitmproxy-ca-cert.pem")
        run_chat(client, "https://chat.example.com", transports)


def test_malformed_packets_disconnect_the_client_only(
    proxy: WsRouteProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.route_socket_io("wss://chat.example.com/socket.io/**", chat_mock)
    tls = sync_client_tls(proxy.ca_cert)
    url = "wss://chat.example.com/socket.io/?EIO=4&transport=websocket"
    for garbage in ("40", "42[1,2]", "9", '451-["x"]\x00'):
        with connect(url, proxy=proxy.url, ssl=tls) as ws:
            assert ws.recv(5).startswith('0{"sid":')
            ws.send("40")
            assert ws.recv(5).startswith('40{"sid":')
            ws.send(garbage if garbage != "40" else '42["chat"')  # bad JSON
            with pytest.raises(Exception):  # noqa: B017 - closed by the route
                while True:
                    ws.recv(5)
        assert ws.close_code == 1002
    assert "malformed packet from the client" in caplog.text
    assert "chat_mock" in caplog.text  # the route is named
    run_chat(sync_client(proxy.url, proxy.ca_cert), "https://chat.example.com", ["websocket"])


# --- an intercept of python-socketio's own server ------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("transports", TRANSPORTS)
def test_intercept_rewrites_one_server_event(
    proxy: WsRouteProxy, sio_server: Any, transports: list[str] | None, tls: bool
) -> None:
    server = sio_server(tls)

    def handler(sio: SocketIORoute) -> None:
        upstream = sio.connect_to_server()
        upstream.on("chat", lambda text: sio.emit("chat", text.upper()))  # the one rewrite

    proxy.route_socket_io("**/socket.io/**", handler)
    client = sync_client(proxy.url, proxy.ca_cert)
    got: list[str] = []
    chat = threading.Event()
    client.on("chat", lambda text: (got.append(text), chat.set()))
    client.connect(server.url, transports=transports, wait_timeout=10)
    upgraded = proxy.wait_for_web_socket("**/socket.io/**")
    assert upgraded.routed == "intercept"
    if transports is None:
        # events are the route's from the upgrade on: wait until the client switched to it
        upgraded.wait_for_message("5", direction="sent")
    client.emit("chat", "hi")
    assert chat.wait(5) and got == ["SERVER SAYS HI"]
    assert client.call("add", (1, 2), timeout=5) == 3  # forwarded, its ack back
    assert upgraded.wait_for_event("add", direction="sent").id is not None
    client.disconnect()
    assert proxy.handler_errors == []


async def test_asyncio_client_intercept_over_wss(proxy: WsRouteProxy, sio_server: Any) -> None:
    server = sio_server(True)

    def handler(sio: SocketIORoute) -> None:
        upstream = sio.connect_to_server()
        upstream.on("chat", lambda text: sio.emit("chat", text.upper()))

    proxy.route_socket_io("**/socket.io/**", handler)
    async with async_http(proxy) as http:
        client = async_client(http, proxy.url)
        got: asyncio.Queue[str] = asyncio.Queue()
        client.on("chat", got.put_nowait)
        await client.connect(server.url, wait_timeout=10)
        sock = await asyncio.to_thread(proxy.wait_for_web_socket, "**/socket.io/**")
        if client.transport() != "websocket":  # events are the route's from the upgrade on
            await asyncio.to_thread(sock.wait_for_message, "5", direction="sent")
        await client.emit("chat", "hi")
        assert await asyncio.wait_for(got.get(), 5) == "SERVER SAYS HI"
        assert await client.call("add", (1, 2), timeout=5) == 3
        await client.disconnect()
    assert sock.routed == "intercept" and proxy.handler_errors == []


# --- record, then replay by event ----------------------------------------------------------


def test_record_then_replay_by_event_with_the_clients_own_ack_ids(
    sio_server: Any, tmp_path: Path
) -> None:
    """Recorded against python-socketio's server: two calls (ack ids 0 and 1). Replayed with
    ``match="socket.io"`` to a client that makes only the second call: its ack id differs
    from the recorded one, and the replayed ack answers the client's id."""
    har, url = tmp_path / "chat.har", sio_server().url
    with WsRouteProxy() as p:
        p.route_from_har(har, update=True)
        client = sync_client(p.url, p.ca_cert)
        client.connect(url, transports=["websocket"], wait_timeout=10)
        assert client.call("add", (1, 1), timeout=5) == 2
        assert client.call("add", (2, 3), timeout=5) == 5
        client.disconnect()
        assert p.wait_for_web_socket().routed == "intercept"
    for match, answered in (("exact", False), ("socket.io", True)):
        with WsRouteProxy() as p:  # (socket.io filters Engine.IO's timestamp `t` itself)
            p.route_from_har(har, match=match, filter_query=["t"] if match == "exact" else ())
            client = sync_client(p.url, p.ca_cert)
            client.connect(url, transports=["websocket"], wait_timeout=10)
            if answered:
                assert client.call("add", (2, 3), timeout=5) == 5
            else:  # the ack id differs: nothing recorded matches exactly
                with pytest.raises(socketio.exceptions.TimeoutError):
                    client.call("add", (2, 3), timeout=1)
            client.disconnect()
            assert p.wait_for_web_socket().routed == "mock"
            assert (p.handler_errors == []) is answered
