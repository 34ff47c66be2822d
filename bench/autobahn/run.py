"""`make autobahn`: Autobahn|Testsuite's cases through plain mitmdump and through the addon.

Each mode is one run of Autobahn's ``wstest`` (Python 2.7, from .venv-autobahn/), one at a
time, everything on 127.0.0.1 and ephemeral ports:

- fuzzingclient (Autobahn is the client): a python-websockets echo server (permessage-deflate
  on, no size limits), reached directly (the reference), through ``mitmdump --mode
  reverse:...`` plain, and with the addon: every socket intercepted (``intercept.py``) or
  mocked by an echo (``mock.py``), with ``wsroute_message_hooks`` on and off.
- fuzzingserver (Autobahn is the server): a python-websockets client that runs every case and
  echoes what it gets, directly and through mitmdump in regular mode (``proxy=``): plain,
  plain with a script that adds nothing (``noop.py``, as the addon's modes load one), and
  intercepting.

Reports (Autobahn's JSON and HTML, logs of every process) go to test-artifacts/autobahn/MODE/.
Prints the count of each result per mode, and the cases where a mode through mitmdump did
worse than plain mitmdump; exits 1 if a case FAILED through the addon that did not fail through
plain mitmdump. ``--report`` prints that again from the reports on disk, without running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "test-artifacts" / "autobahn"
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
WSTEST_PYTHON = ROOT / ".venv-autobahn" / "bin" / "python"
#: wstest, with its fuzzingserver on 127.0.0.1 (it listens on every interface otherwise) and
#: telling the port it got (the spec's URL says port 0).
WSTEST = """
import sys
from autobahntestsuite import fuzzing, wstest
listen_ws = fuzzing.listenWS
def listen_local(factory, context=None, backlog=50, interface=''):
    port = listen_ws(factory, context, backlog, '127.0.0.1')
    sys.stdout.write('fuzzingserver listening on port %d\\n' % port.getHost().port)
    sys.stdout.flush()
    return port
fuzzing.listenWS = listen_local
wstest.run()
"""
#: python-websockets takes at most 4096 frames per message by default: Autobahn's 9.3 and 9.4
#: send 4 MiB in frames of 64 bytes and more.
PEER_ENV = {**os.environ, "WEBSOCKETS_MAX_FRAGMENTS": str(2**20)}
RESULTS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
#: How bad a result is, for "worse than plain mitmdump".
RANK = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1, "UNIMPLEMENTED": 2}
CLIENT, SERVER = "fuzzingclient", "fuzzingserver"


ADDON = str(ROOT / "addons" / "wsroute.py")


def addon(script: str, hooks: bool) -> tuple[str, ...]:
    return ("-s", ADDON,
            "--set", f"wsroute_scripts={HERE / script}",
            "--set", f"wsroute_message_hooks={str(hooks).lower()}")  # fmt: skip


@dataclass(frozen=True)
class Mode:
    name: str  # also Autobahn's agent name, and the folder of its reports
    fuzzer: str  # CLIENT: Autobahn is the client; SERVER: it is the server
    proxy: tuple[str, ...] | None  # mitmdump's arguments; None: no proxy

    @property
    def with_addon(self) -> bool:
        return ADDON in (self.proxy or ())


MODES = [
    Mode("client-direct", CLIENT, None),
    Mode("client-plain", CLIENT, ()),
    Mode("client-intercept", CLIENT, addon("intercept.py", True)),
    Mode("client-intercept-nohooks", CLIENT, addon("intercept.py", False)),
    Mode("client-mock", CLIENT, addon("mock.py", True)),
    Mode("client-mock-nohooks", CLIENT, addon("mock.py", False)),
    Mode("server-direct", SERVER, None),
    Mode("server-plain", SERVER, ()),
    # plain mitmdump with a script that adds nothing, as the addon's modes load one
    Mode("server-plain-script", SERVER, ("-s", str(HERE / "noop.py"))),
    Mode("server-intercept", SERVER, addon("intercept.py", True)),
    Mode("server-intercept-nohooks", SERVER, addon("intercept.py", False)),
]


class Processes:
    """The processes of one mode, each logging to a file of its own; all killed at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.logs, start_new_session=True,
            )  # fmt: skip
        self.procs.append(proc)
        return Proc(name, proc, self.logs / f"{name}.log")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:  # mitmdump can miss a SIGTERM (bench/proxies.py)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def port(self, pattern: str, timeout: float = 60) -> int:
        """The port the process printed (`pattern`'s group), once it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if m := re.search(pattern, self.log.read_text(errors="replace")):
                return int(m.group(1))
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not start; see {self.log}")

    def wait(self) -> None:
        if self.proc.wait() != 0:
            raise SystemExit(f"{self.name} failed (exit {self.proc.returncode}); see {self.log}")


@contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    procs = Processes(logs)
    try:
        yield procs
    finally:
        procs.stop_all()


def commit() -> str:
    """The checkout's commit, and whether the addon differs from it (others may be editing)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "mitm_wsroute", "addons"],
                           capture_output=True, text=True).stdout  # fmt: skip
    return head.stdout.strip() + ("+changes" if dirty else "")


