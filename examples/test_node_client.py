"""A Node app (`ws`, proxy from HTTPS_PROXY) against a feed that does not exist: the test mocks it.

Copy this shape for any client you can start as a process: `wsroute.env` points it at the proxy
and makes it trust the proxy's CA (``NODE_EXTRA_CA_CERTS`` here). `make test` installs `ws` from
npm into ``examples/node/node_modules``.
"""

import json
import os
import subprocess
from pathlib import Path

APP = Path(__file__).resolve().parent / "node" / "app.js"


def test_node_app_gets_the_mocked_feed(wsroute):
    @wsroute.route_web_socket("wss://prices.example.com/feed")
    def feed(ws):
        def on_message(message):
            if json.loads(message) == {"subscribe": "prices"}:
                ws.send(json.dumps({"EURUSD": 1.08}))
                ws.send(b"\x01\x02")
                ws.close(code=4000, reason="market closed")

        ws.on_message(on_message)

    out = subprocess.run(
        ["node", str(APP), "wss://prices.example.com/feed"],
        env={**os.environ, **wsroute.env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.splitlines() == [
        'text {"EURUSD": 1.08}',
        "binary 0102",
        "close 4000 market closed",
    ], out.stderr
    sock = wsroute.wait_for_web_socket("**/feed")
    assert sock.routed == "mock"
    assert sock.wait_for_message(direction="sent").payload == '{"subscribe":"prices"}'
