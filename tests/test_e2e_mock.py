"""End to end: a real mitmdump with the addon, python-websockets clients, mocked routes."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import MESSAGE_HOOKS
from tests.sockets import no_leaks, open_tcp_connections, raw_upgrade

MOCK = """
    import logging
    from mitm_wsroute import route_web_socket

    log = logging.getLogger("routes")

    @route_web_socket("**/mock*")
    def mock(ws):
        ws.send("hello 1")
        ws.send(b"hello 2")
        async def close_later():
            await asyncio.sleep(0)  # outside the layer's event
            ws.close(code=4001, reason="bye from the route")
        def on_message(m):
            if m == "close-me":
                ws.close(code=4001, reason="bye from the route")
            elif m == "close-later":
                return close_later()
            elif m == "raise":
                raise ValueError("boom in on_message")
            elif m == "exit":
                raise SystemExit(3)
            else:
                ws.send(m)  # echo, keeping text and binary
        ws.on_message(on_message)
        ws.on_close(lambda code, reason: log.warning(f"on_close {code} {reason!r}"))

    @route_web_socket("**/async-mock")
    async def async_mock(ws):
        import asyncio
        await asyncio.sleep(0.05)
        ws.send(f"url={ws.url} protocols={ws.protocols}")
        async def later(m):
            await asyncio.sleep(0.05)
            ws.send(f"later {m}")
        ws.on_message(later)

    @route_web_socket("**/broken")
    def broken(ws):
        ws.send("never seen?")
        1 / 0

    @route_web_socket("**/exits")
    def exits(ws):
        raise SystemExit(3)

    @route_web_socket("**/cancelled")
    async def cancelled(ws):
        sleeper = asyncio.ensure_future(asyncio.sleep(10))
        sleeper.cancel()
        await sleeper

    @route_web_socket("**/pushloop")
    def pushloop(ws):
        async def push(m):
            try:
                while True:
                    ws.send("tick")
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                log.warning("push loop cancelled")
                raise
        ws.on_message(push)

    @route_web_socket("**/silent")
    def silent(ws):
        pass

    @route_web_socket("**/url**")
    def url(ws):
        ws.send(ws.url)

    @route_web_socket("**/push")
    async def push(ws):
        import asyncio, threading
        def from_thread():
            for i in range(1000):
                ws.send(f"thread {i}")
            ws.close(code=4002, reason="thread done")
        async def burst(m):
            await asyncio.sleep(0)  # after an await, outside any layer event
            for i in range(3):
                ws.send(f"task {i}")
            threading.Thread(target=from_thread).start()
        ws.on_message(burst)
"""

MOCK = "    import asyncio" + MOCK

OBSERVER = """
import logging
def websocket_message(flow):
    m = flow.websocket.messages[-1]
    logging.warning(f"hook message {m.content!r} from_client={m.from_client} dropped={m.dropped}")
def websocket_end(flow):
    ws = flow.websocket
    kept = [(m.content, m.from_client, m.dropped, m.injected) for m in ws.messages]
    logging.warning(f"hook end code={ws.close_code} by_client={ws.closed_by_client} {kept}")
