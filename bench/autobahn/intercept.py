"""Route script of `make autobahn`: every socket intercepted, no handlers."""

from mitm_wsroute import WebSocketRoute, route_web_socket


@route_web_socket("**")
def intercept(ws: WebSocketRoute) -> None:
    ws.connect_to_server()
