"""Transcripts of `har_routes` on the pure connection: replay as a mock, recording as an
intercept, and what the recorder writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from mitm_wsroute.connection import (
    PAGE,
    SERVER,
    CallHandler,
    Close,
    CloseSide,
    DropSide,
    Reject,
    RoutedConnection,
    Send,
    State,
)
from mitm_wsroute.har import CREATOR, load_har
from mitm_wsroute.harroute import HarRecorder, flush_recordings, har_routes
from mitm_wsroute.route import WebSocketRoute
from tests.test_har import entry, msg


def write(path: Path, *entries: Any) -> str:
    path.write_text(json.dumps({"log": {"version": "1.2", "creator": CREATOR,
                                        "entries": list(entries)}}))  # fmt: skip
    return str(path)


def recorder(route: Any) -> HarRecorder:
    """The recorder behind a recording route."""
    recorder = route.handler.__self__
    assert isinstance(recorder, HarRecorder)
    return recorder


def route_socket(handler: Any, url: str = "wss://h/ws") -> tuple[RoutedConnection, list[Any]]:
    """Run the route handler for a new socket, open it; the commands so far."""
    c = RoutedConnection(url, [])
    handler(WebSocketRoute(c))
    c.handler_returned()
    c.receive_open()
    return c, run(c)


def run(c: RoutedConnection) -> list[Any]:
    """Drain the commands, running the handler calls (as the adapter does); the sends and
    closes among them (the close lifecycle's timers and TCP steps are the core's business)."""
    out: list[Any] = []
    while c.has_commands:
        for command in c.commands_to_execute():
            if isinstance(command, CallHandler):
                command.handler(*command.args)
            elif isinstance(command, Send | CloseSide | DropSide):
                out.append(command)
    return out


@pytest.fixture
def replay_har(tmp_path: Path) -> str:
    return write(
        tmp_path / "r.har",
        entry("https://h/ws", [msg("receive", "first socket"), msg("send", "q"),
                               msg("receive", "a1")],
              _webSocketClose={"code": 4000, "reason": "done", "by": "server"}),
        entry("wss://h/ws", [msg("receive", "later sockets")]),
    )  # fmt: skip


def test_replay_nth_socket_gets_nth_entry_then_the_last(replay_har: str) -> None:
    [route] = har_routes(replay_har)
    c, out = route_socket(route.handler)
    assert out == [Send(PAGE, "first socket")]
    c.receive_message(PAGE, "q")
    assert run(c) == [Send(PAGE, "a1"), CloseSide(PAGE, Close(4000, "done"))]
    for _ in range(2):
        assert route_socket(route.handler)[1] == [Send(PAGE, "later sockets")]


def test_replay_never_connects_upstream(replay_har: str) -> None:
    [route] = har_routes(replay_har)
    c, _ = route_socket(route.handler)
    assert c.states[SERVER] is State.NONE


def test_not_found_abort_refuses_with_404_and_fallback_does_not_match(replay_har: str) -> None:
    [route] = har_routes(replay_har, url="**/*")
    assert route.matches("wss://h/other")
    c = RoutedConnection("wss://h/other", [])
    route.handler(WebSocketRoute(c))
    assert isinstance(c.answer, Reject) and c.answer.status == 404
    [fallback] = har_routes(replay_har, not_found="fallback")
    assert fallback.matches("wss://h/ws") and not fallback.matches("wss://h/other")


def test_url_filter(replay_har: str) -> None:
    [route] = har_routes(replay_har, url="wss://other/**")
    assert not route.matches("wss://h/ws")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"not_found": "ignore"}, "not_found must be 'abort' or 'fallback'"),
        ({"timing": "fast"}, "timing must be 'none' or 'recorded'"),
        ({"url": "{"}, "."),  # an invalid glob raises at registration
    ],
)
def test_bad_arguments(replay_har: str, kwargs: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        har_routes(replay_har, **kwargs)


def test_recording_forwards_both_ways_and_writes_when_the_socket_ends(tmp_path: Path) -> None:
    path = tmp_path / "rec.har"
    [route] = har_routes(path, update=True)
    c, out = route_socket(route.handler)
    assert c.states[SERVER] is State.OPEN  # an intercept
    c.receive_message(SERVER, "hello")
    c.receive_message(PAGE, b"\x01")
    assert run(c) == [Send(PAGE, "hello"), Send(SERVER, b"\x01")]
    assert not path.exists()
    c.receive_close(SERVER, 4001, "server bye")
    assert run(c) == [CloseSide(PAGE, Close(4001, "server bye"))]
    assert recorder(route).wait(10)  # written by the writer thread when the socket ended
    conversation = load_har(str(path)).entries("wss://h/ws")[0]
    assert [(s, d) for s, _, d in conversation.messages()] == [(False, "hello"), (True, b"\x01")]
    assert conversation.close is not None and conversation.close.by == "server"


def test_recording_client_close_is_mirrored_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "rec.har"
    [route] = har_routes(path, update=True)
    c, _ = route_socket(route.handler)
    c.receive_close(PAGE, 1001, "")
    assert run(c) == [CloseSide(SERVER, Close(1001, ""))]
    assert recorder(route).wait(10)
    close = load_har(str(path)).entries("wss://h/ws")[0].close
    assert close is not None and (close.code, close.by) == (1001, "client")
    c, _ = route_socket(route.handler)
    c.receive_close(PAGE, 1006, "")  # a dropped client: the server is dropped too
    assert run(c) == [DropSide(SERVER)]


def test_recording_replaces_old_entries_for_the_url_keeps_others(tmp_path: Path) -> None:
    path = tmp_path / "rec.har"
    write(path, entry("wss://h/ws", [msg("receive", "old")]),
          entry("wss://h/other", [msg("receive", "kept")]))  # fmt: skip
    [route] = har_routes(path, update=True)
    c, _ = route_socket(route.handler)
    c.receive_message(SERVER, "new")
    run(c)
    flush_recordings()  # at stop: the open socket is written too
    loaded = load_har(str(path))
    assert [c.data for c in loaded.entries("wss://h/ws")] == [["new"]]
    assert [c.data for c in loaded.entries("wss://h/other")] == [["kept"]]


def test_recording_refuses_a_file_that_is_not_a_har(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("precious")
    with pytest.raises(ValueError, match="invalid JSON"):
        har_routes(path, update=True)
    assert path.read_text() == "precious"


def test_write_failure_logged_once_per_socket_old_file_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rec.har"
    recorder = HarRecorder(str(path))
    path.mkdir()  # the HAR's place is taken: every write fails
    for n in range(2):
        c, _ = route_socket(recorder.handler)
        c.receive_message(SERVER, f"m{n}")
        run(c)
        with caplog.at_level(logging.ERROR):
            c.receive_close(SERVER, 1000, "")
            run(c)
            assert not recorder.wait(10)
            assert not recorder.flush(recorder.recordings[-1])  # the same socket again
    errors = [r for r in caplog.records if "cannot write the HAR recording" in r.message]
    assert len(errors) == 2
    assert path.is_dir() and list(path.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["rec.har"]  # no temporary file left
