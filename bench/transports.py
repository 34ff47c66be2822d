"""The transport matrix of `make bench` (``--transports`` runs only it): msgs/s over ws:// and
wss://, with permessage-deflate offered by the client and not, for 32 B and 64 KiB text.

Real traffic is mostly wss:// with permessage-deflate, which python-websockets, browsers and
Node's ws offer by default. Each case echoes over one connection, 200 messages in flight,
as run.py's `small_messages`, and in the same interleaved way: every round runs every
configuration of every case (the order reversed every other round), and each ratio is taken
to plain mitmdump in the same configuration of the same round; the table shows the medians
over the rounds and the range of the ratios. So that the whole matrix fits in a few minutes,
a case stops sending after `MAX_SECS` (the slow ones), else after `n` echoes (the fast ones).

The cases: plain mitmdump (what an intercept costs without the addon: mitmproxy's own
WebSocket layer, which inflates and deflates each message itself), intercept and mock with
mitmproxy's message hooks on and off (`ADDON`, `HOOKLESS`), Mockttp's `thenEcho` and
`thenPassThrough` (TLS intercepted with a CA it generates at start; its ws library negotiates
permessage-deflate on both sides), and the echo server with no proxy, the ceiling. The echo
server accepts permessage-deflate when the client offers it, and serves wss:// with a
self-signed certificate (the proxies do not verify it: mitmdump's ``ssl_insecure``,
Mockttp's ``ignoreHostHttpsErrors``). The client trusts mitmproxy's CA, Mockttp's and the
echo server's certificate.

The payloads: 32 B of JSON; 64 KiB of JSON records that repeat (deflate shrinks them to a
few percent), and 64 KiB of random base64 (to about 75 %). The same message is sent over
and over: the 64 KiB ones are larger than any deflate window, so one message does not make
the next smaller.

Besides msgs/s, the table has each proxy process's CPU time per echo (all its threads,
from the scheduler's counts): msgs/s stop at what the client and the echo server can do (the
direct case), CPU per echo does not.

The client is python-websockets, or with ``--client node`` Node's ws (`mockttp/echo_client.js`,
the same echoes, window and stopping rule; it compresses every message, as python-websockets
does). ws batches its writes (many frames to a read, which favours Mockttp) and runs zlib on
libuv's thread pool (with permessage-deflate it, not the proxy, is the limit): see
docs/performance.md. With ``--client aiohttp`` the client is aiohttp, and with ``--server
aiohttp`` so is the echo server (`echo_server.py --aiohttp`): both cost less per message than
python-websockets (aiohttp's frame reader is compiled), so that an intercept's msgs/s are not
capped by its peers as soon; aiohttp negotiates 15-bit deflate windows. aiohttp's client runs
over wss:// only: it asks a proxy for a ws:// URL in absolute form ("GET ws://..."), which
mitmproxy refuses.

Writes the table (markdown), a bar chart of msgs/s (SVG, drawn here: no plotting dependency)
and each round's results (JSON) to test-artifacts/bench/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import random
import ssl
import statistics
from dataclasses import dataclass
from html import escape
from pathlib import Path
from tempfile import NamedTemporaryFile

import echo_server
import proxies
import run
from proxies import ADDON, HERE, HOOKLESS, ROOT, Proxy, start_mitmdump, stop

#: Where the table and the chart go (git-ignored).
OUT = ROOT / "test-artifacts" / "bench"
#: A case stops sending after this many seconds (then waits for the echoes in flight).
MAX_SECS = 0.4
#: Round trips before the timed ones, on each new connection.
WARMUP = 20

#: (label in the table, short label in the chart, kind, what the URL's path is)
#: kinds: mitmdump arguments, or proxies.MOCKTTP / proxies.DIRECT
CaseSpec = tuple[str, str, tuple[str, ...] | str, str]
CASES: tuple[CaseSpec, ...] = (
    ("plain mitmdump", "plain mitmdump", (), "plain"),
    ("intercept, no handlers", "intercept, hooks on", ADDON, "intercept"),
    (
        "intercept, no handlers, wsroute_message_hooks=false",
        "intercept, hooks off",
        HOOKLESS,
        "intercept",
    ),
    ("mock echo", "mock, hooks on", ADDON, "mock"),
    ("mock echo, wsroute_message_hooks=false", "mock, hooks off", HOOKLESS, "mock"),
    ("Mockttp echo", "Mockttp thenEcho", proxies.MOCKTTP, "mock"),
    ("Mockttp pass-through", "Mockttp thenPassThrough", proxies.MOCKTTP, "peer"),
    (
        "python-websockets echo server, direct (no proxy)",
        "direct (no proxy)",
        proxies.DIRECT,
        "direct",
    ),
)

#: ``--deflate-negotiation``: an intercept that passes the upstream's permessage-deflate answer
#: on to the client (the addon), against one whose client gets the proxy's own answer, its
#: messages compressed again for the upstream (`per_side_deflate.py`), and both ways; over
#: the transports with permessage-deflate, 64 KiB only (32 B: within the spread).
PER_SIDE = (*ADDON, "-s", str(HERE / "per_side_deflate.py"))
NEGOTIATION_CASES: tuple[CaseSpec, ...] = (
    CASES[0],
    ("intercept, no handlers (the upstream's deflate answer)", "intercept", ADDON, "intercept"),
    (
        "intercept, the client's deflate answered by the proxy",
        "intercept, proxy's answer",
        PER_SIDE,
        "intercept",
    ),
    (
        "intercept, the proxy's deflate answer, compressing both ways",
        "intercept, both ways",
        (*PER_SIDE, "--set", "per_side_deflate=both"),
        "intercept",
    ),
    *(c for c in CASES if c[2] == proxies.DIRECT or c[0] == "Mockttp pass-through"),
)

#: The clients, by ``--client``, and the echo servers, by ``--server``.
CLIENTS = {"python": "python-websockets", "node": "Node ws", "aiohttp": "aiohttp"}
SERVERS = {"python": "python-websockets", "aiohttp": "aiohttp"}

#: (scheme, permessage-deflate offered)
TRANSPORTS = (("ws", False), ("ws", True), ("wss", False), ("wss", True))


def transport_name(scheme: str, deflate: bool) -> str:
    return f"{scheme}{' + permessage-deflate' if deflate else ''}"


def payloads() -> list[tuple[str, str]]:
    """(what, text): 32 B of JSON, 64 KiB of repeating JSON, 64 KiB of random base64."""
    small = json.dumps({"op": "tick", "seq": 12, "ok": True}, separators=(",", ":"))
    records: list[str] = []
    i = 0
    while sum(len(r) + 1 for r in records) < 65536:
        records.append(json.dumps({"id": i, "user": f"user{i % 50}", "status": "active",
                                   "score": i * 7 % 100, "tags": ["a", "b"]}))  # fmt: skip
        i += 1
    repeating = ("[" + ",".join(records))[:65535] + "]"
    rand = base64.b64encode(random.Random(0).randbytes(49152)).decode()
    assert (len(small), len(repeating), len(rand)) == (32, 65536, 65536)
    return [
        ("32 B JSON", small),
        ("65536 B repeating JSON", repeating),
        ("65536 B random base64", rand),
    ]


@dataclass
class Case:
    label: str
    short: str
    proxy: Proxy
    path: str

    def url(self, scheme: str, ws_port: int, wss_port: int) -> str:
        if self.path == "mock":
            return f"{scheme}://bench.invalid/mock"
        # wss:// to "localhost": Mockttp's certificate for a CONNECT to an IP address names
        # "localhost" only (it has no IP addresses); the echo server's names both
        host = f"127.0.0.1:{ws_port}" if scheme == "ws" else f"localhost:{wss_port}"
        return f"{scheme}://{host}/{self.path}"


def start_cases(
    confdir: str, server: str = "python", which: tuple[CaseSpec, ...] = CASES
) -> list[Case]:
    """One process per case of `which`, as in run.py: no case runs in a process others have
    used."""
    cases: list[Case] = []
    try:
        for label, short, kind, path in which:
            if kind == proxies.DIRECT:
                label = label.replace(SERVERS["python"], SERVERS[server])
            if isinstance(kind, tuple):
                p = start_mitmdump(label, confdir, *kind, "--set", "ssl_insecure=true")
            else:
                ca = str(Path(confdir, f"mockttp-ca-{len(cases)}.pem"))
                p = proxies.start_peer(label, kind, ca if kind == proxies.MOCKTTP else None)
            cases.append(Case(label, short, p, path))
    except BaseException:
        for c in cases:
            stop(c.proxy.proc)
        raise
    return cases


def trusted(confdir: str) -> list[str]:
    """The certificates a client trusts: mitmproxy's CA, Mockttp's CAs and the echo server's
    self-signed one."""
    ours = ("mitmproxy-ca-cert.pem", echo_server.CERT)
    names = sorted(os.listdir(confdir))
    return [str(Path(confdir, n)) for n in names if n in ours or n.startswith("mockttp-ca-")]


def client_context(confdir: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for cafile in trusted(confdir):
        ctx.load_verify_locations(cafile)
    return ctx


async def node_throughput(
    url: str, p: Proxy, payload: str, n: int, *, deflate: bool, cafiles: list[str],
    max_secs: float, warmup: int, window: int = 200,
) -> dict[str, float]:  # fmt: skip
    """`run.throughput_and_rtt`'s pipelined phase with Node's ws as the client."""
    with NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(payload)
        f.flush()
        client = await asyncio.create_subprocess_exec(
            "node", str(HERE / "mockttp" / "echo_client.js"), url, p.url or "-", f.name, str(n),
            str(max_secs), str(window), str(warmup), "1" if deflate else "0", ",".join(cafiles),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert client.stdin is not None and client.stdout is not None
        try:
            ready = await asyncio.wait_for(client.stdout.readline(), 60)
            if ready != b"ready\n":
                raise RuntimeError(f"echo_client.js for {p.name}, {url}: {ready!r}")
            cpu0, peers0 = p.cpu_ns(), proxies.peers_cpu_ns(client.pid)
            client.stdin.write(b"go\n")
            await client.stdin.drain()
            done = json.loads(await asyncio.wait_for(client.stdout.readline(), 120))
            cpu = (p.cpu_ns() - cpu0) / 1000 / max(done["received"], 1)
            peers = run.peers_busy(proxies.peers_cpu_ns(client.pid) - peers0, done["secs"])
            await asyncio.wait_for(client.wait(), 10)
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
    result = {"msgs": done["received"] / done["secs"], "peers": peers}
    return {**result, "cpu": cpu} if p.proc else result


async def aiohttp_throughput(
    url: str, p: Proxy, payload: str, n: int, *, deflate: bool, ssl: ssl.SSLContext | None,
    max_secs: float, warmup: int, window: int = 200,
) -> dict[str, float]:  # fmt: skip
    """`run.throughput_and_rtt`'s pipelined phase with aiohttp as the client (15-bit
    permessage-deflate windows offered, every message compressed)."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            url,
            proxy=p.url,
            ssl=ssl if ssl is not None else True,
            compress=15 if deflate else 0,
            max_msg_size=0,
            autoping=False,
            timeout=aiohttp.ClientWSTimeout(ws_close=10),
        ) as ws,  # fmt: skip
    ):
        if deflate and not ws.compress:
            raise RuntimeError(f"{p.name}, {url}: permessage-deflate was not negotiated")
        for _ in range(warmup):
            await ws.send_str(payload)
            await ws.receive_str()
        return await run.pipelined(ws.send_str, ws.receive_str, payload, p, n, window, max_secs)


