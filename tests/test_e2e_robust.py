"""End to end: big messages, long-lived and idle sockets, slow handlers, hostile clients.

Hostile input is written byte by byte on raw sockets (RFC 6455 §5 framing) against a real
mitmdump; after each, the proxy must still serve a well-behaved client.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import MITMDUMP, ROOT
from tests.sockets import raw_upgrade, read_frame

BURST = Path(__file__).resolve().parent / "node" / "burst_then_close.js"
CA = "mitmproxy-ca-cert.pem"

ROUTES = """
    import asyncio
    import logging
    from mitm_wsroute import route_web_socket

    @route_web_socket("**/echo")
    def echo(ws):
        def on_message(m):
            if m == "flood":
                for _ in range(200):
                    ws.send(b"x" * 65536)
            else:
                ws.send(m)
        ws.on_message(on_message)

    @route_web_socket("**/slow")
    def slow(ws):
        async def on_message(m):
            if m == "slow":
                await asyncio.sleep(1)
            ws.send(m)
        ws.on_message(on_message)

    @route_web_socket("**/through")
    def through(ws):
        ws.connect_to_server()

    @route_web_socket("**/reject-then-wait")
    async def reject_then_wait(ws):
        ws.reject(403)
        await wait_forever("reject-then-wait")

    @route_web_socket("**/wait")
    async def wait(ws):
        await wait_forever("wait")

    async def wait_forever(name):
        logging.warning(f"{name}: the handler waits")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            logging.warning(f"{name}: the handler is cancelled")
            raise
"""

COUNT = """
    import logging
    def websocket_end(flow):
        logging.warning(f"kept {len(flow.websocket.messages)} messages")
"""


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """One frame as a client sends it (RFC 6455 §5.2)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        size = bytes([n])
    elif n < 65536:
        size = b"\x7e" + struct.pack("!H", n)
    else:
        size = b"\x7f" + struct.pack("!Q", n)
    if not mask:
        return head + size + payload
    key = os.urandom(4)
    size = bytes([size[0] | 0x80]) + size[1:]
    return head + size + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def raw_socket(
    p: Any, path: str = "/echo"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w, head = await raw_upgrade(p.port, f"http://chat.invalid{path}")
    assert head.startswith(b"HTTP/1.1 101"), head
    return r, w


async def close_code(r: asyncio.StreamReader) -> int:
    """The code of the close frame the proxy sends, then the proxy must end the connection."""
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(r), 5)
        if opcode == 0x8:
            assert await asyncio.wait_for(r.read(), 5) == b""  # and the TCP connection ends
            return int(struct.unpack("!H", payload[:2])[0])


async def still_serves(p: Any) -> None:
    async with connect("ws://chat.invalid/echo", proxy=p.proxy) as ws:
        await ws.send("still there?")
        assert await asyncio.wait_for(ws.recv(), 5) == "still there?"


@pytest.fixture
def proxy(mitmdump: Any) -> Any:
    return mitmdump(ROUTES, "--set", "wsroute_max_message_size=100000")


# --- hostile clients --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("reserved opcode", frame(0x3, b"?"), 1002),
        ("reserved bits", bytes([0xC1]) + frame(0x1, b"x")[1:], 1002),
        ("invalid UTF-8 in text", frame(0x1, b"\xff\xfe"), 1007),
        ("control frame over 125 bytes", frame(0x9, b"p" * 126), 1002),
        ("fragmented control frame", frame(0x9, b"p", fin=False), 1002),
        ("unmasked client frame", frame(0x1, b"hi", mask=False), 1002),
        ("continuation without a start", frame(0x0, b"x"), 1002),
        ("message over wsroute_max_message_size", frame(0x2, b"x" * 100001), 1009),
        (
            "fragmented message over the limit",
            frame(0x2, b"x" * 60000, fin=False) + frame(0x0, b"x" * 60000),
            1009,
        ),
    ],
    ids=lambda value: "frame" if isinstance(value, bytes) else None,  # random masks
)
async def test_bad_frames_close_with_the_right_code(
    proxy: Any, name: str, data: bytes, code: int
) -> None:
    r, w = await raw_socket(proxy)
    w.write(data)
    assert await close_code(r) == code, name
    w.close()
    await still_serves(proxy)


@pytest.mark.parametrize(
    ("data", "code"),
    [(frame(0x3, b"?"), 1002), (frame(0x1, b"\xff\xfe"), 1007)],
    ids=["reserved opcode", "invalid UTF-8"],  # frames have random masks: the same id everywhere
)
async def test_a_client_breaking_the_protocol_is_a_drop_for_the_upstream(
    proxy: Any, upstream: Any, data: bytes, code: int
) -> None:
    up = await upstream()
    r, w, head = await raw_upgrade(proxy.port, up.url("/through").replace("ws:", "http:"))
    assert head.startswith(b"HTTP/1.1 101"), head
    w.write(data)
    assert await close_code(r) == code  # the client is failed with the codec's code...
    w.close()
    await asyncio.wait_for(up.closed.wait(), 10)
    assert up.closes == [(1006, "")]  # ...and the upstream sees what it would see: a drop


