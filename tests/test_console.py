"""The live console's pure core (mitm_wsroute/console.py): breakpoints, the pause queues, the
bounded record, the feed's changes. Read as transcripts over a real `RoutedConnection`."""

from __future__ import annotations

import collections
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mitm_wsroute.connection import (
    PAGE,
    SERVER,
    CallHandler,
    Close,
    CloseSide,
    RoutedConnection,
    Send,
    State,
)
from mitm_wsroute.console import (
    Conflict,
    Console,
    parse_breakpoint,
    parse_json_path,
    parse_message,
)
from mitm_wsroute.route import WebSocketRoute

C2S, S2C = "client_to_server", "server_to_client"


def intercept(console: Console) -> tuple[RoutedConnection, WebSocketRoute, WebSocketRoute, str]:
    c = RoutedConnection("ws://chat.example/ws", [])
    ws = WebSocketRoute(c)
    server = ws.connect_to_server()
    c.receive_open()
    c.commands_to_execute()
    watch = console.watch(c, "intercept", "routes.py:chat")
    return c, ws, server, watch.id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def actions(console: Console, socket_id: str) -> list[tuple[str, Any, str]]:
    return [
        (m["direction"], m.get("text", m.get("base64")), m["action"])
        for m in console.socket(socket_id).messages_json()
    ]


