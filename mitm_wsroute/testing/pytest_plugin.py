"""pytest plugin (registered by the package's ``pytest11`` entry point): fixtures `wsroute`
(sync API) and `async_wsroute` (async API) over one proxy per test session (and per xdist
worker), reset after each test.

A test during which a route, `on_message` or `on_close` handler raised fails at teardown with
that handler's traceback. ``--wsroute-script PATH`` (repeatable; ini: ``wsroute_scripts``)
loads route scripts for every test.

Cassettes: ``@pytest.mark.wsroute_cassette(path=None, **route_from_har_options)`` routes the
fixture's proxy from the test's own HAR file, by default ``cassettes/<module>/<test>.har``
beside the test module; its record mode defaults to ``"none"`` when ``CI`` is set in the
environment, else ``"once"``; ``--wsroute-record-mode`` wins over every record mode.
``assert_all_played=True`` fails the test at teardown when recorded messages never played.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from mitm_wsroute.cassettes import RECORD_MODES
from mitm_wsroute.harroute import Cassette

from . import WsRouteProxy, async_api

__all__ = ["async_wsroute", "wsroute"]

_PACKAGE = str(Path(__file__).resolve().parent.parent)
_FIXTURES = ("wsroute", "async_wsroute")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wsroute", "mitm_wsroute's test proxy")
    group.addoption(
        "--wsroute-script",
        action="append",
        default=[],
        metavar="PATH",
        dest="wsroute_scripts",
        help="route script for the wsroute fixtures' proxy (repeatable; a later one wins)",
    )
    group.addoption(
        "--wsroute-record-mode",
        choices=RECORD_MODES,
        default=None,
        dest="wsroute_record_mode",
        help="record mode of every wsroute_cassette and route_from_har, winning over theirs "
        "(without it, cassettes default to 'none' when CI is set, else 'once')",
    )
    parser.addini("wsroute_scripts", "route scripts for the wsroute fixtures' proxy", type="paths")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "wsroute_cassette(path=None, assert_all_played=False, **route_from_har_options): "
        "route the wsroute fixture's proxy from this test's HAR cassette "
        "(default: cassettes/<module>/<test>.har beside the test module)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("wsroute_cassette") and not set(_FIXTURES) & set(
        getattr(item, "fixturenames", ())
    ):
        pytest.fail(
            "@pytest.mark.wsroute_cassette routes the wsroute (or async_wsroute) fixture's "
            "proxy: add that fixture to the test's arguments",
            False,
        )


@pytest.fixture(scope="session")
def _wsroute_proxy(pytestconfig: pytest.Config) -> Iterator[WsRouteProxy]:
    scripts = [*pytestconfig.getini("wsroute_scripts"), *pytestconfig.option.wsroute_scripts]
    mode = pytestconfig.option.wsroute_record_mode
    options = {"wsroute_record_mode": mode} if mode else {}
    with WsRouteProxy(scripts=[str(s) for s in scripts], options=options) as proxy:
        yield proxy


class _Used:
    """The cassette of a test (its `wsroute_cassette` marker), while the test runs."""

    def __init__(self, proxy: WsRouteProxy, request: pytest.FixtureRequest) -> None:
        marker = request.node.get_closest_marker("wsroute_cassette")
        self.cassette: Cassette | None = None
        if marker is None:
            return
        options = dict(marker.kwargs)
        path = options.pop("path", marker.args[0] if marker.args else None)
        self.assert_all_played = bool(options.pop("assert_all_played", False))
        folder = request.path.parent
        if path is None:
            name = request.node.name.replace("/", "_").replace(os.sep, "_")
            path = folder / "cassettes" / request.path.stem / f"{name}.har"
        path = folder / path  # a relative path: beside the test module
        options.setdefault("record_mode", "none" if os.environ.get("CI") else "once")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        self.cassette = proxy._engine.route_from_har(path, **options)

    def close(self) -> list[str]:
        """Write what was recorded; what was not played, if that is to be checked."""
        if self.cassette is None:
            return []
        self.cassette.close()
        if not self.assert_all_played:
            return []
        client, server = self.cassette.unplayed()
        problems = []
        for what, messages in (
            ("recorded client messages never came", client),
            ("recorded server messages never sent", server),
        ):
            if messages:
                shown = "\n".join(f"  {m!r:.200}" for m in messages)
                problems.append(f"{len(messages)} {what}:\n{shown}")
        if problems:
            problems.insert(0, f"wsroute_cassette {self.cassette.path} was not all played:")
        return problems


def _check_and_reset(proxy: WsRouteProxy | async_api.WsRouteProxy, used: _Used) -> None:
    try:
        problems = used.close()
    finally:
        errors = proxy.handler_errors
        proxy.reset()
    if errors:
        details = "\n".join(_user_traceback(e) for e in errors)
        problems.insert(0, f"{len(errors)} WebSocket route handler(s) raised:\n{details}")
    if problems:
        pytest.fail("\n".join(problems), False)


def _user_traceback(error: BaseException) -> str:
    """The traceback from the first frame outside this package: the handler's own."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and _PACKAGE in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


@pytest.fixture
def wsroute(_wsroute_proxy: WsRouteProxy, request: pytest.FixtureRequest) -> Iterator[WsRouteProxy]:
    """The session's `WsRouteProxy` (sync API); routes and records are reset after the test."""
    used = _Used(_wsroute_proxy, request)
    yield _wsroute_proxy
    _check_and_reset(_wsroute_proxy, used)


@pytest.fixture
def async_wsroute(
    _wsroute_proxy: WsRouteProxy, request: pytest.FixtureRequest
) -> Iterator[async_api.WsRouteProxy]:
    """The session's proxy through the async API (`mitm_wsroute.testing.async_api`)."""
    proxy = async_api.WsRouteProxy._over(_wsroute_proxy)
    used = _Used(_wsroute_proxy, request)
    yield proxy
    _check_and_reset(proxy, used)
