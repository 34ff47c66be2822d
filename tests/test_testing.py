"""The test facade's sync API: a real in-process proxy, real python-websockets clients and
servers, ws and wss."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import Server, ServerConnection, serve

from mitm_wsroute.testing import WebSocket, WsRouteProxy, async_api
from tests.conftest import make_cert
from tests.sockets import sync_client_tls


@pytest.fixture(scope="module")
def proxy() -> Iterator[WsRouteProxy]:
    with WsRouteProxy(options={"ssl_insecure": True}) as p:
        yield p


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("proxy", "proxy_without_hooks"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


def _echo(ws: ServerConnection) -> None:
    try:
        ws.send("welcome")
        for message in ws:
            if message == "cmd:close":
                ws.close(4003, "server says bye")
                return
            ws.send(message)
    except ConnectionClosed:
        pass


def _serve(ssl_context: ssl.SSLContext | None = None) -> Iterator[Server]:
    server = serve(_echo, "127.0.0.1", 0, ssl=ssl_context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def echo() -> Iterator[Server]:
    """A real websockets server: says "welcome", then echoes; "cmd:close" closes with 4003."""
    yield from _serve()


@pytest.fixture(scope="module")
def tls_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cert, key = make_cert(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve(context)


def port_of(server: Server) -> int:
    return int(server.socket.getsockname()[1])


def client_ssl(proxy: WsRouteProxy) -> ssl.SSLContext:
    return sync_client_tls(proxy.ca_cert)


# --- recording: every socket, routed or not, as the client saw it -----------------------------


def test_the_tests_process_is_left_to_its_own_garbage_collection() -> None:
    before = gc.get_freeze_count()  # the interpreter's own few hundred
    with WsRouteProxy() as p:
        assert p._engine.options.wsroute_gc_freeze is False
    assert gc.get_freeze_count() == before  # frozen objects of a test would never be freed


def test_records_a_mock_as_the_client_saw_it(proxy: WsRouteProxy) -> None:
    @proxy.route_web_socket("ws://nowhere.invalid/chat")
    def chat(ws: Any) -> None:
        ws.send("hello")
        ws.on_message(lambda m: ws.close(code=4001, reason="bye") if m == "quit" else ws.send(m))

    with connect("ws://nowhere.invalid/chat", proxy=proxy.url, subprotocols=["v1", "v2"]) as c:
        assert c.recv(5) == "hello"
        c.send(b"\x00\x01")
        assert c.recv(5) == b"\x00\x01"
        c.send("quit")
        with pytest.raises(ConnectionClosed):
            c.recv(5)

    sock = proxy.wait_for_web_socket("**/chat")
    assert (sock.url, sock.routed, sock.protocol) == ("ws://nowhere.invalid/chat", "mock", "v1")
    assert sock.request_headers["sec-websocket-protocol"] == "v1, v2"
    assert sock.route is not None and sock.route.url == sock.url
    sock.wait_for_close()
    assert (sock.close_code, sock.close_reason) == (4001, "bye")
    assert [(m.direction, m.payload) for m in sock.messages] == [
        ("received", "hello"),
        ("sent", b"\x00\x01"),
        ("received", b"\x00\x01"),
        ("sent", "quit"),
    ]
    times = [m.timestamp for m in sock.messages]
    assert times == sorted(times)


@pytest.mark.parametrize("tls", [False, True])
def test_records_an_intercept_and_a_pass_through(
    proxy: WsRouteProxy, echo: Server, tls_echo: Server, tls: bool
) -> None:
    server = tls_echo if tls else echo
    base = f"{'wss' if tls else 'ws'}://127.0.0.1:{port_of(server)}"

    @proxy.route_web_socket("**/upper")
    def upper(ws: Any) -> None:
        upstream = ws.connect_to_server()
        ws.on_message(lambda m: upstream.send(m if m.startswith("cmd:") else m.upper()))

    kwargs: dict[str, Any] = {"proxy": proxy.url}
    if tls:
        kwargs["ssl"] = client_ssl(proxy)
    for path in ("/upper", "/plain"):
        with connect(base + path, **kwargs) as c:
            assert c.recv(5) == "welcome"
            c.send("abc")
            assert c.recv(5) == ("ABC" if path == "/upper" else "abc")
            c.send("cmd:close")
            with pytest.raises(ConnectionClosed):
                c.recv(5)

    routed, plain = proxy.wait_for_web_socket("**/upper"), proxy.wait_for_web_socket("**/plain")
    assert (routed.routed, plain.routed, plain.route) == ("intercept", None, None)
    for sock, echoed in ((routed, "ABC"), (plain, "abc")):
        sock.wait_for_close()
        assert (sock.close_code, sock.close_reason) == (4003, "server says bye")
        assert [(m.direction, m.payload) for m in sock.messages] == [
            ("received", "welcome"),
            ("sent", "abc"),
            ("received", echoed),
            ("sent", "cmd:close"),
        ]


@pytest.fixture(scope="module")
def proxy_without_hooks() -> Iterator[WsRouteProxy]:
    with WsRouteProxy(options={"ssl_insecure": True, "wsroute_message_hooks": False}) as p:
        yield p


@pytest.mark.parametrize("routed", ["mock", "intercept"])
@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("hooks", [True, False], ids=["hooks", "no-hooks"])
def test_records_when_the_client_was_sent_it_with_a_latency(
    request: pytest.FixtureRequest,
    echo: Server,
    tls_echo: Server,
    hooks: bool,
    tls: bool,
    routed: str,
) -> None:
    """With `set_latency`, the record is the client's wire: what waited is recorded when it went
    out, in order; over ws and wss, permessage-deflate negotiated as the client offers it, with
    other addons' message hooks called or not."""
    proxy: WsRouteProxy = request.getfixturevalue("proxy" if hooks else "proxy_without_hooks")

    @proxy.route_web_socket("**/slow")
    def slow(ws: Any) -> None:
        server = ws.connect_to_server() if routed == "intercept" else None
        if server is None:
            ws.send("welcome")

        def on_message(m: str) -> None:
            if m.startswith("latency "):
                ws.set_latency(float(m.split()[1]))
            elif m == "bye":
                ws.close(code=4001, reason="bye")
            elif server is not None:
                server.send(m)
            else:
                ws.send(m)

        ws.on_message(on_message)

    host = (
        f"127.0.0.1:{port_of(tls_echo if tls else echo)}" if routed == "intercept" else "x.invalid"
    )
    kwargs: dict[str, Any] = {"proxy": proxy.url, "ssl": client_ssl(proxy) if tls else None}
    with connect(f"{'wss' if tls else 'ws'}://{host}/slow", **kwargs) as c:
        assert [e.name for e in c.protocol.extensions] == ["permessage-deflate"]
        assert c.recv(5) == "welcome"
        c.send("latency 0.3")
        for i in range(3):
            c.send(f"m{i}")
        assert [c.recv(5) for _ in range(3)] == ["m0", "m1", "m2"]
        c.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            c.recv(5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001

    sock = proxy.wait_for_web_socket("**/slow").wait_for_close()
    assert (sock.routed, sock.close_code, sock.close_reason) == (routed, 4001, "bye")
    got = [(m.direction, m.payload) for m in sock.messages]
    sent, received = (
        [("sent", f"m{i}") for i in range(3)],
        [("received", f"m{i}") for i in range(3)],
    )
    assert got == [
        ("received", "welcome"),
        ("sent", "latency 0.3"),
        *sent,
        *received,
        ("sent", "bye"),
    ]
    at = {(m.direction, m.payload): m.timestamp for m in sock.messages}
    for i in range(3):  # recorded when it went out, after its 0.3 s
        assert at["received", f"m{i}"] - at["sent", f"m{i}"] >= 0.29


def test_a_refused_handshake_is_recorded_as_1006(proxy: WsRouteProxy) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{port}/gone", proxy=proxy.url, open_timeout=5)
    sock = proxy.wait_for_web_socket("**/gone").wait_for_close()
    assert (sock.close_code, sock.routed) == (1006, None)


# --- waits ----------------------------------------------------------------------------------


def test_wait_for_message_moves_a_cursor(proxy: WsRouteProxy) -> None:
    proxy.route_web_socket("**/cursor", lambda ws: ws.on_message(ws.send))
    with connect("ws://x.invalid/cursor", proxy=proxy.url) as c:
        for m in ("a1", "b1", "a2"):
            c.send(m)
            c.recv(5)
        sock = proxy.wait_for_web_socket()
        assert sock.wait_for_message(re.compile("^a")).payload == "a1"
        assert sock.wait_for_message(direction="received").payload == "a1"  # after the last one
        assert sock.wait_for_message(lambda p: p == "a2", direction="sent").payload == "a2"
        # still to come: a wait that starts before the message arrives
        threading.Timer(0.05, c.send, ["late"]).start()
        assert sock.wait_for_message("late", direction="sent").direction == "sent"
        with pytest.raises(TimeoutError, match=r"no message sent matching 'nothing'.*late"):
            sock.wait_for_message("nothing", direction="sent", timeout=0.2)


def test_wait_for_web_socket_returns_each_socket_once(proxy: WsRouteProxy) -> None:
    proxy.route_web_socket("**/once", lambda ws: None)
    for _ in range(2):
        with connect("ws://x.invalid/once", proxy=proxy.url):
            pass
    first, second = proxy.wait_for_web_socket("**/once"), proxy.wait_for_web_socket("**/once")
    assert first is not second
    assert proxy.web_sockets == [first, second]
    with pytest.raises(TimeoutError, match=r"matching '\*\*/once'.*seen: ws://x.invalid/once"):
        proxy.wait_for_web_socket("**/once", timeout=0.2)
    with pytest.raises(ValueError, match="nested"):
        proxy.wait_for_web_socket("{a,{b}}")


def test_expect_web_socket_and_events(proxy: WsRouteProxy) -> None:
    proxy.route_web_socket("**/events*", lambda ws: ws.on_message(ws.send))
    with connect("ws://x.invalid/events", proxy=proxy.url):
        pass  # opened before the block: not the one expected
    seen: list[tuple[str, Any]] = []
    with (
        proxy.expect_web_socket("**/events?second") as info,
        connect("ws://x.invalid/events?second", proxy=proxy.url) as c,
    ):
        pass
    sock = info.value
    assert sock.url == "ws://x.invalid/events?second"
    with proxy.expect_web_socket() as info:
        c = connect("ws://x.invalid/events", proxy=proxy.url)
    third = info.value
    with c:
        third.on("framesent", lambda p: seen.append(("framesent", p)))
        third.on("framereceived", lambda p: seen.append(("framereceived", p)))
        closed_seen = threading.Event()
        third.on("close", lambda ws: (seen.append(("close", ws)), closed_seen.set()))
        with third.expect_event("framereceived", lambda p: p == "two") as frame:
            for word in ("one", "two"):
                c.send(word)
                assert c.recv(5) == word
        assert frame.value == "two"
        with third.expect_event("close") as closed:
            c.close()
        assert closed.value is third
    assert closed_seen.wait(5)  # listeners run on their own thread, in order
    assert seen == [
        ("framesent", "one"),
        ("framereceived", "one"),
        ("framesent", "two"),
        ("framereceived", "two"),
        ("close", third),
    ]
    with pytest.raises(ValueError, match="unknown event"):
        third.on("message", print)


# --- routes from the test -------------------------------------------------------------------


def test_test_routes_win_over_scripts_and_unroute(tmp_path: Path) -> None:
    script = tmp_path / "routes.py"
    script.write_text(
        textwrap.dedent(
            """
            from mitm_wsroute import route_web_socket

            @route_web_socket("**/who")
            def from_script(ws):
                ws.send("script")
            """
        )
    )
    with WsRouteProxy(scripts=[script]) as proxy:

        def from_test(ws: Any) -> None:
            ws.send("test")

        def first_word(url: str = "") -> str:
            with connect("ws://x.invalid/who", proxy=proxy.url) as c:
                return str(c.recv(5))

        assert first_word() == "script"
        proxy.route_web_socket("**/who", from_test)
        assert first_word() == "test"
        proxy.unroute_web_socket("**/who", lambda ws: None)  # another handler: nothing removed
        assert first_word() == "test"
        proxy.unroute_web_socket("**/who")
        assert first_word() == "script"
        proxy.route_web_socket("**/who", from_test)
        proxy.unroute_all()
        assert first_word() == "script"


def test_route_push_from_the_test_thread_keeps_order(proxy: WsRouteProxy) -> None:
    proxy.route_web_socket("**/feed", lambda ws: None)
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(connect("ws://x.invalid/feed", proxy=proxy.url)) for _ in "abc"
        ]
        socks = [proxy.wait_for_web_socket("**/feed") for _ in clients]
        for i in range(200):  # a broadcast: every client gets every message, in order
            for sock in socks:
                assert sock.route is not None
                sock.route.send(f"tick {i}")
        for c in clients:
            assert [c.recv(5) for _ in range(200)] == [f"tick {i}" for i in range(200)]
        socks[0].route.close(code=4000, reason="done")  # type: ignore[union-attr]
        with pytest.raises(ConnectionClosed) as closed:
            clients[0].recv(5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


def test_a_blocking_listener_or_handler_cannot_stop_the_proxy(proxy: WsRouteProxy) -> None:
    release = threading.Event()
    proxy.route_web_socket("**/slow-listener", lambda ws: ws.on_message(ws.send))
    proxy.route_web_socket("**/waits", lambda ws: proxy.wait_for_web_socket("**/x", timeout=1))
    with connect("ws://x.invalid/slow-listener", proxy=proxy.url) as c:
        sock = proxy.wait_for_web_socket("**/slow-listener")
        sock.on("framereceived", lambda payload: release.wait(10))  # blocks its thread
        for word in ("one", "two"):
            c.send(word)
            assert c.recv(5) == word  # the proxy goes on while the listener blocks
    release.set()
    with connect("ws://x.invalid/waits", proxy=proxy.url) as c, pytest.raises(ConnectionClosed):
        c.recv(5)  # the handler's wait raised: closed with 1011
    [error] = proxy.handler_errors
    assert isinstance(error, RuntimeError) and "proxy's own thread" in str(error)


def test_handler_errors_are_collected_and_contained(proxy: WsRouteProxy) -> None:
    def broken(ws: Any) -> None:
        ws.on_message(lambda m: 1 / 0 if m == "boom" else None)

    proxy.route_web_socket("**/broken", broken)
    proxy.route_web_socket("**/worse", lambda ws: {}["missing"])
    with connect("ws://x.invalid/broken", proxy=proxy.url) as c:
        c.send("boom")
        c.send("still open")
        proxy.wait_for_web_socket("**/broken").wait_for_message("still open")
    with connect("ws://x.invalid/worse", proxy=proxy.url) as c, pytest.raises(ConnectionClosed):
        c.recv(5)
    assert proxy.wait_for_web_socket("**/worse").wait_for_close().close_code == 1011
    errors = proxy.handler_errors
    assert [type(e) for e in errors] == [ZeroDivisionError, KeyError]
    proxy.reset()
    assert proxy.handler_errors == [] and proxy.web_sockets == []
    with pytest.raises(ValueError, match="nested"):
        proxy.route_web_socket("{a,{b}}", broken)


def test_route_from_har_records_then_replays_without_the_server(tmp_path: Path) -> None:
    har = tmp_path / "session.har"
    server = _serve()
    url = f"ws://127.0.0.1:{port_of(next(server))}/rec"

    def talk(proxy: WsRouteProxy, *sent: str | bytes) -> list[str | bytes]:
        with connect(url, proxy=proxy.url) as c:
            got = [c.recv(5)]
            for m in sent:
                c.send(m)
                got.append(c.recv(5))
        return got

    with WsRouteProxy() as recording:
        recording.route_from_har(har, update=True)
        assert talk(recording, "a", b"\x01") == ["welcome", "a", b"\x01"]
        assert recording.wait_for_web_socket().routed == "intercept"
    next(server, None)  # shuts the server down: the replay must not need it
    with WsRouteProxy() as replaying:
        replaying.route_from_har(har, url="**/rec")
        assert talk(replaying, "a", b"\x01") == ["welcome", "a", b"\x01"]
        with connect(url, proxy=replaying.url) as c:
            assert c.recv(5) == "welcome"
            c.send("never recorded")
            c.send("a")
            assert c.recv(5) == "a"  # an unmatched message gets no reply
        socks = replaying.web_sockets
        assert [s.routed for s in socks] == ["mock", "mock"]
        assert socks[1].unmatched_messages == ["never recorded"]
        with pytest.raises(ValueError, match=r"test_testing\.py: not a HAR file, invalid JSON"):
            replaying.route_from_har(__file__)  # a Python file is no HAR


# --- subprocess clients through `env` --------------------------------------------------------


def test_env_points_a_subprocess_client_at_the_proxy_over_wss(
    proxy: WsRouteProxy, tls_echo: Server
) -> None:
    proxy.route_web_socket("**/sub", lambda ws: ws.on_message(lambda m: ws.send(f"mock {m}")))
    # The asyncio client: the sync one over wss now and then loses its upgrade request and
    # hangs, proxy or not (its two threads on one SSL socket; docs/testing.md).
    client = textwrap.dedent(
        """
        import asyncio, sys
        from websockets.asyncio.client import connect
        async def main():
            async with connect(sys.argv[1]) as c:  # proxy and CA from the environment
                await c.send("hi")
                print(await asyncio.wait_for(c.recv(), 5))
        asyncio.run(main())
        """
    )
    url = f"wss://127.0.0.1:{port_of(tls_echo)}/sub"
    env = {**os.environ, **proxy.env}
    try:
        out = subprocess.run(
            [sys.executable, "-c", client, url], env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    # The client's own timeouts (10 s to open, 5 s to receive, 10 s to close) end it before
    # this one, with its traceback, unless it hangs.
    except subprocess.TimeoutExpired as e:  # say how far it got
        pytest.fail(f"the client hung: {e.stdout!r} {e.stderr!r}, {proxy.web_sockets!r}")
    assert out.stdout.strip() == "mock hi", out.stderr
    assert proxy.wait_for_web_socket("**/sub").routed == "mock"
    assert proxy.env["HTTPS_PROXY"] == proxy.url and proxy.env["NO_PROXY"] == ""
    assert proxy.playwright_proxy == {"server": proxy.url, "bypass": "<-loopback>"}


# --- life cycle -----------------------------------------------------------------------------


def _threads_and_files() -> tuple[set[int], set[str]]:
    """This process's threads, and what its file descriptors point at (sockets by inode)."""
    gc.collect()
    files = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            files.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # closed meanwhile (the listing's own descriptor)
    return {t.ident for t in threading.enumerate() if t.ident}, files


def test_stop_leaves_nothing_behind() -> None:
    threads, files = _threads_and_files()
    proxy = WsRouteProxy().start()
    confdir = proxy.ca_cert.parent
    proxy.route_web_socket("**/live", lambda ws: None)
    with connect("ws://x.invalid/live", proxy=proxy.url) as c:  # still open at stop
        proxy.wait_for_web_socket()
        proxy.stop()
        with pytest.raises(ConnectionClosed):
            c.recv(5)
    assert not confdir.exists()
    threads_after, files_after = _threads_and_files()
    # what other tests left may end meanwhile; nothing of this proxy's may remain
    assert threads_after - threads == set()
    assert files_after - files == set()
    with pytest.raises(RuntimeError, match="stopped"):
        proxy.wait_for_web_socket()
    with pytest.raises(RuntimeError, match="stopped"):
        proxy.start()


def test_start_failures_raise_with_mitmproxy_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match="address already in use"):
            WsRouteProxy(port=taken.getsockname()[1]).start()
    with pytest.raises(ValueError, match="wsroute_base_url"):
        WsRouteProxy(options={"wsroute_base_url": "not a url"}).start()
    with pytest.raises(ValueError, match="unknown proxy option"):
        WsRouteProxy(options={"no_such_option": 1}).start()
    with pytest.raises(RuntimeError, match="not started"):
        WsRouteProxy().url  # noqa: B018


def test_two_proxies_side_by_side() -> None:
    with WsRouteProxy() as a, WsRouteProxy(options={"wsroute_base_url": "http://b.test"}) as b:
        a.route_web_socket("**/who", lambda ws: ws.send("a"))
        b.route_web_socket("/who", lambda ws: ws.send("b"))  # relative to b's base URL
        with (
            connect("ws://b.test/who", proxy=b.url) as cb,
            connect("ws://a.test/who", proxy=a.url) as ca,
        ):
            assert (ca.recv(5), cb.recv(5)) == ("a", "b")
        assert [s.url for s in a.web_sockets] == ["ws://a.test/who"]
        assert [s.url for s in b.web_sockets] == ["ws://b.test/who"]


def test_record_is_bounded() -> None:
    with WsRouteProxy(options={"wsroute_record_messages": 10}) as proxy:
        proxy.route_web_socket("**/long", lambda ws: ws.on_message(ws.send))
        with connect("ws://x.invalid/long", proxy=proxy.url) as c:
            for i in range(20):
                c.send(str(i))
                c.recv(5)
        sock: WebSocket = proxy.wait_for_web_socket()
        sock.wait_for_close()
        assert [m.payload for m in sock.messages] == [str(i) for i in range(15, 20) for _ in "sr"]
        # positions stay absolute: a wait still finds what is kept, and no more
        assert sock.wait_for_message("16", direction="received").payload == "16"


def test_reset_forgets_sockets_and_closes_live_ones(proxy: WsRouteProxy) -> None:
    proxy.route_web_socket("**/many", lambda ws: ws.on_message(ws.send))
    with connect("ws://x.invalid/many", proxy=proxy.url) as live:
        for _ in range(20):
            with connect("ws://x.invalid/many", proxy=proxy.url):
                pass
        assert len(proxy.web_sockets) == 21
        proxy.reset()
        assert proxy.web_sockets == []
        with pytest.raises(ConnectionClosed) as e:
            live.recv(5)  # the test that opened it is over: it goes away, as with a page
    assert (e.value.rcvd.code, e.value.rcvd.reason) == (1001, "the test proxy was reset")
    assert proxy.web_sockets == []


def echo_round_trip(proxy: WsRouteProxy, path: str) -> None:
    """A socket of the current test echoes, and its listener runs: the proxy's thread and the
    listeners' thread are past whatever came before."""
    proxy.route_web_socket(f"**/{path}", lambda ws: ws.on_message(ws.send))
    heard = threading.Event()
    with connect(f"ws://x.invalid/{path}", proxy=proxy.url) as c:
        proxy.wait_for_web_socket(f"**/{path}").on("framereceived", lambda _: heard.set())
        c.send("ping")
        assert c.recv(5) == "ping"
        assert heard.wait(5)


def test_reset_keeps_the_test_before_from_reaching_the_next(proxy: WsRouteProxy) -> None:
    on_close_ran = threading.Event()

    def on_close(code: int | None, reason: str | None) -> None:
        on_close_ran.set()
        raise RuntimeError("an on_close handler of the test before")

    proxy.route_web_socket("**/left-open", lambda ws: ws.on_close(on_close))
    heard: list[Any] = []
    with connect("ws://x.invalid/left-open", proxy=proxy.url) as left_open:
        sock = proxy.wait_for_web_socket("**/left-open")
        for event in ("framesent", "close"):
            sock.on(event, heard.append)
        proxy.reset()  # the next test starts
        with contextlib.suppress(ConnectionClosed):
            left_open.send("after reset")
            left_open.recv(5)
    assert on_close_ran.wait(5)  # it ran, and raised, after reset()
    echo_round_trip(proxy, "next-test")
    assert proxy.handler_errors == []
    assert heard == []
    assert [s.url for s in proxy.web_sockets] == ["ws://x.invalid/next-test"]


def test_a_socket_opening_across_reset_belongs_to_the_test_before(proxy: WsRouteProxy) -> None:
    started, go = threading.Event(), threading.Event()

    async def slow_open(ws: Any) -> None:
        started.set()
        await asyncio.to_thread(go.wait, 5)
        raise RuntimeError("a route handler of the test before")

    proxy.route_web_socket("**/slow-open", slow_open)
    closes: list[int | None] = []

    def client() -> None:
        with connect("ws://x.invalid/slow-open", proxy=proxy.url) as c:
            with contextlib.suppress(ConnectionClosed):
                c.recv(5)
            closes.append(c.close_code)

    thread = threading.Thread(target=client)
    thread.start()
    assert started.wait(5)
    proxy.reset()  # the next test starts while the handler of the test before still runs
    go.set()
    thread.join(10)
    assert closes == [1011]  # the handler raised: the error was reported before this close
    assert proxy.handler_errors == []
    assert proxy.web_sockets == []


def test_a_wait_whose_event_loop_closed_cannot_break_the_proxy(
    proxy: WsRouteProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.route_web_socket("**/echo", lambda ws: ws.on_message(ws.send))
    async_proxy = async_api.WsRouteProxy._over(proxy)
    loop = asyncio.new_event_loop()
    with connect("ws://x.invalid/echo", proxy=proxy.url) as c:

        async def listen() -> None:
            sock = await async_proxy.wait_for_web_socket("**/echo")
            sock.on("framereceived", lambda payload: None)

        loop.run_until_complete(listen())
        # An async test that ends mid-wait, its loop closed under the wait.
        waiting = loop.create_task(async_proxy.wait_for_web_socket("**/never", timeout=60))
        loop.call_soon(loop.stop)
        loop.run_forever()  # the wait has started
        assert not waiting.done()
        loop.close()
        c.send("after")  # the proxy wakes the wait and the listener: both are dropped
        assert c.recv(5) == "after"
    echo_round_trip(proxy, "other")  # every socket still works...
    [sock] = [s for s in proxy.web_sockets if s.url == "ws://x.invalid/echo"]
    assert sock.wait_for_message("after", direction="received").payload == "after"  # ...records too
    assert "listener of the test failed" not in caplog.text
    waiting._log_destroy_pending = False  # type: ignore[attr-defined]  # as the test meant
