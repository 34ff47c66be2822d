"""The live console's JSON API against a real proxy (the test facade's, console on) with a real
python-websockets client and server: pause, edit, release; inject; close; drop; the token;
bad input. HTTP and the live feed through aiohttp."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mitm_wsroute.testing.async_api import WsRouteProxy

pytestmark = pytest.mark.timeout(30)
C2S, S2C = "client_to_server", "server_to_client"


class Api:
    """The console's API, with the token in the Authorization header."""

    def __init__(self, proxy: WsRouteProxy, session: aiohttp.ClientSession) -> None:
        url = proxy._engine.wsroute.console.url
        assert url is not None
        self.base, _, self.token = url.partition("/?token=")
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = "", raw: bytes = b""
    ) -> tuple[int, Any]:
        headers = {}
        token = self.token if token == "" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw or (None if body is None else json.dumps(body).encode())
        async with self.session.request(
            method, self.base + path, data=data, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)

    async def get(self, path: str) -> Any:
        status, value = await self.call("GET", path)
        assert status == 200, value
        return value

    async def post(self, path: str, body: Any = None) -> Any:
        status, value = await self.call("POST", path, {} if body is None else body)
        assert status in (200, 201), value
        return value

    async def socket_id(self, url: str) -> str:
        [sock] = [s for s in await self.get("/api/sockets") if s["url"] == url]
        return str(sock["id"])

    async def feed(self) -> Feed:
        ws = await self.session.ws_connect(
            self.base + "/api/events", headers={"Authorization": f"Bearer {self.token}"}
        )
        return Feed(ws)


class Feed:
    """The live feed: events read until one matches."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def until(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            message = await asyncio.wait_for(self.ws.receive(), 10)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            for event in json.loads(message.data):
                self.seen.append(event)
                if check(event):
                    return event

    async def paused(self) -> list[dict[str, Any]]:
        event = await self.until(lambda e: e["type"] == "paused" and bool(e["paused"]))
        return list(event["paused"])


@pytest_asyncio.fixture(params=[True, False], ids=["hooks", "no-hooks"])
async def console(
    upstream: Any, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[WsRouteProxy, Api, Any]]:
    """The test proxy with the console on, mitmproxy's message hooks on (mitmproxy's
    machinery or the layer's calls) and off (the layer reads and writes the sockets itself)."""
    options = {
        "wsroute_console": "127.0.0.1:0",
        "wsroute_close_timeout_ms": 500,
        "wsroute_message_hooks": request.param,
    }
    async with (
        WsRouteProxy(options=options) as proxy,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
    ):
        proxy.route_web_socket("**/chat", lambda ws: ws.connect_to_server())
        yield proxy, Api(proxy, session), await upstream()


async def open_chat(proxy: WsRouteProxy, up: Any) -> ClientConnection:
    return await connect(up.url("/chat"), proxy=proxy.url)


async def test_pause_edit_release_reaches_the_server_in_order(console: Any) -> None:
    proxy, api, up = console
    feed = await api.feed()
    await feed.until(lambda e: e["type"] == "hello")
    bp = await api.post("/api/breakpoints", {"url": "**/chat", "direction": C2S, "match": "^s"})
    async with await open_chat(proxy, up) as client:
        sid = await api.socket_id(up.url("/chat"))
        await client.send("one")
        assert await client.recv() == "one"
        await client.send("secret")
        await client.send("two")  # waits behind the paused one
        [paused] = await feed.paused()
        assert paused["text"] == "secret" and paused["socket_id"] == sid
        assert paused["direction"] == C2S and paused["breakpoint"] == bp["id"]
        assert (await api.get("/api/paused"))[0]["id"] == paused["id"]
        sockets = {s["id"]: s for s in await api.get("/api/sockets")}
        assert sockets[sid]["state"] == "paused" and sockets[sid]["kind"] == "intercept"
        await api.post(f"/api/paused/{paused['id']}", {"action": "forward", "text": "edited"})
        assert [await client.recv(), await client.recv()] == ["edited", "two"]
        assert up.received == ["one", "edited", "two"]
        messages = await api.get(f"/api/sockets/{sid}/messages")
        assert [(m["direction"], m["text"], m["action"]) for m in messages] == [
            (C2S, "one", "forwarded"),
            (S2C, "one", "forwarded"),
            (C2S, "edited", "edited"),
            (C2S, "two", "forwarded"),
            (S2C, "edited", "forwarded"),
            (S2C, "two", "forwarded"),
        ]
        after = await api.get(f"/api/sockets/{sid}/messages?after={messages[3]['id']}")
        assert [m["text"] for m in after] == ["edited", "two"]
    await feed.ws.close()


