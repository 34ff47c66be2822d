"""A Python app (python-websockets over wss) tested through the proxy, with the `wsroute` fixture.

The app runs as its own process, as it would in production; `wsroute.env` points it at the
proxy (``HTTPS_PROXY``) and makes it trust the proxy's CA (``SSL_CERT_FILE``). The first test
mocks a server that does not exist; the second intercepts a real one and rewrites its answers.
"""

import os
import subprocess
import sys
import threading

from websockets.sync.server import serve

# The app: subscribe, print every update until the server closes.
APP = """
import sys
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed

with connect(sys.argv[1]) as ws:  # proxy and CA come from the environment
    ws.send("subscribe")
    try:
        for update in ws:
            print(update)
    except ConnectionClosed as closed:
        print(f"closed {closed.rcvd.code if closed.rcvd else 1006}")
    else:
        print(f"closed {ws.close_code}")
"""


def run_app(url, env):
    out = subprocess.run(
        [sys.executable, "-c", APP, url],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.splitlines(), out.stderr


def test_mocked_server(wsroute):
    @wsroute.route_web_socket("wss://api.example.com/updates")
    def updates(ws):
        ws.on_message(lambda m: [ws.send("v1"), ws.send("v2"), ws.close(code=1000)])

    lines, errors = run_app("wss://api.example.com/updates", wsroute.env)
    assert lines == ["v1", "v2", "closed 1000"], errors
    sock = wsroute.wait_for_web_socket()
    assert sock.wait_for_message(direction="sent").payload == "subscribe"


def test_intercepted_server(wsroute):
    def real_server(ws):
        ws.recv()
        ws.send("price 10")
        ws.send("price 11")
        ws.close()

    with serve(real_server, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]

        @wsroute.route_web_socket(f"ws://127.0.0.1:{port}/")
        def rewrite(ws):
            upstream = ws.connect_to_server()
            upstream.on_message(lambda m: ws.send(m.replace("price", "PRICE")))

        lines, errors = run_app(f"ws://127.0.0.1:{port}/", wsroute.env)
        server.shutdown()
    assert lines == ["PRICE 10", "PRICE 11", "closed 1000"], errors
    assert wsroute.wait_for_web_socket().routed == "intercept"
