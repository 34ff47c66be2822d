"""CPU instructions the proxy executes per echo, counted by valgrind's callgrind.

Timings on a shared machine move from run to run; instruction counts do not (the same count,
to a few parts in ten thousand, whatever else the machine does), except where the proxy
acts on the clock: a mock's coalesced ``update`` hooks (at most one per 0.2 s) would fall
more often on each echo the slower the run, but only where an addon has an ``update`` hook
(none of mitmdump's has one, and since 5e2b898 nothing is then called). Each
case runs ``mitmdump`` under callgrind, warms up, zeroes the counters (``callgrind_control
-z``), does `n` sequential echoes of one message size, and dumps the counters
(``callgrind_control -d``): the count covers exactly those echoes, the whole proxy included
(event loop, layers, every addon's hooks, wsproto, our code). Cases run in parallel, one per
CPU: counts do not depend on it.

Used by run.py when valgrind is installed; runs alone too (``python bench/instructions.py``).
``--upstream NAME`` (repeatable) runs every mitmdump with mitmproxy changed as proposed in
upstream/NAME/ (see bench/upstream_patches.py): what the proxy would cost with it. ``--only
TEXT`` (repeatable) keeps the cases whose label contains one of the texts. ``--wss`` echoes
over wss:// (TLS between the client and the proxy, and between the proxy and the echo
server), without permessage-deflate as over ws://.
``--batch B`` has the client send B messages before it reads their echoes, each in a write of
its own (a TLS record each over wss), as Node's ``ws`` does when it sends in a loop: the proxy
then reads many frames at once, and what it costs per message stands out from what it costs
per read. How the frames fall into reads varies a little from run to run, and so do these
counts (by well under 1 %).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import proxies
import upstream_patches
from proxies import ADDON, CPUS, HERE, start, start_mitmdump, stop
from websockets.asyncio.client import connect


def cases(upstream: str) -> list[tuple[str, tuple[str, ...], str]]:
    """`proxies.cases`, and beside the plain one a socket that the addon sees but no route
    matches: what loading the addon costs by itself."""
    timed = proxies.cases(upstream)
    return [
        timed[0],
        ("mitmdump with the addon, socket not routed", ADDON, timed[0][2]),
        *timed[1:],
    ]


async def _count(
    out: str, confdir: str, args: tuple[str, ...], url: str, size: int, n: int, batch: int
) -> int:
    prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg", sys.executable)
    proxy = start_mitmdump("callgrind", confdir, *args, prefix=prefix, cpus=set(CPUS))
    assert proxy.proc is not None
    pid = str(proxy.proc.pid)
    try:
        payload = "x" * size
        tls = None
        if url.startswith("wss:"):  # trust mitmproxy's CA, which signs what a mock answers with
            tls = ssl.create_default_context(cafile=str(Path(confdir, "mitmproxy-ca-cert.pem")))
        async with connect(url, proxy=proxy.url, compression=None, max_size=None, ssl=tls,
                           ping_interval=None, open_timeout=300) as ws:  # fmt: skip
            await _echoes(ws, payload, 20, batch)  # warm-up: first-message paths, caches
            subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
            await _echoes(ws, payload, n, batch)
            subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
        dump = Path(out, "cg.1")  # the dump; the profile at exit goes to cg
        return int(re.search(r"^summary: (\d+)", dump.read_text(), re.M).group(1))  # type: ignore[union-attr]
    finally:
        stop(proxy.proc)


async def _echoes(ws: Any, payload: str, n: int, batch: int) -> None:
    """`n` echoes, `batch` messages sent before their echoes are read."""
    for start_at in range(0, n, batch):
        todo = min(batch, n - start_at)
        for _ in range(todo):
            await ws.send(payload)
        for _ in range(todo):
            await ws.recv()


def per_echo(
    confdir: str,
    upstream: str,
    size: int,
    n: int,
    extra: tuple[str, ...] = (),
    only: tuple[str, ...] = (),
    batch: int = 1,
) -> list[tuple[str, float]]:
    """Instructions per echo for each case, in `cases` order; `extra` goes to every mitmdump;
    with `only`, just the cases whose label contains one of its texts. With a wss://
    `upstream`, every case's URL is wss://. `batch`: messages sent before their echoes are
    read."""
    wss = upstream.startswith("wss:")
    todo = [
        (label, (*args, *extra), url.replace("ws://", "wss://") if wss else url)
        for label, args, url in cases(upstream)
        if not only or any(text in label for text in only)
    ]
    os.environ["PYTHONHASHSEED"] = "0"  # the same dict layouts in every mitmdump started
    if not Path(confdir, "mitmproxy-ca.pem").exists():  # make the CA once, not in parallel
        stop(start_mitmdump("ca", confdir, cpus=set(CPUS)).proc)

    def one(case: tuple[str, tuple[str, ...], str]) -> int:
        with tempfile.TemporaryDirectory(prefix="wsroute-callgrind-") as out:
            return asyncio.run(_count(out, confdir, case[1], case[2], size, n, batch))

    with ThreadPoolExecutor(len(CPUS)) as pool:
        counts = list(pool.map(one, todo))
    return [(label, count / n) for (label, _, _), count in zip(todo, counts, strict=True)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", action="append", default=[], metavar="NAME",
                        help="with mitmproxy patched as upstream/NAME/ proposes")  # fmt: skip
    parser.add_argument("--only", action="append", default=[], metavar="TEXT")
    parser.add_argument("--wss", action="store_true", help="over wss:// instead of ws://")
    parser.add_argument("--batch", type=int, default=1, metavar="B",
                        help="messages sent before their echoes are read (default 1)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as confdir:
        server = [sys.executable, str(HERE / "echo_server.py")]
        if args.wss:  # its certificate goes to confdir; mitmdump is told not to verify it
            server += ["--tls", confdir]
        echo, port = start(server, r"port (\d+)", set(CPUS))
        upstream = f"wss://localhost:{port}" if args.wss else f"ws://127.0.0.1:{port}"
        extra = ("--set", "ssl_insecure=true") if args.wss else ()
        try:
            if args.upstream:
                path = upstream_patches.overlay(Path(confdir, "patched"), args.upstream)
                os.environ["PYTHONPATH"] = os.pathsep.join(
                    [str(path), *filter(None, [os.environ.get("PYTHONPATH")])]
                )
            for size, n in ((32, max(300, 3 * args.batch)), (65536, 100)):
                rows = per_echo(confdir, upstream, size, n, extra, tuple(args.only), args.batch)
                base = rows[0][1]
                for label, count in rows:
                    print(f"{size} B, {label}: {count:,.0f} instructions per echo, "
                          f"{base / count:.3f}x {rows[0][0]}")  # fmt: skip
        finally:
            stop(echo)


if __name__ == "__main__":
    asyncio.run(main())
