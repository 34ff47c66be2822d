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

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != "demo.py")


def show(direction: str, what: object) -> None:
    print(f"   {direction} {what!r}" if not isinstance(what, str) else f"   {direction} {what}")


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def start_mitmdump(confdir: str) -> tuple[subprocess.Popen[str], int]:
    args = [str(Path(sys.executable).with_name("mitmdump")), "--listen-host", "127.0.0.1",
            "--listen-port", "0", "--set", f"confdir={confdir}", "--set", "flow_detail=0",
            "--set", "termlog_verbosity=info", "-s", str(ROOT / "addons" / "wsroute.py")]
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


async def main() -> int:
    failures: list[str] = []

    def expect(got: object, want: object) -> None:
        if got != want:
            failures.append(f"expected {want!r}, got {got!r}")
            print(f"   !! expected {want!r}")

    async with serve(echo, "127.0.0.1", 0) as upstream:
        up_port = upstream.sockets[0].getsockname()[1]
        with tempfile.TemporaryDirectory() as confdir:
            print(f"== mitmdump -s addons/wsroute.py with {', '.join(s.name for s in SCRIPTS)}")
            proc, port = await start_mitmdump(confdir)
            proxy = f"http://127.0.0.1:{port}"
            try:
                print("\n-- MOCK ws://chat.invalid/room: the host does not exist, the route answers")
                async with connect("ws://chat.invalid/room", proxy=proxy,
                                   subprotocols=["chat.v2"]) as ws:  # fmt: skip
                    show("subprotocol", ws.subprotocol)
                    show("<-", welcome := await ws.recv())
                    expect(welcome, '{"type": "welcome", "protocols": ["chat.v2"]}')
                    for message in ("hello", b"\x01\x02\x03"):
                        show("->", message)
                        await ws.send(message)
                        show("<-", reply := await ws.recv())
                        expect(reply, "echo: hello" if message == "hello" else b"\x03\x02\x01")
                    show("->", "bye")
                    await ws.send("bye")
                    try:
                        await ws.recv()
                    except ConnectionClosed as e:
                        assert e.rcvd is not None
                        show("<- close", f"{e.rcvd.code} {e.rcvd.reason!r}")
                        expect((e.rcvd.code, e.rcvd.reason), (4001, "mock says bye"))

                url = f"ws://127.0.0.1:{up_port}/echo-intercepted"
                print(f"\n-- INTERCEPT {url}: the real echo server, rewritten both ways")
                async with connect(url, proxy=proxy) as ws:
                    show("<-", first := await ws.recv())
                    expect(first, "fake")  # the route's server.send() before the open, echoed
                    for message, want in (("to-respond", "response"), ("to-modify", "modified again"),
                                          ("plain", "plain")):  # fmt: skip
                        show("->", message)
                        await ws.send(message)
                        show("<-", reply := await ws.recv())
                        expect(reply, want)

                url = f"ws://127.0.0.1:{up_port}/echo"
                print(f"\n-- PASS-THROUGH {url}: no route matches, the real server answers")
                async with connect(url, proxy=proxy) as ws:
                    show("->", "unrouted")
                    await ws.send("unrouted")
                    show("<-", reply := await ws.recv())
                    expect(reply, "unrouted")
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                out, _ = proc.communicate(timeout=10)
            print("\n-- what mitmdump logged about routes")
            for line in out.splitlines():
                if "wsroute" in line or "route" in line or "mock" in line:
                    print("  ", line)
    print("\n" + ("demo OK" if not failures else "demo FAILED:\n" + "\n".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
