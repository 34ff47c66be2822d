"""Raw sockets for end-to-end tests: an absolute-form WebSocket upgrade through the proxy, a
frame read off the wire, and which TCP connections a process holds open (Linux /proc), to
prove nothing leaks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import select
import ssl
import struct
import threading
from pathlib import Path
from typing import Any

# /proc/net/tcp state codes (include/net/tcp_states.h)
_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
           "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
           "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}  # fmt: skip


def open_tcp_connections(pid: int) -> list[tuple[str, str]]:
    """(local port : remote port, state) of every non-listening TCP socket of `pid`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                if inode in inodes and _STATES[state] != "LISTEN":
                    ports = f"{int(local.split(':')[1], 16)}->{int(remote.split(':')[1], 16)}"
                    found.append((ports, _STATES[state]))
    return found


async def raw_upgrade(
    port: int, url: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open a WebSocket through the proxy on `port` with an absolute-form ``GET url`` (the RFC
    6455 example key); return the streams and the response head."""
    host = url.split("/")[2]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {url} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


async def read_frame(r: asyncio.StreamReader) -> tuple[int, bytes]:
    """The opcode and payload of the next frame the proxy sends (unmasked, RFC 6455 §5.2)."""
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await r.readexactly(8))[0]
    return b0 & 0x0F, await r.readexactly(n)


async def no_leaks(p: Any) -> None:
    """The mitmdump of `p` holds no TCP connection any more (polled: closing is the kernel's)."""
    for _ in range(50):
        if not open_tcp_connections(p.proc.pid):
            return
        await asyncio.sleep(0.1)
    assert open_tcp_connections(p.proc.pid) == []


def switching_protocols(head: str, extensions: str = "") -> bytes:
    """A server's 101 answer to the upgrade request `head` (RFC 6455 §4.2.2), agreeing on
    `extensions` if any."""
    key = re.search(r"(?i)sec-websocket-key: *(\S+)", head)
    assert key is not None
    digest = hashlib.sha1((key.group(1) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: "
        + base64.b64encode(digest.digest())
        + b"\r\n"
        + (f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else "").encode()
        + b"\r\n"
    )


async def raw_websocket_server(then_send: bytes, read: bool = True) -> tuple[asyncio.Server, int]:
    """A WebSocket server on 127.0.0.1 that accepts any upgrade, then writes `then_send` (raw
    bytes, e.g. a frame that breaks the protocol) and reads until the peer goes (without
    `read`: never reads again, a stalled peer)."""

    # A stalled connection's reading is paused once its buffer is full: then nothing but its
    # own task, transport and protocol refer to each other, and the garbage collector would
    # close it (a reset for the proxy). Held here while the server lives.
    stalled: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        writer.write(switching_protocols(head) + then_send)
        if not read:
            stalled.append(writer)
            await asyncio.Event().wait()  # until the server closes: cancelled then
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class OneAtATime(ssl.SSLSocket):
    """An SSL socket that never reads and writes at the same time.

    The sync clients of python-websockets and python-socketio read a WebSocket on one thread
    and write it on another, both on one SSL socket, which OpenSSL does not allow. A TLS 1.3
    server sends its session tickets just after the handshake, as the client writes its
    upgrade request: the reader thread, woken by them, sits in a blocking read while the
    request is written. python-socketio's client now and then reads b"" (an end of stream that
    is not there) and drops the connection (python-socketio#1577, python-engineio#461; about
    one socket in 25 through the proxy under load). python-websockets' (17.4) now and then
    loses its request: the server fails the record ("decryption failed or bad record mac") or
    never sees it, and the client, its handshake timed out, waits forever for its reader
    thread (a close from another thread does not wake a blocking read). With no proxy, three
    loops of 1,500 connections each to a python-websockets wss echo server on this 2-CPU
    machine: 5 and 6 of 4,500 failed or hung in two runs; none of 4,500 with the server sending no
    tickets, or with the client held to TLS 1.2 (whose tickets come inside the handshake).
    This socket waits for data outside its lock and reads and writes inside it."""

    def _one(self) -> threading.Lock:
        return self.__dict__.setdefault("_lock", threading.Lock())  # type: ignore[no-any-return]

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        timeout = self.gettimeout()
        while True:
            if not self.pending() and not select.select([self], [], [], timeout)[0]:
                raise TimeoutError("timed out")
            with self._one():
                self.settimeout(0)
                try:
                    return super().recv(buflen, flags)
                except ssl.SSLWantReadError:
                    continue  # a record without data (a session ticket): wait again
                finally:
                    self.settimeout(timeout)

    def send(self, data: Any, flags: int = 0) -> int:
        with self._one():
            return super().send(data, flags)


def sync_client_tls(cafile: str | Path) -> ssl.SSLContext:
    """A client TLS context trusting `cafile`, for the thread-based sync clients (`OneAtATime`)."""
    tls = ssl.create_default_context(cafile=str(cafile))
    tls.sslsocket_class = OneAtATime
    return tls
