"""The addon against mitmproxy's test helpers (taddons, tflow): options and the route decision."""

from __future__ import annotations

import asyncio
import base64
import gc
import inspect
import linecache
import weakref
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http, websocket
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.addons.script import ScriptLoader
from mitmproxy.proxy.layers import websocket as wsl
from mitmproxy.proxy.layers.http import HttpStream
from mitmproxy.test import taddons, tflow
from wsproto.frame_protocol import Opcode

from mitm_wsroute import addon as addon_module
from mitm_wsroute import layer, own_io, patches
from mitm_wsroute.addon import WsRoute, accept, requested_protocols
from mitm_wsroute.addon_hooks import MessageHooks
from mitm_wsroute.connection import PAGE, SERVER, CloseSide, Send, StartCloseTimer, State

ROUTES = """
from mitm_wsroute import route_web_socket

@route_web_socket("ws://example.com/mock")
def mock(ws):
    ws.send("hi")

@route_web_socket("ws://example.com/intercept")
def intercept(ws):
    server = ws.connect_to_server()
    server.on_close(lambda code, reason: None)

@route_web_socket("ws://example.com/broken")
async def broken(ws):
    raise KeyError("nope")
"""


MOCK_URL = "ws://example.com/mock"


def upgrade(path: str, protocols: str | None = "a, b") -> http.HTTPFlow:
    f = tflow.tflow()
    f.request.url = f"http://example.com{path}"
    f.request.headers["Upgrade"] = "websocket"
    f.request.headers["Connection"] = "Upgrade"
    f.request.headers["Sec-WebSocket-Version"] = "13"
    f.request.headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    if protocols:
        f.request.headers["Sec-WebSocket-Protocol"] = protocols
    return f


async def routed(a: WsRoute, path: str = "/mock") -> tuple[http.HTTPFlow, layer.RoutedSocket]:
    """A WebSocket upgrade to `path` that the addon `a` routed: the flow and its socket."""
    f = upgrade(path)
    await a.request(f)
    socket = layer.routed_socket(f)
    assert socket is not None
    return f, socket


@pytest.fixture
def addon(tmp_path: Path) -> Any:
    routes = tmp_path / "routes.py"
    routes.write_text(ROUTES)
    a = WsRoute()
    with taddons.context(Proxyserver(), a) as tctx:  # Proxyserver brings connection_strategy
        tctx.configure(a, wsroute_scripts=[str(routes)])
        yield a, tctx


def test_sets_lazy_connection_strategy(addon: Any) -> None:
    a, tctx = addon
    assert tctx.options.connection_strategy == "lazy"


def test_bad_options_raise_options_error(addon: Any, tmp_path: Path) -> None:
    a, tctx = addon
    with pytest.raises(exceptions.OptionsError, match="Cannot parse wsroute_base_url option"):
        tctx.configure(a, wsroute_base_url="not a url")
    with pytest.raises(exceptions.OptionsError, match="no such route script"):
        tctx.configure(a, wsroute_scripts=[str(tmp_path / "missing.py")])


def test_mistyped_option_is_an_error_naming_the_closest(tmp_path: Path) -> None:
    a = WsRoute()
    with taddons.context(Proxyserver()) as tctx:
        # As mitmdump does: --set first (unknown ones kept back), then the addon loads.
        tctx.options.set(
            "wsroute_max_mesage_size=5",
            "wsroute_nothing_like_it_at_all=1",
            "other_addon=1",
            defer=True,
        )
        tctx.master.addons.add(a)
        with pytest.raises(exceptions.OptionsError) as e:
            tctx.configure(a)
        assert str(e.value) == (
            "Unknown option wsroute_max_mesage_size; did you mean wsroute_max_message_size? "
            "Unknown option wsroute_nothing_like_it_at_all; mitmdump --options lists them all"
        )
        with pytest.raises(exceptions.OptionsError, match="wsroute_max_mesage_size"):
            a.running()  # a --set after the last configure
        del tctx.options.deferred["wsroute_max_mesage_size"]
        del tctx.options.deferred["wsroute_nothing_like_it_at_all"]
        tctx.configure(a)  # another addon's option is not ours to refuse
        assert "other_addon" in tctx.options.deferred


async def test_mock_gets_a_synthetic_101(addon: Any) -> None:
    a, tctx = addon
    f = upgrade("/mock")
    await a.request(f)
    assert f.response is not None and f.response.status_code == 101
    assert f.response.headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert f.response.headers["Sec-WebSocket-Protocol"] == "a"
    assert "content-length" not in f.response.headers
    assert f.metadata["wsroute"]["mode"] == "mock"
    socket = layer.routed_socket(f)
    assert socket is not None
    assert socket.connection.states == {PAGE: State.CONNECTING, SERVER: State.NONE}
    assert socket.connection.commands_to_execute() == [Send(PAGE, "hi")]


