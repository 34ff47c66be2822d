"""python-socketio's own server on 127.0.0.1, plain or TLS, for the intercept tests of
route_socket_io (python-socketio's clients, Node's, Chromium's)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import web


class SocketIOServerThread:
    """python-socketio's own server (aiohttp) on 127.0.0.1, plain or TLS, on a thread and loop
    of its own: "chat" answers with a "chat" of its own, "add" and "reverse" by ack."""

    def __init__(
        self, tls: ssl.SSLContext | None = None, pages: dict[str, tuple[bytes, str]] | None = None
    ) -> None:
        # any origin: python-engineio's aiohttp server takes a TLS request's scheme for http,
        # so its same-origin check refuses a client's https Origin on the WebSocket upgrade
        server = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
        app = web.Application()
        server.attach(app)
        for path, page in (pages or {}).items():  # `pages`: path -> (body, content type)

            async def get(_: web.Request, page: tuple[bytes, str] = page) -> web.Response:
                return web.Response(body=page[0], content_type=page[1])

            app.router.add_get(path, get)

        @server.on("chat")
        async def chat(sid: str, text: str) -> None:
            await server.emit("chat", f"server says {text}", to=sid)

        @server.on("add")
        async def add(sid: str, a: int, b: int) -> int:
            return a + b

        @server.on("reverse")
        async def reverse(sid: str, data: bytes) -> tuple[bytes, int]:
            return data[::-1], len(data)

        self.server = server
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=tls)
            await site.start()
            return int(self.runner.addresses[0][1])

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        # TLS: by name, since https-proxy-agent 9.1 checks an IP target's certificate against
        # "localhost" (it drops the host and sends no SNI for an IP); the server is on 127.0.0.1
        host = "localhost" if tls else "127.0.0.1"
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"

    def stop(self) -> None:
        async def stop() -> None:
            await self.server.shutdown()  # its service task too
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def sio_server(tmp_path: Path) -> Iterator[Any]:
    """``sio_server(tls=False)`` starts a python-socketio server; all are stopped after."""
    servers: list[SocketIOServerThread] = []

    def start(tls: bool = False) -> SocketIOServerThread:
        context = None
        if tls:
            from tests.conftest import make_cert  # here: conftest imports this module

            cert, key = make_cert(tmp_path)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        servers.append(SocketIOServerThread(context))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
