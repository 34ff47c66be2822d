"""route_graphql_ws end to end: real GraphQL clients (gql, over python-websockets) through a
real proxy (`WsRouteProxy`, and mitmdump with a route script), against mocks with no server
anywhere, and intercepting a real Strawberry server (aiohttp) with one operation rewritten.

gql offers both subprotocols by default, the legacy ``graphql-ws`` first; a test that means
one protocol offers it alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
import strawberry
from aiohttp import web
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError, TransportServerError
from gql.transport.websockets import WebsocketsTransport
from strawberry.aiohttp.views import GraphQLView
from websockets.asyncio.client import connect

from mitm_wsroute import GraphQLWsRoute, Operation
from mitm_wsroute.testing.async_api import WsRouteProxy as AsyncWsRouteProxy
from tests.app_servers import AppThread

NEW, LEGACY = "graphql-transport-ws", "graphql-ws"
COUNT = "subscription Count($to: Int!) { count(to: $to) }"
NEWS = "subscription News { news }"
HELLO = "query Hello($name: String!) { hello(name: $name) }"


def transport(
    url: str, proxy: str, protocols: list[str] | None, ca: Any = None, **kw: Any
) -> WebsocketsTransport:
    tls: ssl.SSLContext | bool = False
    if url.startswith("wss:"):
        tls = ssl.create_default_context(cafile=str(ca))
    return WebsocketsTransport(
        url=url, ssl=tls, subprotocols=protocols, connect_args={"proxy": proxy}, **kw
    )


async def collect(t: WebsocketsTransport, *requests: tuple[str, dict[str, Any]]) -> list[Any]:
    """Run the operations one after the other on one connection: each one's results."""
    out: list[Any] = []
    async with Client(transport=t) as session:
        for query, variables in requests:
            request = GraphQLRequest(query, variable_values=variables)
            if query.startswith("subscription"):
                out.append([r async for r in session.subscribe(request)])
            else:
                out.append(await session.execute(request))
    return out


# --- mocks through WsRouteProxy --------------------------------------------------------------


def mock_api(gql: GraphQLWsRoute) -> None:
    gql.on_connection_init(lambda payload: payload.get("token") == "secret")

    async def count(op: Operation) -> AsyncGenerator[dict[str, int], None]:
        for i in range(1, op.variables["to"] + 1):
            yield {"count": i}

    def news(op: Operation) -> Any:  # a sync generator of full results
        yield {"data": {"news": "first"}}
        yield {"data": None, "errors": [{"message": "late"}]}

    def broken(op: Operation) -> None:
        raise RuntimeError("the mock failed")

    gql.on_subscribe("Count", count)
    gql.on_subscribe("News", news)
    gql.on_subscribe(lambda op: "hello" in op.query, lambda op: {"hello": op.variables["name"]})
    gql.on_subscribe("Broken", broken)


@pytest.mark.parametrize(("scheme", "protocol"), [("wss", NEW), ("ws", LEGACY)])
async def test_mock_serves_a_real_client(
    async_wsroute: AsyncWsRouteProxy, scheme: str, protocol: str
) -> None:
    async_wsroute.route_graphql_ws("**/graphql", mock_api)
    url = f"{scheme}://api.example.com/graphql"
    t = transport(url, async_wsroute.url, [protocol], async_wsroute.ca_cert,
                  init_payload={"token": "secret"})  # fmt: skip
    count, hello = await collect(t, (COUNT, {"to": 3}), (HELLO, {"name": "ann"}))
    assert count == [{"count": 1}, {"count": 2}, {"count": 3}]
    assert hello == {"hello": "ann"}
    sock = await async_wsroute.wait_for_web_socket("**/graphql")
    assert (sock.routed, sock.protocol) == ("mock", protocol)
    op = await sock.wait_for_operation("Count")
    assert (op.operation_name, op.variables) == ("Count", {"to": 3})
    assert op.query.split() == COUNT.replace("{", " { ").split()  # as gql prints it
    assert (await sock.wait_for_operation("Hello")).variables == {"name": "ann"}
    await sock.wait_for_close()
    with pytest.raises(TimeoutError, match="no GraphQL operation 'Count'"):
        await sock.wait_for_operation("Count", timeout=0.1)  # the cursor moved past it


