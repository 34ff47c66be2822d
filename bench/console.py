"""The live console's cost: a watched socket against an unwatched one, through real mitmdump
processes with the addon and ``bench/routes.py`` (an intercept to the echo server).

    .venv/bin/python bench/console.py [--rate 1000] [--seconds 5] [--echoes 20000] [--rounds 5]

Three proxies: the console off; on, with no page open; on, with a page watching (a client of
``/api/events`` that reads the feed as the page does). For each, in alternating rounds:

- throughput: 32 B echoes, 200 in flight, as fast as they go (msgs/s); the ratio is the median
  of the per-round ratios to "console off";
- paced: `rate` echoes per second for `seconds`: the rate reached, the echo's round trip (p50,
  p99), and, watched, how late the page hears of each message (from the client's send to the
  feed's event: p50, p99) and how many it heard of.

Prints a Markdown table (docs/console.md keeps the last one). ``make bench-console`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import aiohttp
from proxies import ADDON, CLIENT_CPUS, HERE, MITMDUMP, PROXY_CPUS, start, stop
from run import echoes
from websockets.asyncio.client import ClientConnection, connect

PAYLOAD = 32


@dataclass
class Console:
    """A mitmdump with the addon, the console on or off, and its console's URL and token."""

    name: str
    proc: subprocess.Popen[str]
    port: int
    console: str = ""
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_proxy(name: str, confdir: str, console: bool) -> Console:
    args = ["--set", "wsroute_console=127.0.0.1:0"] if console else []
    cmd = [MITMDUMP, "--listen-host", "127.0.0.1", "--listen-port", "0", "--set",
           f"confdir={confdir}", "--set", "flow_detail=0", *ADDON, *args]  # fmt: skip
    os.sched_setaffinity(0, PROXY_CPUS)
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
    finally:
        os.sched_setaffinity(0, CLIENT_CPUS)
    assert proc.stdout is not None
    port, url = 0, ""
    for line in proc.stdout:
        if m := re.search(r"listening at [\d.]+:(\d+)", line):
            port = int(m.group(1))
        if m := re.search(r"console at (\S+)", line):
            url = m.group(1)
        if port and (url or not console):
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            base, _, token = url.partition("/?token=")
            return Console(name, proc, port, base, token)
    raise SystemExit(f"mitmdump did not start: exit code {proc.wait()}")


@dataclass
class Page:
    """A client of the live feed, as the page: reads every frame, notes when each message's
    event arrived."""

    heard: dict[str, float] = field(default_factory=dict)
    resyncs: int = 0
    task: asyncio.Task[None] | None = None

    async def watch(self, p: Console, session: aiohttp.ClientSession) -> None:
        ws = await session.ws_connect(
            p.console + "/api/events", headers={"Authorization": f"Bearer {p.token}"}
        )

        async def read() -> None:
            async for frame in ws:
                now = time.perf_counter()
                for event in json.loads(frame.data):
                    if event["type"] == "message":
                        text = event["message"].get("text", "")
                        if event["message"]["direction"] == "client_to_server":
                            self.heard.setdefault(text, now)
                    elif event["type"] == "resync":
                        self.resyncs += 1

        self.task = asyncio.ensure_future(read())


async def throughput(p: Console, url: str, n: int) -> float:
    async with connect(url, proxy=p.url, compression=None, max_queue=None) as ws:
        await echoes(ws, 200)
        t = time.perf_counter()
        await echoes(ws, n)
        return n / (time.perf_counter() - t)


