"""Transcripts of the pure state machine: events in, drained commands out."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from mitm_wsroute.connection import (
    PAGE,
    SERVER,
    CallHandler,
    Close,
    CloseSide,
    CloseTcp,
    DropSide,
    End,
    Error,
    RoutedConnection,
    Send,
    StartCloseTimer,
    State,
    Wire,
    check_close,
)
from mitm_wsroute.route import WebSocketRoute


def record(log: list[Any], name: str) -> Any:
    def handler(*args: Any) -> None:
        log.append((name, *args))

    return handler


def rules(c: RoutedConnection) -> list[Any]:
    """The drained commands that carry out the forwarding and close rules, without those of the
    closing handshakes and TCP connections (which have transcripts of their own, below)."""
    return [
        x for x in c.commands_to_execute() if not isinstance(x, StartCloseTimer | CloseTcp | End)
    ]


def mock() -> tuple[RoutedConnection, WebSocketRoute]:
    c = RoutedConnection("ws://h/ws", ["a", "b"])
    return c, WebSocketRoute(c)


def connected() -> tuple[RoutedConnection, WebSocketRoute, WebSocketRoute]:
    c, ws = mock()
    server = ws.connect_to_server()
    c.receive_open()
    c.commands_to_execute()
    return c, ws, server


# --- open -----------------------------------------------------------------------------------


def test_mock_sends_in_handler_queue_until_open() -> None:
    c, ws = mock()
    ws.send("one")
    ws.send(b"two")
    assert c.states == {PAGE: State.CONNECTING, SERVER: State.NONE}
    c.receive_open()
    assert c.commands_to_execute() == [Send(PAGE, "one"), Send(PAGE, b"two")]
    assert c.states == {PAGE: State.OPEN, SERVER: State.NONE}


def test_server_sends_before_upstream_open_go_first() -> None:
    c, ws = mock()
    server = ws.connect_to_server()
    server.send("fake")
    assert c.states[SERVER] is State.CONNECTING
    c.receive_open()
    assert c.commands_to_execute() == [Send(SERVER, "fake")]
    assert c.states == {PAGE: State.OPEN, SERVER: State.OPEN}


def test_url_and_protocols_same_on_both_sides() -> None:
    c, ws = mock()
    server = ws.connect_to_server()
    assert (ws.url, ws.protocols) == (server.url, server.protocols) == ("ws://h/ws", ["a", "b"])
    ws.protocols.append("x")
    assert ws.protocols == ["a", "b"]


def test_connect_errors_are_playwrights() -> None:
    c, ws = mock()
    server = ws.connect_to_server()
    with pytest.raises(Error, match=r"^Already connected to the server$"):
        ws.connect_to_server()
    with pytest.raises(Error, match=r"^connectToServer must be called on the page-side"):
        server.connect_to_server()


def test_connect_after_open_of_a_mock_is_refused() -> None:
    c, ws = mock()
    c.receive_open()
    with pytest.raises(Error, match="before the route handler returns"):
        ws.connect_to_server()


# --- messages -------------------------------------------------------------------------------


def test_client_message_with_page_handler_goes_to_handler_only() -> None:
    c, ws, server = connected()
    h = record([], "h")
    ws.on_message(h)
    assert c.receive_message(PAGE, "hi") is None
    assert c.commands_to_execute() == [CallHandler(h, ("hi",))]


def test_client_message_without_handler_connected_is_forwarded() -> None:
    c, ws, server = connected()
    assert c.receive_message(PAGE, b"bin") is SERVER
    assert c.commands_to_execute() == []


def test_client_message_without_handler_mock_is_dropped() -> None:
    c, ws = mock()
    c.receive_open()
    assert c.receive_message(PAGE, "hi") is None
    assert c.commands_to_execute() == []


def test_server_message_with_server_handler_goes_to_handler_only() -> None:
    c, ws, server = connected()
    h = record([], "h")
    server.on_message(h)
    assert c.receive_message(SERVER, "s") is None
    assert c.commands_to_execute() == [CallHandler(h, ("s",))]


def test_server_message_without_handler_is_forwarded_to_client() -> None:
    c, ws, server = connected()
    ws.on_message(record([], "page"))  # a page handler does not affect the other direction
    assert c.receive_message(SERVER, "s") is PAGE
    assert c.commands_to_execute() == []


def test_handlers_are_looked_up_per_message_and_replaced() -> None:
    c, ws, server = connected()
    assert c.receive_message(PAGE, "1") is SERVER
    first, second = record([], "1"), record([], "2")
    ws.on_message(first)
    assert c.receive_message(PAGE, "2") is None
    ws.on_message(second)
    assert c.receive_message(PAGE, "3") is None
    assert c.commands_to_execute() == [
        CallHandler(first, ("2",)),
        CallHandler(second, ("3",)),
    ]


def test_send_type_checked_and_ignored_when_closed(caplog: pytest.LogCaptureFixture) -> None:
    c, ws = mock()
    with pytest.raises(TypeError, match="str or a bytes-like object"):
        ws.send(42)  # type: ignore[arg-type]
    c.receive_open()
    c.receive_close(PAGE, 1000, "")
    c.commands_to_execute()
    ws.send("late")
    assert c.commands_to_execute() == []
    assert "send() to the page ignored, that side is closed" in caplog.text


@pytest.mark.parametrize("make", [bytearray, memoryview, lambda b: memoryview(bytearray(b))])
def test_send_takes_any_bytes_like_object_and_copies_it_at_the_call(make: Any) -> None:
    c, ws = mock()
    buffer = bytearray(b"abc")
    ws.send(make(buffer))
    buffer[0] = ord("X")  # changed after the call: what was sent stays
    [command] = c.commands_to_execute()
    assert command == Send(PAGE, b"abc") and type(command.message) is bytes


def test_send_of_a_str_subclass_sends_a_plain_str() -> None:
    class Text(str):
        pass

    c, ws = mock()
    ws.send(Text("hi"))
    [command] = c.commands_to_execute()
    assert type(command.message) is str and command.message == "hi"


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff then", "é\ud83d"])
def test_text_utf8_cannot_encode_raises_at_the_call_and_the_socket_goes_on(text: str) -> None:
    c, ws = mock()
    c.receive_open()
    with pytest.raises(ValueError, match="lone surrogate"):
        ws.send(text)
    with pytest.raises(ValueError, match="lone surrogate"):
        ws.close(code=1000, reason=text)
    assert c.commands_to_execute() == []  # nothing recorded for either call
    ws.send("after")
    ws.send("emoji \U0001f600 is fine")
    assert c.commands_to_execute() == [Send(PAGE, "after"), Send(PAGE, "emoji \U0001f600 is fine")]
    assert c.states[PAGE] is State.OPEN


# --- close ----------------------------------------------------------------------------------


def test_client_close_mirrors_to_server() -> None:
    c, ws, server = connected()
    c.receive_close(PAGE, 4003, "bye")
    assert rules(c) == [CloseSide(SERVER, Close(4003, "bye"))]
    assert c.both_closed


def test_server_close_mirrors_to_client_empty_payload() -> None:
    c, ws, server = connected()
    c.receive_close(SERVER, None, None)
    assert rules(c) == [CloseSide(PAGE, Close(None, None))]


def test_abnormal_close_mirrors_as_1006() -> None:
    c, ws, server = connected()
    c.receive_close(SERVER, 1006, "")
    assert rules(c) == [DropSide(PAGE)]


def test_server_on_close_keeps_client_open() -> None:
    c, ws, server = connected()
    h = record([], "closed")
    server.on_close(h)
    c.receive_close(SERVER, 4005, "gone")
    assert rules(c) == [CallHandler(h, (4005, "gone"))]
    assert c.states == {PAGE: State.OPEN, SERVER: State.CLOSED}
    ws.send("server left")
    c.receive_message(PAGE, "anyone?")  # no handler, server closed: dropped
    ws.close(code=4006, reason="later")
    assert rules(c) == [
        Send(PAGE, "server left"),
        CloseSide(PAGE, Close(4006, "later")),
    ]
    assert c.both_closed


def test_page_on_close_keeps_server_open() -> None:
    c, ws, server = connected()
    h = record([], "closed")
    ws.on_close(h)
    c.receive_close(PAGE, None, None)
    server.send("last words")
    server.close(code=4011, reason="translated")
    assert rules(c) == [
        CallHandler(h, (None, None)),
        Send(SERVER, "last words"),
        CloseSide(SERVER, Close(4011, "translated")),
    ]


@pytest.mark.parametrize("closing", [PAGE, SERVER])
@pytest.mark.parametrize("by_route", [False, True])
def test_a_mirrored_close_reaches_that_sides_on_close_afterwards(
    closing: Any, by_route: bool
) -> None:
    # Playwright: the upstream closes with 4012, no server on_close, a page on_close: the client
    # is closed with 4012, then the page on_close runs with (4012, reason); and the other way.
    c, ws, server = connected()
    log: list[Any] = []
    route = {PAGE: ws, SERVER: server}
    route[closing.other].on_close(record(log, "mirrored"))
    if by_route:
        route[closing].close(code=4012, reason="why")
    else:
        c.receive_close(closing, 4012, "why")
    commands = rules(c)
    assert commands[-2:] == [
        CloseSide(closing.other, Close(4012, "why")),
        CallHandler(c.handlers[closing.other].close, (4012, "why")),  # type: ignore[arg-type]
    ]
    assert c.both_closed


def test_route_close_of_page_mirrors_to_server() -> None:
    c, ws, server = connected()
    ws.close(code=3009, reason="oops")
    assert rules(c) == [
        CloseSide(PAGE, Close(3009, "oops")),
        CloseSide(SERVER, Close(3009, "oops")),
    ]


def test_route_close_of_page_runs_page_on_close_instead() -> None:
    c, ws, server = connected()
    h = record([], "closed")
    ws.on_close(h)
    ws.close(code=3000, reason="bye")
    assert rules(c) == [
        CloseSide(PAGE, Close(3000, "bye")),
        CallHandler(h, (3000, "bye")),
    ]
    assert c.states[SERVER] is State.OPEN


def test_server_close_by_route_then_mirror() -> None:
    c, ws, server = connected()
    server.close(code=1008, reason="policy")
    assert rules(c) == [
        CloseSide(SERVER, Close(1008, "policy")),
        CloseSide(PAGE, Close(1008, "policy")),
    ]


def test_close_twice_is_a_no_op() -> None:
    c, ws = mock()
    c.receive_open()
    ws.close()
    ws.close(code=4000)
    assert rules(c) == [CloseSide(PAGE, Close(None, None))]


def test_peer_close_after_route_close_is_the_handshake_reply() -> None:
    c, ws = mock()
    h = record([], "closed")
    ws.on_close(h)
    c.receive_open()
    ws.close(code=4001, reason="x")
    c.receive_close(PAGE, 4001, "x")
    assert rules(c) == [
        CloseSide(PAGE, Close(4001, "x")),
        CallHandler(h, (4001, "x")),
    ]


def test_client_connection_lost_closes_server_left_open() -> None:
    c, ws, server = connected()
    ws.on_close(record([], "closed"))
    c.receive_close(PAGE, 1000, "")
    c.commands_to_execute()
    c.receive_connection_lost(PAGE)
    assert rules(c) == [CloseSide(SERVER, Close(1001, "client connection gone"))]
    assert c.both_closed


def test_close_awaitable_either_way() -> None:
    c, ws = mock()
    result = ws.close(code=1000)

    async def use() -> None:
        await result

    coro = use()
    with pytest.raises(StopIteration):
        coro.send(None)


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (999, None, "close code 999 cannot be sent"),
        (1004, None, "1004 cannot be sent"),
        (1005, None, "1005 cannot be sent"),
        (1006, None, "1006 cannot be sent"),
        (1015, None, "1015 cannot be sent"),
        (2999, None, "2999 cannot be sent"),
        (5000, None, "5000 cannot be sent"),
        (None, "why", "needs a code"),
        (1000, "x" * 124, "124 UTF-8 bytes"),
        (1000, "é" * 62, "124 UTF-8 bytes"),
        ("1000", None, "must be an int"),
    ],
)
def test_invalid_close_raises_at_the_call(code: Any, reason: Any, error: str) -> None:
    c, ws = mock()
    with pytest.raises(ValueError, match=error):
        ws.close(code=code, reason=reason)
    assert c.commands_to_execute() == []


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert check_close(code, "x" * 123) == Close(code, "x" * 123)


# --- failures -------------------------------------------------------------------------------


def test_handler_error_closes_page_1011_and_never_connects() -> None:
    c, ws = mock()
    ws.connect_to_server()
    ws.send("before the error")
    c.receive_handler_error(ZeroDivisionError())
    c.receive_open()
    assert c.states == {PAGE: State.CLOSED, SERVER: State.NONE}
    assert c.commands_to_execute() == [
        Send(PAGE, "before the error"),
        CloseSide(PAGE, Close(1011, "route handler raised ZeroDivisionError")),
        StartCloseTimer(PAGE),
    ]
    assert c.both_closed


def test_upstream_failure_without_server_on_close() -> None:
    c, ws = mock()
    ws.connect_to_server()
    assert c.receive_upstream_failed() is False
    assert c.both_closed


def test_upstream_failure_with_server_on_close_degrades_to_mock() -> None:
    c, ws = mock()
    server = ws.connect_to_server()
    h = record([], "closed")
    server.on_close(h)
    assert c.receive_upstream_failed() is True
    c.receive_open()
    assert c.states == {PAGE: State.OPEN, SERVER: State.CLOSED}
    assert c.commands_to_execute() == [CallHandler(h, (1006, ""))]


def test_wakeup_called_for_every_command() -> None:
    calls: list[int] = []
    c, ws = mock()
    c.wakeup = lambda: calls.append(1)
    ws.send("a")
    ws.close()
    assert len(calls) == len(c.commands_to_execute()) == 3  # Send, CloseSide, StartCloseTimer


# --- closing handshakes and TCP connections (full transcripts) --------------------------------


def test_route_close_waits_for_the_clients_answer_then_closes_tcp() -> None:
    c, ws = mock()
    c.receive_open()
    ws.close(code=4001, reason="bye")
    assert c.commands_to_execute() == [CloseSide(PAGE, Close(4001, "bye")), StartCloseTimer(PAGE)]
    assert c.wires[PAGE] is Wire.CLOSING
    c.receive_close(PAGE, 4001, "bye")  # the client's answer: the handshake is over
    assert c.commands_to_execute() == [CloseTcp(PAGE), End()]
    c.receive_close_timeout(PAGE)  # the timer, later: nothing left to do
    assert c.commands_to_execute() == []


def test_a_silent_client_is_closed_when_its_timer_runs_out() -> None:
    # Whoever asked for the close (a handler, a task, another thread), the timer is a command.
    c, ws = mock()
    c.receive_open()
    ws.close()
    assert c.commands_to_execute() == [CloseSide(PAGE, Close()), StartCloseTimer(PAGE)]
    c.receive_close_timeout(PAGE)
    assert c.commands_to_execute() == [CloseTcp(PAGE), End()]


def test_each_closing_handshake_has_its_own_timer() -> None:
    # server.close() with a server on_close, the server answers; its timer runs out later,
    # and a page close after that still gets its own full wait.
    c, ws, server = connected()
    server.on_close(h := record([], "closed"))
    server.close(code=4000, reason="server")
    assert c.commands_to_execute() == [
        CloseSide(SERVER, Close(4000, "server")),
        StartCloseTimer(SERVER),
        CallHandler(h, (4000, "server")),
    ]
    c.receive_close(SERVER, 4000, "server")
    assert c.commands_to_execute() == [CloseTcp(SERVER)]
    c.receive_close_timeout(SERVER)
    ws.close(code=1000)
    assert c.commands_to_execute() == [CloseSide(PAGE, Close(1000, "")), StartCloseTimer(PAGE)]
    c.receive_close_timeout(SERVER)  # a stale timer of the other side changes nothing
    assert c.commands_to_execute() == []
    c.receive_close(PAGE, 1000, "")
    assert c.commands_to_execute() == [CloseTcp(PAGE), End()]


def test_the_servers_tcp_closes_first_the_clients_last() -> None:
    c, ws, server = connected()
    c.receive_close(PAGE, 4003, "bye")  # the client closed; the adapter echoed it
    assert c.commands_to_execute() == [
        CloseSide(SERVER, Close(4003, "bye")),
        StartCloseTimer(SERVER),
    ]
    assert c.wires == {PAGE: Wire.DONE, SERVER: Wire.CLOSING}  # the client waits for the server
    c.receive_close(SERVER, 4003, "bye")
    assert c.commands_to_execute() == [CloseTcp(SERVER), CloseTcp(PAGE), End()]


def test_a_silent_server_is_closed_when_its_timer_runs_out_then_the_client() -> None:
    c, ws, server = connected()
    ws.close(code=3009, reason="oops")
    c.commands_to_execute()
    c.receive_close(PAGE, 3009, "oops")
    assert c.commands_to_execute() == []  # the server has not answered yet
    c.receive_close_timeout(SERVER)
    assert c.commands_to_execute() == [CloseTcp(SERVER), CloseTcp(PAGE), End()]


def test_client_leaving_closes_a_server_held_open_then_both_tcp() -> None:
    c, ws, server = connected()
    ws.on_close(record([], "closed"))
    c.receive_close(PAGE, 1000, "")
    c.commands_to_execute()
    c.receive_connection_lost(PAGE)
    assert c.commands_to_execute() == [
        CloseSide(SERVER, Close(1001, "client connection gone")),
        StartCloseTimer(SERVER),
    ]
    c.receive_close(SERVER, 1001, "client connection gone")
    assert c.commands_to_execute() == [CloseTcp(SERVER), CloseTcp(PAGE), End()]


def test_a_dropped_side_is_mirrored_as_a_drop_at_once() -> None:
    c, ws, server = connected()
    c.receive_connection_lost(SERVER)
    assert c.commands_to_execute() == [
        DropSide(PAGE),  # no close frame
        CloseTcp(SERVER),
        CloseTcp(PAGE),
        End(),
    ]


def test_drop_of_the_page_ends_its_connection_at_once_with_a_page_on_close() -> None:
    # The page's on_close would hold the server open; mitmproxy cannot keep an upstream whose
    # client is gone, so the server is told (1001) and both TCP connections close now.
    c, ws, server = connected()
    log: list[Any] = []
    ws.on_close(record(log, "page closed"))
    ws.drop()
    assert c.commands_to_execute() == [
        DropSide(PAGE),
        CallHandler(c.handlers[PAGE].close, (1006, "")),  # type: ignore[arg-type]
        CloseSide(SERVER, Close(1001, "client connection gone")),
        CloseTcp(SERVER),  # no close timer: the client's connection goes now
        CloseTcp(PAGE),
        End(),
    ]
    assert c.states == {PAGE: State.CLOSED, SERVER: State.CLOSED}


def test_drop_of_the_server_with_a_server_on_close_keeps_the_page() -> None:
    c, ws, server = connected()
    log: list[Any] = []
    server.on_close(record(log, "server closed"))
    server.drop()
    assert c.commands_to_execute() == [
        DropSide(SERVER),
        CallHandler(c.handlers[SERVER].close, (1006, "")),  # type: ignore[arg-type]
        CloseTcp(SERVER),
    ]
    assert c.states[PAGE] is State.OPEN


@pytest.mark.parametrize("failing", [PAGE, SERVER])
@pytest.mark.parametrize("code", [1002, 1007])
def test_a_protocol_failure_is_an_abnormal_closure(failing: Any, code: int) -> None:
    # The failing side gets the codec's close frame and its TCP closes at once; the route and
    # the other side see what they would see without the proxy: a dropped connection.
    c, ws, server = connected()
    log: list[Any] = []
    {PAGE: ws, SERVER: server}[failing].on_close(record(log, "closed"))
    c.receive_failure(failing, code, "bad frame")
    assert c.commands_to_execute() == [
        CloseSide(failing, Close(code, "bad frame")),
        CallHandler(c.handlers[failing].close, (1006, "")),  # type: ignore[arg-type]
        # an upstream goes at once; the client's connection cannot go before the upstream's
        *([CloseTcp(SERVER)] if failing is SERVER else []),
    ]
    assert c.states[failing.other] is State.OPEN  # its on_close holds the other side
    c2, ws2, server2 = connected()
    c2.receive_failure(failing, code, "bad frame")
    assert c2.commands_to_execute() == [
        CloseSide(failing, Close(code, "bad frame")),
        DropSide(failing.other),
        CloseTcp(SERVER),
        CloseTcp(PAGE),
        End(),
    ]
    assert c2.first_close == (failing is PAGE, Close(1006, ""))


def test_a_message_too_big_is_mirrored_as_1009() -> None:
    c, ws, server = connected()
    c.receive_failure(SERVER, 1009, "message larger than 10 bytes")
    assert c.commands_to_execute() == [
        CloseSide(SERVER, Close(1009, "message larger than 10 bytes")),
        CloseSide(PAGE, Close(1009, "message larger than 10 bytes")),
        StartCloseTimer(PAGE),
        CloseTcp(SERVER),
    ]


def test_injections_go_to_open_sides_only(caplog: pytest.LogCaptureFixture) -> None:
    c, ws, server = connected()
    assert c.receive_injected(PAGE) and c.receive_injected(SERVER)
    server.close()
    assert c.receive_injected(PAGE) is False  # closed by the mirror
    assert "cannot inject a WebSocket message: the page side is closed" in caplog.text
    m, _ = mock()
    m.receive_open()
    assert m.receive_injected(SERVER) is False  # a mock has no server


def test_pings_are_forwarded_or_answered_by_the_proxy() -> None:
    c, ws, server = connected()
    assert (c.ping_goes_to(PAGE), c.ping_goes_to(SERVER)) == (SERVER, PAGE)
    server.on_close(lambda code, reason: None)
    c.receive_close(SERVER, 1000, "")
    assert (c.ping_goes_to(PAGE), c.ping_goes_to(SERVER)) == (None, PAGE)
    m, _ = mock()
    m.receive_open()
    assert m.ping_goes_to(PAGE) is None


def test_pure_modules_import_neither_mitmproxy_nor_asyncio() -> None:
    code = (
        "import sys; import mitm_wsroute.connection, mitm_wsroute.route, mitm_wsroute.router, "
        "mitm_wsroute.headers, mitm_wsroute.latency, "
        "mitm_wsroute.urlmatch, mitm_wsroute.messages, mitm_wsroute.codec, "
        "mitm_wsroute.deflate, mitm_wsroute.transport; "
        "bad = [m for m in ('mitmproxy', 'asyncio') if m in sys.modules]; "
        "print(bad); sys.exit(bool(bad))"
    )
    # the package __init__ must stay pure too, so route scripts import nothing heavy
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- what waits to be sent (wsroute_max_buffer) ----------------------------------------------


def test_buffered_amount_counts_what_waits_and_what_the_adapter_holds() -> None:
    c, ws, server = connected()
    c.written = lambda side: 100 if side is PAGE else 0
    ws.send(b"12345")
    ws.send("abc")
    assert ws.buffered_amount == 108 and server.buffered_amount == 0
    c.commands_to_execute()  # the adapter took them
    assert ws.buffered_amount == 100


@pytest.mark.parametrize("on_close", [False, True])
def test_a_side_that_does_not_read_fails_the_socket_with_1011(
    on_close: bool, caplog: pytest.LogCaptureFixture
) -> None:
    c, ws, server = connected()
    c.max_buffer, c.route = 10, "routes.py:push"
    log: list[Any] = []
    if on_close:
        ws.on_close(record(log, "page closed"))
    ws.send(b"123456")
    ws.send(b"789012")  # 12 bytes wait: over the limit
    ws.send(b"late")  # ignored: the side is closed
    reason = "send buffer full"
    assert c.commands_to_execute() == [
        DropSide(PAGE),  # no close frame: it would wait behind the rest
        *(
            [CallHandler(c.handlers[PAGE].close, (1011, reason))]  # type: ignore[arg-type]
            if on_close
            else [CloseSide(SERVER, Close(1011, reason)), StartCloseTimer(SERVER)]
        ),
        *([CloseSide(SERVER, Close(1001, "client connection gone"))] if on_close else []),
        CloseTcp(SERVER),
        CloseTcp(PAGE, abort=True),
        End(),
    ]
    assert "route routes.py:push: 12 bytes wait to be sent to the page" in caplog.text
    assert "wsroute_max_buffer (10)" in caplog.text


def test_a_server_that_does_not_read_is_aborted_and_the_client_told() -> None:
    c, ws, server = connected()
    c.max_buffer = 3
    server.send("abcd")
    assert rules(c) == [
        DropSide(SERVER),
        CloseSide(PAGE, Close(1011, "send buffer full")),
    ]
    assert c.aborted == {SERVER}
