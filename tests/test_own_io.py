"""End to end: with ``wsroute_message_hooks`` off, the layer reads and writes a routed socket's
connections itself (no mitmproxy hook runs per message, so nothing needs its event machinery).

What that must keep from mitmproxy: flow control (a client that does not read stops being
read), its idle timeout, the bytes mitmproxy had read but not handed on yet, and everything
else, which the end-to-end tests check by running again with the hooks off (`make test`).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.sockets import raw_upgrade, read_frame

HOOKS_OFF = ("--set", "wsroute_message_hooks=false")

ROUTES = """
    from mitm_wsroute import route_web_socket

    @route_web_socket("**/echo")
    def echo(ws):
        ws.on_message(ws.send)

    @route_web_socket("**/intercept")
    def intercept(ws):
        ws.connect_to_server()

    @route_web_socket("**/watched")
    def watched(ws):
        import logging
        ws.on_message(ws.send)
        ws.on_close(lambda code, reason: logging.warning(f"watched closed {code} {reason!r}"))
"""

OWN = r"the layer reads and writes the page's connection itself"
OWN_SERVER = r"the layer reads and writes the server's connection itself"


def frame(payload: bytes, opcode: int = 2) -> bytes:
    """A client's frame, masked with a zero key (the payload stays as it is)."""
    n = len(payload)
    if n < 126:
        size = bytes([0x80 | n])
    elif n < 65536:
        size = b"\xfe" + struct.pack("!H", n)
    else:
        size = b"\xff" + struct.pack("!Q", n)
    return bytes([0x80 | opcode]) + size + b"\0\0\0\0" + payload


async def test_which_sockets_the_layer_reads_itself(mitmdump: Any, upstream: Any) -> None:
    plain, tls = await upstream(), await upstream(tls=True)
    p = mitmdump(ROUTES, *HOOKS_OFF)
    for url in ("ws://chat.invalid/echo", plain.url("/intercept")):
        async with connect(url, proxy=p.proxy) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    await p.async_wait_for(rf"ws://chat.invalid/echo: {OWN}")
    await p.async_wait_for(rf"{plain.url('/intercept')}: {OWN}")
    await p.async_wait_for(rf"{plain.url('/intercept')}: {OWN_SERVER}")
    # under TLS too: the layer drives the connections' TLS (mitmproxy negotiated it)
    async with connect(tls.url("/intercept"), proxy=p.proxy, ssl=p.ca()) as ws:
        await ws.send("over tls")
        assert await ws.recv() == "over tls"
    await p.async_wait_for(rf"{tls.url('/intercept')}: {OWN}")
    await p.async_wait_for(rf"{tls.url('/intercept')}: {OWN_SERVER}")
    assert p.output.count(OWN) == 3
    assert p.output.count(OWN_SERVER) == 2
    assert "mitmproxy reads and writes" not in p.output


@pytest.mark.parametrize("path", ["/echo", "/intercept"])
@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_wss_read_and_written_by_the_layer(
    mitmdump: Any, upstream: Any, path: str, deflate: bool
) -> None:
    # messages over a TLS record (16 KiB) and many in one read, in order, both ways
    tls = await upstream(tls=True)
    p = mitmdump(ROUTES, *HOOKS_OFF)
    url = tls.url(path).replace("127.0.0.1", "chat.invalid") if path == "/echo" else tls.url(path)
    sizes = [0, 1, 125, 126, 16_000, 16_385, 70_000, 300_000]
    messages: list[str | bytes] = []
    for i, size in enumerate(sizes * 3):
        body = bytes((i + j) % 251 for j in range(size))
        messages.append(body if i % 2 else body.hex()[:size])
    async with connect(
        url, proxy=p.proxy, ssl=p.ca(), compression="deflate" if deflate else None, max_size=None
    ) as ws:
        for m in messages:
            await ws.send(m)
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in messages]
    assert got == messages
    await p.async_wait_for(rf"{OWN}")
    if path == "/intercept":
        await p.async_wait_for(rf"{OWN_SERVER}")
        assert tls.received == messages


SYNC_ADDON = """
import logging

def websocket_message(flow):  # sees every message, in order, and may change it
    m = flow.websocket.messages[-1]
    logging.warning(f"addon saw {m.content!r} from_client={m.from_client}")
    if m.content == b"change-me":
        m.content = b"changed"

def update(flows):
    logging.debug(f"addon update {len(flows)}")
"""

