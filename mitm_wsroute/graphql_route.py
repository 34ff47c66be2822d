"""`route_graphql_ws`: GraphQL over WebSocket routes, on top of `WebSocketRoute`.

The protocols' rules live in `graphql_ws.py` (pure); this module runs the user's handlers and
carries out the session's commands on the route. Handlers run on the proxy's event loop: a
message handler of the route returns a coroutine for the work that waits (an async hook, a
generator of results), which the addon runs as one of the socket's tasks, cancelled when the
socket ends. asyncio is imported by the keep-alive timer alone, when it runs, so that route
scripts importing the package stay free of it.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, overload

from .connection import Error
from .graphql_ws import (
    GRAPHQL_TRANSPORT_WS,
    CheckInit,
    Close,
    Forward,
    GraphQLSession,
    InterceptSession,
    Operation,
    OperationMatch,
    Rewrite,
    Send,
    StartOperation,
    StopOperation,
    Violation,
    operation_matcher,
    pick_protocol,
    result_payload,
)
from .route import WebSocketRoute
from .router import registrar, script_collector
from .urlmatch import URLMatch, compile_url_match

if TYPE_CHECKING:
    import asyncio

__all__ = ["GraphQLServerSide", "GraphQLWsRoute", "graphql_route_handler", "route_graphql_ws"]

logger = logging.getLogger(__name__)

#: Seconds between the legacy protocol's ``ka`` messages (Apollo's server sends one right
#: after the ack, then on a timer).
KEEP_ALIVE = 12.0
#: Seconds a mock waits for a ``graphql-transport-ws`` client's ``connection_init`` before it
#: closes with 4408, as the graphql-ws server's ``connectionInitWaitTimeout`` (3 s).
CONNECTION_INIT_WAIT_TIMEOUT = 3.0

type InitHook = Callable[[dict[str, Any]], Any]
type SubscribeHandler = Callable[[Operation], Any]
type NextHandler = Callable[[dict[str, Any], Operation], Any]
type GraphQLHandler = Callable[[GraphQLWsRoute], Any]


class GraphQLServerSide:
    """The server side of an intercepted GraphQL socket: `on_next` rewrites its results."""

    def __init__(self, route: GraphQLWsRoute, server: WebSocketRoute) -> None:
        self._route = route
        self.web_socket = server
        self._next: list[tuple[Callable[[Operation], bool], NextHandler]] = []

    def on_next(self, name_or_predicate: OperationMatch, fn: NextHandler) -> None:
        """Rewrite the results (``next``, legacy ``data``) of the operations that match:
        ``fn(result, operation)`` returns the result to send to the client (a dict with
        ``data`` or ``errors`` as it is, anything else as ``{"data": ...}``), or None to drop
        it. An async `fn` is awaited. The last registered match wins; results of other
        operations pass unchanged."""
        self._next.append((operation_matcher(name_or_predicate), fn))

    def _handler(self, operation: Operation) -> NextHandler | None:
        for matches, fn in reversed(self._next):
            if matches(operation):
                return fn
        return None


class GraphQLWsRoute:
    """One routed GraphQL socket (``graphql-transport-ws`` or the legacy
    ``subscriptions-transport-ws``, picked from the client's offer: the first of the two).

    A mock (no `connect_to_server()`) answers ``connection_init`` (see `on_connection_init`),
    ``ping``, keep-alive and every operation itself, with the `on_subscribe` handlers; an
    intercept forwards everything, and its server side's `on_next` handlers rewrite results.
    """

    def __init__(self, ws: WebSocketRoute, name: str = "route_graphql_ws") -> None:
        #: The raw `WebSocketRoute` (page side).
        self.web_socket = ws
        #: ``graphql-transport-ws`` or ``graphql-ws`` (the legacy protocol).
        self.protocol = pick_protocol(ws.protocols) or GRAPHQL_TRANSPORT_WS
        #: Seconds between legacy ``ka`` messages in a mock; None: only the one after the ack.
        self.keep_alive: float | None = KEEP_ALIVE
        #: Seconds a mock on ``graphql-transport-ws`` waits for ``connection_init`` from the
        #: socket's open before it closes with 4408 "Connection initialisation timeout" (3;
        #: None or 0: waits for ever). The legacy protocol has no such rule; an intercept
        #: leaves it to the server.
        self.connection_init_wait_timeout: float | None = CONNECTION_INIT_WAIT_TIMEOUT
        self._name = name
        self._init: InitHook | None = None
        self._subscribe: list[tuple[Callable[[Operation], bool], SubscribeHandler]] = []
        self._server: GraphQLServerSide | None = None
        self._session = GraphQLSession(self.protocol)
        self._intercept: InterceptSession | None = None
        #: Operations whose handler should stop (the client completed them, or they ended).
        self._stopped: set[str] = set()
        self._init_received: asyncio.Event | None = None
        #: The thread of the proxy's loop, which runs the route (`complete` from others waits
        #: for it), and the loop; None when no loop runs here (a unit test).
        self._thread = threading.get_ident()
        self._loop = _running_loop()

    def __repr__(self) -> str:
        return f"<GraphQLWsRoute {self.protocol} {self.url}>"

    @property
    def url(self) -> str:
        return self.web_socket.url

    def on_connection_init(self, fn: InitHook) -> None:
        """Check the client's ``connection_init``: ``fn(payload)`` (sync or async);
        returning False or raising refuses the connection with close 4403 (the legacy
        protocol: a ``connection_error`` first). Without it every init is acknowledged."""
        self._init = fn

    def on_subscribe(self, name_or_predicate: OperationMatch, fn: SubscribeHandler) -> None:
        """Answer the operations (subscriptions, queries, mutations) whose name is
        `name_or_predicate`, or for which that predicate is true: ``fn(operation)`` returns
        one result, or yields several (a generator, sync or async; an async function's result
        is awaited). Each result goes to the client as ``next`` (legacy: ``data``), then the
        route sends ``complete``. Raising sends a GraphQL ``error`` with the exception's text.
        The last registered match wins; an operation no handler matches gets the error
        "no route for operation NAME"."""
        self._subscribe.append((operation_matcher(name_or_predicate), fn))

    def complete(self, id: str) -> None:
        """End operation `id` now: ``complete`` goes to the client and its handler stops.
        From any thread: from another than the proxy's, it is done there, soon."""
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.complete, id)
            return
        self._run(self._session.complete(id))

    def connect_to_server(self) -> GraphQLServerSide:
        """Make this an intercept: connect to the real server (from the route handler) and
        return its side, whose `on_next` rewrites results."""
        if self._server is not None:
            raise Error("Already connected to the server")
        self._server = GraphQLServerSide(self, self.web_socket.connect_to_server())
        return self._server

    # --- the socket ---------------------------------------------------------------------------

    def _start(self) -> None:
        """After the user's handler: accept a mock with its protocol and listen."""
        ws = self.web_socket
        if self._server is None:
            ws.accept(protocol=self.protocol if self.protocol in ws.protocols else None)
            # the socket's tasks (generators, keep-alive) are cancelled when it ends
            ws.on_message(self._mock_message)
            return
        self._intercept = InterceptSession(self.protocol)
        ws.on_message(self._client_message)
        self._server.web_socket.on_message(self._server_message)

    def _log_violation(self, violation: Violation) -> None:
        logger.warning(f"{self.url}: {self._name}: {violation.text}")

    # mock

    async def _init_deadline(self) -> None:
        """A mock on ``graphql-transport-ws``: close with 4408 unless ``connection_init`` comes
        within `connection_init_wait_timeout`. It runs in the route handler's task, which goes
        on after `accept()` as one of the socket's tasks, so it ends with the socket."""
        seconds = self.connection_init_wait_timeout
        if self._server is not None or self._session.legacy or not seconds:
            return
        import asyncio  # here: the package's import stays pure (see the module's docstring)

        self._init_received = asyncio.Event()
        try:
            await asyncio.wait_for(self._init_received.wait(), seconds)
        except TimeoutError:
            commands = self._session.init_timeout()
            if commands:
                logger.info(f"{self.url}: {self._name}: no connection_init within {seconds} s")
            self._run(commands)

    def _mock_message(self, message: str | bytes) -> Awaitable[None] | None:
        return self._run(self._session.receive(message))

    def _run(self, commands: list[Any]) -> Awaitable[None] | None:
        """Carry out the session's commands; what must wait is returned as one coroutine."""
        waits: list[Awaitable[None]] = []
        for command in commands:
            if isinstance(command, Send):
                self.web_socket.send(command.text())
            elif isinstance(command, Close):
                self.web_socket.close(code=command.code, reason=command.reason)
            elif isinstance(command, Violation):
                self._log_violation(command)
            elif isinstance(command, CheckInit):
                wait = self._check_init(command.payload)
                if wait is not None:
                    waits.append(wait)
            elif isinstance(command, StartOperation):
                self._stopped.discard(command.operation.id)
                waits.append(self._operation(command.operation))
            elif isinstance(command, StopOperation):
                self._stopped.add(command.id)
        if not waits:
            return None
        return waits[0] if len(waits) == 1 else _all(waits)

    def _check_init(self, payload: dict[str, Any]) -> Awaitable[None] | None:
        if self._init_received is not None:
            self._init_received.set()
        if self._init is None:
            return self._acked(True)
        try:
            answer = self._init(payload)
        except Exception as e:
            logger.info(f"{self.url}: {self._name}: connection_init refused: {e!r}")
            return self._acked(False)
        if inspect.isawaitable(answer):
            return self._async_init(answer)
        return self._acked(answer is not False)

    async def _async_init(self, answer: Awaitable[Any]) -> None:
        try:
            accepted = (await answer) is not False
        except Exception as e:
            logger.info(f"{self.url}: {self._name}: connection_init refused: {e!r}")
            accepted = False
        wait = self._acked(accepted)
        if wait is not None:
            await wait

    def _acked(self, accepted: bool) -> Awaitable[None] | None:
        self._run(self._session.init_done(accepted))
        if accepted and self._session.legacy and self.keep_alive:
            return self._keep_alive(self.keep_alive)
        return None

    async def _keep_alive(self, interval: float) -> None:
        import asyncio  # here: the package's import stays pure (see the module's docstring)

        while self._session.keep_alive_due():
            await asyncio.sleep(interval)
            self._run(self._session.keep_alive())

    async def _operation(self, operation: Operation) -> None:
        id = operation.id
        fn = self._handler(operation)
        try:
            if fn is None:
                name = operation.operation_name or "(anonymous)"
                self._run(self._session.error(id, f"no route for operation {name}"))
                return
            result = fn(operation)
            if inspect.isawaitable(result):
                result = await result
            if inspect.isasyncgen(result):
                try:
                    async for item in result:
                        if id in self._stopped:
                            break
                        self._run(self._session.next(id, item))
                finally:
                    await result.aclose()
            elif inspect.isgenerator(result):
                try:
                    for item in result:
                        if id in self._stopped:
                            break
                        self._run(self._session.next(id, item))
                finally:
                    result.close()
            else:
                self._run(self._session.next(id, result))
        except Exception as e:
            logger.info(
                f"{self.url}: {self._name}: operation {operation.operation_name} {id} "
                f"raised {e!r}: sent as a GraphQL error"
            )
            self._run(self._session.error(id, str(e) or type(e).__name__))
            return
        self._run(self._session.complete(id))

    def _handler(self, operation: Operation) -> SubscribeHandler | None:
        for matches, fn in reversed(self._subscribe):
            if matches(operation):
                return fn
        return None

    # intercept

    def _client_message(self, message: str | bytes) -> Awaitable[None] | None:
        assert self._intercept is not None and self._server is not None
        for command in self._intercept.from_client(message):
            if isinstance(command, Forward):
                self._server.web_socket.send(command.text)
            elif isinstance(command, CheckInit):
                if self._init is None:
                    self._server.web_socket.send(message)
                else:
                    return self._intercept_init(command.payload, message)
            elif isinstance(command, Violation):
                self._log_violation(command)
            elif isinstance(command, Close):
                self.web_socket.close(code=command.code, reason=command.reason)
        return None

    async def _intercept_init(self, payload: dict[str, Any], message: str | bytes) -> None:
        assert self._init is not None and self._server is not None
        try:
            answer = self._init(payload)
            if inspect.isawaitable(answer):
                answer = await answer
            accepted = answer is not False
        except Exception as e:
            logger.info(f"{self.url}: {self._name}: connection_init refused: {e!r}")
            accepted = False
        if accepted:
            self._server.web_socket.send(message)
            return
        if self._session.legacy:
            error = Send({"type": "connection_error", "payload": {"message": "Forbidden"}})
            self.web_socket.send(error.text())
        self.web_socket.close(code=4403, reason="Forbidden")

    def _server_message(self, message: str | bytes) -> Awaitable[None] | None:
        assert self._intercept is not None and self._server is not None
        for command in self._intercept.from_server(message):
            if isinstance(command, Forward):
                self.web_socket.send(command.text)
            elif isinstance(command, Rewrite):
                fn = self._server._handler(command.operation)
                if fn is None:
                    self.web_socket.send(message)
                else:
                    return self._rewrite(fn, command)
            elif isinstance(command, Violation):
                self._log_violation(command)
            elif isinstance(command, Close):
                self._server.web_socket.close(code=command.code, reason=command.reason)
        return None

    def _rewrite(self, fn: NextHandler, command: Rewrite) -> Awaitable[None] | None:
        try:
            result = fn(command.payload, command.operation)
        except BaseException:
            self.web_socket.send(Send(command.message).text())  # the client still gets it
            raise  # logged with the user's traceback, and a test's handler error
        if inspect.isawaitable(result):
            return self._async_rewrite(result, command)
        self._send_rewritten(result, command)
        return None

    async def _async_rewrite(self, result: Awaitable[Any], command: Rewrite) -> None:
        try:
            rewritten = await result
        except Exception:
            self.web_socket.send(Send(command.message).text())  # the client still gets it
            raise
        self._send_rewritten(rewritten, command)

    def _send_rewritten(self, result: Any, command: Rewrite) -> None:
        if result is None:
            return
        self.web_socket.send(Send({**command.message, "payload": result_payload(result)}).text())


