"""Transcripts of the extensions beyond Playwright: request headers, reject, accept, drop and
latency, on the pure connection through the public `WebSocketRoute`."""

from __future__ import annotations

from typing import Any

import pytest

from mitm_wsroute.connection import (
    PAGE,
    SERVER,
    Accept,
    CallHandler,
    Close,
    CloseSide,
    CloseTcp,
    DropSide,
    End,
    Error,
    Opening,
    Reject,
    RoutedConnection,
    Send,
    SetLatency,
    StartCloseTimer,
    State,
)
from mitm_wsroute.headers import Headers
from mitm_wsroute.route import WebSocketRoute
from tests.test_connection import connected

DROP = Close(1006, "")


def mock(**kwargs: Any) -> tuple[RoutedConnection, WebSocketRoute]:
    c = RoutedConnection("ws://h/ws", ["a", "b"], **kwargs)
    return c, WebSocketRoute(c)


def test_request_headers_case_insensitive_repeats_kept_same_on_both_sides() -> None:
    headers = Headers([("Host", "h"), ("X-Token", "1"), ("x-token", "2"), ("Cookie", "a=b")])
    c, ws = mock(request_headers=headers)
    server = ws.connect_to_server()
    for route in (ws, server):
        h = route.request_headers
        assert h["x-TOKEN"] == "1, 2" and h.get_all("X-Token") == ["1", "2"]
        assert h.get("cookie") == "a=b" and "HOST" in h and "nope" not in h
        assert list(h) == ["host", "x-token", "cookie"] and len(h) == 3
        assert h.fields[1] == ("X-Token", "1")  # as sent


def test_reject_answers_and_closes_everything() -> None:
    c, ws = mock()
    ws.send("never sent")
    ws.reject(503, headers={"Retry-After": "1"}, body="busy")
    assert c.opening is Opening.REJECTED
    assert c.answer == Reject(503, (("Retry-After", "1"),), b"busy")
    assert c.states == {PAGE: State.CLOSED, SERVER: State.NONE}
    assert c.commands_to_execute() == []
    ws.send("ignored")  # a warning, nothing else
    assert c.commands_to_execute() == []
    assert c.both_closed


def test_reject_defaults_to_403() -> None:
    c, ws = mock()
    ws.reject()
    assert c.answer == Reject(403)


@pytest.mark.parametrize(
    ("call", "before", "error"),
    [
        ("reject", "returned", r"^reject\(\) must be called in the route handler, before it"),
        ("reject", "accept", r"^reject\(\) cannot follow accept\(\)"),
        ("reject", "reject", r"^reject\(\) cannot follow reject\(\)"),
        ("reject", "connect", r"^reject\(\) cannot follow connect_to_server\(\): the server"),
        ("accept", "returned", r"^accept\(\) must be called in the route handler"),
        ("accept", "accept", r"^accept\(\) cannot follow accept\(\)"),
        ("accept", "reject", r"^accept\(\) cannot follow reject\(\)"),
        (
            "accept",
            "connect",
            r"^accept\(\) cannot follow connect_to_server\(\): accept\(\) is for",
        ),
    ],
)
def test_answer_too_late_or_on_an_intercept(call: str, before: str, error: str) -> None:
    c, ws = mock()
    if before == "returned":
        c.handler_returned()
    elif before == "connect":
        ws.connect_to_server()
    else:
        getattr(ws, before)()
    states = dict(c.states)
    with pytest.raises(Error, match=error):
        getattr(ws, call)()
    assert c.states == states  # nothing changed


@pytest.mark.parametrize("status", [101, 199, 600, 0, "503", True, 503.0])
def test_reject_status_outside_200_599(status: Any) -> None:
    c, ws = mock()
    with pytest.raises(ValueError, match=r"status from 200 to 599.*accept\(\)"):
        ws.reject(status)
    assert c.opening is Opening.HANDLER


@pytest.mark.parametrize(
    "headers", [{"X": "a\r\nInjected: 1"}, [("X", 1)], {"": "v"}, {"A:B": "v"}, [("only",)]]
)
def test_reject_and_accept_refuse_headers_that_cannot_be_sent(headers: Any) -> None:
    c, ws = mock()
    with pytest.raises(ValueError, match="header"):
        ws.reject(503, headers=headers)
    with pytest.raises(ValueError, match="header"):
        ws.accept(headers=headers)


def test_server_side_cannot_answer_the_upgrade() -> None:
    c, ws = mock()
    server = ws.connect_to_server()
    for call in (server.reject, server.accept):
        with pytest.raises(Error, match=r"must be called on the page-side WebSocketRoute"):
            call()


def test_accept_defaults_and_choices() -> None:
    c, ws = mock()
    ws.accept()
    assert c.answer == Accept("a", (), True) and c.opening is Opening.ACCEPTED
    c, ws = mock()
    ws.accept(protocol="b", headers=[("Set-Cookie", "x"), ("Set-Cookie", "y")], compression=False)
    assert c.answer == Accept("b", (("Set-Cookie", "x"), ("Set-Cookie", "y")), False)
    c, ws = mock()
    ws.accept(protocol=None)
    assert c.answer == Accept(None)
    c = RoutedConnection("ws://h/", [])
    WebSocketRoute(c).accept()
    assert c.answer == Accept(None)