@pytest.mark.parametrize("protocol", [NEW, LEGACY])
async def test_mock_errors_unrouted_operations_and_a_sync_generator(
    async_wsroute: AsyncWsRouteProxy, protocol: str
) -> None:
    async_wsroute.route_graphql_ws("ws://api.example.com/graphql", mock_api)
    url = "ws://api.example.com/graphql"

    async def one(query: str) -> Any:
        t = transport(url, async_wsroute.url, [protocol], init_payload={"token": "secret"})
        async with Client(transport=t) as session:
            request = GraphQLRequest(query)
            if query.startswith("subscription"):
                return [r async for r in session.subscribe(request)]
            return await session.execute(request)

    with pytest.raises(TransportQueryError, match="no route for operation Nope"):
        await one("query Nope { nope }")
    with pytest.raises(TransportQueryError, match="the mock failed"):
        await one("subscription Broken { broken }")
    with pytest.raises(TransportQueryError, match="late"):  # a result with errors raises
        await one(NEWS)


@pytest.mark.parametrize("protocol", [NEW, LEGACY])
async def test_connection_init_refused_closes_4403(
    async_wsroute: AsyncWsRouteProxy, protocol: str
) -> None:
    async_wsroute.route_graphql_ws("ws://api.example.com/graphql", mock_api)
    t = transport("ws://api.example.com/graphql", async_wsroute.url, [protocol],
                  init_payload={"token": "wrong"})  # fmt: skip
    with pytest.raises((TransportServerError, Exception)) as info:
        await collect(t, (COUNT, {"to": 1}))
    sock = await async_wsroute.wait_for_web_socket()
    await sock.wait_for_close()
    assert sock.close_code == 4403
    if protocol == LEGACY:
        assert "Forbidden" in str(info.value)  # gql reports the connection_error's payload
        assert json.loads(sock.messages[-1].payload)["type"] == "connection_error"


async def test_raw_client_ping_pong_and_malformed_message_closes_4400(
    async_wsroute: AsyncWsRouteProxy, caplog: pytest.LogCaptureFixture
) -> None:
    def api(gql: GraphQLWsRoute) -> None:
        gql.on_subscribe("Count", lambda op: {"count": 1})

    async_wsroute.route_graphql_ws("ws://api.example.com/graphql", api)
    url = "ws://api.example.com/graphql"
    caplog.set_level(logging.WARNING, logger="mitm_wsroute.graphql_route")
    async with connect(url, proxy=async_wsroute.url, subprotocols=[NEW]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "ping", "payload": {"n": 1}}))
        assert json.loads(await ws.recv()) == {"type": "pong", "payload": {"n": 1}}
        await ws.send('{"type": "subscribe"}')
        await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (
            4400,
            "malformed message from the client: 'subscribe' without a string 'id'",
        )
    assert ".api: malformed message from the client" in caplog.text  # the route, named
    # the proxy goes on
    t = transport(url, async_wsroute.url, [NEW])
    assert await collect(t, (COUNT, {"to": 1})) == [[{"count": 1}]]


# --- a real GraphQL server for intercepts ----------------------------------------------------


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str) -> str:
        return f"hello {name}"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, to: int) -> AsyncGenerator[int, None]:
        for i in range(1, to + 1):
            yield i

    @strawberry.subscription
    async def news(self) -> AsyncGenerator[str, None]:
        yield "real news"