Runs = dict[str, list[dict[str, float]]]


async def measure(
    confdir: str,
    ws_port: int,
    wss_port: int,
    rounds: int,
    quick: bool,
    client: str,
    server: str,
    negotiation: bool = False,
) -> tuple[list[Case], dict[tuple[str, str], Runs]]:
    """Every (payload, transport) group of every case, `rounds` times, interleaved; `client`
    and `server` (the echo server's kind) are keys of `CLIENTS` and `SERVERS`; `negotiation`:
    the `NEGOTIATION_CASES` instead."""
    n = {32: 1000, 65536: 200} if quick else {32: 5000, 65536: 1000}
    max_secs = MAX_SECS * (0.4 if quick else 1)
    cases = start_cases(confdir, server, NEGOTIATION_CASES if negotiation else CASES)
    try:
        ctx = client_context(confdir)
        # aiohttp asks a proxy for a ws:// URL in absolute form, "GET ws://...", which mitmproxy
        # refuses (400, "Invalid request scheme: ws"); for wss:// it sends a CONNECT
        transports = [t for t in TRANSPORTS if client != "aiohttp" or t[0] == "wss"]
        texts = payloads()
        if negotiation:
            transports = [t for t in transports if t[1]]
            texts = [(what, text) for what, text in texts if len(text) > 32]
        groups = [(what, text, scheme, deflate) for what, text in texts
                  for scheme, deflate in transports]  # fmt: skip
        results: dict[tuple[str, str], Runs] = {
            (what, transport_name(scheme, deflate)): {c.label: [] for c in cases}
            for what, _, scheme, deflate in groups
        }
        todo = [(g, c) for g in groups for c in cases]
        for i in range(rounds):
            for (what, text, scheme, deflate), c in todo[:: -1 if i % 2 else 1]:
                url = c.url(scheme, ws_port, wss_port)
                if client == "node":
                    result = await node_throughput(
                        url, c.proxy, text, n[len(text)], deflate=deflate,
                        cafiles=trusted(confdir), max_secs=max_secs, warmup=WARMUP,
                    )  # fmt: skip
                elif client == "aiohttp":
                    result = await aiohttp_throughput(
                        url, c.proxy, text, n[len(text)], deflate=deflate,
                        ssl=ctx if scheme == "wss" else None, max_secs=max_secs, warmup=WARMUP,
                    )  # fmt: skip
                else:
                    result = await run.throughput_and_rtt(
                        url, c.proxy, text, n[len(text)], 0,
                        compression="deflate" if deflate else None,
                        ssl=ctx if scheme == "wss" else None, max_secs=max_secs, warmup=WARMUP,
                    )  # fmt: skip
                results[what, transport_name(scheme, deflate)][c.label].append(result)
    finally:
        for c in cases:
            stop(c.proxy.proc)
    return cases, results


