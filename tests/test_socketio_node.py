"""route_socket_io with Node's socket.io-client v4 from npm (tests/node/socketio_chat.js, a chat
client that knows nothing of the tests): default transports (long-polling, then the upgrade),
websocket-only and long-polling alone, ws and wss, through WsRouteProxy and through mitmdump with
a route script; against a mock with no server anywhere (heartbeats, several clients at once
too), and intercepting python-socketio's own server (plain and TLS) with one event rewritten.
The client reads the proxy from HTTPS_PROXY and the CA from NODE_EXTRA_CA_CERTS (or its ``--ca``
option). `make test` installs the Node packages (pinned in tests/node/package-lock.json) with
``npm ci``."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from mitm_wsroute import SocketIORoute
from mitm_wsroute.testing import WsRouteProxy
from tests.test_socketio_e2e import chat_mock

CHAT = Path(__file__).resolve().parent / "node" / "socketio_chat.js"
#: The client's own environment, without a proxy or CA the machine may have set.
BASE_ENV = {
    k: v
    for k, v in os.environ.items()
    if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    and k != "NODE_EXTRA_CA_CERTS"
}

TRANSPORTS = [
    pytest.param([], id="polling-then-upgrade"),
    pytest.param(["--websocket-only"], id="websocket-only"),
]
#: ... and long-polling alone, for the whole session
POLLING_ONLY = pytest.param(["--polling-only"], id="polling-only")
#: What socketio_chat.js prints for its steps chat, add, reverse and ask against `chat_mock`.
CHAT_LINES = [
    "chat echo hi",
    "add 5",
    "reverse 020100 3",
    "question name?",
    "hello Ada",
]


def node_chat(url: str, env: dict[str, str], *args: str) -> list[str]:
    """Run the Node chat client to the end (killed after 30 s); the lines it printed."""
    out = subprocess.run(
        ["node", str(CHAT), url, *args],
        env={**BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out.stdout.splitlines()


def opened(transports: list[str]) -> str:
    """The transport the client opens with."""
    return "open websocket" if transports == ["--websocket-only"] else "open polling"


# --- a mock with no server anywhere -----------------------------------------------------------


def node_mock(sio: SocketIORoute) -> None:
    """`chat_mock`, and a "picture" event with an attachment inside an object."""
    chat_mock(sio)
    sio.on("picture", lambda: sio.emit("picture", {"png": b"\x89PNG"}, {"name": "logo"}))


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("transports", [*TRANSPORTS, POLLING_ONLY])
def test_node_client_against_a_mock(
    proxy: WsRouteProxy, transports: list[str], scheme: str
) -> None:
    proxy.route_socket_io("**/socket.io/**", node_mock)
    steps = ["--steps", "chat,add,reverse,ask,admin,picture,leave"]
    lines = node_chat(f"{scheme}://chat.example.com", proxy.env, *transports, *steps)
    assert lines == [
        opened(transports),
        "connect",
        *CHAT_LINES,
        "admin admin",  # /admin, on the same connection, with its auth token
        'picture {"png":"0x89504e47"} {"name":"logo"}',  # an attachment inside an object
        "disconnect io server disconnect",  # the route's disconnect()
    ]
    assert proxy.handler_errors == []
    if transports == ["--polling-only"]:
        assert proxy.web_sockets == []  # all of it by long-polling, answered by the mock
        return
    sock = proxy.wait_for_web_socket("**/socket.io/**")
    assert sock.routed == "mock"
    assert sock.url.startswith("wss://" if scheme == "https" else "ws://chat.example.com/")
    if transports:  # else the first events may have gone by long-polling, before the upgrade
        assert sock.wait_for_event("add", direction="sent").args == [2, 3]
        assert sock.wait_for_event("reverse", direction="sent").args == [b"\x00\x01\x02"]
    assert sock.wait_for_event("whoami", "/admin", direction="sent").id is not None


def test_node_clients_at_once_each_its_own_session(proxy: WsRouteProxy) -> None:
    """Four default clients at the same time, long-polling then upgrading: the mock keeps their
    sessions apart (each gets its own answers, acks and binary data)."""
    proxy.route_socket_io("**/socket.io/**", node_mock)
    steps = ["--steps", "chat,add,reverse,ask,picture"]
    cmd = ["node", str(CHAT), "https://chat.example.com", *steps]
    env = {**BASE_ENV, **proxy.env}
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    expected = ["open polling", "connect", *CHAT_LINES]
    expected += ['picture {"png":"0x89504e47"} {"name":"logo"}', "disconnect io client disconnect"]
    assert [out.splitlines() for out, _ in outs] == [expected] * 4, [err for _, err in outs]
    assert len({sock.url for sock in proxy.web_sockets}) == 4  # four sessions (sid in the URL)
    assert proxy.handler_errors == []


@pytest.mark.parametrize("transports", [TRANSPORTS[1], POLLING_ONLY])
def test_node_client_answers_the_mocks_heartbeats(
    proxy: WsRouteProxy, transports: list[str]
) -> None:
    """Pings every 0.1 s, over the WebSocket or long-polling: the client answers each one (a
    pong late by more than ping_timeout would disconnect it) and chats on."""
    disconnects: list[str] = []
    disconnected = threading.Event()

    def handler(sio: SocketIORoute) -> None:
        chat_mock(sio)
        sio.on_disconnect(lambda ns, reason: (disconnects.append(reason), disconnected.set()))

    proxy.route_socket_io("**/socket.io/**", handler, ping_interval=0.1, ping_timeout=5)
    args = [*transports, "--steps", "pings,chat,pings,add"]
    assert node_chat("https://chat.example.com", proxy.env, *args)[2:] == [
        "pings 3 connected",
        "chat echo hi",
        "pings 3 connected",
        "add 5",
        "disconnect io client disconnect",
    ]
    if transports == ["--websocket-only"]:
        sock = proxy.wait_for_web_socket("**/socket.io/**")
        sock.wait_for_message("3", direction="sent")  # a pong
        sock.wait_for_close()
    assert disconnected.wait(5)
    assert disconnects == ["client namespace disconnect"]


# --- an intercept of python-socketio's own server ---------------------------------------------


def shout(sio: SocketIORoute) -> None:
    server = sio.connect_to_server()
    server.on("chat", lambda text: sio.emit("chat", text.upper()))  # the one rewrite


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("transports", TRANSPORTS)
def test_node_client_intercept_rewrites_one_server_event(
    proxy: WsRouteProxy, sio_server: Any, transports: list[str], tls: bool
) -> None:
    server = sio_server(tls)

    def handler(sio: SocketIORoute) -> None:
        shout(sio)
        sio.on("triple", lambda n: 3 * n)  # the route answers this one; the server never sees it

    proxy.route_socket_io("**/socket.io/**", handler)
    # events are the route's from the upgrade on: a default client waits for it
    args = [*transports, "--await-upgrade", "--steps", "chat,add,reverse,triple"]
    lines = node_chat(server.url, proxy.env, *args)
    assert lines == [
        opened(transports),
        "connect",
        "transport websocket",
        "chat SERVER SAYS HI",  # rewritten
        "add 5",  # forwarded, and its ack back
        "reverse 020100 3",  # binary attachments both ways, two ack values
        "triple 21",  # answered by the route
        "disconnect io client disconnect",
    ]
    sock = proxy.wait_for_web_socket("**/socket.io/**")
    assert sock.routed == "intercept"
    assert sock.wait_for_event("chat", direction="received").args == ["SERVER SAYS HI"]
    assert sock.wait_for_event("reverse", direction="sent").args == [b"\x00\x01\x02"]
    assert proxy.handler_errors == []


# --- through mitmdump and a route script ------------------------------------------------------

SCRIPT = """
from mitm_wsroute import route_socket_io
from tests.test_socketio_e2e import chat_mock
from tests.test_socketio_node import shout


@route_socket_io("**/socket.io/**")
def chat(sio):
    if "127.0.0.1" in sio.url:
        shout(sio)  # the real server
    else:
        chat_mock(sio)  # no server anywhere
"""


def test_route_script_mock_and_intercept_through_mitmdump(mitmdump: Any, sio_server: Any) -> None:
    proc = mitmdump(SCRIPT)
    ca = str(proc.confdir / "mitmproxy-ca-cert.pem")
    env = {"HTTPS_PROXY": proc.proxy}  # the CA by --ca, not NODE_EXTRA_CA_CERTS
    for transports in ([], ["--websocket-only"]):
        lines = node_chat("https://chat.example.com", env, *transports, "--ca", ca)
        assert lines == [opened(transports), "connect", *CHAT_LINES, lines[-1]]
    server = sio_server()
    args = ["--await-upgrade", "--steps", "chat,add"]
    assert node_chat(server.url, env, *args)[3:5] == ["chat SERVER SAYS HI", "add 5"]
