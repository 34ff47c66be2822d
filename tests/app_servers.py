"""Real servers for the intercept tests, each an aiohttp app on 127.0.0.1 (plain or TLS) on a
thread and loop of its own: python-socketio's (`SocketIOServerThread`, the `sio_server`
fixture) and, in test_graphql_e2e, Strawberry's."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import web


class AppThread:
    """`app` served on 127.0.0.1 on an ephemeral `port`, under TLS with `tls`. `host` is the
    name to use: "localhost" under TLS, since https-proxy-agent 9.1 checks an IP target's
    certificate against "localhost" (it sends no SNI for an IP); else 127.0.0.1."""

    def __init__(self, app: web.Application, tls: ssl.SSLContext | None = None) -> None:
        self.runner = web.AppRunner(app)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> int:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=tls).start()
            return int(self.runner.addresses[0][1])

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.host = "localhost" if tls else "127.0.0.1"

    def stop(self, first: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop serving (after `first`, on the server's loop), and the loop and its thread."""

        async def stop() -> None:
            if first is not None:
                await first()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def started[T: AppThread](
    make: Callable[[ssl.SSLContext | None], T], tmp_path: Path
) -> Iterator[Callable[[bool], T]]:
    """A fixture's body: ``start(tls=False)`` makes a server (TLS with a certificate of its
    own for 127.0.0.1 and localhost); all are stopped at the end."""
    servers: list[T] = []

    def start(tls: bool = False) -> T:
        context = None
        if tls:
            from tests.conftest import make_cert  # here: conftest imports this module

            cert, key = make_cert(tmp_path)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        servers.append(make(context))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


class SocketIOServerThread(AppThread):
    """python-socketio's own server: "chat" answers with a "chat" of its own, "add" and
    "reverse" by ack; `pages` (path -> (body, content type)) served beside it."""

    def __init__(
        self, tls: ssl.SSLContext | None = None, pages: dict[str, tuple[bytes, str]] | None = None
    ) -> None:
        # any origin: python-engineio's aiohttp server takes every request for http
        # (X-Forwarded-Proto or "http"), so its same-origin check refuses an https client's
        # WebSocket upgrade
        server = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
        app = web.Application()
        server.attach(app)
        for path, page in (pages or {}).items():

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
        super().__init__(app, tls)
        self.url = f"{'https' if tls else 'http'}://{self.host}:{self.port}"

    def stop(self, first: Callable[[], Awaitable[None]] | None = None) -> None:
        super().stop(first or self.server.shutdown)  # its service task too


@pytest.fixture
def sio_server(tmp_path: Path) -> Iterator[Any]:
    """``sio_server(tls=False)`` starts a python-socketio server; all are stopped after."""
    with started(SocketIOServerThread, tmp_path) as start:
        yield start
