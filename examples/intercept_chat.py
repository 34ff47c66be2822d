"""An intercept: connect to the real server, rewrite and filter both directions.

Playwright's own "should work with server" scenario, for any client of the proxy:

    mitmdump -s addons/wsroute.py --set wsroute_scripts=examples/intercept_chat.py
"""

from mitm_wsroute import WebSocketRoute, route_web_socket


@route_web_socket("**/echo-intercepted")
def intercept(ws: WebSocketRoute) -> None:
    server = ws.connect_to_server()

    def from_client(message: str | bytes) -> None:
        if message == "to-respond":
            ws.send("response")  # answered by the route, the server never sees it
        elif message == "to-block":
            pass  # dropped
        elif message == "to-modify":
            server.send("modified")
        else:
            server.send(message)

    def from_server(message: str | bytes) -> None:
        if message == "to-block":
            pass
        elif message == "modified":
            ws.send("modified again")
        else:
            ws.send(message)

    ws.on_message(from_client)
    server.on_message(from_server)
    server.send("fake")  # queued until the upstream is open, then sent first