def start_mitmdump(procs: Processes, mode: Mode, upstream_port: int | None) -> int:
    assert mode.proxy is not None
    reverse = ("--mode", f"reverse:http://127.0.0.1:{upstream_port}") if upstream_port else ()
    mitmdump = procs.start("mitmdump", [
        MITMDUMP, "--listen-host", "127.0.0.1", "--listen-port", "0", *reverse,
        "--set", f"confdir={procs.logs / 'confdir'}", "--set", "flow_detail=0", *mode.proxy,
    ])  # fmt: skip
    return mitmdump.port(r"listening at [\d.]+:(\d+)")


def run_mode(mode: Mode, cases: list[str], exclude: list[str]) -> None:
    out = OUT / mode.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "commit").write_text(commit())
    spec: dict[str, Any] = {"outdir": str(out), "cases": cases, "exclude-cases": exclude,
                            "exclude-agent-cases": {}}  # fmt: skip
    wstest = [str(WSTEST_PYTHON), "-c", WSTEST, "-s", str(out / "spec.json")]
    with processes(out) as procs:
        if mode.fuzzer == CLIENT:
            server = procs.start("echo-server", [sys.executable, __file__, "echo-server"], PEER_ENV)
            port = server.port(r"echo server on port (\d+)")
            if mode.proxy is not None:
                port = start_mitmdump(procs, mode, port)
            spec["servers"] = [{"agent": mode.name, "url": f"ws://127.0.0.1:{port}"}]
            (out / "spec.json").write_text(json.dumps(spec, indent=2))
            procs.start("wstest", [*wstest, "-m", CLIENT]).wait()
        else:
            spec["url"] = "ws://127.0.0.1:0"
            (out / "spec.json").write_text(json.dumps(spec, indent=2))
            fuzzer = procs.start("wstest", [*wstest, "-m", SERVER, "-u", "0"])
            url = f"ws://127.0.0.1:{fuzzer.port(r'fuzzingserver listening on port (\d+)')}"
            proxy = (
                f"http://127.0.0.1:{start_mitmdump(procs, mode, None)}"
                if mode.proxy is not None
                else ""
            )
            procs.start("client", [sys.executable, __file__, "client", url, mode.name, proxy],
                        PEER_ENV).wait()  # fmt: skip


# -- the peers: python-websockets, each in a process of its own ---------------------------------


async def echo_server() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, max_size=None, max_queue=None,
                     ping_interval=None) as server:  # fmt: skip
        print(f"echo server on port {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


async def fuzzing_client(url: str, agent: str, proxy: str | None) -> None:
    """Autobahn's protocol for a client under test: every case, then the reports."""
    from websockets.asyncio.client import connect

    async with connect(f"{url}/getCaseCount", proxy=proxy) as ws:
        count = int(await ws.recv())
    for case in range(1, count + 1):
        print(f"case {case} of {count}", flush=True)
        try:
            case_url = f"{url}/runCase?case={case}&agent={agent}"
            async with (
                asyncio.timeout(600),  # Autobahn's own waits are shorter
                connect(
                    case_url, proxy=proxy, max_size=None, max_queue=None, ping_interval=None
                ) as ws,
            ):
                async for message in ws:
                    await ws.send(message)
        except Exception as e:  # what Autobahn reports for the case
            print(f"case {case}: {e!r}", flush=True)
    async with connect(f"{url}/updateReports?agent={agent}", proxy=proxy) as ws:
        await ws.wait_closed()  # once Autobahn wrote the reports


# -- the results --------------------------------------------------------------------------------


def load(mode: Mode) -> dict[str, dict[str, Any]] | None:
    index = OUT / mode.name / "index.json"
    if not index.exists():
        return None
    results: dict[str, dict[str, Any]] = json.loads(index.read_text())[mode.name]
    return results


def saved(mode: Mode, name: str) -> str:
    """What run_mode noted in the mode's folder: its minutes, the commit it ran."""
    path = OUT / mode.name / name
    return path.read_text().strip() if path.exists() else ""


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(n) for n in case.split("."))


