"""The user guide: every Python example in README.md and docs/*.md runs, so none can rot.

A Python block is preceded by an HTML comment saying what it is (docs/index.md, "About this
site"): ``<!-- example: script NAME -->`` a route script, loaded by a real proxy
(`WsRouteProxy`) and driven by a real python-websockets client (and server) by the check of
that name below; ``<!-- example: test NAME -->`` a pytest module, run by pytest with the
plugin; ``<!-- example: program NAME -->`` the blocks of one page with that name, in order, one
program run in a fresh folder; ``<!-- example: fragment -->`` compiled only. The build of the
site itself (``mkdocs build --strict``) runs in ``make test`` before pytest; here, that the
build can fail: a broken link to a project file or to an anchor is an error.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import ServerConnection, serve

from mitm_wsroute.testing import WsRouteProxy
from tests.sockets import sync_client_tls

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = ("script", "test", "program", "fragment")

_MARKER = re.compile(r"<!-- example: (?P<kind>\S+)(?: (?P<name>\S+))? -->")
_FENCE = re.compile(r"^```(?P<info>.*)$")


@dataclass(frozen=True)
class Example:
    page: Path
    line: int  # of the block's first line of code, 1-based
    kind: str  # one of KINDS, or "" for a Python block without a marker
    name: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse(page: Path) -> list[Example]:
    """The Python blocks of a page, each with the marker before it (blank lines between)."""
    lines = page.read_text().split("\n")
    found: list[Example] = []
    marker: re.Match[str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip():
                marker = _MARKER.fullmatch(line.strip())
            i += 1
            continue
        end = lines.index("```", i + 1)
        if fence.group("info").split()[:1] == ["python"]:
            kind, name = (marker.group("kind"), marker.group("name") or "") if marker else ("", "")
            found.append(Example(page, i + 2, kind, name, "\n".join(lines[i + 1 : end]) + "\n"))
        marker = None
        i = end + 1
    return found


EXAMPLES = [e for page in PAGES for e in parse(page)]


def of_kind(kind: str) -> list[Example]:
    return [e for e in EXAMPLES if e.kind == kind]


# -- every block is accounted for ------------------------------------------------------------


def test_every_python_block_says_what_it_is() -> None:
    bad = [f"{e.where}: {e.kind or 'no marker'}" for e in EXAMPLES if e.kind not in KINDS]
    assert not bad, "Python blocks without <!-- example: KIND NAME --> before them:\n" + "\n".join(
        bad
    )
    unnamed = [e.where for e in EXAMPLES if e.kind != "fragment" and not e.name]
    assert not unnamed, f"examples without a name: {unnamed}"


def test_parse_finds_markers_and_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- example: script one -->\n\n```python\na = 1\n```\n\ntext\n\n```python\nb = 2\n```\n"
        '\n<!-- example: fragment -->\n```python title="x.py"\nc(\n```\n\n```\nnot python\n```\n'
    )
    assert [(e.line, e.kind, e.name, e.code) for e in parse(page)] == [
        (4, "script", "one", "a = 1\n"),
        (10, "", "", "b = 2\n"),
        (15, "fragment", "", "c(\n"),
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.where)
def test_compiles(example: Example) -> None:
    compile(example.code, example.where, "exec")


def test_every_script_and_test_has_its_check() -> None:
    scripts = {e.name for e in of_kind("script")}
    assert sorted(scripts) == sorted(SCRIPT_CHECKS), "a route-script example without a check"
    names = [e.name for e in of_kind("script") + of_kind("test")]
    assert len(names) == len(set(names)), f"example names used twice: {names}"
    assert set(TEST_SETUPS) <= {e.name for e in of_kind("test")}


def test_the_guide_has_a_worked_cassette_example() -> None:
    assert set(AFTER_PROGRAM) <= set(programs())


# -- route scripts: a real proxy, real clients and servers ------------------------------------


class EchoServer:
    """A python-websockets echo server on 127.0.0.1 (ws://), on a thread; what it received."""

    def __init__(self) -> None:
        self.received: list[str | bytes] = []

        def echo(ws: ServerConnection) -> None:
            for message in ws:
                self.received.append(message)
                ws.send(message)

        self.server = serve(echo, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.origin = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def client(proxy: WsRouteProxy, url: str) -> ClientConnection:
    tls = sync_client_tls(proxy.ca_cert) if url.startswith("wss:") else None
    return connect(url, proxy=proxy.url, ssl=tls, open_timeout=5)


def script(tmp_path: Path, name: str, replace: dict[str, str] | None = None) -> Path:
    """The route-script example `name` as a file; `replace` points fictional hosts at real ones."""
    (example,) = [e for e in of_kind("script") if e.name == name]
    code = example.code
    for old, new in (replace or {}).items():
        assert old in code, f"{example.where} no longer mentions {old}"
        code = code.replace(old, new)
    path = tmp_path / f"{name.replace('-', '_')}.py"
    path.write_text(code)
    return path


def check_readme_mock(tmp_path: Path, server: EchoServer) -> None:
    with WsRouteProxy(scripts=[script(tmp_path, "readme-mock")]) as proxy:
        with client(proxy, "wss://chat.example.com/ws") as ws:
            assert ws.recv(5) == "welcome"
            ws.send("hi")
            assert ws.recv(5) == "echo hi"
        assert proxy.web_sockets[0].routed == "mock"
        assert proxy.handler_errors == []


def check_readme_intercept(tmp_path: Path, server: EchoServer) -> None:
    path = script(tmp_path, "readme-intercept", {"wss://chat.example.com": server.origin})
    with WsRouteProxy(scripts=[path]) as proxy:
        with client(proxy, f"{server.origin}/ws") as ws:
            ws.send("cats like cats")
            assert ws.recv(5) == "dogs like dogs"
            ws.send(b"cats")  # binary: passed on as it is
            assert ws.recv(5) == b"cats"
        assert proxy.handler_errors == []
    assert server.received == ["dogs like dogs", b"cats"]


def check_routes(tmp_path: Path, server: EchoServer) -> None:
    with WsRouteProxy(scripts=[script(tmp_path, "routes")]) as proxy:
        with client(proxy, "wss://example.com/ws") as ws:  # the mock
            ws.send("request")
            assert ws.recv(5) == "response"
        with client(proxy, f"{server.origin}/chat") as ws:  # the intercept
            ws.send("foo fighters")
            assert ws.recv(5) == "bar fighters"
        assert [s.routed for s in proxy.web_sockets] == ["mock", "intercept"]
        assert proxy.handler_errors == []
    assert server.received == ["bar fighters"]


def check_har_record(tmp_path: Path, server: EchoServer) -> None:
    """Record chat.har with the script as it is, then replay with its second line instead."""
    record = script(tmp_path, "har-record", {"wss://chat.example.com": server.origin})
    with WsRouteProxy(scripts=[record]) as proxy:
        with client(proxy, f"{server.origin}/room") as ws:
            ws.send("hello")
            assert ws.recv(5) == "hello"
    har = tmp_path / "chat.har"
    (entry,) = json.loads(har.read_text())["log"]["entries"]
    assert [(m["type"], m["data"]) for m in entry["_webSocketMessages"]] == [
        ("send", "hello"),
        ("receive", "hello"),
    ]
    server.stop()
    text = record.read_text()
    lines = [line for line in text.splitlines() if "route_from_har(" in line]
    assert len(lines) == 2 and lines[1].startswith("# "), text
    record.write_text(text.replace(lines[0], "").replace(lines[1], lines[1][2:]))
    with WsRouteProxy(scripts=[record]) as proxy:
        with client(proxy, f"{server.origin}/room") as ws:
            ws.send("hello")
            assert ws.recv(5) == "hello"
        assert proxy.web_sockets[0].routed == "mock"
        assert proxy.handler_errors == []


def check_flaky_feed(tmp_path: Path, server: EchoServer) -> None:
    with WsRouteProxy(scripts=[script(tmp_path, "flaky-feed")]) as proxy:
        with pytest.raises(InvalidStatus) as refused:
            client(proxy, "wss://api.example.com/feed")
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "1"
        with client(proxy, "wss://api.example.com/feed") as ws:
            start = time.monotonic()
            ws.send("ping?")
            assert ws.recv(5) == "ping?"
            assert time.monotonic() - start >= 0.3  # the latency towards the client
        assert proxy.handler_errors == []


def test_flaky_feed_drops_the_client_under_latency(tmp_path: Path) -> None:
    with WsRouteProxy(scripts=[script(tmp_path, "flaky-feed")]) as proxy:
        with pytest.raises(InvalidStatus):
            client(proxy, "wss://api.example.com/feed")
        tls = sync_client_tls(proxy.ca_cert)
        url = "wss://api.example.com/feed"
        with connect(url, proxy=proxy.url, ssl=tls, close_timeout=0.5) as ws:
            ws.send("subscribe")
            with pytest.raises(ConnectionClosed):
                ws.recv(2)
            assert ws.close_code == 1006  # dropped: no close frame


def gql_run(proxy: WsRouteProxy, url: str, *requests: str, **kw: Any) -> list[Any]:
    """Run GraphQL operations (``query`` or ``query|variables as JSON``) with gql through the
    proxy (graphql-transport-ws), one after the other on one connection: their results."""
    from tests.test_graphql_e2e import collect, transport

    t = transport(url, proxy.url, ["graphql-transport-ws"], proxy.ca_cert, **kw)
    parsed = [(q, json.loads(v or "{}")) for q, _, v in (r.partition("|") for r in requests)]
    return asyncio.run(collect(t, *parsed))


def check_graphql_mock(tmp_path: Path, server: EchoServer) -> None:
    url = "wss://api.example.com/graphql"
    prices = "subscription Prices($symbol: String!) { price(symbol: $symbol) { symbol value } }"
    with WsRouteProxy(scripts=[script(tmp_path, "graphql-mock")]) as proxy:
        token = {"init_payload": {"token": "secret"}}
        acme = [{"price": {"symbol": "ACME", "value": v}} for v in (41, 42)]
        me = {"me": {"name": "Ann"}}
        assert gql_run(
            proxy, url, prices + '|{"symbol": "ACME"}', "query Me { me { name } }", **token
        ) == [acme, me]
        with pytest.raises(Exception, match="no route for operation Other"):
            gql_run(proxy, url, "query Other { other }", **token)
        with pytest.raises(Exception):  # noqa: B017 - gql reports the 4403 its own way
            gql_run(proxy, url, "query Me { me { name } }", init_payload={"token": "wrong"})
        assert proxy.web_sockets[-1].wait_for_close().close_code == 4403
        assert proxy.handler_errors == []


def check_graphql_intercept(tmp_path: Path, server: EchoServer) -> None:
    from tests.test_graphql_e2e import GraphQLServerThread

    real = GraphQLServerThread()
    try:
        origin = real.url.removesuffix("/graphql")
        path = script(tmp_path, "graphql-intercept", {"wss://api.example.com": origin})
        with WsRouteProxy(scripts=[path]) as proxy:
            count = 'subscription Count($to: Int!) { count(to: $to) }|{"to": 2}'
            assert gql_run(proxy, real.url, count, "subscription News { news }") == [
                [{"count": 10}, {"count": 20}],
                [{"news": "real news"}],
            ]
            assert proxy.web_sockets[0].routed == "intercept"
            assert proxy.handler_errors == []
    finally:
        real.stop()


SCRIPT_CHECKS: dict[str, Callable[[Path, EchoServer], None]] = {
    "graphql-mock": check_graphql_mock,
    "graphql-intercept": check_graphql_intercept,
    "readme-mock": check_readme_mock,
    "readme-intercept": check_readme_intercept,
    "routes": check_routes,
    "har-record": check_har_record,
    "flaky-feed": check_flaky_feed,
}


@pytest.mark.parametrize("name", sorted(SCRIPT_CHECKS))
def test_route_script(
    name: str, tmp_path: Path, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a script's relative HAR path goes
    SCRIPT_CHECKS[name](tmp_path, echo_server)


# -- pytest examples: one pytest run with the plugin ------------------------------------------


def setup_cassette(folder: Path, module: str) -> None:
    """The cassette the example's test replays (it would record it against the real server):
    what the filters leave of the conversation."""
    har = {
        "log": {
            "version": "1.2",
            "entries": [
                {
                    "_resourceType": "websocket",
                    "request": {"url": "wss://chat.example.com/ws?token=FILTERED"},
                    "response": {"status": 101},
                    "_webSocketMessages": [
                        {"type": "send", "time": 1.0, "opcode": 1, "data": '{"op": "join"}'},
                        {"type": "receive", "time": 1.1, "opcode": 1, "data": '{"joined": true}'},
                    ],
                }
            ],
        }
    }
    path = folder / "cassettes" / module / "test_chat.har"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(har))


TEST_SETUPS: dict[str, Callable[[Path, str], None]] = {"cassette": setup_cassette}


@pytest.mark.timeout(300)
def test_pytest_examples(pytester: pytest.Pytester) -> None:
    """Every test example passes, replaying cassettes only (as in CI: no server is reached).

    The inner run has a timeout of its own: a hang there prints every thread's stack in this
    test's output instead of being cut off, unseen, by this test's timeout.
    """
    count = 0
    for example in of_kind("test"):
        module = f"test_doc_{example.name.replace('-', '_')}"
        pytester.makepyfile(**{module: example.code})
        if example.name in TEST_SETUPS:
            TEST_SETUPS[example.name](pytester.path, module)
        count += len(re.findall(r"^(?:async )?def test_", example.code, re.M))
    assert count >= 3
    result = pytester.runpytest_subprocess(
        "--wsroute-record-mode",
        "none",
        "-p",
        "no:cacheprovider",
        "--timeout",
        "60",
        "-o",
        "timeout_method=thread",
    )
    result.assert_outcomes(passed=count)


# -- programs: each run as it is, in a fresh folder --------------------------------------------


def programs() -> dict[str, str]:
    """``page:name`` -> the program: that page's blocks of that name, in order."""
    found: dict[str, str] = {}
    for e in of_kind("program"):
        key = f"{e.page.name}:{e.name}"
        found[key] = found.get(key, "") + e.code
    return found


def no_secret_in_the_cassette(folder: Path, code: str) -> None:
    """The worked cassette example: its cassette exists and holds no token."""
    token = re.search(r'^TOKEN = "(.+)"$', code, re.M)
    assert token is not None
    cassette = (folder / "quotes.har").read_text()
    assert token.group(1) not in cassette
    assert "REDACTED" in cassette and "FILTERED" in cassette


AFTER_PROGRAM: dict[str, Callable[[Path, str], None]] = {
    "cassette-example.md:cassette": no_secret_in_the_cassette,
}


@pytest.mark.parametrize("key", sorted(programs()))
def test_program(key: str, tmp_path: Path) -> None:
    code = programs()[key]
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=90
    )
    assert run.returncode == 0, f"{key} failed:\n{run.stdout}\n{run.stderr}"
    if key in AFTER_PROGRAM:
        AFTER_PROGRAM[key](tmp_path, code)


# -- the build ---------------------------------------------------------------------------------


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if ":" not in t and not (ROOT / t).exists()]
    assert not missing
    pages = {p.relative_to(ROOT).as_posix() for p in PAGES if p.parent.name == "docs"}
    assert pages <= set(targets) | {"docs/index.md"}, "a page the README does not link to"