ASYNC_ADDON = """
import asyncio, logging

async def websocket_message(flow):  # only mitmproxy's machinery awaits this
    await asyncio.sleep(0)
    logging.warning(f"async addon saw {flow.websocket.messages[-1].content!r}")
"""


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_with_message_hooks_the_layer_calls_sync_hooks_itself(
    mitmdump: Any, upstream: Any, tls: bool
) -> None:
    up = await upstream(tls=tls)
    p = mitmdump(ROUTES, "--set", "wsroute_message_hooks=true", other_addon=SYNC_ADDON)
    async with connect(up.url("/intercept"), proxy=p.proxy, ssl=p.ca() if tls else None) as ws:
        for m in ("one", "change-me", "three"):
            await ws.send(m)
            assert await asyncio.wait_for(ws.recv(), 5) == ("changed" if m == "change-me" else m)
    await p.async_wait_for(OWN)
    await p.async_wait_for(OWN_SERVER)
    await p.async_wait_for("addon saw ", count=6)  # printed before the echo; read from a pipe
    await p.async_wait_for("addon update 1")  # mitmproxy's update hook after each, as before
    seen = [
        line.split("addon saw ")[1].strip()
        for line in p.output.splitlines()
        if "addon saw " in line
    ]
    assert seen == [
        f"{m!r} from_client={c}"
        for m, c in [
            (b"one", True), (b"one", False),
            (b"change-me", True), (b"changed", False),
            (b"three", True), (b"three", False),
        ]
    ]  # fmt: skip


async def test_an_async_message_hook_has_mitmproxy_read_every_socket(mitmdump: Any) -> None:
    p = mitmdump(ROUTES, "--set", "wsroute_message_hooks=true", other_addon=ASYNC_ADDON)
    async with connect("ws://chat.invalid/echo", proxy=p.proxy) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    await p.async_wait_for(r"async addon saw b'hi'")
    await p.async_wait_for(r"client disconnect")
    assert "the layer reads and writes" not in p.output


async def test_a_client_that_does_not_read_is_not_read(mitmdump: Any) -> None:
    # Flow control as mitmproxy's: while the echoes cannot be written, the client is not read,
    # so its writes block, and the proxy holds a bounded amount; then all echoes arrive.
    p = mitmdump(ROUTES, *HOOKS_OFF)
    r, w, head = await raw_upgrade(p.port, "http://chat.invalid/echo")
    assert head.startswith(b"HTTP/1.1 101"), head
    chunk = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while True:
        w.write(frame(chunk))
        sent += 1
        try:
            await asyncio.wait_for(w.drain(), 2)
        except TimeoutError:
            break  # blocked: the proxy stopped reading
        assert sent < 1024, "64 MiB written and the proxy still reads: no flow control"
    for _ in range(sent):
        assert await asyncio.wait_for(read_frame(r), 10) == (2, chunk)
    w.write(frame(b"after"))
    assert await asyncio.wait_for(read_frame(r), 5) == (2, b"after")
    w.close()


async def test_what_came_with_the_handshake_goes_first(mitmdump: Any) -> None:
    # A client that writes its first messages before the 101 arrives, more than mitmproxy
    # reads at once: all of them are answered, in order, before what comes later.
    p = mitmdump(ROUTES, *HOOKS_OFF)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    messages = [f"{i:04}".encode() * 4096 for i in range(24)]  # 16 KiB each, 384 KiB
    writer.write(
        b"GET http://chat.invalid/echo HTTP/1.1\r\nHost: chat.invalid\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" + b"".join(frame(m) for m in messages)
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(frame(b"later"))
    for m in [*messages, b"later"]:
        assert await asyncio.wait_for(read_frame(reader), 5) == (2, m)
    writer.close()


@pytest.mark.parametrize("path", ["echo", "intercept"])
async def test_reads_count_against_the_idle_timeout(
    mitmdump: Any, upstream: Any, path: str
) -> None:
    # mitmproxy closes a connection idle for tcp_timeout seconds; a socket the layer reads is
    # busy as long as messages flow.
    up = await upstream()
    p = mitmdump(ROUTES, *HOOKS_OFF, "--set", "tcp_timeout=1")
    url = "ws://chat.invalid/echo" if path == "echo" else up.url("/intercept")
    async with connect(url, proxy=p.proxy) as ws:
        for i in range(8):  # 2.4 s, more than twice the timeout
            await ws.send(f"{i}")
            assert await ws.recv() == f"{i}"
            await asyncio.sleep(0.3)  # pacing, not synchronisation: the clock is the subject
    await p.async_wait_for(rf"{OWN}")
    assert "Closing connection due to inactivity" not in p.output


async def test_a_tls_client_that_leaves_without_a_close_frame(mitmdump: Any, upstream: Any) -> None:
    # Its TLS stream ends (close_notify), then its TCP connection: the layer read the
    # close_notify itself, so it must tell itself that the stream ended (mitmproxy's TLS layer,
    # which sees the close_notify consumed, reports nothing).
    tls = await upstream(tls=True)
    p = mitmdump(ROUTES, *HOOKS_OFF)
    async with connect(
        tls.url("/watched").replace("127.0.0.1", "chat.invalid"), proxy=p.proxy, ssl=p.ca()
    ) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        await p.async_wait_for(OWN)
        ws.transport.close()  # TLS close_notify and FIN, no close frame
    await p.async_wait_for(r"watched closed 1006 ''", timeout=5)