async def test_unmatched_and_non_websocket_flows_are_untouched(addon: Any) -> None:
    a, tctx = addon
    for f in (upgrade("/other"), tflow.tflow()):
        await a.request(f)
        assert f.response is None
        assert layer.routed_socket(f) is None
        assert "wsroute" not in f.metadata


async def test_intercept_goes_upstream(addon: Any) -> None:
    a, tctx = addon
    f = upgrade("/intercept")
    await a.request(f)
    assert f.response is None
    assert f.metadata["wsroute"]["mode"] == "intercept"


async def test_route_sent_messages_update_only_the_addons_with_an_update_hook(
    addon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, tctx = addon
    f, socket = await routed(a)
    assert socket.hooks is not None
    walks: list[object] = []  # mitmproxy's own dispatch: every addon of the chain
    monkeypatch.setattr(tctx.master.addons, "trigger", walks.append)
    seen: list[object] = []
    socket.hooks = MessageHooks((), (seen.append,))  # as an addon with `update` makes it
    a._flow_updated(f)
    assert seen == [[f]] and walks == []
    socket.hooks = MessageHooks((), ())  # mitmdump: no addon has one
    a._flow_updated_soon(f)
    assert f not in a._updates_due  # nothing is even scheduled
    a._flow_updated(f)
    assert seen == [[f]] and walks == []
    socket.hooks = None  # an async hook, or the hooks off: mitmproxy calls them all
    a._flow_updated(f)
    assert len(walks) == 1


async def test_a_live_socket_calls_the_hooks_of_the_addon_chain_as_it_changes(
    addon: Any,
) -> None:
    # mitmproxy calls the addons loaded when a message comes: so does a socket whose layer
    # calls the hooks itself, though it looked them up when it opened
    a, tctx = addon
    patches.install()
    f, socket = await routed(a)
    assert socket.hooks is not None

    class Later:
        def websocket_message(self, flow: Any) -> None:
            pass

    class Async:
        async def websocket_message(self, flow: Any) -> None:
            pass

    other, other_socket = await routed(a)
    later = Later()
    tctx.master.addons.add(later)
    await asyncio.sleep(0)  # after the change's callback, as a script's reload does it
    assert later.websocket_message in socket.hooks.message
    assert other_socket.hooks is socket.hooks  # looked up once for all sockets
    tctx.master.addons.remove(later)
    await asyncio.sleep(0)
    assert later.websocket_message not in socket.hooks.message
    tctx.master.addons.add(Async())  # from now on, mitmproxy's machinery carries them
    await asyncio.sleep(0)
    assert socket.hooks is None


async def test_reordered_scripts_hooks_run_in_their_new_order(addon: Any, tmp_path: Path) -> None:
    # mitmproxy's scripts option, reordered: its ScriptLoader reorders their addons without
    # registering or removing any; a live socket calls their hooks in the new order
    a, tctx = addon
    patches.install()
    loader = ScriptLoader()
    tctx.master.addons.add(loader)
    paths = []
    for name in ("one", "two"):
        paths.append(str(tmp_path / f"{name}.py"))
        Path(paths[-1]).write_text(f"def websocket_message(flow):\n    return {name!r}\n")
    tctx.configure(loader, scripts=paths)
    for _ in range(10):  # each script loads in its watcher's task, after a turn of the loop
        if all(s.ns is not None for s in loader.addons):
            break
        await asyncio.sleep(0)
    f, socket = await routed(a)
    await asyncio.sleep(0)  # the loads' own look-up again is over
    assert socket.hooks is not None
    assert [h(f) for h in socket.hooks.message] == ["one", "two"]
    tctx.configure(loader, scripts=paths[::-1])
    await asyncio.sleep(0)
    assert [h(f) for h in socket.hooks.message] == ["two", "one"]


@pytest.mark.parametrize(
    "path, marker, handler",
    [("/mock", ":performing_arts:", "mock"), ("/intercept", ":electric_plug:", "intercept")],
)
async def test_routed_flows_are_marked_and_commented_for_mitmweb(
    addon: Any, path: str, marker: str, handler: str
) -> None:
    a, tctx = addon
    f = upgrade(path)
    await a.request(f)
    assert (f.marked, f.comment) == (marker, f"wsroute: routes.py:{handler}")


async def test_upstream_refusal_with_server_on_close_becomes_a_mock(addon: Any) -> None:
    a, tctx = addon
    f = upgrade("/intercept")
    await a.request(f)
    f.response = http.Response.make(403, b"no")
    a.response(f)
    assert f.response.status_code == 101
    assert f.websocket is not None


async def test_handler_exception_accepts_and_closes_1011(
    addon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a, tctx = addon
    f = upgrade("/broken", protocols=None)
    await a.request(f)
    assert f.response is not None and f.response.status_code == 101
    assert "Sec-WebSocket-Protocol" not in f.response.headers
    socket = layer.routed_socket(f)
    assert socket is not None
    [close, timer] = socket.connection.commands_to_execute()
    assert isinstance(close, CloseSide) and close.close.code == 1011
    assert timer == StartCloseTimer(PAGE)
    assert "KeyError: 'nope'" in caplog.text
    line = ROUTES.splitlines().index('    raise KeyError("nope")') + 1
    assert f'routes.py", line {line}, in broken' in caplog.text  # the user's frame...
    assert 'addon.py", line' not in caplog.text  # ...and none of ours


async def test_system_exit_in_a_handler_is_contained_and_reported_with_its_flow(
    addon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a, tctx = addon
    f, socket = await routed(a)
    errors: list[tuple[type[BaseException], Any]] = []
    a.on_handler_error = lambda e, flow: errors.append((type(e), flow))

    def exits(*args: Any) -> None:
        raise SystemExit(3)

    async def exits_later(*args: Any) -> None:
        await asyncio.sleep(0)
        raise SystemExit(4)

    assert a._call_user(exits, (1000, ""), socket) is None
    task = a._call_user(exits_later, ("message",), socket)
    assert task is not None
    await task  # the task ends; SystemExit reaches neither it nor the loop
    assert errors == [(SystemExit, f), (SystemExit, f)]
    assert "SystemExit: 3" in caplog.text and "SystemExit: 4" in caplog.text


def test_requested_protocols_from_all_header_lines() -> None:
    f = upgrade("/x", protocols="a, b")
    f.request.headers.add("Sec-WebSocket-Protocol", "c")
    assert requested_protocols(f.request) == ["a", "b", "c"]


def test_accept_token_is_rfc6455s_example() -> None:
    f = upgrade("/x", protocols=None)
    key = base64.b64decode(f.request.headers["Sec-WebSocket-Key"])
    assert len(key) == 16
    assert accept(f.request, []).headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_install_is_idempotent_and_keeps_mitmproxys_class() -> None:
    patches.install()
    patches.install()
    assert wsl.WebsocketLayer is layer.RoutedWebsocketLayer
    assert layer.RoutedWebsocketLayer.__bases__ == (wsl._wsroute_original,)  # type: ignore[attr-defined]


def test_self_check_refuses_changed_internals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(wsl.WebsocketConnection, "send2")
    with pytest.raises(
        RuntimeError, match=r"WebsocketConnection\.send2 missing.*mitmproxy>=12.3,<13"
    ):
        patches.check_internals()


def test_flow_messages_are_what_mitmproxy_would_make() -> None:
    for data, opcode in (("é", Opcode.TEXT), (b"\x00", Opcode.BINARY)):
        for injected in (False, True):
            ours = layer._flow_message(data, False, injected)
            theirs = websocket.WebSocketMessage(
                opcode, False, ours.content, ours.timestamp, injected=injected
            )
            assert ours.get_state() == theirs.get_state() and vars(ours) == vars(theirs)
            assert (ours.text if opcode is Opcode.TEXT else ours.content) == data


def test_self_check_refuses_a_changed_websocket_message(monkeypatch: pytest.MonkeyPatch) -> None:
    init = websocket.WebSocketMessage.__init__

    def with_a_new_attribute(self: websocket.WebSocketMessage, *args: Any, **kw: Any) -> None:
        init(self, *args, **kw)
        self.compressed = False  # type: ignore[attr-defined]

    monkeypatch.setattr(websocket.WebSocketMessage, "__init__", with_a_new_attribute)
    with pytest.raises(RuntimeError, match="WebSocketMessage's attributes"):
        patches.check_internals()


def test_self_check_needs_no_source_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # mitmproxy installed without its .py files (only bytecode): no source to read.
    def no_source(obj: object) -> str:
        raise OSError("could not get source code")

    monkeypatch.setattr(inspect, "getsource", no_source)
    monkeypatch.setattr(linecache, "getlines", lambda *a, **k: [])
    patches.check_internals()  # passes
    monkeypatch.setattr(HttpStream, "flow_done", lambda self: None)  # an internal that moved
    with pytest.raises(RuntimeError) as e:
        patches.check_internals()
    assert str(e.value).count("\n") == 0  # one clear line
    assert "HttpStream.flow_done no longer creates websocket.WebsocketLayer" in str(e.value)


def test_reading_sockets_itself_needs_these_internals(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mitmproxy.proxy.server import TimeoutWatchdog

    assert own_io.own_io_problems() == []
    patches.install()
    assert own_io.ok
    monkeypatch.delattr(TimeoutWatchdog, "register_activity")
    monkeypatch.setattr(own_io.layer.Layer, "__init__", lambda self, context: None)
    problems = own_io.own_io_problems()
    assert [p.split(" ", 1)[1] for p in problems] == [
        "uses no _paused",
        "uses no _paused_event_queue",
        "missing",
    ]
    # the addon still runs; mitmproxy reads every socket, and a warning says why
    patches.install()
    assert not own_io.ok
    assert "mitmproxy still reads and writes every routed socket" in caplog.text
    assert "TimeoutWatchdog.register_activity missing" in caplog.text
    monkeypatch.undo()
    patches.install()
    assert own_io.ok


async def test_routed_flows_are_freed(addon: Any) -> None:
    a, tctx = addon
    f = upgrade("/mock")
    await a.request(f)
    assert layer.routed_socket(f) is not None
    gone = weakref.ref(f)
    del f
    gc.collect()
    assert gone() is None  # nothing of ours keeps a finished flow alive


def test_har_options_route_above_the_scripts(addon: Any, tmp_path: Path) -> None:
    a, tctx = addon
    har = tmp_path / "r.har"
    har.write_text(
        '{"log": {"version": "1.2", "entries": [{"_resourceType": "websocket", "request": '
        '{"url": "http://example.com/mock"}, "_webSocketMessages": []}]}}'
    )
    tctx.configure(a, wsroute_har=str(har))
    found = a.router.find("ws://example.com/mock")
    assert found is not None and found.label == "har:r.har"
    other = a.router.find("ws://example.com/intercept")
    assert other is not None and other.label == "har:r.har"  # abort: 404 for it
    tctx.configure(a, wsroute_har_not_found="fallback")
    other = a.router.find("ws://example.com/intercept")
    assert other is not None and other.label == "routes.py:intercept"
    tctx.configure(a, wsroute_har_url="**/nothing")
    found = a.router.find("ws://example.com/mock")
    assert found is not None and found.label == "routes.py:mock"
    tctx.configure(a, wsroute_har=None)
    assert a.router.option_routes == ()


def test_bad_har_option_raises_options_error(addon: Any, tmp_path: Path) -> None:
    a, tctx = addon
    bad = tmp_path / "bad.har"
    bad.write_text("{}")
    with pytest.raises(exceptions.OptionsError, match=rf"wsroute_har option: {bad}: not a HAR"):
        tctx.configure(a, wsroute_har=str(bad))


@pytest.fixture
def gc_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The addon's calls of gc.collect/freeze/unfreeze, recorded instead of made (this process
    is pytest's), as if no addon had frozen anything yet in this process."""
    calls: list[str] = []
    for name in ("collect", "freeze", "unfreeze"):
        monkeypatch.setattr(gc, name, lambda *_, name=name: calls.append(name) or 0)
    monkeypatch.setattr(addon_module, "_frozen", False)
    return calls


def test_gc_freeze_once_per_process_when_first_configured(addon: Any, gc_calls: list[str]) -> None:
    a, tctx = addon
    tctx.configure(a, wsroute_scripts=[])
    assert gc_calls == []  # only the option itself decides
    tctx.configure(a, wsroute_gc_freeze=True)
    assert gc_calls == ["collect", "freeze"]  # the garbage first: frozen, it would stay
    tctx.configure(a, wsroute_gc_freeze=False)
    tctx.configure(a, wsroute_gc_freeze=True)
    other = WsRoute()  # a reloaded addon script: a new addon, the same process
    tctx.configure(other, wsroute_gc_freeze=True)
    assert gc_calls == ["collect", "freeze"]  # sockets may exist by now: never again
    a.done()  # unloaded: whatever it holds must be collectable again
    assert gc_calls == ["collect", "freeze", "unfreeze"]


def test_gc_freeze_off_freezes_nothing(addon: Any, gc_calls: list[str]) -> None:
    a, tctx = addon
    tctx.configure(a, wsroute_gc_freeze=False)
    tctx.configure(a, wsroute_gc_freeze=True)  # read once: too late
    a.done()
    assert gc_calls == []


def test_gc_freeze_comes_before_the_route_scripts(
    tmp_path: Path, gc_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "routes.py"
    routes.write_text(ROUTES)
    a = WsRoute()
    routed_when_frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: routed_when_frozen.append(a.router.find(MOCK_URL)))
    with taddons.context(Proxyserver(), a) as tctx:
        tctx.configure(a, wsroute_scripts=[str(routes)], wsroute_gc_freeze=True)  # as mitmdump
        assert routed_when_frozen == [None]  # so a script's reload frees the old module
        assert a.router.find(MOCK_URL) is not None
