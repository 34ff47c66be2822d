"""mitm_wsroute: Playwright's `WebSocketRoute` for every client that goes through mitmproxy.

A route script::

    from mitm_wsroute import WebSocketRoute, route_web_socket

    @route_web_socket("wss://example.com/ws")
    def handle(ws: WebSocketRoute) -> None:
        ws.on_message(lambda m: ws.send("response") if m == "request" else None)

run with ``mitmdump -s addons/wsroute.py --set wsroute_scripts=routes.py``.
"""

from .connection import Error
from .graphql_route import GraphQLServerSide, GraphQLWsRoute, route_graphql_ws
from .graphql_ws import Operation
from .harroute import route_from_har
from .headers import Headers
from .route import WebSocketRoute
from .router import route_web_socket
from .socketio_route import SocketIORoute, SocketIOServer, route_socket_io
from .urlmatch import URLMatch

__all__ = [
    "Error",
    "GraphQLServerSide",
    "GraphQLWsRoute",
    "Headers",
    "Operation",
    "SocketIORoute",
    "SocketIOServer",
    "URLMatch",
    "WebSocketRoute",
    "route_from_har",
    "route_graphql_ws",
    "route_socket_io",
    "route_web_socket",
]