def table(
    cases: list[Case],
    results: dict[tuple[str, str], Runs],
    rounds: int,
    client: str,
    server: str = "python",
) -> list[str]:
    what = (f"msgs/s with 200 in flight, {CLIENTS[client]} client, {SERVERS[server]} echo "
            f"server: medians of {rounds} round{'s' if rounds > 1 else ''}")  # fmt: skip
    if len(proxies.CPUS) > 1:
        what += f"; proxies on CPU {min(proxies.PROXY_CPUS)}, client and echo servers on the others"
    lines = [f"| measurement ({what}) | value | vs plain mitmdump, same transport (range over "
             "rounds) | vs Mockttp |", "|---|---:|---:|---:|"]  # fmt: skip
    labels = [c.label for c in cases]
    msgs = tuple(m for m in run.METRICS if m[0] == "msgs")
    for (payload, transport), runs in results.items():
        lines += run.summarize(runs, labels, payload, f"{transport}, ", msgs)
    # What each proxy's process spent per echo, whatever the client and the echo server (which
    # share the other CPU, and cap msgs/s: see the direct case) could do.
    proxied = [c.label for c in cases if c.proxy.proc is not None]
    for (payload, transport), runs in results.items():
        lines += run.summarize(runs, proxied, payload, f"{transport}, ", (CPU,))
    # How busy the client and the echo server kept their CPU: near 100 %, they were the limit.
    for (payload, transport), runs in results.items():
        for label in labels:
            busy = [r["peers"] for r in runs[label]]
            spread = f" ({min(busy):.0f} to {max(busy):.0f})" if len(busy) > 1 else ""
            name = f"{payload} {PEERS[1]}, {transport}, {label}"
            lines.append(run.row(name, statistics.median(busy), PEERS[2], None, spread))
    return lines


