"""The console server's own decisions, without a server: the option's parsing and the bound of
what a slow page has waiting (`_Events.push`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mitm_wsroute import console_web
from mitm_wsroute.console import Console
from mitm_wsroute.console_web import _Events, parse_listen


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8082", ("127.0.0.1", 8082)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9000", ("::1", 9000)),
    ],
)
def test_listen_addresses(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["8082", "host:", ":80", "h:65536", "::1:80", "h:x"])
def test_bad_listen_addresses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(value)


class SlowPage:
    """`_Events`' feed logic over a fake connection whose writes finish when the test says."""

    push = _Events.push
    _write = _Events._write
    _written = _Events._written

    def __init__(self) -> None:
        self.writing: asyncio.Future[None] | None = None
        self.backlog: list[dict[str, Any]] = []
        self.resync = False
        self.frames: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self.server = type("Server", (), {"console": Console()})()

    def write_message(self, text: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.frames.append((json.loads(text), future))
        return future

    def types(self, frame: int) -> list[str]:
        return [e["type"] for e in self.frames[frame][0]]


async def test_a_slow_page_gets_one_frame_in_flight_then_what_waited() -> None:
    page = SlowPage()
    page.push([{"type": "message", "n": 1}])
    page.push([{"type": "message", "n": 2}])
    page.push([{"type": "socket"}])
    assert len(page.frames) == 1  # the others wait for the first to be written
    page.frames[0][1].set_result(None)
    await asyncio.sleep(0)  # the done callback runs on the loop
    assert len(page.frames) == 2 and page.types(1) == ["message", "socket"]


async def test_a_page_too_slow_is_told_to_resync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_web, "MAX_BACKLOG", 3)
    page = SlowPage()
    page.push([{"type": "message"}])
    for _ in range(10):
        page.push([{"type": "message"}])
    assert page.backlog == [] and page.resync  # dropped, not buffered
    page.frames[0][1].set_result(None)
    await asyncio.sleep(0)
    assert page.types(1) == ["resync", "hello"]