"""


async def recv_all(ws: Any, n: int) -> list[str | bytes]:
    return [await asyncio.wait_for(ws.recv(), 5) for _ in range(n)]


@pytest.fixture
async def mock_proxy(mitmdump: Any) -> Any:
    return mitmdump(MOCK)


async def test_mock_never_touches_upstream(mock_proxy: Any, sentinel: Any) -> None:
    url = f"ws://127.0.0.1:{sentinel.port}/mock"
    async with connect(url, proxy=mock_proxy.proxy) as ws:
        assert await recv_all(ws, 2) == ["hello 1", b"hello 2"]
        await ws.send("text")
        await ws.send(b"\x00\x01binary")
        assert await recv_all(ws, 2) == ["text", b"\x00\x01binary"]
    assert sentinel.accepted == 0


async def test_mock_of_unresolvable_host_ws_and_wss(mock_proxy: Any) -> None:
    for url, tls in (
        ("ws://chat.invalid/mock", None),
        ("wss://chat.invalid/mock", mock_proxy.ca()),
    ):
        async with connect(url, proxy=mock_proxy.proxy, ssl=tls) as ws:
            assert await recv_all(ws, 2) == ["hello 1", b"hello 2"]
            await ws.send("ping over " + url)
            assert await ws.recv() == "ping over " + url


async def test_mock_answers_pings(mock_proxy: Any) -> None:
    async with connect("ws://chat.invalid/mock", proxy=mock_proxy.proxy) as ws:
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)


async def test_mock_echoes_first_subprotocol(mock_proxy: Any) -> None:
    async with connect(
        "ws://chat.invalid/async-mock", proxy=mock_proxy.proxy, subprotocols=["chat.v2", "chat.v1"]
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        assert (
            await ws.recv() == "url=ws://chat.invalid/async-mock protocols=['chat.v2', 'chat.v1']"
        )
        await ws.send("a")
        await ws.send("b")
        assert await recv_all(ws, 2) == ["later a", "later b"]


async def test_route_close_with_code(mock_proxy: Any) -> None:
    async with connect("ws://chat.invalid/mock", proxy=mock_proxy.proxy) as ws:
        await recv_all(ws, 2)
        await ws.send("close-me")
        with pytest.raises(ConnectionClosed) as e:
            await asyncio.wait_for(ws.recv(), 5)
    assert (e.value.rcvd.code, e.value.rcvd.reason) == (4001, "bye from the route")
    # the route's own close reaches its on_close too, as in Playwright
    await mock_proxy.async_wait_for(r"on_close 4001 'bye from the route'")
    await mock_proxy.async_wait_for(r"WebSocket Error: \w+=4001 \(reason: bye from the route\)")


@pytest.mark.parametrize(
    ("code", "reason", "seen"), [(4002, "client bye", "4002 'client bye'"), (None, "", "None None")]
)
async def test_client_close_reaches_on_close(
    mock_proxy: Any, code: int | None, reason: str, seen: str
) -> None:
    async with connect("ws://chat.invalid/mock", proxy=mock_proxy.proxy) as ws:
        await recv_all(ws, 2)
        if code:
            await ws.close(code, reason)
        else:  # an empty close payload, which websockets' close() cannot send
            ws.protocol.send_close()
            ws.send_data()
            await ws.wait_closed()
    assert ws.close_code == (code or 1005)  # the handshake completed
    await mock_proxy.async_wait_for(f"on_close {seen}")


@pytest.mark.parametrize(
    ("path", "error"), [("exits", "SystemExit"), ("cancelled", "CancelledError")]
)
async def test_route_handler_exiting_or_cancelled_closes_1011(
    mock_proxy: Any, path: str, error: str
) -> None:
    async with connect(f"ws://chat.invalid/{path}", proxy=mock_proxy.proxy) as ws:
        with pytest.raises(ConnectionClosed) as e:
            await asyncio.wait_for(ws.recv(), 5)
    assert (e.value.rcvd.code, e.value.rcvd.reason) == (1011, f"route handler raised {error}")
    await test_on_message_exception_is_logged_and_socket_goes_on(mock_proxy)  # proxy lives


async def test_async_handlers_end_with_their_socket(mock_proxy: Any) -> None:
    async with connect("ws://chat.invalid/pushloop", proxy=mock_proxy.proxy) as ws:
        await ws.send("go")
        assert await ws.recv() == "tick"
    await mock_proxy.async_wait_for("push loop cancelled")
    assert mock_proxy.output.count("send() to the page ignored") <= 1


async def test_handler_exception_closes_1011(mock_proxy: Any) -> None:
    async with connect("ws://chat.invalid/broken", proxy=mock_proxy.proxy) as ws:
        with pytest.raises(ConnectionClosed) as e:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert e.value.rcvd.code == 1011
    assert e.value.rcvd.reason == "route handler raised ZeroDivisionError"
    m = await mock_proxy.async_wait_for(r'routes0.py", line (\d+), in broken')
    assert int(m.group(1)) == MOCK.splitlines().index("        1 / 0") + 1


async def test_on_message_exception_is_logged_and_socket_goes_on(mock_proxy: Any) -> None:
    async with connect("ws://chat.invalid/mock", proxy=mock_proxy.proxy) as ws:
        await recv_all(ws, 2)
        await ws.send("raise")
        await ws.send("exit")  # SystemExit is contained like an exception
        await ws.send("still alive")
        assert await ws.recv() == "still alive"
    await mock_proxy.async_wait_for("ValueError: boom in on_message")


async def test_empty_handler_drops_client_messages(mitmdump: Any) -> None:
    p = mitmdump(MOCK, *MESSAGE_HOOKS, other_addon=OBSERVER)
    async with connect("ws://chat.invalid/silent", proxy=p.proxy) as ws:
        await ws.send("into the void")
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)  # the socket is open and served
    # the proxy dropped it (and sent nothing: the flow holds no message to the client)
    await p.async_wait_for(r"hook message b'into the void' from_client=True dropped=True")
    m = await p.async_wait_for(r"hook end code=1000 by_client=True (.*)")
    assert m.group(1) == repr([(b"into the void", True, True, False)])


async def test_unmatched_passes_through(mock_proxy: Any, upstream: Any) -> None:
    up = await upstream()
    async with connect(up.url("/plain"), proxy=mock_proxy.proxy) as ws:
        await ws.send("to the real server")
        assert await ws.recv() == "to the real server"
    assert up.accepted == 1


async def test_reverse_mode(mitmdump: Any, sentinel: Any) -> None:
    p = mitmdump(MOCK, "--mode", f"reverse:http://127.0.0.1:{sentinel.port}")
    async with connect(f"ws://127.0.0.1:{p.port}/mock") as ws:
        assert await recv_all(ws, 2) == ["hello 1", b"hello 2"]
        await ws.send("reverse")
        assert await ws.recv() == "reverse"
    async with connect(f"ws://127.0.0.1:{p.port}/async-mock") as ws:
        assert await ws.recv() == f"url=ws://127.0.0.1:{sentinel.port}/async-mock protocols=[]"
    assert sentinel.accepted == 0


async def test_reverse_mode_wss(mitmdump: Any, sentinel: Any) -> None:
    p = mitmdump(MOCK, "--mode", f"reverse:https://127.0.0.1:{sentinel.port}")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with connect(f"wss://127.0.0.1:{p.port}/mock", ssl=ctx) as ws:
        assert await recv_all(ws, 2) == ["hello 1", b"hello 2"]
    assert sentinel.accepted == 0


async def test_absolute_form_request(mock_proxy: Any, sentinel: Any) -> None:
    url = f"http://127.0.0.1:{sentinel.port}/mock"
    reader, writer, head = await raw_upgrade(mock_proxy.port, url)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    first = await asyncio.wait_for(reader.readexactly(9), 5)
    assert first == b"\x81\x07hello 1"  # unmasked text frame from the server side
    writer.close()
    assert sentinel.accepted == 0


async def test_no_sockets_left_after_closes(mock_proxy: Any) -> None:
    for i in range(3):
        async with connect("ws://chat.invalid/mock", proxy=mock_proxy.proxy) as ws:
            await recv_all(ws, 2)
            if i == 0:
                await ws.send("close-me")
                await ws.wait_closed()
            if i == 2:
                ws.transport.abort()  # a TCP drop
    await no_leaks(mock_proxy)


def test_sockets_helper_sees_connections() -> None:
    import os

    with socket.create_server(("127.0.0.1", 0)) as srv:
        c = socket.create_connection(srv.getsockname())
        s, _ = srv.accept()
        assert len(open_tcp_connections(os.getpid())) == 2
        c.close()
        s.close()


@pytest.mark.parametrize(
    ("url", "seen"),
    [
        ("ws://Chat.Invalid:80/url?x=1", "ws://chat.invalid/url?x=1"),
        ("ws://chat.invalid:8080/url", "ws://chat.invalid:8080/url"),
        ("wss://chat.invalid/url", "wss://chat.invalid/url"),
        ("wss://chat.invalid:8443/url/deep?q", "wss://chat.invalid:8443/url/deep?q"),
    ],
)
async def test_url_through_connect_tunnels(mock_proxy: Any, url: str, seen: str) -> None:
    tls = mock_proxy.ca() if url.startswith("wss") else None
    async with connect(url, proxy=mock_proxy.proxy, ssl=tls) as ws:
        assert await ws.recv() == seen


async def test_url_of_absolute_form_request(mock_proxy: Any) -> None:
    reader, writer, _ = await raw_upgrade(mock_proxy.port, "http://chat.invalid:8080/url?a=b")
    seen = b"ws://chat.invalid:8080/url?a=b"
    assert await asyncio.wait_for(reader.readexactly(2 + len(seen)), 5) == b"\x81\x1e" + seen
    writer.close()


async def test_stock_hooks_see_dropped_and_injected(mitmdump: Any) -> None:
    p = mitmdump(MOCK, *MESSAGE_HOOKS, other_addon=OBSERVER)
    async with connect("ws://chat.invalid/mock", proxy=p.proxy) as ws:
        await recv_all(ws, 2)
        await ws.send("echo me")
        assert await ws.recv() == "echo me"
        await ws.send("close-me")
        await ws.wait_closed()
    # the route consumed the client's message: dropped; its replies are recorded as injected
    await p.async_wait_for(r"hook message b'echo me' from_client=True dropped=True")
    m = await p.async_wait_for(r"hook end code=4001 by_client=False (.*)")
    assert m.group(1) == repr(
        [
            (b"hello 1", False, False, True),
            (b"hello 2", False, False, True),
            (b"echo me", True, True, False),
            (b"echo me", False, False, True),
            (b"close-me", True, True, False),
        ]
    )


async def test_message_hooks_can_be_turned_off(mitmdump: Any) -> None:
    p = mitmdump(MOCK, "--set", "wsroute_message_hooks=false", other_addon=OBSERVER)
    async with connect("ws://chat.invalid/mock", proxy=p.proxy) as ws:
        await recv_all(ws, 2)
        await ws.send("echo me")
        assert await ws.recv() == "echo me"
    m = await p.async_wait_for(r"hook end code=1000 by_client=True (.*)")
    assert "(b'echo me', True, True, False)" in m.group(1)  # still recorded in the flow
    assert "hook message" not in p.output  # but no addon was called per message


async def _raw_mock(
    p: Any, trigger: str = "close-me"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer, _ = await raw_upgrade(p.port, "http://chat.invalid/mock")
    await asyncio.wait_for(reader.readexactly(9 + 9), 5)  # "hello 1", b"hello 2"
    mask = b"\x00\x00\x00\x00"
    writer.write(bytes([0x81, 0x80 | len(trigger)]) + mask + trigger.encode())  # masked text
    close = await asyncio.wait_for(reader.readexactly(2 + 2 + len("bye from the route")), 5)
    assert close[:4] == b"\x88\x14\x0f\xa1"  # close frame, 20 bytes, code 4001
    return reader, writer


async def test_route_calls_from_a_task_and_a_thread_keep_order(mock_proxy: Any) -> None:
    async with connect("ws://chat.invalid/push", proxy=mock_proxy.proxy) as ws:
        await ws.send("go")
        got = []
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(await asyncio.wait_for(ws.recv(), 5))
        assert got == [f"task {i}" for i in range(3)] + [f"thread {i}" for i in range(1000)]
        assert ws.close_code == 4002 and ws.close_reason == "thread done"


UPDATES = """
import logging
def update(flows):
    for f in flows:
        if f.websocket and f.websocket.messages:
            logging.warning(f"update {f.websocket.messages[-1].content!r}")
