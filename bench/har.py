"""Record and replay: what a big HAR costs, and replay echo throughput against a hand-written
mock echo, through real mitmdump processes.

    .venv/bin/python bench/har.py [--messages 100000] [--echoes 20000] [--rounds 3]

Prints: the HAR's size, its load time and memory in a fresh process (retained RSS growth and
peak, as ratios to the file size), the time to start replaying its conversation, and msgs/s of
a replayed echo against a mock echo (`bench/routes.py`), 200 messages in flight, in alternating
rounds; the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxies import ADDON, start_mitmdump, stop
from run import echoes, row
from websockets.asyncio.client import connect

from mitm_wsroute.har import Recording, write_har

T0 = 1_764_390_000.0
#: The mock echo of bench/routes.py serves this URL; the replay serves it from the HAR.
URL = "ws://bench.invalid/mock"


def make_har(path: Path, messages: int, binary: bool = True, payload: str = "x" * 32) -> None:
    """A recorded echo: `messages` messages, client and server turns alternating, (with
    `binary`) a binary pair every tenth turn, as this project's recording writes it."""
    r = Recording(URL, T0)
    for i in range(messages // 2):
        data: str | bytes = payload if i % 10 or not binary else payload.encode()
        r.message(True, data, T0 + i * 0.001)
        r.message(False, data, T0 + i * 0.001 + 0.0005)
    write_har(str(path), [r.entry()], T0)


LOAD = """
import gc, sys, time
def status(field):  # VmRSS now, VmHWM the peak (per process image: not inherited over exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
from mitm_wsroute.har import Replay, load_har
gc.collect(); before = status("VmRSS:")
t = time.perf_counter(); har = load_har(sys.argv[1]); load = time.perf_counter() - t
gc.collect(); after = status("VmRSS:")
t = time.perf_counter(); conversation = har.entries(sys.argv[2])[0]
replay = Replay(conversation); replay.open(); start = time.perf_counter() - t
print(load, after - before, status("VmHWM:") - before, start, len(conversation))
"""


def load_cost(path: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(path), URL], capture_output=True, text=True, check=True
    ).stdout.split()
    load, retained, peak, start, n = float(out[0]), int(out[1]), int(out[2]), float(out[3]), out[4]
    size = path.stat().st_size
    what = f"HAR of {int(n):,} messages ({size / 2**20:.1f} MiB)"
    return [
        row(f"{what}: load time (goal < 1 s)", load * 1000, "ms"),
        row(f"{what}: memory kept after load, x the file size (goal < 3x)", retained / size, "x"),
        row(f"{what}: peak memory while loading, x the file size", peak / size, "x"),
        row(f"{what}: replay start (index the conversation, first turn)", start * 1000, "ms"),
    ]


async def rate(proxy: str, n: int) -> float:
    async with connect(URL, proxy=proxy, ping_interval=None, max_size=None) as ws:
        await echoes(ws, 200)  # warm-up, matched against the start of the recording
        t = time.perf_counter()
        await echoes(ws, n)
        return n / (time.perf_counter() - t)


async def throughput(path: Path, echoes_n: int, rounds: int, confdir: str) -> list[str]:
    mock = start_mitmdump("mock echo", confdir, *ADDON)
    replay = start_mitmdump("replay", confdir, "-s", ADDON[1], "--set", f"wsroute_har={path}")
    try:
        ratios: list[float] = []
        mocks: list[float] = []
        replays: list[float] = []
        for i in range(rounds):
            order = [(mock, mocks), (replay, replays)]
            for p, results in order if i % 2 == 0 else reversed(order):
                assert p.url is not None
                results.append(await rate(p.url, echoes_n))
            ratios.append(replays[-1] / mocks[-1])
    finally:
        stop(mock.proc)
        stop(replay.proc)
    spread = f" ({min(ratios):.2f} to {max(ratios):.2f})" if len(ratios) > 1 else ""
    return [
        row("32 B msgs/s, mock echo (route script)", statistics.median(mocks), "msg/s"),
        row(
            "32 B msgs/s, replayed echo (wsroute_har), vs the mock echo (goal >= 0.9x)",
            statistics.median(replays),
            "msg/s",
            statistics.median(ratios),
            spread,
        ),
    ]


async def main(messages: int = 100_000, echoes_n: int = 20_000, rounds: int = 3) -> list[str]:
    """The rows of the table (`make bench` calls it too)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.har"
        make_har(path, messages)
        lines = load_cost(path)
        echo_har = Path(tmp) / "echo.har"
        # one recorded turn per echo the client sends, the warm-up included
        make_har(echo_har, 2 * (echoes_n + 200), binary=False)
        return lines + await throughput(echo_har, echoes_n, rounds, tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--echoes", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    a = parser.parse_args()
    print(*asyncio.run(main(a.messages, a.echoes, a.rounds)), sep="\n")
