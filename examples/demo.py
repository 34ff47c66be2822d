"""`make demo`: mitmdump with the addon and the example route scripts, driven by a scripted client.

Starts a local echo server (the "real" upstream), mitmdump with ``addons/wsroute.py`` and the
route scripts in ``examples/``, then talks through the proxy with python-websockets and prints
what happened. Exits non-zero if anything differs from what the routes promise.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(
    p
    for p in (ROOT / "examples").glob("*.py")
    if p.name != "demo.py" and not p.name.startswith("test_")
)


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def start_mitmdump(confdir: str) -> tuple[subprocess.Popen[str], int]:
    args = [
        str(Path(sys.executable).with_name("mitmdump")),
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        "0",
        "--set",
        f"confdir={confdir}",
        "--set",
        "flow_detail=0",
        "--set",
        "termlog_verbosity=info",
        "-s",
        str(ROOT / "addons" / "wsroute.py"),
    ]
    args += [a for s in SCRIPTS for a in ("--set", f"wsroute_scripts={s}")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    while line := await asyncio.to_thread(proc.stdout.readline):
        if m := re.search(r"listening at .*:(\d+)", line):
            return proc, int(m.group(1))
        if "route" in line:
            print("   mitmdump:", line.rstrip())
    raise SystemExit(f"mitmdump did not start (exit code {proc.wait()})")


class Transcript:
    """Prints each step and remembers what differed from the routes' promise."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def show(self, direction: str, what: object) -> None:
        print(f"   {direction} {what if isinstance(what, str) else repr(what)}")

    def expect(self, got: object, want: object) -> None:
        if got != want:
            self.failures.append(f"expected {want!r}, got {got!r}")
            print(f"   !! expected {want!r}")

    async def exchange(self, ws: ClientConnection, message: str | bytes, want: object) -> None:
        self.show("->", message)
        await ws.send(message)
        self.show("<-", reply := await ws.recv())
        self.expect(reply, want)


async def mock(t: Transcript, proxy: str) -> None:
    print("\n-- MOCK ws://chat.invalid/room: the host does not exist, the route answers")
    async with connect("ws://chat.invalid/room", proxy=proxy, subprotocols=["chat.v2"]) as ws:
        t.show("subprotocol", ws.subprotocol)
        t.show("<-", welcome := await ws.recv())
        t.expect(welcome, '{"type": "welcome", "protocols": ["chat.v2"]}')
        await t.exchange(ws, "hello", "echo: hello")
        await t.exchange(ws, b"\x01\x02\x03", b"\x03\x02\x01")
        t.show("->", "bye")
        await ws.send("bye")
        try:
            await ws.recv()
        except ConnectionClosed as e:
            assert e.rcvd is not None
            t.show("<- close", f"{e.rcvd.code} {e.rcvd.reason!r}")
            t.expect((e.rcvd.code, e.rcvd.reason), (4001, "mock says bye"))


async def intercept(t: Transcript, proxy: str, up_port: int) -> None:
    url = f"ws://127.0.0.1:{up_port}/echo-intercepted"
    print(f"\n-- INTERCEPT {url}: the real echo server, rewritten both ways")
    async with connect(url, proxy=proxy) as ws:
        t.show("<-", first := await ws.recv())
        t.expect(first, "fake")  # the route's server.send() before the open, echoed
        await t.exchange(ws, "to-respond", "response")
        await t.exchange(ws, "to-modify", "modified again")
        await t.exchange(ws, "plain", "plain")


async def passthrough(t: Transcript, proxy: str, up_port: int) -> None:
    url = f"ws://127.0.0.1:{up_port}/echo"
    print(f"\n-- PASS-THROUGH {url}: no route matches, the real server answers")
    async with connect(url, proxy=proxy) as ws:
        await t.exchange(ws, "unrouted", "unrouted")


async def main() -> int:
    t = Transcript()
    async with serve(echo, "127.0.0.1", 0) as upstream:
        up_port = upstream.sockets[0].getsockname()[1]
        with tempfile.TemporaryDirectory() as confdir:
            print(f"== mitmdump -s addons/wsroute.py with {', '.join(s.name for s in SCRIPTS)}")
            proc, port = await start_mitmdump(confdir)
            proxy = f"http://127.0.0.1:{port}"
            try:
                await mock(t, proxy)
                await intercept(t, proxy, up_port)
                await passthrough(t, proxy, up_port)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                out, _ = proc.communicate(timeout=10)
    print("\n-- what the route scripts logged in mitmdump")
    for line in out.splitlines():
        if "examples." in line or "closed the mock" in line:
            print("  ", line)
    print("\n" + ("demo OK" if not t.failures else "demo FAILED:\n" + "\n".join(t.failures)))
    return 1 if t.failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
