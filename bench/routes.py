"""Route script of the benchmark."""

from mitm_wsroute import WebSocketRoute, route_web_socket


@route_web_socket("**/intercept")
def intercept(ws: WebSocketRoute) -> None:
    ws.connect_to_server()


@route_web_socket("**/handlers")
def handlers(ws: WebSocketRoute) -> None:
    server = ws.connect_to_server()
    ws.on_message(server.send)
    server.on_message(ws.send)


@route_web_socket("**/mock")
def mock(ws: WebSocketRoute) -> None:
    ws.on_message(ws.send)