"""


async def test_route_sends_from_a_task_update_other_addons(mitmdump: Any) -> None:
    # no websocket_message hook fires for route-sent messages: the update hook tells other
    # addons (mitmweb) that the flow has new ones
    p = mitmdump(MOCK, other_addon=UPDATES)
    async with connect("ws://chat.invalid/push", proxy=p.proxy) as ws:
        await ws.send("go")
        for i in range(3):
            assert await asyncio.wait_for(ws.recv(), 5) == f"task {i}"
    await p.async_wait_for(r"update b'task 2'")  # the task's burst: one wake-up, one update


async def test_route_replies_in_the_message_event_update_other_addons(mitmdump: Any) -> None:
    # a reply sent by on_message, in the client message's own event: coalesced into an update
    # hook, so mitmweb shows it without waiting for the next message
    last = "f.websocket.messages[-1]"
    p = mitmdump(
        MOCK,
        *MESSAGE_HOOKS,
        other_addon=UPDATES.replace("!r}", f"!r}} injected={{{last}.injected}}"),
    )
    async with connect("ws://chat.invalid/mock", proxy=p.proxy) as ws:
        await recv_all(ws, 2)  # hello 1, hello 2
        await ws.send("in-event echo")
        assert await asyncio.wait_for(ws.recv(), 5) == "in-event echo"
        await p.async_wait_for(r"update b'in-event echo' injected=True")


def first_line(p: Any, pattern: str) -> int:
    """The index of the first line of `p`'s output that matches `pattern`."""
    return next(i for i, line in enumerate(p.lines) if re.search(pattern, line))


