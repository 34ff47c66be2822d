"""Starting and stopping the processes of the benchmark: proxies and the echo server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: mitmdump arguments that load the addon with the benchmark's route script.
ADDON = (
    "-s",
    str(ROOT / "addons" / "wsroute.py"),
    "--set",
    f"wsroute_scripts={HERE / 'routes.py'}",
)
#: The same, without mitmproxy's per-message hooks for routed sockets.
HOOKLESS = (*ADDON, "--set", "wsroute_message_hooks=false")
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
CPUS = sorted(os.sched_getaffinity(0))
#: Where the proxies run, and where this client and the echo server run.
PROXY_CPUS, CLIENT_CPUS = ({CPUS[-1]}, set(CPUS[:-1])) if len(CPUS) > 1 else (set(CPUS), set(CPUS))


@dataclass
class Proxy:
    """A proxy process; with no process, the direct case (clients connect to the server)."""

    name: str
    proc: subprocess.Popen[str] | None
    port: int

    @property
    def url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}" if self.proc else None

    def cpu_ns(self) -> int:
        """CPU time the process has used so far (`cpu_ns`); 0 for the direct case."""
        return 0 if self.proc is None else cpu_ns(self.proc.pid)

    def rss_mib(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kib / 1024


def cpu_ns(pid: int) -> int:
    """CPU time process `pid` has used so far, all its threads (Node's zlib and TLS work on
    threads of their own), in ns: the scheduler's count, not the 10 ms ticks of ``stat``."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


#: The echo servers' processes, once started: the peers' CPU time counts theirs (`peers_cpu_ns`).
ECHO_PIDS: list[int] = []


def peers_cpu_ns(client: int | None = None) -> int:
    """CPU time the peers have used so far: the echo servers and the client (process `client`,
    or this one, all its threads)."""
    own = time.process_time_ns() if client is None else cpu_ns(client)
    return own + sum(cpu_ns(pid) for pid in ECHO_PIDS)


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
            # keep draining output so the process never blocks on a full pipe; a thread of its
            # own, not the event loop's executor, which a dozen such reads would fill up
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(m.group(1))
    raise SystemExit(f"{cmd[0]} did not start: exit code {proc.wait()}")


def start_mitmdump(
    name: str, confdir: str, *args: str, prefix: tuple[str, ...] = (), cpus: set[int] = PROXY_CPUS
) -> Proxy:
    """mitmdump on an ephemeral port; `prefix` runs it under another program (valgrind)."""
    cmd = [*prefix, MITMDUMP, "--listen-host", "127.0.0.1", "--listen-port", "0", "--set",
           f"confdir={confdir}", "--set", "connection_strategy=lazy", "--set", "flow_detail=0",
           *args]  # fmt: skip
    proc, port = start(cmd, r"listening at [\d.]+:(\d+)", cpus)
    return Proxy(name, proc, port)


def stop(proc: subprocess.Popen[str] | None) -> None:
    """SIGTERM, again every 2 s for 30 s, then SIGKILL. mitmproxy can miss a SIGTERM right after
    a burst of connections: each log line wakes its event loop through asyncio's self-pipe
    (`call_soon_threadsafe`), a burst fills that pipe, and the signal's wake-up byte is lost."""
    if proc is None:
        return
    for _ in range(15):
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(2)
            return
        except subprocess.TimeoutExpired:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


#: The peers: Mockttp as a proxy (npm, pinned in bench/mockttp), and no proxy at all.
MOCKTTP, DIRECT = "mockttp", "direct"


def peers(upstream: str) -> list[tuple[str, str, str]]:
    """What the bench compares our routes with: (label, peer kind, URL). Mockttp's rules echo
    sockets to bench.invalid and pass the others through, like our mock and intercept."""
    return [
        ("Mockttp echo", MOCKTTP, "ws://bench.invalid/mock"),
        ("Mockttp pass-through", MOCKTTP, f"{upstream}/peer"),
        ("python-websockets echo server, direct (no proxy)", DIRECT, f"{upstream}/direct"),
    ]


def start_peer(label: str, kind: str, ca: str | None = None) -> Proxy:
    """A peer; with `ca`, Mockttp intercepts TLS too, with a CA whose certificate it writes to
    that path (for the client to trust), and passes through to any upstream certificate."""
    if kind == DIRECT:
        return Proxy(label, None, 0)
    cmd = ["node", str(HERE / "mockttp" / "proxy.js"), *(("--ca", ca) if ca else ())]
    proc, port = start(cmd, r"listening at [\d.]+:(\d+)", PROXY_CPUS)
    return Proxy(label, proc, port)


def cases(upstream: str) -> list[tuple[str, tuple[str, ...], str]]:
    """What the bench compares: (label, mitmdump arguments, URL); plain mitmdump first, the base
    of every ratio. `upstream` is the echo server's ws:// URL."""
    return [
        ("plain mitmdump", (), f"{upstream}/plain"),
        ("intercept, no handlers", ADDON, f"{upstream}/intercept"),
        ("intercept, Python handlers forwarding both ways", ADDON, f"{upstream}/handlers"),
        ("mock echo", ADDON, "ws://bench.invalid/mock"),
        # what mitmproxy's per-message hooks cost: the same routes without them
        ("intercept, no handlers, wsroute_message_hooks=false", HOOKLESS, f"{upstream}/intercept"),
        ("mock echo, wsroute_message_hooks=false", HOOKLESS, "ws://bench.invalid/mock"),
    ]
