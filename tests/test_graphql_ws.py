"""graphql_ws.py: both protocols' messages and one socket's session, as transcripts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from mitm_wsroute.graphql_ws import (
    GRAPHQL_TRANSPORT_WS,
    GRAPHQL_WS,
    CheckInit,
    Close,
    Forward,
    GraphQLSession,
    InterceptSession,
    Operation,
    Rewrite,
    Send,
    StartOperation,
    State,
    StopOperation,
    Violation,
    operation_from_message,
    operation_matcher,
    pick_protocol,
    result_payload,
)


def msg(**fields: Any) -> str:
    return json.dumps(fields)


SUB = {"query": "subscription Ticks($n: Int) { ticks(n: $n) }", "variables": {"n": 2}}
TICKS = Operation("1", "Ticks", SUB["query"], {"n": 2}, {})


def ready(protocol: str) -> GraphQLSession:
    s = GraphQLSession(protocol)
    assert s.receive(msg(type="connection_init", payload={"token": "t"})) == [
        CheckInit({"token": "t"})
    ]
    s.init_done(True)
    return s


@pytest.mark.parametrize(
    ("offered", "picked"),
    [
        (["graphql-transport-ws"], GRAPHQL_TRANSPORT_WS),
        (["graphql-ws"], GRAPHQL_WS),
        (["graphql-ws", "graphql-transport-ws"], GRAPHQL_WS),
        (["chat", "graphql-transport-ws", "graphql-ws"], GRAPHQL_TRANSPORT_WS),
        (["chat"], None),
        ([], None),
    ],
)
def test_pick_protocol_first_of_the_two_offered(offered: list[str], picked: str | None) -> None:
    assert pick_protocol(offered) == picked


def test_init_ack_subscribe_next_complete_graphql_transport_ws() -> None:
    s = GraphQLSession(GRAPHQL_TRANSPORT_WS)
    assert s.receive(msg(type="connection_init")) == [CheckInit({})]
    assert s.state is State.INITIALISING
    assert s.init_done(True) == [Send({"type": "connection_ack"})]
    assert s.receive(msg(type="subscribe", id="1", payload=SUB)) == [StartOperation(TICKS)]
    assert s.next("1", {"ticks": 1}) == [
        Send({"type": "next", "id": "1", "payload": {"data": {"ticks": 1}}})
    ]
    assert s.complete("1") == [Send({"type": "complete", "id": "1"}), StopOperation("1")]
    assert s.complete("1") == [] and s.next("1", 2) == []


def test_legacy_init_ack_ka_start_data_complete() -> None:
    s = GraphQLSession(GRAPHQL_WS)
    assert s.receive(msg(type="connection_init", payload={})) == [CheckInit({})]
    assert s.init_done(True) == [Send({"type": "connection_ack"}), Send({"type": "ka"})]
    assert s.keep_alive_due() and s.keep_alive() == [Send({"type": "ka"})]
    assert s.receive(msg(type="start", id="1", payload=SUB)) == [StartOperation(TICKS)]
    assert s.next("1", {"data": None, "errors": [{"message": "x"}]}) == [
        Send({"type": "data", "id": "1", "payload": {"data": None, "errors": [{"message": "x"}]}})
    ]
    assert s.receive(msg(type="stop", id="1")) == [StopOperation("1")]
    assert s.complete("1") == []  # the client stopped it: no complete
    assert s.receive(msg(type="connection_terminate")) == [Close(1000, "")]
    assert s.state is State.CLOSED and not s.keep_alive_due()


def test_ping_answered_with_pong_payload_kept_pong_ignored() -> None:
    s = GraphQLSession(GRAPHQL_TRANSPORT_WS)
    assert s.receive(msg(type="ping", payload={"t": 1})) == [
        Send({"type": "pong", "payload": {"t": 1}})
    ]
    assert s.receive(msg(type="ping")) == [Send({"type": "pong"})]
    assert s.receive(msg(type="pong")) == []


@pytest.mark.parametrize(
    ("protocol", "commands"),
    [
        (GRAPHQL_TRANSPORT_WS, [Close(4403, "Forbidden")]),
        (
            GRAPHQL_WS,
            [
                Send({"type": "connection_error", "payload": {"message": "Forbidden"}}),
                Close(4403, "Forbidden"),
            ],
        ),
    ],
)
def test_init_refused_closes_4403(protocol: str, commands: list[Any]) -> None:
    s = GraphQLSession(protocol)
    s.receive(msg(type="connection_init"))
    assert s.init_done(False) == commands
    assert s.state is State.CLOSED and s.receive(msg(type="ping")) == []


def test_error_ends_the_operation_legacy_adds_complete() -> None:
    s = ready(GRAPHQL_TRANSPORT_WS)
    s.receive(msg(type="subscribe", id="1", payload=SUB))
    assert s.error("1", "no route for operation Ticks") == [
        Send({"type": "error", "id": "1", "payload": [{"message": "no route for operation Ticks"}]})
    ]
    assert s.complete("1") == []
    legacy = ready(GRAPHQL_WS)
    legacy.receive(msg(type="start", id="1", payload=SUB))
    assert legacy.error("1", "boom") == [
        Send({"type": "error", "id": "1", "payload": {"message": "boom"}}),
        Send({"type": "complete", "id": "1"}),
    ]


def test_protocol_rules_of_graphql_transport_ws() -> None:
    s = GraphQLSession(GRAPHQL_TRANSPORT_WS)
    assert s.receive(msg(type="subscribe", id="1", payload=SUB)) == [Close(4401, "Unauthorized")]
    s = ready(GRAPHQL_TRANSPORT_WS)
    assert s.receive(msg(type="connection_init")) == [
        Close(4429, "Too many initialisation requests")
    ]
    s = ready(GRAPHQL_TRANSPORT_WS)
    s.receive(msg(type="subscribe", id="1", payload=SUB))
    assert s.receive(msg(type="subscribe", id="1", payload=SUB)) == [
        Close(4409, "Subscriber for 1 already exists"),
        StopOperation("1"),
    ]


def test_connection_init_timeout_closes_4408_on_graphql_transport_ws_only() -> None:
    s = GraphQLSession(GRAPHQL_TRANSPORT_WS)
    assert s.init_timeout() == [Close(4408, "Connection initialisation timeout")]
    assert s.state is State.CLOSED
    assert s.receive(msg(type="connection_init")) == []
    s = GraphQLSession(GRAPHQL_TRANSPORT_WS)
    s.receive(msg(type="connection_init"))  # being checked: counts as received
    assert s.init_timeout() == []
    assert s.init_done(True) == [Send({"type": "connection_ack"})]
    assert ready(GRAPHQL_TRANSPORT_WS).init_timeout() == []
    assert GraphQLSession(GRAPHQL_WS).init_timeout() == []  # the legacy protocol has no such rule


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("not json", "not JSON"),
        (b"\x00", "a binary message"),
        ('["connection_init"]', "not a JSON object with a string 'type'"),
        (msg(type="subscribe", payload=SUB), "'subscribe' without a string 'id'"),
        (msg(type="subscribe", id="1"), "'subscribe' 1 without a payload with a string 'query'"),
        (msg(type="subscribe", id="1", payload={"query": "{a}", "variables": [1]}), "'variables'"),
        (msg(type="start", id="1", payload=SUB), "unknown message type 'start'"),
        (msg(type="ka"), "unknown message type 'ka'"),
    ],
)
def test_malformed_client_message_closes_4400(message: str | bytes, why: str) -> None:
    s = ready(GRAPHQL_TRANSPORT_WS)
    s.receive(msg(type="subscribe", id="9", payload=SUB))
    commands = s.receive(message)
    assert isinstance(commands[0], Violation) and why in commands[0].text
    assert commands[1:] == [Close(4400, commands[0].text[:123]), StopOperation("9")]
    assert s.state is State.CLOSED


def test_operation_name_from_the_message_else_the_query() -> None:
    named = {"query": "query A { a } query B { b }", "operationName": "B"}
    assert operation_from_message(msg(type="subscribe", id="1", payload=named)) == Operation(
        "1", "B", named["query"]
    )
    anonymous = {"query": "{ a }", "extensions": {"x": 1}}
    assert operation_from_message(msg(type="start", id="2", payload=anonymous)) == Operation(
        "2", None, "{ a }", {}, {"x": 1}
    )
    assert operation_from_message(msg(type="next", id="2", payload={})) is None
    assert operation_from_message("{") is None


def test_matchers_and_result_payloads() -> None:
    assert operation_matcher("Ticks")(TICKS) and not operation_matcher("Other")(TICKS)
    assert operation_matcher(lambda op: op.variables["n"] == 2)(TICKS)
    with pytest.raises(TypeError):
        operation_matcher(3)  # type: ignore[arg-type]
    assert result_payload({"ticks": 1}) == {"data": {"ticks": 1}}
    assert result_payload({"errors": []}) == {"errors": []}
    assert result_payload(None) == {"data": None}


def test_intercept_tracks_operations_and_offers_their_results() -> None:
    s = InterceptSession(GRAPHQL_TRANSPORT_WS)
    init = msg(type="connection_init", payload={"a": 1})
    assert s.from_client(init) == [CheckInit({"a": 1})]
    sub = msg(type="subscribe", id="1", payload=SUB)
    assert s.from_client(sub) == [Forward(sub)]
    ack = msg(type="connection_ack")
    assert s.from_server(ack) == [Forward(ack)]
    nxt = {"type": "next", "id": "1", "payload": {"data": {"ticks": 1}}}
    assert s.from_server(json.dumps(nxt)) == [Rewrite(TICKS, {"data": {"ticks": 1}}, nxt)]
    done = msg(type="complete", id="1")
    assert s.from_server(done) == [Forward(done)]
    unknown = msg(type="next", id="1", payload={"data": 1})
    assert s.from_server(unknown) == [Forward(unknown)]  # not an operation it knows: as is


def test_intercept_legacy_and_malformed_from_either_side() -> None:
    s = InterceptSession(GRAPHQL_WS)
    s.from_client(msg(type="start", id="1", payload=SUB))
    data = {"type": "data", "id": "1", "payload": {"data": 1}}
    assert s.from_server(json.dumps(data)) == [Rewrite(TICKS, {"data": 1}, data)]
    assert s.from_server(msg(type="ka")) == [Forward(msg(type="ka"))]
    bad = s.from_server(msg(type="next", id="1", payload={}))
    assert isinstance(bad[0], Violation) and bad[0].side == "server"
    assert bad[1] == Close(
        4400, "malformed message from the server: unknown message type 'next' for graphql-ws"
    )
    assert s.from_client(msg(type="ping")) == []  # closed
    c = InterceptSession(GRAPHQL_TRANSPORT_WS)
    bad = c.from_client("[]")
    assert isinstance(bad[0], Violation) and bad[0].side == "client" and bad[1].code == 4400


def test_graphql_ws_is_pure() -> None:
    code = (
        "import sys; import mitm_wsroute.graphql_ws; "
        "bad = [m for m in ('mitmproxy', 'asyncio') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
