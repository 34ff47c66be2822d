"""HARs from Chromium: Playwright's ``record_har_path``, and a page recorded and replayed through
mitmdump. Debian's Chromium, driven by playwright-python; the routing is mitmdump's."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright
from websockets.asyncio.client import connect

from mitm_wsroute.har import load_har
from tests.conftest import PUSH, stop
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_e2e_har import port

# The page: opens the socket, logs every message (binary as its bytes), sends on cue.
PAGE = """
([url]) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  window.ws = ws;
  window.log = [];
  ws.onmessage = (e) => log.push(typeof e.data === "string" ? e.data
                                 : `bytes ${new Uint8Array(e.data)}`);
  ws.onclose = (e) => log.push(`close ${e.code} ${e.reason}`);
  ws.onopen = () => resolve();
})
"""
SEND = "ws.send('sum 1 2 3'); ws.send(new Uint8Array([1, 2, 3]).buffer); ws.send('hi')"
SEEN = [
    "welcome",
    "bytes 0,1,98,105,110,97,114,121,32,112,117,115,104,255",
    "6",
    "bytes 16,16,16",
    "bytes 3,2,1",
    "echo hi",
    "close 1000 done",
]


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        # Chromium's Local Network Access checks refuse a page's direct socket to 127.0.0.1
        # (the recording with record_har_path goes to the server without a proxy).
        args = [*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"]
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield b
        finally:
            await b.close()


async def session(
    browser: Browser, url: str, proxy: str | None, har: Path | None, **record: Any
) -> list[str]:
    """A page's session: open, let the pushes arrive, send, wait for the answers, close.
    `record`: more of Playwright's ``record_har_*`` options."""
    context = await browser.new_context(
        proxy={"server": proxy, "bypass": "<-loopback>"} if proxy else None,
        record_har_path=str(har) if har else None,
        **record,
    )
    try:
        page = await context.new_page()
        await page.goto("about:blank")
        await page.evaluate(PAGE, [url])
        await page.wait_for_function("window.log.length >= 2", timeout=10_000)
        await page.evaluate(SEND)
        await page.wait_for_function(f"window.log.length >= {len(SEEN) - 1}", timeout=10_000)
        await page.evaluate("ws.close(1000, 'done')")
        await page.wait_for_function(f"window.log.length >= {len(SEEN)}", timeout=10_000)
        return list(await page.evaluate("window.log"))
    finally:
        await context.close()  # writes record_har_path


async def test_playwright_record_har_path_writes_frames_and_replays(
    browser: Browser, backend: Any, tmp_path: Path, mitmdump: Any
) -> None:
    har = tmp_path / "playwright.har"
    url = f"ws://127.0.0.1:{port(backend)}/app"
    assert await session(browser, url, None, har) == SEEN
    entry = next(
        e for e in json.loads(har.read_text())["log"]["entries"]
        if e.get("_resourceType") == "websocket"
    )  # fmt: skip
    # Playwright 1.65 records WebSocket frames, in Chrome's shape, times in milliseconds.
    assert [m["type"] for m in entry["_webSocketMessages"][:2]] == ["receive", "receive"]
    assert entry["_webSocketMessages"][1]["opcode"] == 2
    assert entry["_webSocketMessages"][0]["time"] > 1e12
    backend.close()
    await backend.wait_closed()
    await replays(har, url, mitmdump)


async def replays(har: Path, url: str, mitmdump: Any) -> None:
    """mitmdump replays the session recorded in `har` (the backend is gone)."""
    proxy = mitmdump(None, "--set", f"wsroute_har={har}")
    async with connect(url, proxy=proxy.proxy, open_timeout=5) as ws:
        assert [await ws.recv() for _ in PUSH] == PUSH
        # The page sent its three messages at once, so every answer came after the last one:
        # the replay answers turn by turn as recorded, hence all of them after "hi".
        for m in ("sum 1 2 3", b"\x01\x02\x03", "hi"):
            await ws.send(m)
        assert [await ws.recv() for _ in range(4)] == ["6", b"\x10" * 3, b"\x03\x02\x01", "echo hi"]


@pytest.mark.parametrize(
    ("name", "record"),
    [("playwright.zip", {}), ("playwright.har", {"record_har_content": "attach"})],
)
async def test_playwright_har_with_attached_messages_replays(
    browser: Browser, backend: Any, tmp_path: Path, mitmdump: Any, name: str, record: Any
) -> None:
    # A .zip (the HAR and each socket's messages as members) or a .har with its messages in
    # files beside it: one JSON message per line, named by the entry's response.content._file.
    har = tmp_path / name
    url = f"ws://127.0.0.1:{port(backend)}/app"
    assert await session(browser, url, None, har, **record) == SEEN
    attached = [p.name for p in tmp_path.iterdir() if p.suffix == ".jsonl"]
    if har.suffix == ".zip":
        attached = [n for n in zipfile.ZipFile(har).namelist() if n.endswith(".jsonl")]
    assert attached  # Playwright did keep the messages apart
    backend.close()
    await backend.wait_closed()
    await replays(har, url, mitmdump)


async def test_chromium_page_recorded_through_the_proxy_then_replayed(
    browser: Browser, backend: Any, tmp_path: Path, mitmdump: Any
) -> None:
    har = tmp_path / "rec.har"
    url = f"ws://127.0.0.1:{port(backend)}/app"
    recorder = mitmdump(None, "--set", f"wsroute_har={har}", "--set", "wsroute_har_update=true")
    assert await session(browser, url, recorder.proxy, None) == SEEN
    stop(recorder)
    backend.close()
    await backend.wait_closed()
    [recorded] = load_har(str(har)).entries(url)
    assert recorded.close is not None and (recorded.close.code, recorded.close.by) == (
        1000,
        "client",
    )

    replayer = mitmdump(None, "--set", f"wsroute_har={har}")
    assert await session(browser, url, replayer.proxy, None) == SEEN
