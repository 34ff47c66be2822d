"""End to end: cassettes through a real proxy (`WsRouteProxy`), with a real python-websockets
client (which offers permessage-deflate) and a real server, on ws and wss: record with secrets
filtered, replay with the server gone, new episodes, and the record-mode option."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve

from mitm_wsroute.harroute import UnmatchedMessageError
from mitm_wsroute.testing import WsRouteProxy
from mitm_wsroute.upstream import UpstreamError
from tests.conftest import make_cert
from tests.sockets import sync_client_tls


def app(ws: ServerConnection) -> None:
    """Says welcome; answers an auth message, "news?" and anything but a heartbeat."""
    ws.send("welcome")
    for message in ws:
        if isinstance(message, str) and message.startswith("{"):
            ws.send(f"authed {json.loads(message)['user']}")
        elif message == "heartbeat":
            pass  # no answer
        elif message == "news?":
            ws.send("news!")
        else:
            ws.send(f"echo {message!r}")


class Server:
    def __init__(self, tls_dir: Path | None) -> None:
        context = None
        if tls_dir is not None:
            cert, key = make_cert(tls_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        self.requests: list[Any] = []  # each connection's upgrade request

        def handler(ws: ServerConnection) -> None:
            self.requests.append(ws.request)
            app(ws)

        self.server = serve(handler, "127.0.0.1", 0, ssl=context)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        port = self.server.socket.getsockname()[1]
        self.url = f"{'wss' if context else 'ws'}://127.0.0.1:{port}/chat?room=1&key=s3cret"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(params=["ws", "wss"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path if request.param == "wss" else None)
    yield s
    s.stop()


def talk(proxy: WsRouteProxy, url: str, **more: Any) -> ClientConnection:
    kwargs: dict[str, Any] = {"proxy": proxy.url, "open_timeout": 5, **more}
    if url.startswith("wss:"):
        kwargs["ssl"] = sync_client_tls(proxy.ca_cert)
    return connect(url, **kwargs)


def redact(direction: str, message: Any) -> Any:
    """Tokens in JSON messages are secrets; heartbeats are noise."""
    if message == "heartbeat":
        return None
    if isinstance(message, str) and message.startswith("{"):
        return json.dumps({**json.loads(message), "token": "FILTERED"})
    return message


CASSETTE: dict[str, Any] = {"filter_query": ["key"], "before_record_message": redact}
AUTH = {"user": "ann", "token": "s3cret"}


def test_record_filtered_then_replay_without_the_server(server: Server, tmp_path: Path) -> None:
    har = tmp_path / "chat.har"
    with WsRouteProxy(options={"ssl_insecure": True}) as proxy:
        proxy.route_from_har(har, record_mode="once", **CASSETTE)
        with talk(proxy, server.url) as c:
            assert c.recv(5) == "welcome"
            c.send(json.dumps(AUTH))
            assert c.recv(5) == "authed ann"
            c.send("heartbeat")
            c.send(b"\x01\x02")
            assert c.recv(5) == "echo b'\\x01\\x02'"
        assert proxy.wait_for_web_socket().routed == "intercept"
    server.stop()
    text = har.read_text()
    assert "s3cret" not in text, text  # filtered before it was written
    assert '"data": "heartbeat"' not in text
    [entry] = json.loads(text)["log"]["entries"]
    assert entry["request"]["url"].endswith("/chat?room=1&key=FILTERED")
    sent = [m["data"] for m in entry["_webSocketMessages"] if m["type"] == "send"]
    assert sent == [json.dumps({**AUTH, "token": "FILTERED"}), "AQI="]

    with WsRouteProxy() as proxy:
        proxy.route_from_har(har, record_mode="once", **CASSETTE)  # the file exists: replay
        url = server.url.replace("s3cret", "other")  # filtered: matches all the same
        with talk(proxy, url) as c:
            assert "permessage-deflate" in (
                c.response.headers.get("Sec-WebSocket-Extensions") or ""
            )
            assert c.recv(5) == "welcome"
            c.send("heartbeat")  # skipped by the filter: neither matched nor reported
            c.send(json.dumps({**AUTH, "token": "another"}))
            assert c.recv(5) == "authed ann"
            c.send("not recorded")
            c.send(b"\x01\x02")
            assert c.recv(5) == "echo b'\\x01\\x02'"  # the unmatched one got no answer
        assert proxy.wait_for_web_socket().routed == "mock"
        [error] = proxy.handler_errors
        assert isinstance(error, UnmatchedMessageError)
        assert "client message 'not recorded' matches nothing recorded" in str(error)
        assert "Closest recorded client messages: " in str(error)


def test_new_episodes_connect_the_server_at_the_first_new_message(
    server: Server, tmp_path: Path
) -> None:
    """Recorded once; then a socket whose messages all match never reaches the server, and
    one with a new message connects it then (with the client's cookie and subprotocol),
    records what it said, and the grown entry replays it all with the server gone."""
    har = tmp_path / "chat.har"
    insecure = {"ssl_insecure": True}  # the test server's certificate is its own
    with WsRouteProxy(options=insecure) as proxy:
        proxy.route_from_har(har, update=True)
        with talk(proxy, server.url, subprotocols=["chat.v1"]) as c:
            assert [c.recv(5), c.send("a"), c.recv(5)] == ["welcome", None, "echo 'a'"]
    assert len(server.requests) == 1
    with WsRouteProxy(options=insecure) as proxy:
        proxy.route_from_har(har, record_mode="new_episodes")
        with talk(proxy, server.url) as c:
            assert [c.recv(5), c.send("a"), c.recv(5)] == ["welcome", None, "echo 'a'"]
        assert proxy.wait_for_web_socket().routed == "mock"
        assert len(server.requests) == 1 and proxy.handler_errors == []  # never connected
    with WsRouteProxy(options=insecure) as proxy:
        proxy.route_from_har(har, record_mode="new_episodes")
        cookie = {"additional_headers": {"Cookie": "session=42"}, "subprotocols": ["chat.v1"]}
        with talk(proxy, server.url, **cookie) as c:
            assert c.recv(5) == "welcome"  # the recorded one
            c.send("a")
            assert c.recv(5) == "echo 'a'"
            assert len(server.requests) == 1
            c.send("news?")  # new: the server is connected now; its greeting comes first
            assert [c.recv(5), c.recv(5)] == ["welcome", "news!"]
        assert proxy.handler_errors == []
    [_, late] = server.requests
    assert late.headers["Cookie"] == "session=42"
    assert late.headers.get_all("Sec-WebSocket-Protocol") == ["chat.v1"]
    server.stop()
    with WsRouteProxy() as proxy:
        proxy.route_from_har(har)
        with talk(proxy, server.url) as c:
            got = [c.recv(5), c.send("a"), c.recv(5), c.send("news?"), c.recv(5), c.recv(5)]
            assert got == ["welcome", None, "echo 'a'", None, "welcome", "news!"]
        assert proxy.handler_errors == []


def test_new_episodes_replay_with_the_server_gone_until_something_is_new(
    tmp_path: Path,
) -> None:
    har = tmp_path / "chat.har"
    server = Server(None)
    with WsRouteProxy() as proxy:
        proxy.route_from_har(har, update=True)
        with talk(proxy, server.url) as c:
            assert [c.recv(5), c.send("a"), c.recv(5)] == ["welcome", None, "echo 'a'"]
    server.stop()
    with WsRouteProxy() as proxy:
        proxy.route_from_har(har, record_mode="new_episodes")
        with talk(proxy, server.url) as c:
            assert [c.recv(5), c.send("a"), c.recv(5)] == ["welcome", None, "echo 'a'"]
            c.send("new")
            with pytest.raises(ConnectionClosed):
                c.recv(10)
        assert c.close_code == 1011
        [error] = proxy.handler_errors
        assert isinstance(error, UpstreamError) and "could not be reached" in str(error)


def test_the_record_mode_option_wins_and_is_checked(tmp_path: Path) -> None:
    har = tmp_path / "chat.har"
    har.write_text(
        json.dumps(
            {
                "log": {
                    "version": "1.2",
                    "entries": [
                        {
                            "_resourceType": "websocket",
                            "request": {"url": "ws://127.0.0.1:9/chat"},
                            "response": {"status": 101},
                            "_webSocketMessages": [
                                {"type": "receive", "time": 1, "opcode": 1, "data": "hi"}
                            ],
                        }
                    ],
                }
            }
        )
    )
    with WsRouteProxy(options={"wsroute_record_mode": "none"}) as proxy:
        proxy.route_from_har(har, update=True)  # would record (and fail: nothing listens)
        with connect("ws://127.0.0.1:9/chat", proxy=proxy.url, open_timeout=5) as c:
            assert c.recv(5) == "hi"
    with pytest.raises(ValueError, match=r"Cannot parse wsroute_record_mode option sometimes: "
                       r"wsroute_record_mode must be one of 'none', 'once'"):  # fmt: skip
        WsRouteProxy(options={"wsroute_record_mode": "sometimes"}).start()
