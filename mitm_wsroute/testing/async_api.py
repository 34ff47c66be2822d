"""The async twin of `mitm_wsroute.testing`: the same names, and everything that waits is a
coroutine that never blocks the caller's event loop (the proxy runs on a thread of its own).

    from mitm_wsroute.testing.async_api import WsRouteProxy

    async with WsRouteProxy() as proxy:
        proxy.route_web_socket("**/feed", lambda ws: ws.on_message(ws.send))
        ...
        sock = await proxy.wait_for_web_socket("**/feed")
        message = await sock.wait_for_message("subscribe", direction="sent")
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mitmproxy.utils import asyncio_utils

from mitm_wsroute.graphql_ws import Operation, OperationMatch
from mitm_wsroute.socketio import SocketIOEvent
from mitm_wsroute.urlmatch import URLMatch

from ._base import DEFAULT_TIMEOUT, ProxyBase, SocketBase, ValueBox
from ._records import Message, MessageMatch

__all__ = ["Message", "WebSocket", "WsRouteProxy"]

logger = logging.getLogger(__name__)


class AsyncValueBox[T](ValueBox[T]):
    """`expect_*`'s result in the async API: ``await box.value``, as in Playwright's."""

    __slots__ = ()

    @property
    def value(self) -> Any:  # an awaitable of T
        result = super().value

        async def done() -> T:
            return result

        return done()


class WebSocket(SocketBase):
    """The client's view of one WebSocket that went through the proxy (Playwright's
    `WebSocket`), with coroutine waits."""

    __slots__ = ()

    async def wait_for_message(
        self,
        match: MessageMatch | None = None,
        *,
        direction: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Message:
        """See `mitm_wsroute.testing.WebSocket.wait_for_message`."""
        check, fail = self._message_check(match, direction, timeout)
        return await self._record.hub.async_wait(check, fail, timeout)

    async def wait_for_event(
        self,
        name: str,
        namespace: str = "/",
        *,
        direction: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SocketIOEvent:
        """See `mitm_wsroute.testing.WebSocket.wait_for_event`."""
        check = self._socketio_event_check(name, namespace, direction, timeout)
        return await self._record.hub.async_wait(*check, timeout)

    async def wait_for_close(self, timeout: float = DEFAULT_TIMEOUT) -> WebSocket:
        """Wait until the client's socket is closed; returns this socket."""
        return await self._record.hub.async_wait(*self._close_check(timeout), timeout)

    async def wait_for_operation(
        self, name: OperationMatch, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Operation:
        """See `mitm_wsroute.testing.WebSocket.wait_for_operation`."""
        check, fail = self._operation_check(name, timeout)
        return await self._record.hub.async_wait(check, fail, timeout)

    def on(self, event: str, callback: Callable[[Any], Any]) -> None:
        """Call `callback` for ``"framesent"``/``"framereceived"`` (with the payload) and
        ``"close"`` (with this socket), on the event loop that called `on`; an async callback
        is scheduled as a task."""
        loop = asyncio.get_running_loop()
        record = self._record

        def run(arg: Any) -> None:
            if record.detached:
                return  # the proxy was reset meanwhile: the test that listened is over
            result = callback(self if event == "close" else arg)
            if inspect.isawaitable(result):
                asyncio_utils.create_task(
                    _awaited(result), name=f"wsroute {event} listener", keep_ref=True
                )

        def hand_over(arg: Any) -> None:
            try:
                loop.call_soon_threadsafe(run, arg)
            except RuntimeError as e:  # the loop is closed: the async test that listened ended
                record.remove_listener(event, hand_over)
                logger.debug(f"a listener of the async test API is dropped: {e}")

        record.on(event, hand_over)

    @asynccontextmanager
    async def expect_event(
        self,
        event: str,
        predicate: Callable[[Any], bool] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[AsyncValueBox[Any]]:
        """A block after which ``await .value`` is the first `event` in it that satisfies
        `predicate` (a payload for frames, this socket for ``"close"``)."""
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        check, fail = self._event_check(event, predicate, timeout)
        box: AsyncValueBox[Any] = AsyncValueBox()
        yield box
        (value,) = await self._record.hub.async_wait(check, fail, timeout)
        box.set(self if event == "close" else value)


async def _awaited(result: Any) -> None:
    await result


class WsRouteProxy(ProxyBase[WebSocket]):
    """`mitm_wsroute.testing.WsRouteProxy` for asyncio tests: ``async with``, or
    ``await start()`` and ``await stop()``; waits are coroutines."""

    _socket_class = WebSocket

    async def start(self) -> WsRouteProxy:
        """Start the proxy; returns when it listens (see the sync API for the errors)."""
        await asyncio.to_thread(self._engine.start)
        return self

    async def stop(self) -> None:
        await asyncio.to_thread(self._engine.stop)

    async def __aenter__(self) -> WsRouteProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for_web_socket(
        self, url: URLMatch | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> WebSocket:
        """See `mitm_wsroute.testing.WsRouteProxy.wait_for_web_socket`."""
        self._engine.check_running()
        check, fail = self._socket_check(url, timeout)
        return self._view(await self._engine.hub.async_wait(check, fail, timeout))

    @asynccontextmanager
    async def expect_web_socket(
        self, url: URLMatch | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> AsyncIterator[AsyncValueBox[WebSocket]]:
        """After the block, ``await .value`` is the first socket matching `url` that opened
        inside it."""
        self._engine.check_running()
        check, fail = self._new_socket_check(url, timeout)
        box: AsyncValueBox[WebSocket] = AsyncValueBox()
        yield box
        box.set(self._view(await self._engine.hub.async_wait(check, fail, timeout)))
