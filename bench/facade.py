"""The test facade (`mitm_wsroute.testing.WsRouteProxy`): how fast it starts and resets, and what
recording every message costs against mitmdump with the addon (the same routes, no record).

Run alone (``python bench/facade.py [--quick]``) or as part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import proxies
import run
from proxies import ADDON, CLIENT_CPUS, HERE, Proxy, start, start_mitmdump, stop
from websockets.sync.client import connect as sync_connect

from mitm_wsroute.testing import WsRouteProxy


def start_and_reset(repeats: int) -> list[str]:
    """In this process: start to ready, and `reset()` with 100 sockets recorded (medians)."""
    starts, resets = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        proxy = WsRouteProxy().start()
        starts.append(time.perf_counter() - t)
        proxy.route_web_socket("**/r", lambda ws: None)

        for _ in range(100):
            with sync_connect("ws://bench.invalid/r", proxy=proxy.url):
                pass
        assert len(proxy.web_sockets) == 100
        t = time.perf_counter()
        proxy.reset()
        resets.append(time.perf_counter() - t)
        proxy.stop()
    return [
        run.row("test proxy: start to ready (median)", statistics.median(starts) * 1e3, "ms"),
        run.row(
            "test proxy: reset() with 100 sockets (median)", statistics.median(resets) * 1e6, "µs"
        ),
    ]


def start_facade(name: str) -> Proxy:
    cmd = [sys.executable, str(HERE / "facade_proxy.py")]
    proc, port = start(cmd, r"listening at [\d.]+:(\d+)", proxies.PROXY_CPUS)
    return Proxy(name, proc, port)


async def record_cost(upstream: str, confdir: str, repeats: int, quick: bool) -> list[str]:
    """msgs/s through mitmdump with the addon vs the test proxy (recording), per round, then
    the RSS growth of a long socket in each (fresh processes)."""
    lines = []
    for label, url in (("mock echo", "ws://bench.invalid/mock"),
                       ("intercept, no handlers", f"{upstream}/intercept")):  # fmt: skip
        cases: list[run.Case] = [
            (f"{label}, mitmdump with the addon", start_mitmdump("addon", confdir, *ADDON), url),
            (f"{label}, test proxy recording", start_facade("facade"), url),
        ]
        try:
            for line in await run.small_messages(cases, 32, 2000 if quick else 10000, 300, repeats):
                lines.append(line.replace("vs plain", "vs mitmdump with the addon"))
        finally:
            for _, p, _ in cases:
                stop(p.proc)
    n = 10_000 if quick else 100_000
    makers: tuple[tuple[str, Callable[[], Proxy]], ...] = (
        ("mitmdump with the addon", lambda: start_mitmdump("a", confdir, *ADDON)),
        ("test proxy, recording", lambda: start_facade("f")),
    )
    for label, make in makers:
        fresh = make()
        before, after = await run.rss_after(fresh, "ws://bench.invalid/mock", n)
        stop(fresh.proc)
        lines.append(run.row(f"RSS growth over {n:,} mock echoes on one socket, {label}",
                             after - before, "MiB"))  # fmt: skip
    return lines


async def main(quick: bool) -> list[str]:
    lines = await asyncio.to_thread(start_and_reset, 3 if quick else 10)
    echo, echo_port = start([sys.executable, str(HERE / "echo_server.py")], r"port (\d+)",
                            CLIENT_CPUS)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as confdir:
            more = await record_cost(f"ws://127.0.0.1:{echo_port}", confdir, 1 if quick else 5,
                                     quick)  # fmt: skip
    finally:
        stop(echo)
    return lines + more


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one round, fewer messages")
    print(*asyncio.run(main(ap.parse_args().quick)), sep="\n")
