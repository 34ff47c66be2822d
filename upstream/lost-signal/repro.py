"""mitmdump misses a SIGTERM sent during a burst of connections.

Starts a websockets echo server and ``mitmdump`` (nothing else loaded), opens 1,000 WebSockets
through it, 50 at a time, echoes once on each, closes them all at once, and sends SIGTERM at
once. Repeats ``--runs`` times and counts the runs where mitmdump was still running 15 s
later. ``--patched`` loads ``log_on_loop.py``, the proposed change, into mitmdump.

    python upstream/lost-signal/repro.py [--runs 5] [--patched]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

HERE = Path(__file__).resolve().parent
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def burst(url: str, proxy: str, sockets: int) -> None:
    gate = asyncio.Semaphore(50)
    opened = []

    async def one() -> None:
        async with gate:
            ws = await connect(url, proxy=proxy, ping_interval=None, open_timeout=120)
        await ws.send("x")
        await ws.recv()
        opened.append(ws)

    await asyncio.gather(*(one() for _ in range(sockets)))
    await asyncio.gather(*(ws.close() for ws in opened))


async def run(patched: bool) -> tuple[bool, bool]:
    """(stopped after one SIGTERM, stderr showed the lost wake-up)."""
    with tempfile.TemporaryDirectory() as confdir, tempfile.TemporaryFile("w+") as out:
        extra = ["-s", str(HERE / "log_on_loop.py")] if patched else []
        cmd = [MITMDUMP, "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={confdir}",
               *extra]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            port = None
            while port is None:
                await asyncio.sleep(0.1)
                out.seek(0)
                if m := re.search(r"listening at [\d.]+:(\d+)", out.read()):
                    port = m.group(1)
            async with serve(echo, "127.0.0.1", 0) as server:
                upstream = server.sockets[0].getsockname()[1]
                await burst(f"ws://127.0.0.1:{upstream}/", f"http://127.0.0.1:{port}", 1000)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
                stopped = True
            except subprocess.TimeoutExpired:
                stopped = False
            out.seek(0)
            return stopped, "signal wakeup fd" in out.read()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--patched", action="store_true")
    a = ap.parse_args()
    missed = 0
    for i in range(a.runs):
        stopped, wakeup_lost = await run(a.patched)
        missed += not stopped
        print(f"run {i + 1}: {'stopped' if stopped else 'SIGTERM missed'}"
              f"{', stderr: wake-up byte lost' if wakeup_lost else ''}", flush=True)  # fmt: skip
    print(f"{'patched' if a.patched else 'stock'} mitmdump missed {missed} of {a.runs} SIGTERMs")


if __name__ == "__main__":
    asyncio.run(main())