async def test_the_other_direction_is_not_held_and_drop_and_resume_all(console: Any) -> None:
    proxy, api, up = console
    feed = await api.feed()
    await api.post("/api/breakpoints", {"url": "**", "direction": C2S})
    async with await open_chat(proxy, up) as client:
        sid = await api.socket_id(up.url("/chat"))
        await client.send("dropped")
        [paused] = await feed.paused()
        # the server's direction still flows: a message injected to the client arrives
        await api.post(f"/api/sockets/{sid}/send", {"to": "client", "text": "meanwhile"})
        assert await client.recv() == "meanwhile"
        await api.post(f"/api/paused/{paused['id']}", {"action": "drop"})
        await client.send("kept")
        [paused] = await feed.paused()
        assert paused["text"] == "kept"
        assert (await api.post("/api/resume_all"))["released"] == 1
        assert await client.recv() == "kept"
        assert up.received == ["kept"]
        status, error = await api.call("POST", f"/api/paused/{paused['id']}", {})
        assert status == 404 and "no paused message" in error["error"]


async def test_a_binary_message_edited_as_hex(console: Any) -> None:
    proxy, api, up = console
    feed = await api.feed()
    await api.post("/api/breakpoints", {"direction": C2S})
    async with await open_chat(proxy, up) as client:
        await client.send(b"\x00\x01")
        [paused] = await feed.paused()
        assert paused["opcode"] == 2 and paused["base64"] == "AAE="
        await api.post(f"/api/paused/{paused['id']}", {"hex": "ff fe"})
        assert await client.recv() == b"\xff\xfe"


async def test_inject_both_ways(console: Any) -> None:
    proxy, api, up = console
    async with await open_chat(proxy, up) as client:
        sid = await api.socket_id(up.url("/chat"))
        await api.post(f"/api/sockets/{sid}/send", {"to": "server", "text": "to server"})
        assert await client.recv() == "to server"  # the echo server's answer
        await api.post(f"/api/sockets/{sid}/send", {"to": "client", "base64": "AQI="})
        assert await client.recv() == b"\x01\x02"
        assert up.received == ["to server"]
        messages = await api.get(f"/api/sockets/{sid}/messages")
        assert [(m["direction"], m["action"]) for m in messages] == [
            (C2S, "injected"),
            (S2C, "forwarded"),
            (S2C, "injected"),
        ]


async def test_close_a_side_with_code_and_reason(console: Any) -> None:
    proxy, api, up = console
    async with await open_chat(proxy, up) as client:
        sid = await api.socket_id(up.url("/chat"))
        await api.post(
            f"/api/sockets/{sid}/close", {"side": "client", "code": 4001, "reason": "bye"}
        )
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert (client.close_code, client.close_reason) == (4001, "bye")
    await asyncio.wait_for(up.closed.wait(), 5)
    assert up.closes == [(4001, "bye")]  # mirrored to the server
    [sock] = await api.get("/api/sockets")
    assert sock["state"] == "closed" and sock["close_code"] == 4001
    status, error = await api.call("POST", f"/api/sockets/{sid}/close", {"side": "client"})
    assert status == 409 and "closed" in error["error"]


async def test_drop_a_side(console: Any) -> None:
    proxy, api, up = console
    async with await open_chat(proxy, up) as client:
        sid = await api.socket_id(up.url("/chat"))
        await api.post(f"/api/sockets/{sid}/drop", {"side": "client"})
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.close_code == 1006
    [sock] = await api.get("/api/sockets")
    assert sock["close_code"] == 1006


async def test_latency(console: Any) -> None:
    proxy, api, up = console
    async with await open_chat(proxy, up) as client:
        sid = await api.socket_id(up.url("/chat"))
        await api.post(f"/api/sockets/{sid}/latency", {"side": "client", "seconds": 0.2})
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.send("slow")
        assert await client.recv() == "slow"
        assert loop.time() - start >= 0.2


