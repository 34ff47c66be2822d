"""The pytest plugin, run as a user runs it: pytest in a subprocess, the plugin found through the
package's entry point (no conftest)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

ROUTES = """
from mitm_wsroute import route_web_socket

@route_web_socket("**/from-script")
def from_script(ws):
    ws.send("script route")
"""

TESTS = """
import os
from websockets.sync.client import connect


def test_sync(wsroute, tmp_path):
    wsroute.route_web_socket("**/echo", lambda ws: ws.on_message(ws.send))
    with connect("ws://app.invalid/echo", proxy=wsroute.url) as c:
        c.send("ping")
        assert c.recv(5) == "ping"
    sock = wsroute.wait_for_web_socket("**/echo")
    assert sock.wait_for_message(direction="sent").payload == "ping"


def test_reset_between_tests(wsroute):
    assert wsroute.web_sockets == []  # the previous test's socket is forgotten


async def test_async(async_wsroute):
    from websockets.asyncio.client import connect as aconnect
    async_wsroute.route_web_socket("**/a", lambda ws: ws.send("async"))
    async with aconnect("ws://app.invalid/a", proxy=async_wsroute.url) as c:
        assert await c.recv() == "async"
    assert (await async_wsroute.wait_for_web_socket()).routed == "mock"


def test_script_option(wsroute):
    with connect("ws://app.invalid/from-script", proxy=wsroute.url) as c:
        assert c.recv(5) == "script route"


def test_handler_raises(wsroute):
    def handler(ws):
        ws.on_message(lambda m: int("not a number"))
    wsroute.route_web_socket("**/bad", handler)
    with connect("ws://app.invalid/bad", proxy=wsroute.url) as c:
        c.send("x")
        c.send("y")
        wsroute.wait_for_web_socket().wait_for_message("y")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(test_app=TESTS)
    pytester.makefile(".ini", pytest="[pytest]\nasyncio_mode = auto\n")
    return pytester.makepyfile(routes=ROUTES)


def test_fixtures_reset_and_handler_errors_fail_the_test(
    pytester: pytest.Pytester, suite: Path
) -> None:
    result = pytester.runpytest_subprocess("--wsroute-script", str(suite), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_handler_raises*",
            "*2 WebSocket route handler(s) raised*",
            "Traceback (most recent call last):",
            '  File "*test_app.py", line *, in <lambda>',
            '*int("not a number")*',
            "ValueError: invalid literal for int()*",
        ]
    )


def test_ini_scripts_and_xdist_workers(pytester: pytest.Pytester, suite: Path) -> None:
    pytester.makefile(".ini", pytest=f"[pytest]\nasyncio_mode = auto\nwsroute_scripts = {suite}\n")
    pytester.makepyfile(
        test_ports=textwrap.dedent(
            """
            import os, pytest

            @pytest.mark.parametrize("i", range(4))
            def test_port(wsroute, i, tmp_path_factory):
                folder = tmp_path_factory.getbasetemp().parent
                (folder / f"port-{os.getpid()}-{i}").write_text(str(wsroute.port))
            """
        )
    )
    result = pytester.runpytest_subprocess("-n", "2", "-k", "port or script")
    result.assert_outcomes(passed=5)
    ports = {p.name.split("-")[1]: p.read_text() for p in pytester.path.parent.rglob("port-*")}
    assert len(ports) == 2 and len(set(ports.values())) == 2  # a proxy per worker
