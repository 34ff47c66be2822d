"""A mock: a chat server that does not exist. No connection ever leaves the proxy.

mitmdump -s addons/wsroute.py --set wsroute_scripts=examples/mock_chat.py
"""

import json
import logging

from mitm_wsroute import WebSocketRoute, route_web_socket

log = logging.getLogger(__name__)


@route_web_socket("ws://chat.invalid/**")
def chat(ws: WebSocketRoute) -> None:
    ws.send(json.dumps({"type": "welcome", "protocols": ws.protocols}))

    def on_message(message: str | bytes) -> None:
        if message == "bye":
            ws.close(code=4001, reason="mock says bye")
        elif isinstance(message, bytes):
            ws.send(message[::-1])  # binary stays binary
        else:
            ws.send(f"echo: {message}")

    ws.on_message(on_message)
    ws.on_close(lambda code, reason: log.info(f"client closed the mock: {code} {reason!r}"))