async def test_the_token_is_required(console: Any) -> None:
    proxy, api, up = console
    for token in (None, "wrong", api.token + "x"):
        for method, path in [
            ("GET", "/api/sockets"),
            ("GET", "/"),
            ("GET", "/api/sockets/999/messages"),
            ("POST", "/api/resume_all"),
            ("DELETE", "/api/breakpoints/1"),
            ("GET", "/no/such/thing"),
        ]:
            status, value = await api.call(method, path, token=token)
            assert status == 401 and "token" in value["error"], (token, path)
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await api.session.ws_connect(api.base + "/api/events")
    assert e.value.status == 401
    # ?token= once, then the cookie
    async with api.session.get(f"{api.base}/?token={api.token}") as page:
        assert page.status == 200 and "mitm_wsroute console" in await page.text()
    async with api.session.get(api.base + "/api/sockets") as response:
        assert response.status == 200
    # the cookie alone does not let another origin change anything
    headers = {"Origin": "http://127.0.0.1:1"}
    async with api.session.post(api.base + "/api/resume_all", headers=headers) as response:
        assert response.status == 403


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/breakpoints", {"direction": "sideways"}, 400, "direction"),
        ("/api/breakpoints", {"match": "("}, 400, "bad regex"),
        ("/api/breakpoints", [1], 400, "JSON object"),
        ("/api/breakpoints", b"{not json", 400, "not JSON"),
        ("/api/sockets/{sid}/send", {"to": "client"}, 400, "give the message"),
        ("/api/sockets/{sid}/send", {"to": "moon", "text": "x"}, 400, '"to"'),
        ("/api/sockets/{sid}/send", {"to": "client", "base64": "%%"}, 400, "base64"),
        ("/api/sockets/{sid}/send", {"to": "client", "hex": "zz"}, 400, "hex"),
        ("/api/sockets/{sid}/close", {"side": "client", "code": 1005}, 400, "cannot be sent"),
        ("/api/sockets/{sid}/close", {"side": "client", "code": "x"}, 400, "must be an int"),
        ("/api/sockets/{sid}/close", {"side": "server", "reason": "r"}, 400, "needs a code"),
        ("/api/sockets/{sid}/latency", {"side": "client", "seconds": "1"}, 400, "number"),
        ("/api/sockets/999/send", {"to": "client", "text": "x"}, 404, "no socket"),
        ("/api/paused/abc", {}, 404, "no paused message"),
        ("/api/nothing", {}, 404, "no such endpoint"),
    ],
)
async def test_bad_input_is_a_4xx_with_an_error(
    console: Any, path: str, body: Any, status: int, error: str
) -> None:
    proxy, api, up = console
    async with await open_chat(proxy, up):
        sid = await api.socket_id(up.url("/chat"))
        raw = body if isinstance(body, bytes) else b""
        got, value = await api.call("POST", path.format(sid=sid), body, raw=raw)
        assert got == status and error in value["error"], value


async def test_a_mock_server_side_is_a_conflict(console: Any) -> None:
    proxy, api, up = console
    proxy.route_web_socket("**/mock", lambda ws: None)
    async with connect("ws://mock.invalid/mock", proxy=proxy.url):
        [sock] = await api.get("/api/sockets")
        assert sock["kind"] == "mock"
        status, value = await api.call(
            "POST", f"/api/sockets/{sock['id']}/send", {"to": "server", "text": "x"}
        )
        assert status == 409 and "never connected" in value["error"]


async def test_closing_the_page_releases_everything(console: Any) -> None:
    proxy, api, up = console
    feed = await api.feed()
    await api.post("/api/breakpoints", {"direction": C2S})
    async with await open_chat(proxy, up) as client:
        await client.send("held")
        await feed.paused()
        await feed.ws.close()
        assert await client.recv() == "held"
        assert await api.get("/api/breakpoints") == [] and await api.get("/api/paused") == []


async def test_the_pause_timeout_releases(upstream: Any) -> None:
    options = {"wsroute_console": "127.0.0.1:0", "wsroute_console_pause_timeout": 0.3}
    async with (
        WsRouteProxy(options=options) as proxy,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
    ):
        proxy.route_web_socket("**/chat", lambda ws: ws.connect_to_server())
        api, up = Api(proxy, session), await upstream()
        feed = await api.feed()
        await api.post("/api/breakpoints", {"direction": C2S})
        async with await open_chat(proxy, up) as client:
            await client.send("waits")
            await feed.paused()
            assert await client.recv() == "waits"  # after the timeout, unchanged


async def test_the_record_keeps_the_newest(upstream: Any) -> None:
    options = {"wsroute_console": "127.0.0.1:0", "wsroute_console_keep": 5}
    async with (
        WsRouteProxy(options=options) as proxy,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
    ):
        proxy.route_web_socket("**/chat", lambda ws: ws.connect_to_server())
        api, up = Api(proxy, session), await upstream()
        async with await open_chat(proxy, up) as client:
            for i in range(20):
                await client.send(str(i))
                assert await client.recv() == str(i)
            sid = await api.socket_id(up.url("/chat"))
            messages = await api.get(f"/api/sockets/{sid}/messages")
            assert [m["text"] for m in messages] == ["17", "18", "18", "19", "19"]
            [sock] = await api.get("/api/sockets")
            assert sock["counts"] == {C2S: 20, S2C: 20}


async def test_a_close_waits_behind_the_paused_messages(console: Any) -> None:
    proxy, api, up = console
    feed = await api.feed()
    await api.post("/api/breakpoints", {"direction": C2S})
    client = await open_chat(proxy, up)
    await client.send("last words")
    [paused] = await feed.paused()
    closing = asyncio.ensure_future(client.close(1000, "done"))
    await feed.until(lambda e: e["type"] == "socket" and e["socket"]["waiting"] == 1)
    assert up.received == [] and not up.closed.is_set()  # the close waits too
    await api.post(f"/api/paused/{paused['id']}", {"action": "forward"})
    await asyncio.wait_for(up.closed.wait(), 10)
    assert up.received == ["last words"] and up.closes == [(1000, "done")]
    await closing