def build(folder: Path, index: str) -> subprocess.CompletedProcess[str]:
    """mkdocs build --strict of a one-page site in `folder` with the project's hook."""
    (folder / "docs").mkdir()
    (folder / "docs" / "index.md").write_text(index)
    (folder / "tool.py").write_text("")
    (folder / "mkdocs.yml").write_text(
        "site_name: t\nstrict: true\n"
        f"hooks: [{ROOT / 'docs' / 'hooks.py'}]\n"
        "validation: {anchors: warn}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
        timeout=60,
    )


def test_build_fails_on_broken_links(tmp_path: Path) -> None:
    run = build(tmp_path, "# T\n\n[a](../nothing.py) [b](#nowhere) [c](../tool.py)\n")
    assert run.returncode != 0
    assert "links to '../nothing.py', which is not in the project" in run.stderr
    assert "#nowhere" in run.stderr
    assert "tool.py" not in run.stderr.replace("nothing.py", "")


def test_build_links_project_files_into_the_checkout(tmp_path: Path) -> None:
    run = build(tmp_path, "# T\n\nSee [the tool](../tool.py#L1).\n")
    assert run.returncode == 0, run.stderr
    html = (tmp_path / "site" / "index.html").read_text()
    assert 'href="../tool.py#L1"' in html  # site/index.html -> the checkout's tool.py
