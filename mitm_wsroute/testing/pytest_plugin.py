"""pytest plugin (registered by the package's ``pytest11`` entry point): fixtures `wsroute`
(sync API) and `async_wsroute` (async API) over one proxy per test session (and per xdist
worker), reset after each test.

A test during which a route, `on_message` or `on_close` handler raised fails at teardown with
that handler's traceback. ``--wsroute-script PATH`` (repeatable; ini: ``wsroute_scripts``)
loads route scripts for every test.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import WsRouteProxy, async_api

__all__ = ["async_wsroute", "wsroute"]

_PACKAGE = str(Path(__file__).resolve().parent.parent)


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
    parser.addini("wsroute_scripts", "route scripts for the wsroute fixtures' proxy", type="paths")


@pytest.fixture(scope="session")
def _wsroute_proxy(pytestconfig: pytest.Config) -> Iterator[WsRouteProxy]:
    scripts = [*pytestconfig.getini("wsroute_scripts"), *pytestconfig.option.wsroute_scripts]
    with WsRouteProxy(scripts=[str(s) for s in scripts]) as proxy:
        yield proxy


def _check_and_reset(proxy: WsRouteProxy | async_api.WsRouteProxy) -> None:
    errors = proxy.handler_errors
    proxy.reset()
    if errors:
        details = "\n".join(_user_traceback(e) for e in errors)
        pytest.fail(f"{len(errors)} WebSocket route handler(s) raised:\n{details}", False)


def _user_traceback(error: BaseException) -> str:
    """The traceback from the first frame outside this package: the handler's own."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None and _PACKAGE in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


@pytest.fixture
def wsroute(_wsroute_proxy: WsRouteProxy) -> Iterator[WsRouteProxy]:
    """The session's `WsRouteProxy` (sync API); routes and records are reset after the test."""
    yield _wsroute_proxy
    _check_and_reset(_wsroute_proxy)


@pytest.fixture
def async_wsroute(_wsroute_proxy: WsRouteProxy) -> Iterator[async_api.WsRouteProxy]:
    """The session's proxy through the async API (`mitm_wsroute.testing.async_api`)."""
    proxy = async_api.WsRouteProxy._over(_wsroute_proxy)
    yield proxy
    _check_and_reset(proxy)