class GraphQLServerThread(AppThread):
    """A Strawberry server with subscriptions (both protocols), plain or TLS: `url`, its ws(s)
    URL."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        schema = strawberry.Schema(query=Query, subscription=Subscription)
        app = web.Application()
        app.router.add_route("*", "/graphql", GraphQLView(schema=schema))
        super().__init__(app, tls)
        self.url = f"{'wss' if tls else 'ws'}://{self.host}:{self.port}/graphql"


@pytest.fixture
def graphql_server() -> Iterator[str]:
    server = GraphQLServerThread()
    yield server.url
    server.stop()


def rewrite_api(gql: GraphQLWsRoute) -> None:
    server = gql.connect_to_server()
    server.on_next("Count", lambda result, op: {"count": result["data"]["count"] * 10})


@pytest.mark.parametrize("protocol", [NEW, LEGACY])
async def test_intercept_rewrites_one_operation_of_a_real_server(
    async_wsroute: AsyncWsRouteProxy, graphql_server: str, protocol: str
) -> None:
    async_wsroute.route_graphql_ws("**/graphql", rewrite_api)
    t = transport(graphql_server, async_wsroute.url, [protocol])
    # Strawberry serves queries over the legacy protocol's socket only to subscriptions
    hello = [(HELLO, {"name": "bo"})] if protocol == NEW else []
    count, news, *rest = await collect(t, (COUNT, {"to": 3}), (NEWS, {}), *hello)
    assert count == [{"count": 10}, {"count": 20}, {"count": 30}]
    assert news == [{"news": "real news"}]
    assert rest == ([{"hello": "hello bo"}] if hello else [])
    sock = await async_wsroute.wait_for_web_socket()
    assert (sock.routed, sock.protocol) == ("intercept", protocol)


async def test_intercept_drops_results_and_checks_init(
    async_wsroute: AsyncWsRouteProxy, graphql_server: str
) -> None:
    def api(gql: GraphQLWsRoute) -> None:
        gql.on_connection_init(lambda payload: payload.get("token") == "ok")
        server = gql.connect_to_server()

        async def odd_only(result: dict[str, Any], op: Operation) -> Any:
            return result if result["data"]["count"] % 2 else None

        server.on_next(lambda op: op.variables.get("to") == 4, odd_only)

    async_wsroute.route_graphql_ws("**/graphql", api)
    t = transport(graphql_server, async_wsroute.url, [NEW], init_payload={"token": "ok"})
    assert await collect(t, (COUNT, {"to": 4}), (COUNT, {"to": 2})) == [
        [{"count": 1}, {"count": 3}],
        [{"count": 1}, {"count": 2}],
    ]
    t = transport(graphql_server, async_wsroute.url, [NEW], init_payload={"token": "no"})
    with pytest.raises(Exception):  # noqa: B017 - gql reports the close its own way
        await collect(t, (COUNT, {"to": 1}))
    socks = async_wsroute.web_sockets
    await socks[-1].wait_for_close()
    assert socks[-1].close_code == 4403


async def test_intercept_malformed_server_message_closes_4400(
    async_wsroute: AsyncWsRouteProxy, caplog: pytest.LogCaptureFixture
) -> None:
    async def bad_server(ws: Any) -> None:
        await ws.recv()
        await ws.send('{"type": "connection_ack"}')
        await ws.send('{"type": "next", "id": "1"}')
        await ws.wait_closed()

    from websockets.asyncio.server import serve

    async with serve(bad_server, "127.0.0.1", 0, subprotocols=[NEW]) as server:  # type: ignore[list-item]
        port = next(iter(server.sockets)).getsockname()[1]
        async_wsroute.route_graphql_ws("**/graphql", rewrite_api)
        url = f"ws://127.0.0.1:{port}/graphql"
        async with connect(url, proxy=async_wsroute.url, subprotocols=[NEW]) as ws:  # type: ignore[list-item]
            await ws.send('{"type": "connection_init"}')
            assert json.loads(await ws.recv()) == {"type": "connection_ack"}
            await ws.wait_closed()
            assert ws.close_code == 4400
    assert "route_graphql_ws rewrite_api: malformed message from the server" in caplog.text


# --- through mitmdump and a route script -----------------------------------------------------

SCRIPT = """
from mitm_wsroute import route_graphql_ws


@route_graphql_ws("**/graphql*")
def api(gql):
    if "real" in gql.url:
        server = gql.connect_to_server()
        server.on_next("Count", lambda result, op: {"count": -result["data"]["count"]})
        return

    async def count(op):
        for i in range(op.variables["to"]):
            yield {"count": i}

    gql.on_subscribe("Count", count)
