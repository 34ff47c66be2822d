"""`make bench`: routed sockets against plain mitmdump, measured in the same run.

Starts an echo server (its own process), a plain ``mitmdump`` and a ``mitmdump`` with the addon
and ``bench/routes.py``, then drives each with python-websockets from this process and prints
one table, with each result's ratio to plain mitmdump. Numbers vary with the machine and with
what else runs on it; compare ratios, not absolutes.

With two or more CPUs, the proxies run on the last one and the client and echo server on the
others, so that what is measured is the proxy, not the scheduler's choices. Small-message
ratios are taken per repeat (each case against the plain run of the same repeat, the order
reversed every other repeat), then the median of those, so that a slow patch of the machine
lands on both sides of a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import layer_micro
from websockets.asyncio.client import ClientConnection, connect

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
CPUS = sorted(os.sched_getaffinity(0))
#: Where the proxies run, and where this client and the echo server run.
PROXY_CPUS, CLIENT_CPUS = ({CPUS[-1]}, set(CPUS[:-1])) if len(CPUS) > 1 else (set(CPUS), set(CPUS))


@dataclass
class Proxy:
    name: str
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kib / 1024


def start(cmd: list[str], ready: str, cpus: set[int]) -> tuple[subprocess.Popen[str], int]:
    os.sched_setaffinity(0, cpus)  # this thread's CPUs; the child inherits them
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
    finally:
        os.sched_setaffinity(0, CLIENT_CPUS)
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.search(ready, line):
            # keep draining output so the process never blocks on a full pipe
            asyncio.get_running_loop().run_in_executor(None, proc.stdout.read)
            return proc, int(m.group(1))
    raise SystemExit(f"{cmd[0]} did not start: exit code {proc.wait()}")


def start_mitmdump(name: str, confdir: str, *args: str) -> Proxy:
    cmd = [MITMDUMP, "--listen-host", "127.0.0.1", "--listen-port", "0", "--set",
           f"confdir={confdir}", "--set", "connection_strategy=lazy", "--set", "flow_detail=0",
           *args]  # fmt: skip
    proc, port = start(cmd, r"listening at [\d.]+:(\d+)", PROXY_CPUS)
    return Proxy(name, proc, port)


def stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


async def throughput_and_rtt(
    url: str, proxy: str, size: int, n: int, rtts: int
) -> dict[str, float]:
    """Echoes over one connection: sequential round trips, then a pipelined window of 200."""
    payload = "x" * size
    async with connect(url, proxy=proxy, compression=None, max_size=None, ping_interval=None,
                       max_queue=None, write_limit=2**20) as ws:  # fmt: skip
        for _ in range(50):  # warm-up
            await ws.send(payload)
            await ws.recv()
        times = []
        for _ in range(rtts):
            t = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            times.append((time.perf_counter() - t) * 1e6)
        window = asyncio.Semaphore(200)
        received = 0

        async def sender() -> None:
            for _ in range(n):
                await window.acquire()
                await ws.send(payload)

        t0 = time.perf_counter()
        task = asyncio.ensure_future(sender())
        while received < n:
            await ws.recv()
            received += 1
            window.release()
        await task
        dt = time.perf_counter() - t0
    times.sort()
    return {"msgs": n / dt, "p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}


async def big_message(url: str, proxy: str, size: int) -> float:
    payload = os.urandom(size)
    async with connect(url, proxy=proxy, compression=None, max_size=None, ping_interval=None,
                       open_timeout=60, close_timeout=60) as ws:  # fmt: skip
        t = time.perf_counter()
        await ws.send(payload)
        assert await ws.recv() == payload
        return time.perf_counter() - t


async def echoes(ws: ClientConnection, n: int, window: int = 200) -> None:
    sem = asyncio.Semaphore(window)

    async def sender() -> None:
        for _ in range(n):
            await sem.acquire()
            await ws.send("x" * 32)

    task = asyncio.ensure_future(sender())
    for _ in range(n):
        await ws.recv()
        sem.release()
    await task


async def rss_after(p: Proxy, url: str, n: int) -> tuple[float, float]:
    async with connect(url, proxy=p.url, compression=None, ping_interval=None) as ws:
        await echoes(ws, 100)
        before = p.rss_mib()
        await echoes(ws, n)
        return before, p.rss_mib()


async def concurrent(url: str, proxy: str, sockets: int, each: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        try:
            async with connect(url, proxy=proxy, compression=None, ping_interval=None,
                               open_timeout=120) as ws:  # fmt: skip
                for _ in range(each):
                    t = time.perf_counter()
                    await ws.send("x" * 32)
                    await ws.recv()
                    latencies.append((time.perf_counter() - t) * 1e6)
        except Exception:
            errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(sockets)))
    latencies.sort()
    return {
        "secs": time.perf_counter() - t0,
        "errors": errors,
        "p50": statistics.median(latencies) if latencies else 0,
        "p99": latencies[int(len(latencies) * 0.99)] if latencies else 0,
    }


def row(label: str, value: float, unit: str, ratio: float | None = None, spread: str = "") -> str:
    return f"| {label} | {value:,.1f} {unit} | {'' if ratio is None else f'{ratio:.2f}x'}{spread} |"


def ratio_to(base: float | None, value: float, higher_is_better: bool) -> float | None:
    if not base:
        return None
    return value / base if higher_is_better else base / value


Case = tuple[str, Proxy, str]


async def small_messages(
    cases: list[Case], size: int, n: int, rtts: int, repeats: int
) -> list[str]:
    """msgs/s and RTT for each case, and their ratios to the first case (plain mitmdump): the
    medians over `repeats` rounds, each round running every case, in reverse order every other
    round, and each ratio taken within its round."""
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in cases}
    for i in range(repeats):
        for label, p, url in cases[:: -1 if i % 2 else 1]:
            runs[label].append(await throughput_and_rtt(url, p.url, size, n, rtts))
    base = runs[cases[0][0]]
    lines = []
    for label, _, _ in cases:
        for metric, name, unit, higher in (("msgs", "msgs/s", "msg/s", True),
                                           ("p50", "RTT p50", "µs", False),
                                           ("p99", "RTT p99", "µs", False)):  # fmt: skip
            values = [r[metric] for r in runs[label]]
            ratios = [
                ratio_to(b[metric], v, higher) or 0 for v, b in zip(values, base, strict=True)
            ]
            median, spread = None, ""
            if label != cases[0][0]:
                median = statistics.median(ratios)
                if len(ratios) > 1:
                    spread = f" ({min(ratios):.2f} to {max(ratios):.2f})"
            value = statistics.median(values)
            lines.append(row(f"{size} B {name}, {label}", value, unit, median, spread))
    return lines


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller counts, no 64 MiB plain run")
    ap.add_argument("--small", action="store_true", help="only the layer and 32 B / 64 KiB rows")
    ap.add_argument("--repeats", type=int, help="rounds of the small-message cases (default 7)")
    a = ap.parse_args()
    q = a.quick
    n32, n64k, rtt32, rtt64k = (2000, 300, 300, 100) if q else (10000, 1000, 500, 200)
    repeats = a.repeats or (1 if q else 7)
    big = (16 if q else 64) * 1024 * 1024
    rss_n = 10_000 if q else 100_000

    os.environ["PYTHONUNBUFFERED"] = "1"
    os.sched_setaffinity(0, CLIENT_CPUS)
    echo, echo_port = start([sys.executable, str(HERE / "echo_server.py")], r"port (\d+)",
                            CLIENT_CPUS)  # fmt: skip
    what = f"msgs/s and RTT: medians of {repeats} rounds"
    if len(CPUS) > 1:
        what += f"; proxies on CPU {min(PROXY_CPUS)}, client and echo server on the others"
    lines = [f"| measurement ({what}) | value | vs plain (range over rounds) |", "|---|---:|---:|"]
    with tempfile.TemporaryDirectory() as confdir:
        plain = start_mitmdump("plain", confdir)
        addon = ("-s", str(ROOT / "addons" / "wsroute.py"),
                 "--set", f"wsroute_scripts={HERE / 'routes.py'}")  # fmt: skip
        routed = start_mitmdump("routed", confdir, *addon)
        hookless = start_mitmdump(
            "hookless", confdir, *addon, "--set", "wsroute_message_hooks=false"
        )
        up = f"ws://127.0.0.1:{echo_port}"
        cases: list[Case] = [
            ("plain mitmdump", plain, f"{up}/plain"),
            ("intercept, no handlers", routed, f"{up}/intercept"),
            ("intercept, Python handlers forwarding both ways", routed, f"{up}/handlers"),
            ("mock echo", routed, "ws://bench.invalid/mock"),
            # what mitmproxy's per-message hook fan-out costs: the same routes without the hook
            ("intercept, no handlers, wsroute_message_hooks=false", hookless, f"{up}/intercept"),
            ("mock echo, wsroute_message_hooks=false", hookless, "ws://bench.invalid/mock"),
        ]

        def out(*new: str) -> None:
            lines.extend(new)
            print(*new, sep="\n", flush=True)

        try:
            stock, ours, ratio = layer_micro.compare()
            what = "layer alone (no sockets, no addons), µs per 32 B message"
            out(row(f"{what}, mitmproxy's WebsocketLayer", stock, "µs"),
                row(f"{what}, routed, intercept without handlers", ours, "µs", ratio))  # fmt: skip
            if shutil.which("valgrind") and not q:
                stock, ours = (layer_micro.instructions_per_message(r) for r in (False, True))
                what = "layer alone, CPU instructions per 32 B message (callgrind)"
                out(row(f"{what}, mitmproxy's WebsocketLayer", stock, ""),
                    row(f"{what}, routed, intercept without handlers", ours, "",
                        ratio_to(stock, ours, False)))  # fmt: skip
            out(*await small_messages(cases, 32, n32, rtt32, repeats))
            out(*await small_messages(cases, 65536, n64k, rtt64k, repeats))
            if a.small:
                return
            big_base = None
            for label, p, url in cases[int(q) : 4]:  # --quick skips plain: 64 MiB takes it 30 s
                secs = await big_message(url, p.url, big)
                big_base = big_base or (secs if label == "plain mitmdump" else None)
                ref = None if label == "plain mitmdump" else big_base
                out(row(f"{big >> 20} MiB echo, {label}", secs, "s", ratio_to(ref, secs, False)))
            for label, args, url in (("plain mitmdump", (), cases[0][2]),
                                     ("mock echo", addon, cases[3][2])):  # fmt: skip
                fresh = start_mitmdump("rss", confdir, *args)  # nothing else has run in it
                before, after = await rss_after(fresh, url, rss_n)
                stop(fresh.proc)
                what = f"RSS growth over {rss_n:,} echoes on one socket, {label}"
                out(row(what, after - before, "MiB"))
            for label, url, sockets in (("mocked", "ws://bench.invalid/mock", 1000),
                                        ("intercepted", f"{up}/intercept", 200)):  # fmt: skip
                r = await concurrent(url, routed.url, sockets, 10)
                what = f"{sockets} concurrent {label} sockets x 10 echoes"
                out(row(f"{what}: errors", r["errors"], ""),
                    row(f"{what}: echo p50", r["p50"], "µs"),
                    row(f"{what}: echo p99", r["p99"], "µs"),
                    row(f"{what}: wall time", r["secs"], "s"))  # fmt: skip
        finally:
            for proc in (plain.proc, routed.proc, hookless.proc, echo):
                stop(proc)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