def badness(result: dict[str, Any]) -> tuple[int, int]:
    return RANK.get(result["behavior"], 3), RANK.get(result["behaviorClose"], 3)


def describe(result: dict[str, Any]) -> str:
    return f"{result['behavior']} (close {result['behaviorClose']}, {result['remoteCloseCode']})"


def report() -> bool:
    """Print the tables; True if a case FAILED through the addon but not through plain mitmdump."""
    regression = False
    for fuzzer in (CLIENT, SERVER):
        modes = [(m, r) for m in MODES if m.fuzzer == fuzzer and (r := load(m)) is not None]
        if not modes:
            continue
        base_mode = next((m for m, _ in modes if m.proxy == ()), None) or modes[0][0]
        base = load(base_mode) or {}
        role = "client" if fuzzer == CLIENT else "server"
        print(f"\n{fuzzer} (Autobahn is the {role}); worse: than in {base_mode.name}\n")
        print("| mode | cases | " + " | ".join(RESULTS) + " | other | worse | time | commit |")
        print("|---" * (len(RESULTS) + 6) + "|")
        worse_lists = []
        for mode, results in modes:
            counts = Counter(r["behavior"] for r in results.values())
            other = ", ".join(f"{k} {n}" for k, n in counts.items() if k not in RESULTS)
            compared = mode.proxy is not None and mode is not base_mode  # not direct, not plain
            worse = sorted((c for c, r in results.items() if compared and c in base
                            and badness(r) > badness(base[c])), key=case_key)  # fmt: skip
            print(f"| {mode.name} | {len(results)} | " + " | ".join(str(counts[k]) for k in RESULTS)
                  + f" | {other} | {len(worse) if compared else ''}"
                  + f" | {saved(mode, 'minutes')} | {saved(mode, 'commit')} |")  # fmt: skip
            worse_lists += [(mode, c, results[c]) for c in worse]
            regression |= mode.with_addon and any(
                results[c]["behavior"] == "FAILED" != base[c]["behavior"] for c in worse
            )
        for mode, case, result in worse_lists:
            print(
                f"{mode.name} {case}: {describe(result)}; {base_mode.name}: {describe(base[case])}"
            )
    return regression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", action="append", choices=[m.name for m in MODES],
                        help="run only this mode (repeatable); default: all")  # fmt: skip
    parser.add_argument("--cases", default="*", help="Autobahn's case globs, comma-separated")
    parser.add_argument("--exclude", default="", help="cases to leave out, e.g. '9.*'")
    parser.add_argument("--report", action="store_true", help="only print the saved results")
    args = parser.parse_args()
    if not args.report and not WSTEST_PYTHON.exists():
        raise SystemExit(f"{WSTEST_PYTHON} is missing: run `make autobahn`")
    for mode in [] if args.report else [m for m in MODES if m.name in (args.mode or [m.name])]:
        print(f"== {mode.name}", flush=True)
        start = time.monotonic()
        run_mode(mode, args.cases.split(","), [c for c in args.exclude.split(",") if c])
        took = f"{(time.monotonic() - start) / 60:.1f} min"
        (OUT / mode.name / "minutes").write_text(took)
        print(f"   {took}", flush=True)
    if report():
        raise SystemExit("a case FAILED through the addon that plain mitmdump passed")


if __name__ == "__main__":
    if sys.argv[1:2] == ["echo-server"]:
        asyncio.run(echo_server())
    elif sys.argv[1:2] == ["client"]:
        asyncio.run(fuzzing_client(sys.argv[2], sys.argv[3], sys.argv[4] or None))
    else:
        main()