async def _all(waits: list[Awaitable[None]]) -> None:
    for wait in waits:  # pragma: no cover - a start that replaces a running operation
        await wait


class _Handler:
    """The route handler `route_graphql_ws` registers: it runs the user's handler with a
    `GraphQLWsRoute`, then starts it. It carries the user's handler's code and name, so that
    the route is named after it in the log."""

    def __init__(self, handler: GraphQLHandler) -> None:
        if not callable(handler):
            raise TypeError(f"route handler must be callable, not {type(handler).__name__}")
        self.handler = handler
        self.__code__ = getattr(handler, "__code__", None)
        self.__qualname__ = str(getattr(handler, "__qualname__", type(handler).__name__))

    async def __call__(self, ws: WebSocketRoute) -> None:
        route = GraphQLWsRoute(ws, f"route_graphql_ws {self.__qualname__}")
        result = self.handler(route)
        if inspect.isawaitable(result):
            await result
        route._start()
        await route._init_deadline()  # after accept(): one of the socket's tasks


def graphql_route_handler(handler: GraphQLHandler) -> Callable[[WebSocketRoute], Any]:
    """`handler(gql)` as a `route_web_socket` handler."""
    return _Handler(handler)


@overload
def route_graphql_ws(url: URLMatch) -> Callable[[GraphQLHandler], GraphQLHandler]: ...
@overload
def route_graphql_ws(url: URLMatch, handler: GraphQLHandler) -> None: ...
def route_graphql_ws(
    url: URLMatch, handler: GraphQLHandler | None = None
) -> Callable[[GraphQLHandler], GraphQLHandler] | None:
    """Route the GraphQL-over-WebSocket sockets whose URL matches `url` to `handler`, called
    with a `GraphQLWsRoute` (sync or async, before the socket opens). Call it from a route
    script; URL matching as for `route_web_socket`. Without `handler`, a decorator.

    Raises:
        ValueError: `url` is an invalid glob.
        RuntimeError: called outside a route script that ``wsroute_scripts`` loads.
    """
    collector = script_collector("route_graphql_ws")
    return graphql_registrar(url, handler, collector.base_url, collector.routes.append)


def graphql_registrar(
    url: URLMatch, handler: GraphQLHandler | None, base_url: str | None, add: Callable[..., Any]
) -> Callable[[GraphQLHandler], GraphQLHandler] | None:
    """`route_graphql_ws`'s body for any route table (see `registrar`)."""

    def register(h: GraphQLHandler) -> GraphQLHandler:
        registrar(url, graphql_route_handler(h), base_url, add)
        return h

    if handler is None:
        compile_url_match(url, base_url)  # an invalid glob raises here, as for route_web_socket
        return register
    register(handler)
    return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    import asyncio  # here: the package's import stays pure (see the module's docstring)

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