#: The proxy's CPU time per echo (both messages through it), all its threads; lower is better.
CPU = ("cpu", "proxy CPU per echo", "µs", False)


#: The share of their CPU's time that the client and the echo server used (`run.peers_busy`).
PEERS = ("peers", "client and echo server CPU busy", "%", False)


#: Bar colours of the transports, in `TRANSPORTS` order.
COLOURS = ("#9ecae1", "#3182bd", "#fdae6b", "#e6550d")


def svg_chart(cases: list[Case], results: dict[tuple[str, str], Runs], title: str) -> str:
    """Horizontal bars of msgs/s (medians), log scale: a panel per payload, a group of bars
    per case, a bar per transport."""
    medians = {
        key: {label: statistics.median(r["msgs"] for r in rs) for label, rs in runs.items()}
        for key, runs in results.items()
    }
    payload_names = list(dict.fromkeys(p for p, _ in results))
    measured = {t for _, t in results}
    shown = [(transport_name(s, d), c) for (s, d), c in zip(TRANSPORTS, COLOURS, strict=True)
             if transport_name(s, d) in measured]  # fmt: skip
    values = [v for m in medians.values() for v in m.values() if v > 0]
    steps = [k * 10**e for e in range(-1, 8) for k in (1, 2, 5)]
    lo = max(v for v in steps if v <= min(values) / 2)  # the shortest bar still shows
    hi = min(v for v in steps if v >= max(values))
    left, right, bar, gap, head = 190, 70, 9, 8, 44
    width = 960
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + plot_w * (math.log10(max(v, lo)) - math.log10(lo)) / math.log10(hi / lo)

    group_h = bar * len(shown) + gap
    panel_h = head + group_h * len(cases) + 10
    legend_h = 30
    height = 40 + legend_h + panel_h * len(payload_names) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for i, (name, colour) in enumerate(shown):
        lx = left + i * 180
        out.append(f'<rect x="{lx}" y="36" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{lx + 16}" y="46">{escape(name)}</text>')
    y0 = 40 + legend_h
    for payload in payload_names:
        out.append(f'<text x="{left}" y="{y0 + 16}" font-size="13" font-weight="bold">'
                   f"{escape(payload)}: msgs/s (log scale)</text>")  # fmt: skip
        top, bottom = y0 + head - 6, y0 + head + group_h * len(cases) - gap + 4
        for v in (v for v in steps if lo <= v <= hi):
            major = math.log10(v).is_integer()
            out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top}" y2="{bottom}" '
                       f'stroke="{"#bbb" if major else "#eee"}"/>')  # fmt: skip
            out.append(f'<text x="{x(v):.1f}" y="{top - 3}" text-anchor="middle" '
                       f'fill="#555">{run.number(v)}</text>')  # fmt: skip
        for i, c in enumerate(cases):
            gy = y0 + head + i * group_h
            out.append(f'<text x="{left - 6}" y="{gy + group_h / 2}" text-anchor="end">'
                       f"{escape(c.short)}</text>")  # fmt: skip
            for j, (transport, colour) in enumerate(shown):
                v = medians[payload, transport][c.label]
                by = gy + j * bar
                out.append(f'<rect x="{left}" y="{by}" width="{x(v) - left:.1f}" '
                           f'height="{bar - 1}" fill="{colour}"><title>{escape(transport)}: '
                           f"{run.number(v)} msg/s</title></rect>")  # fmt: skip
                out.append(f'<text x="{x(v) + 3:.1f}" y="{by + bar - 1.5}" font-size="8" '
                           f'fill="#333">{run.number(v)}</text>')  # fmt: skip
        y0 += panel_h
    out.append("</svg>")
    return "\n".join(out) + "\n"


