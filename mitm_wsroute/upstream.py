"""The server of a ``record_mode="new_episodes"`` socket, connected late: at the first client
message that matches nothing recorded, long after the replay answered the client's handshake.

A route connects to the server through mitmproxy only in its handler, before that answer. This
connection is the proxy process's own, made with python-websockets: to the URL the client asked
for, straight (not through an upstream proxy mitmproxy may be set to use), with the client's
request headers but those of the handshake itself (so cookies, authorization and origin go
along), offering the subprotocol the client was given, with the server's TLS certificate
checked as mitmproxy checks it (``ssl_insecure``, ``ssl_verify_upstream_trusted_ca``,
``ssl_verify_upstream_trusted_confdir``). mitmweb does not show it as a connection of its own.

Buffered here: the client's messages while the connection is being made or the server is slow
to read, at most `Upstream.LIMIT` of them (then the client is closed with 1011), and what the
server's socket buffers (python-websockets' limits).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .connection import Accept

if TYPE_CHECKING:
    from .route import WebSocketRoute

__all__ = ["Upstream", "UpstreamError"]

logger = logging.getLogger(__name__)

#: Request headers of the client's that belong to its own handshake: python-websockets writes
#: its own.
HANDSHAKE = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "content-length",
        "transfer-encoding",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
#: How long connecting (TCP, TLS, the opening handshake) may take.
OPEN_TIMEOUT = 10.0

Message = str | bytes


class UpstreamError(ConnectionError):
    """The server of a `new_episodes` socket could not be reached for a new message."""


class Upstream:
    """One late connection to the server of `ws`: `send` and `close` toward it, in order;
    `on_message` gets what it sends, `on_close(code, reason)` its close (code None for a close
    frame without one, 1006 if it went away without one, 1011 if it could not be reached).
    `opened` is done once it is open, or fails with `UpstreamError`."""

    #: The client's messages the server has not taken yet, at most.
    LIMIT = 1000

    def __init__(
        self,
        ws: WebSocketRoute,
        on_message: Callable[[Message], None],
        on_close: Callable[[int | None, str | None], None],
    ) -> None:
        self.url = ws.url
        self.on_message = on_message
        self.on_close = on_close
        self.waiting: deque[Message] = deque()
        self.ending: tuple[int | None, str | None] | None = None  # the client's close
        self.done = False  # the server's side is over
        self.wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        headers = [(n, v) for n, v in ws.request_headers.fields if n.lower() not in HANDSHAKE]
        answer = ws._connection.answer  # the mock's 101: explicit, or accept()'s default
        protocol = answer.protocol if isinstance(answer, Accept) else next(iter(ws.protocols), None)
        self.task = loop.create_task(self._run(headers, [protocol] if protocol else None))

    def send(self, message: Message) -> None:
        if self.done or self.ending is not None:
            return
        if len(self.waiting) >= self.LIMIT:
            logger.error(
                f"{self.url}: new_episodes: the server took none of the last {self.LIMIT} "
                "messages; the client is closed with 1011"
            )
            self._end(1011, "the server reads nothing")
            return
        self.waiting.append(message)
        self.wake.set()

    def close(self, code: int | None, reason: str | None) -> None:
        """The client closed (1006: it went away): the server is closed alike, after what
        waits for it."""
        if self.ending is None:
            self.ending = (code, reason)
            self.wake.set()

    def _end(self, code: int | None, reason: str | None) -> None:
        if not self.done:
            self.done = True
            self.wake.set()
            self.on_close(code, reason)

    async def _run(self, headers: list[tuple[str, str]], protocols: list[str] | None) -> None:
        logger.info(f"{self.url}: new_episodes: connecting to the server for a new message")
        try:
            conn = await connect(
                self.url,
                additional_headers=headers,
                subprotocols=protocols,  # type: ignore[arg-type]
                ssl=_tls() if self.url.startswith("wss:") else None,
                proxy=None,
                open_timeout=OPEN_TIMEOUT,
                ping_interval=None,
                max_size=None,
                user_agent_header=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as e:
            self._end(1011, "new_episodes: the server could not be reached")
            if not self.opened.done():  # (a handler that awaited it may have been cancelled)
                self.opened.set_exception(
                    UpstreamError(
                        f"{self.url}: new_episodes: the server could not be reached for a new "
                        f"client message ({type(e).__name__}: {e}); the client is closed with 1011"
                    )
                )
            return
        if not self.opened.done():
            self.opened.set_result(None)
        reader = asyncio.get_running_loop().create_task(self._read(conn))
        try:
            await self._write(conn)
        finally:
            await reader

    async def _write(self, conn: ClientConnection) -> None:
        try:
            while not self.done:
                while self.waiting:
                    await conn.send(self.waiting.popleft())
                if self.ending is not None:
                    code, reason = self.ending
                    if code == 1006:
                        conn.transport.abort()
                    else:
                        await conn.close(_sendable(code), reason or "")
                    return
                self.wake.clear()
                await self.wake.wait()
        except ConnectionClosed:
            pass

    async def _read(self, conn: ClientConnection) -> None:
        try:
            async for message in conn:
                self.on_message(message)
        except ConnectionClosed:
            pass
        code = conn.close_code
        if self.ending is None:  # the server closed first: the client is told
            self._end(None if code == 1005 else code, conn.close_reason)
        else:
            self.done = True
            self.wake.set()


def _sendable(code: int | None) -> int:
    """A close code python-websockets sends: 1005 sends a close frame without one."""
    if code is None:
        return 1005
    if code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1000


def _tls() -> ssl.SSLContext:
    """The server's certificate checked as mitmproxy checks it (its options, when it runs)."""
    insecure, cafile, capath = False, None, None
    try:
        from mitmproxy import ctx

        options = ctx.options
        insecure = options.ssl_insecure
        cafile = options.ssl_verify_upstream_trusted_ca
        capath = options.ssl_verify_upstream_trusted_confdir
    except AttributeError:  # no mitmproxy running here (a unit test)
        pass
    if cafile is None and capath is None:
        import certifi  # mitmproxy's own default

        cafile = certifi.where()
    context = ssl.create_default_context(cafile=cafile, capath=capath)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
