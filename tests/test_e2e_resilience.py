"""End to end, the extensions beyond Playwright: a real mitmdump with the addon, real clients
(python-websockets, its reconnecting ``connect()`` loop)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

ROUTES = """
    import logging
    from mitm_wsroute import route_web_socket

    log = logging.getLogger("routes")

    @route_web_socket("**/headers")
    def headers(ws):
        h = ws.request_headers
        ws.send(f"token={h.get_all('x-token')} joined={h['X-TOKEN']} ua={'user-agent' in h}")

    @route_web_socket("**/reject")
    def reject(ws):
        ws.reject(503, headers={"Retry-After": "1", "X-Why": "test"}, body=b"come back later")

    @route_web_socket("**/reject-intercept")
    def reject_intercept(ws):
        ws.reject(404)
        ws.connect_to_server()  # raises: the client has its answer

    @route_web_socket("**/reject-late")
    async def reject_late(ws):
        import asyncio
        ws.accept()
        await asyncio.sleep(0)
        try:
            ws.reject(503)
        except Exception as e:
            ws.send(f"{type(e).__name__}: {e}")
"""


@pytest.fixture
async def proxy(mitmdump: Any) -> Any:
    return mitmdump(ROUTES)


async def test_request_headers_repeated_and_case_insensitive(proxy: Any) -> None:
    async with connect(
        "ws://chat.invalid/headers",
        proxy=proxy.proxy,
        additional_headers=[("X-Token", "one"), ("x-token", "two")],
    ) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == (
            "token=['one', 'two'] joined=one, two ua=True"
        )


@pytest.mark.parametrize("path", ["/reject", "/reject-intercept"])
async def test_reject_answers_the_upgrade_without_upstream(
    proxy: Any, sentinel: Any, path: str
) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{sentinel.port}{path}", proxy=proxy.proxy):
            pass
    response = info.value.response
    if path == "/reject":
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1" and response.headers["X-Why"] == "test"
        assert response.body == b"come back later"
    else:
        assert response.status_code == 404
        await proxy.async_wait_for(r"connect_to_server\(\) cannot follow: reject\(\) already")
    assert sentinel.accepted == 0


async def test_reject_after_accept_raises_in_the_handler(proxy: Any) -> None:
    async with connect("ws://chat.invalid/reject-late", proxy=proxy.proxy) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == (
            "Error: reject() cannot follow accept(): the client has its answer already"
        )