# --- breakpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "url", "direction", "message", "matches"),
    [
        ({"url": "**/ws", "direction": C2S}, "ws://h/ws", C2S, "x", True),
        ({"url": "**/ws", "direction": C2S}, "ws://h/ws", S2C, "x", False),
        ({"url": "**/ws", "direction": "both"}, "ws://h/ws", S2C, "x", True),
        ({"url": "**/other"}, "ws://h/ws", C2S, "x", False),
        ({"url": "ws://h/*"}, "ws://h/ws", C2S, "x", True),
        ({"url": None}, "wss://any/thing", C2S, "x", True),
        ({"match": "^sec"}, "ws://h/ws", C2S, "secret", True),
        ({"match": "^sec"}, "ws://h/ws", C2S, "no secret", False),
        ({"match": "sec"}, "ws://h/ws", C2S, b"secret", False),  # binary: only without filters
        ({}, "ws://h/ws", C2S, b"\x00", True),
        ({"contains": "cat"}, "ws://h/ws", C2S, "concatenate", True),
        ({"contains": "dog"}, "ws://h/ws", C2S, "concatenate", False),
        ({"json_path": "$.type"}, "ws://h/ws", C2S, '{"type": "chat"}', True),
        ({"json_path": "$.type"}, "ws://h/ws", C2S, '{"kind": "chat"}', False),
        ({"json_path": "$.type"}, "ws://h/ws", C2S, "not json", False),
        ({"json_path": "type", "json_value": "chat"}, "ws://h/ws", C2S, '{"type":"chat"}', True),
        ({"json_path": "type", "json_value": "ping"}, "ws://h/ws", C2S, '{"type":"chat"}', False),
        ({"json_path": "$.a[1].b", "json_value": 2}, "ws://h/ws", C2S, '{"a":[0,{"b":2}]}', True),
        ({"json_path": "$.a[5]"}, "ws://h/ws", C2S, '{"a":[0]}', False),
        ({"match": "a", "contains": "b"}, "ws://h/ws", C2S, "ab", True),
        ({"match": "a", "contains": "b"}, "ws://h/ws", C2S, "a", False),
    ],
)
def test_breakpoint_matching(
    body: dict[str, Any], url: str, direction: str, message: str | bytes, matches: bool
) -> None:
    assert parse_breakpoint("1", body).matches(url, direction, message) is matches


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"direction": "up"}, "direction"),
        ({"url": 5}, "url"),
        ({"match": "("}, "bad regex"),
        ({"match": 3}, "match"),
        ({"json_path": "$..["}, "bad JSON path"),
        ({"json_value": 1}, "needs a"),
        ({"contains": "x" * 20_000}, "contains"),
    ],
)
def test_bad_breakpoints_are_refused(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_breakpoint("1", body)


def test_json_path_parts() -> None:
    assert parse_json_path("$.a.b[0].c") == ("a", "b", 0, "c")
    assert parse_json_path("a") == ("a",)
    with pytest.raises(ValueError):
        parse_json_path("$")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"text": "hi"}, "hi"),
        ({"base64": "AAE="}, b"\x00\x01"),
        ({"hex": "00 01"}, b"\x00\x01"),
        ({"hex": "0001"}, b"\x00\x01"),
    ],
)
def test_messages_from_requests(body: dict[str, Any], expected: str | bytes) -> None:
    assert parse_message(body) == expected


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "give the message"),
        ({"text": "a", "hex": "00"}, "one of"),
        ({"base64": "!!"}, "bad base64"),
        ({"hex": "0g"}, "bad hex"),
        ({"text": 5}, "must be a string"),
        ({"text": "\ud800"}, "UTF-8"),
        ({"hex": "00" * (16 * 1024 * 1024 + 1)}, "over"),
    ],
)
def test_bad_messages_are_refused(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_message(body)


# --- the pause queue ------------------------------------------------------------------------


def test_unwatched_messages_are_forwarded_and_recorded() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    assert c.receive_message(PAGE, "hello") is SERVER
    assert c.receive_message(SERVER, b"\x01") is PAGE
    ws.send("from the route")
    assert actions(console, sid) == [
        (C2S, "hello", "forwarded"),
        (S2C, "AQ==", "forwarded"),
        (S2C, "from the route", "sent_by_route"),
    ]
    assert console.socket(sid).to_json()["counts"] == {C2S: 1, S2C: 2}


def test_a_paused_message_holds_its_direction_in_order_not_the_other() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({"url": "**", "direction": C2S, "match": "^stop"})
    assert c.receive_message(PAGE, "one") is SERVER
    assert c.receive_message(PAGE, "stop here") is None  # paused
    assert c.receive_message(PAGE, "two") is None  # waits behind it
    assert c.receive_message(SERVER, "answer") is PAGE  # the other direction is not held
    assert c.commands_to_execute() == []
    [paused] = console.paused_json()
    assert paused | {"id": "x"} == {
        "id": "x",
        "socket_id": sid,
        "direction": C2S,
        "opcode": 1,
        "text": "stop here",
        "url": "ws://chat.example/ws",
        "breakpoint": next(iter(console.breakpoints)),
        "waiting": 1,
        "since": paused["since"],
        "released_at": None,
    }
    assert console.socket(sid).state == "paused"
    console.listening = True  # the page's feed: what it shows of the paused message changes
    assert c.receive_message(PAGE, "three") is None
    [*_, event] = console.take_changes()
    assert event["type"] == "paused" and event["paused"][0]["waiting"] == 2
    console.release(paused["id"], {"action": "forward", "text": "edited"})
    assert c.commands_to_execute() == [
        Send(SERVER, "edited"),
        Send(SERVER, "two"),
        Send(SERVER, "three"),
    ]
    assert console.paused == {} and console.socket(sid).state == "open"
    assert actions(console, sid) == [
        (C2S, "one", "forwarded"),
        (S2C, "answer", "forwarded"),
        (C2S, "edited", "edited"),
        (C2S, "two", "forwarded"),
        (C2S, "three", "forwarded"),
    ]


def test_release_stops_at_the_next_match_and_drop_records_it() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({"direction": C2S, "match": "^stop"})
    for message in ("stop 1", "a", "stop 2", "b"):
        c.receive_message(PAGE, message)
    [first] = console.paused_json()
    console.release(first["id"], {"action": "drop"})
    assert c.commands_to_execute() == [Send(SERVER, "a")]
    [second] = console.paused_json()
    assert second["text"] == "stop 2" and second["waiting"] == 1
    assert console.resume_all() == 1
    assert c.commands_to_execute() == [Send(SERVER, "stop 2"), Send(SERVER, "b")]
    assert [a for _, _, a in actions(console, sid)] == [
        "dropped",
        "forwarded",
        "forwarded",
        "forwarded",
    ]


def test_an_edit_may_change_the_type_and_goes_to_a_handler() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    got: list[str | bytes] = []
    ws.on_message(got.append)
    console.add_breakpoint({"direction": "both"})
    c.receive_message(PAGE, "text")
    [paused] = console.paused_json()
    console.release(paused["id"], {"hex": "ff00"})
    [call] = c.commands_to_execute()
    assert isinstance(call, CallHandler) and call.args == (b"\xff\x00",)
    assert actions(console, sid) == [(C2S, "/wA=", "edited")]


def test_deleting_a_breakpoint_releases_nothing() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    bp = console.add_breakpoint({})
    c.receive_message(SERVER, "held")
    console.delete_breakpoint(bp.id)
    assert len(console.paused) == 1
    assert c.receive_message(SERVER, "behind") is None  # still waits behind the paused one
    with pytest.raises(LookupError):
        console.delete_breakpoint(bp.id)


def test_a_close_waits_behind_the_paused_messages() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({"direction": C2S})
    c.receive_message(PAGE, "last words")
    c.receive_close(PAGE, 1000, "bye")
    assert c.states[SERVER] is State.OPEN and c.commands_to_execute() == []
    console.resume_all()
    assert c.commands_to_execute()[:2] == [
        Send(SERVER, "last words"),
        CloseSide(SERVER, Close(1000, "bye")),
    ]


def test_the_timeout_releases_a_direction_unchanged() -> None:
    clock = Clock()
    console = Console(pause_timeout=10, clock=clock)
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({"direction": C2S})
    c.receive_message(PAGE, "a")
    assert console.paused_json()[0]["released_at"] == 1010.0
    clock.now += 5
    c.receive_message(PAGE, "b")  # waits: not looked at again on a timeout
    assert console.expire() == 0 and console.next_expiry() == 1010.0
    clock.now += 5
    assert console.expire() == 1
    assert c.commands_to_execute() == [Send(SERVER, "a"), Send(SERVER, "b")]
    assert console.next_expiry() is None


def test_messages_held_when_the_socket_ends_are_dropped() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({"direction": C2S})
    c.receive_message(PAGE, "held")
    c.receive_message(PAGE, "behind")
    c.receive_connection_lost(PAGE)
    c.receive_close(SERVER, 1001, "")
    c.receive_connection_lost(SERVER)
    assert console.paused == {}
    assert console.socket(sid).to_json()["state"] == "closed"
    assert actions(console, sid)[-2:] == [(C2S, "held", "dropped"), (C2S, "behind", "dropped")]
    assert c.watcher is None  # watched no more


def test_pages_gone_and_stop_release_everything() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({})
    c.receive_message(PAGE, "a")
    console.pages_gone()
    assert console.breakpoints == {} and console.paused == {}
    assert c.commands_to_execute() == [Send(SERVER, "a")]
    console.add_breakpoint({})
    c.receive_message(SERVER, "b")
    console.stop()
    assert c.commands_to_execute() == [Send(PAGE, "b")]
    assert c.watcher is None and console.sockets == {}


def test_too_much_behind_a_paused_message_releases_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mitm_wsroute.console.MAX_HELD_BYTES", 10)
    console = Console()
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({"direction": C2S})
    c.receive_message(PAGE, "a")
    c.receive_message(PAGE, "12345")
    c.receive_message(PAGE, "678901")
    assert console.paused == {}
    sent = c.commands_to_execute()
    assert sent == [Send(SERVER, "a"), Send(SERVER, "12345"), Send(SERVER, "678901")]


# --- the route API from the console ---------------------------------------------------------


def test_inject_close_drop_and_latency_follow_the_route_api() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    watch = console.socket(sid)
    watch.inject({"to": "client", "text": "to the page"})
    watch.inject({"to": "server", "hex": "0102"})
    assert c.commands_to_execute() == [Send(PAGE, "to the page"), Send(SERVER, b"\x01\x02")]
    assert [a for _, _, a in actions(console, sid)] == ["injected", "injected"]
    assert actions(console, sid)[0][0] == S2C
    with pytest.raises(ValueError, match="cannot be sent"):
        watch.close_side({"side": "client", "code": 1006})
    with pytest.raises(ValueError, match="123"):
        watch.close_side({"side": "client", "code": 1000, "reason": "x" * 124})
    with pytest.raises(ValueError, match='"side"'):
        watch.drop({"side": "both"})
    with pytest.raises(ValueError, match="latency"):
        watch.set_latency({"side": "client", "seconds": -1})
    watch.set_latency({"side": "server", "seconds": 0.5})
    watch.close_side({"side": "server", "code": 4000, "reason": "console"})
    assert c.states == {PAGE: State.CLOSED, SERVER: State.CLOSED}  # mirrored
    with pytest.raises(Conflict, match="closed"):
        watch.inject({"to": "client", "text": "late"})


def test_a_mock_has_no_server_to_inject_to() -> None:
    console = Console()
    c = RoutedConnection("ws://h/mock", [])
    c.receive_open()
    watch = console.watch(c, "mock", "r")
    with pytest.raises(Conflict, match="never connected"):
        watch.inject({"to": "server", "text": "x"})
    watch.drop({"side": "client"})
    assert watch.to_json()["close_code"] == 1006


# --- bounded memory and the feed -----------------------------------------------------------


def test_each_socket_keeps_its_newest_messages() -> None:
    console = Console(keep=3)
    c, ws, server, sid = intercept(console)
    for i in range(10):
        c.receive_message(PAGE, str(i))
    watch = console.socket(sid)
    kept = watch.messages_json()
    assert [m["text"] for m in kept] == ["7", "8", "9"]
    ids = [int(m["id"]) for m in kept]
    assert [m["text"] for m in watch.messages_json(after=ids[0])] == ["8", "9"]
    assert [m["text"] for m in watch.messages_json(before=ids[2], limit=1)] == ["8"]
    assert watch.to_json()["counts"][C2S] == 10


def test_big_messages_are_cut_in_the_record() -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    c.receive_message(PAGE, "x" * 100_000)
    [m] = console.socket(sid).messages_json()
    assert len(m["text"]) == 64 * 1024 and m["size"] == 100_000 and m["truncated"]


def test_closed_sockets_beyond_the_bound_are_forgotten() -> None:
    console = Console(keep_sockets=2)
    ids = []
    for _ in range(4):
        c = RoutedConnection("ws://h/m", [])
        c.receive_open()
        ids.append(console.watch(c, "mock", "r").id)
        c.close(PAGE, 1000, "")
        c.receive_close(PAGE, 1000, "")
        c.commands_to_execute()
    assert list(console.sockets) == ids[2:]


def test_feed_changes_are_collected_only_while_listening_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signals: list[int] = []
    console = Console()
    console.on_change = lambda: signals.append(1)
    c, ws, server, sid = intercept(console)
    c.receive_message(PAGE, "unheard")
    assert console.take_changes() == [] and signals == []
    console.listening = True
    c.receive_message(PAGE, "one")
    c.receive_message(PAGE, "two")
    assert signals == [1]  # once until the changes are taken
    events = console.take_changes()
    assert [e["type"] for e in events] == ["message", "message", "socket"]
    assert events[1]["message"]["text"] == "two"
    console._messages = collections.deque(maxlen=3)  # MAX_LIVE, smaller
    for i in range(5):
        c.receive_message(PAGE, str(i))
    events = console.take_changes()
    assert events[0] == {"type": "skipped", "socket_id": sid, "count": 2}
    assert [e["message"]["text"] for e in events[1:4]] == ["2", "3", "4"]
    assert [e["type"] for e in events[4:]] == ["socket"]
    assert console.snapshot()["sockets"][0]["id"] == sid


def test_the_core_imports_neither_mitmproxy_nor_asyncio() -> None:
    code = (
        "import sys, mitm_wsroute.console; "
        "bad = [m for m in ('mitmproxy', 'asyncio', 'tornado') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failing_console_leaves_the_route_to_its_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console()
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({"match": "x"})

    def broken(*args: Any) -> None:
        raise RuntimeError("console bug")

    monkeypatch.setattr(console, "breakpoint_for", broken)
    monkeypatch.setattr(console.socket(sid), "_record", broken)
    assert c.receive_message(PAGE, "x") is SERVER
    ws.send("still sent")
    assert c.commands_to_execute() == [Send(PAGE, "still sent")]


def test_a_socket_whose_connection_is_collected_ends_at_the_next_step() -> None:
    import gc

    console = Console()
    c, ws, server, sid = intercept(console)
    console.add_breakpoint({})
    c.receive_message(PAGE, "held")
    del c, ws, server
    gc.collect()
    assert len(console.gone) == 1  # noted by the weakref callback, not handled there
    [sock] = console.sockets_json()
    assert sock["state"] == "closed" and console.paused == {}
    assert actions(console, sid) == [(C2S, "held", "dropped")]


# --- the pause queues, as a state machine ---------------------------------------------------

EDIT = " (edited)"


class PauseQueues(RuleBasedStateMachine):
    """Messages both ways, breakpoints coming and going, releases in any order: each direction
    delivers its messages once, in arrival order (edits in place, drops left out), and neither
    direction ever waits for the other."""

    def __init__(self) -> None:
        super().__init__()
        self.console = Console()
        self.c, self.ws, self.server, self.sid = intercept(self.console)
        self.n = 0
        self.arrived: dict[int, list[str]] = {PAGE: [], SERVER: []}
        self.dropped: set[str] = set()
        self.delivered: dict[int, list[str]] = {PAGE: [], SERVER: []}

    def _collect(self) -> None:
        for command in self.c.commands_to_execute():
            assert isinstance(command, Send) and isinstance(command.message, str)
            self.delivered[command.to.other].append(command.message)

    @rule(side=st.sampled_from([PAGE, SERVER]), stop=st.booleans())
    def message(self, side: Any, stop: bool) -> None:
        self.n += 1
        message = f"{'stop' if stop else 'go'} {side} {self.n}"
        self.arrived[side].append(message)
        to = self.c.receive_message(side, message)
        if to is not None:
            assert to is side.other
            self.delivered[side].append(message)
        self._collect()

    @rule(direction=st.sampled_from([C2S, S2C, "both"]))
    def add_breakpoint(self, direction: str) -> None:
        self.console.add_breakpoint({"direction": direction, "match": "^stop"})

    @precondition(lambda self: bool(self.console.breakpoints))
    @rule(data=st.data())
    def delete_breakpoint(self, data: st.DataObject) -> None:
        self.console.delete_breakpoint(data.draw(st.sampled_from(sorted(self.console.breakpoints))))

    @precondition(lambda self: bool(self.console.paused))
    @rule(data=st.data(), action=st.sampled_from(["forward", "edit", "drop"]))
    def release(self, data: st.DataObject, action: str) -> None:
        held = data.draw(st.sampled_from(list(self.console.paused.values())))
        body: dict[str, Any] = {"action": "drop" if action == "drop" else "forward"}
        if action == "edit":
            body["text"] = f"{held.message}{EDIT}"
        elif action == "drop":
            self.dropped.add(str(held.message))
        self.console.release(str(held.id), body)
        self._collect()

    @rule()
    def resume_all(self) -> None:
        self.console.resume_all()
        self._collect()
        assert not self.console.paused
        self.check_everything_delivered()

    def check_everything_delivered(self) -> None:
        for side in (PAGE, SERVER):
            expected = [m for m in self.arrived[side] if m not in self.dropped]
            assert [m.removesuffix(EDIT) for m in self.delivered[side]] == expected

    @invariant()
    def in_order_and_one_paused_per_direction(self) -> None:
        for side in (PAGE, SERVER):
            got = [m.removesuffix(EDIT) for m in self.delivered[side]]
            expected = [m for m in self.arrived[side] if m not in self.dropped]
            assert got == expected[: len(got)]  # a prefix, in order
            lane = self.console.socket(self.sid).lanes[side]
            if lane.paused is None:
                assert not lane.waiting and got == expected  # nothing held: all went on
        assert len(self.console.paused) <= 2


TestPauseQueues = PauseQueues.TestCase
TestPauseQueues.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
