"""The pytest plugin's cassettes, run as a user runs them (pytest in a subprocess, the plugin
from the entry point): record once against a real server, replay with the server gone (in CI,
on two xdist workers), and the failures: unmatched and unplayed messages, a missing cassette
under ``--wsroute-record-mode none``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.test_e2e_cassettes import Server

TESTS = """
import os
import pytest
from websockets.sync.client import connect

URL = f"ws://127.0.0.1:{os.environ['CHAT_PORT']}/chat"
PARTIAL = bool(os.environ.get("PARTIAL"))


@pytest.mark.wsroute_cassette
@pytest.mark.parametrize("room", ["red", "blue"])
def test_room(wsroute, room):
    with connect(f"{URL}?room={room}", proxy=wsroute.url) as c:
        assert c.recv(5) == "welcome"
        if PARTIAL:
            c.send("purple")  # never recorded
        c.send(room)
        assert c.recv(5) == f"echo {room!r}"


@pytest.mark.wsroute_cassette(path="shared.har", assert_all_played=True, match="json")
async def test_partial(async_wsroute):
    from websockets.asyncio.client import connect as aconnect
    async with aconnect(URL, proxy=async_wsroute.url) as c:
        assert await c.recv() == "welcome"
        await c.send('{"token": "t", "user": "ann"}')
        assert await c.recv() == "authed ann"
        if not PARTIAL:
            await c.send("news?")
            assert await c.recv() == "news!"


@pytest.mark.skipif(not PARTIAL, reason="only once the others are recorded")
@pytest.mark.wsroute_cassette
def test_never_recorded(wsroute):
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    pytester.makefile(".ini", pytest="[pytest]\nasyncio_mode = auto\n")
    return pytester.makepyfile(test_app=TESTS)


def test_record_once_then_replay_in_ci_then_the_failures(
    pytester: pytest.Pytester, suite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server(None)
    monkeypatch.setenv("CHAT_PORT", server.url.split(":")[2].split("/")[0])
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PARTIAL", raising=False)
    try:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # "once": records
        result.assert_outcomes(passed=3, skipped=1)
    finally:
        server.stop()
    cassettes = sorted(
        p.relative_to(pytester.path).as_posix() for p in pytester.path.rglob("*.har")
    )
    assert cassettes == [
        "cassettes/test_app/test_room[blue].har",
        "cassettes/test_app/test_room[red].har",
        "shared.har",
    ]

    monkeypatch.setenv("CI", "1")  # "none": replays, here without the server
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=3, skipped=1)

    monkeypatch.delenv("CI")
    monkeypatch.setenv("PARTIAL", "1")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--wsroute-record-mode", "none"
    )
    result.assert_outcomes(passed=3, errors=4)
    result.stdout.fnmatch_lines_random(
        [
            "*ERROR at teardown of test_room[[]red[]]*",
            "*UnmatchedMessageError: ws://127.0.0.1:*/chat?room=red: client message 'purple' "
            "matches nothing recorded in entry 0 of *test_room[[]red[]].har; no reply "
            "(record_mode 'none'). Closest recorded client messages: 'red'",
            "*wsroute_cassette *shared.har was not all played:",
            "*1 recorded client messages never came:",
            "  'news?'",
            "*1 recorded server messages never sent:",
            "  'news!'",
            "*ERROR at setup of test_never_recorded*",
            "*test_never_recorded.har: no such HAR file to replay; record it first*",
        ]
    )


def test_marker_without_the_fixture_and_a_bad_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bare=textwrap.dedent(
            """
            import pytest

            @pytest.mark.wsroute_cassette
            def test_bare():
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*wsroute_cassette routes the wsroute (or async_wsroute)*"])
    result = pytester.runpytest_subprocess("--wsroute-record-mode", "sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--wsroute-record-mode: invalid choice: 'sometimes'*"])