async def test_many_empty_frames_are_too_big_too(mitmdump: Any) -> None:
    # Each frame of a message but the last counts 2 bytes (its smallest header) against the
    # limit: a flood of empty continuation frames cannot slip past it, nor grow memory.
    p = mitmdump(ROUTES, "--set", "wsroute_max_message_size=1000")
    r, w = await raw_socket(p)
    w.write(frame(0x2, b"", fin=False) + frame(0x0, b"", fin=False) * 2000)
    assert await close_code(r) == 1009
    w.close()
    await still_serves(p)


async def test_fragmented_message_under_the_limit_is_reassembled(proxy: Any) -> None:
    r, w = await raw_socket(proxy)
    w.write(frame(0x1, b"hel", fin=False) + frame(0x9, b"ping") + frame(0x0, b"lo"))
    assert await asyncio.wait_for(read_frame(r), 5) == (0xA, b"ping")  # a pong, between fragments
    assert await asyncio.wait_for(read_frame(r), 5) == (0x1, b"hello")
    w.close()


async def test_a_message_and_a_close_in_one_write_get_the_reply_before_the_close(
    proxy: Any,
) -> None:
    # The mock's reply to a message goes out before the echo of a close (or a pong) that came
    # in the same read, as when each frame comes in a read of its own.
    r, w = await raw_socket(proxy)
    close = frame(0x8, struct.pack("!H", 1000) + b"bye")
    w.write(frame(0x1, b"hi") + frame(0x9, b"p") + close)
    assert await asyncio.wait_for(read_frame(r), 5) == (0x1, b"hi")
    assert await asyncio.wait_for(read_frame(r), 5) == (0xA, b"p")
    assert await close_code(r) == 1000
    w.close()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_node_client_that_closes_right_after_a_burst_gets_every_reply(
    proxy: Any, scheme: str
) -> None:
    # Node's ws sends 300 messages and its close frame in a loop: the close comes in the same
    # read as the last messages (over wss with permessage-deflate, as ws offers it), and the
    # mock's replies to them must still go out before the close's echo.
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env |= {"HTTPS_PROXY": proxy.proxy, "NODE_EXTRA_CA_CERTS": str(proxy.confdir / CA)}
    out = await asyncio.to_thread(
        subprocess.run,
        ["node", str(BURST), f"{scheme}://chat.invalid/echo", "300"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.stdout.splitlines() == ["received 300 in order true close 1000 done"], out.stderr


async def test_tcp_reset_mid_message(proxy: Any) -> None:
    r, w = await raw_socket(proxy)
    w.write(frame(0x2, b"x" * 5000)[:3000])
    await w.drain()
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()  # an RST
    await still_serves(proxy)


async def test_half_closed_client(proxy: Any) -> None:
    r, w = await raw_socket(proxy)
    w.write(frame(0x1, b"bye"))
    w.write_eof()  # the client stops sending, but reads on
    assert await asyncio.wait_for(read_frame(r), 5) == (0x1, b"bye")
    assert await asyncio.wait_for(r.read(), 5) == b""  # the proxy ends the connection
    await still_serves(proxy)


async def test_client_that_never_reads(proxy: Any) -> None:
    r, w = await raw_socket(proxy)
    w.write(frame(0x1, b"flood"))  # 13 MB come back, and are never read
    await w.drain()
    await still_serves(proxy)
    w.transport.abort()
    await still_serves(proxy)


# --- big messages -----------------------------------------------------------------------------


async def test_message_at_the_limit_passes_and_over_it_closes_1009(
    proxy: Any, upstream: Any
) -> None:
    up = await upstream()
    async with connect(up.url("/through"), proxy=proxy.proxy, max_size=None) as ws:
        await ws.send(b"x" * 100000)
        assert len(await ws.recv()) == 100000
        await ws.send(b"x" * 100001)
        with pytest.raises(ConnectionClosed) as e:
            await asyncio.wait_for(ws.recv(), 5)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    await asyncio.wait_for(up.closed.wait(), 5)
    assert up.closes == [(1009, "message larger than 100000 bytes")]  # mirrored upstream


async def test_big_message_through_intercept_and_mock(mitmdump: Any, upstream: Any) -> None:
    p = mitmdump(ROUTES)  # the default limit, 128 MiB
    up = await upstream()
    big = os.urandom(16 * 1024 * 1024)
    for url in (up.url("/through"), "ws://chat.invalid/echo"):
        async with connect(url, proxy=p.proxy, max_size=None) as ws:
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 30) == big


# --- long-lived, idle and slow ----------------------------------------------------------------


async def test_messages_kept_per_flow_are_bounded(mitmdump: Any, tmp_path: Path) -> None:
    count = tmp_path / "count.py"
    count.write_text(COUNT.replace("\n    ", "\n"))
    p = mitmdump(ROUTES, "-s", str(count), "--set", "wsroute_keep_messages=10")
    async with connect("ws://chat.invalid/echo", proxy=p.proxy) as ws:
        for i in range(50):
            await ws.send(str(i))
            assert await ws.recv() == str(i)
    m = await p.async_wait_for(r"kept (\d+) messages")
    assert 10 <= int(m.group(1)) < 20


async def test_idle_mock_lives_while_pinged_and_dies_after_tcp_timeout(mitmdump: Any) -> None:
    p = mitmdump(ROUTES, "--set", "tcp_timeout=2")
    async with connect("ws://chat.invalid/echo", proxy=p.proxy, ping_interval=0.5) as pinged:
        started = time.monotonic()  # before its last activity (the handshake)
        async with connect("ws://chat.invalid/echo", proxy=p.proxy, ping_interval=None) as idle:
            await asyncio.wait_for(idle.wait_closed(), 10)  # mitmproxy's idle timeout
            assert time.monotonic() - started >= 2
            await pinged.send("alive")
            assert await pinged.recv() == "alive"


async def test_slow_async_handler_stalls_nothing(mitmdump: Any) -> None:
    p = mitmdump(ROUTES)
    async with connect("ws://chat.invalid/slow", proxy=p.proxy) as slow:
        async with connect("ws://chat.invalid/echo", proxy=p.proxy) as other:
            started = time.monotonic()
            await slow.send("slow")
            await slow.send("fast")
            await other.send("other")
            assert await other.recv() == "other"
            assert await slow.recv() == "fast"  # not held up behind "slow" (1 s)...
            assert await slow.recv() == "slow"  # ...which comes after it
            assert time.monotonic() - started >= 1


async def test_many_concurrent_mocked_sockets(mitmdump: Any) -> None:
    p = mitmdump(ROUTES)

    async def client(i: int) -> None:
        async with connect("ws://chat.invalid/echo", proxy=p.proxy, open_timeout=60) as ws:
            for j in range(10):
                await ws.send(f"{i}-{j}")
                assert await ws.recv() == f"{i}-{j}"

    await asyncio.gather(*(client(i) for i in range(1000)))


FREEZE_COUNT = """
import gc, logging

def running():
    logging.warning(f"frozen objects: {gc.get_freeze_count()}")
"""


async def test_mitmdump_freezes_what_exists_at_start_up(mitmdump: Any) -> None:
    p = mitmdump(ROUTES, other_addon=FREEZE_COUNT)
    frozen = int((await p.async_wait_for(r"frozen objects: (\d+)")).group(1))
    assert frozen > 10_000  # Python's and mitmproxy's modules: tens of thousands of objects
    async with connect("ws://chat.invalid/echo", proxy=p.proxy) as ws:
        await ws.send("after")
        assert await ws.recv() == "after"
    off = mitmdump(ROUTES, "--set", "wsroute_gc_freeze=false", other_addon=FREEZE_COUNT)
    unfrozen = int((await off.async_wait_for(r"frozen objects: (\d+)")).group(1))
    assert unfrozen < 1000  # the interpreter's own (CPython 3.12 starts with a few hundred)


def test_a_mistyped_wsroute_option_stops_mitmdump_at_start(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            MITMDUMP, "-s", str(ROOT / "addons" / "wsroute.py"),
            "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={tmp_path}",
            "--set", "wsroute_max_mesage_size=5",
        ],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0
    assert (
        "Unknown option wsroute_max_mesage_size; did you mean wsroute_max_message_size?"
        in out.stdout + out.stderr
    )


# --- no orphan tasks ---------------------------------------------------------------------------


async def test_a_handler_still_running_after_reject_is_cancelled(proxy: Any) -> None:
    r, w, head = await raw_upgrade(proxy.port, "http://chat.invalid/reject-then-wait")
    assert head.startswith(b"HTTP/1.1 403"), head
    await proxy.async_wait_for("reject-then-wait: the handler is cancelled")
    w.close()
    await still_serves(proxy)
    assert "route handler failed" not in proxy.output  # cancelled by the proxy: no error


async def test_a_handler_still_running_when_its_client_leaves_is_cancelled(proxy: Any) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    w.write(
        b"GET http://chat.invalid/wait HTTP/1.1\r\nHost: chat.invalid\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await proxy.async_wait_for("wait: the handler waits")
    w.close()  # before the socket opened
    await w.wait_closed()
    await proxy.async_wait_for("wait: the handler is cancelled")
    await still_serves(proxy)
    assert "route handler failed" not in proxy.output