"""


async def test_route_script_mock_and_intercept_through_mitmdump(
    mitmdump: Any, graphql_server: str
) -> None:
    proc = mitmdump(SCRIPT)
    ca = proc.confdir / "mitmproxy-ca-cert.pem"
    # a mock with no server anywhere, wss, gql's default offer (the legacy protocol first)
    t = transport("wss://nowhere.example/graphql", proc.proxy, None, ca)
    assert await collect(t, (COUNT, {"to": 2})) == [[{"count": 0}, {"count": 1}]]
    t = transport("ws://nowhere.example/graphql", proc.proxy, [NEW])
    assert await collect(t, (COUNT, {"to": 1})) == [[{"count": 0}]]
    # an intercept of the real server ("real" in its query string)
    t = transport(f"{graphql_server}?real=1", proc.proxy, [NEW])
    assert await collect(t, (COUNT, {"to": 2}), (NEWS, {})) == [
        [{"count": -1}, {"count": -2}],
        [{"news": "real news"}],
    ]


@pytest.mark.parametrize("protocol", [NEW, LEGACY])
async def test_client_unsubscribing_stops_an_endless_generator(
    async_wsroute: AsyncWsRouteProxy, protocol: str
) -> None:
    stopped = threading.Event()

    def api(gql: GraphQLWsRoute) -> None:
        async def endless(op: Operation) -> AsyncGenerator[dict[str, int], None]:
            try:
                i = 0
                while True:
                    i += 1
                    yield {"count": i}
                    await asyncio.sleep(0.01)  # a feed's pace, not a synchronisation
            finally:
                stopped.set()

        gql.on_subscribe("Count", endless)

    async_wsroute.route_graphql_ws("**/graphql", api)
    t = transport("ws://api.example.com/graphql", async_wsroute.url, [protocol])
    async with Client(transport=t) as session:
        seen = []
        async for result in session.subscribe(GraphQLRequest(COUNT, variable_values={"to": 0})):
            seen.append(result["count"])
            if len(seen) == 3:
                break  # gql sends complete (legacy: stop)
        assert seen == [1, 2, 3]
        assert await asyncio.to_thread(stopped.wait, 5)  # while the socket is still open
    sock = await async_wsroute.wait_for_web_socket()
    assert (
        json.loads((await sock.wait_for_message(re.compile('"(complete|stop)"'))).payload)["id"]
        == "1"
    )


async def test_complete_from_another_thread_ends_the_operation(
    async_wsroute: AsyncWsRouteProxy,
) -> None:
    """`complete(id)` called from a thread that is not the proxy's (the test's own): done on
    the proxy's thread (the session is not thread-safe); the client gets ``complete`` after
    the results so far, and the handler stops."""
    routes: list[tuple[GraphQLWsRoute, str]] = []
    started, stopped = threading.Event(), threading.Event()
    threads: dict[str, int] = {}

    def api(gql: GraphQLWsRoute) -> None:
        threads["proxy"] = threading.get_ident()
        session_complete = gql._session.complete

        def complete(id: str) -> Any:
            threads["complete"] = threading.get_ident()
            return session_complete(id)

        gql._session.complete = complete  # type: ignore[method-assign]

        async def endless(op: Operation) -> AsyncGenerator[dict[str, int], None]:
            routes.append((gql, op.id))
            try:
                yield {"count": 1}
                started.set()
                await asyncio.Event().wait()  # until completed
            finally:
                stopped.set()

        gql.on_subscribe("Count", endless)

    async_wsroute.route_graphql_ws("**/graphql", api)
    t = transport("ws://api.example.com/graphql", async_wsroute.url, [NEW])

    async def complete_when_started() -> None:
        assert await asyncio.to_thread(started.wait, 5)
        gql, id = routes[0]
        await asyncio.to_thread(gql.complete, id)  # from a thread of the test's

    completing = asyncio.get_running_loop().create_task(complete_when_started())
    assert await asyncio.wait_for(collect(t, (COUNT, {"to": 0})), 10) == [[{"count": 1}]]
    await completing
    assert await asyncio.to_thread(stopped.wait, 5)
    assert threads["complete"] == threads["proxy"]


# --- record, then replay by operation ------------------------------------------------------


async def test_record_then_replay_by_operation_with_the_clients_own_ids(
    graphql_server: str, tmp_path: Any
) -> None:
    """Recorded against Strawberry: Count to 2 (id "1"), then Count to 3 (id "2"). Replayed
    with ``match="graphql"`` to a client that subscribes to Count to 3 only: with its own id,
    "1", it gets the results recorded for "2"; an exact replay does not answer it."""
    har = tmp_path / "graphql.har"
    async with AsyncWsRouteProxy() as p:
        p.route_from_har(har, update=True)
        t = transport(graphql_server, p.url, [NEW])
        assert await collect(t, (COUNT, {"to": 2}), (COUNT, {"to": 3})) == [
            [{"count": 1}, {"count": 2}],
            [{"count": 1}, {"count": 2}, {"count": 3}],
        ]
    for match in ("exact", "graphql"):
        async with AsyncWsRouteProxy() as p:
            p.route_from_har(har, match=match)
            t = transport(graphql_server, p.url, [NEW])
            got = asyncio.wait_for(collect(t, (COUNT, {"to": 3})), 2 if match == "exact" else 10)
            if match == "exact":
                with pytest.raises(TimeoutError):
                    await got
                continue
            assert await got == [[{"count": 1}, {"count": 2}, {"count": 3}]]
            assert (await p.wait_for_web_socket()).routed == "mock"
            assert p.handler_errors == []