async def paced(
    p: Console, url: str, rate: int, seconds: float, page: Page | None
) -> dict[str, float]:
    n = int(rate * seconds)
    sent: dict[str, float] = {}
    rtts: list[float] = []
    async with connect(url, proxy=p.url, compression=None, max_queue=None) as ws:

        async def receiver(ws: ClientConnection) -> None:
            for _ in range(n):
                message = await ws.recv()
                assert isinstance(message, str)
                rtts.append(time.perf_counter() - sent[message])

        task = asyncio.ensure_future(receiver(ws))
        start_at = time.perf_counter()
        for i in range(n):
            due = start_at + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            message = f"{p.name[:4]}{i:>{PAYLOAD - 4}}"
            sent[message] = time.perf_counter()
            await ws.send(message)
        await task
        elapsed = time.perf_counter() - start_at
    out = {
        "rate": n / elapsed,
        "rtt_p50": statistics.median(rtts) * 1000,
        "rtt_p99": statistics.quantiles(rtts, n=100)[98] * 1000,
    }
    if page is not None:
        await asyncio.sleep(0.2)  # the feed's last batch (it sends every 50 ms)
        lags = [page.heard[m] - t for m, t in sent.items() if m in page.heard]
        out["heard"] = len(lags) / n
        if lags:
            out["lag_p50"] = statistics.median(lags) * 1000
            out["lag_p99"] = statistics.quantiles(lags, n=100)[98] * 1000 if len(lags) > 1 else 0
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=int, default=1000, help="paced echoes per second")
    ap.add_argument("--seconds", type=float, default=5, help="how long the paced phase runs")
    ap.add_argument("--echoes", type=int, default=20_000, help="echoes per throughput round")
    ap.add_argument("--rounds", type=int, default=5, help="throughput rounds")
    args = ap.parse_args()
    confdir = tempfile.mkdtemp(prefix="wsroute-bench-console-")
    echo, echo_port = start(
        [sys.executable, str(HERE / "echo_server.py")], r"port (\d+)", CLIENT_CPUS
    )
    url = f"ws://127.0.0.1:{echo_port}/intercept"
    proxies = [
        start_proxy("console off", confdir, False),
        start_proxy("console on, no page", confdir, True),
        start_proxy("console on, a page watching", confdir, True),
    ]
    try:
        async with aiohttp.ClientSession() as session:
            page = Page()
            await page.watch(proxies[2], session)
            rates: dict[str, list[float]] = {p.name: [] for p in proxies}
            ratios: dict[str, list[float]] = {p.name: [] for p in proxies}
            for r in range(args.rounds):
                order = proxies if r % 2 == 0 else proxies[::-1]
                got = {p.name: await throughput(p, url, args.echoes) for p in order}
                for p in proxies:
                    rates[p.name].append(got[p.name])
                    ratios[p.name].append(got[p.name] / got[proxies[0].name])
            pacing = {
                p.name: await paced(
                    p, url, args.rate, args.seconds, page if p is proxies[2] else None
                )
                for p in proxies
            }
            if page.task is not None:
                page.task.cancel()
    finally:
        for p in proxies:
            stop(p.proc)
        stop(echo)
    print(f"\nThe live console's cost ({args.rounds} rounds of {args.echoes} echoes; paced: "
          f"{args.rate}/s for {args.seconds:g} s; 32 B text, intercept, ws://)\n")  # fmt: skip
    print("| Proxy | throughput | vs console off | paced rate | echo p50 / p99 | page hears "
          "| page lag p50 / p99 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for p in proxies:
        ratio = statistics.median(ratios[p.name])
        spread = f" ({min(ratios[p.name]):.2f} to {max(ratios[p.name]):.2f})"
        pace = pacing[p.name]
        heard = f"{pace['heard']:.0%}" if "heard" in pace else ""
        lag = f"{pace['lag_p50']:.1f} / {pace['lag_p99']:.1f} ms" if "lag_p50" in pace else ""
        print(
            f"| {p.name} | {statistics.median(rates[p.name]):,.0f} msgs/s | {ratio:.2f}x{spread} "
            f"| {pace['rate']:,.0f}/s | {pace['rtt_p50']:.2f} / {pace['rtt_p99']:.2f} ms "
            f"| {heard} | {lag} |"
        )
    if page.resyncs:
        print(f"\nThe page was told to resync {page.resyncs} time(s).")


if __name__ == "__main__":
    asyncio.run(main())
