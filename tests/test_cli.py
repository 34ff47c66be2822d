"""The `mitm-wsroute` command, run as a user runs it: a real process, a real client."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from mitm_wsroute.cli import ADDON_PATH, _parser, mitmproxy_args

COMMAND = str(Path(sys.executable).with_name("mitm-wsroute"))
ROUTES = """
from mitm_wsroute import route_web_socket

@route_web_socket("**/hello")
def hello(ws):
    ws.send("hello from the CLI")
"""


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.py"
    path.write_text(textwrap.dedent(ROUTES))
    return path


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Run a proxy command until it says where it listens (our line, or mitmdump's); returns
    the process and the proxy's URL."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.search(r"mitm-wsroute: proxy at (\S+), CA certificate (\S+)", line):
            assert Path(m.group(2)).is_file()
            return proc, m.group(1)
        if m := re.search(r"proxy listening at ([\d.]+:\d+)", line):
            return proc, f"http://{m.group(1)}"
    raise AssertionError(f"no start line; exit code {proc.wait()}")


@pytest.fixture
def run() -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def run_(*args: str) -> str:
        proc, url = start(*args)
        procs.append(proc)
        return url

    yield run_
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.mark.parametrize(
    "command", [[COMMAND], [sys.executable, "-m", "mitm_wsroute"]], ids=["script", "module"]
)
def test_runs_the_routes_and_says_where(
    run: object, routes: Path, tmp_path: Path, command: list[str]
) -> None:
    url = run(  # type: ignore[operator]
        *command, str(routes), "-p", "0", "--listen-host", "127.0.0.1",
        "--", "--set", f"confdir={tmp_path}",
    )  # fmt: skip
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    with connect("ws://nowhere.invalid/hello", proxy=url) as c:
        assert c.recv(5) == "hello from the CLI"


def test_addon_path_for_mitmdump(run: object, routes: Path, tmp_path: Path) -> None:
    out = subprocess.run([COMMAND, "--addon-path"], capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == ADDON_PATH
    mitmdump = str(Path(sys.executable).with_name("mitmdump"))
    url = run(  # type: ignore[operator]
        mitmdump, "-s", out.stdout.strip(), "--set", f"wsroute_scripts={routes}",
        "--listen-host", "127.0.0.1", "-p", "0", "--set", f"confdir={tmp_path}",
    )  # fmt: skip
    with connect("ws://nowhere.invalid/hello", proxy=url) as c:
        assert c.recv(5) == "hello from the CLI"


def _taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.py"], "mitm-wsroute: error: no such route script: missing.py"),
        (["--", "--set", "wsroute_base_url=nope"], "mitm-wsroute: Cannot parse wsroute_base_url*"),
        (["-p", "TAKEN"], "mitm-wsroute: error: *address already in use"),
        (["--har-update"], "mitm-wsroute: error: --har-url and --har-update need --har FILE"),
        (
            ["--", "--set", "wsroute_max_mesage_size=5"],
            "mitm-wsroute: Unknown option wsroute_max_mesage_size; "
            "did you mean wsroute_max_message_size?",
        ),
    ],
    ids=["missing-script", "bad-option", "port-in-use", "har-update-alone", "mistyped-option"],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    ports = _taken_port()
    args = [str(next(ports)) if a == "TAKEN" else a for a in args]
    passed_on = (
        ["--set", f"confdir={tmp_path}"] if "--" in args else ["--", "--set", f"confdir={tmp_path}"]
    )
    out = subprocess.run(
        [COMMAND, "--listen-host", "127.0.0.1", *args, *passed_on],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    ports.close()
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert re.fullmatch(re.escape(message).replace(r"\*", ".*"), lines[0]), lines[0]


def args_for(*argv: str) -> list[str]:
    own, rest = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, ())
    )
    return mitmproxy_args(_parser().parse_args(own), rest)


@pytest.mark.parametrize(
    "argv, listen",
    [
        ((), ["--listen-host", "127.0.0.1"]),
        (("--listen-host", "0.0.0.0"), ["--listen-host", "0.0.0.0"]),
        (("--", "--listen-host", "::"), ["--listen-host", "::"]),
        (("--", "--listen-host=::"), ["--listen-host=::"]),
        (("--", "--set", "listen_host=0.0.0.0"), ["--set", "listen_host=0.0.0.0"]),
    ],
    ids=["default", "own-option", "passed-on", "passed-on-equals", "passed-on-set"],
)
def test_listens_on_loopback_unless_told_otherwise(
    argv: tuple[str, ...], listen: list[str]
) -> None:
    assert args_for(*argv) == listen  # one listen host: the user's, else 127.0.0.1


def test_listens_on_loopback_only_by_default(routes: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [COMMAND, str(routes), "-p", "0", "--", "--set", f"confdir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "mitm-wsroute: proxy at" in line:
                break
        assert any(re.search(r"proxy listening at 127\.0\.0\.1:\d+", s) for s in seen), seen
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_record_mode_once_records_then_replays_with_the_server_gone(
    run: object, tmp_path: Path
) -> None:
    from websockets.sync.server import serve

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(f"echo {message}")

    har = tmp_path / "cassette.har"
    with serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/feed"
        args = [COMMAND, "--har", str(har), "--record-mode", "once", "-p", "0",
                "--listen-host", "127.0.0.1", "--", "--set", f"confdir={tmp_path}"]  # fmt: skip
        recorder, proxy = start(*args)
        try:
            with connect(url, proxy=proxy) as c:  # no cassette yet: recorded
                c.send("hi")
                assert c.recv(5) == "echo hi"
            assert recorder.stdout is not None
            for line in recorder.stdout:  # written when the socket ends
                if "HAR recording: wrote 1 WebSocket entries" in line:
                    break
        finally:
            os.killpg(recorder.pid, signal.SIGTERM)
            recorder.wait(10)
        server.shutdown()
    proxy = run(*args)  # type: ignore[operator]  # the cassette exists: replayed
    with connect(url, proxy=proxy) as c:
        c.send("hi")
        assert c.recv(5) == "echo hi"


def test_record_mode_is_checked_and_passed_on(tmp_path: Path) -> None:
    ns = _parser().parse_args(["--har", "x.har", "--record-mode", "new_episodes"])
    assert mitmproxy_args(ns, [])[-2:] == ["--set", "wsroute_record_mode=new_episodes"]
    out = subprocess.run([COMMAND, "--record-mode", "sometimes"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice: 'sometimes'" in out.stderr


def test_console_option_is_passed_on() -> None:
    assert args_for("--console")[-2:] == ["--set", "wsroute_console=127.0.0.1:8082"]
    assert args_for("--console", "127.0.0.1:0")[-2:] == ["--set", "wsroute_console=127.0.0.1:0"]
    assert "wsroute_console" not in " ".join(args_for())


def test_console_url_is_printed_and_needs_its_token(routes: Path, tmp_path: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    proc = subprocess.Popen(
        [COMMAND, str(routes), "-p", "0", "--console", "127.0.0.1:0",
         "--", "--set", f"confdir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if m := re.search(
                r"mitm-wsroute: console at (http://127\.0\.0\.1:\d+)/\?token=(\S+)", line
            ):
                break
        else:
            raise AssertionError(f"no console line; exit code {proc.wait()}")
        base, token = m.groups()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(
            base + "/api/sockets", headers={"Authorization": f"Bearer {token}"}
        )
        with opener.open(request, timeout=10) as response:
            assert json.load(response) == []
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(base + "/api/sockets", timeout=10)
        assert e.value.code == 401
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.mark.parametrize(
    "console, message",
    [
        (
            "nonsense",
            "mitm-wsroute: Cannot parse wsroute_console option nonsense: expected HOST:PORT*",
        ),
        ("127.0.0.1:TAKEN", "mitm-wsroute: error: wsroute: cannot serve the console at *"),
    ],
    ids=["bad-address", "port-in-use"],
)
def test_console_errors_are_one_line(tmp_path: Path, console: str, message: str) -> None:
    ports = _taken_port()
    console = console.replace("TAKEN", str(next(ports)))
    out = subprocess.run(
        [COMMAND, "-p", "0", "--console", console, "--", "--set", f"confdir={tmp_path}"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    ports.close()
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert re.fullmatch(re.escape(message).replace(r"\*", ".*"), lines[0]), lines[0]
