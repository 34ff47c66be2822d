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
    # TLS is mitmproxy's to decrypt: it reads and writes a wss socket, which works as before
    async with connect(tls.url("/intercept"), proxy=p.proxy, ssl=p.ca()) as ws:
        await ws.send("over tls")
        assert await ws.recv() == "over tls"
    await p.async_wait_for(
        rf"{tls.url('/intercept')}: mitmproxy reads and writes the socket \(TLS\)"
    )
    assert p.output.count(OWN) == 2
    assert p.output.count(OWN_SERVER) == 1


async def test_with_message_hooks_mitmproxy_reads_every_socket(mitmdump: Any) -> None:
    p = mitmdump(ROUTES, "--set", "wsroute_message_hooks=true")
    async with connect("ws://chat.invalid/echo", proxy=p.proxy) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
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
