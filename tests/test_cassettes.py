"""Cassettes (cassettes.py, and how har.py and harroute.py use it): matchers, filters, record
modes, what was played, and new episodes, as data in and data out and as transcripts on the
pure connection."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mitm_wsroute.cassettes import Filters, check_record_mode, closest, matcher, resolve_mode
from mitm_wsroute.connection import PAGE, SERVER, Close, CloseSide, Send, State
from mitm_wsroute.har import Recording, RecordingFile, Replay, load_har
from mitm_wsroute.harroute import Cassette, UnmatchedMessageError
from mitm_wsroute.router import Router
from mitm_wsroute.scripts import RouteScripts
from tests.test_har import T0, conversation, entry, msg, texts
from tests.test_harroute import route_socket, run, write

C, S = True, False

# --- matchers ------------------------------------------------------------------------------------


def _callable(recorded: Any, actual: Any) -> bool:
    return len(recorded) == len(actual)


@pytest.mark.parametrize(
    ("match", "recorded", "actual", "expected"),
    [
        ("json", '{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}', True),
        ("json", '{"a": 1}', '{"a": 1.0}', False),  # JSON's 1 and 1.0 differ
        ("json", '{"a": 1}', '{"a": true}', False),
        ("json", "not json", "not json", True),  # text that is not JSON: exact
        ("json", "not json", "not  json", False),
        ("json", b"\x01", b"\x01", True),  # binary: as bytes
        ("json", b"{}", "{}", False),
        ("json_subset", '{"a": 1, "x": {"y": 1}}', '{"i": 7, "a": 1, "x": {"y": 1, "z": 0}}', True),
        ("json_subset", '{"op": "sub"}', '{"op": "unsub"}', False),
        ("json_subset", '{"l": [1]}', '{"l": [1, 2]}', False),  # lists compare equal
        ("json_subset", '{"op": "sub"}', '["op"]', False),
        (re.compile(r'"op": "\w+"'), "anything", '{"op": "sub"}', True),  # search in the client's
        (re.compile(r'"op": "\w+"'), '{"op": "sub"}', '{"id": 1}', False),
        (re.compile(r'"op": "(\w+)"'), '{"op": "sub", "id": 1}', '{"op": "sub", "id": 2}', True),
        (re.compile(r'"op": "(\w+)"'), '{"op": "sub"}', '{"op": "unsub"}', False),  # groups differ
        (re.compile("."), b"\x01", b"\x01", True),
        (re.compile("."), b"\x01", b"\x02", False),
        (_callable, "abc", b"xyz", True),  # a callable decides alone, binary too
        (_callable, "abc", "wxyz", False),
    ],
)  # fmt: skip
def test_matchers(match: Any, recorded: Any, actual: Any, expected: bool) -> None:
    matches = matcher(match)
    assert matches is not None
    assert matches(recorded, actual) is expected


def test_exact_is_the_replays_own_lookup() -> None:
    assert matcher("exact") is None


@pytest.mark.parametrize(
    ("match", "error"),
    [
        (
            "regex",
            "match must be 'exact', 'json', 'json_subset', 'socket.io', 'graphql', a compiled "
            "regex or a callable",
        ),
        (re.compile(b"x"), "compile a str pattern"),
        (None, "match must be"),
    ],
)
def test_bad_matchers(match: Any, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        matcher(match)


# --- the replay with matchers, orders and repeats ------------------------------------------------


def test_transcript_json_matcher_ignores_key_order() -> None:
    r = Replay(conversation((C, '{"a": 1, "b": 2}'), (S, "ok")), match=matcher("json"))
    assert texts(r.receive('{"b": 2, "a": 1}')) == ["ok"]


def test_socket_io_matcher_ignores_ack_ids_and_auth_and_renumbers_acks() -> None:
    """A recording made with ack ids 0 and 1, replayed to a client that numbers from 7; the
    server's own ack ids (its emit, the client's answer) stay as recorded."""
    c = conversation(
        (S, '0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000}'),
        (C, '40{"token":"recorded"}'), (S, '40{"sid":"n"}'),
        (C, '420["add",2,3]'), (S, "430[5]"),
        (C, '451-1["reverse",{"_placeholder":true,"num":0}]'), (C, b"\x00\x01"),
        (S, '461-1[{"_placeholder":true,"num":0}]'), (S, b"\x01\x00"),
        (S, '42/admin,12["ask"]'), (C, '43/admin,12["Ada"]'), (S, "2"), (C, "3"),
    )  # fmt: skip
    for _ in range(2):  # the second replay starts afresh: no ids from the first
        r = Replay(c, match=matcher("socket.io"))
        assert texts(r.receive('40{"token":"live"}')) == ['40{"sid":"n"}']
        assert texts(r.receive('427["add",2,3]')) == ["437[5]"]
        assert texts(r.receive('427["add",2,4]')) is None  # other arguments
        assert texts(r.receive('451-8["reverse",{"_placeholder":true,"num":0}]')) == []
        ack = '461-8[{"_placeholder":true,"num":0}]'  # renumbered; binary, then the server's emit
        assert texts(r.receive(b"\x00\x01")) == [ack, b"\x01\x00", '42/admin,12["ask"]']
        assert texts(r.receive('43/admin,11["Ada"]')) is None  # not the server's ack id
        assert texts(r.receive('43/admin,12["Ada"]')) == ["2"]
        assert texts(r.receive("3")) == []


def test_graphql_matcher_by_operation_and_variables_with_the_clients_ids() -> None:
    def m(**message: Any) -> str:
        return json.dumps(message)

    sub = {"query": "subscription Ticks($n: Int) { ticks(n: $n) }", "variables": {"n": 2}}
    c = conversation(
        (C, m(type="connection_init", payload={"token": "recorded"})),
        (S, m(type="connection_ack")),
        (C, m(id="1", type="subscribe", payload=sub)),
        (S, m(id="1", type="next", payload={"data": {"ticks": 1}})),
        (S, m(id="1", type="complete")),
        (C, m(id="2", type="subscribe", payload={**sub, "variables": {"n": 3}})),
        (S, m(id="2", type="next", payload={"data": {"ticks": 3}})),
        (C, m(id="2", type="complete")),
    )
    r = Replay(c, match=matcher("graphql"), order="any")
    assert texts(r.receive(m(type="connection_init", payload={"token": "live"}))) == [
        m(type="connection_ack")
    ]
    uuid = "9b2f8c1e-live"
    three = {**sub, "variables": {"n": 3}, "operationName": "Ticks"}
    assert texts(r.receive(m(id=uuid, type="subscribe", payload=three))) == [
        m(id=uuid, type="next", payload={"data": {"ticks": 3}})
    ]
    assert texts(r.receive(m(id="other", type="complete"))) is None  # not that operation's
    assert texts(r.receive(m(id=uuid, type="complete"))) == []
    four = {**sub, "variables": {"n": 4}}
    assert texts(r.receive(m(id="x", type="subscribe", payload=four))) is None


@pytest.mark.parametrize(
    ("match", "recorded", "quiet", "loud"),
    [
        ("socket.io", '42["chat","hi"]', ["3", "1", "41", "5", "6"], ['42["other"]', "2"]),
        (
            "graphql",
            '{"type": "ping"}',
            ['{"type": "pong"}', '{"id": "9", "type": "complete"}', '{"type": "stop", "id": "1"}'],
            ['{"type": "ping", "payload": {"x": 1}}', "not json"],
        ),
    ],
)
def test_protocol_replays_let_unrecorded_heartbeats_and_goodbyes_go(
    tmp_path: Path, match: Any, recorded: str, quiet: list[str], loud: list[str]
) -> None:
    """A pong or a goodbye the recording does not have (their timing is the client's) is no
    unmatched-message error; anything else still is."""
    path = tmp_path / "p.har"
    write(path, entry("wss://h/ws", [msg("send", recorded), msg("receive", "ok")]))
    cassette = Cassette(path, match=match)
    c, _ = route_socket(cassette.routes[0].handler)
    for message in quiet:
        c.receive_message(PAGE, message)
        assert run(c) == []
    for message in loud:
        c.receive_message(PAGE, message)
        with pytest.raises(UnmatchedMessageError):
            run(c)
    c.receive_message(PAGE, recorded)
    assert run(c) == [Send(PAGE, "ok")]


def test_transcript_order_any_answers_out_of_order_each_once() -> None:
    c = conversation((C, "a"), (S, "A"), (C, "b"), (S, "B"))
    for match in (None, matcher("json")):  # the lookup and the matcher agree
        r = Replay(c, order="any", match=match)
        assert texts(r.receive("b")) == ["B"]
        assert texts(r.receive("a")) == ["A"]  # sequential would have skipped it
        assert texts(r.receive("a")) is None
        assert r.played == bytearray([1, 0, 1, 0])  # answers count once sent (`sent`)


def test_transcript_sequential_skips_and_never_goes_back() -> None:
    r = Replay(conversation((C, "a"), (S, "A"), (C, "b"), (S, "B")))
    assert texts(r.receive("b")) == ["B"]
    assert texts(r.receive("a")) is None


@pytest.mark.parametrize("order", ["sequential", "any"])
@pytest.mark.parametrize("match", [None, matcher("json")])
def test_transcript_playback_repeats(order: Any, match: Any) -> None:
    c = conversation((C, "ping"), (S, "pong"), (C, "x"), (S, "X"))
    r = Replay(c, order=order, match=match, repeats=True)
    assert texts(r.receive("ping")) == ["pong"]
    assert texts(r.receive("x")) == ["X"]
    assert texts(r.receive("ping")) == ["pong"]  # played again
    assert texts(Replay(c, order=order, match=match).receive("y")) is None


def test_replay_marks_what_it_played_and_where_it_got() -> None:
    r = Replay(conversation((S, "hi"), (C, "a"), (S, "A1"), (S, "A2"), (C, "b")))
    steps = r.open()
    assert r.last == 0 and r.played == bytearray(5)  # nothing sent yet
    for step in steps:
        r.sent(step)
    r.receive("a")
    assert r.last == 3  # the end of the answer
    assert r.played == bytearray([1, 1, 0, 0, 0])


# --- filters -------------------------------------------------------------------------------------


def test_filters_replace_query_values_and_headers_keep_the_rest() -> None:
    f = Filters.of((h for h in ["Authorization", "x-api-key"]), ["token", "sig"], None)
    assert f.url("wss://h/ws?room=1&token=abc&sig=x%20y&token") == (
        "wss://h/ws?room=1&token=FILTERED&sig=FILTERED&token=FILTERED"
    )
    assert f.url("wss://h/ws") == "wss://h/ws"
    assert f.header_fields([("authorization", "Bearer x"), ("X-API-Key", "k"), ("Host", "h")]) == [
        ("authorization", "FILTERED"),
        ("X-API-Key", "FILTERED"),
        ("Host", "h"),
    ]
    assert Filters().header_fields([("Cookie", "a=b"), ("Set-Cookie", "c")]) == [
        ("Cookie", "FILTERED"),
        ("Set-Cookie", "FILTERED"),
    ]


def test_before_record_message_rewrites_skips_and_is_checked() -> None:
    def hook(direction: str, message: Any) -> Any:
        if message == "heartbeat":
            return None
        return {"bad": 1} if message == "bad" else f"{direction}:{message}"

    f = Filters.of((), (), hook)
    assert (f.message("send", "x"), f.message("receive", "heartbeat")) == ("send:x", None)
    with pytest.raises(TypeError, match="before_record_message returned dict"):
        f.message("send", "bad")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("authorization", (), None), r"filter_headers must be .*=\['authorization'\]"),
        (((), [1], None), "filter_query must be a list of names"),
        (((), 1, None), "filter_query must be a list of names"),
        (((), (), "hook"), "before_record_message must be a function"),
    ],
)  # fmt: skip
def test_bad_filters(args: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Filters.of(*args)


# --- record modes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record_mode", "update", "override", "exists", "mode"),
    [
        (None, False, None, True, "none"),
        (None, True, None, True, "all"),
        ("once", False, None, False, "all"),
        ("once", False, None, True, "none"),
        ("once", True, None, True, "none"),  # record_mode wins over update
        ("new_episodes", False, None, False, "new_episodes"),
        ("all", False, "none", True, "none"),  # the option wins over the argument
        (None, True, "once", True, "none"),
    ],
)
def test_resolve_mode(
    record_mode: Any, update: bool, override: Any, exists: bool, mode: str
) -> None:
    assert resolve_mode(record_mode, update, override, exists) == mode


def test_bad_record_mode() -> None:
    with pytest.raises(
        ValueError, match=r"record_mode must be one of 'none', 'once', 'new_episodes', 'all'"
    ):
        check_record_mode("always")


def test_closest() -> None:
    recorded = ['{"op": "subscribe"}', '{"op": "unsubscribe"}', "hello", b"\x00", "hello"]
    assert closest('{"op": "subscrib"}', recorded, 2) == [
        '{"op": "subscribe"}',
        '{"op": "unsubscribe"}',
    ]
    assert len(closest("x", recorded)) == 3


# --- cassettes on the pure connection ------------------------------------------------------------


@pytest.fixture
def chat(tmp_path: Path) -> Path:
    path = tmp_path / "chat.har"
    write(
        path,
        entry("wss://h/ws", [msg("receive", "welcome"), msg("send", '{"op": "join", "room": 1}'),
                             msg("receive", "joined"), msg("send", "bye"), msg("receive", "ciao")]),
        entry("wss://h/other", [msg("send", "q"), msg("receive", "r")]),
    )  # fmt: skip
    return path


def test_none_reports_an_unmatched_message_with_the_closest_recorded(chat: Path) -> None:
    cassette = Cassette(chat, record_mode="none")
    [route] = cassette.routes
    c, out = route_socket(route.handler)
    assert out == [Send(PAGE, "welcome")]
    c.receive_message(PAGE, '{"op": "join", "room": 2}')
    with pytest.raises(UnmatchedMessageError) as error:
        run(c)
    assert str(error.value) == (
        f"""wss://h/ws: client message '{{"op": "join", "room": 2}}' matches nothing recorded """
        f"in entry 0 of {chat}; no reply (record_mode 'none'). Closest recorded client "
        """messages: '{"op": "join", "room": 1}', 'bye'"""
    )
    c.receive_message(PAGE, "bye")
    assert run(c) == [Send(PAGE, "ciao")]  # the socket goes on
    client, server = cassette.unplayed()
    assert (client, server) == (['{"op": "join", "room": 1}', "q"], ["joined", "r"])


