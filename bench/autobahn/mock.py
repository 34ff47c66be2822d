"""Route script of `make autobahn`: every socket mocked by an echo."""

from mitm_wsroute import WebSocketRoute, route_web_socket


@route_web_socket("**")
def echo(ws: WebSocketRoute) -> None:
    ws.on_message(ws.send)