async def memory(confdir: str, ws_port: int, wss_port: int, n: int) -> list[str]:
    """RSS growth of each mitmdump case over `n` echoes of 32 B on one socket, after 1,000 to
    warm up, on every transport: each in a fresh process (nothing else has run in it)."""
    from websockets.asyncio.client import connect

    lines = [f"| RSS growth over {n:,} echoes of 32 B on one socket (fresh process each) "
             "| MiB |", "|---|---:|"]  # fmt: skip
    ctx = None
    for label, _, kind, path in CASES:
        if not isinstance(kind, tuple):
            continue
        for scheme, deflate in TRANSPORTS:
            proxy = start_mitmdump(label, confdir, *kind, "--set", "ssl_insecure=true")
            try:
                ctx = ctx or client_context(confdir)
                url = Case(label, "", proxy, path).url(scheme, ws_port, wss_port)
                async with connect(
                    url, proxy=proxy.url, ssl=ctx if scheme == "wss" else None,
                    compression="deflate" if deflate else None, ping_interval=None,
                ) as ws:  # fmt: skip
                    await run.echoes(ws, 1000)
                    before = proxy.rss_mib()
                    await run.echoes(ws, n)
                    growth = proxy.rss_mib() - before
            finally:
                stop(proxy.proc)
            line = f"| {label}, {transport_name(scheme, deflate)} | {growth:.1f} |"
            print(line, flush=True)
            lines.append(line)
    return lines


async def main(
    confdir: str, ws_port: int, wss_port: int, rounds: int, quick: bool, client: str = "python",
    server: str = "python", negotiation: bool = False,
) -> tuple[list[str], list[Path]]:  # fmt: skip
    """The matrix's table, and the files written (table and chart). `confdir` is mitmdump's
    (a temporary directory), where the wss:// echo server wrote its certificate
    (`echo_server.CERT`) and Mockttp writes its CAs'; the echo servers on `ws_port` and
    `wss_port` are of the `server` kind; `negotiation`: ``--deflate-negotiation``."""
    cases, results = await measure(
        confdir, ws_port, wss_port, rounds, quick, client, server, negotiation
    )
    lines = table(cases, results, rounds, client, server)
    OUT.mkdir(parents=True, exist_ok=True)
    name = "-".join(
        ["transports"]
        + [f"{kind}-{k}" for kind, k in (("client", client), ("server", server)) if k != "python"]
        + ["deflate-negotiation"] * negotiation
    )
    md, svg, raw = OUT / f"{name}.md", OUT / f"{name}.svg", OUT / f"{name}.json"
    md.write_text("\n".join(lines) + "\n")
    raw.write_text(json.dumps({f"{p}, {t}": runs for (p, t), runs in results.items()}, indent=1))
    title = (f"Echoes per second, 200 in flight on one connection (medians of {rounds} "
             f"round{'s' if rounds > 1 else ''}; higher is better)")  # fmt: skip
    svg.write_text(svg_chart(cases, results, title))
    return lines, [md, svg, raw]