def test_none_without_a_file_raises_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no such HAR file to replay; record it first"):
        Cassette(tmp_path / "missing.har")
    assert Cassette(tmp_path / "missing.har", record_mode="once").mode == "all"


def test_the_override_wins(chat: Path) -> None:
    assert Cassette(chat, update=True, record_mode_override="once").mode == "none"
    with pytest.raises(ValueError, match="wsroute_record_mode must be one of"):
        Cassette(chat, record_mode_override="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"order": "random"}, "order must be 'sequential' or 'any'"),
        ({"allow_playback_repeats": 1}, "allow_playback_repeats must be True or False"),
        ({"record_mode": "never"}, "record_mode must be one of"),
        ({"match": "fuzzy"}, "match must be"),
    ],
)
def test_bad_arguments_raise_at_the_call(chat: Path, kwargs: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Cassette(chat, **kwargs)


def test_all_played_and_the_url_filter(chat: Path) -> None:
    cassette = Cassette(chat, url="**/ws", match="json")
    c, _ = route_socket(cassette.routes[0].handler)
    for m in ('{"room": 1, "op": "join"}', "bye"):
        c.receive_message(PAGE, m)
    run(c)
    assert cassette.unplayed() == ([], [])  # /other is not this cassette's


def secret_hook(direction: str, message: Any) -> Any:
    if message == "heartbeat":
        return None
    if isinstance(message, str) and message.startswith("{"):
        doc = json.loads(message)
        doc["token"] = "FILTERED" if "token" in doc else None
        return json.dumps(doc)
    return message


def test_filters_apply_before_writing_and_before_matching(tmp_path: Path) -> None:
    path = tmp_path / "secret.har"
    options: Any = {"filter_query": ["key"], "before_record_message": secret_hook}
    recording = Cassette(path, record_mode="once", **options)
    c, _ = route_socket(recording.routes[0].handler, "wss://h/ws?key=s3cret&room=1")
    for side, m in (
        (PAGE, '{"op": "auth", "token": "s3cret"}'),
        (SERVER, "ok"),
        (PAGE, "heartbeat"),
    ):
        c.receive_message(side, m)
    assert run(c) == [Send(SERVER, '{"op": "auth", "token": "s3cret"}'), Send(PAGE, "ok"),
                      Send(SERVER, "heartbeat")]  # forwarded as they are  # fmt: skip
    c.receive_close(PAGE, 1000, "")
    run(c)
    recording.close()
    text = path.read_text()
    assert "s3cret" not in text and "heartbeat" not in text
    [entry] = json.loads(text)["log"]["entries"]
    assert entry["request"]["url"] == "wss://h/ws?key=FILTERED&room=1"

    replay = Cassette(path, record_mode="once", **options)
    assert replay.mode == "none"
    c, _ = route_socket(replay.routes[0].handler, "wss://h/ws?key=0ther&room=1")
    c.receive_message(PAGE, "heartbeat")  # skipped: neither matched nor reported
    c.receive_message(PAGE, '{"token": "0ther", "op": "auth"}')
    with pytest.raises(UnmatchedMessageError, match="FILTERED"):
        run(c)  # exact: the key order differs
    replay = Cassette(path, match="json", **options)
    c, _ = route_socket(replay.routes[0].handler, "wss://h/ws?key=0ther&room=1")
    c.receive_message(PAGE, '{"token": "0ther", "op": "auth"}')
    assert run(c) == [Send(PAGE, "ok")]


class FakeServer:
    """A `new_episodes` socket's late server (`Cassette.connect`), driven by the test."""

    made: list[FakeServer]
    opened = None

    def __init__(self, ws: Any, on_message: Any, on_close: Any) -> None:
        self.ws, self.on_message, self.on_close = ws, on_message, on_close
        self.got: list[Any] = []
        FakeServer.made.append(self)

    def send(self, message: Any) -> None:
        self.got.append(message)

    def close(self, code: int | None, reason: str | None) -> None:
        self.got.append(("close", code, reason))


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> list[FakeServer]:
    FakeServer.made = []
    monkeypatch.setattr(Cassette, "connect", FakeServer)
    return FakeServer.made


def test_new_episodes_grow_the_entry_and_record_new_sockets_whole(
    chat: Path, servers: list[FakeServer]
) -> None:
    cassette = Cassette(chat, record_mode="new_episodes")
    [route] = cassette.routes
    c, out = route_socket(route.handler)
    assert c.states[SERVER] is State.NONE and out == [Send(PAGE, "welcome")]  # a mock
    c.receive_message(PAGE, '{"op": "join", "room": 1}')
    assert run(c) == [Send(PAGE, "joined")] and servers == []  # all matched: no server
    c.receive_message(PAGE, "news?")
    assert run(c) == []
    [server] = servers  # connected at the first new message
    server.on_message("live welcome")
    c.receive_message(PAGE, "more?")
    assert run(c) == [Send(PAGE, "live welcome")]
    server.on_message("news!")
    c.receive_message(PAGE, "bye")  # matched: replayed, not forwarded
    assert run(c) == [Send(PAGE, "news!"), Send(PAGE, "ciao")]
    c.receive_close(PAGE, 1000, "done")
    run(c)
    assert server.got == ["news?", "more?", ("close", 1000, "done")] and len(servers) == 1

    second, _ = route_socket(route.handler)  # no second entry: recorded whole (intercept)
    assert second.states[SERVER] is State.OPEN
    second.receive_message(SERVER, "fresh")
    run(second)
    cassette.close()
    loaded = load_har(str(chat))
    first, whole = loaded.entries("wss://h/ws")
    assert [(s, d) for s, _, d in first.messages()] == [
        (S, "welcome"), (C, '{"op": "join", "room": 1}'), (S, "joined"), (C, "news?"),
        (S, "live welcome"), (C, "more?"), (S, "news!"), (C, "bye"), (S, "ciao"),
    ]  # fmt: skip
    assert first.close is not None and (first.close.code, first.close.by) == (1000, "client")
    assert first.index == 0 and [d for _, _, d in whole.messages()] == ["fresh"]
    assert [c.data for c in loaded.entries("wss://h/other")] == [["q", "r"]]  # kept
    assert first.times[3] >= first.times[2]  # on the entry's clock


def test_new_episodes_server_close_and_unreachable_server_close_the_client(
    chat: Path, servers: list[FakeServer]
) -> None:
    for code, reason in ((4001, "gone"), (1011, "new_episodes: the server could not be reached")):
        cassette = Cassette(chat, record_mode="new_episodes")
        c, _ = route_socket(cassette.routes[0].handler)
        c.receive_message(PAGE, f"new {code}")  # (the first grows the entry: matched next time)
        run(c)
        servers[-1].on_close(code, reason)
        assert run(c) == [CloseSide(PAGE, Close(code, reason))]


def test_new_episodes_without_anything_new_leave_the_file_alone(
    chat: Path, servers: list[FakeServer]
) -> None:
    before = chat.read_text()
    cassette = Cassette(chat, record_mode="new_episodes")
    c, _ = route_socket(cassette.routes[0].handler)
    c.receive_message(PAGE, "bye")
    c.receive_close(PAGE, 1000, "")
    run(c)
    cassette.close()
    assert chat.read_text() == before and servers == []  # the server was never connected


def test_recording_grows_in_place_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "grow.har"
    write(path, entry("wss://h/ws", [msg("send", "a"), msg("receive", "A")]),
          entry("wss://h/ws", [msg("send", "b")]))  # fmt: skip
    base = load_har(str(path)).entries("wss://h/ws")[1]
    grown = Recording("wss://h/ws", T0, base=base)
    grown.message(False, "before", T0, after=-1)
    grown.message(False, "B", T0, after=0)
    RecordingFile(str(path), T0, replace_urls=False).write([grown])
    entries = load_har(str(path)).entries("wss://h/ws")
    assert [c.data for c in entries] == [["a", "A"], ["before", "b", "B"]]


def test_route_scripts_get_the_record_mode_option_and_reload_when_it_changes(
    chat: Path, tmp_path: Path
) -> None:
    script = tmp_path / "routes.py"
    script.write_text(f"from mitm_wsroute import route_from_har\nroute_from_har({str(chat)!r})\n")
    router = Router()
    scripts = RouteScripts(router)
    scripts.configure([str(script)], None)
    assert (route := router.find("wss://h/ws")) is not None and route.label == "har:chat.har"
    scripts.configure([str(script)], None, "new_episodes")  # the option wins over the call's
    assert (route := router.find("wss://h/ws")) is not None
    assert route.label == "har:chat.har (new episodes)"
