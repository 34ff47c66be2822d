"""route_graphql_ws with Node's GraphQL clients from npm (tests/node/graphql_client.js, a client
that knows nothing of the tests): `graphql-ws` (graphql-transport-ws) and Apollo's legacy
`subscriptions-transport-ws` (subprotocol graphql-ws), ws and wss, through WsRouteProxy and
through mitmdump with a route script; against mocks with no server anywhere, and intercepting a
real Strawberry server (plain and TLS) with one operation rewritten. Also graphql-transport-ws's
4408 "Connection initialisation timeout" for a client whose ``connection_init`` comes late.
The client reads the proxy from HTTPS_PROXY and the CA from NODE_EXTRA_CA_CERTS (or its
``--ca`` option)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mitm_wsroute import GraphQLWsRoute
from mitm_wsroute.graphql_route import CONNECTION_INIT_WAIT_TIMEOUT
from mitm_wsroute.testing import WsRouteProxy
from tests.app_servers import started
from tests.test_graphql_e2e import GraphQLServerThread, mock_api, rewrite_api
from tests.test_socketio_node import BASE_ENV

CLIENT = Path(__file__).resolve().parent / "node" / "graphql_client.js"
CLIENTS = ["graphql-ws", "subscriptions-transport-ws"]
PROTOCOL = {"graphql-ws": "graphql-transport-ws", "subscriptions-transport-ws": "graphql-ws"}
COUNTED = ['count {"count":1}', 'count {"count":2}', 'count {"count":3}', "count complete"]


def node_client(url: str, env: dict[str, str], client: str, *args: str) -> list[str]:
    """Run the Node GraphQL client to the end (killed after 30 s); the lines it printed."""
    out = subprocess.run(
        ["node", str(CLIENT), url, "--client", client, *args],
        env={**BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out.stdout.splitlines()


def results(lines: list[str]) -> list[str]:
    """The operations' lines, without the socket's close (a client's own close races the
    legacy mock's answer to its connection_terminate: 1000 or an empty 1005)."""
    return [line for line in lines if not line.startswith("closed ")]


# --- mocks with no server anywhere ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("client", CLIENTS)
def test_node_client_against_a_mock(proxy: WsRouteProxy, client: str, scheme: str) -> None:
    proxy.route_graphql_ws("**/graphql", mock_api)
    url = f"{scheme}://api.example.com/graphql"
    lines = node_client(url, proxy.env, client, "--token", "secret", "--ops", "count,hello")
    assert results(lines) == [*COUNTED, 'hello {"hello":"ann"}', "hello complete"]
    assert len(lines) == 7  # one socket for both operations
    sock = proxy.wait_for_web_socket("**/graphql")
    assert (sock.routed, sock.protocol) == ("mock", PROTOCOL[client])
    assert sock.wait_for_operation("Count").variables == {"to": 3}
    assert sock.wait_for_operation("Hello").variables == {"name": "ann"}
    assert proxy.handler_errors == []


@pytest.mark.parametrize("client", CLIENTS)
def test_node_client_gets_the_mocks_errors_and_goes_on(proxy: WsRouteProxy, client: str) -> None:
    proxy.route_graphql_ws("**/graphql", mock_api)
    args = ["--token", "secret", "--ops", "news,nope,broken,count"]
    lines = node_client("ws://api.example.com/graphql", proxy.env, client, *args)
    assert results(lines) == [
        'news {"news":"first"}',
        'news {"data":null,"errors":[{"message":"late"}]}',  # a result with errors
        "news complete",
        "nope error no route for operation Nope",  # the error message of each protocol
        "broken error the mock failed",  # a handler that raised
        *COUNTED,  # on the same socket
    ]
    assert len(lines) == len(results(lines)) + 1


@pytest.mark.parametrize("client", CLIENTS)
def test_node_client_runs_operations_at_once_on_one_socket(
    proxy: WsRouteProxy, client: str
) -> None:
    proxy.route_graphql_ws("**/graphql", mock_api)
    args = ["--token", "secret", "--parallel", "--ops", "count,news,hello,nope"]
    lines = node_client("ws://api.example.com/graphql", proxy.env, client, *args)
    by_operation: dict[str, list[str]] = {}
    for line in results(lines):
        by_operation.setdefault(line.split()[0], []).append(line)
    assert by_operation == {
        "count": COUNTED,
        "news": [
            'news {"news":"first"}',
            'news {"data":null,"errors":[{"message":"late"}]}',
            "news complete",
        ],
        "hello": ['hello {"hello":"ann"}', "hello complete"],
        "nope": ["nope error no route for operation Nope"],
    }
    assert len(lines) == len(results(lines)) + 1  # one socket
    sock = proxy.wait_for_web_socket("**/graphql")
    started = {sock.wait_for_operation(lambda op: True).operation_name for _ in range(4)}
    assert started == {"Count", "News", "Hello", "Nope"}


@pytest.mark.parametrize(
    ("client", "keep_alive", "kept"),
    [
        pytest.param("graphql-ws", "50", "pongs 3", id="graphql-ws"),
        pytest.param("subscriptions-transport-ws", "300", "ka 10 open", id="legacy"),
    ],
)
def test_node_client_keep_alive_and_a_mutation(
    proxy: WsRouteProxy, client: str, keep_alive: str, kept: str
) -> None:
    """graphql-ws's client pings every 50 ms and gets its pongs; the legacy client, which drops
    a connection without a `ka` for 300 ms, stays over ten of them (every 50 ms here)."""

    def api(gql: GraphQLWsRoute) -> None:
        mock_api(gql)
        gql.keep_alive = 0.05
        gql.on_subscribe("Rename", lambda op: {"rename": op.variables["name"].upper()})

    proxy.route_graphql_ws("**/graphql", api)
    args = ["--token", "secret", "--keep-alive", keep_alive, "--ops", "rename,count"]
    lines = node_client("wss://api.example.com/graphql", proxy.env, client, *args)
    assert results(lines) == [kept, 'rename {"rename":"ANN"}', "rename complete", *COUNTED]


@pytest.mark.parametrize("client", CLIENTS)
def test_node_client_refused_at_connection_init(proxy: WsRouteProxy, client: str) -> None:
    proxy.route_graphql_ws("**/graphql", mock_api)
    lines = node_client("wss://api.example.com/graphql", proxy.env, client,
                        "--token", "wrong", "--ops", "count")  # fmt: skip
    if client == "graphql-ws":
        assert lines == ["closed 4403 Forbidden", "count error Forbidden"]
    else:  # the legacy client reports the connection_error; the operation never ends
        assert lines == ["connection_error Forbidden", "closed 4403 Forbidden"]


def test_node_client_too_slow_to_initialise_gets_4408(proxy: WsRouteProxy) -> None:
    """graphql-ws's client sends connection_init once its connectionParams resolve: 1 s here,
    past the route's connection_init_wait_timeout of 0.2 s."""
    timeouts: list[float] = []

    def api(gql: GraphQLWsRoute) -> None:
        assert gql.connection_init_wait_timeout == CONNECTION_INIT_WAIT_TIMEOUT == 3.0
        if timeouts:
            gql.connection_init_wait_timeout = timeouts[-1]
        mock_api(gql)

    proxy.route_graphql_ws("**/graphql", api)
    url = "ws://api.example.com/graphql"
    late = ["--token", "secret", "--init-delay", "1000", "--ops", "count"]
    timeouts.append(0.2)
    assert node_client(url, proxy.env, "graphql-ws", *late) == [
        "closed 4408 Connection initialisation timeout",
        "count error Connection initialisation timeout",
    ]
    sock = proxy.wait_for_web_socket("**/graphql")
    sock.wait_for_close()
    assert (sock.close_code, sock.messages) == (4408, [])
    # the legacy protocol has no such timeout
    assert results(node_client(url, proxy.env, "subscriptions-transport-ws", *late)) == COUNTED
    # in time for the default of 3 s
    timeouts.clear()
    soon = ["--token", "secret", "--init-delay", "100", "--ops", "count"]
    assert results(node_client(url, proxy.env, "graphql-ws", *soon)) == COUNTED


# --- an intercept of a real Strawberry server ------------------------------------------------


@pytest.fixture
def graphql_server(tmp_path: Path) -> Iterator[Any]:
    """``graphql_server(tls=False)`` starts a Strawberry server; all are stopped after."""
    with started(GraphQLServerThread, tmp_path) as start:
        yield start


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("client", CLIENTS)
def test_node_client_intercept_rewrites_one_operation(
    proxy: WsRouteProxy, graphql_server: Any, client: str, tls: bool
) -> None:
    server = graphql_server(tls)
    proxy.route_graphql_ws("**/graphql", rewrite_api)  # Count's results times ten
    # Strawberry serves queries over the legacy protocol's socket only to subscriptions
    ops = "count,news,hello" if client == "graphql-ws" else "count,news"
    lines = node_client(server.url, proxy.env, client, "--ops", ops)
    assert results(lines) == [
        'count {"count":10}',
        'count {"count":20}',
        'count {"count":30}',
        "count complete",
        'news {"news":"real news"}',  # forwarded unchanged
        "news complete",
        *(['hello {"hello":"hello ann"}', "hello complete"] if client == "graphql-ws" else []),
    ]
    sock = proxy.wait_for_web_socket("**/graphql")
    assert (sock.routed, sock.protocol) == ("intercept", PROTOCOL[client])
    assert sock.wait_for_operation("News").operation_name == "News"
    assert proxy.handler_errors == []


# --- through mitmdump and a route script ------------------------------------------------------

SCRIPT = """
from mitm_wsroute import route_graphql_ws
from tests.test_graphql_e2e import mock_api, rewrite_api


@route_graphql_ws("**/graphql")
def api(gql):
    if "127.0.0.1" in gql.url:
        rewrite_api(gql)  # the real server
    else:
        mock_api(gql)  # no server anywhere
"""


def test_route_script_mock_and_intercept_through_mitmdump(
    mitmdump: Any, graphql_server: Any
) -> None:
    proc = mitmdump(SCRIPT)
    ca = str(proc.confdir / "mitmproxy-ca-cert.pem")
    env = {"HTTPS_PROXY": proc.proxy}  # the CA by --ca, not NODE_EXTRA_CA_CERTS
    mock = "wss://api.example.com/graphql"
    for client in CLIENTS:
        lines = node_client(mock, env, client, "--ca", ca, "--token", "secret", "--ops", "count")
        assert results(lines) == COUNTED
    server = graphql_server()
    for client in CLIENTS:
        lines = node_client(server.url, env, client, "--ops", "count")
        assert results(lines) == [line.replace("}", "0}") for line in COUNTED]  # x 10