def test_accept_protocol_must_be_asked_for() -> None:
    c, ws = mock()
    with pytest.raises(ValueError, match=r"did not ask for it; pass one of \['a', 'b'\], or None"):
        ws.accept(protocol="c")


@pytest.mark.parametrize("answer", ["accept", "reject"])
def test_connect_to_server_after_an_answer(answer: str) -> None:
    c, ws = mock()
    getattr(ws, answer)()
    with pytest.raises(Error, match=r"^connect_to_server\(\) cannot follow"):
        ws.connect_to_server()


def test_accept_then_sends_go_out_after_the_101() -> None:
    c, ws = mock()
    woken: list[int] = []
    c.wakeup = lambda: woken.append(1)
    ws.accept()
    assert woken  # the addon answers now
    ws.send("hi")
    c.receive_open()
    assert c.commands_to_execute() == [Send(PAGE, "hi")]


def test_handler_raising_after_accept_closes_the_client_1011() -> None:
    c, ws = mock()
    ws.accept()
    c.receive_open()
    c.receive_handler_error(KeyError("x"))
    assert c.commands_to_execute() == [
        CloseSide(PAGE, Close(1011, "route handler raised KeyError")),
        StartCloseTimer(PAGE),
    ]
    assert c.both_closed


# --- drop -----------------------------------------------------------------------------------


def test_page_drop_is_mirrored_as_a_drop() -> None:
    c, ws, server = connected()
    ws.drop()
    assert c.commands_to_execute() == [
        DropSide(PAGE),  # no close frame: the TCP connections close at once
        DropSide(SERVER),
        CloseTcp(SERVER),
        CloseTcp(PAGE),
        End(),
    ]
    assert c.both_closed and c.first_close == (False, DROP)


def test_server_drop_goes_to_the_server_on_close() -> None:
    c, ws, server = connected()
    log: list[Any] = []
    server.on_close(lambda code, reason: log.append((code, reason)))
    server.drop()
    commands = c.commands_to_execute()
    assert commands[0] == DropSide(SERVER)
    assert isinstance(commands[1], CallHandler) and commands[1].args == (1006, "")
    assert commands[2:] == [CloseTcp(SERVER)]  # the client stays
    assert c.states == {PAGE: State.OPEN, SERVER: State.CLOSED}


def test_drop_in_the_handler_ends_the_client_after_its_101() -> None:
    c, ws = mock()
    ws.drop()
    c.handler_returned()
    c.receive_open()
    assert c.commands_to_execute() == [DropSide(PAGE), CloseTcp(PAGE), End()]
    assert c.both_closed


def test_drop_of_a_closed_side_is_a_no_op() -> None:
    c, ws, server = connected()
    ws.close(code=1000, reason="")
    c.commands_to_execute()
    ws.drop()
    server.drop()
    assert c.commands_to_execute() == []


# --- latency --------------------------------------------------------------------------------


def test_latency_is_a_command_in_order_with_sends() -> None:
    c, ws, server = connected()
    ws.send("now")
    ws.set_latency(0.25)
    ws.send("later")
    server.set_latency(1)
    ws.set_latency(0)
    assert c.commands_to_execute() == [
        Send(PAGE, "now"),
        SetLatency(PAGE, 0.25),
        Send(PAGE, "later"),
        SetLatency(SERVER, 1.0),
        SetLatency(PAGE, 0.0),
    ]


@pytest.mark.parametrize("seconds", [-0.001, float("nan"), float("inf"), "1", True, None])
def test_latency_must_be_a_finite_number_of_seconds(seconds: Any) -> None:
    c, ws, server = connected()
    with pytest.raises(ValueError, match=r"set_latency"):
        ws.set_latency(seconds)
    assert c.commands_to_execute() == []


def test_drop_and_latency_from_another_thread_keep_call_order() -> None:
    from tests.test_layer import LoopThread  # a real loop on its own thread owns the socket

    owner = LoopThread()
    try:
        assert owner.server is not None
        owner.route.send("before")
        owner.route.set_latency(0.5)
        with pytest.raises(ValueError, match="set_latency"):
            owner.route.set_latency(-1)  # checked in the calling thread
        for call in (owner.route.reject, owner.route.accept):
            with pytest.raises(Error, match="from the route handler, on the proxy's thread"):
                call()
        owner.server.drop()
        owner.on_loop(lambda: None)
        assert owner.drained == [
            Send(PAGE, "before"),
            SetLatency(PAGE, 0.5),
            DropSide(SERVER),
            DropSide(PAGE),
            CloseTcp(SERVER),
            CloseTcp(PAGE),
            End(),
        ]
    finally:
        owner.stop()