async def test_route_close_waits_for_the_clients_close_reply(mock_proxy: Any) -> None:
    reader, writer = await _raw_mock(mock_proxy)
    writer.write(b"\x88\x82\x00\x00\x00\x00\x0f\xa1")  # the client's close reply, 4001
    assert await asyncio.wait_for(reader.read(), 10) == b""  # then the proxy closes TCP
    writer.close()
    # RFC 6455 §7.1.1: the TCP connection stays until the closing handshake is done
    await mock_proxy.async_wait_for("closing the page's TCP connection")
    answered = first_line(mock_proxy, "the page answered our close frame")
    assert answered < first_line(mock_proxy, "closing the page's TCP connection")


@pytest.mark.parametrize("trigger", ["close-me", "close-later"], ids=["handler", "task"])
async def test_route_close_gives_up_on_a_silent_client(mitmdump: Any, trigger: str) -> None:
    # A close from a handler or from a task after an await: either way the close timer runs,
    # and a client that never answers is closed when it runs out (not at tcp_timeout).
    p = mitmdump(MOCK, "--set", "wsroute_close_timeout_ms=500")
    reader, writer = await _raw_mock(p, trigger)
    assert await asyncio.wait_for(reader.read(), 30) == b""  # never answers: closed anyway
    writer.close()
    await p.async_wait_for("closing the page's TCP connection")
    gave_up = first_line(p, "the page did not answer our close frame in time")
    assert gave_up < first_line(p, "closing the page's TCP connection")
