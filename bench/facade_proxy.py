"""A `WsRouteProxy` (the test facade, recording every message) with the bench's routes, as a
process of its own, so that it is measured like mitmdump. Runs until killed."""

import threading
from pathlib import Path

from mitm_wsroute.testing import WsRouteProxy

proxy = WsRouteProxy(scripts=[Path(__file__).resolve().parent / "routes.py"]).start()
print(f"listening at 127.0.0.1:{proxy.port}", flush=True)
threading.Event().wait()
