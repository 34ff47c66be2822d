"""`make bench`: routed sockets against plain mitmdump, measured in the same run.

Starts an echo server (its own process), a plain ``mitmdump`` and a ``mitmdump`` with the addon
and ``bench/routes.py``, then drives each with python-websockets from this process and prints
one table, with each result's ratio to plain mitmdump. Numbers vary with the machine and with
what else runs on it; compare ratios, not absolutes.

With valgrind installed, it first counts the CPU instructions the proxy executes per echo
(`instructions.py`): the same numbers on every run, whatever else the machine does. Timings
follow. With two or more CPUs, the proxies run on the last one and the client and echo server
on the others. Small-message ratios are taken per round (each case against the plain run of
the same round, the order reversed every other round), then the median of those, so that a
slow patch of the machine lands on both sides of a ratio; the range shows how much they moved.

Then the transport matrix (`transports.py`; ``--transports`` runs only it, ``--no-transports``
all but it): msgs/s over ws:// and wss://, permessage-deflate offered by the client or not,
32 B and 64 KiB of text, for our routes with the message hooks on and off, plain mitmdump,
Mockttp and the echo server direct, in 5 interleaved rounds; its table prints after the main
one, and goes with a chart to test-artifacts/bench/.
``--deflate-negotiation`` runs only the matrix's 64 KiB rows with permessage-deflate, for an
intercept that passes the upstream's deflate answer on (the addon) against ones that negotiate
with each side as Mockttp does (`per_side_deflate.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from ssl import SSLContext

import gc_pauses
import instructions
import proxies
from proxies import (
    ADDON,
    CLIENT_CPUS,
    CPUS,
    HERE,
    HOOKLESS,
    PROXY_CPUS,
    ROOT,
    Proxy,
    peers_cpu_ns,
    start,
    start_mitmdump,
    stop,
)
from websockets.asyncio.client import ClientConnection, connect


async def pipelined(
    send: Callable[[str], Awaitable[object]], recv: Callable[[], Awaitable[object]],
    payload: str, p: Proxy, n: int, window: int, max_secs: float | None,
) -> dict[str, float]:  # fmt: skip
    """`n` echoes of `payload` over one connection, `window` at a time (stopping after
    `max_secs` if given, then waiting for what is in flight): msgs/s, how busy the peers kept
    their CPUs (`peers_busy`), and through a proxy its CPU time per echo in µs."""
    in_flight = asyncio.Semaphore(window)
    sent = received = 0
    cpu0, peers0 = p.cpu_ns(), peers_cpu_ns()
    t0 = time.perf_counter()
    stop_at = t0 + max_secs if max_secs is not None else float("inf")

    sent_more = asyncio.Event()  # set when the sender sent one more, or ended

    async def sender() -> None:
        nonlocal sent
        try:
            for _ in range(n):
                await in_flight.acquire()
                if time.perf_counter() > stop_at:
                    return
                await send(payload)
                sent += 1
                sent_more.set()
        finally:
            sent_more.set()

    task = asyncio.ensure_future(sender())
    while received < sent or not task.done():
        if received < sent:
            await recv()
            received += 1
            in_flight.release()
        else:  # all echoed: wait for the sender (not in a busy loop: the peers' CPU counts)
            sent_more.clear()
            await sent_more.wait()
    await task
    dt = time.perf_counter() - t0
    cpu = (p.cpu_ns() - cpu0) / 1000 / max(received, 1)
    result = {"msgs": received / dt, "peers": peers_busy(peers_cpu_ns() - peers0, dt)}
    return {**result, "cpu": cpu} if p.proc else result


def peers_busy(cpu_ns: int, secs: float) -> float:
    """The share of their CPUs' time (%) that the client and the echo servers used: near
    100, they were the limit, whatever the proxy did."""
    return cpu_ns / 1e7 / secs / len(CLIENT_CPUS)


async def throughput_and_rtt(
    url: str,
    p: Proxy,
    payload: str,
    n: int,
    rtts: int,
    *,
    compression: str | None = None,
    ssl: SSLContext | None = None,
    max_secs: float | None = None,
    warmup: int = 50,
    window: int = 200,
) -> dict[str, float]:
    """Echoes over one connection: `warmup` round trips, `rtts` timed ones, then `n`
    pipelined, `window` at a time.

    `compression="deflate"` offers permessage-deflate (python-websockets' default), None does
    not; `ssl` is the context for a wss:// URL. With `max_secs`, the pipelined phase stops
    sending after that long even if it sent fewer than `n` (then waits for what is in flight):
    slow cases take no longer than that, fast ones still run `n` echoes."""
    async with connect(url, proxy=p.url, compression=compression, ssl=ssl, max_size=None,
                       ping_interval=None, max_queue=None, write_limit=2**20,
                       open_timeout=60) as ws:  # fmt: skip
        for _ in range(warmup):
            await ws.send(payload)
            await ws.recv()
        times = []
        for _ in range(rtts):
            t = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            times.append((time.perf_counter() - t) * 1e6)
        result = await pipelined(ws.send, ws.recv, payload, p, n, window, max_secs)
    times.sort()
    if not times:
        return result
    return {
        **result,
        "p50": times[len(times) // 2],
        "p99": times[int(len(times) * 0.99)],
    }


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


#: Handshakes in flight at once: a thousand at once overflow the proxy's listen backlog
#: (asyncio's default is 100), and the kernel retries the connections it dropped seconds later,
#: which is then what the numbers show.
OPENING = 50


async def concurrent(
    url: str, proxy: str, sockets: int, each: int, open_first: bool = False
) -> dict[str, float]:
    """`sockets` clients at once, opening `OPENING` at a time, each echoing `each` times in a
    row: each as soon as it is open, while others still open, or, `open_first`, once all are
    open, closing once all are done. The wall time counts the echoes only when they start
    together; `start` and `end` (time.monotonic()) bound them.

    The client's own collector is off meanwhile: with a thousand sockets open, its full
    collections would add their pauses to every echo in flight, whatever the proxy."""
    latencies: list[float] = []
    errors = 0
    all_open, all_done = asyncio.Event(), asyncio.Event()
    opened = 0
    gate = asyncio.Semaphore(OPENING)

    async def client() -> None:
        nonlocal errors, opened
        try:
            async with gate:
                ws = await connect(url, proxy=proxy, compression=None, ping_interval=None,
                                   open_timeout=120)  # fmt: skip
            async with ws:
                opened += 1
                if open_first:
                    if opened == sockets:
                        all_open.set()
                    await all_open.wait()
                for _ in range(each):
                    t = time.perf_counter()
                    await ws.send("x" * 32)
                    await ws.recv()
                    latencies.append((time.perf_counter() - t) * 1e6)
                done.append(time.monotonic())
                if open_first:  # closing costs the proxy too: not while others still echo
                    if len(done) + errors == sockets:
                        all_done.set()
                    await all_done.wait()
        except Exception:
            errors += 1
            opened += 1  # never open: the others do not wait for it
            if open_first and opened == sockets:
                all_open.set()
            if open_first and len(done) + errors == sockets:
                all_done.set()

    done: list[float] = []
    gc.collect()
    gc.disable()
    try:
        start = time.monotonic()
        task = asyncio.gather(*(client() for _ in range(sockets)))
        if open_first:
            await all_open.wait()
            start = time.monotonic()
        await task
    finally:
        gc.enable()
    latencies.sort()
    end = max(done) if done else time.monotonic()
    return {
        "start": start,
        "end": end,
        "secs": end - start,
        "errors": errors,
        "p50": statistics.median(latencies) if latencies else 0,
        "p99": latencies[int(len(latencies) * 0.99)] if latencies else 0,
    }


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or float(value).is_integer() else f"{value:,.1f}"


def spread_ms(values: list[float]) -> str:
    """The range of values in ms, for a row's ratio cell."""
    return f" ({number(min(values))} to {number(max(values))} ms)" if values[1:] else ""


def row(
    label: str,
    value: float,
    unit: str,
    ratio: float | None = None,
    spread: str = "",
    vs_peer: str = "",
) -> str:
    value_cell = f"{number(value)} {unit}".strip()
    ratio_cell = f"{'' if ratio is None else f'{ratio:.2f}x'}{spread}"
    return f"| {label} | {value_cell} | {ratio_cell} |" + (f" {vs_peer} |" if vs_peer else "")


def peer_of(label: str, labels: list[str]) -> str | None:
    """The Mockttp case a case of ours compares with: echo for a mock, else pass-through."""
    if label.startswith(("Mockttp", "python-websockets")):
        return None
    peer = "Mockttp echo" if "mock" in label else "Mockttp pass-through"
    return peer if peer in labels else None


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
            runs[label].append(await throughput_and_rtt(url, p, "x" * size, n, rtts))
    return summarize(runs, [label for label, _, _ in cases], f"{size} B")


#: What `summarize` reports: (key of a run's result, row name, unit, higher is better).
METRICS = (
    ("msgs", "msgs/s", "msg/s", True),
    ("p50", "RTT p50", "µs", False),
    ("p99", "RTT p99", "µs", False),
)


def summarize(
    runs: dict[str, list[dict[str, float]]],
    labels: list[str],
    what: str,
    where: str = "",
    metrics: tuple[tuple[str, str, str, bool], ...] = METRICS,
) -> list[str]:
    """Rows for the rounds of each case (`runs[label]`, one result per round): the median of
    each metric, the median of its per-round ratios to the first label's (plain mitmdump) with
    their range, and for our cases the same against the Mockttp case doing the same job. Rows
    are named "{what} {metric}, {where}{label}"."""
    base = runs[labels[0]]
    lines = []
    for label in labels:
        peer = peer_of(label, labels)
        for metric, name, unit, higher in metrics:
            values = [r[metric] for r in runs[label]]
            ratios = [
                ratio_to(b[metric], v, higher) or 0 for v, b in zip(values, base, strict=True)
            ]
            median, spread = None, ""
            if label != labels[0]:
                median = statistics.median(ratios)
                if len(ratios) > 1:
                    spread = f" ({min(ratios):.2f} to {max(ratios):.2f})"
            value = statistics.median(values)
            vs_peer = ""
            if peer is not None:
                per_round = [
                    ratio_to(p[metric], v, higher) or 0
                    for v, p in zip(values, runs[peer], strict=True)
                ]
                vs_peer = f"{statistics.median(per_round):.2f}x of {peer}"
            lines.append(row(f"{what} {name}, {where}{label}", value, unit, median, spread,
                             vs_peer))  # fmt: skip
    return lines


async def big_messages(confdir: str, cases: list[Case], size: int, with_plain: bool) -> list[str]:
    """One echo of `size` bytes per case, each in a fresh mitmdump: how long a big message
    takes depends on the allocator's state (plain mitmdump took 18 to 52 s for 64 MiB, by
    what its process had done before), so every case starts from the same one."""
    lines, base = [], None
    for label, _, url in cases[int(not with_plain) : 4]:
        fresh = start_mitmdump("big", confdir, *(() if label == "plain mitmdump" else ADDON))
        assert fresh.url is not None
        secs = await big_message(url, fresh.url, size)
        stop(fresh.proc)
        base = base or (secs if label == "plain mitmdump" else None)
        ref = None if label == "plain mitmdump" else base
        lines.append(row(f"{size >> 20} MiB echo, {label}", secs, "s", ratio_to(ref, secs, False)))
    return lines


async def memory(confdir: str, cases: list[Case], n: int) -> list[str]:
    lines, base = [], 0.0
    for i, (label, args, url) in enumerate((("plain mitmdump", (), cases[0][2]),
                                            ("intercept, no handlers", ADDON, cases[1][2]),
                                            ("mock echo", ADDON, cases[3][2]))):  # fmt: skip
        fresh = start_mitmdump("rss", confdir, *args)  # nothing else has run in it
        before, after = await rss_after(fresh, url, n)
        stop(fresh.proc)
        growth = after - before
        base = base if i else growth
        # growth below 0.1 MiB counts as 0.1 MiB: RSS moves by page-sized steps either way
        ratio = ratio_to(base, max(growth, 0.1), False) if i else None
        lines.append(row(f"RSS growth over {n:,} echoes on one socket, {label}", growth, "MiB",
                         ratio))  # fmt: skip
    return lines


#: Rounds of each many-sockets case, in one proxy.
ROUNDS = 5


def gc_logged(confdir: str, args: tuple[str, ...], gc_log: str) -> Proxy:
    """A fresh mitmdump with `args` that records its collector's pauses in `gc_log`."""
    return start_mitmdump("many", confdir, *args, "-s", str(HERE / "gc_pauses.py"), "--set",
                          f"bench_gc_log={gc_log}")  # fmt: skip


async def many_sockets(
    label: str, start_proxy: Callable[[str], Proxy], upstream: str, mock_only: bool = False
) -> list[str]:
    """Many sockets at once, echoing: once all are open, and while they open; `ROUNDS` times
    each in one fresh proxy, so that later rounds run after earlier ones closed their sockets.
    `start_proxy(gc_log)` starts the proxy; a mitmdump records its collector's pauses there."""
    lines = []
    kinds = (
        ("mocked", "ws://bench.invalid/mock", 1000),
        ("intercepted", f"{upstream}/intercept", 200),
    )
    for kind, url, sockets in kinds[: 1 if mock_only else 2]:
        for open_first, when in ((True, "all open"), (False, "opening while others echo")):
            with tempfile.NamedTemporaryFile(suffix=".gc") as gc_log:
                proxy = start_proxy(gc_log.name)
                try:
                    assert proxy.url is not None
                    runs = [await concurrent(url, proxy.url, sockets, 10, open_first)
                            for _ in range(ROUNDS)]  # fmt: skip
                finally:
                    stop(proxy.proc)
                pauses = [gc_pauses.longest(gc_log.name, r["start"], r["end"]) for r in runs]
            what = f"{sockets} {kind} sockets x 10 echoes, {when}, {label}"
            lines.append(row(f"{what}: errors", sum(r["errors"] for r in runs), ""))
            for metric in ("p50", "p99"):
                ms = [r[metric] / 1000 for r in runs]
                lines.append(row(f"{what}: echo {metric}", statistics.median(ms), "ms", None,
                                 spread_ms(ms)))  # fmt: skip
            if max(pauses):
                pause = f"{what}: longest collector pause in the proxy while echoing"
                lines.append(row(pause, statistics.median(pauses), "ms", None, spread_ms(pauses)))
            lines.append(row(f"{what}: wall time", statistics.median(r["secs"] for r in runs),
                             "s"))  # fmt: skip
    return lines


def instruction_counts(confdir: str, upstream: str) -> list[str]:
    lines = []
    for size, n in ((32, 300), (65536, 100)):
        counts = instructions.per_echo(confdir, upstream, size, n)
        base = counts[0][1]
        for i, (label, count) in enumerate(counts):
            ratio = base / count if i else None
            lines.append(row(f"{size} B, CPU instructions per echo, {label}", count, "", ratio))
    return lines


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller counts, no 64 MiB plain run")
    ap.add_argument(
        "--small",
        action="store_true",
        help="only the 32 B and 64 KiB rows (the transport matrix too)",
    )
    ap.add_argument(
        "--transports",
        action="store_true",
        help="only the transport matrix (ws/wss, permessage-deflate or not)",
    )
    ap.add_argument(
        "--deflate-negotiation",
        action="store_true",
        help="only an intercept's permessage-deflate passed on against negotiated per side",
    )
    ap.add_argument("--no-transports", action="store_true", help="all but the transport matrix")
    ap.add_argument(
        "--client",
        choices=("python", "node", "aiohttp"),
        default="python",
        help="the transport matrix's client: python-websockets, Node ws or aiohttp",
    )
    ap.add_argument("--server", choices=("python", "aiohttp"), default="python",
                    help="the echo server: python-websockets or aiohttp")  # fmt: skip
    ap.add_argument(
        "--memory",
        action="store_true",
        help="only the RSS growth of every mitmdump case on every transport",
    )
    ap.add_argument("--repeats", type=int, help="rounds of the small-message cases (default 7)")
    ap.add_argument("--transport-rounds", type=int,
                    help="rounds of the transport matrix (default 5)")  # fmt: skip
    a = ap.parse_args()
    q = a.quick
    n32, n64k, rtt32, rtt64k = (2000, 300, 300, 100) if q else (10000, 1000, 500, 200)
    repeats = a.repeats or (1 if q else 7)
    transport_rounds = a.transport_rounds or (1 if q else 5)

    os.environ["PYTHONUNBUFFERED"] = "1"
    os.sched_setaffinity(0, CLIENT_CPUS)
    what = f"msgs/s and RTT: medians of {repeats} rounds"
    where = ""
    if len(CPUS) > 1:
        where = f"; proxies on CPU {min(PROXY_CPUS)}, client and echo server on the others"
    lines = [f"| measurement ({what}{where}) | value | vs plain (range over rounds) | vs Mockttp |",
             "|---|---:|---:|---:|"]  # fmt: skip
    matrix: list[str] = []
    cases: list[Case] = []
    with tempfile.TemporaryDirectory() as confdir:
        server = [sys.executable, str(HERE / "echo_server.py")]
        if a.server == "aiohttp":
            server.append("--aiohttp")
        echo, echo_port = start(server, r"port (\d+)", CLIENT_CPUS)
        # wss://, its self-signed certificate written to confdir (echo_server.CERT)
        echo_tls, tls_port = start([*server, "--tls", confdir], r"port (\d+)", CLIENT_CPUS)
        proxies.ECHO_PIDS[:] = [echo.pid, echo_tls.pid]
        up = f"ws://127.0.0.1:{echo_port}"

        def out(new: list[str]) -> None:
            lines.extend(new)
            print(*new, sep="\n", flush=True)

        async def transport_matrix() -> None:
            import transports  # here: it imports this module

            t = time.monotonic()
            new, files = await transports.main(confdir, echo_port, tls_port, transport_rounds, q,
                                                  a.client, a.server,
                                                  a.deflate_negotiation)  # fmt: skip
            matrix.extend(new)
            print(*new, sep="\n", flush=True)
            print(
                f"(transport matrix: {time.monotonic() - t:.0f} s; written to "
                f"{', '.join(str(f.relative_to(ROOT)) for f in files)})",
                flush=True,
            )

        try:
            if a.transports or a.deflate_negotiation:
                lines.clear()
                await transport_matrix()
                return
            if a.memory:
                import transports

                lines[:] = await transports.memory(confdir, echo_port, tls_port,
                                                   10_000 if q else 100_000)  # fmt: skip
                return
            # One mitmdump per case, so that no case runs in a process that others have used.
            cases += [
                (label, start_mitmdump(label, confdir, *args), url)
                for label, args, url in proxies.cases(up)
            ] + [
                (label, proxies.start_peer(label, kind), url)
                for label, kind, url in proxies.peers(up)
            ]
            if shutil.which("valgrind") and not q:
                out(instruction_counts(confdir, up))
            out(await small_messages(cases, 32, n32, rtt32, repeats))
            out(await small_messages(cases, 65536, n64k, rtt64k, repeats))
            if not a.no_transports:
                await transport_matrix()
            if not a.small:
                out(await big_messages(confdir, cases, (16 if q else 64) << 20, with_plain=not q))
                out(await memory(confdir, cases, 10_000 if q else 100_000))
                for label, args, mock_only in (
                    ("hooks on", ADDON, False),
                    ("wsroute_message_hooks=false", HOOKLESS, False),
                    ("wsroute_message_hooks=false, wsroute_keep_messages=1",
                     (*HOOKLESS, "--set", "wsroute_keep_messages=1"), True),
                ):  # fmt: skip
                    out(await many_sockets(label, partial(gc_logged, confdir, args), up, mock_only))
                out(await many_sockets("Mockttp echo", lambda _: proxies.start_peer(
                    "Mockttp echo", proxies.MOCKTTP), up, mock_only=True))  # fmt: skip
                import facade  # here: facade and har import this module
                import har

                out(await facade.main(q))
                out(await har.main(echoes_n=5_000 if q else 20_000, rounds=1 if q else 5))
        finally:
            for _, p, _ in cases:
                stop(p.proc)
            stop(echo)
            stop(echo_tls)
            if lines:
                print("\n" + "\n".join(lines))
            if matrix:
                print("\n" + "\n".join(matrix))


if __name__ == "__main__":
    asyncio.run(main())
